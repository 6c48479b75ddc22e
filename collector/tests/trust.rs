//! The trust model against a collector that refuses anonymous senders, as in production: a
//! tenant key cannot name its batches (and so neither deduplicate nor backdate its usage), an
//! agent key cannot move usage further back than the batch window, and a sender without a valid
//! key is refused from its headers, before its body is inflated.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metering::clickhouse::ClickHouse;
use metering::store::migrate::migrate;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use metering::store::Store;
use rust_decimal::Decimal;
use testkit::collector::{spans_json, start_keyed_collector, totals, value, Running};
use testkit::ClickHouseServer;
use time::OffsetDateTime;

async fn setup(prefix: &str) -> (ClickHouseServer, Store, Running, tempfile::TempDir) {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database(prefix).unwrap();
    let store = Store::new(ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap(), &db);
    migrate(&store).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = start_keyed_collector(&server, &db, dir.path(), &[]).await;
    (server, store, running, dir)
}

async fn post(running: &Running, key: Option<&str>, batch: Option<&str>, body: String) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/traces", running.http_url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    if let Some(batch) = batch {
        req = req.header("tally-batch", batch);
    }
    req.send().await.unwrap()
}

async fn message(resp: reqwest::Response) -> String {
    let body: serde_json::Value = resp.json().await.unwrap();
    body["message"].as_str().unwrap_or_default().to_owned()
}

fn millis(t: OffsetDateTime) -> i64 {
    t.unix_timestamp() * 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_key_cannot_name_its_batches_so_every_request_it_sends_is_billed() {
    let (_server, store, running, _dir) = setup("trust_tenant").await;
    let now = millis(OffsetDateTime::now_utc());
    // The same identity on 50 requests would have billed 100 spans for 5,000; a time of 0 would
    // have put them in 1970. Both are refused, on either transport, and nothing is stored.
    for batch in [format!("evil 9 {now}"), "back 9 0".to_owned()] {
        for _ in 0..3 {
            let resp = post(&running, Some("initech-key"), Some(&batch), spans_json("initech", 100)).await;
            assert_eq!(resp.status(), 403, "{batch}");
            let m = message(resp).await;
            assert!(m.contains("tally-batch is honoured only from agent keys"), "{m}");
        }
        let resp = testkit::collector::grpc_export_traces_as(
            &running.grpc_url,
            "initech-key",
            &spans_json("initech", 100),
            &[("tally-batch", batch.clone())],
        )
        .await;
        assert_eq!(resp.headers()["grpc-status"], "7", "PERMISSION_DENIED: {:?}", resp.headers());
    }
    // 50 distinct requests without an identity: 50 requests' usage.
    for _ in 0..50 {
        assert_eq!(post(&running, Some("initech-key"), None, spans_json("initech", 100)).await.status(), 200);
    }
    running.settle().await;
    let got = totals(store.ch(), store.db()).await;
    assert_eq!(value(&got, "initech", "spans"), Decimal::from(5_000), "{got:?}");
    assert_eq!(value(&got, "initech", "requests"), Decimal::from(5_000), "each span is a server span: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_key_cannot_move_usage_further_back_than_the_batch_window() {
    let (_server, store, running, _dir) = setup("trust_window").await;
    let now = OffsetDateTime::now_utc();
    for (seq, at) in [
        (1, OffsetDateTime::UNIX_EPOCH),
        (2, time::macros::datetime!(2020-01-01 00:00 UTC)),
        (3, now - time::Duration::hours(169)),
    ] {
        let batch = format!("agent:a1:boot1 {seq} {}", millis(at));
        let resp = post(&running, Some("agent-key"), Some(&batch), spans_json("acme", 10)).await;
        assert_eq!(resp.status(), 400, "{batch}");
        let m = message(resp).await;
        assert!(m.contains("is more than 168 h before now, the oldest this collector accepts"), "{batch}: {m}");
    }
    // Within the window (a WAL that waited out a long outage): billed when the agent took it.
    let at = (now - time::Duration::hours(167)).replace_second(0).unwrap().replace_nanosecond(0).unwrap();
    let batch = format!("agent:a1:boot1 4 {}", millis(at));
    assert_eq!(post(&running, Some("agent-key"), Some(&batch), spans_json("acme", 10)).await.status(), 200);
    running.settle().await;
    let mut q = UsageQuery::new(at, at + time::Duration::minutes(1));
    q.granularity = Granularity::Minute;
    q.meter = Some("spans".into());
    let points = query_usage(&store, &q).await.unwrap();
    assert_eq!(points.iter().map(|p| (p.tenant.as_str(), p.value)).collect::<Vec<_>>(), [("acme", Decimal::from(10))]);
    let all =
        query_usage(&store, &UsageQuery::new(OffsetDateTime::UNIX_EPOCH, now + time::Duration::days(1))).await.unwrap();
    let stored: Decimal = all.iter().filter(|p| p.meter == "spans").map(|p| p.value).sum();
    assert_eq!(stored, Decimal::from(10), "nothing refused was stored: {all:?}");
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ: 100 on every Linux architecture Tally builds for.
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_without_a_valid_key_are_refused_from_their_headers_before_any_inflating() {
    let (_server, store, running, _dir) = setup("trust_auth").await;
    // A malformed identity without a key is a missing key first.
    let resp = post(&running, None, Some("agent 1"), spans_json("acme", 1)).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(message(resp).await, "missing key: send `Authorization: Bearer <key>`");
    let resp = post(&running, Some("guess"), None, spans_json("acme", 1)).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(message(resp).await, "unknown key");
    // 64 uploads of ~64 KB of gzip that inflate to 63 MiB of JSON, at once, without a key.
    let mut json = b"{\"resourceSpans\":[".to_vec();
    json.resize(63 << 20, b' ');
    json.extend_from_slice(b"]}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&json).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 100 << 10, "{} bytes", bomb.len());
    // A tenant's request latency with nobody else sending, then while 64 senders without a key
    // upload bombs back to back.
    let quiet = tenant_latencies(&running, 20).await;
    let pid = running.service.pid().unwrap();
    let before = cpu_time(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (client, url, bomb, stop, refused) = (
            reqwest::Client::new(),
            format!("{}/v1/traces", running.http_url),
            bomb.clone(),
            stop.clone(),
            refused.clone(),
        );
        attackers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(bomb.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 401);
                refused.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // Measured once the uploads are under way.
    while refused.load(Ordering::Relaxed) < 256 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let attacked = tenant_latencies(&running, 20).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(attacker) = attackers.join_next().await {
        attacker.unwrap();
    }
    let bombs = refused.load(Ordering::Relaxed);
    let spent = cpu_time(pid) - before;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    eprintln!(
        "{bombs} unauthenticated uploads cost {spent:?} of collector CPU in all ({:?} each, the tenant's 20 \
         requests included); the tenant's median latency {:?} quiet, {:?} under the uploads",
        spent / bombs as u32,
        median(quiet),
        median(attacked),
    );
    // Inflating and parsing one of them costs ~0.1-0.3 s of CPU; refused from their headers they
    // cost well under a millisecond each (the clock ticks are 10 ms: at least 64 uploads ran).
    assert!(bombs >= 64, "{bombs}");
    assert!(spent < Duration::from_millis(bombs), "{bombs} unauthenticated uploads cost {spent:?} of collector CPU");
    // The tenant's traffic is untouched: 40 requests of 7 spans, each answered 200, stored exactly.
    running.settle().await;
    let got = totals(store.ch(), store.db()).await;
    assert_eq!(value(&got, "globex", "spans"), Decimal::from(40 * 7), "{got:?}");
    assert_eq!(value(&got, "acme", "spans"), Decimal::ZERO, "{got:?}");
}

/// Sends `n` requests of 7 spans for globex one after another, from a thread and runtime of
/// their own (not queued behind the attackers' tasks); returns each one's latency.
async fn tenant_latencies(running: &Running, n: usize) -> Vec<Duration> {
    let url = format!("{}/v1/traces", running.http_url);
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let client = reqwest::Client::new();
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let sent = std::time::Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .bearer_auth("globex-key")
                    .body(spans_json("globex", 7))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                out.push(sent.elapsed());
            }
            out
        })
    });
    tokio::task::spawn_blocking(move || thread.join().unwrap()).await.unwrap()
}

/// A deterministic pseudo-random sequence (xorshift), so a failing interleaving can be replayed
/// from the seed the test prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_interleaving_of_resends_forged_and_moved_batches_bills_each_tenant_its_distinct_requests() {
    let seed = std::env::var("TALLY_TRUST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 | 1);
    eprintln!("TALLY_TRUST_SEED={seed}");
    let mut rng = Rng(seed);
    let (_server, store, running, _dir) = setup("trust_property").await;
    let now = OffsetDateTime::now_utc();
    let tenants = ["initech", "globex", "acme"];
    let mut want: std::collections::BTreeMap<&str, u64> = tenants.iter().map(|t| (*t, 0)).collect();
    // Agent requests sent so far, to be resent verbatim: (identity, tenant, spans).
    let mut sent: Vec<(String, &str, usize)> = Vec::new();
    for i in 0..150u64 {
        let claimed = tenants[rng.below(3) as usize];
        let n = 1 + rng.below(20) as usize;
        let minutes_ago = |m: i64| millis(now - time::Duration::minutes(m));
        match rng.below(8) {
            // A tenant key, plain: billed to the key's tenant, whatever the resource claims.
            0 | 1 => {
                let (key, tenant) =
                    if rng.below(2) == 0 { ("initech-key", "initech") } else { ("globex-key", "globex") };
                assert_eq!(post(&running, Some(key), None, spans_json(claimed, n)).await.status(), 200);
                *want.get_mut(tenant).unwrap() += n as u64;
            }
            // A tenant key naming a batch: a forged identity (an agent's, seen before or not), a
            // time moved back or ahead. Refused whole.
            2 => {
                let key = if rng.below(2) == 0 { "initech-key" } else { "globex-key" };
                let batch = match (rng.below(3), sent.first()) {
                    (0, Some((id, _, _))) => id.clone(),
                    (1, _) => format!("evil {i} 0"),
                    _ => format!("evil {i} {}", minutes_ago(-2)),
                };
                assert_eq!(post(&running, Some(key), Some(&batch), spans_json(claimed, n)).await.status(), 403);
            }
            // An agent's new batch, within the window: billed to the tenant it names.
            3 | 4 => {
                let id = format!("agent:a{}:boot {i} {}", rng.below(2), minutes_ago(rng.below(600) as i64));
                assert_eq!(post(&running, Some("agent-key"), Some(&id), spans_json(claimed, n)).await.status(), 200);
                *want.get_mut(claimed).unwrap() += n as u64;
                sent.push((id, claimed, n));
            }
            // An agent's resend of an earlier batch, verbatim: counted once.
            5 | 6 => {
                let Some((id, tenant, n)) = sent.get(rng.below(sent.len().max(1) as u64) as usize).cloned() else {
                    continue;
                };
                assert_eq!(post(&running, Some("agent-key"), Some(&id), spans_json(tenant, n)).await.status(), 200);
            }
            // An agent's batch moved out of the window, back (8 days, 2020) or ahead (an hour).
            _ => {
                let at = match rng.below(3) {
                    0 => minutes_ago(8 * 24 * 60),
                    1 => millis(time::macros::datetime!(2020-06-01 00:00 UTC)),
                    _ => minutes_ago(-60),
                };
                let id = format!("agent:a9:boot {i} {at}");
                assert_eq!(post(&running, Some("agent-key"), Some(&id), spans_json(claimed, n)).await.status(), 400);
            }
        }
    }
    running.settle().await;
    let from = now - time::Duration::days(2);
    let mut q = UsageQuery::new(from, now + time::Duration::days(1));
    q.granularity = Granularity::Month;
    q.meter = Some("spans".into());
    // Summed: the range may cross a month boundary.
    let mut got: std::collections::BTreeMap<String, Decimal> = Default::default();
    for p in query_usage(&store, &q).await.unwrap() {
        *got.entry(p.tenant).or_default() += p.value;
    }
    for (tenant, n) in want {
        assert_eq!(got.get(tenant).copied().unwrap_or_default(), Decimal::from(n), "{tenant} (seed {seed}): {got:?}");
    }
    // And nothing outside the window was stored at all.
    let all = query_usage(&store, &UsageQuery::new(OffsetDateTime::UNIX_EPOCH, from)).await.unwrap();
    assert!(all.is_empty(), "seed {seed}: {all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_agent_key_names_only_its_tenants_and_reports_only_if_allowed() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    let (_server, store, running, _dir) = setup("trust_scope").await;
    // sidecar-key may name acme only: acme's spans land, globex's are refused with a reason.
    assert_eq!(post(&running, Some("sidecar-key"), None, spans_json("acme", 4)).await.status(), 200);
    let resp = post(&running, Some("sidecar-key"), None, spans_json("globex", 6)).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["partialSuccess"]["rejectedSpans"], "6", "{body}");
    assert_eq!(body["partialSuccess"]["errorMessage"], "this key may not name tenant globex", "{body}");
    // Nor may it report kernel usage, for anyone.
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    };
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    // `ns` CPU-nanoseconds of acme's, counted over the last ten seconds.
    let report = |ns: i64| ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![kv("tenant.id", "acme")], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope { name: measure::reported::SCOPE.into(), ..Default::default() }),
                metrics: vec![measure::reported::metric(
                    "cpu_seconds",
                    "ns",
                    vec![(vec![], ns)],
                    (now - 10_000_000_000, now),
                )],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let send_report = |key: &'static str, ns: i64| {
        let body = serde_json::to_vec(&report(ns)).unwrap();
        reqwest::Client::new()
            .post(format!("{}/v1/metrics", running.http_url))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"))
            .body(body)
            .send()
    };
    let partial = |body: serde_json::Value| {
        (body["partialSuccess"]["rejectedDataPoints"].clone(), body["partialSuccess"]["errorMessage"].clone())
    };
    let resp = send_report("sidecar-key", 5_000_000_000).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        partial(resp.json().await.unwrap()),
        (
            "1".into(),
            "this key may not report kernel usage (cpu_seconds, net_rx_bytes, net_tx_bytes, tcp_connections)".into()
        )
    );
    // An unscoped agent key may, within what a host can use: 3.6e15 ns in 10 s would be 3,600,000
    // CPU-seconds, 360,000 cores busy.
    let resp = send_report("agent-key", 3_600_000_000_000_000).await.unwrap();
    assert_eq!(
        partial(resp.json().await.unwrap()),
        (
            "1".into(),
            "usage report \"cpu_seconds\": 3600000 CPU-seconds in 10 s is more than 512 cores could use (the \
             collector's --max-report-cores)"
                .into()
        )
    );
    let resp = send_report("agent-key", 5_000_000_000).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body.get("partialSuccess").is_none(), "{body}");
    running.settle().await;
    let got = totals(store.ch(), store.db()).await;
    assert_eq!(value(&got, "acme", "spans"), Decimal::from(4), "{got:?}");
    assert_eq!(value(&got, "globex", "spans"), Decimal::ZERO, "{got:?}");
    assert_eq!(value(&got, "acme", "cpu_seconds"), Decimal::from(5), "the plausible report only: {got:?}");
}

/// An OTLP/JSON usage report of tenant `tenant`: `n` of `meter` (in its reported unit), counted
/// over `[start, end)` (Unix nanoseconds).
fn kernel_report(tenant: &str, meter: &str, n: i64, (start, end): (u64, u64)) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let tenant_id = KeyValue {
        key: "tenant.id".into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(tenant.into())) }),
        ..Default::default()
    };
    let unit = if meter == "cpu_seconds" { "ns" } else { "1" };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![tenant_id], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope { name: measure::reported::SCOPE.into(), ..Default::default() }),
                metrics: vec![measure::reported::metric(meter, unit, vec![(vec![], n)], (start, end))],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    serde_json::to_vec(&request).unwrap()
}

/// Sends a usage report as an agent does, in batch `batch`; returns the points refused and why.
async fn send_report(running: &Running, key: &str, batch: &str, body: Vec<u8>) -> (u64, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/metrics", running.http_url))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .header("tally-batch", batch)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{batch}");
    let body: serde_json::Value = resp.json().await.unwrap();
    let partial = &body["partialSuccess"];
    let refused = partial["rejectedDataPoints"].as_str().map_or(0, |n| n.parse().unwrap());
    (refused, partial["errorMessage"].as_str().unwrap_or_default().to_owned())
}

/// A meter's usage of every tenant stored from `from` on.
async fn stored(store: &Store, meter: &str, from: OffsetDateTime) -> Decimal {
    let mut q = UsageQuery::new(from, OffsetDateTime::now_utc() + time::Duration::days(1));
    q.granularity = Granularity::Month;
    q.meter = Some(meter.into());
    query_usage(store, &q).await.unwrap().iter().map(|p| p.value).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_key_reports_no_more_kernel_usage_over_time_than_its_hosts_could_use() {
    let (_server, store, running, _dir) = setup("trust_kernel_budget").await;
    let now = OffsetDateTime::now_utc();
    let (now_ns, now_ms) = (now.unix_timestamp_nanos() as u64, millis(now));
    const DAY_NS: u64 = 86_400_000_000_000;
    // agent-key claims 512 cores busy for two days in each report: each is plausible alone
    // (--max-report-cores, 512), and four fill the key's backlog of 8 days of 512 cores
    // (353,894,400 CPU-seconds). Refilling at 512 CPU-seconds a second, the fifth would fit after
    // two days. Spreading them over tenants does not help: the bound is the key's.
    let two_days = (now_ns - 2 * DAY_NS, now_ns);
    let claim = 512 * 2 * 86_400 * 1_000_000_000i64;
    let over = "usage report \"cpu_seconds\": 88473600 CPU-seconds would take this key over its bound of 512 cores \
                (the collector's --max-report-cores, times the key's hosts: 1) sustained, beyond a backlog of 691200 s";
    let tenants = ["acme", "globex", "initech"];
    let batch = |seq: u64| format!("agent:greedy:boot1 {seq} {now_ms}");
    let cpu = |seq: u64| kernel_report(tenants[seq as usize % 3], "cpu_seconds", claim, two_days);
    for seq in 0..10 {
        let answer = send_report(&running, "agent-key", &batch(seq), cpu(seq)).await;
        let want = if seq < 4 { (0, String::new()) } else { (1, over.to_owned()) };
        assert_eq!(answer, want, "report {seq}");
    }
    // A resend of a stored batch is charged once, so it passes; one of a refused batch is refused again.
    assert_eq!(send_report(&running, "agent-key", &batch(1), cpu(1)).await, (0, String::new()));
    assert_eq!(send_report(&running, "agent-key", &batch(7), cpu(7)).await, (1, over.to_owned()));
    // Network bytes likewise, against the link rate (1.6 Tbit/s: 200 GB/s, 8 days of it in four reports).
    let bytes = 200_000_000_000 * 2 * 86_400i64;
    for seq in 10..15 {
        let answer =
            send_report(&running, "agent-key", &batch(seq), kernel_report("acme", "net_tx_bytes", bytes, two_days))
                .await;
        let want = if seq < 14 {
            (0, String::new())
        } else {
            (
                1,
                "usage report \"net_tx_bytes\": 34560000000000000 bytes would take this key over its bound of \
                 1600000000000 bits/s (the collector's --max-report-link-bits-per-second, times the key's hosts: 1) \
                 sustained, beyond a backlog of 691200 s"
                    .to_owned(),
            )
        };
        assert_eq!(answer, want, "report {seq}");
    }

    // host-key is an honest agent of a host with 512 cores, all busy, back from a week offline: its
    // WAL holds a report per hour for the last 168 hours, each batched when it was written, and
    // it then reports every second. All of it fits.
    const HOUR_NS: u64 = 3_600_000_000_000;
    let hour = 512 * 3_600 * 1_000_000_000i64;
    let week_ago = now_ns - 168 * HOUR_NS;
    for h in 0..168 {
        let end = week_ago + (h + 1) * HOUR_NS;
        let batch = format!("agent:host1:boot1 {h} {}", end / 1_000_000);
        let report = kernel_report("acme", "cpu_seconds", hour, (end - HOUR_NS, end));
        assert_eq!(send_report(&running, "host-key", &batch, report).await, (0, String::new()), "hour {h}");
    }
    let mut since = now_ns;
    for s in 0..5u64 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let end = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
        let busy = 512 * (end - since) as i64;
        let batch = format!("agent:host1:boot1 {} {}", 168 + s, end / 1_000_000);
        let report = kernel_report("initech", "cpu_seconds", busy, (since, end));
        assert_eq!(send_report(&running, "host-key", &batch, report).await, (0, String::new()), "second {s}");
        since = end;
    }
    let live = Decimal::new(512 * (since - now_ns) as i64, 9);

    running.settle().await;
    let from = OffsetDateTime::from_unix_timestamp_nanos(i128::from(week_ago)).unwrap() - time::Duration::hours(1);
    let got = totals(store.ch(), store.db()).await;
    assert_eq!(value(&got, "globex", "cpu_seconds"), Decimal::from(88_473_600), "report 1, once: {got:?}");
    // agent-key: exactly its backlog of 8 days of 512 cores; host-key: its week and its seconds.
    let greedy = Decimal::from(4 * 88_473_600);
    let honest = Decimal::from(168 * 512 * 3_600) + live;
    assert_eq!(stored(&store, "cpu_seconds", from).await, greedy + honest, "{got:?}");
    assert_eq!(stored(&store, "net_tx_bytes", from).await, Decimal::from(4 * bytes), "{got:?}");
    let metrics = running.metrics().await;
    for line in [
        "tally_collector_report_bound_refused_points_total{meter=\"cpu_seconds\"} 7",
        "tally_collector_report_bound_refused_points_total{meter=\"net_tx_bytes\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}
