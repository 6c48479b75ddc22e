//! Settlement against a real ClickHouse 18.16: reads of live usage equal independent sums
//! before, between and after folds; resends of folded batches (also after the raw rows are
//! dropped) count once; late new usage counts once; a fold stopped before its commit counts
//! nothing and is taken again whole by the next.

use std::collections::BTreeSet;
use std::time::Duration;

use metering::clickhouse::ClickHouse;
use metering::meter::Catalog;
use metering::record::{UsageBatch, UsageRecord};
use metering::settle::{self, FoldOptions};
use metering::store::migrate::migrate;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use metering::store::writer::UsageWriter;
use metering::store::Store;
use rust_decimal::Decimal;
use testkit::usage::{actual, dataset, expected, FROM, TO};
use testkit::ClickHouseServer;
use time::macros::datetime;

/// Folds take everything inserted before the server's current second.
const NOW: FoldOptions =
    FoldOptions { grace: Duration::ZERO, margin: Duration::from_secs(3600), max_span: Duration::from_secs(86_400) };

async fn setup(server: &ClickHouseServer) -> Store {
    let db = server.database("settle").unwrap();
    let store = Store::new(ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap(), &db);
    migrate(&store).await.unwrap();
    store
}

/// One INSERT of `batches`, as a collector's sink writes a spool segment.
async fn write(store: &Store, batches: &[UsageBatch]) {
    let mut writer = UsageWriter::new(store.ch().clone(), store.db(), Catalog::builtin()).unwrap();
    for b in batches {
        writer.push(b).unwrap();
    }
    writer.flush().await.unwrap();
}

/// Every roll-up the API serves equals the naive sums of `sent` (each batch once).
async fn check(store: &Store, sent: &[UsageBatch], when: &str) {
    for g in [Granularity::Minute, Granularity::Hour, Granularity::Day, Granularity::Month] {
        for by_service in [false, true] {
            for tenant in [None, Some("globex")] {
                let mut q = UsageQuery::new(FROM, TO);
                q.granularity = g;
                q.group_by_service = by_service;
                q.tenant = tenant.map(str::to_owned);
                q.limit = 10_000;
                let got = actual(&query_usage(store, &q).await.unwrap());
                let want = expected(sent, g, by_service, tenant, FROM, TO);
                assert_eq!(got, want, "{when}: granularity {g:?}, by service {by_service}, tenant {tenant:?}");
            }
        }
    }
}

/// The distinct (tenant, batch, minute) of `batches`: the identities folds record.
fn identities(batches: &[UsageBatch]) -> u64 {
    let minute = |r: &UsageRecord| r.time.unix_timestamp().div_euclid(60);
    let set: BTreeSet<_> = batches
        .iter()
        .flat_map(|b| b.records.iter().map(move |r| (r.tenant.clone(), b.source_id.clone(), b.seq, minute(r))))
        .collect();
    set.len() as u64
}

/// Waits until the server's clock has passed the second of the last insert, so a fold with
/// no grace takes it.
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

fn count(server: &ClickHouseServer, store: &Store, table: &str) -> u64 {
    server.query(&format!("SELECT count() FROM {}.{table}", store.db())).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn settled_reads_equal_independent_sums_through_resends_drops_and_late_usage() {
    let server = ClickHouseServer::start().unwrap();
    let store = setup(&server).await;
    let data = dataset();
    let (first, second) = data.split_at(20);

    // Before any fold: the raw read.
    assert_eq!(settle::fold(&store, NOW).await.unwrap(), None, "nothing to fold in an empty store");
    write(&store, first).await;
    check(&store, first, "before the first fold").await;

    next_second().await;
    let fold = settle::fold(&store, NOW).await.unwrap().expect("a fold");
    assert_eq!(fold.batches, identities(first));
    check(&store, first, "after the first fold").await;

    // Every folded batch resent, and new ones: the resends are in the tail, left out by identity.
    write(&store, first).await;
    write(&store, second).await;
    check(&store, &data, "resends and new batches in the tail").await;
    next_second().await;
    let fold = settle::fold(&store, NOW).await.unwrap().expect("a second fold");
    assert_eq!(fold.batches, identities(second), "the resends were not taken again");
    check(&store, &data, "after the second fold").await;

    // The raw rows dropped (retention), then a folded batch resent once more: still once.
    for month in ["202601", "202602", "202603"] {
        server.query(&format!("ALTER TABLE {}.usage DROP PARTITION {month}", store.db())).unwrap();
    }
    assert_eq!(count(&server, &store, "usage"), 0);
    check(&store, &data, "from settled rows alone").await;
    write(&store, &first[3..4]).await;
    check(&store, &data, "a resend after the raw rows were dropped").await;
    next_second().await;
    let fold = settle::fold(&store, NOW).await.unwrap().expect("a third fold");
    assert_eq!(fold.batches, 0, "a resend of a folded batch is never taken");
    check(&store, &data, "after a fold of only a resend").await;

    // Late new usage for a settled minute: a new batch, counted once before and after its fold.
    let mut all = data.clone();
    all.push(UsageBatch {
        source_id: "agent-a:boot-1".into(),
        seq: 1_000,
        records: vec![
            UsageRecord::new("globex", "spans", datetime!(2026-02-03 04:05:06 UTC), Decimal::from(17)),
            UsageRecord::new("acme", "cpu_seconds", datetime!(2026-01-31 23:59:59 UTC), Decimal::new(25, 1)),
        ],
    });
    write(&store, &all[40..]).await;
    check(&store, &all, "late usage in the tail").await;
    next_second().await;
    let fold = settle::fold(&store, NOW).await.unwrap().expect("a fourth fold");
    assert_eq!(fold.batches, 2);
    check(&store, &all, "late usage settled").await;

    // A fold without a margin leaves a tail with no rows: reads are settled rows alone.
    next_second().await;
    let quiet = FoldOptions { margin: Duration::ZERO, ..NOW };
    settle::fold(&store, quiet).await.unwrap().expect("a fold without a margin");
    let w = settle::Watermark::read(&store).await.unwrap().unwrap();
    let w = w.with_tail(&store, settle::Table::Usage, None, (0, u32::MAX)).await.unwrap();
    assert_eq!(w.tail, settle::Tail::Empty, "{w:?}");
    check(&store, &all, "settled rows alone, no tail").await;
    // A resend then puts rows in the tail again, left out by identity.
    write(&store, &all[40..]).await;
    let w = w.with_tail(&store, settle::Table::Usage, None, (0, u32::MAX)).await.unwrap();
    // The journal gives the resent batches' first and last minute.
    let minutes: Vec<u32> = all[40..]
        .iter()
        .flat_map(|b| b.records.iter().map(|r| (r.time.unix_timestamp().div_euclid(60) * 60) as u32))
        .collect();
    let within = settle::Tail::Within(*minutes.iter().min().unwrap(), *minutes.iter().max().unwrap());
    assert_eq!(w.tail, within, "{w:?}");
    check(&store, &all, "a resend in the tail after a quiet fold").await;

    // Settled usage rows follow keys, not batches: each fold wrote one per tenant, meter, minute
    // and service of what it took.
    let keys = |batches: &[UsageBatch]| {
        let set: BTreeSet<_> = batches
            .iter()
            .flat_map(|b| &b.records)
            .map(|r| (&r.tenant, &r.meter, r.time.unix_timestamp().div_euclid(60), &r.service))
            .collect();
        set.len()
    };
    let usage_rows =
        server.query(&format!("SELECT count() FROM {}.usage_settled WHERE meter != ''", store.db())).unwrap();
    assert_eq!(usage_rows.trim(), (keys(first) + keys(second) + keys(&all[40..])).to_string());
}

#[tokio::test]
async fn a_fold_stopped_before_its_commit_counts_nothing_and_is_taken_again() {
    let server = ClickHouseServer::start().unwrap();
    let store = setup(&server).await;
    let data = dataset();
    write(&store, &data[..10]).await;
    next_second().await;
    let first = settle::fold(&store, NOW).await.unwrap().expect("a fold");
    write(&store, &data[10..]).await;
    next_second().await;

    // Stopped after its INSERT: what it wrote is never read.
    let plan = settle::plan(&store, NOW).await.unwrap().expect("a plan");
    assert_eq!(plan.from, first.to - 3600);
    for table in settle::Table::ALL {
        if let Some(minutes) = plan.minutes(&store, table).await.unwrap() {
            store.ch().execute(&plan.statement(store.db(), table, minutes).unwrap()).await.unwrap();
        }
    }
    check(&store, &data, "stopped before its commit").await;

    // The next fold takes the same batches again, whole, and counts them once.
    let next = settle::fold(&store, NOW).await.unwrap().expect("the next fold");
    assert_ne!(next.id, plan.id);
    assert_eq!(next.batches, identities(&data[10..]));
    check(&store, &data, "after the next fold").await;
    // A fold after it (the clock moved on) takes nothing again.
    next_second().await;
    let after = settle::fold(&store, NOW).await.unwrap().expect("a fold of the next second");
    assert_eq!((after.batches, after.rows), (0, 0));
    check(&store, &data, "after an empty fold").await;
}

/// Reads of whole days as `check` makes them, and of ranges that do not start on a day (which
/// take minute rows throughout), equal the naive sums.
async fn check_rolled(store: &Store, sent: &[UsageBatch], when: &str) {
    check(store, sent, when).await;
    let (from, to) = (datetime!(2026-01-31 12:00 UTC), datetime!(2026-02-02 06:00 UTC));
    for g in [Granularity::Day, Granularity::Month] {
        let mut q = UsageQuery::new(from, to);
        q.granularity = g;
        q.limit = 10_000;
        let got = actual(&query_usage(store, &q).await.unwrap());
        assert_eq!(got, expected(sent, g, false, None, from, to), "{when}: {g:?} from {from} to {to}");
    }
}

fn day_keys(batches: &[UsageBatch]) -> usize {
    let set: BTreeSet<_> = batches
        .iter()
        .flat_map(|b| &b.records)
        .map(|r| (&r.tenant, &r.meter, r.time.unix_timestamp().div_euclid(86_400), &r.service, &r.dimensions))
        .collect();
    set.len()
}

#[tokio::test]
async fn rolled_up_days_read_exactly_through_late_usage_resends_and_a_stopped_rollup() {
    let server = ClickHouseServer::start().unwrap();
    let store = setup(&server).await;
    let data = dataset();
    let (first, second) = data.split_at(20);
    assert_eq!(settle::roll(&store).await.unwrap(), None, "nothing to roll up before a fold");
    write(&store, first).await;
    next_second().await;
    settle::fold(&store, NOW).await.unwrap().expect("a fold");

    // A roll-up stopped before its commit: its rows are never read.
    let plan = settle::rollup::plan(&store).await.unwrap().expect("days to roll up");
    assert_eq!(plan.days.from, datetime!(2026-01-31 00:00 UTC).unix_timestamp() as u32, "the first settled day");
    for table in settle::Table::ALL {
        store.ch().execute(&plan.statement(store.db(), table).unwrap()).await.unwrap();
    }
    check_rolled(&store, first, "a roll-up stopped before its commit").await;

    // Caught up: every day up to the latest fold's start, a week at a time.
    let mut rollups = Vec::new();
    while let Some(r) = settle::roll(&store).await.unwrap() {
        rollups.push(r);
    }
    assert_eq!(rollups[0].days.from, plan.days.from, "the stopped roll-up's days are taken again");
    assert_ne!(rollups[0].id, plan.id);
    assert!(rollups.windows(2).all(|w| w[0].days.to == w[1].days.from), "{rollups:?}");
    let w = settle::Watermark::read(&store).await.unwrap().unwrap();
    assert_eq!(w.rolled.map(|d| d.from), Some(plan.days.from));
    assert_eq!(w.rolled.map(|d| d.to), rollups.last().map(|r| r.days.to));
    assert_eq!(w.late, None, "no fold ended after the roll-ups");
    check_rolled(&store, first, "rolled up").await;
    let rolled = |fold: &str| {
        let sql = format!("SELECT count() FROM {}.usage_settled_daily WHERE fold = '{fold}'", store.db());
        server.query(&sql).unwrap().trim().parse::<usize>().unwrap()
    };
    assert_eq!(rollups.iter().map(|r| rolled(&r.id)).sum::<usize>(), day_keys(first), "one row per key and day");

    // Resends of every rolled-up batch and late new usage for the rolled-up days: in the tail,
    // then folded; reads of the rolled-up days find the fold by the minutes it recorded.
    write(&store, first).await;
    write(&store, second).await;
    check_rolled(&store, &data, "resends and late usage in the tail").await;
    next_second().await;
    let fold = settle::fold(&store, NOW).await.unwrap().expect("a fold of late usage");
    assert_eq!(fold.batches, identities(second), "the resends were not taken again");
    let minutes = server
        .query(&format!(
            "SELECT toUInt32(window_from), toUInt32(window_to) FROM {}.settle_folds WHERE fold = '{}'",
            store.db(),
            fold.id
        ))
        .unwrap();
    let minutes_sent: Vec<i64> =
        second.iter().flat_map(|b| &b.records).map(|r| r.time.unix_timestamp() / 60 * 60).collect();
    let (lo, hi) = (*minutes_sent.iter().min().unwrap(), *minutes_sent.iter().max().unwrap());
    let (from, to) = minutes.trim().split_once('\t').unwrap();
    assert!(from.parse::<i64>().unwrap() <= lo && to.parse::<i64>().unwrap() >= hi, "{minutes} vs {lo}..{hi}");
    let w = settle::Watermark::read(&store).await.unwrap().unwrap();
    assert!(w.late.is_some_and(|(lo, hi)| lo as i64 <= minutes_sent[0] && hi as i64 >= minutes_sent[0]), "{w:?}");
    check_rolled(&store, &data, "late usage folded").await;
    assert_eq!(settle::roll(&store).await.unwrap(), None, "a day is rolled up once");

    // After the raw rows are dropped, a resend still counts once.
    for month in ["202601", "202602", "202603"] {
        server.query(&format!("ALTER TABLE {}.usage DROP PARTITION {month}", store.db())).unwrap();
    }
    write(&store, &second[..3]).await;
    check_rolled(&store, &data, "a resend after the raw rows were dropped").await;
    next_second().await;
    let fold = settle::fold(&store, NOW).await.unwrap().expect("a fold of only resends");
    assert_eq!(fold.batches, 0);
    check_rolled(&store, &data, "after a fold of only resends").await;
}
