//! OTLP/gRPC, unary `Export` calls served directly over HTTP/2 (h2c) beside
//! OTLP/HTTP. Written by hand rather than with tonic's generated servers so
//! that each failure gets the status the OTLP spec names: tonic answers an
//! oversized message with OUT_OF_RANGE (retryable: the sender would resend it
//! for ever) and a decode error with INTERNAL, and inflates
//! compressed messages unbounded.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost::Message;

use super::inflate::{Compression, InflateError, ACCEPTED};
use super::inflight::BUSY_RETRY_AFTER;
use super::status::{code, RetryInfo, RpcStatus};
use super::{BodyError, Consumer, Encoding, Limits, Outcome, Receiver, Refusal, Signal};

/// The gRPC method paths of the three OTLP services.
pub const TRACES_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// See [`TRACES_PATH`].
pub const METRICS_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
/// See [`TRACES_PATH`].
pub const LOGS_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The Export method's path of `signal`.
pub const fn path(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => TRACES_PATH,
        Signal::Metrics => METRICS_PATH,
        Signal::Logs => LOGS_PATH,
    }
}

/// The OTLP/gRPC routes, handing requests to `consumer`. Messages over
/// `max_request_bytes`, before or after decompression, get RESOURCE_EXHAUSTED;
/// the budget of bytes in flight is the default one (see [`router_with`]).
pub fn router(consumer: Arc<dyn Consumer>, max_request_bytes: usize) -> Router {
    router_with(consumer, Limits::with_default_budget(max_request_bytes))
}

/// The OTLP/gRPC routes with `limits`: messages over its request limit, before or after
/// decompression, get RESOURCE_EXHAUSTED without RetryInfo (for good); a request its budget
/// of bytes in flight cannot take gets UNAVAILABLE with RetryInfo (retry later). Share the
/// budget with [`super::http::router_with`] to bound both.
pub fn router_with(consumer: Arc<dyn Consumer>, limits: Limits) -> Router {
    let state = Arc::new(Receiver { consumer, max_request_bytes: limits.max_request_bytes, inflight: limits.inflight });
    let route = |signal: Signal| {
        post(move |State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body| async move {
            r.handle_grpc(signal, &headers, body).await
        })
    };
    Router::new()
        .route(path(Signal::Traces), route(Signal::Traces))
        .route(path(Signal::Metrics), route(Signal::Metrics))
        .route(path(Signal::Logs), route(Signal::Logs))
        .fallback(|| async {
            status(code::UNIMPLEMENTED, "unknown method; this server implements the OTLP Export methods", None)
        })
        .with_state(state)
}

impl Receiver {
    async fn handle_grpc(&self, signal: Signal, headers: &HeaderMap, mut body: Body) -> Response {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !header("content-type").starts_with("application/grpc") {
            return status(code::INVALID_ARGUMENT, "content-type must be application/grpc", None);
        }
        let too_large = || {
            let message = format!("message is more than {} bytes, the limit; split the batch", self.max_request_bytes);
            status(code::RESOURCE_EXHAUSTED, &message, None)
        };
        let busy = |held: usize| status(code::UNAVAILABLE, &self.over_budget(held), Some(BUSY_RETRY_AFTER));
        // The sender is checked from the headers first: a refused one's message is never read
        // (HTTP/2 lets the answer come before the request's end), held, inflated or decoded.
        let sender = match self.admit(headers) {
            Ok(sender) => sender,
            Err(Refusal::Unauthenticated(m)) => return status(code::UNAUTHENTICATED, &m, None),
            Err(Refusal::Forbidden(m)) => return status(code::PERMISSION_DENIED, &m, None),
            Err(Refusal::Invalid(m)) => return status(code::INVALID_ARGUMENT, &m, None),
        };
        // Held until the answer is built: the consumer works on these bytes.
        let mut reservation = self.inflight.reservation();
        // The 5-byte frame header plus the message: anything longer is over the limit.
        let bytes = match self.read_body(headers, &mut body, self.max_request_bytes + 5, &mut reservation).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => return too_large(),
            Err(BodyError::OverBudget) => return busy(reservation.bytes()),
            Err(BodyError::Read(e)) => {
                return status(code::INVALID_ARGUMENT, &format!("reading the request body: {e}"), None)
            }
        };
        if bytes.len() < 5 {
            return status(code::INVALID_ARGUMENT, "request has no gRPC message frame", None);
        }
        let compressed = bytes[0] == 1;
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if bytes.len() != 5 + len {
            return status(
                code::INVALID_ARGUMENT,
                "the gRPC frame length does not match the body (one message per unary call)",
                None,
            );
        }
        let message = bytes.slice(5..);
        // The message is the only handle left on the body, so inflating frees it.
        drop(bytes);
        let raw = if compressed {
            match header("grpc-encoding") {
                "" | "identity" => return status(code::INTERNAL, "compressed frame without grpc-encoding", None),
                name => match Compression::from_name(name) {
                    Some(compression) => match self.inflate(compression, message, &mut reservation) {
                        Ok(raw) => raw,
                        Err(InflateError::TooLarge { .. }) => return too_large(),
                        Err(InflateError::OverBudget { held }) => return busy(held),
                        Err(e) => return status(code::INVALID_ARGUMENT, &e.to_string(), None),
                    },
                    None => {
                        let message = format!("grpc-encoding {name:?} is not supported; use one of {ACCEPTED}");
                        return status(code::UNIMPLEMENTED, &message, None);
                    }
                },
            }
        } else {
            message
        };
        let outcome = match self.deliver(signal, Encoding::Protobuf, sender, raw).await {
            Ok(outcome) => outcome,
            Err(message) => return status(code::INVALID_ARGUMENT, &message, None),
        };
        drop(reservation);
        match outcome {
            Outcome::Accepted { rejected, message } => success(signal, rejected, message),
            Outcome::Invalid(message) => status(code::INVALID_ARGUMENT, &message, None),
            Outcome::Unauthenticated(message) => status(code::UNAUTHENTICATED, &message, None),
            Outcome::Throttled { retry_after, message } => {
                status(code::RESOURCE_EXHAUSTED, &message, Some(retry_after))
            }
            Outcome::Unavailable { retry_after, message } => status(code::UNAVAILABLE, &message, Some(retry_after)),
        }
    }
}

fn grpc_headers(response: &mut Response) {
    let h = response.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("grpc-accept-encoding", HeaderValue::from_static(ACCEPTED));
}

/// A trailers-only response: the status travels in the headers, no body.
fn status(code: i32, message: &str, retry_after: Option<Duration>) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::OK;
    grpc_headers(&mut response);
    let h = response.headers_mut();
    for (name, value) in status_metadata(code, message, retry_after) {
        h.insert(name, value);
    }
    response
}

fn status_metadata(code: i32, message: &str, retry_after: Option<Duration>) -> Vec<(HeaderName, HeaderValue)> {
    let encoded = percent_encoding::utf8_percent_encode(message, &GRPC_MESSAGE).to_string();
    let mut out = vec![
        (HeaderName::from_static("grpc-status"), HeaderValue::from(code)),
        (HeaderName::from_static("grpc-message"), HeaderValue::from_str(&encoded).expect("percent-encoded is ASCII")),
    ];
    if let Some(after) = retry_after {
        let info = RetryInfo::after(after);
        let details = RpcStatus::with_retry_info(code, message, &info);
        let b64 = |bytes: Vec<u8>| HeaderValue::from_str(&STANDARD_NO_PAD.encode(bytes)).expect("base64 is ASCII");
        out.push((HeaderName::from_static("grpc-status-details-bin"), b64(details.encode_to_vec())));
        // The Python exporter reads RetryInfo only from this key.
        out.push((HeaderName::from_static("google.rpc.retryinfo-bin"), b64(info.encode_to_vec())));
    }
    out
}

/// grpc-message is percent-encoded: everything outside printable ASCII, and `%`.
const GRPC_MESSAGE: percent_encoding::AsciiSet = percent_encoding::CONTROLS.add(b'%');

fn success(signal: Signal, rejected: u64, message: String) -> Response {
    let bytes = super::export_response(signal, rejected, message);
    let mut frame = BytesMut::with_capacity(5 + bytes.len());
    frame.put_u8(0);
    frame.put_u32(bytes.len() as u32);
    frame.put_slice(&bytes);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(0));
    let mut response = Response::new(Body::new(Unary { data: Some(frame.freeze()), trailers: Some(trailers) }));
    grpc_headers(&mut response);
    response
}

/// One data frame, then trailers: the shape of a successful unary gRPC response.
struct Unary {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Unary {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}
