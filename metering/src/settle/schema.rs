//! The tables of settlement (migration 6), the same DDL on every dialect: plain types, MergeTree.
//!
//! - `usage_settled`: what each fold took, written by one INSERT per fold so that it replicates
//!   and becomes visible together. Two kinds of row, told apart by `meter`:
//!   - usage: one row per fold, tenant, meter, UTC minute, service, route, dimensions and unique
//!     value, without batch identity (`source_id` empty). Rows of several folds for one key add
//!     up (their sum, their max, their distinct values), so reads never collapse them;
//!   - identities (`meter` empty): one row per batch identity, tenant and minute the fold took,
//!     so a read can leave a resent batch out. They sort beside the tenant's usage, by minute.
//! - `sla_settled`: the same for `sla` rows: per fold, tenant, service, route and minute the
//!   counts summed, the latency sketches merged and the exemplars any coarser read picks; and
//!   identity rows (those with a `source_id`).
//! - `settle_folds`: one row per fold, written last: a fold counts only once this row exists,
//!   so a settler killed part-way leaves rows nobody reads.
//! - `usage_settled_daily`, `sla_settled_hourly`, `settle_rollups` (migration 8): settled data
//!   rows rolled up by day (usage) and hour (SLA), and one row per roll-up, written last
//!   (see [`super::rollup`]).
//!
//! In cluster mode `usage_settled` and `sla_settled` are sharded by tenant beside `usage` (a read's test of batch
//! identities runs on each shard against its own rows); `settle_folds` has no tenant and is one
//! table on every server.

use crate::clickhouse::sql::{BadIdentifier, Sql};

/// `CREATE TABLE IF NOT EXISTS db.usage_settled ...`.
pub fn create_usage_settled(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
        ".usage_settled (fold String, tenant String, meter String, window_start DateTime('UTC'), service String, \
         route String, dimensions String, unique_value String, value Decimal(38, 9), unit String, aggregation String, \
         source_id String, batch_seq UInt64) ENGINE = MergeTree PARTITION BY toYYYYMM(window_start) \
         ORDER BY (tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq)",
    ))
}

/// `CREATE TABLE IF NOT EXISTS db.sla_settled ...`: `sla`'s columns and `fold`; identity rows
/// have a `source_id` (data rows none) and an empty service and route, so they sort first of a
/// tenant's rows, by minute.
pub fn create_sla_settled(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
        ".sla_settled (fold String, tenant String, service String, route String, window_start DateTime('UTC'), \
         requests UInt64, errors UInt64, latency_buckets Array(UInt16), latency_counts Array(UInt64), \
         exemplar_trace_ids Array(String), exemplar_latencies_ns Array(UInt64), exemplar_errors Array(UInt8), \
         source_id String, batch_seq UInt64) ENGINE = MergeTree PARTITION BY toYYYYMM(window_start) \
         ORDER BY (tenant, service, route, window_start, source_id, batch_seq)",
    ))
}

/// `CREATE TABLE IF NOT EXISTS db.settle_folds ...`.
pub fn create_settle_folds(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
        ".settle_folds (fold String, inserted_from DateTime('UTC'), inserted_to DateTime('UTC'), batches UInt64, \
         rows UInt64, committed_at DateTime('UTC') DEFAULT now()) ENGINE = MergeTree ORDER BY (inserted_to, fold)",
    ))
}

/// `CREATE TABLE IF NOT EXISTS db.usage_settled_daily ...`: `usage_settled`'s data rows rolled up
/// per UTC day (the columns of a seal's `sealed_usage_daily`, `fold` for `seal_id`), written by
/// roll-ups of whole days and by the folds after them that took late usage for those days.
pub fn create_usage_settled_daily(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
        ".usage_settled_daily (fold String, tenant String, meter String, window_start DateTime('UTC'), \
         service String, dimensions String, unique_value String, value Decimal(38, 9), unit String, aggregation String) \
         ENGINE = MergeTree PARTITION BY toYYYYMM(window_start) \
         ORDER BY (tenant, meter, window_start, service, dimensions, unique_value)",
    ))
}

/// `CREATE TABLE IF NOT EXISTS db.sla_settled_hourly ...`: `sla_settled`'s data rows rolled up
/// per UTC hour (the columns of a seal's `sealed_sla_hourly`), written as `usage_settled_daily`.
pub fn create_sla_settled_hourly(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
        ".sla_settled_hourly (fold String, tenant String, service String, route String, window_start DateTime('UTC'), \
         requests UInt64, errors UInt64, latency_buckets Array(UInt16), latency_counts Array(UInt64), \
         exemplar_trace_ids Array(String), exemplar_latencies_ns Array(UInt64), exemplar_errors Array(UInt8)) \
         ENGINE = MergeTree PARTITION BY toYYYYMM(window_start) ORDER BY (tenant, service, route, window_start)",
    ))
}

/// `CREATE TABLE IF NOT EXISTS db.settle_rollups ...`: one row per roll-up, written last (as a
/// fold's row): the days `[day_from, day_to)` it rolled up from the folds up to `folds_upto`.
pub fn create_settle_rollups(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
        ".settle_rollups (rollup String, day_from DateTime('UTC'), day_to DateTime('UTC'), \
         folds_upto DateTime('UTC'), rows UInt64, committed_at DateTime('UTC') DEFAULT now()) \
         ENGINE = MergeTree ORDER BY (day_from, rollup)",
    ))
}

/// `CREATE TABLE IF NOT EXISTS db.<raw>_inserts ...`: the **insert journal** of `table`'s raw
/// rows (migration 9), one row per batch identity and inserted block, sorted by `inserted_at`,
/// so that a fold finds the batches stamped in its range, and their minutes, through the primary
/// key instead of scanning every raw row ever stored.
pub fn create_inserts(db: &str, table: super::Table) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(table.inserts()).push(
        " (tenant String, source_id String, batch_seq UInt64, inserted_at DateTime('UTC'), \
         window_min DateTime('UTC'), window_max DateTime('UTC')) ENGINE = MergeTree \
         PARTITION BY toYYYYMM(inserted_at) ORDER BY (inserted_at, tenant, source_id, batch_seq)",
    ))
}

const JOURNAL: &str = " AS SELECT tenant, source_id, batch_seq, inserted_at, min(window_start) AS window_min, \
     max(window_start) AS window_max FROM ";
const JOURNAL_KEY: &str = " GROUP BY tenant, source_id, batch_seq, inserted_at";

/// `CREATE MATERIALIZED VIEW IF NOT EXISTS db.<raw>_inserts_mv TO db.<raw>_inserts ...`: every
/// block inserted into `table`'s raw rows journals its batches, in the same INSERT.
pub fn create_inserts_view(db: &str, table: super::Table) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE MATERIALIZED VIEW IF NOT EXISTS ")
        .ident(db)?
        .push(table.inserts())
        .push("_mv TO ")
        .ident(db)?
        .push(table.inserts())
        .push(JOURNAL)
        .ident(db)?
        .push(table.raw())
        .push(JOURNAL_KEY))
}

/// `INSERT INTO db.<raw>_inserts ...` the journal of the raw rows stored before the view (run
/// after it: a block inserted in between is journaled twice, which a fold's grouping absorbs).
/// Its grouping spills to disk past 1 GB: a year of batches is more groups than memory holds.
pub fn backfill_inserts(db: &str, table: super::Table) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("INSERT INTO ")
        .ident(db)?
        .push(table.inserts())
        .push(" (tenant, source_id, batch_seq, inserted_at, window_min, window_max) SELECT tenant, source_id, batch_seq, \
               inserted_at, min(window_start), max(window_start) FROM ")
        .ident(db)?
        .push(table.raw())
        .push(JOURNAL_KEY)
        .push(" SETTINGS max_bytes_before_external_group_by = 1000000000"))
}

/// `ALTER TABLE db.settle_folds ADD COLUMN window_from, window_to` (migration 9): the minutes a
/// fold's rows lie in (bounds it read from the journal before it ran and took only batches
/// within), so that reads of rolled-up days find the few folds after a roll-up with rows in them.
pub fn add_fold_minutes(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("ALTER TABLE ")
        .ident(db)?
        .push(".settle_folds ADD COLUMN window_from DateTime('UTC'), ADD COLUMN window_to DateTime('UTC')"))
}

/// Non-zero when `settle_folds.window_from` exists (migration 9 ran its ALTER).
pub fn has_fold_minutes(db: &str) -> Sql {
    Sql::new("SELECT count() FROM system.columns WHERE database = ")
        .bind(db)
        .push(" AND table = 'settle_folds' AND name = 'window_from'")
}
