//! `GET /v1/usage`: roll-ups of stored usage, one page at a time.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::auth::Principal;
use super::error::ApiError;
use super::AppState;
use metering::clickhouse::ClickHouseError;
use metering::store::rollup::{query_usage, Granularity, UsageKey, UsagePoint, UsageQuery};
use metering::store::StoreError;

/// Query parameters `/v1/usage` accepts.
pub const PARAMS: &[&str] = &["tenant", "meter", "from", "to", "granularity", "group_by", "limit", "cursor"];

/// One point of the response.
#[derive(Debug, Serialize)]
pub struct UsageItem {
    tenant: String,
    meter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    end: OffsetDateTime,
    /// An exact decimal, written as a JSON number with no float rounding.
    #[serde(serialize_with = "exact_number")]
    value: Decimal,
    unit: String,
}

/// Writes a decimal as a JSON number, digit for digit. (serde_json's
/// `arbitrary_precision` would do it too, but it breaks `#[serde(flatten)]` on
/// numbers workspace-wide, which silently empties OTLP/JSON metric values.)
fn exact_number<S: serde::Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let raw =
        serde_json::value::RawValue::from_string(value.normalize().to_string()).map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

/// The response body.
#[derive(Debug, Serialize)]
pub struct UsagePage {
    data: Vec<UsageItem>,
    next_cursor: Option<String>,
}

impl From<UsagePoint> for UsageItem {
    fn from(p: UsagePoint) -> Self {
        Self {
            tenant: p.tenant,
            meter: p.meter,
            service: p.service,
            start: p.start,
            end: p.end,
            value: p.value,
            unit: p.unit,
        }
    }
}

/// What a cursor carries: where the last page ended and which query it belongs to.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    t: String,
    m: String,
    b: u32,
    s: String,
    q: String,
}

pub(crate) fn time_param(params: &HashMap<String, String>, name: &'static str) -> Result<OffsetDateTime, ApiError> {
    let raw = params.get(name).ok_or_else(|| {
        ApiError::bad_request(
            "missing_parameter",
            format!("`{name}` is required (RFC 3339, e.g. 2026-05-01T00:00:00Z)"),
        )
    })?;
    OffsetDateTime::parse(raw, &Rfc3339).map_err(|e| {
        ApiError::bad_request(
            "invalid_parameter",
            format!("`{name}`: {raw:?} is not an RFC 3339 time such as 2026-05-01T00:00:00Z ({e})"),
        )
    })
}

/// Parses and validates the query string into a roll-up request and the
/// fingerprint that ties cursors to it.
pub fn parse_query(params: &HashMap<String, String>, state: &AppState) -> Result<(UsageQuery, String), ApiError> {
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("unknown parameter `{unknown}`; accepted: {}", PARAMS.join(", ")),
        ));
    }
    let mut query = UsageQuery::new(time_param(params, "from")?, time_param(params, "to")?);
    query.tenant = params.get("tenant").cloned();
    query.meter = params.get("meter").cloned();
    if let Some(g) = params.get("granularity") {
        query.granularity = Granularity::parse(g).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("`granularity`: {g:?} is not one of minute, hour, day, month"),
            )
        })?;
    }
    match params.get("group_by").map(String::as_str) {
        None => {}
        Some("service") => query.group_by_service = true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("`group_by`: {other:?} is not supported; use `service`"),
            ))
        }
    }
    if let Some(limit) = params.get("limit") {
        query.limit = limit.parse().map_err(|_| {
            ApiError::bad_request("invalid_parameter", format!("`limit`: {limit:?} is not a whole number"))
        })?;
    }
    query.validate(&state.catalog).map_err(|e| {
        let code = match e {
            metering::store::rollup::QueryError::UnknownMeter { .. } => "unknown_meter",
            metering::store::rollup::QueryError::EmptyRange { .. } => "invalid_range",
            _ => "invalid_parameter",
        };
        ApiError::bad_request(code, e.to_string())
    })?;
    let fingerprint = fingerprint(&query);
    if let Some(raw) = params.get("cursor") {
        let invalid = || ApiError::bad_request("invalid_cursor", "`cursor` is not a cursor this API returned");
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if cursor.q != fingerprint {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "`cursor` belongs to a different query; repeat the original parameters with it",
            ));
        }
        query.after = Some(UsageKey {
            tenant: cursor.t,
            meter: cursor.m,
            bucket: cursor.b,
            service: cursor.s,
            dimensions: String::new(),
        });
    }
    Ok((query, fingerprint))
}

fn fingerprint(q: &UsageQuery) -> String {
    let canonical = format!(
        "{:?}|{:?}|{}|{}|{}|{}",
        q.tenant,
        q.meter,
        q.from.unix_timestamp(),
        q.to.unix_timestamp(),
        q.granularity.as_str(),
        q.group_by_service
    );
    let digest = Sha256::digest(canonical.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The handler.
pub async fn get_usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<UsagePage>, ApiError> {
    let principal = state.keys.authenticate(&headers)?;
    let mut params = params;
    if let Principal::Tenant(own) = &principal {
        // A tenant key reads its own tenant: named or implied, never another.
        match params.get("tenant") {
            None => {
                params.insert("tenant".into(), own.clone());
            }
            Some(t) if t != own => return Err(ApiError::forbidden(format!("this key may not read tenant {t:?}"))),
            Some(_) => {}
        }
    }
    let (mut query, fingerprint) = parse_query(&params, &state)?;
    state.reads.limits().check_buckets(&query)?;
    let page = query.limit as usize;
    // One extra point says whether there is a next page.
    query.limit += 1;
    let read = state.read(&principal)?;
    let query = &query;
    let mut points = read.run(|store| async move { query_usage(&store, query).await }).await?.map_err(store_error)?;
    let next_cursor = if points.len() > page {
        points.truncate(page);
        points.last().map(|p| {
            let k = &p.key;
            let c = Cursor {
                t: k.tenant.clone(),
                m: k.meter.clone(),
                b: k.bucket,
                s: k.service.clone(),
                q: fingerprint.clone(),
            };
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).expect("cursor serializes"))
        })
    } else {
        None
    };
    Ok(Json(UsagePage { data: points.into_iter().map(UsageItem::from).collect(), next_cursor }))
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "usage query failed");
    match &e {
        // The read's own limits (the server's total memory says `(total)` instead): retrying the
        // same read would hit them again.
        StoreError::ClickHouse(ClickHouseError::Server { code: Some(241), message, .. })
            if message.contains("(for query)") =>
        {
            ApiError::query_too_large(message.lines().next().unwrap_or_default())
        }
        StoreError::ClickHouse(ClickHouseError::Server { code: Some(159), message, .. }) => {
            ApiError::query_timeout(message.lines().next().unwrap_or_default())
        }
        StoreError::ClickHouse(ch) if ch.is_retryable() => {
            ApiError::unavailable(format!("usage store unavailable: {ch}"))
        }
        _ => ApiError::internal(format!("usage query failed: {e}")),
    }
}
