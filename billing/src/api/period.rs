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
use metering::seal::verified::{self, Verified};
use metering::seal::{self, Period, SealError};
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

/// Seal verifications: the latest made of each seal (by the background refresh, a billing key's
/// request, or the seal's first read when none is stored), stored in `seal_verifications` and
/// kept in memory. Recomputing a month's digest reads its whole snapshot (minutes at hundreds
/// of tenants), so a read never waits for one when one is stored.
#[derive(Debug, Default)]
pub struct Verifications {
    done: Mutex<HashMap<SealKey, Slot>>,
    /// Verifications computed (`tally_api_seal_verifications_total`).
    pub computed: Counter,
}

/// A seal's id and digest: a seal recorded again (another id or digest) is verified anew.
type SealKey = (String, String);

/// A seal's latest verification: empty until the first caller's has finished.
type Slot = Arc<OnceCell<Arc<Verified>>>;

impl Verifications {
    /// `period`'s latest verification: in memory, else stored, else computed now by one caller
    /// while the others wait. Loading and computing run in a task of their own, so a caller that
    /// goes away (or times out) does not waste them: the next caller finds them done or running.
    async fn get(
        self: &Arc<Self>,
        store: &Store,
        month: BillingMonth,
        period: &Period,
        deadline: Duration,
    ) -> Result<Arc<Verified>, ApiError> {
        let cell = self.slot(period, false);
        if let Some(hit) = cell.get() {
            return Ok(hit.clone());
        }
        let (this, store, period) = (self.clone(), store.clone(), period.clone());
        let task = tokio::spawn(async move {
            cell.get_or_try_init(|| async {
                match verified::latest(&store, &period).await? {
                    Some(stored) => Ok(Arc::new(stored)),
                    None => this.compute(&store, month).await,
                }
            })
            .await
            .cloned()
        });
        wait(task, month, deadline).await
    }

    /// Verifies `period` again now, stores it and serves it from now on.
    async fn refresh(
        self: &Arc<Self>,
        store: &Store,
        month: BillingMonth,
        period: &Period,
        deadline: Duration,
    ) -> Result<Arc<Verified>, ApiError> {
        let (this, store, period) = (self.clone(), store.clone(), period.clone());
        let task = tokio::spawn(async move {
            let fresh = this.compute(&store, month).await?;
            this.slot(&period, true).set(fresh.clone()).ok();
            Ok(fresh)
        });
        wait(task, month, deadline).await
    }

    /// Verifies every seal again, one after another, every `every`, for as long as it runs: what
    /// readers are served is at most `every` (and one pass) old.
    pub async fn refresh_all(self: Arc<Self>, store: Store, every: Duration) {
        loop {
            match seal::store::seals(&store).await {
                Ok(periods) => {
                    for period in periods {
                        let Ok(month) = BillingMonth::parse(&period.month) else { continue };
                        if let Err(e) = self.refresh(&store, month, &period, Duration::MAX).await {
                            tracing::warn!(%month, error = %e.message, "background verification failed");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "background verification: listing seals failed"),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The memory slot of `period`'s verification; a new, empty one when `fresh`.
    fn slot(&self, period: &Period, fresh: bool) -> Slot {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let key = (period.seal_id.clone(), period.digest.clone());
        if fresh {
            done.insert(key.clone(), Slot::default());
        }
        done.entry(key).or_default().clone()
    }

    /// Recomputes `month`'s verification and stores it (a failure to store is logged: the
    /// verification is served anyway).
    async fn compute(&self, store: &Store, month: BillingMonth) -> Result<Arc<Verified>, StoreError> {
        let verification = seal::verify(store, month)
            .await?
            .ok_or_else(|| StoreError::BadRow { row: vec![month.to_string()], reason: "seal vanished".into() })?;
        self.computed.inc();
        tracing::info!(%month, verified = verification.verified, "seal verified");
        // Stored to the second, as the column keeps it, so a read of memory and of the store agree.
        let now = OffsetDateTime::now_utc();
        let at = now.replace_nanosecond(0).unwrap_or(now);
        if let Err(e) = verified::record(store, &verification, at).await {
            tracing::warn!(%month, error = %e, "storing a seal's verification failed");
        }
        Ok(Arc::new(Verified { verification, at }))
    }
}

/// Waits up to `deadline` for a verification task: 503 `verification_pending` past it (the task
/// goes on).
async fn wait(
    task: tokio::task::JoinHandle<Result<Arc<Verified>, StoreError>>,
    month: BillingMonth,
    deadline: Duration,
) -> Result<Arc<Verified>, ApiError> {
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

/// The body a principal may see: a billing key the whole verification, a tenant key the seal's
/// identity and outcome and only its own rows.
fn view(principal: &Principal, r: &Verified) -> Result<Value, ApiError> {
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

/// `GET /v1/periods/{month}`: whether the month is sealed and, if so, its seal's latest stored
/// verification (`verified_at` says when; computed now only when none is stored). A tenant key
/// sees its own rows only.
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
    let limited = state.reads.store(&state.store);
    let fresh = state.verifications.refresh(&limited, month, &period, state.reads.limits().deadline()).await?;
    Ok(Json(view(&principal, &fresh)?))
}

/// `period`'s latest verification as `principal` may see it.
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
