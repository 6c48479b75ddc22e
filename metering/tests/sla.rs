//! The `sla` table on a real ClickHouse 18.16 and on chDB (the modern dialect):
//! migrate, insert encoded batches (one of them twice, as a retry would), read
//! merged, and compare with exact answers computed here from the raw requests.

use metering::store::Store;
use std::collections::BTreeMap;
use std::time::Duration;

use metering::clickhouse::client::parse_tsv;
use metering::clickhouse::ClickHouse;
use metering::sla::schema::SLA_ROW;
use metering::sla::{encode_sla_batch, insert_sla, query_sla, Exemplar, SlaGrouping, SlaPoint, SlaQuery, SlaRecord};
use metering::store::migrate::migrate;
use metering::store::rollup::Granularity;
use metering::store::Dialect;
use testkit::{Chdb, ClickHouseServer};
use time::macros::datetime;
use time::OffsetDateTime;

const FROM: OffsetDateTime = datetime!(2026-05-01 00:00 UTC);
const TO: OffsetDateTime = datetime!(2026-06-01 00:00 UTC);

/// One request: tenant, service, route, time, latency, failed, trace id.
type Request = (&'static str, &'static str, &'static str, OffsetDateTime, u64, bool, String);

/// Latency, failed, trace id of each request of one tenant, service and route.
type ByKey = BTreeMap<(String, String, String), Vec<(u64, bool, String)>>;

/// `/pay`: 1,000 requests of 1..=1000 ms, every 100th failed; `/cart`: 300
/// requests of 3 µs..=900 µs, every 7th failed; globex: a few. Spread over
/// five minutes of one hour.
fn requests() -> Vec<Request> {
    let base = datetime!(2026-05-04 10:00 UTC);
    let at = |i: u64| base + time::Duration::seconds((i % 5 * 60 + i % 60) as i64);
    let mut out = Vec::new();
    for i in 1..=1000u64 {
        out.push(("acme", "checkout", "/pay", at(i), i * 1_000_000, i % 100 == 0, format!("{i:032x}")));
    }
    for i in 1..=300u64 {
        out.push(("acme", "checkout", "/cart", at(i), i * 3_000, i % 7 == 0, format!("{:032x}", 5000 + i)));
    }
    for i in 1..=20u64 {
        out.push(("globex", "api", "", at(i), 123_456 * i, false, format!("{:032x}", 9000 + i)));
    }
    out
}

/// Four batches from two collectors; each request becomes its own record, so
/// the encoder must merge per minute.
fn batches() -> Vec<(&'static str, u64, Vec<SlaRecord>)> {
    let mut out: Vec<_> = [("collector-a", 1), ("collector-a", 2), ("collector-b", 1), ("collector-b", 2)]
        .into_iter()
        .map(|(s, q)| (s, q, Vec::new()))
        .collect();
    for (n, (tenant, service, route, time, ns, err, trace)) in requests().into_iter().enumerate() {
        let mut r = SlaRecord::new(tenant, service, route, time);
        r.observe(ns, err, &trace);
        out[n % 4].2.push(r);
    }
    out
}

/// Everything encoded, with the second batch twice (a retry).
fn encoded() -> Vec<u8> {
    let all = batches();
    let mut bytes = Vec::new();
    for (source, seq, records) in all.iter().chain(std::iter::once(&all[1])) {
        encode_sla_batch(source, *seq, records, &mut bytes).unwrap();
    }
    bytes
}

/// Checks merged points against the raw requests: exact counts and exemplars,
/// every percentile within 1/256 of the exact rank.
fn check(points: &[SlaPoint], grouping: SlaGrouping) {
    let mut want = ByKey::new();
    for (tenant, service, route, _, ns, err, trace) in requests() {
        let route = if grouping == SlaGrouping::Route { route } else { "" };
        want.entry((tenant.into(), service.into(), route.into())).or_default().push((ns, err, trace));
    }
    assert_eq!(points.len(), want.len(), "{points:#?}");
    for p in points {
        let key = (p.tenant.clone(), p.service.clone(), p.route.clone().unwrap_or_default());
        let mut reqs = want[&key].clone();
        assert_eq!((p.requests, p.errors), (reqs.len() as u64, reqs.iter().filter(|r| r.1).count() as u64), "{key:?}");
        assert_eq!(p.latency.count(), p.requests);
        reqs.sort();
        for ppm in [0u32, 10_000, 250_000, 500_000, 900_000, 950_000, 990_000, 999_000, 1_000_000] {
            let rank = (u64::from(ppm) * reqs.len() as u64).div_ceil(1_000_000).max(1) as usize;
            let exact = reqs[rank - 1].0;
            let got = p.latency.quantile_ppm(ppm).unwrap();
            assert!(got.abs_diff(exact) * 256 <= exact, "{key:?} ppm {ppm}: {got} vs {exact}");
        }
        let ex = |r: &(u64, bool, String)| Exemplar { trace_id: r.2.clone(), latency_ns: r.0, error: r.1 };
        let mut all: Vec<Exemplar> = reqs.iter().map(ex).collect();
        all.sort();
        let slowest: Vec<_> = all.iter().take(3).cloned().collect();
        let failed: Vec<_> = all.iter().filter(|e| e.error).take(3).cloned().collect();
        let mut expected: Vec<_> = slowest.into_iter().chain(failed).collect();
        metering::sla::record::bound_exemplars(&mut expected);
        assert_eq!(p.exemplars, expected, "{key:?}");
    }
    // The hand-known answers: /pay's p50 is 500 ms, p99 990 ms; its slowest and failed.
    if grouping == SlaGrouping::Route {
        let pay = points.iter().find(|p| p.route.as_deref() == Some("/pay")).unwrap();
        assert_eq!((pay.requests, pay.errors), (1000, 10));
        assert!(pay.latency.quantile(0.5).unwrap().abs_diff(500_000_000) * 256 <= 500_000_000);
        assert!(pay.latency.quantile(0.99).unwrap().abs_diff(990_000_000) * 256 <= 990_000_000);
        let ids: Vec<(u64, bool)> = pay.exemplars.iter().map(|e| (e.latency_ns / 1_000_000, e.error)).collect();
        assert_eq!(ids, [(1000, true), (999, false), (998, false), (900, true), (800, true)]);
        assert_eq!(pay.exemplars[0].trace_id, format!("{:032x}", 1000));
    }
}

fn queries() -> Vec<SlaQuery> {
    let mut out = Vec::new();
    for g in [Granularity::Hour, Granularity::Day, Granularity::Month] {
        for grouping in [SlaGrouping::Route, SlaGrouping::Service] {
            let mut q = SlaQuery::new(FROM, TO);
            q.granularity = g;
            q.grouping = grouping;
            q.validate().unwrap();
            out.push(q);
        }
    }
    out
}

#[tokio::test]
async fn sla_rows_merge_exactly_on_18_16() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("sla").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    assert_eq!(migrate(&store).await.unwrap().dialect, Dialect::Legacy);
    let insert = insert_sla(&db).unwrap();
    ch.insert_rowbinary(&insert, encoded().into()).await.unwrap();
    // The retried batch is stored twice until parts merge; reads must not care.
    let stored = server.query(&format!("SELECT count() FROM {db}.sla FORMAT TSV")).unwrap();
    assert!(stored.trim().parse::<u64>().unwrap() > 15, "{stored}");
    for q in queries() {
        let points = query_sla(&store, &q).await.unwrap();
        assert!(points.iter().all(|p| p.start >= FROM && p.end <= TO));
        check(&points, q.grouping);
    }
    // Filters: one tenant, one service; minute buckets add up to the hour.
    let mut q = SlaQuery::new(FROM, TO);
    q.tenant = Some("globex".into());
    let points = query_sla(&store, &q).await.unwrap();
    assert_eq!((points.len(), points[0].requests), (1, 20));
    q.tenant = Some("acme".into());
    q.service = Some("checkout".into());
    q.granularity = Granularity::Minute;
    let points = query_sla(&store, &q).await.unwrap();
    assert_eq!(points.len(), 10, "two routes × five minutes");
    assert_eq!(points.iter().map(|p| p.requests).sum::<u64>(), 1300);
    // After a merge of parts the answers are the same.
    server.query(&format!("OPTIMIZE TABLE {db}.sla FINAL")).unwrap();
    for q in queries() {
        check(&query_sla(&store, &q).await.unwrap(), q.grouping);
    }
}

#[test]
fn sla_ddl_bytes_and_reads_run_on_the_modern_dialect() {
    let mut chdb = Chdb::start().unwrap();
    for (db, dialect) in [("modern", Dialect::Modern), ("legacy", Dialect::Legacy)] {
        testkit::usage::chdb_migrate(&mut chdb, db, dialect);
        testkit::usage::chdb_insert_rowbinary(
            &mut chdb,
            &format!("{db}.sla"),
            &insert_sla(db).unwrap(),
            &SLA_ROW.structure(),
            &encoded(),
        );
        for q in queries() {
            let out = chdb.query(q.to_sql(db).unwrap().as_str()).unwrap();
            check(&q.parse_rows(parse_tsv(&out)).unwrap(), q.grouping);
        }
        // Folded (the retried batch's copies collapse), then read as settled rows and a tail
        // holding every batch resent: the same answers.
        let to = OffsetDateTime::now_utc().unix_timestamp() as u32 + 2;
        let plan = metering::settle::FoldPlan::new(0, to, None);
        for table in metering::settle::Table::ALL {
            chdb.query(plan.statement(db, table, (0, u32::MAX)).unwrap().as_str()).unwrap();
        }
        chdb.query(plan.commit(db, 0, 0, Some((0, u32::MAX))).unwrap().as_str()).unwrap();
        testkit::usage::chdb_insert_rowbinary(
            &mut chdb,
            &format!("{db}.sla.resent"),
            &insert_sla(db).unwrap(),
            &SLA_ROW.structure(),
            &encoded(),
        );
        let settled = metering::settle::Watermark {
            upto: to,
            tail_from: 0,
            tail: metering::settle::Tail::Unknown,
            rolled: None,
            late: None,
        };
        for q in queries() {
            let q = SlaQuery { settled: metering::settle::Settled::At(Some(settled)), ..q };
            let out = chdb.query(q.to_sql(db).unwrap().as_str()).unwrap();
            check(&q.parse_rows(parse_tsv(&out)).unwrap(), q.grouping);
        }
        // Rolled up by hour: the same answers from the hourly rows.
        let days = metering::settle::Days { from: FROM.unix_timestamp() as u32, to: TO.unix_timestamp() as u32 };
        let rollup = metering::settle::RollupPlan { id: "rollup-1".into(), days, upto: to };
        chdb.query(rollup.statement(db, metering::settle::Table::Sla).unwrap().as_str()).unwrap();
        chdb.query(rollup.commit(db, 0).unwrap().as_str()).unwrap();
        let rolled = metering::settle::Watermark { rolled: Some(days), late: Some((days.from, days.to)), ..settled };
        for q in queries() {
            let q = SlaQuery { settled: metering::settle::Settled::At(Some(rolled)), ..q };
            let sql = q.to_sql(db).unwrap();
            assert!(sql.as_str().contains("sla_settled_hourly") && sql.as_str().contains("arrayFirst"), "{q:?}");
            let out = chdb.query(sql.as_str()).unwrap();
            check(&q.parse_rows(parse_tsv(&out)).unwrap(), q.grouping);
        }
    }
}

/// Three days of May in 37 spread hours: two tenants, two services, two routes, latencies
/// from a fixed generator, 1 in 13 failed; the trace id starts with the request's hour.
fn spread_batches() -> Vec<(&'static str, u64, Vec<SlaRecord>)> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut out: Vec<_> = (1..=3).map(|seq| ("collector-a", seq, Vec::new())).collect();
    for i in 0..6000u64 {
        let hour = (i * 37 / 6000) * 2; // 0, 2, ..., 72: three days
        let at = datetime!(2026-05-07 00:00 UTC)
            + time::Duration::hours(hour as i64)
            + time::Duration::seconds((next() % 3600) as i64);
        let (tenant, service, route) = [
            ("acme", "checkout", "/pay"),
            ("acme", "checkout", "/cart"),
            ("acme", "search", ""),
            ("globex", "api", "/"),
        ][i as usize % 4];
        let mut r = SlaRecord::new(tenant, service, route, at);
        r.observe(1_000 + next() % 2_000_000_000, next() % 13 == 0, &format!("{hour:04}{i:028x}"));
        out[i as usize % 3].2.push(r);
    }
    out
}

#[tokio::test]
async fn a_seals_hourly_roll_up_answers_as_live_rows_do() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("sla_sealed").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    let all = spread_batches();
    let mut bytes = Vec::new();
    for (source, seq, records) in all.iter().chain(std::iter::once(&all[0])) {
        encode_sla_batch(source, *seq, records, &mut bytes).unwrap();
    }
    ch.insert_rowbinary(&insert_sla(&db).unwrap(), bytes.into()).await.unwrap();
    let period =
        metering::seal::seal(&store, metering::pricing::BillingMonth::parse("2026-05").unwrap(), TO).await.unwrap();
    let mut queries = queries();
    queries.extend([Granularity::Minute].map(|g| SlaQuery { granularity: g, ..SlaQuery::new(FROM, TO) }));
    let mut day_failed_hours = Vec::new();
    for q in queries {
        let live = query_sla(&store, &q).await.unwrap();
        let sealed_q = SlaQuery { sealed: Some(period.sealed()), ..q.clone() };
        let hourly = sealed_q.to_sql(&db).unwrap().as_str().contains(".sealed_sla_hourly");
        assert_eq!(hourly, q.granularity != Granularity::Minute, "{q:?}");
        let sealed = query_sla(&store, &sealed_q).await.unwrap();
        assert_eq!((live.len(), live.iter().map(|p| p.requests).sum::<u64>()), (sealed.len(), 6000), "{q:?}");
        assert_eq!(sealed, live, "{q:?}");
        if q.granularity == Granularity::Day {
            for p in &live {
                let hours: std::collections::BTreeSet<&str> =
                    p.exemplars.iter().filter(|e| e.error).map(|e| &e.trace_id[..4]).collect();
                day_failed_hours.push(hours.len());
            }
        }
    }
    // A day's failed exemplars come from several hours: the roll-up's per-hour picks were merged.
    assert!(day_failed_hours.iter().any(|&n| n >= 2), "{day_failed_hours:?}");
    let v = metering::seal::verify(&store, metering::pricing::BillingMonth::parse("2026-05").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(v.verified && v.rollups_verified, "{v:?}");
}

/// Encodes `batches` (source, seq, records) as one INSERT's bytes.
fn encode(batches: &[(&'static str, u64, Vec<SlaRecord>)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (source, seq, records) in batches {
        encode_sla_batch(source, *seq, records, &mut bytes).unwrap();
    }
    bytes
}

#[tokio::test]
async fn settled_sla_reads_answer_exactly_through_resends_and_dropped_rows() {
    use metering::settle::{self, FoldOptions};
    let now = FoldOptions { grace: Duration::ZERO, ..FoldOptions::default() };
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("sla_settle").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    let insert = insert_sla(&db).unwrap();
    let all = batches();
    let check_all = |when: &'static str| {
        let store = store.clone();
        async move {
            for q in queries() {
                let points = query_sla(&store, &q).await.unwrap();
                check(&points, q.grouping);
            }
            eprintln!("exact: {when}");
        }
    };
    // Two batches folded, two in the tail with a resend of a folded one.
    ch.insert_rowbinary(&insert, encode(&all[..2]).into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fold = settle::fold(&store, now).await.unwrap().expect("a fold");
    assert!(fold.batches > 0 && fold.rows > 0, "{fold:?}");
    // The folded days rolled up: reads of hours, days and the month take hourly rows.
    let mut rollups = 0;
    while settle::roll(&store).await.unwrap().is_some() {
        rollups += 1;
    }
    assert!(rollups >= 1);
    // The rest is late usage for rolled-up days: in the tail, then folded (found by the minutes it recorded).
    ch.insert_rowbinary(&insert, encode(&all[1..]).into()).await.unwrap();
    check_all("settled and the tail").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fold = settle::fold(&store, now).await.unwrap().expect("a second fold");
    let late = server.query(&format!(
        "SELECT count() FROM {db}.settle_folds WHERE fold = '{}' AND window_from < (SELECT max(day_to) FROM {db}.settle_rollups)",
        fold.id
    ));
    assert_eq!(late.unwrap().trim(), "1", "the fold recorded minutes in rolled-up days");
    check_all("all settled").await;
    // The raw rows dropped, then every batch resent: still exact.
    server.query(&format!("ALTER TABLE {db}.sla DROP PARTITION 202605")).unwrap();
    check_all("from settled rows alone").await;
    ch.insert_rowbinary(&insert, encode(&all).into()).await.unwrap();
    check_all("every batch resent after the drop").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fold = settle::fold(&store, now).await.unwrap().expect("a third fold");
    assert_eq!((fold.batches, fold.rows), (0, 0), "resends are never taken again");
    check_all("after a fold of resends").await;
    // A fold without a margin leaves an empty tail: SLA reads are settled rows alone.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    settle::fold(&store, FoldOptions { margin: Duration::ZERO, ..now }).await.unwrap().expect("a quiet fold");
    let w = settle::Watermark::read(&store).await.unwrap().unwrap();
    let w = w.with_tail(&store, settle::Table::Sla, None, (0, u32::MAX)).await.unwrap();
    assert_eq!(w.tail, settle::Tail::Empty, "{w:?}");
    check_all("settled rows alone, no tail").await;
}

/// Hours of two tenants and two services with known requests and errors: some without errors,
/// equal ratios with different counts (9/30 and 6/20), and ties broken by the hour.
fn hourly() -> Vec<(&'static str, &'static str, OffsetDateTime, u64, u64)> {
    let mut out = Vec::new();
    for (t, tenant) in ["acme", "globex"].into_iter().enumerate() {
        for h in 0..12u64 {
            for (s, service) in ["api", "web"].into_iter().enumerate() {
                let requests = 10 * (1 + (h + s as u64 + t as u64) % 3);
                let errors = (h * 5 + s as u64 * 3 + t as u64) % 4 * requests / 10 + u64::from(h % 5 == 1);
                out.push((tenant, service, FROM + time::Duration::hours(h as i64), requests, errors));
            }
        }
    }
    out
}

/// `worst`, computed here: each tenant's hours with errors, lowest availability first (exactly),
/// then more errors, then earlier, then by service; at most `n`.
fn worst_expected(n: usize) -> Vec<(String, String, OffsetDateTime, u64, u64)> {
    let mut hours: Vec<_> = hourly().into_iter().filter(|h| h.4 > 0).collect();
    hours.sort_by(|a, b| {
        a.0.cmp(b.0)
            .then((u128::from(b.4) * u128::from(a.3)).cmp(&(u128::from(a.4) * u128::from(b.3))))
            .then(b.4.cmp(&a.4))
            .then(a.2.cmp(&b.2))
            .then(a.1.cmp(b.1))
    });
    let mut out = Vec::new();
    for tenant in ["acme", "globex"] {
        let of: Vec<_> = hours.iter().filter(|h| h.0 == tenant).take(n).collect();
        out.extend(of.into_iter().map(|h| (h.0.to_owned(), h.1.to_owned(), h.2, h.3, h.4)));
    }
    out
}

fn hourly_encoded() -> Vec<u8> {
    let mut records = Vec::new();
    for (tenant, service, at, requests, errors) in hourly() {
        let mut r = SlaRecord::new(tenant, service, "", at);
        for i in 0..requests {
            r.observe(1_000_000 * (i + 1), i < errors, &format!("{i:032x}"));
        }
        records.push(r);
    }
    let mut bytes = Vec::new();
    encode_sla_batch("collector-a", 1, &records, &mut bytes).unwrap();
    bytes
}

fn worst_query() -> SlaQuery {
    SlaQuery {
        granularity: Granularity::Hour,
        grouping: SlaGrouping::Service,
        worst: Some(3),
        ..SlaQuery::new(FROM, TO)
    }
}

fn worst_got(points: &[SlaPoint]) -> Vec<(String, String, OffsetDateTime, u64, u64)> {
    points.iter().map(|p| (p.tenant.clone(), p.service.clone(), p.start, p.requests, p.errors)).collect()
}

#[tokio::test]
async fn the_worst_hours_read_returns_each_tenants_lowest_availability_hours_in_order() {
    let want = worst_expected(3);
    assert_eq!(want.len(), 6);
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("worst").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    ch.insert_rowbinary(&insert_sla(&db).unwrap(), hourly_encoded().into()).await.unwrap();
    assert_eq!(worst_got(&query_sla(&store, &worst_query()).await.unwrap()), want);

    let mut chdb = Chdb::start().unwrap();
    testkit::usage::chdb_migrate(&mut chdb, "modern", Dialect::Modern);
    testkit::usage::chdb_insert_rowbinary(
        &mut chdb,
        "modern.sla",
        &insert_sla("modern").unwrap(),
        &SLA_ROW.structure(),
        &hourly_encoded(),
    );
    let q = worst_query();
    let out = chdb.query(q.to_sql("modern").unwrap().as_str()).unwrap();
    assert_eq!(worst_got(&q.parse_rows(parse_tsv(&out)).unwrap()), want);
}
