//! The OTLP receiver, written once for the collector and the agent: HTTP
//! (`/v1/traces|metrics|logs`, protobuf and JSON) and gRPC (unary Export over
//! h2c), gzip- or zstd-compressed, with the statuses the OTLP specification names, handing
//! decoded requests to a [`Consumer`].

pub mod batch;
pub mod consumer;
pub mod decode;
pub mod grpc;
pub mod http;
pub mod inflate;
pub mod inflight;
mod json;
pub mod status;
pub mod view;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

pub use consumer::{Consumer, Delivery, Grant, Outcome, Request};
pub use decode::{decode, DecodeError, Encoding, Payload, Signal};
use inflight::Reservation;
pub use inflight::{InFlight, Limits, LimitsError, DEFAULT_MAX_INFLIGHT_BYTES};

/// Default limit of a request body, before and after decompression (the spec recommends 64 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 << 20;

/// What both transports share: the consumer, the size limit, the budget of
/// bytes in flight, and the steps from an inflated body to the consumer's verdict.
pub(crate) struct Receiver {
    pub(crate) consumer: Arc<dyn Consumer>,
    pub(crate) max_request_bytes: usize,
    pub(crate) inflight: InFlight,
}

/// Why a body was not read whole.
pub(crate) enum BodyError {
    /// Over the request limit: for good.
    TooLarge,
    /// The budget of bytes in flight cannot take it now: retry later.
    OverBudget,
    /// The connection failed.
    Read(axum::Error),
}

/// Why the receiver refused a request before its consumer saw it.
pub(crate) enum Refusal {
    /// No key, or an unknown one: UNAUTHENTICATED / 401.
    Unauthenticated(String),
    /// The key may not assert what the request asserts: PERMISSION_DENIED / 403.
    Forbidden(String),
    /// Malformed: INVALID_ARGUMENT / 400.
    Invalid(String),
}

/// The sender as its headers present it: its key and the batch identity it may assert.
pub(crate) struct Sender {
    key: Option<String>,
    batch: Option<batch::BatchId>,
}

impl Receiver {
    /// Reads the sender's key and batch identity from `headers` and checks them with the
    /// consumer, before any of the body is inflated or decoded.
    pub(crate) fn admit(&self, headers: &HeaderMap) -> Result<Sender, Refusal> {
        let key = runtime::auth::bearer(headers);
        let grant = self.consumer.authenticate(key).map_err(Refusal::Unauthenticated)?;
        if headers.contains_key(batch::HEADER) && !grant.batch_identity {
            return Err(Refusal::Forbidden(format!(
                "{} is honoured only from agent keys: this key may not name its batches or their time",
                batch::HEADER
            )));
        }
        let batch = batch::from_headers(headers, time::OffsetDateTime::now_utc()).map_err(Refusal::Invalid)?;
        Ok(Sender { key: key.map(str::to_owned), batch })
    }

    /// A refusal for want of budget, counted, and its message.
    pub(crate) fn over_budget(&self, held: usize) -> String {
        self.inflight.count_refusal();
        format!(
            "the receiver holds {} of its {} bytes of requests in flight and has no room for this one ({held} bytes \
             so far); retry later",
            self.inflight.bytes(),
            self.inflight.max_bytes()
        )
    }

    /// Reads at most `max` bytes of `body`, reserving them in `reservation` as they arrive
    /// (a `Content-Length` at most `max` is reserved, and its buffer allocated, up front). On
    /// an error the rest of the body is left unread, for the caller to drain or not.
    pub(crate) async fn read_body(
        &self,
        headers: &HeaderMap,
        body: &mut Body,
        max: usize,
        reservation: &mut Reservation,
    ) -> Result<Bytes, BodyError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .filter(|&n| n <= max);
        if let Some(n) = declared {
            if !reservation.hold(n) {
                return Err(BodyError::OverBudget);
            }
        }
        // Frames are kept as they come and joined once at the end (an HTTP/2 body comes in
        // 16 KiB frames and has no length to size a buffer by: growing one would copy it again
        // and again); a body of one frame is not copied at all.
        let (mut frames, mut len) = (Vec::new(), 0);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(BodyError::Read)?;
            let Ok(data) = frame.into_data() else { continue };
            len += data.len();
            if len > max {
                return Err(BodyError::TooLarge);
            }
            if !reservation.hold(len) {
                return Err(BodyError::OverBudget);
            }
            frames.push(data);
        }
        if frames.len() == 1 {
            return Ok(frames.pop().expect("one frame"));
        }
        let mut joined = BytesMut::with_capacity(len);
        for frame in frames {
            joined.extend_from_slice(&frame);
        }
        Ok(joined.freeze())
    }

    /// Inflates `compressed`, reserving the output's growth in `reservation`; the compressed
    /// bytes are given back once it is inflated.
    pub(crate) fn inflate(
        &self,
        compression: inflate::Compression,
        compressed: Bytes,
        reservation: &mut Reservation,
    ) -> Result<Bytes, inflate::InflateError> {
        let held = reservation.bytes();
        let raw =
            inflate::inflate_within(compression, &compressed, self.max_request_bytes, &mut |n| reservation.grow(n))?;
        drop(compressed);
        // What was held before inflating (the compressed body, or its declared length) is free now.
        reservation.shrink(held);
        Ok(Bytes::from(raw))
    }

    /// Checks `raw` (protobuf: its framing, down to the items; JSON: decoded whole) and hands
    /// the request of `sender` to the consumer. `Err` is a message for an INVALID_ARGUMENT /
    /// 400 answer: nothing reached the consumer.
    ///
    /// Protobuf is handed over as bytes: the collector meters it in place and
    /// never builds the prost types; a consumer that needs them decodes it
    /// ([`Delivery::into_payload`]) and answers [`Outcome::Invalid`] if prost
    /// refuses what the framing check let through.
    pub(crate) async fn deliver(
        &self,
        signal: Signal,
        encoding: Encoding,
        sender: Sender,
        raw: bytes::Bytes,
    ) -> Result<Outcome, String> {
        let encoded_len = raw.len();
        let request = match encoding {
            Encoding::Protobuf => Request::Protobuf(view::Protobuf::new(signal, raw).map_err(|e| e.to_string())?),
            Encoding::Json => Request::Decoded(decode(signal, encoding, &raw).map_err(|e| e.to_string())?),
        };
        let delivery = Delivery { request, encoded_len, key: sender.key, batch: sender.batch };
        Ok(self.consumer.consume(delivery).await)
    }
}

/// The encoded `Export*ServiceResponse` of `signal`: empty on full success,
/// with `partial_success` when items were rejected.
pub(crate) fn export_response(signal: Signal, rejected: u64, message: String) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::{logs::v1 as logs, metrics::v1 as metrics, trace::v1 as trace};
    use prost::Message;
    let partial = rejected > 0;
    let rejected = rejected as i64;
    match signal {
        Signal::Traces => trace::ExportTraceServiceResponse {
            partial_success: partial
                .then_some(trace::ExportTracePartialSuccess { rejected_spans: rejected, error_message: message }),
        }
        .encode_to_vec(),
        Signal::Metrics => metrics::ExportMetricsServiceResponse {
            partial_success: partial.then_some(metrics::ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message: message,
            }),
        }
        .encode_to_vec(),
        Signal::Logs => logs::ExportLogsServiceResponse {
            partial_success: partial
                .then_some(logs::ExportLogsPartialSuccess { rejected_log_records: rejected, error_message: message }),
        }
        .encode_to_vec(),
    }
}
