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
mod json;
pub mod status;
pub mod view;

use std::sync::Arc;

use axum::http::HeaderMap;

pub use consumer::{Consumer, Delivery, Grant, Outcome, Request};
pub use decode::{decode, DecodeError, Encoding, Payload, Signal};

/// Default limit of a request body, before and after decompression (the spec recommends 64 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 << 20;

/// What both transports share: the consumer, the size limit, and the steps
/// from an inflated body to the consumer's verdict.
pub(crate) struct Receiver {
    pub(crate) consumer: Arc<dyn Consumer>,
    pub(crate) max_request_bytes: usize,
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
