//! The budget of bytes in flight, shared by both transports: requests it cannot take are
//! refused with the retryable status (503 + Retry-After, UNAVAILABLE + RetryInfo) and counted;
//! those it takes are delivered whole. A consumer that holds every request until released
//! keeps the budget full for as long as the test needs, so nothing depends on timing.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otlp::status::{RetryInfo, RpcStatus};
use otlp::{grpc, http, Consumer, Delivery, Grant, Limits, Outcome};
use prost::Message;
use testkit::collector::grpc_frame;
use tokio::sync::{mpsc, Semaphore};

/// Records what reached it, says so on `arrived`, then waits for `gate`.
struct Held {
    spans: Mutex<u64>,
    arrived: mpsc::UnboundedSender<()>,
    gate: Semaphore,
}

impl Consumer for Held {
    fn authenticate(&self, _key: Option<&str>) -> Result<Grant, String> {
        Ok(Grant::default())
    }

    fn consume(&self, d: Delivery) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + '_>> {
        Box::pin(async move {
            *self.spans.lock().unwrap() += d.request.items();
            let _ = self.arrived.send(());
            self.gate.acquire().await.unwrap().forget();
            Outcome::Accepted { rejected: 0, message: String::new() }
        })
    }
}

/// A trace request of `SPANS` spans, each with a 64 KiB attribute: about 256 KiB.
const SPANS: u64 = 4;

fn request() -> Vec<u8> {
    let span = |i: u8| Span {
        trace_id: vec![i + 1; 16],
        span_id: vec![i + 1; 8],
        name: "work".into(),
        attributes: vec![KeyValue {
            key: "padding".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("x".repeat(64 << 10))) }),
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: (0..SPANS as u8).map(span).collect(), ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The consumer, the shared limits (room for three requests and a half) and the request.
fn setup() -> (Arc<Held>, mpsc::UnboundedReceiver<()>, Limits, Vec<u8>) {
    let body = request();
    let x = body.len();
    let (arrived, on_arrival) = mpsc::unbounded_channel();
    let held = Arc::new(Held { spans: Mutex::new(0), arrived, gate: Semaphore::new(0) });
    let limits = Limits::new(x + 64, 3 * x + x / 2).unwrap();
    (held, on_arrival, limits, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_over_the_budget_get_503_with_retry_after_and_are_counted() {
    let (held, mut on_arrival, limits, body) = setup();
    let x = body.len();
    let budget = limits.inflight.clone();
    let base = common::serve(http::router_with(held.clone(), limits)).await;
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>, gzip: bool| {
        let mut req =
            client.post(format!("{base}/v1/traces")).header("content-type", "application/x-protobuf").body(body);
        if gzip {
            req = req.header("content-encoding", "gzip");
        }
        req.send()
    };
    // Three requests reach the consumer, one at a time, and stay there.
    let mut accepted = Vec::new();
    for _ in 0..3 {
        accepted.push(tokio::spawn(post(body.clone(), false)));
        on_arrival.recv().await.unwrap();
    }
    assert_eq!(budget.bytes(), 3 * x);
    // Four more plain ones have no room for their body, and a gzip one (a few KB) has room
    // for its compressed bytes but not for what they inflate to.
    let compressed = gz(&body);
    assert!(compressed.len() < x / 2);
    let mut refused = Vec::new();
    for i in 0..5 {
        refused.push(if i < 4 { post(body.clone(), false) } else { post(compressed.clone(), true) });
    }
    for r in futures_util::future::join_all(refused).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let status = RpcStatus::decode(r.bytes().await.unwrap()).unwrap();
        assert_eq!(status.code, 14, "UNAVAILABLE: {}", status.message);
        assert!(status.message.contains("no room"), "{}", status.message);
    }
    assert_eq!(budget.refused(), 5);
    assert_eq!(budget.bytes(), 3 * x, "a refused request holds nothing once answered");
    // Released, the three are accepted whole, and the budget is free again.
    held.gate.add_permits(100);
    for r in accepted {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!((budget.bytes(), *held.spans.lock().unwrap()), (0, 3 * SPANS));
    assert_eq!(post(compressed, true).await.unwrap().status(), 200);
    assert_eq!((budget.bytes(), budget.refused(), *held.spans.lock().unwrap()), (0, 5, 4 * SPANS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_share_the_budget_and_grpc_refuses_with_unavailable_and_retry_info() {
    let (held, mut on_arrival, limits, body) = setup();
    let x = body.len();
    let budget = limits.inflight.clone();
    let grpc_base = common::serve(grpc::router_with(held.clone(), limits.clone())).await;
    let http_base = common::serve(http::router_with(held.clone(), limits)).await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let call = |message: &[u8], gzip: bool| {
        let mut req = client
            .post(format!("{grpc_base}{}", grpc::TRACES_PATH))
            .header("content-type", "application/grpc")
            .body(grpc_frame(gzip, message));
        if gzip {
            req = req.header("grpc-encoding", "gzip");
        }
        req.send()
    };
    // Two gRPC calls and one HTTP request hold the budget.
    let mut accepted = vec![tokio::spawn(call(&body, false)), tokio::spawn(call(&body, false))];
    for _ in 0..2 {
        on_arrival.recv().await.unwrap();
    }
    let over_http = tokio::spawn(
        reqwest::Client::new()
            .post(format!("{http_base}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send(),
    );
    on_arrival.recv().await.unwrap();
    assert_eq!(budget.bytes(), 3 * x + 10, "two gRPC frames of 5 bytes more");
    let compressed = gz(&body);
    let refused = [call(&body, false), call(&body, false), call(&compressed, true)];
    for r in futures_util::future::join_all(refused).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 200, "gRPC statuses travel in the trailers-only headers");
        let h = r.headers();
        assert_eq!(h["grpc-status"], "14", "UNAVAILABLE");
        let info = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(h["google.rpc.retryinfo-bin"].to_str().unwrap())
            .unwrap();
        let delay = RetryInfo::decode(&info[..]).unwrap().retry_delay.unwrap();
        assert_eq!((delay.seconds, delay.nanos), (1, 0));
        assert!(h.contains_key("grpc-status-details-bin"));
    }
    assert_eq!(budget.refused(), 3);
    held.gate.add_permits(100);
    accepted.push(over_http);
    for r in accepted {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("grpc-status").is_none_or(|s| s == "0"));
        // Read the answer (and a gRPC one's trailers) to the end.
        r.bytes().await.unwrap();
    }
    assert_eq!((budget.bytes(), budget.refused(), *held.spans.lock().unwrap()), (0, 3, 3 * SPANS));
}
