//! `GET /v1/periods/{YYYY-MM}` (any key: a seal is there to be checked by anyone)
//! and `POST /v1/periods/{YYYY-MM}/seal` (billing keys only).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::auth::Principal;
use super::error::ApiError;
use super::usage::store_error;
use super::AppState;
use metering::pricing::BillingMonth;
use metering::seal::{self, Period, SealError, Verification};
use metering::store::rollup::rfc3339;
use metering::store::{Store, StoreError};
use prometheus_client::metrics::counter::Counter;
use time::OffsetDateTime;
use tokio::sync::OnceCell;

fn month_of(month: &str, params: &HashMap<String, String>) -> Result<BillingMonth, ApiError> {
    if let Some(unknown) = params.keys().next() {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("unknown parameter `{unknown}`; this route takes none"),
        ));
    }
    BillingMonth::parse(month).map_err(|e| ApiError::bad_request("invalid_parameter", format!("month: {e}")))
}

/// Seal verifications, each computed once per seal and digest and served from memory after:
/// recomputing a month's digest reads its whole snapshot (minutes at hundreds of tenants).
#[derive(Debug, Default)]
pub struct Verifications {
    done: Mutex<HashMap<SealKey, Slot>>,
    /// Verifications computed (`tally_api_seal_verifications_total`).
    pub computed: Counter,
}

/// A seal's id and digest: a seal recorded again (another id or digest) is verified anew.
type SealKey = (String, String);

/// A seal's verification: empty until the first caller's has finished.
type Slot = Arc<OnceCell<Arc<Remembered>>>;

/// A verification and when it was made (its `late_rows` are as of then).
#[derive(Debug)]
pub struct Remembered {
    verification: Verification,
    at: OffsetDateTime,
}

impl Verifications {
    /// `period`'s verification: remembered, or computed now by one caller while the others wait.
    /// It runs in a task of its own, so a caller that goes away (or times out) does not waste
    /// it: the next caller finds it done or still running.
    async fn get(
        self: &Arc<Self>,
        store: &Store,
        month: BillingMonth,
        period: &Period,
        deadline: Duration,
    ) -> Result<Arc<Remembered>, ApiError> {
        let cell = {
            let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            done.entry((period.seal_id.clone(), period.digest.clone())).or_default().clone()
        };
        if let Some(hit) = cell.get() {
            return Ok(hit.clone());
        }
        let (this, store) = (self.clone(), store.clone());
        let task = tokio::spawn(async move {
            cell.get_or_try_init(|| async {
                let verification = seal::verify(&store, month).await?.ok_or_else(|| StoreError::BadRow {
                    row: vec![month.to_string()],
                    reason: "seal vanished".into(),
                })?;
                this.computed.inc();
                tracing::info!(%month, verified = verification.verified, "seal verified");
                Ok::<_, StoreError>(Arc::new(Remembered { verification, at: OffsetDateTime::now_utc() }))
            })
            .await
            .cloned()
        });
        match tokio::time::timeout(deadline, task).await {
            Ok(Ok(result)) => result.map_err(store_error),
            Ok(Err(e)) => Err(ApiError::internal(format!("verification task failed: {e}"))),
            Err(_) => Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "verification_pending",
                message: format!("{month}'s seal is being verified; retry shortly"),
            }),
        }
    }

    /// Forgets `period`'s verification, so the next read recomputes it.
    fn forget(&self, period: &Period) {
        self.done.lock().unwrap_or_else(|p| p.into_inner()).remove(&(period.seal_id.clone(), period.digest.clone()));
    }
}

/// The body a principal may see: a billing key the whole verification, a tenant key the seal's
/// identity and outcome and only its own rows.
fn view(principal: &Principal, r: &Remembered) -> Result<Value, ApiError> {
    let v = &r.verification;
    let mut body = match principal {
        Principal::Billing => serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))?,
        Principal::Tenant(own) => {
            let mine = v.tenants.iter().find(|t| &t.tenant == own);
            let p = &v.period;
            json!({
                "month": p.month,
                "seal_id": p.seal_id,
                "digest": p.digest,
                "previous_digest": p.previous_digest,
                "sealed_at": rfc3339(p.sealed_at),
                "rollups": p.rollups,
                "recomputed_digest": v.recomputed_digest,
                "expected_previous_digest": v.expected_previous_digest,
                "rollups_verified": v.rollups_verified,
                "verified": v.verified,
                "tenant": own,
                "tenant_rows": mine.map_or(0, |t| t.rows),
                "tenant_sla_rows": mine.map_or(0, |t| t.sla_rows),
                "late_rows": mine.map_or(0, |t| t.late_rows),
            })
        }
    };
    body["sealed"] = json!(true);
    body["verified_at"] = json!(rfc3339(r.at));
    Ok(body)
}

/// `GET /v1/periods/{month}`: whether the month is sealed and, if so, its seal's verification
/// (computed on the first read of the seal, then remembered; `verified_at` says when). A tenant
/// key sees its own rows only.
pub async fn get_period(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(month): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.keys.authenticate(&headers)?;
    let month = month_of(&month, &params)?;
    let read = state.read(&principal)?;
    let Some(period) =
        read.run(|store| async move { seal::period(&store, month).await }).await?.map_err(store_error)?
    else {
        return Ok(Json(json!({"month": month.to_string(), "sealed": false})));
    };
    verified(&state, &principal, month, &period).await
}

/// `POST /v1/periods/{month}/verify` (billing keys): recomputes the seal's verification now,
/// e.g. after the snapshot was touched, and serves it from then on.
pub async fn reverify_period(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(month): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.keys.authenticate(&headers)?;
    if principal != Principal::Billing {
        return Err(ApiError::forbidden("only a billing key may have a seal verified again"));
    }
    let month = month_of(&month, &params)?;
    let Some(period) = seal::period(&state.store, month).await.map_err(store_error)? else {
        return Err(ApiError::not_found(format!("{month} is not sealed")));
    };
    state.verifications.forget(&period);
    verified(&state, &principal, month, &period).await
}

/// `period`'s verification as `principal` may see it, computed once per seal and digest.
async fn verified(
    state: &AppState,
    principal: &Principal,
    month: BillingMonth,
    period: &Period,
) -> Result<Json<Value>, ApiError> {
    // Verified with the read's limits but not its deadline: the work is shared by every caller.
    let limited = state.reads.store(&state.store);
    let remembered = state.verifications.get(&limited, month, period, state.reads.limits().deadline()).await?;
    Ok(Json(view(principal, &remembered)?))
}

/// `POST /v1/periods/{month}/seal`.
pub async fn seal_period(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(month): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if state.keys.authenticate(&headers)? != Principal::Billing {
        return Err(ApiError::forbidden("only a billing key may seal a month"));
    }
    let month = month_of(&month, &params)?;
    let conflict =
        |code: &'static str, e: SealError| ApiError { status: StatusCode::CONFLICT, code, message: e.to_string() };
    match seal::seal(&state.store, month, time::OffsetDateTime::now_utc()).await {
        Ok(p) => {
            let mut body = serde_json::to_value(&p).map_err(|e| ApiError::internal(e.to_string()))?;
            body["sealed"] = json!(true);
            Ok((StatusCode::CREATED, Json(body)))
        }
        Err(SealError::Store(e)) => Err(store_error(e)),
        Err(e @ SealError::AlreadySealed(_)) => Err(conflict("already_sealed", e)),
        Err(e @ SealError::NotOver(_)) => Err(conflict("month_not_over", e)),
        Err(e @ SealError::OutOfOrder { .. }) => Err(conflict("out_of_order", e)),
    }
}
