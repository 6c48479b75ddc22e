//! The usage store against a real ClickHouse 18.16 server.

use metering::store::Store;
use std::time::Duration;

use metering::clickhouse::{ClickHouse, Sql};
use metering::meter::Catalog;
use metering::record::{RecordProblem, TenantError, UsageBatch, UsageRecord};
use metering::store::migrate::migrate;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use metering::store::writer::UsageWriter;
use metering::store::Dialect;
use rust_decimal::Decimal;
use testkit::usage::{actual, dataset, expected, FROM, TO};
use testkit::ClickHouseServer;
use time::macros::datetime;

async fn setup(server: &ClickHouseServer) -> (ClickHouse, String) {
    let db = server.database("store").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    (ch, db)
}

async fn write_all(ch: &ClickHouse, db: &str, batches: &[UsageBatch]) {
    let mut writer = UsageWriter::new(ch.clone(), db, Catalog::builtin()).unwrap();
    for b in batches {
        writer.push(b).unwrap();
    }
    writer.flush().await.unwrap();
}

fn query(g: Granularity, by_service: bool, tenant: Option<&str>) -> UsageQuery {
    let mut q = UsageQuery::new(FROM, TO);
    q.granularity = g;
    q.group_by_service = by_service;
    q.tenant = tenant.map(str::to_owned);
    q.limit = 10_000;
    q
}

#[tokio::test]
async fn rollups_equal_independent_sums() {
    let server = ClickHouseServer::start().unwrap();
    let (ch, db) = setup(&server).await;
    let store = Store::new(ch.clone(), &db);
    let data = dataset();
    write_all(&ch, &db, &data).await;
    for g in [Granularity::Minute, Granularity::Hour, Granularity::Day, Granularity::Month] {
        for by_service in [false, true] {
            for tenant in [None, Some("globex")] {
                let q = query(g, by_service, tenant);
                q.validate(&Catalog::builtin()).unwrap();
                let got = actual(&query_usage(&store, &q).await.unwrap());
                let want = expected(&data, g, by_service, tenant, FROM, TO);
                assert!(!want.is_empty());
                assert_eq!(got, want, "granularity {g:?}, by service {by_service}, tenant {tenant:?}");
            }
        }
    }
    // A narrower window clips buckets: February only, by month, is one bucket per series.
    let mut q = query(Granularity::Month, false, None);
    q.from = datetime!(2026-02-01 00:00 UTC);
    q.to = datetime!(2026-03-01 00:00 UTC);
    let points = query_usage(&store, &q).await.unwrap();
    assert_eq!(actual(&points), expected(&data, Granularity::Month, false, None, q.from, q.to));
    assert!(points.iter().all(|p| p.start == q.from && p.end == q.to));
    // Meter filter and units.
    let mut q = query(Granularity::Month, false, Some("acme"));
    q.meter = Some("cpu_seconds".into());
    let points = query_usage(&store, &q).await.unwrap();
    assert!(!points.is_empty());
    assert!(points.iter().all(|p| p.meter == "cpu_seconds" && p.unit == "seconds" && p.tenant == "acme"));
}

#[tokio::test]
async fn pages_concatenate_to_the_whole() {
    let server = ClickHouseServer::start().unwrap();
    let (ch, db) = setup(&server).await;
    let store = Store::new(ch.clone(), &db);
    let data = dataset();
    write_all(&ch, &db, &data).await;
    let mut q = query(Granularity::Day, true, None);
    q.limit = 7;
    let mut all = Vec::new();
    loop {
        let page = query_usage(&store, &q).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        q.after = Some(last.key.clone());
        all.extend(page);
    }
    assert_eq!(actual(&all), expected(&data, Granularity::Day, true, None, FROM, TO));
}

#[tokio::test]
async fn a_retried_batch_counts_once() {
    let server = ClickHouseServer::start().unwrap();
    let (ch, db) = setup(&server).await;
    let store = Store::new(ch.clone(), &db);
    let data = dataset();
    let mut writer = UsageWriter::new(ch.clone(), &db, Catalog::builtin()).unwrap();
    // Everything once, then a third of the batches again in a later insert (a retry after a
    // timeout whose first attempt had landed), and one batch twice within one insert.
    for b in &data {
        writer.push(b).unwrap();
    }
    writer.push(&data[3]).unwrap();
    writer.flush().await.unwrap();
    for b in data.iter().step_by(3) {
        writer.push(b).unwrap();
    }
    writer.flush().await.unwrap();
    let q = query(Granularity::Month, false, None);
    let want = expected(&data, Granularity::Month, false, None, FROM, TO);
    assert_eq!(actual(&query_usage(&store, &q).await.unwrap()), want);
    // Also after ClickHouse has collapsed the duplicates itself.
    ch.execute(&Sql::new("OPTIMIZE TABLE ").ident(&db).unwrap().push(".usage FINAL")).await.unwrap();
    assert_eq!(actual(&query_usage(&store, &q).await.unwrap()), want);
    // The same records under a new sequence number are new usage: counted again.
    let again = UsageBatch { seq: 1000, ..data[0].clone() };
    write_all(&ch, &db, &[again]).await;
    let twice = expected(&[data.clone(), vec![data[0].clone()]].concat(), Granularity::Month, false, None, FROM, TO);
    assert_eq!(actual(&query_usage(&store, &q).await.unwrap()), twice);
}

#[tokio::test]
async fn month_boundaries_are_utc_and_exact() {
    let server = ClickHouseServer::start().unwrap();
    let (ch, db) = setup(&server).await;
    let store = Store::new(ch.clone(), &db);
    let batch = UsageBatch {
        source_id: "edge".into(),
        seq: 1,
        records: vec![
            UsageRecord::new("acme", "spans", datetime!(2026-01-31 23:59:59.999 UTC), 1.into()),
            UsageRecord::new("acme", "spans", datetime!(2026-02-01 00:00:00 UTC), 10.into()),
            // 00:30 on Feb 1st in UTC+01:00 is still January 31st in UTC.
            UsageRecord::new("acme", "spans", datetime!(2026-02-01 00:30 +01:00), 100.into()),
            UsageRecord::new("acme", "spans", datetime!(2026-02-28 23:59:59.999999999 UTC), 1000.into()),
            UsageRecord::new("acme", "spans", datetime!(2026-03-01 00:00 UTC), 10000.into()),
        ],
    };
    write_all(&ch, &db, &[batch]).await;
    let points = query_usage(&store, &query(Granularity::Month, false, None)).await.unwrap();
    let got: Vec<_> = points.iter().map(|p| (p.start, p.end, p.value)).collect();
    assert_eq!(
        got,
        vec![
            (datetime!(2026-01-01 00:00 UTC), datetime!(2026-02-01 00:00 UTC), Decimal::from(101)),
            (datetime!(2026-02-01 00:00 UTC), datetime!(2026-03-01 00:00 UTC), Decimal::from(1010)),
            (datetime!(2026-03-01 00:00 UTC), datetime!(2026-04-01 00:00 UTC), Decimal::from(10000)),
        ]
    );
    let mut q = query(Granularity::Minute, false, None);
    q.to = datetime!(2026-02-01 00:00 UTC);
    let points = query_usage(&store, &q).await.unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!((points[1].start, points[1].value), (datetime!(2026-01-31 23:59 UTC), Decimal::from(1)));
}

#[tokio::test]
async fn bad_input_is_refused_precisely_and_loses_nothing_else() {
    let server = ClickHouseServer::start().unwrap();
    let (ch, db) = setup(&server).await;
    let store = Store::new(ch.clone(), &db);
    let t = datetime!(2026-03-05 12:00 UTC);
    let good =
        UsageBatch { source_id: "s".into(), seq: 1, records: vec![UsageRecord::new("acme", "spans", t, 5.into())] };
    let mut writer = UsageWriter::new(ch.clone(), &db, Catalog::builtin()).unwrap();
    writer.push(&good).unwrap();
    let cases = [
        (UsageRecord::new("acme", "spanz", t, 1.into()), "unknown meter \"spanz\""),
        (UsageRecord::new("x'); DROP TABLE usage; --", "spans", t, 1.into()), "contains '\\''"),
        (UsageRecord::new("acme", "spans", t, (-3).into()), "value -3 is negative"),
    ];
    for (bad, message) in cases {
        let batch = UsageBatch {
            source_id: "s".into(),
            seq: 2,
            records: vec![UsageRecord::new("acme", "spans", t, 7.into()), bad],
        };
        let err = writer.push(&batch).unwrap_err();
        assert_eq!(err.index, 1);
        assert_eq!((err.source_id.as_str(), err.seq), ("s", 2));
        let text = err.to_string();
        assert!(text.starts_with("batch s#2, record 1: ") && text.contains(message), "{text}");
    }
    let quoted =
        UsageBatch { source_id: "s".into(), seq: 3, records: vec![UsageRecord::new("a'b", "spans", t, 1.into())] };
    assert_eq!(
        writer.push(&quoted).unwrap_err().reason,
        RecordProblem::Tenant(TenantError::BadChar { tenant: "a'b".into(), ch: '\'' })
    );
    assert_eq!(writer.pending_rows(), 1);
    assert_eq!(writer.flush().await.unwrap(), 1);
    let points = query_usage(&store, &query(Granularity::Month, false, None)).await.unwrap();
    assert_eq!(points.iter().map(|p| p.value).collect::<Vec<_>>(), vec![Decimal::from(5)]);
}

#[tokio::test]
async fn hostile_strings_stay_literals() {
    // Validation refuses such tenants before a query is built; this proves the
    // escaping beneath it holds on a real server even if validation were bypassed.
    let server = ClickHouseServer::start().unwrap();
    let (ch, db) = setup(&server).await;
    let store = Store::new(ch.clone(), &db);
    write_all(&ch, &db, &dataset()).await;
    for hostile in ["' OR 1=1 --", "\\' OR 1=1 --", "x\\", "a\nb", "') UNION ALL SELECT 1 --"] {
        let q = query(Granularity::Month, false, Some(hostile));
        assert!(q.validate(&Catalog::builtin()).is_err(), "{hostile:?}");
        assert_eq!(query_usage(&store, &q).await.unwrap(), vec![], "{hostile:?}");
    }
    assert_eq!(server.query(&format!("SELECT count() > 0 FROM {db}.usage")).unwrap().trim(), "1");
}

#[tokio::test]
async fn migrations_run_twice_are_a_no_op() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("mig").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    let first = migrate(&store).await.unwrap();
    assert_eq!(
        (first.dialect, first.applied, first.skipped),
        (Dialect::Legacy, vec![1, 2, 3, 4, 5, 6, 7, 8, 9], vec![])
    );
    let second = migrate(&store).await.unwrap();
    assert_eq!((second.applied, second.skipped), (vec![], vec![1, 2, 3, 4, 5, 6, 7, 8, 9]));
    let recorded = server
        .query(&format!("SELECT version, name, dialect FROM {db}.tally_migrations ORDER BY version FORMAT TSV"))
        .unwrap();
    assert_eq!(
        recorded,
        "1\tusage table\tlegacy\n2\tsla table\tlegacy\n3\tusage.unique_value and usage.aggregation for custom meters\tlegacy\n4\tsealed_usage, sealed_sla and periods tables for sealed months\tlegacy\n\
         5\tsealed_usage_daily and sealed_sla_hourly roll-ups of seals, periods.rollups\tlegacy\n\
         6\tusage_settled, sla_settled and settle_folds for settled usage\tlegacy\n\
         7\tseal_verifications: every verification of a seal, served to readers\tlegacy\n\
         8\tusage_settled_daily, sla_settled_hourly and settle_rollups: settled rows rolled up by day\tlegacy\n\
         9\tusage_inserts and sla_inserts, the insert journals folds find batches by; settle_folds minutes\tlegacy\n"
    );
    // A database that does not exist yet is created.
    let fresh = format!("{db}_new");
    assert_eq!(migrate(&Store::new(ch.clone(), &fresh)).await.unwrap().applied, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // A run interrupted after migration 3's ALTER but before recording it: the next run
    // finds the columns in place and records it (18.16 has no ADD COLUMN IF NOT EXISTS).
    let interrupted = format!("{db}_cut");
    for statement in metering::store::migrate::bootstrap(&interrupted).unwrap() {
        ch.execute(&statement).await.unwrap();
    }
    for m in metering::store::migrate::MIGRATIONS {
        for statement in (m.statements)(&interrupted, Dialect::Legacy).unwrap() {
            ch.execute(&statement).await.unwrap();
        }
    }
    for m in &metering::store::migrate::MIGRATIONS[..2] {
        ch.execute(&metering::store::migrate::record_applied(&interrupted, m, Dialect::Legacy).unwrap()).await.unwrap();
    }
    let resumed = migrate(&Store::new(ch.clone(), &interrupted)).await.unwrap();
    assert_eq!((resumed.applied, resumed.skipped), (vec![3, 4, 5, 6, 7, 8, 9], vec![1, 2]));
    // A bad database name is refused before anything runs.
    let err = migrate(&Store::new(ch.clone(), "tally; DROP DATABASE x")).await.unwrap_err();
    assert!(err.to_string().contains("is not a valid ClickHouse identifier"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_error_and_keeps_the_buffer() {
    let server = ClickHouseServer::start().unwrap();
    let (_, db) = setup(&server).await;
    // Nothing listens on port 9 of loopback.
    let dead = ClickHouse::new("http://127.0.0.1:9", Duration::from_secs(2)).unwrap();
    let mut writer = UsageWriter::new(dead, &db, Catalog::builtin()).unwrap();
    let batch =
        UsageBatch { source_id: "s".into(), seq: 1, records: vec![UsageRecord::new("acme", "spans", FROM, 1.into())] };
    writer.push(&batch).unwrap();
    let err = writer.flush().await.unwrap_err();
    match err {
        metering::store::StoreError::ClickHouse(e) => assert!(e.is_retryable(), "{e}"),
        other => panic!("{other}"),
    }
    assert_eq!(writer.pending_rows(), 1);
}

/// ClickHouse closes a keep-alive connection idle for `keep_alive_timeout` (10 s by default, 3 s in
/// Debian's shipped config); a client reusing one just as the server closes it got "connection
/// closed before message completed" (1 call in 8 spaced at ~10 s, before idle connections were
/// dropped after 2 s). Calls spaced right around the timeout all succeed.
#[tokio::test]
async fn calls_spaced_around_the_servers_keep_alive_timeout_all_succeed() {
    let server = testkit::ClickHouseServer::start().unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(10)).unwrap();
    let mut failures = Vec::new();
    for (i, gap_ms) in [9_980, 9_995, 10_005, 10_020, 0].into_iter().enumerate() {
        if let Err(e) = ch.query_tsv(&Sql::new("SELECT 1")).await {
            failures.push(format!("call {i}: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
    }
    assert_eq!(failures, Vec::<String>::new());
}

/// The tables the migrations make hold, in order, exactly the columns the writers send
/// ([`USAGE_ROW`], [`SLA_ROW`]) plus those the server fills itself: the row layout is spelled
/// once, and the DDL of every migration is held against it here.
#[tokio::test]
async fn migrated_tables_have_the_writers_row_layout() {
    use metering::sla::schema::SLA_ROW;
    use metering::store::schema::USAGE_ROW;
    let server = ClickHouseServer::start().unwrap();
    let (_, db) = setup(&server).await;
    for (table, layout) in [("usage", USAGE_ROW), ("sla", SLA_ROW)] {
        let got = server
            .query(&format!(
                "SELECT name, type, default_kind FROM system.columns WHERE database = '{db}' AND table = '{table}'"
            ))
            .unwrap();
        let mut written = Vec::new();
        for line in got.lines() {
            let [name, ty, default_kind] = line.split('\t').collect::<Vec<_>>()[..] else { panic!("{line}") };
            if default_kind.is_empty() {
                // TabSeparated escapes the quotes of `DateTime('UTC')`.
                written.push((name.to_owned(), ty.replace("\\'", "'")));
            } else {
                assert_eq!((name, default_kind), ("inserted_at", "DEFAULT"), "{table}");
            }
        }
        let want: Vec<_> = layout.0.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        assert_eq!(written, want, "{table}");
    }
}
