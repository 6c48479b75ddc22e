//! The collector's spool under faults, with the real binary, the OTel Python SDK
//! and a real ClickHouse: acknowledged usage survives ClickHouse outages,
//! `kill -9` and SIGTERM, and lands exactly once.

use std::time::Duration;

use rust_decimal::Decimal;
use testkit::collector::{setup, start_collector, totals, value};
use testkit::service::sample;

/// Three spans of tenant acme (two of them requests) as OTLP/JSON.
const BATCH: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"tenant.id","value":{"stringValue":"acme"}}]},
  "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a","kind":2},
                          {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"b","kind":3},
                          {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b176","name":"c","kind":2}]}]}]}"#;

async fn post_batch(http_url: &str, identity: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{http_url}/v1/traces"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer agent-key")
        .body(BATCH);
    if let Some(id) = identity {
        req = req.header("tally-batch", id);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_spools_to_disk_and_everything_lands_once() {
    let (mut server, db, ch) = setup("down").await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_collector(&server, &db, dir.path(), &[]).await;
    let r = testkit::sdk::send_otlp(
        &running.http_url,
        "http",
        &["--tenant", "acme", "--spans", "40", "--spans-per-export", "40"],
    )
    .await;
    assert_eq!(r["spans_ok"], true);
    running.settle().await;
    // ClickHouse dies: senders are still answered OK, from the spool.
    server.kill9();
    let r = testkit::sdk::send_otlp(
        &running.grpc_url,
        "grpc",
        &["--tenant", "acme", "--spans", "60", "--spans-per-export", "20"],
    )
    .await;
    assert_eq!(r["spans_ok"], true);
    let r = testkit::sdk::send_otlp(&running.http_url, "http", &["--tenant", "globex", "--spans", "25", "--logs", "4"])
        .await;
    assert_eq!((r["spans_ok"].as_bool(), r["logs_ok"].as_bool()), (Some(true), Some(true)));
    // The sink keeps trying (and failing) while the rows wait on disk.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let text = running.metrics().await;
    assert!(sample(&text, "tally_collector_clickhouse_write_errors_total") >= 1, "{text}");
    assert!(sample(&text, "tally_collector_spool_bytes") > 0, "{text}");
    assert!(sample(&text, "tally_collector_spool_segments") >= 1, "{text}");
    server.restart().unwrap();
    running.settle().await;
    let got = totals(&ch, &db).await;
    assert_eq!(value(&got, "acme", "spans"), Decimal::from(100), "{got:?}");
    assert_eq!(value(&got, "acme", "requests"), Decimal::from(10 + 15));
    assert_eq!(value(&got, "globex", "spans"), Decimal::from(25));
    assert_eq!(value(&got, "globex", "log_records"), Decimal::from(4));
    let text = running.metrics().await;
    assert_eq!(sample(&text, "tally_collector_items_total{signal=\"traces\",outcome=\"accepted\"}"), 125);
    assert!(!text.contains("outcome=\"unavailable\""), "nobody was told to retry: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_acknowledging_loses_nothing_and_doubles_nothing() {
    let (server, db, ch) = setup("kill9").await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing is flushed for an hour: every acknowledged row is only in the spool.
    let mut running = start_collector(&server, &db, dir.path(), &["--flush-interval-ms", "3600000"]).await;
    let r = testkit::sdk::send_otlp(
        &running.grpc_url,
        "grpc",
        &["--key", "agent-key", "--tenant", "acme", "--spans", "300", "--metric-points", "12", "--logs", "7"],
    )
    .await;
    assert_eq!(
        (r["spans_ok"].as_bool(), r["metric_points_ok"].as_bool(), r["logs_ok"].as_bool()),
        (Some(true), Some(true), Some(true))
    );
    // An agent's batch, acknowledged; the agent will resend it after the crash (its ack "lost").
    let millis = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let identity = format!("agent:a1:boot1 7 {millis}");
    assert_eq!(post_batch(&running.http_url, Some(&identity)).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(totals(&ch, &db).await.is_empty(), "nothing reached ClickHouse before the crash");

    running.kill9();
    running.start(&["--flush-interval-ms", "100"]).await;
    assert_eq!(post_batch(&running.http_url, Some(&identity)).await.status(), 200);
    running.settle().await;
    let got = totals(&ch, &db).await;
    assert_eq!(value(&got, "acme", "spans"), Decimal::from(300 + 3), "{got:?}");
    assert_eq!(value(&got, "acme", "requests"), Decimal::from(75 + 2));
    assert_eq!(value(&got, "acme", "metric_points"), Decimal::from(12));
    assert_eq!(value(&got, "acme", "log_records"), Decimal::from(7));
    assert_eq!(got.keys().filter(|k| k.0 != "acme").count(), 0, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_the_spool_before_exiting() {
    let (server, db, ch) = setup("sigterm").await;
    let dir = tempfile::tempdir().unwrap();
    let mut running = start_collector(&server, &db, dir.path(), &["--flush-interval-ms", "3600000"]).await;
    let r = testkit::sdk::send_otlp(&running.http_url, "http", &["--tenant", "globex", "--spans", "90", "--logs", "3"])
        .await;
    assert_eq!((r["spans_ok"].as_bool(), r["logs_ok"].as_bool()), (Some(true), Some(true)));
    assert!(totals(&ch, &db).await.is_empty());
    let status = running.terminate();
    assert!(status.success(), "{status}");
    let got = totals(&ch, &db).await;
    assert_eq!(value(&got, "globex", "spans"), Decimal::from(90), "{got:?}");
    assert_eq!(value(&got, "globex", "log_records"), Decimal::from(3));
    // Nothing is left behind to be written twice.
    let left: Vec<_> =
        std::fs::read_dir(running.data_dir.join("spool")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("lock")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_tells_senders_to_retry_and_stores_nothing() {
    let (server, db, ch) = setup("full").await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_collector(&server, &db, dir.path(), &["--spool-max-bytes", "1"]).await;
    let resp = post_batch(&running.http_url, None).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 14);
    assert_eq!(body["message"], "usage spool unavailable: the WAL is full (0 of 1 bytes waiting to be delivered)");
    // gRPC: UNAVAILABLE, which every OTLP client retries.
    let resp = testkit::collector::grpc_export_traces(&running.grpc_url, BATCH, &[]).await;
    assert_eq!(resp.headers()["grpc-status"], "14", "{:?}", resp.headers());
    let text = running.metrics().await;
    assert_eq!(sample(&text, "tally_collector_items_total{signal=\"traces\",outcome=\"unavailable\"}"), 6);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(totals(&ch, &db).await.is_empty());
}
