//! A deterministic usage dataset, an independent, naive computation of its roll-ups, and the
//! steps that put our DDL and RowBinary rows into chDB: shared by the store, API, chDB, SLA and
//! custom-meter tests.

use std::collections::BTreeMap;

use metering::record::{UsageBatch, UsageRecord};
use metering::store::rollup::{Granularity, UsagePoint};
use rust_decimal::Decimal;
use time::macros::datetime;
use time::{Date, OffsetDateTime};

pub const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
pub const METERS: [&str; 3] = ["spans", "span_bytes", "cpu_seconds"];
pub const SERVICES: [&str; 3] = ["api", "web", ""];

/// A small linear congruential generator: the same data on every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Around 2,000 records in 40 batches from two sources, spread from
/// 2026-01-31 20:00 to 2026-03-02 (so across two month boundaries), some at
/// the last nanosecond of a month, with fractional CPU seconds.
pub fn dataset() -> Vec<UsageBatch> {
    let mut rng = Lcg(42);
    let base = datetime!(2026-01-31 20:00 UTC);
    let mut batches = Vec::new();
    for seq in 0..40u64 {
        let source = if seq % 2 == 0 { "agent-a:boot-1" } else { "agent-b:boot-7" };
        let mut records = Vec::new();
        for _ in 0..50 {
            let tenant = TENANTS[rng.next(3) as usize];
            let meter = METERS[rng.next(3) as usize];
            let service = SERVICES[rng.next(3) as usize];
            let time = match rng.next(10) {
                0 => datetime!(2026-01-31 23:59:59.999999999 UTC),
                1 => datetime!(2026-02-28 23:59:59.999 UTC),
                2 => datetime!(2026-03-01 00:00 UTC),
                _ => {
                    base + time::Duration::seconds(rng.next(30 * 86_400) as i64)
                        + time::Duration::milliseconds(rng.next(1000) as i64)
                }
            };
            let value = match meter {
                "cpu_seconds" => Decimal::new(rng.next(5_000_000_000) as i64, 9),
                "span_bytes" => Decimal::from(rng.next(1_000_000)),
                _ => Decimal::from(rng.next(1000) + 1),
            };
            records.push(UsageRecord::new(tenant, meter, time, value).with_service(service));
        }
        batches.push(UsageBatch { source_id: source.into(), seq, records });
    }
    batches
}

/// Key of an expected point: tenant, meter, service ("" unless grouped), bucket start (Unix s).
pub type Key = (String, String, String, i64);

/// The bucket containing `t`, computed without the code under test.
fn bucket(t: OffsetDateTime, g: Granularity) -> i64 {
    let s = t.unix_timestamp();
    match g {
        Granularity::Minute => s - s.rem_euclid(60),
        Granularity::Hour => s - s.rem_euclid(3600),
        Granularity::Day => s - s.rem_euclid(86_400),
        Granularity::Month => {
            Date::from_calendar_date(t.year(), t.month(), 1).unwrap().midnight().assume_utc().unix_timestamp()
        }
    }
}

/// Sums `batches` (each counted once, whatever is resent) per key within `[from, to)`.
pub fn expected(
    batches: &[UsageBatch],
    g: Granularity,
    by_service: bool,
    tenant: Option<&str>,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> BTreeMap<Key, Decimal> {
    let mut out = BTreeMap::new();
    for r in batches.iter().flat_map(|b| &b.records) {
        if r.time < from || r.time >= to || tenant.is_some_and(|t| t != r.tenant) {
            continue;
        }
        let svc = if by_service { r.service.clone() } else { String::new() };
        *out.entry((r.tenant.clone(), r.meter.clone(), svc, bucket(r.time, g))).or_insert(Decimal::ZERO) += r.value;
    }
    out
}

/// Roll-up points in the same shape.
pub fn actual(points: &[UsagePoint]) -> BTreeMap<Key, Decimal> {
    let mut out = BTreeMap::new();
    for p in points {
        let key = (p.tenant.clone(), p.meter.clone(), p.service.clone().unwrap_or_default(), i64::from(p.key.bucket));
        assert!(out.insert(key, p.value).is_none(), "duplicate point {p:?}");
    }
    out
}

pub const FROM: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
pub const TO: OffsetDateTime = datetime!(2026-04-01 00:00 UTC);

/// Runs every migration for `db` in `dialect` on chDB, recording each as `migrate` does.
pub fn chdb_migrate(chdb: &mut crate::Chdb, db: &str, dialect: metering::store::Dialect) {
    use metering::store::migrate::{bootstrap, record_applied, MIGRATIONS};
    for statement in bootstrap(db).unwrap() {
        chdb.query(statement.as_str()).unwrap();
    }
    for m in MIGRATIONS {
        for statement in (m.statements)(db, dialect).unwrap() {
            chdb.query(statement.as_str()).unwrap();
        }
        chdb.query(record_applied(db, m, dialect).unwrap().as_str()).unwrap();
    }
}

/// Encodes `batches` as the usage writer does (`catalog`'s meters) and inserts them, as one
/// INSERT, into `db.usage` on chDB.
pub fn chdb_insert_usage<'a>(
    chdb: &mut crate::Chdb,
    db: &str,
    batches: impl IntoIterator<Item = &'a UsageBatch>,
    catalog: &metering::meter::Catalog,
) {
    use metering::store::schema::{insert_usage, USAGE_ROW};
    static INSERTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = Vec::new();
    for b in batches {
        metering::store::writer::encode_batch(b, catalog, &mut bytes).unwrap();
    }
    let n = INSERTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    chdb_insert_rowbinary(chdb, &format!("{db}.usage.{n}"), &insert_usage(db).unwrap(), &USAGE_ROW.structure(), &bytes);
}

/// Inserts `rows` (our encoders' exact RowBinary bytes, of `structure`) into `insert`'s
/// table through chDB's `file()`, as the writer's INSERT sends them to a server.
pub fn chdb_insert_rowbinary(
    chdb: &mut crate::Chdb,
    name: &str,
    insert: &metering::clickhouse::sql::Sql,
    structure: &str,
    rows: &[u8],
) {
    let path = chdb.dir().join(format!("{name}.rowbinary"));
    std::fs::write(&path, rows).unwrap();
    let sql = format!(
        "INSERT INTO {} SELECT * FROM file('{}', 'RowBinary', '{}')",
        insert.as_str(),
        path.display(),
        structure.replace('\'', "\\'")
    );
    chdb.query(&sql).unwrap();
}
