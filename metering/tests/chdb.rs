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
        assert_eq!(chdb.query(applied_versions(db).unwrap().as_str()).unwrap(), "1\n2\n3\n4\n5\n");
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
