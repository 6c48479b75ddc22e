//! The billing API's error body: `{"error":{"code":"...","message":"..."}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An API error with its HTTP status, a stable machine code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_parameter`.
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }

    /// 401: no or unknown bearer key.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, code: "unauthenticated", message: message.into() }
    }

    /// 403: the key may not read this tenant.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, code: "forbidden", message: message.into() }
    }

    /// 404 for a path that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, code: "not_found", message: message.into() }
    }

    /// 503: the store is unreachable; retry later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, code: "storage_unavailable", message: message.into() }
    }

    /// 429: the tenant runs as many reads as it may at once.
    pub fn too_many_reads(max: u32) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_requests",
            message: format!(
                "this tenant already runs {max} reads at once (the most --tenant-max-concurrent-reads allows); \
                 retry when one has finished"
            ),
        }
    }

    /// 429: all tenants together run as many reads as they may.
    pub fn too_many_tenant_reads(max: u32) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_requests",
            message: format!(
                "tenants already run {max} reads at once (the most --tenants-max-concurrent-reads allows); \
                 retry when one has finished"
            ),
        }
    }

    /// 504: a read ran past its deadline (`detail` says which) and was stopped.
    pub fn query_timeout(detail: &str) -> Self {
        Self {
            status: StatusCode::GATEWAY_TIMEOUT,
            code: "query_timeout",
            message: format!(
                "the read ran longer than one may (--query-max-execution-secs) and was stopped; narrow the range, \
                 coarsen the granularity or name a meter ({detail})"
            ),
        }
    }

    /// 422: a query needed more memory than one read may use.
    pub fn query_too_large(detail: &str) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "query_too_large",
            message: format!(
                "the read needs more memory than one query may use (--query-max-memory-bytes) and was stopped; \
                 narrow the range, coarsen the granularity or name a meter ({detail})"
            ),
        }
    }

    /// 500: a fault of ours.
    pub fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal", message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // A read takes seconds at most (the deadline); a second later a permit is likely free.
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
