//! Custom meters at the agent (the binaries, a real ClickHouse): agent and collector load the same
//! meters file, so an app sending through the agent is told, in the agent's partial success, of
//! the items a custom meter refuses — the answer the collector gives to the same request sent to
//! it directly — and after delivery the usage stored for both is exactly what the meters say.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use metering::clickhouse::ClickHouse;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use metering::store::Store;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rust_decimal::Decimal;
use testkit::agent::start_agent;
use testkit::collector::{setup, start_collector, totals, value};

const METERS: &str = "meters:
  - {name: llm_tokens, signal: traces, aggregation: sum, attribute: llm.tokens, group_by: [model]}
  - {name: llm_calls, signal: traces, aggregation: count}
";

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn span(kind: SpanKind, model: &str, tokens: Option<Value>) -> Span {
    let mut attributes = vec![kv("model", Value::StringValue(model.into()))];
    attributes.extend(tokens.map(|t| kv("llm.tokens", t)));
    Span {
        trace_id: vec![7; 16],
        span_id: vec![9; 8],
        name: "chat".into(),
        kind: kind as i32,
        attributes,
        ..Default::default()
    }
}

/// Six spans of `tenant`, three of them SERVER spans (requests). `llm_tokens` takes 120 and 30.5
/// (gpt-4o) and "7" (o3), skips the span without `llm.tokens`, and refuses "lots" (not a number)
/// and -3 (negative): those two are still spans, requests and `llm_calls`.
fn request(tenant: &str) -> ExportTraceServiceRequest {
    let spans = vec![
        span(SpanKind::Server, "gpt-4o", Some(Value::IntValue(120))),
        span(SpanKind::Server, "gpt-4o", Some(Value::DoubleValue(30.5))),
        span(SpanKind::Internal, "o3", Some(Value::StringValue("7".into()))),
        span(SpanKind::Server, "o3", Some(Value::StringValue("lots".into()))),
        span(SpanKind::Client, "o3", None),
        span(SpanKind::Internal, "o3", Some(Value::IntValue(-3))),
    ];
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("tenant.id", Value::StringValue(tenant.into())),
                    kv("service.name", Value::StringValue("chat".into())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// POSTs `request` as OTLP/HTTP protobuf to `base`; its status and decoded answer.
async fn export(base: &str, request: &ExportTraceServiceRequest) -> (u16, ExportTraceServiceResponse) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", "Bearer agent-key")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, ExportTraceServiceResponse::decode(body).unwrap())
}

/// `tenant`'s stored usage per (meter, `model` dimension), the agents' books left out.
async fn usage(ch: &ClickHouse, db: &str, tenant: &str) -> BTreeMap<(String, String), Decimal> {
    let now = time::OffsetDateTime::now_utc();
    let from = now.replace_time(time::Time::MIDNIGHT) - time::Duration::days(1);
    let mut q = UsageQuery::new(from, from + time::Duration::days(3));
    q.granularity = Granularity::Month;
    q.tenant = Some(tenant.into());
    q.group_by_dimensions = true;
    let mut got = BTreeMap::new();
    for p in query_usage(&Store::new(ch.clone(), db), &q).await.unwrap() {
        if p.meter.starts_with("agent_") {
            continue;
        }
        let model = p.dimensions.unwrap_or_default().get("model").cloned().unwrap_or_default();
        *got.entry((p.meter, model)).or_insert(Decimal::ZERO) += p.value;
    }
    got
}

/// Waits (up to 60 s) until `tenant`'s stored `meter` is `want`.
async fn reaches(ch: &ClickHouse, db: &str, tenant: &str, meter: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = totals(ch, db).await;
        if value(&got, tenant, meter) == Decimal::from(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{tenant} {meter} never reached {want}: {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_answers_custom_meter_refusals_as_the_collector_does() {
    let (server, db, ch) = setup("agent_meters").await;
    let dir = tempfile::tempdir().unwrap();
    let meters = dir.path().join("meters.yaml");
    std::fs::write(&meters, METERS).unwrap();
    let meters = meters.to_str().unwrap();
    let collector = start_collector(&server, &db, dir.path(), &["--meters", meters]).await;
    let agent = start_agent(&[&collector.grpc_url], dir.path(), &["--meters", meters]).await;

    // The two refused items, the last reason: the partial success of the agent, before anything
    // reached a collector, and the collector's own for the same request.
    let want = ExportTracePartialSuccess {
        rejected_spans: 2,
        error_message: "custom meter llm_tokens: llm.tokens -3 is negative".into(),
    };
    let (status, answer) = export(&agent.http_url, &request("acme")).await;
    assert_eq!((status, answer.partial_success), (200, Some(want.clone())), "the agent's answer");
    let (status, answer) = export(&collector.http_url, &request("direct")).await;
    assert_eq!((status, answer.partial_success), (200, Some(want)), "the collector's answer");

    // The refused items are forwarded as sent: a custom meter refuses them for itself only.
    agent.drained().await;
    collector.settle().await;
    reaches(&ch, &db, "acme", "agent_acked_spans", 6).await;
    let span_bytes: usize =
        request("acme").resource_spans[0].scope_spans[0].spans.iter().map(|s| s.encoded_len()).sum();
    let want: BTreeMap<(String, String), Decimal> = [
        ("spans", "", Decimal::from(6)),
        ("span_bytes", "", Decimal::from(span_bytes)),
        ("requests", "", Decimal::from(3)),
        ("llm_tokens", "gpt-4o", "150.5".parse().unwrap()),
        ("llm_tokens", "o3", Decimal::from(7)),
        ("llm_calls", "", Decimal::from(6)),
    ]
    .into_iter()
    .map(|(meter, model, v)| ((meter.to_owned(), model.to_owned()), v))
    .collect();
    assert_eq!(usage(&ch, &db, "acme").await, want, "through the agent");
    assert_eq!(usage(&ch, &db, "direct").await, want, "straight to the collector");
    // Every span the app sent was accepted and acknowledged: none was dropped.
    let got = totals(&ch, &db).await;
    for (meter, n) in [("agent_accepted_spans", 6), ("agent_acked_spans", 6), ("dropped_spans", 0)] {
        assert_eq!(value(&got, "acme", meter), Decimal::from(n), "acme {meter}: {got:?}");
    }
}
