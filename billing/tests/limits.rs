//! What one read may cost: the bucket cap, per-tenant concurrency, ClickHouse's per-query
//! limits, and queries killed when their caller goes away or the API's deadline passes, against
//! a real ClickHouse (18.16) holding a month of minute usage for three tenants.

use std::time::{Duration, Instant};

use metering::store::migrate::migrate;
use metering::store::Store;
use serde_json::Value;
use testkit::tally::{start, Serve};
use testkit::ClickHouseServer;

const BILLING: &str = "billing-secret";
const KEYS: [(&str, &str); 3] = [("acme", "acme-key"), ("globex", "globex-key"), ("initech", "initech-key")];
/// Services per tenant and minute: January 2026's minutes × 3 tenants × 8 = 1,071,360 rows.
const SERVICES: u64 = 8;
const JANUARY: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// Every minute of January 2026, for each tenant and service, one `spans` row worth 1..100.
fn load(server: &ClickHouseServer, db: &str) {
    let minutes = 31 * 1440;
    server
        .query(&format!(
            "INSERT INTO {db}.usage (tenant, meter, window_start, service, route, dimensions, unique_value, value, \
             unit, aggregation, source_id, batch_seq) \
             SELECT arrayElement(['acme', 'globex', 'initech'], (number % 3) + 1), 'spans', \
             toDateTime({JANUARY} + intDiv(number, {per_minute}) * 60, 'UTC'), \
             concat('svc-', toString(intDiv(number, 3) % {SERVICES})), '', '', '', toDecimal128(number % 100 + 1, 9), \
             'count', 'count', 'loader', number FROM system.numbers LIMIT {rows}",
            per_minute = 3 * SERVICES,
            rows = minutes * 3 * SERVICES,
        ))
        .unwrap();
}

/// A server with the month loaded, and `tally serve` on it with `extra` flags. The server's
/// URL asks for one thread and small blocks, so that a month's read runs for seconds on a small
/// dataset (and notices a KILL at its next block).
async fn setup(extra: &[&str]) -> (ClickHouseServer, Serve) {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("limits").unwrap();
    let store =
        Store::new(metering::clickhouse::ClickHouse::new(&server.http_url(), Duration::from_secs(60)).unwrap(), &db);
    migrate(&store).await.unwrap();
    load(&server, &db);
    let url = format!("{}/?max_threads=1&max_block_size=8", server.http_url());
    let tenant_keys: Vec<String> = KEYS.iter().map(|(t, k)| format!("{t}={k}")).collect();
    let mut args = vec!["--billing-key", BILLING];
    for spec in &tenant_keys {
        args.extend(["--tenant-key", spec.as_str()]);
    }
    args.extend_from_slice(extra);
    let serve = start(&url, &db, &args).await;
    (server, serve)
}

async fn get(serve: &Serve, query: &str, key: &str) -> (u16, Option<String>, Value) {
    let resp =
        reqwest::Client::new().get(format!("{}/v1/usage?{query}", serve.base)).bearer_auth(key).send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry, resp.json().await.unwrap())
}

/// The API's queries ClickHouse is running now.
fn running(server: &ClickHouseServer) -> Vec<String> {
    let out = server
        .query("SELECT query_id FROM system.processes WHERE query_id LIKE 'tally-api-%' FORMAT TabSeparated")
        .unwrap();
    out.lines().map(str::to_owned).collect()
}

/// Waits (up to a minute: this is not what is measured) until the API has a query running.
async fn until_running(server: &ClickHouseServer) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids = running(server);
        if !ids.is_empty() {
            return ids;
        }
        assert!(Instant::now() < deadline, "the API never started a query");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The API's queries still running 1 s from now (none, when they are stopped in time).
async fn left_after_a_second(server: &ClickHouseServer) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let ids = running(server);
        if ids.is_empty() || Instant::now() >= deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A month of one tenant's minutes by service: 357,120 points, the heaviest read the cap allows.
const MONTH_OF_MINUTES: &str =
    "meter=spans&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&granularity=minute&group_by=service&limit=10000";
const YEAR_OF_MINUTES: &str = "from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z&granularity=minute&limit=10000";

#[tokio::test]
async fn six_tenant_reads_are_bounded_and_the_billing_key_keeps_answering() {
    // Time enough for three slow reads at once on a busy machine: this test is about concurrency.
    let (server, serve) = setup(&[
        "--tenant-max-concurrent-reads",
        "1",
        "--tenants-max-concurrent-reads",
        "3",
        "--tenant-key",
        "hooli=hooli-key",
        "--query-max-execution-secs",
        "120",
    ])
    .await;

    // Six year-long minute reads at once, two per tenant key: each refused before any query.
    let year: Vec<_> =
        (0..6).map(|i| tokio::spawn(get_owned(serve.base.clone(), YEAR_OF_MINUTES, KEYS[i % 3].1))).collect();
    let (billing_status, _, days) =
        get(&serve, "from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&granularity=day", BILLING).await;
    let mut answers = Vec::new();
    for task in year {
        answers.push(task.await.unwrap());
    }
    for (status, _, body) in answers {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "range_too_large");
        assert_eq!(
            body["error"]["message"],
            "from..to spans 525600 minute buckets; at most 44640 are served per request, so granularity=minute \
             allows at most 31 days: split the range or use a coarser granularity"
        );
    }
    assert_eq!((billing_status, days["data"].as_array().map(Vec::len)), (200, Some(93)), "{days}");

    // The heaviest read the cap allows, for each tenant: running at once, each holding its
    // tenant's only permit. ClickHouse's memory is sampled meanwhile.
    let rss_before = resident_bytes(server.pid().unwrap());
    let sampler = Memory::sample(server.http_url(), server.pid().unwrap());
    let heavy: Vec<_> =
        KEYS.iter().map(|(_, key)| tokio::spawn(get_owned(serve.base.clone(), MONTH_OF_MINUTES, key))).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while running(&server).len() < 3 {
        assert!(Instant::now() < deadline, "three reads never ran at once: {:?}", running(&server));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Three more, one per tenant: each tenant is at its limit.
    for (_, key) in KEYS {
        let (status, retry, body) = get(&serve, MONTH_OF_MINUTES, key).await;
        assert_eq!(
            (status, retry.as_deref(), body["error"]["code"].as_str()),
            (429, Some("1"), Some("too_many_requests"))
        );
    }
    // A fourth tenant's read: all tenants together run as many as they may.
    let (status, retry, body) = get(&serve, MONTH_OF_MINUTES, "hooli-key").await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")));
    assert_eq!(
        body["error"]["message"],
        "tenants already run 3 reads at once (the most --tenants-max-concurrent-reads allows); retry when one has \
         finished"
    );
    // The billing key is not held back by them.
    for _ in 0..3 {
        let (status, _, body) =
            get(&serve, "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&granularity=hour", BILLING).await;
        assert_eq!((status, body["data"].as_array().map(Vec::len)), (200, Some(72)), "{body}");
    }
    // Each heavy read answers one full page and a cursor.
    for task in heavy {
        let (status, _, body) = task.await.unwrap();
        assert_eq!(status, 200, "{}", body["error"]);
        assert_eq!(body["data"].as_array().map(Vec::len), Some(10_000));
        assert!(body["next_cursor"].is_string());
    }
    assert_eq!(left_after_a_second(&server).await, Vec::<String>::new());
    // Memory: the API's queries together hold at most one per-query limit per read at once
    // (--tenants-max-concurrent-reads, here 3, and the billing key's one read at a time here):
    // 4 × 1 GiB. What they used is far below.
    let peak = sampler.stop().await;
    eprintln!(
        "the API's queries at once used at most {} MB (one query at most {} MB); ClickHouse's resident memory \
         {} MB before, {} MB at most during the reads",
        peak.queries >> 20,
        peak.query >> 20,
        rss_before >> 20,
        peak.resident >> 20
    );
    assert!(peak.query > 0, "no query was sampled");
    assert!(peak.queries <= 4 << 30, "{peak:?}");
}

/// The largest memory use seen while sampling: of one API query, of all of them at once, and
/// of the ClickHouse server process.
#[derive(Debug, Default)]
struct Peak {
    query: u64,
    queries: u64,
    resident: u64,
}

/// Samples every 10 ms until stopped.
struct Memory {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Peak>,
}

impl Memory {
    fn sample(url: String, pid: u32) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let sql = "SELECT max(memory_usage), sum(memory_usage) FROM system.processes \
                       WHERE query_id LIKE 'tally-api-%' FORMAT TabSeparated";
            let mut peak = Peak::default();
            while stopped.try_recv().is_err() {
                let text = client.post(&url).body(sql).send().await.unwrap().text().await.unwrap();
                let mut fields = text.split_whitespace().map(|f| f.parse::<i64>().unwrap_or(0).max(0) as u64);
                peak.query = peak.query.max(fields.next().unwrap_or(0));
                peak.queries = peak.queries.max(fields.next().unwrap_or(0));
                peak.resident = peak.resident.max(resident_bytes(pid));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        });
        Self { stop, task }
    }

    async fn stop(self) -> Peak {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

/// Resident memory of process `pid` (VmRSS).
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim();
    kib.parse::<u64>().unwrap() << 10
}

async fn get_owned(base: String, query: &'static str, key: &'static str) -> (u16, Option<String>, Value) {
    let resp = reqwest::Client::new().get(format!("{base}/v1/usage?{query}")).bearer_auth(key).send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry, resp.json().await.unwrap())
}

#[tokio::test]
async fn a_dropped_client_leaves_no_query_running() {
    let (server, serve) = setup(&[]).await;
    let client = tokio::spawn(get_owned(serve.base.clone(), MONTH_OF_MINUTES, "acme-key"));
    let ids = until_running(&server).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    client.abort();
    assert!(client.await.unwrap_err().is_cancelled());
    assert_eq!(left_after_a_second(&server).await, Vec::<String>::new(), "was {ids:?}");
    // The tenant's permit came back with it.
    let (status, _, body) =
        get(&serve, "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&granularity=day", "acme-key").await;
    assert_eq!((status, body["data"].as_array().map(Vec::len)), (200, Some(1)), "{body}");
}

#[tokio::test]
async fn reads_over_their_limits_get_precise_errors_and_stop() {
    // ClickHouse's own limit on time: the read stops there, with ClickHouse's reason.
    let (server, serve) = setup(&["--query-max-execution-secs", "1"]).await;
    let (status, _, body) = get(&serve, MONTH_OF_MINUTES, "acme-key").await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("query_timeout")), "{}", body["error"]);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "the read ran longer than one may (--query-max-execution-secs) and was stopped; narrow the range, \
             coarsen the granularity or name a meter ("
        ),
        "{message}"
    );
    assert_eq!(left_after_a_second(&server).await, Vec::<String>::new());
    drop(serve);
    drop(server);

    // Memory: 20 MB is far less than a month of one tenant's minutes by service needs.
    let (server, serve) = setup(&["--query-max-memory-bytes", "20000000"]).await;
    let (status, _, body) = get(&serve, MONTH_OF_MINUTES, "acme-key").await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("query_too_large")), "{}", body["error"]);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "the read needs more memory than one query may use (--query-max-memory-bytes) and was stopped; \
             narrow the range, coarsen the granularity or name a meter (Code: 241"
        ) && message.contains("Memory limit (for query) exceeded"),
        "{message}"
    );
    assert_eq!(left_after_a_second(&server).await, Vec::<String>::new());
    // A small read still fits.
    let (status, _, body) =
        get(&serve, "from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z&granularity=hour", "acme-key").await;
    assert_eq!((status, body["data"][0]["value"].as_u64()), (200, Some(fixture_hour_total())), "{body}");
}

/// acme's spans in 2026-01-01's first hour, computed from the loader's formula: row `n` is
/// tenant `n % 3`, minute `n / 24`, worth `n % 100 + 1`.
fn fixture_hour_total() -> u64 {
    (0..60 * 3 * SERVICES).filter(|n| n % 3 == 0).map(|n| n % 100 + 1).sum()
}
