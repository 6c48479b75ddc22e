//! One unary OTLP/gRPC `Export` call over HTTP/2 prior knowledge (h2c), and
//! its outcome read from the response headers or trailers.

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// The gRPC method path of OTLP trace export.
pub use otlp::grpc::TRACES_PATH;

/// What the server answered to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `grpc-status: 0`; `rejected` spans were refused by a partial success.
    Ok {
        /// `partial_success.rejected_spans`.
        rejected: u64,
    },
    /// Any other gRPC status, with its message.
    Status {
        /// The gRPC status code.
        code: i32,
        /// `grpc-message`, percent-decoded.
        message: String,
    },
}

/// The target, parsed from an `http://host:port` URL.
#[derive(Debug, Clone)]
pub struct Target {
    authority: String,
    uri: http::Uri,
}

impl Target {
    /// Parses `http://host:port[/]`; TLS is not supported (h2c only).
    pub fn parse(url: &str) -> Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("{url:?}: the load generator speaks h2c only; give an http://host:port URL");
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            bail!("{url:?}: expected http://host:port with no path (the gRPC path is fixed)");
        }
        let uri = format!("http://{authority}{TRACES_PATH}")
            .parse()
            .with_context(|| format!("{url:?} is not a valid URL"))?;
        Ok(Self { authority: authority.to_owned(), uri })
    }
}

/// One HTTP/2 connection, shared by several in-flight calls (streams), and
/// re-established after it fails.
pub struct Connection {
    target: Target,
    sender: Mutex<Option<h2::client::SendRequest<Bytes>>>,
}

impl Connection {
    /// A connection to `target`, opened on first use.
    pub fn new(target: Target) -> Self {
        Self { target, sender: Mutex::new(None) }
    }

    async fn sender(&self) -> Result<h2::client::SendRequest<Bytes>> {
        let mut slot = self.sender.lock().await;
        if let Some(sender) = slot.as_ref() {
            return Ok(sender.clone());
        }
        let tcp = TcpStream::connect(&self.target.authority)
            .await
            .with_context(|| format!("connecting to {}", self.target.authority))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .handshake::<_, Bytes>(tcp)
            .await
            .with_context(|| format!("HTTP/2 handshake with {}", self.target.authority))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        *slot = Some(sender.clone());
        Ok(sender)
    }

    /// Forgets the connection, so the next call opens a new one.
    pub async fn reset(&self) {
        *self.sender.lock().await = None;
    }

    /// Sends one Export call with `frame` (a complete gRPC message frame) as its body.
    /// An error means the call failed below gRPC (connection, protocol).
    pub async fn export(&self, frame: Bytes, headers: &HeaderMap) -> Result<Answer> {
        let sender = self.sender().await?;
        let mut sender = sender.ready().await.context("HTTP/2 connection")?;
        let mut request = Request::post(self.target.uri.clone()).body(())?;
        let h = request.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("te", HeaderValue::from_static("trailers"));
        for (name, value) in headers {
            h.insert(name, value.clone());
        }
        let (response, mut stream) = sender.send_request(request, false).context("HTTP/2 request")?;
        stream.send_data(frame, true).context("HTTP/2 request body")?;
        let response = response.await.context("HTTP/2 response")?;
        if response.status() != http::StatusCode::OK {
            return Ok(Answer::Status { code: UNKNOWN, message: format!("HTTP status {}", response.status()) });
        }
        let (parts, mut body) = response.into_parts();
        // A trailers-only response carries the status in the headers.
        if let Some(answer) = status_of(&parts.headers) {
            return Ok(answer);
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.context("HTTP/2 response body")?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.context("HTTP/2 trailers")?.unwrap_or_default();
        match status_of(&trailers) {
            Some(Answer::Ok { .. }) => Ok(Answer::Ok { rejected: rejected_spans(&data)? }),
            Some(other) => Ok(other),
            None => Ok(Answer::Status { code: UNKNOWN, message: "response without grpc-status".into() }),
        }
    }
}

/// gRPC UNKNOWN: what a client reports for a response that is not gRPC.
const UNKNOWN: i32 = 2;

fn status_of(headers: &HeaderMap) -> Option<Answer> {
    let code = headers.get("grpc-status")?;
    let Some(code) = code.to_str().ok().and_then(|c| c.parse::<i32>().ok()) else {
        return Some(Answer::Status { code: UNKNOWN, message: format!("malformed grpc-status {code:?}") });
    };
    if code == 0 {
        return Some(Answer::Ok { rejected: 0 });
    }
    let message = headers.get("grpc-message").map(|m| percent_decode(m.as_bytes())).unwrap_or_default();
    Some(Answer::Status { code, message })
}

/// `partial_success.rejected_spans` of the framed `ExportTraceServiceResponse`.
fn rejected_spans(data: &[u8]) -> Result<u64> {
    if data.is_empty() {
        return Ok(0);
    }
    if data.len() < 5 || data[0] != 0 {
        bail!("response is not one uncompressed gRPC frame ({} bytes)", data.len());
    }
    let response = ExportTraceServiceResponse::decode(&data[5..]).context("decoding ExportTraceServiceResponse")?;
    Ok(response.partial_success.map_or(0, |p| p.rejected_spans.max(0) as u64))
}

fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical name of a gRPC status code, e.g. `UNAVAILABLE`.
pub fn status_name(code: i32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code).ok().and_then(|c| NAMES.get(c)).map_or_else(|| format!("CODE_{code}"), |n| (*n).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_messages_are_read_precisely() {
        let mut h = HeaderMap::new();
        assert_eq!(status_of(&h), None);
        h.insert("grpc-status", HeaderValue::from_static("14"));
        h.insert("grpc-message", HeaderValue::from_static("usage store unavailable: 100%25 down"));
        assert_eq!(
            status_of(&h),
            Some(Answer::Status { code: 14, message: "usage store unavailable: 100% down".into() })
        );
        assert_eq!(status_name(14), "UNAVAILABLE");
        assert_eq!(status_name(16), "UNAUTHENTICATED");
        assert_eq!(status_name(99), "CODE_99");
        assert!(Target::parse("https://x:1").is_err());
        assert!(Target::parse("http://127.0.0.1:4417/v1/traces").is_err());
        assert_eq!(Target::parse("http://127.0.0.1:4417/").unwrap().authority, "127.0.0.1:4417");
    }
}
