//! `GET /v1/periods/{YYYY-MM}` (any key: a seal is there to be checked by anyone)
//! and `POST /v1/periods/{YYYY-MM}/seal` (billing keys only).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::auth::Principal;
use super::error::ApiError;
use super::usage::store_error;
use super::AppState;
use metering::pricing::BillingMonth;
use metering::seal::{self, SealError};

fn month_of(month: &str, params: &HashMap<String, String>) -> Result<BillingMonth, ApiError> {
    if let Some(unknown) = params.keys().next() {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("unknown parameter `{unknown}`; this route takes none"),
        ));
    }
    BillingMonth::parse(month).map_err(|e| ApiError::bad_request("invalid_parameter", format!("month: {e}")))
}

/// `GET /v1/periods/{month}`: whether the month is sealed and, if so, its seal
/// recomputed now (`verified`) and the late rows that arrived since.
pub async fn get_period(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(month): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    state.keys.authenticate(&headers)?;
    let month = month_of(&month, &params)?;
    Ok(Json(match seal::verify(&state.store, month).await.map_err(store_error)? {
        Some(v) => {
            let mut body = serde_json::to_value(&v).map_err(|e| ApiError::internal(e.to_string()))?;
            body["sealed"] = json!(true);
            body
        }
        None => json!({"month": month.to_string(), "sealed": false}),
    }))
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
