//! The OTLP/gRPC receiver, driven by the official OpenTelemetry Python SDK's
//! gRPC exporters and by hand-made frames over h2c.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{recorder, serve, Recorder};
use otlp::grpc::{self, LOGS_PATH, TRACES_PATH};
use otlp::status::{RetryInfo, RpcStatusWithDetails};
use otlp::Outcome;
use prost::Message;
use testkit::collector::grpc_frame;

async fn start(limit: usize) -> (Arc<Recorder>, String) {
    let rec = recorder();
    let base = serve(grpc::router(rec.clone(), limit)).await;
    (rec, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_is_received_exactly_plain_and_gzip() {
    let (rec, base) = start(64 << 20).await;
    let args =
        ["--spans", "1234", "--spans-per-export", "200", "--metric-points", "41", "--logs", "17", "--key", "agent-key"];
    let report = common::sdk(&base, "grpc", &args).await;
    assert_eq!(
        report,
        serde_json::json!({"spans": 1234, "spans_ok": true, "metric_points": 41, "metric_points_ok": true, "logs": 17, "logs_ok": true})
    );
    assert_eq!((rec.total("spans"), rec.total("metric_points"), rec.total("logs")), (1234, 41, 17));
    assert!(rec.seen.lock().unwrap().iter().all(|s| s.2.as_deref() == Some("agent-key")));
    let report = common::sdk(&base, "grpc", &["--spans", "300", "--gzip"]).await;
    assert_eq!(report["spans_ok"], true);
    assert_eq!(rec.total("spans"), 1534);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_honours_retry_info_and_stops_at_unauthenticated() {
    let (rec, base) = start(64 << 20).await;
    // Throttled once with a 2 s RetryInfo, then accepted: the SDK waits and resends.
    rec.script
        .lock()
        .unwrap()
        .push_back(Outcome::Throttled { retry_after: Duration::from_secs(2), message: "tenant over limit".into() });
    let started = Instant::now();
    let report = common::sdk(&base, "grpc", &["--spans", "10", "--spans-per-export", "10"]).await;
    assert_eq!(report["spans_ok"], true);
    assert_eq!(rec.seen.lock().unwrap().len(), 2, "one throttled attempt, one accepted");
    assert!(started.elapsed() >= Duration::from_secs(2), "the SDK retried before the RetryInfo delay");
    // UNAUTHENTICATED is final: one attempt, reported as a failure.
    rec.set(Outcome::Unauthenticated("unknown key".into()));
    let report = common::sdk(&base, "grpc", &["--spans", "3", "--spans-per-export", "3"]).await;
    assert_eq!(report["spans_ok"], false);
    assert_eq!(rec.seen.lock().unwrap().len(), 3);
}

struct Reply {
    status: Option<i32>,
    message: String,
    details: Option<RpcStatusWithDetails>,
    retry_info: Option<RetryInfo>,
}

async fn call(base: &str, path: &str, encoding: Option<&str>, body: Vec<u8>) -> Reply {
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut req = client.post(format!("{base}{path}")).header("content-type", "application/grpc").body(body);
    if let Some(e) = encoding {
        req = req.header("grpc-encoding", e);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let text = |name: &str| h.get(name).map(|v| v.to_str().unwrap().to_owned());
    let bin = |name: &str| text(name).map(|v| base64::engine::general_purpose::STANDARD_NO_PAD.decode(v).unwrap());
    Reply {
        status: text("grpc-status").map(|s| s.parse().unwrap()),
        message: percent_decode(&text("grpc-message").unwrap_or_default()),
        details: bin("grpc-status-details-bin").map(|b| RpcStatusWithDetails::decode(&b[..]).unwrap()),
        retry_info: bin("google.rpc.retryinfo-bin").map(|b| RetryInfo::decode(&b[..]).unwrap()),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn every_fault_gets_the_status_the_spec_names() {
    let (rec, base) = start(4096).await;
    let r = call(&base, TRACES_PATH, None, grpc_frame(false, &[0x0a, 0xff, 0xff])).await;
    assert_eq!(r.status, Some(3), "malformed protobuf is INVALID_ARGUMENT, not INTERNAL");
    assert!(r.message.starts_with("malformed OTLP protobuf traces request: "), "{}", r.message);

    let r = call(&base, LOGS_PATH, None, grpc_frame(false, &vec![0; 5000])).await;
    assert_eq!(
        (r.status, r.message.as_str()),
        (Some(8), "message is more than 4096 bytes, the limit; split the batch")
    );
    assert!(r.retry_info.is_none() && r.details.is_none(), "no RetryInfo: over-size must not be retried");

    let r = call(&base, LOGS_PATH, Some("gzip"), grpc_frame(true, &gz(&vec![0; 1 << 20]))).await;
    assert_eq!(r.status, Some(8), "a gzip bomb is refused once it inflates past the limit");

    let r = call(&base, LOGS_PATH, Some("gzip"), grpc_frame(true, b"\x1f\x8bjunk")).await;
    assert_eq!(r.status, Some(3));
    let r =
        call(&base, LOGS_PATH, Some("zstd"), grpc_frame(true, &zstd::encode_all(&vec![0u8; 1 << 20][..], 3).unwrap()))
            .await;
    assert_eq!(r.status, Some(8), "a zstd bomb is refused once it inflates past the limit");
    let r = call(&base, LOGS_PATH, Some("zstd"), grpc_frame(true, b"junk")).await;
    assert_eq!(r.status, Some(3));
    assert!(r.message.starts_with("the request body is not a valid zstd stream"), "{}", r.message);
    let r = call(&base, LOGS_PATH, Some("deflate"), grpc_frame(true, b"x")).await;
    assert_eq!(
        (r.status, r.message.as_str()),
        (Some(12), "grpc-encoding \"deflate\" is not supported; use one of gzip,zstd,identity")
    );
    let r = call(
        &base,
        "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
        None,
        grpc_frame(false, b""),
    )
    .await;
    assert_eq!(r.status, Some(12));

    // An empty request succeeds with an empty response in a frame and grpc-status 0 in trailers.
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = client
        .post(format!("{base}{TRACES_PATH}"))
        .header("content-type", "application/grpc")
        .body(grpc_frame(false, b""))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("grpc-status").is_none(), "success status travels in trailers");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &[0, 0, 0, 0, 0]);
    assert_eq!(rec.seen.lock().unwrap().len(), 1);

    // Throttling and unavailability carry RetryInfo, in both places clients look for it.
    for (outcome, code) in [
        (
            Outcome::Throttled {
                retry_after: Duration::from_millis(1500),
                message: "tenant acme over 100 spans/s".into(),
            },
            8,
        ),
        (
            Outcome::Unavailable { retry_after: Duration::from_secs(3), message: "buffer full: 100% of 1 GiB".into() },
            14,
        ),
    ] {
        rec.set(outcome.clone());
        let r = call(&base, TRACES_PATH, None, grpc_frame(false, b"")).await;
        let (after, message) = match &outcome {
            Outcome::Throttled { retry_after, message } | Outcome::Unavailable { retry_after, message } => {
                (*retry_after, message.clone())
            }
            _ => unreachable!(),
        };
        assert_eq!((r.status, r.message.as_str()), (Some(code), message.as_str()));
        let delay = r.retry_info.unwrap().retry_delay.unwrap();
        assert_eq!((delay.seconds, delay.nanos), (after.as_secs() as i64, after.subsec_nanos() as i32));
        let details = r.details.unwrap();
        assert_eq!(
            (details.code, details.details[0].type_url.as_str()),
            (code, "type.googleapis.com/google.rpc.RetryInfo")
        );
    }
}
