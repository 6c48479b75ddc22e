//! Roll-ups: the settled rows of whole past days rolled up into one row per key and day
//! (usage) or hour (SLA), so that reads of days and months cost tenants × meters × days.
//!
//! Folds write a row per fold and key and minute: as many rows as `usage` has when a key gets
//! one batch a minute. A **roll-up** takes the days `[from, to)` (whole UTC days, each rolled
//! up once, in order) and writes, from the data rows of every fold up to the watermark it read
//! (`folds_upto`), one row per key and day into `usage_settled_daily` and per key and hour into
//! `sla_settled_hourly`, then its row in `settle_rollups`, last: it counts from that row on.
//!
//! Late usage for a rolled-up day is taken by a later fold (it is a new batch) and written as
//! minute rows, as any fold's; the fold records the minutes its rows can lie in. A read of
//! rolled-up days as of a watermark `upto` takes the rows of the roll-ups with `folds_upto <=
//! upto`, and the minute rows of the folds up to `upto` that ended after the roll-up of the row's
//! day, looked for only within the minutes those folds recorded (`Watermark::late`): each unit
//! once (a fold before a day's roll-up is in the roll-up; a fold after it, read as minute rows).
//!
//! The rolled-up days as of a watermark are one range (roll-ups run in order, one settler), so
//! a read needs only its ends: [`Days`], in [`Watermark::rolled`].

use time::OffsetDateTime;

use crate::clickhouse::sql::{BadIdentifier, Param, Sql};
use crate::store::granularity::Granularity;
use crate::store::{Store, StoreError};

use super::fold::{scalar, Table, Watermark};

/// The most days one roll-up takes (a first roll-up over a long history is done in steps).
pub const MAX_DAYS: u32 = 7;
const DAY: u32 = 86_400;

/// A range of whole UTC days, Unix seconds, `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days {
    /// The first day's start.
    pub from: u32,
    /// The end (exclusive): a day's start.
    pub to: u32,
}

impl Days {
    /// The days rolled up as of `upto` (a fold's end): `None` before the first roll-up.
    pub async fn read(store: &Store, upto: u32) -> Result<Option<Self>, StoreError> {
        let sql = Sql::new("SELECT toUInt32(min(day_from)), toUInt32(max(day_to)), count() FROM ")
            .ident(store.db())?
            .push(".settle_rollups WHERE folds_upto <= ")
            .bind(Param::DateTime(upto));
        Ok(super::fold::bounds(store, &sql).await?.map(|(from, to)| Self { from, to }))
    }

    /// `sql` (a table) followed by ` WHERE` its rows in these days.
    fn within(self, sql: Sql) -> Sql {
        sql.push(" WHERE window_start >= ")
            .bind(Param::DateTime(self.from))
            .push(" AND window_start < ")
            .bind(Param::DateTime(self.to))
    }

    /// The part of `[from, to)` (Unix seconds) in these days, if any.
    pub fn overlap(self, from: u32, to: u32) -> Option<(u32, u32)> {
        let (a, b) = (from.max(self.from), to.min(self.to));
        (a < b).then_some((a, b))
    }
}

impl Table {
    /// `.rolled-up table` (after the database).
    pub const fn rolled(self) -> &'static str {
        match self {
            Table::Usage => ".usage_settled_daily",
            Table::Sla => ".sla_settled_hourly",
        }
    }

    /// The seal roll-up whose buckets the rolled-up table has (usage by day, SLA by hour).
    pub const fn rollup(self) -> crate::seal::rollup::Rollup {
        match self {
            Table::Usage => crate::seal::rollup::Rollup::UsageDaily,
            Table::Sla => crate::seal::rollup::Rollup::SlaHourly,
        }
    }
}

/// A roll-up that was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    /// Its id.
    pub id: String,
    /// The days it rolled up.
    pub days: Days,
    /// Rolled-up rows it wrote, usage and SLA.
    pub rows: u64,
}

/// A roll-up's statements, in the order they run: [`statement`](Self::statement) for each
/// [`Table`], then [`commit`](Self::commit). Stopped before the commit, it leaves rows no read
/// counts, and the next roll-up takes the same days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupPlan {
    /// Its id.
    pub id: String,
    /// The days it rolls up.
    pub days: Days,
    /// The folds it rolls up: those that ended at or before this (a watermark's `upto`).
    pub upto: u32,
}

impl RollupPlan {
    /// `INSERT` the days' settled data rows of the folds up to `upto`, rolled up, into `table`'s
    /// rolled-up table.
    pub fn statement(&self, db: &str, table: Table) -> Result<Sql, BadIdentifier> {
        use crate::seal::rollup::{SLA_HOUR_COLUMNS, SLA_HOUR_MERGE};
        let sql = Sql::new("INSERT INTO ").ident(db)?.push(table.rolled());
        let sql = match table {
            Table::Usage => sql
                .push(
                    " (fold, tenant, meter, window_start, service, dimensions, unique_value, value, unit, aggregation) \
                     SELECT ",
                )
                .bind(self.id.as_str())
                .push(
                    ", tenant, meter, toStartOfDay(window_start) AS day, service, dimensions, unique_value, \
                     if(any(aggregation) = 'max', max(value), sum(value)), any(unit), any(aggregation) FROM ",
                ),
            Table::Sla => sql
                .push(
                    " (fold, tenant, service, route, window_start, requests, errors, latency_buckets, \
                     latency_counts, exemplar_trace_ids, exemplar_latencies_ns, exemplar_errors) SELECT ",
                )
                .bind(self.id.as_str())
                .push(", tenant, service, route, hour, ")
                .push(SLA_HOUR_COLUMNS)
                .push(" FROM (SELECT tenant, service, route, toStartOfHour(window_start) AS hour, ")
                .push(SLA_HOUR_MERGE)
                .push(" FROM "),
        };
        let sql = self.days.within(sql.ident(db)?.push(table.settled())).push(table.data_rows());
        let sql = super::fold::folds_upto(sql, db, self.upto)?;
        Ok(sql.push(match table {
            Table::Usage => " GROUP BY tenant, meter, day, service, dimensions, unique_value",
            Table::Sla => " GROUP BY tenant, service, route, hour)",
        }))
    }

    /// `SELECT count()` of the rows it wrote into `table`'s rolled-up table.
    pub fn count(&self, db: &str, table: Table) -> Result<Sql, BadIdentifier> {
        let sql = Sql::new("SELECT count() FROM ").ident(db)?.push(table.rolled());
        Ok(self.days.within(sql).push(" AND fold = ").bind(self.id.as_str()))
    }

    /// Its row in `settle_rollups`: from here on it counts.
    pub fn commit(&self, db: &str, rows: u64) -> Result<Sql, BadIdentifier> {
        Ok(Sql::new("INSERT INTO ")
            .ident(db)?
            .push(".settle_rollups (rollup, day_from, day_to, folds_upto, rows) VALUES (")
            .bind(self.id.as_str())
            .push(", ")
            .bind(Param::DateTime(self.days.from))
            .push(", ")
            .bind(Param::DateTime(self.days.to))
            .push(", ")
            .bind(Param::DateTime(self.upto))
            .push(", ")
            .bind(rows)
            .push(")"))
    }
}

/// Plans the next roll-up: the days after those rolled up (from the first settled day, the
/// first time) that ended before the latest fold's start, so that what a fold still takes for
/// them is late usage (at most [`MAX_DAYS`]); `None` when no day is ready.
pub async fn plan(store: &Store) -> Result<Option<RollupPlan>, StoreError> {
    let Some(w) = Watermark::read(store).await? else { return Ok(None) };
    let start = match w.rolled {
        Some(days) => days.to,
        None => match first_day(store).await? {
            Some(day) => day,
            None => return Ok(None),
        },
    };
    let end = (w.tail_from / DAY * DAY).min(start.saturating_add(MAX_DAYS * DAY));
    if end <= start {
        return Ok(None);
    }
    Ok(Some(RollupPlan { id: super::fold::fold_id(end), days: Days { from: start, to: end }, upto: w.upto }))
}

/// The first day of any settled row, or `None` when there is none.
async fn first_day(store: &Store) -> Result<Option<u32>, StoreError> {
    super::fold::least(store, |table| {
        Ok(Sql::new("SELECT toUInt32(toStartOfDay(min(window_start))), count() FROM ")
            .ident(store.db())?
            .push(table.settled()))
    })
    .await
}

/// Runs a planned roll-up to its commit.
pub async fn run(store: &Store, plan: &RollupPlan) -> Result<Rollup, StoreError> {
    let db = store.db();
    let mut rows = 0u64;
    for table in Table::ALL {
        store.ch().execute(&plan.statement(db, table)?).await?;
        rows += scalar::<u64>(store, plan.count(db, table)?).await?;
    }
    store.ch().execute(&plan.commit(db, rows)?).await?;
    Ok(Rollup { id: plan.id.clone(), days: plan.days, rows })
}

/// Plans and runs the next roll-up: `None` when no day is ready. Call again until it returns
/// `None` to catch up.
pub async fn roll(store: &Store) -> Result<Option<Rollup>, StoreError> {
    match plan(store).await? {
        Some(p) => Ok(Some(run(store, &p).await?)),
        None => Ok(None),
    }
}

impl Watermark {
    /// The part of a read of `[from, to)` in `granularity` buckets that `table`'s rolled-up rows
    /// serve: the rolled-up days in it, when its buckets are made of whole rolled-up buckets and
    /// its ends fall on them; the rest of the read takes minute rows.
    pub(crate) fn rolled_part(
        &self,
        table: Table,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Option<(u32, u32)> {
        if !granularity.tiled_by(table.rollup().bucket_seconds(), from, to) {
            return None;
        }
        let (from, to) = (u32::try_from(from.unix_timestamp()).ok()?, u32::try_from(to.unix_timestamp()).ok()?);
        self.rolled?.overlap(from, to)
    }
}
