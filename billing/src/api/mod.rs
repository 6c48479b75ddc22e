//! The billing API served by `tally serve`.

pub mod auth;
pub mod error;
pub mod invoice;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod period;
pub mod reconciliation;
pub mod report;
pub mod usage;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};

use auth::{KeyRing, Principal};
use error::ApiError;
use limits::{Read, ReadLimits, Reads};
use metering::clickhouse::sql::{check_identifier, BadIdentifier};
use metering::meter::Catalog;
use metering::pricing::plan::PriceBook;
use metering::store::Store;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The usage store.
    pub store: Store,
    /// Known meters.
    pub catalog: Arc<Catalog>,
    /// Accepted keys.
    pub keys: Arc<KeyRing>,
    /// Plans, when a plans file is configured (invoices need it).
    pub plans: Option<Arc<PriceBook>>,
    /// Reads in flight and their limits.
    pub reads: Arc<Reads>,
    /// Seals verified so far.
    pub verifications: Arc<period::Verifications>,
}

impl AppState {
    /// State for `store` with the given keys.
    pub fn new(store: Store, keys: KeyRing) -> Result<Self, BadIdentifier> {
        check_identifier(store.db())?;
        let reads = Arc::new(Reads::new(&store, ReadLimits::default()));
        Ok(Self {
            store,
            catalog: Arc::new(Catalog::builtin()),
            keys: Arc::new(keys),
            plans: None,
            reads,
            verifications: Arc::default(),
        })
    }

    /// The same state reading under `limits`.
    pub fn with_limits(mut self, limits: ReadLimits) -> Self {
        self.reads = Arc::new(Reads::new(&self.store, limits));
        self
    }

    /// Starts a read for `principal` (429 when its tenant runs as many as it may).
    pub fn read(&self, principal: &Principal) -> Result<Read, ApiError> {
        self.reads.begin(&self.store, principal)
    }

    /// The same state knowing `catalog`'s meters (the built-ins plus custom meters).
    pub fn with_catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = Arc::new(catalog);
        self
    }

    /// The same state pricing invoices with `plans`.
    pub fn with_plans(mut self, plans: PriceBook) -> Self {
        self.plans = Some(Arc::new(plans));
        self
    }
}

/// The API's routes, with `/metrics` counting and timing each of them.
pub fn router(state: AppState) -> Router {
    let openapi = Json(openapi::document(&state.catalog));
    let metrics = Arc::new(metrics::Metrics::new(state.verifications.computed.clone()));
    let exposition = metrics.clone();
    Router::new()
        .route("/v1/usage", get(usage::get_usage))
        .route("/v1/tenants/{tenant}/invoices/{month}", get(invoice::get_invoice))
        .route("/v1/invoices/{month}", get(invoice::get_invoices))
        .route("/v1/reports/usage/{month}", get(report::get_usage_report))
        .route("/v1/reports/sla/{month}", get(report::get_sla_report))
        .route("/v1/periods/{month}", get(period::get_period))
        .route("/v1/reconciliation", get(reconciliation::get_reconciliation))
        .route("/v1/periods/{month}/seal", axum::routing::post(period::seal_period))
        .route("/v1/periods/{month}/verify", axum::routing::post(period::reverify_period))
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/openapi.json", get(move || async move { openapi }))
        .route("/metrics", runtime::serve::metrics_route(move || exposition.render()))
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                message: "see /openapi.json for the methods each route takes".into(),
            }
        })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(metrics, metrics::observe))
}

/// Serves the API on `listen` until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "billing API listening");
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
