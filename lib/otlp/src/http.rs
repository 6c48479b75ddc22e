//! OTLP/HTTP: `POST /v1/traces|metrics|logs` with protobuf or JSON bodies,
//! optionally gzip- or zstd-compressed, answered with the statuses the OTLP spec names.
//! Error bodies are `google.rpc.Status` in the request's encoding.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;
use prost::Message;

use super::inflate::{Compression, InflateError};
use super::inflight::BUSY_RETRY_AFTER;
use super::status::{code, RpcStatus};
use super::{BodyError, Consumer, Encoding, Limits, Outcome, Receiver, Refusal, Signal};

/// The OTLP/HTTP routes, handing requests to `consumer`. Bodies over
/// `max_request_bytes`, before or after decompression, get 413; the budget of
/// bytes in flight is the default one (see [`router_with`]).
pub fn router(consumer: Arc<dyn Consumer>, max_request_bytes: usize) -> Router {
    router_with(consumer, Limits::with_default_budget(max_request_bytes))
}

/// The OTLP/HTTP routes with `limits`: bodies over its request limit, before or after
/// decompression, get 413; a request its budget of bytes in flight cannot take gets 503
/// with `Retry-After`. Share the budget with [`super::grpc::router_with`] to bound both.
pub fn router_with(consumer: Arc<dyn Consumer>, limits: Limits) -> Router {
    let state = Arc::new(Receiver { consumer, max_request_bytes: limits.max_request_bytes, inflight: limits.inflight });
    let route = |signal: Signal| {
        post(move |State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body| async move {
            r.handle_http(signal, &headers, body).await
        })
    };
    Router::new()
        .route("/v1/traces", route(Signal::Traces))
        .route("/v1/metrics", route(Signal::Metrics))
        .route("/v1/logs", route(Signal::Logs))
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                Encoding::Json,
                code::UNIMPLEMENTED,
                "OTLP/HTTP paths take POST only".into(),
            )
        })
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                Encoding::Json,
                code::UNIMPLEMENTED,
                "no such path; OTLP/HTTP serves /v1/traces, /v1/metrics and /v1/logs".into(),
            )
        })
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

impl Receiver {
    async fn handle_http(&self, signal: Signal, headers: &HeaderMap, mut body: Body) -> Response {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let encoding = Encoding::from_content_type(content_type);
        // The sender is checked from the headers first: a refused one's body is read and dropped,
        // never held in the budget, inflated or decoded.
        let sender = match self.admit(headers) {
            Ok(sender) => sender,
            Err(refusal) => {
                drain(body).await;
                let fail = |status, code, message| error(status, encoding.unwrap_or(Encoding::Json), code, message);
                return match refusal {
                    Refusal::Unauthenticated(m) => fail(StatusCode::UNAUTHORIZED, code::UNAUTHENTICATED, m),
                    Refusal::Forbidden(m) => fail(StatusCode::FORBIDDEN, code::PERMISSION_DENIED, m),
                    Refusal::Invalid(m) => fail(StatusCode::BAD_REQUEST, code::INVALID_ARGUMENT, m),
                };
            }
        };
        // Held until the answer is built: the consumer works on these bytes.
        let mut reservation = self.inflight.reservation();
        // The body is read before any answer, so the client is never cut off mid-upload; what
        // is refused (too large, no room) is drained, not kept.
        let body = match self.read_body(headers, &mut body, self.max_request_bytes, &mut reservation).await {
            Err(e @ (BodyError::TooLarge | BodyError::OverBudget)) => {
                // Drained without holding it: the budget is given back first.
                let held = reservation.bytes();
                reservation.shrink(held);
                drain(body).await;
                Err((e, held))
            }
            Err(BodyError::Read(e)) => Err((BodyError::Read(e), 0)),
            Ok(bytes) => Ok(bytes),
        };
        let Some(encoding) = encoding else {
            let message =
                format!("unsupported Content-Type {content_type:?}; use application/x-protobuf or application/json");
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, Encoding::Json, code::INVALID_ARGUMENT, message);
        };
        let fail = |status, code, message| error(status, encoding, code, message);
        let too_large = |what: &str| {
            let message =
                format!("request body {what} more than {} bytes, the limit; split the batch", self.max_request_bytes);
            fail(StatusCode::PAYLOAD_TOO_LARGE, code::RESOURCE_EXHAUSTED, message)
        };
        let busy = |held: usize| {
            let message = self.over_budget(held);
            with_retry_after(fail(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, message), BUSY_RETRY_AFTER)
        };
        let bytes = match body {
            Ok(bytes) => bytes,
            Err((BodyError::TooLarge, _)) => return too_large("is"),
            Err((BodyError::OverBudget, held)) => return busy(held),
            Err((BodyError::Read(e), _)) => {
                return fail(StatusCode::BAD_REQUEST, code::INVALID_ARGUMENT, format!("reading the request body: {e}"))
            }
        };
        let content_encoding =
            headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_ascii_lowercase());
        let raw = match content_encoding.as_deref() {
            None | Some("" | "identity") => bytes,
            Some(name) => match Compression::from_name(name) {
                Some(compression) => match self.inflate(compression, bytes, &mut reservation) {
                    Ok(raw) => raw,
                    Err(InflateError::TooLarge { .. }) => return too_large("inflates to"),
                    Err(InflateError::OverBudget { held }) => return busy(held),
                    Err(e @ InflateError::Corrupt(..)) => {
                        return fail(StatusCode::BAD_REQUEST, code::INVALID_ARGUMENT, e.to_string())
                    }
                },
                None => {
                    let message = format!("unsupported Content-Encoding {name:?}; use gzip, zstd or none");
                    return fail(StatusCode::UNSUPPORTED_MEDIA_TYPE, code::INVALID_ARGUMENT, message);
                }
            },
        };
        let outcome = match self.deliver(signal, encoding, sender, raw).await {
            Ok(outcome) => outcome,
            Err(message) => return fail(StatusCode::BAD_REQUEST, code::INVALID_ARGUMENT, message),
        };
        drop(reservation);
        match outcome {
            Outcome::Accepted { rejected, message } => success(signal, encoding, rejected, message),
            Outcome::Invalid(message) => fail(StatusCode::BAD_REQUEST, code::INVALID_ARGUMENT, message),
            Outcome::Unauthenticated(message) => fail(StatusCode::UNAUTHORIZED, code::UNAUTHENTICATED, message),
            Outcome::Throttled { retry_after, message } => {
                with_retry_after(fail(StatusCode::TOO_MANY_REQUESTS, code::RESOURCE_EXHAUSTED, message), retry_after)
            }
            Outcome::Unavailable { retry_after, message } => {
                with_retry_after(fail(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, message), retry_after)
            }
        }
    }
}

fn with_retry_after(mut response: Response, after: Duration) -> Response {
    // Whole seconds, rounded up, at least one: a client told 0 would retry at once.
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

fn respond(status: StatusCode, encoding: Encoding, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
}

fn error(status: StatusCode, encoding: Encoding, code: i32, message: String) -> Response {
    let body = match encoding {
        Encoding::Protobuf => RpcStatus { code, message }.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&serde_json::json!({"code": code, "message": message})).expect("json"),
    };
    respond(status, encoding, body)
}

fn success(signal: Signal, encoding: Encoding, rejected: u64, message: String) -> Response {
    let partial = rejected > 0;
    let body = match encoding {
        Encoding::Protobuf => super::export_response(signal, rejected, message),
        Encoding::Json => {
            let field = match signal {
                Signal::Traces => "rejectedSpans",
                Signal::Metrics => "rejectedDataPoints",
                Signal::Logs => "rejectedLogRecords",
            };
            // proto3 JSON writes int64 as a string.
            let value = if partial {
                serde_json::json!({"partialSuccess": {field: rejected.to_string(), "errorMessage": message}})
            } else {
                serde_json::json!({})
            };
            serde_json::to_vec(&value).expect("json")
        }
    };
    respond(StatusCode::OK, encoding, body)
}

/// How much of an oversized body is read and discarded, at most, before answering 413.
const DRAIN_MAX_BYTES: usize = 256 << 20;
/// How long draining an oversized body may take.
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// Reads the rest of a refused body and discards it (within [`DRAIN_MAX_BYTES`] and
/// [`DRAIN_TIME`]), holding no more than a frame: an HTTP/1.1 client still uploading when
/// the server answers and closes sees a broken connection, which OTLP clients retry for
/// ever, instead of the 413 that tells them to drop it (or the 503 that tells them when
/// to come back).
async fn drain(mut body: Body) {
    let mut drained = 0;
    let drain = async {
        while let Some(Ok(frame)) = body.frame().await {
            drained += frame.data_ref().map_or(0, |d| d.len());
            if drained > DRAIN_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}
