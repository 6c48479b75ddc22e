//! The modern ClickHouse dialect, through chDB (ClickHouse 26.x in process):
//! every DDL statement, the writer's exact RowBinary bytes and every roll-up
//! query run there too, with the same exact results as on 18.16.

use metering::clickhouse::client::parse_tsv;
use metering::meter::Catalog;
use metering::store::migrate::applied_versions;
use metering::store::rollup::{Granularity, UsageQuery};
use metering::store::Dialect;
use testkit::usage::{actual, dataset, expected, FROM, TO};
use testkit::Chdb;

fn rollup(chdb: &mut Chdb, db: &str, q: &UsageQuery) -> Vec<metering::store::rollup::UsagePoint> {
    let out = chdb.query(q.to_sql(db).unwrap().as_str()).unwrap();
    q.parse_rows(parse_tsv(&out)).unwrap()
}

#[test]
fn ddl_writer_bytes_and_rollups_run_on_the_modern_dialect() {
    let mut chdb = Chdb::start().unwrap();
    let version = chdb.version().unwrap();
    assert_eq!(Dialect::from_version(&version), Dialect::Modern, "chDB {version}");
    // Both dialects' DDL: a server upgraded from 18.16 keeps the legacy tables.
    for (db, dialect) in [("modern", Dialect::Modern), ("legacy", Dialect::Legacy)] {
        testkit::usage::chdb_migrate(&mut chdb, db, dialect);
        assert_eq!(chdb.query(applied_versions(db).unwrap().as_str()).unwrap(), "1\n2\n3\n4\n5\n6\n7\n8\n9\n");
        let data = dataset();
        // Retries of a third of the batches, in the same INSERT.
        testkit::usage::chdb_insert_usage(
            &mut chdb,
            db,
            data.iter().chain(data.iter().step_by(3)),
            &Catalog::builtin(),
        );
        for g in [Granularity::Minute, Granularity::Hour, Granularity::Day, Granularity::Month] {
            for by_service in [false, true] {
                let mut q = UsageQuery::new(FROM, TO);
                q.granularity = g;
                q.group_by_service = by_service;
                q.limit = 10_000;
                let want = expected(&data, g, by_service, None, FROM, TO);
                assert_eq!(actual(&rollup(&mut chdb, db, &q)), want, "{db}: {g:?} by service {by_service}");
                // Page by page, and for one tenant.
                q.limit = 50;
                let mut pages = Vec::new();
                loop {
                    let page = rollup(&mut chdb, db, &q);
                    let Some(last) = page.last() else { break };
                    q.after = Some(last.key.clone());
                    pages.extend(page);
                }
                assert_eq!(actual(&pages), want, "{db}: paged {g:?}");
                let mut q = UsageQuery::new(FROM, TO);
                q.granularity = g;
                q.tenant = Some("initech".into());
                let want = expected(&data, g, false, Some("initech"), FROM, TO);
                assert_eq!(actual(&rollup(&mut chdb, db, &q)), want);
                q.meter = Some("span_bytes".into());
                let want: std::collections::BTreeMap<_, _> =
                    want.into_iter().filter(|(k, _)| k.1 == "span_bytes").collect();
                assert!(!want.is_empty());
                assert_eq!(actual(&rollup(&mut chdb, db, &q)), want);
            }
        }
    }
}

/// Settlement's statements on the modern dialect: folds, and reads of settled rows with the
/// unsettled tail, equal the naive sums through resends of folded batches.
#[test]
fn settlement_runs_on_the_modern_dialect() {
    use metering::settle::{FoldPlan, Table, Watermark};

    let mut chdb = Chdb::start().unwrap();
    let db = "settle";
    testkit::usage::chdb_migrate(&mut chdb, db, Dialect::Modern);
    let data = dataset();
    let (first, second) = data.split_at(20);
    let check = |chdb: &mut Chdb, sent: &[metering::record::UsageBatch], settled: Option<Watermark>, when: &str| {
        for g in [Granularity::Minute, Granularity::Day] {
            for by_service in [false, true] {
                let mut q = UsageQuery::new(FROM, TO);
                q.granularity = g;
                q.group_by_service = by_service;
                q.limit = 10_000;
                q.settled = metering::settle::Settled::At(settled);
                let want = expected(sent, g, by_service, None, FROM, TO);
                assert_eq!(actual(&rollup(chdb, db, &q)), want, "{when}: {g:?} by service {by_service}");
            }
        }
    };
    let fold = |chdb: &mut Chdb, plan: &FoldPlan| -> Watermark {
        // Every minute: the journal's bounds matter for cost, not for what a fold takes.
        let minutes = (0, u32::MAX);
        chdb.query(plan.statement(db, Table::Usage, minutes).unwrap().as_str()).unwrap();
        let counts = chdb.query(plan.counts(db, Table::Usage, minutes).unwrap().as_str()).unwrap();
        let (batches, rows) = counts.trim().split_once('\t').unwrap();
        let (batches, rows) = (batches.parse().unwrap(), rows.parse().unwrap());
        chdb.query(plan.commit(db, batches, rows, Some(minutes)).unwrap().as_str()).unwrap();
        Watermark {
            upto: plan.to,
            tail_from: plan.from,
            tail: metering::settle::Tail::Unknown,
            rolled: None,
            late: None,
        }
    };
    let now = || time::OffsetDateTime::now_utc().unix_timestamp() as u32;

    testkit::usage::chdb_insert_usage(&mut chdb, db, first, &Catalog::builtin());
    let first_fold = FoldPlan::new(0, now() + 2, None);
    let w = fold(&mut chdb, &first_fold);
    check(&mut chdb, first, Some(w), "after the first fold");
    // Resends of every folded batch, and new batches, in one INSERT.
    testkit::usage::chdb_insert_usage(&mut chdb, db, first.iter().chain(second), &Catalog::builtin());
    check(&mut chdb, &data, Some(w), "resends in the tail");
    let w = fold(&mut chdb, &FoldPlan::new(w.upto - 3600, now() + 4, Some(w)));
    check(&mut chdb, &data, Some(w), "after the second fold");
    let taken = chdb
        .query(&format!("SELECT count() FROM {db}.usage_settled WHERE meter = '' AND fold != '{}'", first_fold.id))
        .unwrap();
    let second_ids: std::collections::BTreeSet<_> = second
        .iter()
        .flat_map(|b| {
            b.records.iter().map(move |r| (r.tenant.clone(), b.source_id.clone(), b.seq, r.time.unix_timestamp() / 60))
        })
        .collect();
    assert_eq!(taken.trim(), second_ids.len().to_string(), "the resends were not taken again");

    // The days rolled up: day reads take the rolled-up rows, minute reads the folds' rows.
    let days = metering::settle::Days { from: FROM.unix_timestamp() as u32, to: TO.unix_timestamp() as u32 };
    let plan = metering::settle::RollupPlan { id: "rollup-1".into(), days, upto: w.upto };
    chdb.query(plan.statement(db, Table::Usage).unwrap().as_str()).unwrap();
    let rows: u64 = chdb.query(plan.count(db, Table::Usage).unwrap().as_str()).unwrap().trim().parse().unwrap();
    assert!(rows > 0);
    chdb.query(plan.commit(db, rows).unwrap().as_str()).unwrap();
    check(&mut chdb, &data, Some(Watermark { rolled: Some(days), ..w }), "rolled up");
    // The read of late folds' minute rows runs too (none are late: every fold is in the roll-up).
    let late = Watermark { rolled: Some(days), late: Some((days.from, days.to)), ..w };
    check(&mut chdb, &data, Some(late), "rolled up, with late folds' rows");
}
