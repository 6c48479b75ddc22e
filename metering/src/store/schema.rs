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
use crate::clickhouse::sql::{BadIdentifier, Sql};

/// Columns the writer sends, in RowBinary order. `inserted_at` is filled by the
/// server (`DEFAULT now()`), so late data for a sealed month stays visible.
pub const INSERT_COLUMNS: &str =
    "(tenant, meter, window_start, service, route, dimensions, value, unit, source_id, batch_seq)";

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

/// The target of the writer's INSERT: `db.usage (columns)`.
pub fn insert_usage(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("").ident(db)?.push(".usage ").push(INSERT_COLUMNS))
}

/// The RowBinary structure of [`INSERT_COLUMNS`], for `file()` or `input()` readers.
pub const INSERT_STRUCTURE: &str = "tenant String, meter String, window_start DateTime('UTC'), service String, \
     route String, dimensions String, value Decimal(38, 9), unit String, source_id String, batch_seq UInt64";
