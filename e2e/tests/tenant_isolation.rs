//! Two tenants through one agent (the binaries, a real ClickHouse): one floods past its rate
//! limit and sends an item a collector cannot parse; the other's spans arrive exactly and on
//! time, the flooder's accepted spans arrive exactly, and its throttled volume is counted once.

use std::time::{Duration, Instant};

use metering::clickhouse::ClickHouse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rust_decimal::Decimal;
use testkit::agent::start_agent;
use testkit::collector::{setup, spans_json, start_collector, totals, value};

async fn post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/traces"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

/// Waits (up to 60 s) until `tenant`'s stored spans are `want`.
async fn spans_reach(ch: &ClickHouse, db: &str, tenant: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = totals(ch, db).await;
        if value(&got, tenant, "spans") == Decimal::from(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{tenant} never reached {want} spans: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A SERVER span of `tenant` whose `http.route` is not UTF-8: the framing is sound, and only a
/// reader of the route (the collectors' SLA meter) finds the fault.
fn malformed_route(tenant: &str) -> Vec<u8> {
    let kv = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    };
    let span = Span {
        name: "a".into(),
        kind: SpanKind::Server as i32,
        attributes: vec![kv("http.route", "/RRRR")],
        ..Default::default()
    };
    let mut bytes = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("tenant.id", tenant)], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let at = bytes.windows(4).position(|w| w == b"RRRR").unwrap();
    bytes[at..at + 4].copy_from_slice(&[0xff; 4]);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_limit_or_sending_malformed_items_holds_up_and_drops_only_itself() {
    let (server, db, ch) = setup("isolation").await;
    let dir = tempfile::tempdir().unwrap();
    let collector = start_collector(&server, &db, dir.path(), &["--tenant-limit", "noisy=100/100"]).await;
    let agent = start_agent(&[&collector.grpc_url], dir.path(), &[]).await;
    let json = |tenant: &str, n: usize| spans_json(tenant, n).into_bytes();

    // 2,000 spans at once, 20× noisy's burst: they pass on its full bucket and leave it 1,900
    // in debt, 19 s at its rate.
    assert_eq!(post(&agent.http_url, "application/json", json("noisy", 2_000)).await.0, 200);
    spans_reach(&ch, &db, "noisy", 2_000).await;
    // Its next 2,000 are throttled until the debt is repaid, refused again at each retry.
    assert_eq!(post(&agent.http_url, "application/json", json("noisy", 2_000)).await.0, 200);
    // An item a collector would refuse is refused by the agent, before it is acknowledged.
    let (status, body) = post(&agent.http_url, "application/x-protobuf", malformed_route("noisy")).await;
    assert_eq!(status, 400, "{body}");
    // Meanwhile steady's spans go through the same agent.
    for _ in 0..10 {
        assert_eq!(post(&agent.http_url, "application/json", json("steady", 50)).await.0, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent = Instant::now();
    spans_reach(&ch, &db, "steady", 500).await;
    let delay = sent.elapsed();
    let got = totals(&ch, &db).await;
    assert_eq!(value(&got, "noisy", "spans"), Decimal::from(2_000), "noisy's second batch still waits: {got:?}");
    let (throttled, text) = agent.batches("throttled").await;
    assert!(throttled >= 1, "noisy's batch was throttled: {text}");
    eprintln!("steady's last spans were stored {delay:?} after they were sent, noisy's batch throttled meanwhile");

    // When the debt is repaid noisy's batch passes, once, and its refusals count once.
    spans_reach(&ch, &db, "noisy", 4_000).await;
    agent.drained().await;
    collector.settle().await;
    let (throttled, text) = agent.batches("throttled").await;
    assert!(throttled >= 5, "refused again at each retry over ~19 s: {text}");
    let got = totals(&ch, &db).await;
    for (tenant, meter, n) in [
        ("noisy", "spans", 4_000),
        ("noisy", "throttled_spans", 2_000),
        ("steady", "spans", 500),
        ("steady", "throttled_spans", 0),
    ] {
        assert_eq!(value(&got, tenant, meter), Decimal::from(n), "{tenant} {meter}: {got:?}");
    }
    let dropped: u64 = ["traces", "metrics", "logs"]
        .iter()
        .map(|s| {
            testkit::service::sample(&text, &format!("tally_agent_batches_total{{signal=\"{s}\",outcome=\"dropped\"}}"))
        })
        .sum();
    assert_eq!(dropped, 0, "{text}");
}
