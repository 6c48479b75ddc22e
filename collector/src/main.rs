//! `tally-collector`: OTLP/gRPC and OTLP/HTTP in, per-tenant usage into ClickHouse.

use std::sync::Arc;

use anyhow::{bail, Context};
use axum::routing::get;
use axum::Router;
use metering::meter::{definition, Catalog};
use metering::store::writer::UsageWriter;
use metering::telemetry;
use tally_collector::keys::Keys;
use tally_collector::limits::Limits;
use tally_collector::metrics::{count_responses, Metrics};
use tally_collector::otlp::{grpc, http};
use tally_collector::pipeline::Pipeline;
use tally_collector::settings::Settings;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let s: Settings = metering::settings::parse();
    telemetry::init_logging(s.log_format);
    let keys = match &s.keys {
        Some(path) => Keys::load(path)?,
        None if s.allow_anonymous => Keys::default(),
        None => bail!("no --keys file and no --allow-anonymous: every sender would be refused"),
    };
    let meters = match &s.meters {
        Some(path) => definition::load(path)?,
        None => Vec::new(),
    };
    let ch = s.store.client()?;
    let writer = UsageWriter::new(ch.clone(), &s.store.clickhouse_database, Catalog::with_custom(&meters))?;
    let started = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let source_id = format!("collector:{}:{started}", std::process::id());
    let metrics = Arc::new(Metrics::default());
    let limits = Limits::new(&s.tenant_limit, s.default_tenant_limit);
    let pipeline = Arc::new(Pipeline::new(keys, s.allow_anonymous, writer, source_id, metrics.clone(), limits, meters.into()));
    let counted = |transport: &'static str, router: Router| {
        let metrics = metrics.clone();
        router.layer(axum::middleware::from_fn(move |req, next| count_responses(metrics.clone(), transport, req, next)))
    };

    let exposition = metrics.clone();
    let admin = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let m = exposition.clone();
                async move { ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.render()) }
            }),
        )
        .route(
        "/readyz",
        get(move || {
            let ch = ch.clone();
            async move {
                match ch.version().await {
                    Ok(_) => (axum::http::StatusCode::OK, "ready".to_owned()),
                    Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("usage store unreachable: {e}")),
                }
            }
        }),
    );
    let servers = [
        ("OTLP/gRPC", s.grpc_listen, counted("grpc", grpc::router(pipeline.clone(), s.max_request_bytes))),
        ("OTLP/HTTP", s.http_listen, counted("http", http::router(pipeline.clone(), s.max_request_bytes))),
        ("admin", s.admin_listen, admin),
    ];
    let (stop, stopped) = tokio::sync::watch::channel(());
    let mut tasks = Vec::new();
    for (name, addr, router) in servers {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the {name} listener to {addr}"))?;
        tracing::info!(%addr, "{name} listening");
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(async move { let _ = stopped.changed().await; }).await
        }));
    }
    telemetry::shutdown_signal().await;
    let _ = stop.send(());
    for task in tasks {
        task.await?.context("serving")?;
    }
    Ok(())
}
