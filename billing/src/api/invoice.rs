//! `GET /v1/tenants/{tenant}/invoices/{YYYY-MM}`: a tenant's month, priced; `GET
//! /v1/invoices/{YYYY-MM}`: every tenant's the key may read, from reads they share.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::error::ApiError;
use super::usage::store_error;
use super::AppState;
use metering::pricing::invoice::{Invoice, InvoiceError};
use metering::pricing::store::{invoice, month_invoices, InvoiceFailure, MonthInvoices};
use metering::pricing::BillingMonth;
use metering::record::validate_tenant;

use super::auth::Principal;

/// The handler.
pub async fn get_invoice(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, month)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Invoice>, ApiError> {
    let principal = state.keys.authenticate(&headers)?;
    validate_tenant(&tenant).map_err(|e| ApiError::bad_request("invalid_parameter", format!("tenant: {e}")))?;
    // Before anything else about the tenant, so a tenant key learns nothing of others.
    if !principal.may_read(&tenant) {
        return Err(ApiError::forbidden(format!("this key may not read tenant {tenant:?}")));
    }
    let month = month_only(&month, &params)?;
    let Some(book) = &state.plans else {
        return Err(not_found(
            "unknown_tenant",
            "tally serve runs without a plans file (--plans), so no tenant has a plan".into(),
        ));
    };
    let (catalog, tenant) = (&state.catalog, &tenant);
    let priced =
        state.read(&principal)?.run(|store| async move { invoice(&store, book, catalog, tenant, month).await }).await?;
    match priced {
        Ok(invoice) => Ok(Json(invoice)),
        Err(InvoiceFailure::Store(e)) => Err(store_error(e)),
        Err(InvoiceFailure::Invoice(e)) => Err(match &e {
            InvoiceError::UnknownTenant(_) => not_found("unknown_tenant", e.to_string()),
            InvoiceError::NoPlan { .. } => not_found("no_plan", e.to_string()),
            InvoiceError::MissingRate { .. } | InvoiceError::Overflow(_) => pricing_error(tenant, month, e),
        }),
        Err(InvoiceFailure::Tenant { tenant, source }) => Err(pricing_error(&tenant, month, source)),
    }
}

/// `GET /v1/invoices/{month}`: the invoices of every tenant in the plans file with a plan that
/// month (a tenant key: its own, if it has one), priced as one tenant's are, from reads all of
/// them share. One tenant that cannot be priced fails the answer (500 naming it).
pub async fn get_invoices(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(month): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<MonthInvoices>, ApiError> {
    let principal = state.keys.authenticate(&headers)?;
    let month = month_only(&month, &params)?;
    let Some(book) = &state.plans else {
        return Ok(Json(MonthInvoices { month: month.to_string(), invoices: Vec::new() }));
    };
    let tenants: Vec<&str> = match &principal {
        Principal::Billing => book.tenants.keys().map(String::as_str).collect(),
        Principal::Tenant(own) => book.tenants.keys().map(String::as_str).filter(|t| t == own).collect(),
    };
    let (catalog, tenants) = (&state.catalog, &tenants);
    let priced = state
        .read(&principal)?
        .run(|store| async move { month_invoices(&store, book, catalog, tenants, month).await })
        .await?;
    match priced {
        Ok(invoices) => Ok(Json(invoices)),
        Err(InvoiceFailure::Store(e)) => Err(store_error(e)),
        Err(InvoiceFailure::Tenant { tenant, source }) => Err(pricing_error(&tenant, month, source)),
        Err(InvoiceFailure::Invoice(e)) => Err(ApiError::internal(e.to_string())),
    }
}

/// The month of a route that takes no query parameters.
fn month_only(month: &str, params: &HashMap<String, String>) -> Result<BillingMonth, ApiError> {
    if let Some(unknown) = params.keys().next() {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("unknown parameter `{unknown}`; this route takes none"),
        ));
    }
    BillingMonth::parse(month).map_err(|e| ApiError::bad_request("invalid_parameter", format!("month: {e}")))
}

fn pricing_error(tenant: &str, month: BillingMonth, e: InvoiceError) -> ApiError {
    tracing::error!(error = %e, tenant, %month, "cannot price invoice");
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "pricing_error",
        message: format!("tenant {tenant:?}: {e}"),
    }
}

fn not_found(code: &'static str, message: String) -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, code, message }
}
