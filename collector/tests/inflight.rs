//! The receivers' budget of bytes in flight, with the real binary and a real ClickHouse: three
//! uploads in progress hold it (by their Content-Length), five more are refused with 503 and
//! `Retry-After` and counted on /metrics, and the three land in ClickHouse exactly.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rust_decimal::Decimal;
use testkit::collector::{setup, start_collector, totals, value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SPANS: u64 = 4;

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
        ..Default::default()
    }
}

/// `SPANS` spans of tenant acme, each with a 64 KiB attribute: about 256 KiB of protobuf.
fn request(n: u8) -> Vec<u8> {
    let span = |i: u8| Span {
        trace_id: vec![n + 1; 16],
        span_id: vec![i + 1; 8],
        name: "work".into(),
        kind: 2,
        attributes: vec![kv("padding", "x".repeat(64 << 10))],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("tenant.id", "acme".into())], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans: (0..SPANS as u8).map(span).collect(), ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// An HTTP/1.1 upload over its own connection, sent in two parts.
struct Upload(TcpStream);

impl Upload {
    /// Sends the headers and the first `first` bytes of `body`.
    async fn begin(http_url: &str, body: &[u8], first: usize) -> Self {
        let mut s = TcpStream::connect(http_url.trim_start_matches("http://")).await.unwrap();
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nhost: tally\r\ncontent-type: application/x-protobuf\r\nauthorization: Bearer \
             agent-key\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body[..first]).await.unwrap();
        Self(s)
    }

    /// Sends the rest of `body` and reads the answer: its status line and headers.
    async fn finish(mut self, rest: &[u8]) -> String {
        self.0.write_all(rest).await.unwrap();
        let mut answer = Vec::new();
        self.0.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer);
        text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_budget_get_503_with_retry_after_and_the_rest_land_exactly() {
    let (server, db, ch) = setup("inflight").await;
    let dir = tempfile::tempdir().unwrap();
    let x = request(0).len();
    let (max_request, budget) = ((x + 64).to_string(), (3 * x + x / 2).to_string());
    let running = start_collector(
        &server,
        &db,
        dir.path(),
        &["--max-request-bytes", &max_request, "--max-inflight-bytes", &budget],
    )
    .await;
    let wait = |line: String| {
        let service = &running.service;
        async move { service.wait_for_line(&line, Duration::from_secs(60)).await.unwrap() }
    };
    // Three uploads begin: each holds its Content-Length from the moment its headers are read.
    let mut held = Vec::new();
    for n in 0..3u8 {
        let body = request(n);
        held.push((Upload::begin(&running.http_url, &body, x / 2).await, body));
        wait(format!("tally_collector_inflight_bytes {}", (usize::from(n) + 1) * x)).await;
    }
    // Five more find no room: refused (after their body is read and dropped) with the retryable status.
    let refused: Vec<_> = (3..8u8)
        .map(|n| {
            let url = running.http_url.clone();
            tokio::spawn(async move {
                let body = request(n);
                Upload::begin(&url, &body, 0).await.finish(&body).await
            })
        })
        .collect();
    for r in refused {
        let head = r.await.unwrap();
        assert!(head.starts_with("http/1.1 503"), "{head}");
        assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");
    }
    // The three finish and are acknowledged.
    for (upload, body) in held {
        let head = upload.finish(&body[x / 2..]).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
    }
    wait("tally_collector_inflight_bytes 0".into()).await;
    let metrics = running.metrics().await;
    assert!(metrics.contains("\ntally_collector_inflight_refused_total 5\n"), "{metrics}");
    assert!(metrics.contains(r#"tally_collector_responses_total{transport="http",code="503"} 5"#), "{metrics}");
    assert!(metrics.contains(r#"tally_collector_responses_total{transport="http",code="200"} 3"#), "{metrics}");
    running.settle().await;
    let got = totals(&ch, &db).await;
    assert_eq!(value(&got, "acme", "spans"), Decimal::from(3 * SPANS), "{got:?}");
    assert_eq!(value(&got, "acme", "requests"), Decimal::from(3 * SPANS), "{got:?}");
}
