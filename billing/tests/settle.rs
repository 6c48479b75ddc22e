//! `tally settle` killed with -9 at random points while usage is written and resent: every
//! read between writes equals the independent sums of what was written, each batch once, and
//! once the settler has caught up the reads still do. Replay a run with `TALLY_SETTLE_SEED`.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use metering::clickhouse::ClickHouse;
use metering::meter::Catalog;
use metering::record::UsageBatch;
use metering::settle::Watermark;
use metering::store::migrate::migrate;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use metering::store::writer::UsageWriter;
use metering::store::Store;
use testkit::usage::{actual, dataset, expected, FROM, TO};
use testkit::ClickHouseServer;

/// xorshift: the same run for the same seed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `tally settle --every-secs 1` with no grace, so it folds what the writes leave behind.
fn settler(server: &ClickHouseServer, db: &str) -> Child {
    settler_with(server, db, &[])
}

fn settler_with(server: &ClickHouseServer, db: &str, extra: &[&str]) -> Child {
    let mut cmd = Command::new(testkit::service::binary("tally"));
    cmd.args(["settle", "--every-secs", "1", "--grace-secs", "0", "--clickhouse-url"])
        .arg(server.http_url())
        .args(["--clickhouse-database", db])
        .args(extra)
        .env_remove("TALLY_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    testkit::spawn::spawn_tied(cmd).unwrap()
}

async fn write(store: &Store, batches: &[UsageBatch]) {
    let mut writer = UsageWriter::new(store.ch().clone(), store.db(), Catalog::builtin()).unwrap();
    for b in batches {
        writer.push(b).unwrap();
    }
    writer.flush().await.unwrap();
}

async fn assert_exact(store: &Store, sent: &[UsageBatch], when: &str) {
    for g in [Granularity::Minute, Granularity::Day] {
        let mut q = UsageQuery::new(FROM, TO);
        q.granularity = g;
        q.group_by_service = true;
        q.limit = 10_000;
        let got = actual(&query_usage(store, &q).await.unwrap());
        assert_eq!(got, expected(sent, g, true, None, FROM, TO), "{when}, {g:?}");
    }
}

fn folds(server: &ClickHouseServer, db: &str) -> (u64, u64) {
    let out = server.query(&format!("SELECT count(), sum(batches) FROM {db}.settle_folds")).unwrap();
    let (n, b) = out.trim().split_once('\t').unwrap();
    (n.parse().unwrap(), b.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settler_killed_at_random_points_never_changes_a_read() {
    let seed = std::env::var("TALLY_SETTLE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("TALLY_SETTLE_SEED={seed}");
    let mut rng = Rng(seed);
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("settle_kill").unwrap();
    let store = Store::new(ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap(), &db);
    migrate(&store).await.unwrap();

    let data = dataset();
    let mut sent: Vec<UsageBatch> = Vec::new();
    let mut settle = settler(&server, &db);
    let mut kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(rng.below(1500));
    // 40 batches written in order, two to four per INSERT; a third of the INSERTs also resend
    // earlier batches (a collector's retry), before or after they were folded.
    let mut i = 0;
    let mut steps = 0;
    while i < data.len() {
        let n = (2 + rng.below(3) as usize).min(data.len() - i);
        let mut insert: Vec<UsageBatch> = data[i..i + n].to_vec();
        if i > 0 && rng.below(3) == 0 {
            let again = rng.below(i as u64) as usize;
            insert.push(data[again].clone());
        }
        write(&store, &insert).await;
        sent.extend_from_slice(&data[i..i + n]);
        i += n;
        steps += 1;
        assert_exact(&store, &sent, &format!("after write {steps} (seed {seed})")).await;
        // Let the settler work for a while, reading meanwhile; kill it with -9 at random.
        let until = Instant::now() + Duration::from_millis(200 + rng.below(900));
        while Instant::now() < until {
            if Instant::now() >= next_kill {
                settle.kill().unwrap();
                settle.wait().unwrap();
                kills += 1;
                settle = settler(&server, &db);
                next_kill = Instant::now() + Duration::from_millis(rng.below(1500));
            }
            assert_exact(&store, &sent, &format!("while settling after write {steps} (seed {seed})")).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    settle.kill().unwrap();
    settle.wait().unwrap();

    // Caught up: one more settle after the last insert's second has passed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = testkit::tally::tally(&[
        "settle",
        "--grace-secs",
        "0",
        "--clickhouse-url",
        &server.http_url(),
        "--clickhouse-database",
        &db,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_exact(&store, &sent, &format!("caught up (seed {seed})")).await;
    let (n, batches) = folds(&server, &db);
    let identities: BTreeSet<_> = sent
        .iter()
        .flat_map(|b| {
            b.records.iter().map(move |r| (r.tenant.clone(), b.source_id.clone(), b.seq, r.time.unix_timestamp() / 60))
        })
        .collect();
    eprintln!("{kills} kills, {n} folds");
    assert!(kills >= 3, "{kills} kills (seed {seed})");
    assert_eq!(batches, identities.len() as u64, "every batch folded exactly once (seed {seed})");
    // Nothing is left in the tail but what a read must test: every batch is settled.
    let w = Watermark::read(&store).await.unwrap().unwrap();
    let unsettled = server
        .query(&format!(
            "SELECT count() FROM {db}.usage WHERE inserted_at >= toDateTime({}, 'UTC') AND \
             (tenant, source_id, batch_seq) NOT IN (SELECT tenant, source_id, batch_seq FROM {db}.usage_settled \
             WHERE meter = '' AND fold IN (SELECT fold FROM {db}.settle_folds))",
            w.tail_from
        ))
        .unwrap();
    assert_eq!(unsettled.trim(), "0");
    // The settled days were rolled up, through the kills, each once.
    let rolled = server.query(&format!("SELECT count(), uniqExact(day_from) FROM {db}.settle_rollups")).unwrap();
    let (rollups, days) = rolled.trim().split_once('\t').unwrap();
    assert!(rollups.parse::<u64>().unwrap() >= 1 && rollups == days, "{rolled} (seed {seed})");
}

#[tokio::test]
async fn a_scheduled_settler_outlives_clickhouse_going_down_and_a_single_run_reports_it() {
    let mut server = ClickHouseServer::start().unwrap();
    let db = server.database("settle_down").unwrap();
    let store = Store::new(ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap(), &db);
    migrate(&store).await.unwrap();
    let data = dataset();
    write(&store, &data[..5]).await;
    let admin = format!("127.0.0.1:{}", testkit::service::free_port());
    let mut settle = settler_with(&server, &db, &["--admin-listen", &admin]);
    until_folded(&server, &db, 1);
    let watermark = metric(&admin, "tally_settle_watermark_seconds").await;
    assert!(metric(&admin, "tally_settle_folds_total").await >= 1 && watermark > 1_700_000_000, "{watermark}");
    assert_eq!(ready(&admin).await, 200);

    server.stop();
    // A single run says what failed and exits non-zero.
    let url = server.http_url();
    let out = testkit::tally::tally(&["settle", "--clickhouse-url", &url, "--clickhouse-database", &db]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("settling database {db} on {url}")), "{stderr}");
    // The scheduled one keeps trying through the outage.
    std::thread::sleep(Duration::from_secs(3));
    assert!(settle.try_wait().unwrap().is_none(), "the settler exited while ClickHouse was down");
    assert!(metric(&admin, "tally_settle_failures_total").await >= 1);
    assert_eq!(ready(&admin).await, 503);

    server.restart().unwrap();
    let before = folds(&server, &db).1;
    write(&store, &data[5..10]).await;
    let identities: BTreeSet<_> = data[..10]
        .iter()
        .flat_map(|b| {
            b.records.iter().map(move |r| (r.tenant.clone(), b.source_id.clone(), b.seq, r.time.unix_timestamp() / 60))
        })
        .collect();
    until_folded(&server, &db, identities.len() as u64);
    assert!(folds(&server, &db).1 > before);
    assert!(metric(&admin, "tally_settle_watermark_seconds").await > watermark);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(&admin).await != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    settle.kill().unwrap();
    settle.wait().unwrap();
    assert_exact(&store, &data[..10], "after the outage").await;
}

/// Waits (up to a minute: this is not what is measured) until folds have taken `want` batches.
fn until_folded(server: &ClickHouseServer, db: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(out) = server.query(&format!("SELECT sum(batches) FROM {db}.settle_folds")) {
            if out.trim().parse::<u64>().unwrap_or(0) >= want {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the settler never folded {want} batches");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A sample of the settler's `/metrics` at `admin`.
async fn metric(admin: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The settler's `/readyz` status at `admin`.
async fn ready(admin: &str) -> u16 {
    reqwest::get(format!("http://{admin}/readyz")).await.unwrap().status().as_u16()
}
