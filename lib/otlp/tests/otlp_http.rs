//! The OTLP/HTTP receiver, driven by the official OpenTelemetry Python SDK and
//! by hand-made bad requests. The consumer here records what reached it and
//! answers with a scripted outcome, so every status path is exercised.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::{recorder, serve, Recorder};
use otlp::status::RpcStatus;
use otlp::{http, Outcome};
use prost::Message;

async fn start(limit: usize) -> (Arc<Recorder>, String) {
    let rec = recorder();
    let base = serve(http::router(rec.clone(), limit)).await;
    (rec, base)
}

async fn sdk(base: &str, args: &[&str]) -> serde_json::Value {
    common::sdk(base, "http", args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_is_received_exactly() {
    let (rec, base) = start(64 << 20).await;
    let report = sdk(
        &base,
        &["--spans", "1234", "--spans-per-export", "100", "--metric-points", "37", "--logs", "55", "--key", "k1"],
    )
    .await;
    assert_eq!(
        report,
        serde_json::json!({"spans": 1234, "spans_ok": true, "metric_points": 37, "metric_points_ok": true, "logs": 55, "logs_ok": true})
    );
    assert_eq!((rec.total("spans"), rec.total("metric_points"), rec.total("logs")), (1234, 37, 55));
    assert!(rec.seen.lock().unwrap().iter().all(|s| s.2.as_deref() == Some("k1")));
    // gzip, as the SDK compresses it.
    let report = sdk(&base, &["--spans", "500", "--gzip", "--logs", "3"]).await;
    assert_eq!(report["spans_ok"], true);
    assert_eq!((rec.total("spans"), rec.total("logs")), (1734, 58));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_treats_a_401_as_final() {
    let (rec, base) = start(64 << 20).await;
    rec.set(Outcome::Unauthenticated("unknown key".into()));
    let report = sdk(&base, &["--spans", "5", "--key", "bad"]).await;
    assert_eq!(report["spans_ok"], false);
    // A 401 is final: the SDK sent the batch once.
    assert_eq!(rec.seen.lock().unwrap().len(), 1);
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

struct Reply {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Vec<u8>,
}

async fn post(base: &str, path: &str, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> Reply {
    let mut req = reqwest::Client::new().post(format!("{base}{path}")).header("content-type", content_type).body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().await.unwrap();
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (content_type, retry_after) = (header("content-type").unwrap_or_default(), header("retry-after"));
    Reply { status: resp.status().as_u16(), content_type, retry_after, body: resp.bytes().await.unwrap().to_vec() }
}

fn proto_status(reply: &Reply) -> RpcStatus {
    assert_eq!(reply.content_type, "application/x-protobuf");
    RpcStatus::decode(&reply.body[..]).unwrap()
}

fn json(reply: &Reply) -> serde_json::Value {
    assert_eq!(reply.content_type, "application/json");
    serde_json::from_slice(&reply.body).unwrap()
}

const SPANS_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
  "scopeSpans":[{"spans":[
    {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","name":"a","kind":2,
     "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000},
    {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"b","kind":2,
     "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000"}]}]}]}"#;

#[tokio::test]
async fn every_bad_request_gets_its_status_and_a_precise_message() {
    let (rec, base) = start(4096).await;
    // OTLP/JSON: hex ids in any case, 64-bit integers as strings or numbers.
    let ok = post(&base, "/v1/traces", "application/json; charset=utf-8", None, SPANS_JSON.into()).await;
    assert_eq!((ok.status, json(&ok)), (200, serde_json::json!({})));
    assert_eq!(rec.total("spans"), 2);

    let r = post(&base, "/v1/traces", "application/x-protobuf", None, vec![0x0a, 0xff, 0xff]).await;
    let s = proto_status(&r);
    assert_eq!((r.status, s.code), (400, 3));
    assert!(s.message.starts_with("malformed OTLP protobuf traces request: "), "{}", s.message);

    let r = post(&base, "/v1/metrics", "application/json", None, b"{\"resourceMetrics\": [".to_vec()).await;
    let j = json(&r);
    assert_eq!((r.status, j["code"].as_i64()), (400, Some(3)));
    assert!(j["message"].as_str().unwrap().starts_with("malformed OTLP JSON metrics request: EOF"), "{j}");

    // JSON that opentelemetry-proto would decode while dropping data is refused, naming the metric.
    let enum_name = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"reqs","sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_DELTA","dataPoints":[{"asInt":"1"}]}}]}]}]}"#;
    let r = post(&base, "/v1/metrics", "application/json", None, enum_name.into()).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let big_int = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"reqs","gauge":{"dataPoints":[{"asInt":"1"},{"asInt":"99999999999999999999999"}]}}]}]}]}"#;
    let r = post(&base, "/v1/metrics", "application/json", None, big_int.into()).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(json(&r)["message"].as_str().unwrap().contains("metric \"reqs\""), "{}", String::from_utf8_lossy(&r.body));
    let good = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"reqs","sum":{"aggregationTemporality":1,"dataPoints":[{"asInt":"1"},{"asDouble":2.5}]}}]}]}]}"#;
    let r = post(&base, "/v1/metrics", "application/json", None, good.into()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(rec.total("metric_points"), 2);

    let r = post(&base, "/v1/logs", "application/x-protobuf", None, vec![0; 5000]).await;
    assert_eq!((r.status, proto_status(&r).code), (413, 8));
    assert_eq!(proto_status(&r).message, "request body is more than 4096 bytes, the limit; split the batch");

    // Small on the wire, too large once inflated: refused without inflating it all.
    let r = post(&base, "/v1/logs", "application/x-protobuf", Some("gzip"), gz(&vec![0; 1 << 20])).await;
    assert_eq!(
        (r.status, proto_status(&r).message.as_str()),
        (413, "request body inflates to more than 4096 bytes, the limit; split the batch")
    );

    let r = post(&base, "/v1/traces", "application/x-protobuf", Some("gzip"), b"\x1f\x8bnot really".to_vec()).await;
    assert_eq!(r.status, 400);
    assert!(proto_status(&r).message.starts_with("the request body is not a valid gzip stream"));

    let r = post(
        &base,
        "/v1/logs",
        "application/x-protobuf",
        Some("zstd"),
        zstd::encode_all(&vec![0u8; 1 << 20][..], 3).unwrap(),
    )
    .await;
    assert_eq!(
        (r.status, proto_status(&r).message.as_str()),
        (413, "request body inflates to more than 4096 bytes, the limit; split the batch")
    );
    let r = post(&base, "/v1/traces", "application/x-protobuf", Some("zstd"), b"not zstd".to_vec()).await;
    assert_eq!(r.status, 400);
    assert!(proto_status(&r).message.starts_with("the request body is not a valid zstd stream"));
    let ok = post(
        &base,
        "/v1/traces",
        "application/json",
        Some("zstd"),
        zstd::encode_all(SPANS_JSON.as_bytes(), 3).unwrap(),
    )
    .await;
    assert_eq!((ok.status, json(&ok)), (200, serde_json::json!({})));
    assert_eq!(rec.total("spans"), 4, "zstd bodies are taken like gzip ones");

    let r = post(&base, "/v1/traces", "application/x-protobuf", Some("br"), vec![]).await;
    assert_eq!(
        (r.status, proto_status(&r).message.as_str()),
        (415, "unsupported Content-Encoding \"br\"; use gzip, zstd or none")
    );

    let r = post(&base, "/v1/traces", "text/plain", None, b"hi".to_vec()).await;
    assert_eq!(r.status, 415);
    assert_eq!(
        json(&r)["message"],
        "unsupported Content-Type \"text/plain\"; use application/x-protobuf or application/json"
    );

    let r = reqwest::get(format!("{base}/v1/traces")).await.unwrap();
    assert_eq!(r.status(), 405);

    // An empty request is a success.
    let r = post(&base, "/v1/metrics", "application/x-protobuf", None, vec![]).await;
    assert_eq!((r.status, r.body.len()), (200, 0));

    // Nothing bad reached the consumer: three good JSON requests (one zstd) and one empty one.
    assert_eq!(rec.seen.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn consumer_outcomes_map_to_the_spec_statuses() {
    let (rec, base) = start(1 << 20).await;
    let cases = [
        (Outcome::Accepted { rejected: 1, message: "span 2 has no trace id".into() }, 200, None),
        (
            Outcome::Throttled {
                retry_after: Duration::from_millis(1500),
                message: "tenant acme over 100 spans/s".into(),
            },
            429,
            Some("2"),
        ),
        (Outcome::Unavailable { retry_after: Duration::ZERO, message: "buffer full".into() }, 503, Some("1")),
        (Outcome::Unauthenticated("unknown key".into()), 401, None),
        (Outcome::Invalid("Span.attributes (field 9): runs past the end of its message at byte 7".into()), 400, None),
    ];
    for (outcome, status, retry_after) in cases {
        rec.set(outcome.clone());
        let r = post(&base, "/v1/traces", "application/json", None, SPANS_JSON.into()).await;
        assert_eq!((r.status, r.retry_after.as_deref()), (status, retry_after), "{outcome:?}");
        let body = json(&r);
        match outcome {
            Outcome::Accepted { .. } => {
                assert_eq!(
                    body,
                    serde_json::json!({"partialSuccess": {"rejectedSpans": "1", "errorMessage": "span 2 has no trace id"}})
                )
            }
            Outcome::Throttled { .. } => {
                assert_eq!(body, serde_json::json!({"code": 8, "message": "tenant acme over 100 spans/s"}))
            }
            Outcome::Unavailable { .. } => assert_eq!(body, serde_json::json!({"code": 14, "message": "buffer full"})),
            Outcome::Unauthenticated(_) => assert_eq!(body, serde_json::json!({"code": 16, "message": "unknown key"})),
            Outcome::Invalid(m) => assert_eq!(body, serde_json::json!({"code": 3, "message": m})),
        }
    }
    // Partial success in protobuf.
    rec.set(Outcome::Accepted { rejected: 3, message: "bad".into() });
    let r = post(&base, "/v1/logs", "application/x-protobuf", None, vec![]).await;
    let resp = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse::decode(&r.body[..]).unwrap();
    let partial = resp.partial_success.unwrap();
    assert_eq!((partial.rejected_log_records, partial.error_message.as_str()), (3, "bad"));
}

#[tokio::test]
async fn json_doubles_in_strings_are_metered_and_malformed_ones_named() {
    let (rec, base) = start(1 << 20).await;
    // The proto3 JSON mapping: a double is a number or a string; NaN and the infinities only strings.
    let good = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
      {"name":"g","gauge":{"dataPoints":[{"asDouble":"1.5"},{"asDouble":"NaN"},{"asDouble":"-Infinity"}]}},
      {"name":"h","histogram":{"aggregationTemporality":2,"dataPoints":[{"count":"1","sum":"Infinity","explicitBounds":["0.5"],"bucketCounts":["0","1"]}]}}]}]}]}"#;
    let r = post(&base, "/v1/metrics", "application/json", None, good.into()).await;
    assert_eq!((r.status, json(&r)), (200, serde_json::json!({})));
    assert_eq!(rec.total("metric_points"), 4);

    let bad = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[{"asDouble":"1.5x"}]}}]}]}]}"#;
    let r = post(&base, "/v1/metrics", "application/json", None, bad.into()).await;
    assert_eq!(
        (r.status, json(&r)),
        (
            400,
            serde_json::json!({"code": 3, "message": "malformed OTLP JSON metrics request: resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].asDouble: expected a double (a number, or a string holding one, NaN, Infinity or -Infinity), found \"1.5x\""})
        )
    );
    assert_eq!(rec.seen.lock().unwrap().len(), 1, "the malformed request never reached the consumer");
}

#[tokio::test]
async fn repeated_keys_in_a_kvlist_get_one_verdict_in_json_and_protobuf() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let (rec, base) = start(1 << 20).await;
    // Attribute keys MUST be unique, but senders repeat them; the rule is the same everywhere (the
    // last wins, docs/collector.md), in a kvlist as in resource, span, log and point attributes.
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"a"}},{"key":"service.name","value":{"stringValue":"b"}},
        {"key":"k8s","value":{"kvlistValue":{"values":[{"key":"pod","value":{"stringValue":"x"}},{"key":"pod","value":{"intValue":"1"}}]}}}]},
      "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a",
        "attributes":[{"key":"m","value":{"kvlistValue":{"values":[{"key":"d","value":{"doubleValue":1}},{"key":"d","value":{"doubleValue":2}}]}}}]}]}]}]}"#;
    let r = post(&base, "/v1/traces", "application/json", None, body.into()).await;
    assert_eq!((r.status, json(&r)), (200, serde_json::json!({})));
    let Ok(otlp::Payload::Traces(request)) = otlp::decode(otlp::Signal::Traces, otlp::Encoding::Json, body.as_bytes())
    else {
        panic!()
    };
    let r =
        post(&base, "/v1/traces", "application/x-protobuf", None, ExportTraceServiceRequest::encode_to_vec(&request))
            .await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(rec.total("spans"), 2);
}
