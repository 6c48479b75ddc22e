//! The OTel Python SDK → tally-agent (the binary) → tally-collector (the binary)
//! → a real ClickHouse: exact usage per tenant and meter, through a collector
//! outage, a `kill -9` of the agent, a full WAL and a damaged WAL segment.

use std::path::PathBuf;
use std::time::Duration;

use rust_decimal::Decimal;
use testkit::agent::start_agent;
use testkit::collector::{setup, start_collector, totals, value, Running};
use testkit::service::sample;

use testkit::sdk::send_otlp as sdk;

/// Waits (up to 60 s) until the stored `meter` of `tenant` is `want`; returns all totals then.
async fn eventually(
    ch: &metering::clickhouse::ClickHouse,
    db: &str,
    tenant: &str,
    meter: &str,
    want: u64,
) -> std::collections::BTreeMap<(String, String), Decimal> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = totals(ch, db).await;
        if value(&got, tenant, meter) == Decimal::from(want) {
            return got;
        }
        assert!(std::time::Instant::now() < deadline, "{tenant} {meter} never reached {want}: {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ok(r: &serde_json::Value, keys: &[&str]) {
    for k in keys {
        assert_eq!(r[*k], true, "{k}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_traffic_through_the_agent_lands_exactly_per_tenant_and_meter() {
    let (server, db, ch) = setup("agent_e2e").await;
    let dir = tempfile::tempdir().unwrap();
    let collector = start_collector(&server, &db, dir.path(), &[]).await;
    let agent = start_agent(&[&collector.grpc_url], dir.path(), &["--tenant", "sidecar"]).await;
    let r =
        sdk(&agent.http_url, "http", &["--tenant", "acme", "--spans", "300", "--metric-points", "20", "--logs", "10"])
            .await;
    ok(&r, &["spans_ok", "metric_points_ok", "logs_ok"]);
    let r = sdk(
        &agent.grpc_url,
        "grpc",
        &["--tenant", "globex", "--gzip", "--spans", "250", "--metric-points", "15", "--logs", "5"],
    )
    .await;
    ok(&r, &["spans_ok", "metric_points_ok", "logs_ok"]);
    // No tenant named: the agent's --tenant (sidecar mode).
    let r = sdk(&agent.grpc_url, "grpc", &["--spans", "100", "--logs", "3"]).await;
    ok(&r, &["spans_ok", "logs_ok"]);
    agent.drained().await;
    collector.settle().await;
    let got = totals(&ch, &db).await;
    for (tenant, meter, n) in [
        ("acme", "spans", 300),
        ("acme", "requests", 75),
        ("acme", "metric_points", 20),
        ("acme", "log_records", 10),
        ("globex", "spans", 250),
        ("globex", "requests", 63),
        ("globex", "metric_points", 15),
        ("globex", "log_records", 5),
        ("sidecar", "spans", 100),
        ("sidecar", "requests", 25),
        ("sidecar", "log_records", 3),
    ] {
        assert_eq!(value(&got, tenant, meter), Decimal::from(n), "{tenant} {meter}: {got:?}");
    }
    let tenants: std::collections::BTreeSet<_> = got.keys().map(|k| k.0.as_str()).collect();
    assert_eq!(tenants.into_iter().collect::<Vec<_>>(), ["acme", "globex", "sidecar"]);
    assert!(
        got.keys().all(|k| k.1 != "metric_points"
            || k.0 != "acme"
            || value(&got, "acme", "metric_points") == Decimal::from(20)),
        "the agent's reports are not metric points"
    );
    // The agent's books reach the collectors too: what it accepted, and what they acknowledged.
    // They come in periodic reports, so a tenant's counts may land a report after another's.
    for (tenant, meter, n) in [
        ("acme", "agent_acked_spans", 300),
        ("acme", "agent_accepted_spans", 300),
        ("acme", "agent_accepted_metric_points", 20),
        ("acme", "agent_acked_log_records", 10),
        ("globex", "agent_accepted_spans", 250),
        ("sidecar", "agent_accepted_log_records", 3),
    ] {
        eventually(&ch, &db, tenant, meter, n).await;
    }
    let text = agent.service.metrics().await.unwrap();
    assert_eq!(sample(&text, "tally_agent_items_total{signal=\"traces\",outcome=\"accepted\"}"), 650);
    assert_eq!(sample(&text, "tally_agent_items_total{signal=\"logs\",outcome=\"accepted\"}"), 18);
    assert_eq!(sample(&text, "tally_agent_batches_total{signal=\"traces\",outcome=\"dropped\"}"), 0);
    assert!(sample(&text, "tally_agent_batches_total{signal=\"traces\",outcome=\"acked\"}") >= 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_collector_outage_loses_nothing_and_doubles_nothing() {
    let (server, db, ch) = setup("agent_outage").await;
    let dir = tempfile::tempdir().unwrap();
    let mut collector = start_collector(&server, &db, dir.path(), &[]).await;
    let agent = start_agent(&[&collector.grpc_url], dir.path(), &[]).await;
    ok(&sdk(&agent.http_url, "http", &["--tenant", "acme", "--spans", "50"]).await, &["spans_ok"]);
    collector.kill9();
    // Apps keep sending for 30 s; the agent acknowledges from its WAL and retries.
    let started = std::time::Instant::now();
    let mut sent = 50;
    while started.elapsed() < Duration::from_secs(30) {
        ok(
            &sdk(&agent.grpc_url, "grpc", &["--tenant", "acme", "--spans", "40", "--logs", "2"]).await,
            &["spans_ok", "logs_ok"],
        );
        sent += 40;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let text = agent.service.metrics().await.unwrap();
    assert!(sample(&text, "tally_agent_batches_total{signal=\"traces\",outcome=\"retried\"}") >= 1, "{text}");
    assert!(sample(&text, "tally_agent_wal_bytes") > 0, "{text}");
    collector.start(&[]).await;
    agent.drained().await;
    collector.settle().await;
    let got = totals(&ch, &db).await;
    assert_eq!(value(&got, "acme", "spans"), Decimal::from(sent), "{got:?}");
    assert_eq!(value(&got, "acme", "log_records"), Decimal::from((sent - 50) / 40 * 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_agent_mid_stream_loses_nothing_acknowledged_and_doubles_nothing() {
    let (server, db, ch) = setup("agent_kill9").await;
    let dir = tempfile::tempdir().unwrap();
    let collector = start_collector(&server, &db, dir.path(), &[]).await;
    let mut agent = start_agent(&[&collector.grpc_url], dir.path(), &["--flush-interval-ms", "20"]).await;
    let mut sent = 0;
    for round in 0..4 {
        // Batches of 25 while the agent ships every 20 ms; the kill lands mid-stream.
        let url = agent.grpc_url.clone();
        let sender = tokio::spawn(async move {
            sdk(&url, "grpc", &["--tenant", "acme", "--spans", "200", "--spans-per-export", "25"]).await
        });
        tokio::time::sleep(Duration::from_millis(300 + 150 * round)).await;
        agent.service.kill9();
        // What the SDK was told was kept counts; exports refused by the dead agent do not.
        let r = sender.await.unwrap();
        agent.service.start(&[]).await.unwrap();
        if r["spans_ok"] == true {
            sent += 200;
        }
    }
    ok(&sdk(&agent.grpc_url, "grpc", &["--tenant", "globex", "--spans", "100"]).await, &["spans_ok"]);
    agent.drained().await;
    collector.settle().await;
    let got = totals(&ch, &db).await;
    // The SDK gives up on a whole run when one export fails, so acme is at least what it
    // confirmed, at most what it sent, and never more: nothing doubled.
    let acme = value(&got, "acme", "spans");
    assert!(acme >= Decimal::from(sent) && acme <= Decimal::from(800), "{got:?} (confirmed {sent})");
    assert_eq!(acme % Decimal::from(25), Decimal::ZERO, "whole exports only: {got:?}");
    assert_eq!(value(&got, "globex", "spans"), Decimal::from(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_wal_pushes_back_on_apps() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(&["http://127.0.0.1:9"], dir.path(), &["--wal-max-bytes", "1"]).await;
    let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a"}]}]}]}"#;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/traces", agent.http_url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    let status: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status["code"], 14);
    assert_eq!(
        status["message"],
        "the agent cannot take data now: the WAL is full (0 of 1 bytes waiting to be delivered)"
    );
    // The SDK over gRPC is told UNAVAILABLE, retries, and reports failure: nothing was kept.
    let r = sdk(&agent.grpc_url, "grpc", &["--tenant", "acme", "--spans", "5"]).await;
    assert_eq!(r["spans_ok"], false);
    let text = agent.service.metrics().await.unwrap();
    assert!(sample(&text, "tally_agent_items_total{signal=\"traces\",outcome=\"refused\"}") >= 6, "{text}");
    assert_eq!(sample(&text, "tally_agent_items_total{signal=\"traces\",outcome=\"accepted\"}"), 0);
    // Bad input gets the collector's answers: the same receiver.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/traces", agent.http_url))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let status: serde_json::Value = resp.json().await.unwrap();
    assert!(status["message"].as_str().unwrap().starts_with("malformed OTLP JSON traces request"), "{status}");
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/traces", agent.http_url))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_wal_segment_is_skipped_and_counted_and_the_rest_delivered() {
    let (server, db, ch) = setup("agent_damage").await;
    let dir = tempfile::tempdir().unwrap();
    let mut collector: Running = start_collector(&server, &db, dir.path(), &[]).await;
    collector.kill9();
    // No periodic report: the one written at shutdown gets a segment of its own.
    let mut agent = start_agent(
        &[&collector.grpc_url],
        dir.path(),
        &["--report-interval-secs", "3600", "--shutdown-timeout-secs", "1"],
    )
    .await;
    // Three exports, each sealed into its own segment while the collector is down.
    for (tenant, n) in [("acme", "30"), ("globex", "40"), ("initech", "50")] {
        ok(
            &sdk(&agent.http_url, "http", &["--tenant", tenant, "--spans", n, "--spans-per-export", n]).await,
            &["spans_ok"],
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // SIGTERM with the collector down: what waits stays in the WAL, and the agent's books join it.
    assert!(agent.service.terminate().unwrap().success());
    let wal = agent.data_dir.join("wal");
    let segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    let has = |p: &PathBuf, text: &[u8]| std::fs::read(p).unwrap().windows(text.len()).any(|w| w == text);
    let holding = |tenant: &[u8]| -> Vec<&PathBuf> {
        segments.iter().filter(|p| has(p, tenant) && !has(p, b"agent_accepted_")).collect()
    };
    let globex = holding(b"globex");
    assert_eq!(globex.len(), 1, "{segments:?}");
    assert!(holding(b"acme").iter().chain(&holding(b"initech")).all(|p| *p != globex[0]), "{segments:?}");
    assert_eq!(segments.iter().filter(|p| has(p, b"agent_accepted_")).count(), 1, "the last report: {segments:?}");
    // Flip bytes in the middle of globex's record.
    let mut bytes = std::fs::read(globex[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    bytes[mid + 1] ^= 0xff;
    std::fs::write(globex[0], bytes).unwrap();
    collector.start(&[]).await;
    agent.service.start(&[]).await.unwrap();
    agent.drained().await;
    collector.settle().await;
    let got = eventually(&ch, &db, "initech", "agent_accepted_spans", 50).await;
    assert_eq!(value(&got, "acme", "spans"), Decimal::from(30), "{got:?}");
    assert_eq!(value(&got, "globex", "spans"), Decimal::ZERO, "{got:?}");
    assert_eq!(value(&got, "initech", "spans"), Decimal::from(50), "{got:?}");
    // Reconciliation shows the gap: globex's 40 spans were accepted, and never stored.
    assert_eq!(value(&got, "globex", "agent_accepted_spans"), Decimal::from(40), "{got:?}");
    assert_eq!(value(&got, "acme", "agent_accepted_spans"), Decimal::from(30), "{got:?}");
    let text = agent.service.metrics().await.unwrap();
    assert!(sample(&text, "tally_agent_wal_damaged_bytes_total") > 0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_apps_going_and_the_dropped_count_is_exact() {
    let (server, db, ch) = setup("agent_drop").await;
    let dir = tempfile::tempdir().unwrap();
    let mut collector = start_collector(&server, &db, dir.path(), &[]).await;
    collector.kill9();
    // A WAL of 12 KB: a few exports of 20 spans; reports only at shutdown.
    let mut agent = start_agent(
        &[&collector.grpc_url],
        dir.path(),
        &["--wal-max-bytes", "12000", "--wal-full", "drop-oldest", "--report-interval-secs", "3600"],
    )
    .await;
    let mut sent = 0;
    for _ in 0..15 {
        // Each export is sealed into its own segment; the WAL fills and drops its oldest.
        ok(
            &sdk(&agent.http_url, "http", &["--tenant", "acme", "--spans", "20", "--spans-per-export", "20"]).await,
            &["spans_ok"],
        );
        sent += 20;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let text = agent.service.metrics().await.unwrap();
    let dropped = sample(&text, "tally_agent_items_total{signal=\"traces\",outcome=\"dropped\"}");
    assert!(dropped >= 20 && dropped.is_multiple_of(20), "{text}");
    assert_eq!(
        sample(&text, "tally_agent_items_total{signal=\"traces\",outcome=\"refused\"}"),
        0,
        "apps were never pushed back"
    );
    collector.start(&[]).await;
    // SIGTERM: the agent's last report (with the drops) goes out with the last batches.
    assert!(agent.service.terminate().unwrap().success());
    let got = eventually(&ch, &db, "acme", "dropped_spans", dropped).await;
    collector.settle().await;
    let got = if value(&got, "acme", "spans") + Decimal::from(dropped) == Decimal::from(sent) {
        got
    } else {
        totals(&ch, &db).await
    };
    assert_eq!(value(&got, "acme", "spans") + value(&got, "acme", "dropped_spans"), Decimal::from(sent), "{got:?}");
    assert_eq!(value(&got, "acme", "agent_accepted_spans"), Decimal::from(sent));
    assert_eq!(value(&got, "acme", "agent_acked_spans"), value(&got, "acme", "spans"));
    let _ = &mut agent;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_share_the_load_and_one_killed_mid_stream_loses_nothing() {
    let (server, db, ch) = setup("agent_failover").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = start_collector(&server, &db, dir_a.path(), &[]).await;
    let b = start_collector(&server, &db, dir_b.path(), &[]).await;
    let agent = start_agent(&[&a.grpc_url, &b.grpc_url], dir_a.path(), &["--flush-interval-ms", "50"]).await;
    let url = agent.grpc_url.clone();
    let sender = tokio::spawn(async move {
        sdk(&url, "grpc", &["--tenant", "acme", "--spans", "2000", "--spans-per-export", "50"]).await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.kill9();
    ok(&sender.await.unwrap(), &["spans_ok"]);
    ok(
        &sdk(&agent.http_url, "http", &["--tenant", "globex", "--spans", "300", "--logs", "9"]).await,
        &["spans_ok", "logs_ok"],
    );
    agent.drained().await;
    b.settle().await;
    // Whatever a took before it died was spooled: its next start writes it.
    a.start(&[]).await;
    a.settle().await;
    let got = eventually(&ch, &db, "acme", "agent_acked_spans", 2000).await;
    assert_eq!(value(&got, "acme", "spans"), Decimal::from(2000), "{got:?}");
    assert_eq!(value(&got, "globex", "spans"), Decimal::from(300));
    assert_eq!(value(&got, "globex", "log_records"), Decimal::from(9));
    // Both collectors took batches.
    let (ta, tb) = (a.metrics().await, b.metrics().await);
    assert!(sample(&tb, "tally_collector_items_total{signal=\"traces\",outcome=\"accepted\"}") > 0, "{tb}");
    // Round robin: of the batches after the kill (spans, logs, the agent's reports), some went to
    // the dead collector and failed over.
    let (retried, text) = agent.batches("retried").await;
    assert!(retried >= 1, "a send to the dead collector failed over: {text}\n{ta}");
}

/// A collector that reads every request whole and then resets the stream without answering,
/// as one killed mid-request does: tonic reports that as INTERNAL, a code the spec does not
/// retry, yet no collector refused the batch. Returns the address and the count of resets.
async fn resetting_collector() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let resets = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = resets.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let counted = counted.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else { return };
                // Each request in its own task: the connection is driven only while accept() is
                // polled, and a body larger than the flow-control window needs it driven.
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let counted = counted.clone();
                    tokio::spawn(async move {
                        let mut body = request.into_body();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        respond.send_reset(h2::Reason::INTERNAL_ERROR);
                        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    });
                }
            });
        }
    });
    (url, resets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_without_an_answer_is_retried_not_dropped() {
    let (server, db, ch) = setup("agent_reset").await;
    let dir = tempfile::tempdir().unwrap();
    let collector = start_collector(&server, &db, dir.path(), &[]).await;
    let (resetting, resets) = resetting_collector().await;
    // Round robin starts with the resetting one: the first batch is reset, then fails over.
    let agent = start_agent(&[&resetting, &collector.grpc_url], dir.path(), &[]).await;
    ok(&sdk(&agent.http_url, "http", &["--tenant", "acme", "--spans", "120"]).await, &["spans_ok"]);
    agent.drained().await;
    collector.settle().await;
    assert!(resets.load(std::sync::atomic::Ordering::Relaxed) >= 1, "the resetting collector saw a batch");
    let got = eventually(&ch, &db, "acme", "agent_acked_spans", 120).await;
    assert_eq!(value(&got, "acme", "spans"), Decimal::from(120), "{got:?}");
    assert_eq!(value(&got, "acme", "dropped_spans"), Decimal::ZERO, "{got:?}");
    let text = agent.service.metrics().await.unwrap();
    assert_eq!(sample(&text, "tally_agent_batches_total{signal=\"traces\",outcome=\"dropped\"}"), 0, "{text}");
}
