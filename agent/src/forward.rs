//! Sends batches to collectors over OTLP/gRPC (tonic) and decides, per the OTLP
//! spec, whether a refusal is retried or final.
//!
//! Every export carries the agent's key and the batch identity
//! (`tally-batch: agent:<agent-id>:<boot> <seq> <accepted-millis>`), so a
//! resend — after a timeout, a failover to another collector, or a restart —
//! is stored once by the collectors.

use std::error::Error as _;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use otlp::batch::BatchId;
use otlp::status::{RetryInfo, RpcStatusWithDetails};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::batches::Batch;

/// One collector.
#[derive(Clone, Debug)]
pub struct Collector {
    url: String,
    channel: Channel,
    compression: Option<CompressionEncoding>,
}

impl Collector {
    /// A collector at `url` (`http://host:4417`), sent batches compressed with
    /// `compression`; connects when first used.
    pub fn new(url: &str, timeout: Duration, compression: Option<CompressionEncoding>) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("collector URL {url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .tcp_nodelay(true);
        Ok(Self { url: url.to_owned(), channel: endpoint.connect_lazy(), compression })
    }

    /// The URL, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one batch; see [`Verdict`].
    pub async fn send(&self, batch: &Batch, id: &BatchId, key: Option<&str>) -> Verdict {
        let path = otlp::grpc::path(batch.signal);
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_encoding_message_size(usize::MAX);
        if let Some(compression) = self.compression {
            grpc = grpc.send_compressed(compression);
        }
        if let Err(e) = grpc.ready().await {
            return Verdict::Retry { after: None, reason: format!("{}: not ready: {e}", self.url) };
        }
        let mut request = tonic::Request::new(batch.body.clone());
        let md = request.metadata_mut();
        md.insert(otlp::batch::HEADER, id.to_string().parse().expect("the identity is ASCII"));
        if let Some(key) = key {
            match format!("Bearer {key}").parse() {
                Ok(v) => {
                    md.insert("authorization", v);
                }
                Err(_) => {
                    return Verdict::Final {
                        code: "BadKey".into(),
                        reason: "the agent key is not a valid header value".into(),
                    }
                }
            }
        }
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
        match grpc.unary(request, path, Raw).await {
            Ok(response) => {
                let partial = ExportResponse::decode(response.into_inner()).ok().and_then(|r| r.partial_success);
                let (rejected, message) =
                    partial.map(|p| (p.rejected.max(0) as u64, p.error_message)).unwrap_or_default();
                Verdict::Accepted { rejected, message }
            }
            Err(status) => classify(&status, &self.url),
        }
    }
}

/// What a collector's answer means for the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stored, except `rejected` items (partial success: never retried).
    Accepted {
        /// Items refused for good.
        rejected: u64,
        /// Why.
        message: String,
    },
    /// Try again (another collector, after `after` if the collector said so).
    Retry {
        /// RetryInfo's delay.
        after: Option<Duration>,
        /// The status, for logs.
        reason: String,
    },
    /// Over its tenant's rate limit (RESOURCE_EXHAUSTED with RetryInfo): this batch waits
    /// `after`, other tenants' batches go on.
    Throttled {
        /// RetryInfo's delay.
        after: Duration,
        /// The status, for logs.
        reason: String,
    },
    /// Refused for good: the batch is dropped and counted.
    Final {
        /// The gRPC code's name (a low-cardinality reason).
        code: String,
        /// The status, for logs.
        reason: String,
    },
}

/// The OTLP spec's rule: CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE,
/// UNAVAILABLE and DATA_LOSS are retried; RESOURCE_EXHAUSTED only with RetryInfo.
/// The rule is for statuses a collector sent. A status tonic made up from a
/// transport failure (a connection reset by a collector killed mid-request comes
/// out as INTERNAL or UNKNOWN) says nothing about the batch: it is retried, which
/// is safe because the batch's identity makes a second delivery count once.
pub fn classify(status: &Status, url: &str) -> Verdict {
    let after = retry_info(status);
    let reason = format!("{url}: {:?}: {}", status.code(), status.message());
    // tonic sets a source only on statuses it derives from an error of its own;
    // one decoded from a collector's grpc-status has none.
    if status.source().is_some() {
        return Verdict::Retry { after, reason: format!("{reason} (no answer from the collector)") };
    }
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Verdict::Retry { after, reason },
        Code::ResourceExhausted => match after {
            Some(after) => Verdict::Throttled { after, reason },
            None => Verdict::Final { code: "ResourceExhausted".into(), reason },
        },
        code => Verdict::Final { code: format!("{code:?}"), reason },
    }
}

fn retry_info(status: &Status) -> Option<Duration> {
    let details = RpcStatusWithDetails::decode(status.details()).ok()?;
    let any = details.details.iter().find(|a| a.type_url.ends_with("/google.rpc.RetryInfo"))?;
    let delay = RetryInfo::decode(&any.value[..]).ok()?.retry_delay?;
    Some(Duration::new(delay.seconds.max(0) as u64, delay.nanos.clamp(0, 999_999_999) as u32))
}

/// The shape shared by the three `Export*ServiceResponse` messages.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// A codec that sends bytes already encoded and hands back the response's bytes.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otlp::status::RpcStatus;

    fn with_retry_info(code: Code, after: Duration) -> Status {
        let details = RpcStatus::with_retry_info(code as i32, "slow down", &RetryInfo::after(after)).encode_to_vec();
        Status::with_details(code, "slow down", details.into())
    }

    #[test]
    fn the_spec_decides_what_is_retried() {
        for code in [
            Code::Unavailable,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::DataLoss,
        ] {
            assert!(matches!(classify(&Status::new(code, "x"), "c"), Verdict::Retry { after: None, .. }), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Internal,
            Code::Unimplemented,
            Code::ResourceExhausted,
        ] {
            assert!(matches!(classify(&Status::new(code, "x"), "c"), Verdict::Final { .. }), "{code:?}");
        }
        // A failure of the connection, not an answer: whatever code tonic gives it, retried.
        for kind in [std::io::ErrorKind::BrokenPipe, std::io::ErrorKind::ConnectionReset, std::io::ErrorKind::Other] {
            let status = Status::from_error(Box::new(std::io::Error::new(kind, "connection lost")));
            assert!(matches!(classify(&status, "c"), Verdict::Retry { .. }), "{kind:?} became {:?}", status.code());
        }
        let throttled = classify(&with_retry_info(Code::ResourceExhausted, Duration::from_millis(1500)), "c");
        assert_eq!(
            throttled,
            Verdict::Throttled { after: Duration::from_millis(1500), reason: "c: ResourceExhausted: slow down".into() }
        );
        assert!(
            matches!(classify(&with_retry_info(Code::Unavailable, Duration::from_secs(5)), "c"), Verdict::Retry { after: Some(d), .. } if d == Duration::from_secs(5))
        );
    }
}
