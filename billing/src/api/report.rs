//! `GET /v1/reports/usage/{YYYY-MM}` and `GET /v1/reports/sla/{YYYY-MM}`:
//! the month's reports as JSON, CSV or HTML (`format`, default `json`), for one
//! tenant (`tenant`) or every tenant the key may read.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::Principal;
use super::error::ApiError;
use super::usage::store_error;
use super::AppState;
use metering::pricing::BillingMonth;
use metering::record::validate_tenant;
use metering::report::{self, Format, ReportError};

/// Query parameters the report routes accept.
pub const PARAMS: &[&str] = &["format", "tenant"];

/// The month, format and tenant of a request; a tenant key reads only its own
/// tenant (the default), any other is 403.
fn parse(
    principal: &Principal,
    month: &str,
    params: &HashMap<String, String>,
) -> Result<(BillingMonth, Format, Option<String>), ApiError> {
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("unknown parameter `{unknown}`; accepted: {}", PARAMS.join(", ")),
        ));
    }
    let tenant = params.get("tenant").cloned();
    if let Some(t) = &tenant {
        validate_tenant(t).map_err(|e| ApiError::bad_request("invalid_parameter", format!("tenant: {e}")))?;
        if !principal.may_read(t) {
            return Err(ApiError::forbidden(format!("this key may not read tenant {t:?}")));
        }
    }
    let tenant = match principal {
        Principal::Tenant(own) => Some(own.clone()),
        Principal::Billing => tenant,
    };
    let format = match params.get("format") {
        None => Format::Json,
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::bad_request("invalid_parameter", format!("`format`: {f:?} is not one of json, csv, html"))
        })?,
    };
    let month =
        BillingMonth::parse(month).map_err(|e| ApiError::bad_request("invalid_parameter", format!("month: {e}")))?;
    Ok((month, format, tenant))
}

fn respond(format: Format, body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    response
}

/// `GET /v1/reports/usage/{month}`.
pub async fn get_usage_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(month): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let principal = state.keys.authenticate(&headers)?;
    let (month, format, tenant) = parse(&principal, &month, &params)?;
    let tenant = tenant.as_deref();
    let r = state
        .read(&principal)?
        .run(|store| async move { report::read_usage_report(&store, month, tenant).await })
        .await?
        .map_err(store_error)?;
    Ok(respond(
        format,
        match format {
            Format::Json => serde_json::to_string(&r).map_err(|e| ApiError::internal(e.to_string()))?,
            Format::Csv => report::csv::usage(&r),
            Format::Html => report::html::usage(&r),
        },
    ))
}

/// `GET /v1/reports/sla/{month}`.
pub async fn get_sla_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(month): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let principal = state.keys.authenticate(&headers)?;
    let (month, format, tenant) = parse(&principal, &month, &params)?;
    let plans = state.plans.as_deref().map(|book| (book, state.catalog.as_ref()));
    let tenant = tenant.as_deref();
    let r = state
        .read(&principal)?
        .run(|store| async move { report::read_sla_report(&store, month, tenant, plans, |_, _| {}).await })
        .await?
        .map_err(|e| match e {
            ReportError::Store(e) => store_error(e),
            e @ ReportError::Pricing { .. } => {
                tracing::error!(error = %e, %month, "cannot price SLA credits");
                ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "pricing_error", message: e.to_string() }
            }
        })?;
    Ok(respond(
        format,
        match format {
            Format::Json => serde_json::to_string(&r).map_err(|e| ApiError::internal(e.to_string()))?,
            Format::Csv => report::csv::sla(&r),
            Format::Html => report::html::sla(&r),
        },
    ))
}
