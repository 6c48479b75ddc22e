//! Custom meters end to end: the OTel Python SDK (python/send_custom.py) →
//! tally-collector (the binary, with `--meters`) → a real ClickHouse 18.16,
//! read back with the roll-up the billing API uses: exact sums per model, the
//! count, the max and the distinct users.

use metering::store::Store;
use std::collections::BTreeMap;
use std::time::Duration;

use metering::clickhouse::ClickHouse;
use metering::store::migrate::migrate;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use rust_decimal::Decimal;
use testkit::ClickHouseServer;

const METERS: &str = "meters:
  - name: llm_tokens
    signal: traces
    aggregation: sum
    attribute: llm.tokens
    filter: {llm.vendor: openai}
    group_by: [model]
  - {name: llm_calls, signal: traces, aggregation: count, filter: {llm.vendor: openai}}
  - {name: llm_peak_tokens, signal: traces, aggregation: max, attribute: llm.tokens}
  - {name: llm_users, signal: traces, aggregation: unique_count, attribute: user.id}
";
const MODELS: [&str; 3] = ["gpt-4o", "gpt-4o-mini", "o3"];
const SPANS: u32 = 120;

/// Runs python/send_custom.py against `base`.
async fn send(base: &str, protocol: &str, tenant: &str) -> serde_json::Value {
    testkit::sdk::run("send_custom.py", base, protocol, &["--tenant", tenant, "--spans", &SPANS.to_string()]).await
}

/// The `llm.tokens` of span `i`, as python/send_custom.py documents it.
fn tokens(i: u32) -> Option<Decimal> {
    match i {
        _ if i % 8 == 7 => None,
        _ if i % 6 == 3 => Some(Decimal::from(i) + Decimal::new(5, 1)),
        _ if i.is_multiple_of(2) => Some(Decimal::from(10 * i + 1)),
        _ => Some(Decimal::from(i) + Decimal::new(25, 2)),
    }
}

/// Independently computed: (tokens per model, openai calls, peak tokens, distinct users) of one run.
fn expected_run() -> (BTreeMap<String, Decimal>, Decimal, Decimal, usize) {
    let (mut per_model, mut calls, mut peak, mut users) =
        (BTreeMap::new(), Decimal::ZERO, Decimal::ZERO, std::collections::BTreeSet::new());
    for i in 0..SPANS {
        let openai = i % 5 != 4;
        users.insert(i % 17);
        if openai {
            calls += Decimal::ONE;
        }
        if let Some(t) = tokens(i) {
            peak = peak.max(t);
            if openai {
                *per_model.entry(MODELS[i as usize % 3].to_owned()).or_insert(Decimal::ZERO) += t;
            }
        }
    }
    (per_model, calls, peak, users.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_spans_meter_custom_sums_counts_max_and_unique_users() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("custom_e2e").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let meters = dir.path().join("meters.yaml");
    std::fs::write(&meters, METERS).unwrap();
    let running =
        testkit::collector::start_collector(&server, &db, dir.path(), &["--meters", meters.to_str().unwrap()]).await;
    let (http_url, grpc_url) = (running.http_url.clone(), running.grpc_url.clone());
    // The same workload twice (over HTTP, then gRPC): sums and counts double, the peak
    // and the distinct users do not. Another tenant's traffic stays its own.
    assert_eq!(send(&http_url, "http", "acme").await["spans_ok"], true);
    assert_eq!(send(&grpc_url, "grpc", "acme").await["spans_ok"], true);
    assert_eq!(send(&http_url, "http", "globex").await["spans_ok"], true);
    running.settle().await;

    let now = time::OffsetDateTime::now_utc();
    let from = now.replace_time(time::Time::MIDNIGHT) - time::Duration::days(1);
    let mut q = UsageQuery::new(from, from + time::Duration::days(3));
    q.granularity = Granularity::Month;
    q.tenant = Some("acme".into());
    q.group_by_dimensions = true;
    let mut got: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    for p in query_usage(&store, &q).await.unwrap() {
        let model = p.dimensions.unwrap_or_default().get("model").cloned().unwrap_or_default();
        assert!(got.insert((p.meter, model), p.value).is_none(), "one bucket per series (the run crossed no month)");
    }
    let (per_model, calls, peak, users) = expected_run();
    let two = Decimal::from(2);
    let mut want: BTreeMap<(String, String), Decimal> =
        per_model.iter().map(|(m, v)| (("llm_tokens".to_owned(), m.clone()), v * two)).collect();
    want.insert(("llm_calls".into(), String::new()), calls * two);
    want.insert(("llm_peak_tokens".into(), String::new()), peak);
    want.insert(("llm_users".into(), String::new()), Decimal::from(users));
    // Built-ins are metered as before.
    want.insert(("spans".into(), String::new()), Decimal::from(2 * SPANS));
    want.insert(("requests".into(), String::new()), Decimal::ZERO);
    let span_bytes = got.remove(&("span_bytes".to_owned(), String::new())).expect("span_bytes metered");
    assert!(span_bytes > Decimal::ZERO);
    got.entry(("requests".into(), String::new())).or_insert(Decimal::ZERO);
    assert_eq!(got, want);
    // The numbers themselves, so a mistake shared by both computations cannot pass.
    assert_eq!(per_model["gpt-4o"] + per_model["gpt-4o-mini"] + per_model["o3"], "30504".parse().unwrap());
    assert_eq!((calls, peak, users), (Decimal::from(96), Decimal::from(1181), 17));

    // Without dimensions: the tokens of every model together, the users counted once.
    q.group_by_dimensions = false;
    q.meter = Some("llm_users".into());
    let points = query_usage(&store, &q).await.unwrap();
    assert_eq!(points.iter().map(|p| p.value).collect::<Vec<_>>(), [Decimal::from(17)]);
    q.tenant = Some("globex".into());
    q.meter = Some("llm_tokens".into());
    let points = query_usage(&store, &q).await.unwrap();
    assert_eq!(points.iter().map(|p| p.value).collect::<Vec<_>>(), [per_model.values().sum::<Decimal>()]);
}
