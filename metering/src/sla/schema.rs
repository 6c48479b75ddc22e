//! The `sla` table: its DDL for each server dialect and the row layout the
//! encoder writes, side by side so a column change is one edit here.
//!
//! One row is one tenant × service × route × UTC minute *as measured by one
//! batch*. As in `usage`, the batch identity (`source_id`, `batch_seq`) is the
//! tail of the sorting key: a retried batch reproduces byte-identical rows under
//! the same key, `ReplacingMergeTree` collapses them when parts merge, and reads
//! (see `query`) keep one row per key before merging, so a retry never counts twice.
//!
//! The latency distribution is stored sparse: `latency_buckets` (ids of
//! [`super::sketch`], strictly increasing) and `latency_counts`, which
//! `sumMap` merges on 18.16 and on current servers alike. Exemplars are three
//! parallel arrays in [`super::Exemplar`] order.

use crate::clickhouse::rowbinary::Layout;
use crate::clickhouse::sql::{BadIdentifier, Sql};
use crate::store::Dialect;

/// An SLA row as the encoder sends it, in RowBinary order (on 18.16's types). `inserted_at` is
/// filled by the server.
pub const SLA_ROW: Layout = Layout(&[
    ("tenant", "String"),
    ("service", "String"),
    ("route", "String"),
    ("window_start", "DateTime('UTC')"),
    ("requests", "UInt64"),
    ("errors", "UInt64"),
    ("latency_buckets", "Array(UInt16)"),
    ("latency_counts", "Array(UInt64)"),
    ("exemplar_trace_ids", "Array(String)"),
    ("exemplar_latencies_ns", "Array(UInt64)"),
    ("exemplar_errors", "Array(UInt8)"),
    ("source_id", "String"),
    ("batch_seq", "UInt64"),
]);

/// `CREATE TABLE IF NOT EXISTS db.sla ...` for the given dialect.
pub fn create_sla(db: &str, dialect: Dialect) -> Result<Sql, BadIdentifier> {
    let (lc, time_codec, codec) = match dialect {
        Dialect::Legacy => ("String", "", ""),
        Dialect::Modern => ("LowCardinality(String)", " CODEC(DoubleDelta, ZSTD)", " CODEC(ZSTD)"),
    };
    // Every fragment is static: the dialect picks among them, user input never enters.
    let mut sql = Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(".sla (tenant ");
    sql = sql.push(lc).push(", service ").push(lc).push(", route ").push(lc);
    sql = sql.push(", window_start DateTime('UTC')").push(time_codec);
    sql = sql.push(", requests UInt64").push(codec).push(", errors UInt64").push(codec);
    sql = sql.push(", latency_buckets Array(UInt16)").push(codec);
    sql = sql.push(", latency_counts Array(UInt64)").push(codec);
    sql = sql.push(", exemplar_trace_ids Array(String)").push(codec);
    sql = sql.push(", exemplar_latencies_ns Array(UInt64)").push(codec);
    sql = sql.push(", exemplar_errors Array(UInt8)").push(codec);
    sql = sql.push(", source_id ").push(lc);
    sql = sql.push(", batch_seq UInt64, inserted_at DateTime('UTC') DEFAULT now()");
    Ok(sql.push(
        ") ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(window_start) \
         ORDER BY (tenant, service, route, window_start, source_id, batch_seq)",
    ))
}

/// The target of an INSERT of encoded SLA rows: `db.sla (columns)`.
pub fn insert_sla(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("").ident(db)?.push(".sla ").columns(SLA_ROW))
}
