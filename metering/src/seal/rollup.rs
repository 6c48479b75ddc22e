//! A seal's roll-ups (migration 5): `sealed_usage_daily`, one row per tenant, meter,
//! UTC day, service, dimensions and unique value, and `sealed_sla_hourly`, one row per
//! tenant, service, route and UTC hour. Sealing writes them from the snapshot, tenant by
//! tenant, and a sealed month's invoices and reports read them wherever their buckets are
//! whole days (usage) or hours (SLA): about 30 rows per tenant and meter instead of 43,200.
//!
//! They are exact, not approximations: a day's sum is the sum of its minutes, its max
//! their max, and a unique-count meter keeps each distinct value per day, so the month
//! still counts each value once. An hour keeps the SLA sketch merged (`sumMap`) and the
//! exemplars any coarser read can pick: its 3 slowest, and the 3 slowest failed ones
//! among the rest (every coarser bucket's picks are among its hours' picks).
//!
//! They are derived data, outside the digest: verification recomputes them from the
//! snapshot and compares them row for row.

use time::OffsetDateTime;

use crate::clickhouse::sql::{BadIdentifier, Sql};
use crate::store::granularity::Granularity;

/// The two tables of a snapshot.
#[derive(Debug, Clone, Copy)]
pub enum Snapshot {
    /// `sealed_usage`.
    Usage,
    /// `sealed_sla`.
    Sla,
}

/// The two roll-ups of a seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup {
    /// `sealed_usage_daily`, from `sealed_usage`.
    UsageDaily,
    /// `sealed_sla_hourly`, from `sealed_sla`.
    SlaHourly,
}

impl Rollup {
    /// Both, in the order sealing writes them.
    pub const ALL: [Rollup; 2] = [Rollup::UsageDaily, Rollup::SlaHourly];

    /// The roll-up of a snapshot table.
    pub const fn of(table: Snapshot) -> Self {
        match table {
            Snapshot::Usage => Rollup::UsageDaily,
            Snapshot::Sla => Rollup::SlaHourly,
        }
    }

    /// `.table` (after the database).
    pub const fn table(self) -> &'static str {
        match self {
            Rollup::UsageDaily => ".sealed_usage_daily",
            Rollup::SlaHourly => ".sealed_sla_hourly",
        }
    }

    /// `.table` of the live rows its snapshot is sealed from.
    pub const fn live_table(self) -> &'static str {
        match self {
            Rollup::UsageDaily => ".usage",
            Rollup::SlaHourly => ".sla",
        }
    }

    /// `.table` of the snapshot it is made from.
    pub const fn snapshot_table(self) -> &'static str {
        match self {
            Rollup::UsageDaily => ".sealed_usage",
            Rollup::SlaHourly => ".sealed_sla",
        }
    }

    /// The length of its buckets, in seconds.
    pub const fn bucket_seconds(self) -> i64 {
        match self {
            Rollup::UsageDaily => 86_400,
            Rollup::SlaHourly => 3_600,
        }
    }

    const fn columns(self) -> &'static str {
        match self {
            Rollup::UsageDaily => {
                " (seal_id, tenant, meter, window_start, service, dimensions, unique_value, value, unit, aggregation) "
            }
            Rollup::SlaHourly => {
                " (seal_id, tenant, service, route, window_start, requests, errors, latency_buckets, latency_counts, \
                 exemplar_trace_ids, exemplar_latencies_ns, exemplar_errors) "
            }
        }
    }

    /// Every column but `seal_id` and `tenant`, in key order, as a comparison reads them.
    const fn projection(self) -> &'static str {
        match self {
            Rollup::UsageDaily => {
                "SELECT meter, toUInt32(window_start), service, dimensions, unique_value, toString(value), unit, \
                 aggregation FROM "
            }
            Rollup::SlaHourly => {
                "SELECT service, route, toUInt32(window_start), requests, errors, latency_buckets, latency_counts, \
                 exemplar_trace_ids, exemplar_latencies_ns, exemplar_errors FROM "
            }
        }
    }

    const fn order(self) -> &'static str {
        match self {
            Rollup::UsageDaily => " ORDER BY meter, window_start, service, dimensions, unique_value",
            Rollup::SlaHourly => " ORDER BY service, route, window_start",
        }
    }

    /// The roll-up of one tenant's snapshot, computed from it: the table's columns by name.
    fn compute(self, db: &str, seal_id: &str, tenant: &str) -> Result<Sql, BadIdentifier> {
        let sql = match self {
            Rollup::UsageDaily => Sql::new(
                "SELECT seal_id, tenant, meter, day AS window_start, service, dimensions, unique_value, v AS value, \
                 u AS unit, aggregation FROM (SELECT seal_id, tenant, meter, toStartOfDay(window_start) AS day, service, \
                 dimensions, unique_value, aggregation, if(aggregation = 'max', max(value), sum(value)) AS v, \
                 any(unit) AS u FROM ",
            )
            .ident(db)?
            .push(self.snapshot_table()),
            Rollup::SlaHourly => Sql::new("SELECT seal_id, tenant, service, route, hour AS window_start, ")
                .push(SLA_HOUR_COLUMNS)
                .push(" FROM (SELECT seal_id, tenant, service, route, toStartOfHour(window_start) AS hour, ")
                .push(SLA_HOUR_MERGE)
                .push(" FROM ")
            .ident(db)?
            .push(self.snapshot_table()),
        };
        Ok(sql.push(" WHERE seal_id = ").bind(seal_id).push(" AND tenant = ").bind(tenant).push(match self {
            Rollup::UsageDaily => {
                " GROUP BY seal_id, tenant, meter, day, service, dimensions, unique_value, aggregation)"
            }
            Rollup::SlaHourly => " GROUP BY seal_id, tenant, service, route, hour)",
        }))
    }

    /// Writes one tenant's roll-up from its snapshot.
    pub fn write(self, db: &str, seal_id: &str, tenant: &str) -> Result<Sql, BadIdentifier> {
        Ok(Sql::new("INSERT INTO ")
            .ident(db)?
            .push(self.table())
            .push(self.columns())
            .append(self.compute(db, seal_id, tenant)?))
    }

    /// One tenant's roll-up as stored, in key order.
    pub fn read_stored(self, db: &str, seal_id: &str, tenant: &str) -> Result<Sql, BadIdentifier> {
        Ok(Sql::new("")
            .push(self.projection())
            .ident(db)?
            .push(self.table())
            .push(" WHERE seal_id = ")
            .bind(seal_id)
            .push(" AND tenant = ")
            .bind(tenant)
            .push(self.order()))
    }

    /// One tenant's roll-up recomputed from its snapshot, as [`read_stored`](Self::read_stored)
    /// reads it.
    pub fn read_computed(self, db: &str, seal_id: &str, tenant: &str) -> Result<Sql, BadIdentifier> {
        Ok(Sql::new("")
            .push(self.projection())
            .push("(")
            .append(self.compute(db, seal_id, tenant)?)
            .push(")")
            .push(self.order()))
    }

    /// The tenants with rows in this roll-up of `seal_id`, by name.
    pub fn tenants(self, db: &str, seal_id: &str) -> Result<Sql, BadIdentifier> {
        Ok(Sql::new("SELECT DISTINCT tenant FROM ")
            .ident(db)?
            .push(self.table())
            .push(" WHERE seal_id = ")
            .bind(seal_id)
            .push(" ORDER BY tenant"))
    }
}

/// SLA rows merged per hour (grouped by `hour`): counts summed, sketches merged, and the
/// exemplars any coarser read picks kept — the 3 slowest, and the 3 slowest failed among the rest.
/// Seals' roll-ups and settled roll-ups both merge this way.
pub(crate) const SLA_HOUR_MERGE: &str = "sum(requests) AS req, sum(errors) AS err, \
     sumMap(latency_buckets, latency_counts) AS lat, arrayReverseSort(groupArrayArray(arrayMap((l, t, e) -> (l, t, e), \
     exemplar_latencies_ns, exemplar_trace_ids, exemplar_errors))) AS ex, \
     arrayConcat(arraySlice(ex, 1, 3), arraySlice(arrayFilter(x -> x.3 = 1, arraySlice(ex, 4)), 1, 3)) AS kept";

/// The SLA row's columns from [`SLA_HOUR_MERGE`], after `window_start`.
pub(crate) const SLA_HOUR_COLUMNS: &str = "req AS requests, err AS errors, lat.1 AS latency_buckets, \
     lat.2 AS latency_counts, arrayMap(x -> x.2, kept) AS exemplar_trace_ids, \
     arrayMap(x -> x.1, kept) AS exemplar_latencies_ns, arrayMap(x -> x.3, kept) AS exemplar_errors";

/// `CREATE TABLE IF NOT EXISTS db.sealed_usage_daily ...`.
pub fn create_usage_daily(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
        ".sealed_usage_daily (seal_id String, tenant String, meter String, window_start DateTime('UTC'), \
         service String, dimensions String, unique_value String, value Decimal(38, 9), unit String, aggregation String) \
         ENGINE = MergeTree PARTITION BY toYYYYMM(window_start) \
         ORDER BY (seal_id, tenant, meter, window_start, service, dimensions, unique_value)",
    ))
}

/// `CREATE TABLE IF NOT EXISTS db.sealed_sla_hourly ...`.
pub fn create_sla_hourly(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
        ".sealed_sla_hourly (seal_id String, tenant String, service String, route String, \
         window_start DateTime('UTC'), requests UInt64, errors UInt64, latency_buckets Array(UInt16), \
         latency_counts Array(UInt64), exemplar_trace_ids Array(String), exemplar_latencies_ns Array(UInt64), \
         exemplar_errors Array(UInt8)) ENGINE = MergeTree PARTITION BY toYYYYMM(window_start) \
         ORDER BY (seal_id, tenant, service, route, window_start)",
    ))
}

/// `periods.rollups`: 1 for seals written with their roll-ups. Seals made before migration 5
/// have none (0), and their reads keep reading the snapshot.
pub fn add_periods_rollups(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("ALTER TABLE ").ident(db)?.push(".periods ADD COLUMN rollups UInt8"))
}

/// Non-zero when `periods.rollups` exists.
pub fn has_periods_rollups(db: &str) -> Sql {
    Sql::new("SELECT count() FROM system.columns WHERE database = ")
        .bind(db)
        .push(" AND table = 'periods' AND name = 'rollups'")
}

/// A seal whose snapshot a read takes instead of live rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Its id in the snapshot tables.
    pub seal_id: String,
    /// It was written with roll-ups (migration 5), which serve reads of whole days (usage) and
    /// hours (SLA) in place of the snapshot's minutes.
    pub rollups: bool,
}

impl Sealed {
    /// The table a read of `[from, to)` in `granularity` buckets takes: `rollup` when the seal
    /// has it and its buckets tile the read, else the snapshot `rollup` is made from.
    pub(crate) fn table(
        &self,
        rollup: Rollup,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> &'static str {
        if self.rollups && granularity.tiled_by(rollup.bucket_seconds(), from, to) {
            rollup.table()
        } else {
            rollup.snapshot_table()
        }
    }
}
