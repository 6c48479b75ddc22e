//! The OTel Python SDK → tally-collector (the binary) → a real ClickHouse:
//! exact usage per tenant and meter, keys enforced, tenants pinned, limits,
//! resends counted once.

mod common;

use std::time::Duration;

use common::collector::{start_collector, totals, value};
use metering::clickhouse::ClickHouse;
use metering::store::migrate::migrate;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use rust_decimal::Decimal;
use testkit::ClickHouseServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_traffic_lands_exactly_per_tenant_and_meter() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("e2e").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    migrate(&ch, &db).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = start_collector(&server, &db, dir.path(), &[]).await;
    let (http_url, grpc_url) = (running.http_url.clone(), running.grpc_url.clone());
    let run = |url: String, protocol: &'static str, args: Vec<&'static str>| async move { common::sdk(&url, protocol, &args).await };
    // Anonymous over HTTP, naming its tenant.
    let r = run(http_url.clone(), "http", vec!["--tenant", "acme", "--spans", "300", "--metric-points", "20", "--logs", "10"]).await;
    assert_eq!((r["spans_ok"].as_bool(), r["metric_points_ok"].as_bool(), r["logs_ok"].as_bool()), (Some(true), Some(true), Some(true)));
    // An agent key over gRPC, with gzip, naming its tenant.
    let r = run(grpc_url.clone(), "grpc", vec!["--key", "agent-key", "--tenant", "globex", "--gzip", "--spans", "250", "--metric-points", "15", "--logs", "5"]).await;
    assert_eq!((r["spans_ok"].as_bool(), r["metric_points_ok"].as_bool(), r["logs_ok"].as_bool()), (Some(true), Some(true), Some(true)));
    // A tenant key claiming another tenant: pinned to its own.
    let r = run(grpc_url.clone(), "grpc", vec!["--key", "initech-key", "--tenant", "acme", "--spans", "100"]).await;
    assert_eq!(r["spans_ok"], true);
    // A wrong key stores nothing, on either transport.
    for (url, protocol) in [(http_url.clone(), "http"), (grpc_url.clone(), "grpc")] {
        let r = run(url, protocol, vec!["--key", "wrong", "--tenant", "acme", "--spans", "7", "--spans-per-export", "7"]).await;
        assert_eq!(r["spans_ok"], false);
    }

    running.settle().await;
    let got = totals(&ch, &db).await;
    let exact = |tenant: &str, meter: &str| value(&got, tenant, meter);
    let want = [
        ("acme", "spans", 300),
        ("acme", "requests", 75),
        ("acme", "metric_points", 20),
        ("acme", "log_records", 10),
        ("globex", "spans", 250),
        ("globex", "requests", 63),
        ("globex", "metric_points", 15),
        ("globex", "log_records", 5),
        ("initech", "spans", 100),
        ("initech", "requests", 25),
    ];
    for (tenant, meter, n) in want {
        assert_eq!(exact(tenant, meter), Decimal::from(n), "{tenant} {meter}: {got:?}");
    }
    // Bytes are metered per encoded span and log record.
    assert!(exact("acme", "span_bytes") > Decimal::from(300 * 40), "{got:?}");
    assert!(exact("globex", "log_bytes") > Decimal::from(5 * 10), "{got:?}");
    let tenants: std::collections::BTreeSet<_> = got.keys().map(|k| k.0.as_str()).collect();
    assert_eq!(tenants.into_iter().collect::<Vec<_>>(), vec!["acme", "globex", "initech"], "nothing else was stored");

    // The same story on /metrics.
    let text = running.metrics().await;
    for line in [
        "tally_collector_items_total{signal=\"traces\",outcome=\"accepted\"} 650",
        "tally_collector_items_total{signal=\"metrics\",outcome=\"accepted\"} 35",
        "tally_collector_items_total{signal=\"logs\",outcome=\"accepted\"} 15",
        "tally_collector_items_total{signal=\"traces\",outcome=\"unauthenticated\"} 14",
        "tally_collector_tenant_mismatch_items_total 100",
        "tally_collector_responses_total{transport=\"http\",code=\"401\"} 1",
        "tally_collector_responses_total{transport=\"grpc\",code=\"16\"} 1",
        "tally_collector_clickhouse_write_errors_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_senders_are_told_when_to_retry_and_the_refused_volume_is_metered() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("limits").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    migrate(&ch, &db).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = start_collector(&server, &db, dir.path(), &["--tenant-limit", "acme=100/100"]).await;
    // 80 spans fit the burst; the next 70 do not until the bucket refills, so the SDK is refused
    // (429 + Retry-After) and resends them.
    let r = common::sdk(&running.http_url, "http", &["--tenant", "acme", "--spans", "150", "--spans-per-export", "80"]).await;
    assert_eq!(r["spans_ok"], true);
    // globex has no limit.
    let r = common::sdk(&running.http_url, "http", &["--tenant", "globex", "--spans", "500", "--spans-per-export", "500"]).await;
    assert_eq!(r["spans_ok"], true);
    running.settle().await;
    let got = totals(&ch, &db).await;
    assert_eq!(value(&got, "acme", "spans"), Decimal::from(150), "{got:?}");
    assert_eq!(value(&got, "globex", "spans"), Decimal::from(500));
    assert_eq!(value(&got, "globex", "throttled_spans"), Decimal::ZERO);
    let throttled = value(&got, "acme", "throttled_spans");
    assert!(throttled >= Decimal::from(70) && (throttled % Decimal::from(70)).is_zero(), "{got:?}");
    let text = running.metrics().await;
    let line = format!("tally_collector_items_total{{signal=\"traces\",outcome=\"throttled\"}} {throttled}");
    assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");

    // What a sender sees, exactly: drain the bucket, then one more span.
    let json = |n: usize| {
        let spans: Vec<String> = (0..n).map(|i| format!(r#"{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"{i:016x}","name":"x"}}"#)).collect();
        format!(r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"tenant.id","value":{{"stringValue":"acme"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#, spans.join(","))
    };
    let client = reqwest::Client::new();
    let post = |n: usize| client.post(format!("{}/v1/traces", running.http_url)).header("content-type", "application/json").body(json(n)).send();
    let mut refused = None;
    for _ in 0..3 {
        let resp = post(100).await.unwrap();
        if resp.status() == 429 {
            refused = Some(resp);
            break;
        }
    }
    let resp = refused.expect("a drained bucket refuses");
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry_after, 1);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 8);
    assert!(body["message"].as_str().unwrap().starts_with("tenant acme is over its limit of 100 items/s (burst 100)"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_counts_once_on_either_transport() {
    use prost::Message;
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("resend").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    migrate(&ch, &db).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = start_collector(&server, &db, dir.path(), &[]).await;
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"tenant.id","value":{"stringValue":"acme"}},{"key":"service.name","value":{"stringValue":"api"}}]},
      "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a","kind":2},
                              {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"b","kind":3},
                              {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b176","name":"c","kind":2}]}]}]}"#;
    let accepted_at = time::OffsetDateTime::now_utc() - time::Duration::minutes(3);
    let millis = accepted_at.unix_timestamp() * 1000;
    let client = reqwest::Client::new();
    let http = |batch: String| {
        client
            .post(format!("{}/v1/traces", running.http_url))
            .header("content-type", "application/json")
            .header("authorization", "Bearer agent-key")
            .header("tally-batch", batch)
            .body(body)
            .send()
    };
    for batch in [format!("agent:a1:boot1 1 {millis}"), format!("agent:a1:boot1 1 {millis}"), format!("agent:a1:boot1 2 {millis}")] {
        assert_eq!(http(batch).await.unwrap().status(), 200);
    }
    // The same batch 1 again over gRPC, a minute later in wall time: the same rows, stored once.
    let request: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest = serde_json::from_str(body).unwrap();
    let message = request.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = h2
        .post(format!("{}{}", running.grpc_url, tally_collector::otlp::grpc::TRACES_PATH))
        .header("content-type", "application/grpc")
        .header("authorization", "Bearer agent-key")
        .header("tally-batch", format!("agent:a1:boot1 1 {millis}"))
        .body(frame)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("grpc-status").is_none(), "accepted: {:?}", resp.headers());
    running.settle().await;
    let got = totals(&ch, &db).await;
    assert_eq!(got[&("acme".to_owned(), "spans".to_owned())], Decimal::from(6), "batches 1 and 2, once each: {got:?}");
    assert_eq!(got[&("acme".to_owned(), "requests".to_owned())], Decimal::from(4));
    // Billed in the minute the sender accepted the data.
    let mut q = UsageQuery::new(accepted_at.replace_second(0).unwrap().replace_nanosecond(0).unwrap(), accepted_at + time::Duration::minutes(1));
    q.granularity = Granularity::Minute;
    q.meter = Some("spans".into());
    running.settle().await;
    let points = query_usage(&ch, &db, &q).await.unwrap();
    assert_eq!(points.iter().map(|p| p.value).collect::<Vec<_>>(), vec![Decimal::from(6)]);
    // A different key's identical identity is another sender: counted.
    let resp = client
        .post(format!("{}/v1/traces", running.http_url))
        .header("content-type", "application/json")
        .header("tally-batch", format!("agent:a1:boot1 1 {millis}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    running.settle().await;
    assert_eq!(totals(&ch, &db).await[&("acme".to_owned(), "spans".to_owned())], Decimal::from(9));
    // Malformed identities are refused, precisely.
    let future = (time::OffsetDateTime::now_utc() + time::Duration::hours(1)).unix_timestamp() * 1000;
    for (batch, why) in [
        ("agent 1".to_owned(), "wrong number of fields"),
        (format!("agent x {millis}"), "the sequence is not a whole number"),
        (format!("agent 1 {future}"), "the time is more than 5 minutes in the future"),
        (format!("a/b 1 {millis}"), "the source id must be"),
    ] {
        let resp = http(batch.clone()).await.unwrap();
        assert_eq!(resp.status(), 400, "{batch}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains(why), "{batch}: {body}");
    }
    running.settle().await;
    assert_eq!(totals(&ch, &db).await[&("acme".to_owned(), "spans".to_owned())], Decimal::from(9));
}
