//! `GET /v1/reconciliation?from=&to=`: per agent, tenant and signal, the items the
//! agent accepted against the items stored and dropped (billing keys only: agents
//! are the operator's, and one agent serves many tenants).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::auth::Principal;
use super::error::ApiError;
use super::usage::{store_error, time_param};
use super::AppState;
use metering::reconcile::reconcile;
use metering::store::rollup::{rfc3339, unix_seconds};

/// The handler.
pub async fn get_reconciliation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.keys.authenticate(&headers)?;
    if principal != Principal::Billing {
        return Err(ApiError::forbidden("reconciliation covers every tenant's agents: it needs a billing key"));
    }
    if let Some(unknown) = params.keys().find(|k| !["from", "to"].contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("unknown parameter `{unknown}`; accepted: from, to"),
        ));
    }
    let (from, to) = (time_param(&params, "from")?, time_param(&params, "to")?);
    for (name, t) in [("from", from), ("to", to)] {
        unix_seconds(name, t).map_err(|e| ApiError::bad_request("invalid_parameter", e.to_string()))?;
    }
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("`from` ({}) must be before `to` ({})", rfc3339(from), rfc3339(to)),
        ));
    }
    let lines = state
        .read(&principal)?
        .run(|store| async move { reconcile(&store, from, to).await })
        .await?
        .map_err(store_error)?;
    Ok(Json(json!({"from": rfc3339(from), "to": rfc3339(to), "data": lines})))
}
