//! The OTel Python SDK → tally-collector (the binary) → a real ClickHouse:
//! exact usage per tenant and meter, keys enforced, tenants pinned, limits,
//! resends counted once.

use metering::store::Store;
use std::time::Duration;

use metering::clickhouse::ClickHouse;
use metering::store::migrate::migrate;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use rust_decimal::Decimal;
use testkit::collector::{start_collector, totals, value};
use testkit::service::sample;
use testkit::ClickHouseServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_traffic_lands_exactly_per_tenant_and_meter() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("e2e").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = start_collector(&server, &db, dir.path(), &[]).await;
    let (http_url, grpc_url) = (running.http_url.clone(), running.grpc_url.clone());
    let run = |url: String, protocol: &'static str, args: Vec<&'static str>| async move {
        testkit::sdk::send_otlp(&url, protocol, &args).await
    };
    // Anonymous over HTTP, naming its tenant.
    let r = run(
        http_url.clone(),
        "http",
        vec!["--tenant", "acme", "--spans", "300", "--metric-points", "20", "--logs", "10"],
    )
    .await;
    assert_eq!(
        (r["spans_ok"].as_bool(), r["metric_points_ok"].as_bool(), r["logs_ok"].as_bool()),
        (Some(true), Some(true), Some(true))
    );
    // An agent key over gRPC, with gzip, naming its tenant.
    let r = run(
        grpc_url.clone(),
        "grpc",
        vec![
            "--key",
            "agent-key",
            "--tenant",
            "globex",
            "--gzip",
            "--spans",
            "250",
            "--metric-points",
            "15",
            "--logs",
            "5",
        ],
    )
    .await;
    assert_eq!(
        (r["spans_ok"].as_bool(), r["metric_points_ok"].as_bool(), r["logs_ok"].as_bool()),
        (Some(true), Some(true), Some(true))
    );
    // A tenant key claiming another tenant: pinned to its own.
    let r = run(grpc_url.clone(), "grpc", vec!["--key", "initech-key", "--tenant", "acme", "--spans", "100"]).await;
    assert_eq!(r["spans_ok"], true);
    // A wrong key stores nothing, on either transport.
    for (url, protocol) in [(http_url.clone(), "http"), (grpc_url.clone(), "grpc")] {
        let r =
            run(url, protocol, vec!["--key", "wrong", "--tenant", "acme", "--spans", "7", "--spans-per-export", "7"])
                .await;
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
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = start_collector(&server, &db, dir.path(), &["--tenant-limit", "acme=100/100"]).await;
    // 80 spans fit the burst; the next 70 do not until the bucket refills, so the SDK is refused
    // (429 + Retry-After) and resends them.
    let r = testkit::sdk::send_otlp(
        &running.http_url,
        "http",
        &["--tenant", "acme", "--spans", "150", "--spans-per-export", "80"],
    )
    .await;
    assert_eq!(r["spans_ok"], true);
    // globex has no limit.
    let r = testkit::sdk::send_otlp(
        &running.http_url,
        "http",
        &["--tenant", "globex", "--spans", "500", "--spans-per-export", "500"],
    )
    .await;
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
        let spans: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"{i:016x}","name":"x"}}"#))
            .collect();
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"tenant.id","value":{{"stringValue":"acme"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            spans.join(",")
        )
    };
    let client = reqwest::Client::new();
    let post = |n: usize| {
        client
            .post(format!("{}/v1/traces", running.http_url))
            .header("content-type", "application/json")
            .body(json(n))
            .send()
    };
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
    assert!(
        body["message"].as_str().unwrap().starts_with("tenant acme is over its limit of 100 items/s (burst 100)"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_counts_once_on_either_transport() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("resend").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
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
    for batch in [
        format!("agent:a1:boot1 1 {millis}"),
        format!("agent:a1:boot1 1 {millis}"),
        format!("agent:a1:boot1 2 {millis}"),
    ] {
        assert_eq!(http(batch).await.unwrap().status(), 200);
    }
    // The same batch 1 again over gRPC, a minute later in wall time: the same rows, stored once.
    let resp = testkit::collector::grpc_export_traces(
        &running.grpc_url,
        body,
        &[("tally-batch", format!("agent:a1:boot1 1 {millis}"))],
    )
    .await;
    assert!(resp.headers().get("grpc-status").is_none(), "accepted: {:?}", resp.headers());
    running.settle().await;
    let got = totals(&ch, &db).await;
    assert_eq!(got[&("acme".to_owned(), "spans".to_owned())], Decimal::from(6), "batches 1 and 2, once each: {got:?}");
    assert_eq!(got[&("acme".to_owned(), "requests".to_owned())], Decimal::from(4));
    // Billed in the minute the sender accepted the data.
    let mut q = UsageQuery::new(
        accepted_at.replace_second(0).unwrap().replace_nanosecond(0).unwrap(),
        accepted_at + time::Duration::minutes(1),
    );
    q.granularity = Granularity::Minute;
    q.meter = Some("spans".into());
    running.settle().await;
    let points = query_usage(&store, &q).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_errors_while_other_tenants_traffic_in_flight_lands_exactly() {
    use std::io::Write;
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("bad_input").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = start_collector(&server, &db, dir.path(), &["--max-request-bytes", "200000"]).await;
    // Two tenants' SDKs send while the bad requests arrive.
    let (grpc_url, http_url) = (running.grpc_url.clone(), running.http_url.clone());
    let acme = tokio::spawn(async move {
        testkit::sdk::send_otlp(
            &grpc_url,
            "grpc",
            &["--tenant", "acme", "--spans", "3000", "--spans-per-export", "100", "--logs", "40"],
        )
        .await
    });
    let globex = tokio::spawn(async move {
        testkit::sdk::send_otlp(
            &http_url,
            "http",
            &["--tenant", "globex", "--gzip", "--spans", "1500", "--spans-per-export", "100"],
        )
        .await
    });
    let mut gzipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzipped.write_all(&vec![0u8; 1 << 20]).unwrap();
    let bomb = gzipped.finish().unwrap();
    // (path, content type, content encoding, body, status, message)
    type Case = (&'static str, &'static str, Option<&'static str>, Vec<u8>, u16, &'static str);
    let cases: Vec<Case> = vec![
        (
            "/v1/traces",
            "application/x-protobuf",
            None,
            vec![0x0a, 0xff, 0xff],
            400,
            "malformed OTLP protobuf traces request: ",
        ),
        (
            "/v1/logs",
            "application/json",
            None,
            b"{\"resourceLogs\": [".to_vec(),
            400,
            "malformed OTLP JSON logs request: EOF",
        ),
        (
            "/v1/traces",
            "application/x-protobuf",
            None,
            vec![0; 300_000],
            413,
            "request body is more than 200000 bytes, the limit; split the batch",
        ),
        (
            "/v1/traces",
            "application/x-protobuf",
            Some("gzip"),
            bomb,
            413,
            "request body inflates to more than 200000 bytes, the limit; split the batch",
        ),
        (
            "/v1/traces",
            "application/x-protobuf",
            Some("gzip"),
            b"\x1f\x8bnot really".to_vec(),
            400,
            "the request body is not a valid gzip stream",
        ),
        (
            "/v1/traces",
            "text/plain",
            None,
            b"hi".to_vec(),
            415,
            "unsupported Content-Type \"text/plain\"; use application/x-protobuf or application/json",
        ),
    ];
    let client = reqwest::Client::new();
    // Bad requests keep coming until both SDKs are done, so they overlap the good traffic.
    let mut round = 0;
    while round < 10 || !(acme.is_finished() && globex.is_finished()) {
        for (path, content_type, encoding, body, status, message) in &cases {
            let mut req = client
                .post(format!("{}{path}", running.http_url))
                .header("content-type", *content_type)
                .body(body.clone());
            if let Some(e) = encoding {
                req = req.header("content-encoding", *e);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), *status, "round {round}: {path} {content_type}");
            let bytes = resp.bytes().await.unwrap();
            // google.rpc.Status in the request's encoding: JSON for JSON and unknown types, else protobuf.
            let text = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(status) => status["message"].as_str().unwrap_or_default().to_owned(),
                Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
            };
            assert!(text.contains(message), "round {round}: {message:?} not in {text:?}");
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (acme, globex) = (acme.await.unwrap(), globex.await.unwrap());
    assert_eq!(
        (acme["spans_ok"].as_bool(), acme["logs_ok"].as_bool(), globex["spans_ok"].as_bool()),
        (Some(true), Some(true), Some(true))
    );
    running.settle().await;
    let got = totals(&ch, &db).await;
    assert_eq!(value(&got, "acme", "spans"), Decimal::from(3000), "{got:?}");
    assert_eq!(value(&got, "acme", "log_records"), Decimal::from(40));
    assert_eq!(value(&got, "globex", "spans"), Decimal::from(1500));
    let tenants: std::collections::BTreeSet<_> = got.keys().map(|k| k.0.as_str()).collect();
    assert_eq!(tenants.into_iter().collect::<Vec<_>>(), ["acme", "globex"], "the bad requests stored nothing");
    let text = running.metrics().await;
    assert_eq!(sample(&text, "tally_collector_responses_total{transport=\"http\",code=\"413\"}"), 2 * round, "{text}");
    assert_eq!(sample(&text, "tally_collector_responses_total{transport=\"http\",code=\"415\"}"), round, "{text}");
    assert_eq!(sample(&text, "tally_collector_items_total{signal=\"traces\",outcome=\"accepted\"}"), 4500, "{text}");
}
