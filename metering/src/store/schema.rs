//! The `usage` table: its DDL for each server dialect and the row layout the
//! writer encodes, side by side so a column change is one edit here.
//!
//! One row is one meter's value for a tenant, UTC minute and set of dimensions,
//! *as measured by one batch*. The batch identity (`source_id`, `batch_seq`) is
//! part of the sorting key, so a retried batch reproduces rows with the same key:
//! `ReplacingMergeTree` collapses them when parts merge, and reads collapse them
//! exactly before summing (see `rollup`). Plain MergeTree on 18.16 has no insert
//! deduplication, so this is what makes a retry free on every server.

use super::Dialect;
use crate::clickhouse::rowbinary::Layout;
use crate::clickhouse::sql::{BadIdentifier, Sql};

/// A usage row as the writer sends it, in RowBinary order (on 18.16's types; newer servers store
/// the strings as `LowCardinality`). `inserted_at` is filled by the server (`DEFAULT now()`), so
/// late data for a sealed month stays visible.
pub const USAGE_ROW: Layout = Layout(&[
    ("tenant", "String"),
    ("meter", "String"),
    ("window_start", "DateTime('UTC')"),
    ("service", "String"),
    ("route", "String"),
    ("dimensions", "String"),
    ("unique_value", "String"),
    ("value", "Decimal(38, 9)"),
    ("unit", "String"),
    ("aggregation", "String"),
    ("source_id", "String"),
    ("batch_seq", "UInt64"),
]);

/// `CREATE TABLE IF NOT EXISTS db.usage ...` for the given dialect.
pub fn create_usage(db: &str, dialect: Dialect) -> Result<Sql, BadIdentifier> {
    let (lc, time_codec, value_codec) = match dialect {
        Dialect::Legacy => ("String", "", ""),
        Dialect::Modern => ("LowCardinality(String)", " CODEC(DoubleDelta, ZSTD)", " CODEC(ZSTD)"),
    };
    // Every fragment is static: the dialect picks among them, user input never enters.
    let mut sql = Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(".usage (tenant ");
    sql = sql.push(lc).push(", meter ").push(lc);
    sql = sql.push(", window_start DateTime('UTC')").push(time_codec);
    sql = sql.push(", service ").push(lc).push(", route ").push(lc);
    sql = sql.push(", dimensions String, value Decimal(38, 9)").push(value_codec);
    sql = sql.push(", unit ").push(lc).push(", source_id ").push(lc);
    sql = sql.push(", batch_seq UInt64, inserted_at DateTime('UTC') DEFAULT now()");
    Ok(sql.push(
        ") ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(window_start) \
         ORDER BY (tenant, meter, window_start, service, route, dimensions, source_id, batch_seq)",
    ))
}

/// Migration 2, for custom meters: the `unique_value` column, the distinct value
/// a `unique_count` meter's row counts (empty for every other meter), and the
/// `aggregation` column, how the row's meter rolls up (`count`, `sum`, `max`,
/// `unique_count`; empty in older rows, which are sums). `unique_value` joins the
/// end of the sorting key: rows of distinct values must stay distinct rows when
/// `ReplacingMergeTree` collapses equal keys. A column added in the same ALTER
/// may extend the key only without a default expression, on 18.16 and 26.x alike.
/// Rows carry their aggregation so that every reader of the table rolls them up
/// alike, with or without the meters file.
pub fn add_custom_meter_columns(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("ALTER TABLE ").ident(db)?.push(
        ".usage ADD COLUMN unique_value String AFTER dimensions, ADD COLUMN aggregation String AFTER unit, \
         MODIFY ORDER BY (tenant, meter, window_start, service, route, dimensions, source_id, batch_seq, unique_value)",
    ))
}

/// Whether migration 3 is in place: one row with a non-zero count when it is. 18.16
/// has no `ADD COLUMN IF NOT EXISTS`, so a migration interrupted after the ALTER asks this.
pub fn has_custom_meter_columns(db: &str) -> Sql {
    Sql::new("SELECT count() FROM system.columns WHERE database = ")
        .bind(db)
        // `usage_local` on a cluster: the ALTER changes it first, the Distributed `usage` after.
        .push(" AND table IN ('usage', 'usage_local') AND name = 'unique_value'")
}

/// The target of the writer's INSERT: `db.usage (columns)`.
pub fn insert_usage(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("").ident(db)?.push(".usage ").columns(USAGE_ROW))
}
