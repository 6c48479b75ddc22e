//! The `sealed_usage`, `sealed_sla` and `periods` tables (migration 4) and the
//! statements that fill and read them. The same DDL on every dialect: plain types,
//! MergeTree.
//!
//! `sealed_usage` and `sealed_sla` have `usage`'s and `sla`'s columns plus
//! `seal_id`, so the roll-ups and SLA reads read a snapshot with the same SQL as
//! live data. `periods` holds one row per seal; if
//! two seals of one month ever race, readers take the first (by `sealed_at`, then
//! `seal_id`), so every reader agrees on which one counts.

use time::OffsetDateTime;

use super::period::Period;
use super::rollup::Snapshot;
use crate::clickhouse::sql::{BadIdentifier, Param, Sql};

/// `CREATE TABLE IF NOT EXISTS db.sealed_usage ...`.
pub fn create_sealed_usage(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
        ".sealed_usage (seal_id String, tenant String, meter String, window_start DateTime('UTC'), service String, \
         route String, dimensions String, unique_value String, value Decimal(38, 9), unit String, aggregation String, \
         source_id String, batch_seq UInt64) ENGINE = MergeTree PARTITION BY toYYYYMM(window_start) \
         ORDER BY (seal_id, tenant, meter, window_start, service, route, dimensions, source_id, batch_seq, unique_value)",
    ))
}

/// `CREATE TABLE IF NOT EXISTS db.sealed_sla ...`.
pub fn create_sealed_sla(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
        ".sealed_sla (seal_id String, tenant String, service String, route String, window_start DateTime('UTC'), \
         requests UInt64, errors UInt64, latency_buckets Array(UInt16), latency_counts Array(UInt64), \
         exemplar_trace_ids Array(String), exemplar_latencies_ns Array(UInt64), exemplar_errors Array(UInt8), \
         source_id String, batch_seq UInt64) ENGINE = MergeTree PARTITION BY toYYYYMM(window_start) \
         ORDER BY (seal_id, tenant, service, route, window_start, source_id, batch_seq)",
    ))
}

/// `CREATE TABLE IF NOT EXISTS db.periods ...`.
pub fn create_periods(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
        ".periods (month String, seal_id String, rows UInt64, sla_rows UInt64, digest String, previous_digest String, \
         sealed_at DateTime('UTC')) ENGINE = MergeTree ORDER BY (month, sealed_at, seal_id)",
    ))
}

/// One tenant's SLA rows of the month, collapsed to one per key (as the SLA reads keep them),
/// copied into `sealed_sla` under `seal_id`. Per tenant: collapsing keeps an entry per stored
/// row in the server's memory (9 GB for 50 tenants' minute usage).
pub fn snapshot_sla(
    db: &str,
    seal_id: &str,
    tenant: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("INSERT INTO ")
        .ident(db)?
        .push(
            ".sealed_sla (seal_id, tenant, service, route, window_start, requests, errors, latency_buckets, latency_counts, \
             exemplar_trace_ids, exemplar_latencies_ns, exemplar_errors, source_id, batch_seq) SELECT ",
        )
        .bind(seal_id)
        .push(
            ", tenant, service, route, window_start, r.1, r.2, r.3, r.4, r.5, r.6, r.7, source_id, batch_seq FROM \
             (SELECT tenant, service, route, window_start, source_id, batch_seq, any((requests, errors, latency_buckets, \
             latency_counts, exemplar_trace_ids, exemplar_latencies_ns, exemplar_errors)) AS r FROM ",
        )
        .ident(db)?
        .push(".sla WHERE tenant = ")
        .bind(tenant)
        .push(" AND window_start >= ")
        .bind(Param::DateTime(from.unix_timestamp() as u32))
        .push(" AND window_start < ")
        .bind(Param::DateTime(to.unix_timestamp() as u32))
        .push(" GROUP BY tenant, service, route, window_start, source_id, batch_seq)"))
}

/// One tenant's SLA rows of a snapshot, as [`super::digest::SealedSlaRow`] fields.
pub fn read_sla_snapshot(db: &str, seal_id: &str, tenant: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new(
        "SELECT tenant, service, route, toUInt32(window_start), requests, errors, \
         arrayStringConcat(arrayMap((b, c) -> concat(toString(b), ':', toString(c)), latency_buckets, latency_counts), ','), \
         arrayStringConcat(arrayMap((t, l, e) -> concat(t, ':', toString(l), ':', toString(e)), exemplar_trace_ids, \
         exemplar_latencies_ns, exemplar_errors), ','), source_id, batch_seq FROM ",
    )
    .ident(db)?
    .push(".sealed_sla WHERE seal_id = ")
    .bind(seal_id)
    .push(" AND tenant = ")
    .bind(tenant))
}

/// One tenant's live usage of the month, collapsed to one row per key (as the roll-ups keep it),
/// copied into `sealed_usage` under `seal_id` (per tenant, as [`snapshot_sla`]).
pub fn snapshot(
    db: &str,
    seal_id: &str,
    tenant: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("INSERT INTO ")
        .ident(db)?
        .push(
            ".sealed_usage (seal_id, tenant, meter, window_start, service, route, dimensions, unique_value, value, unit, \
             aggregation, source_id, batch_seq) SELECT ",
        )
        .bind(seal_id)
        .push(
            ", tenant, meter, window_start, service, route, dimensions, unique_value, max(value), any(unit), any(aggregation), \
             source_id, batch_seq FROM ",
        )
        .ident(db)?
        .push(".usage WHERE tenant = ")
        .bind(tenant)
        .push(" AND window_start >= ")
        .bind(Param::DateTime(from.unix_timestamp() as u32))
        .push(" AND window_start < ")
        .bind(Param::DateTime(to.unix_timestamp() as u32))
        .push(" GROUP BY tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq"))
}

/// The tenants with `table` rows (`usage` or `sla`; of snapshot `seal_id` when given) from
/// `from` to `to`, by name: whom a seal snapshots, or a report reads.
pub fn tenants(
    db: &str,
    table: Snapshot,
    seal_id: Option<&str>,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Sql, BadIdentifier> {
    let mut sql = Sql::new("SELECT DISTINCT tenant FROM ")
        .ident(db)?
        .push(match (table, seal_id.is_some()) {
            (Snapshot::Usage, false) => ".usage",
            (Snapshot::Sla, false) => ".sla",
            (Snapshot::Usage, true) => ".sealed_usage",
            (Snapshot::Sla, true) => ".sealed_sla",
        })
        .push(" WHERE window_start >= ")
        .bind(Param::DateTime(from.unix_timestamp() as u32))
        .push(" AND window_start < ")
        .bind(Param::DateTime(to.unix_timestamp() as u32));
    if let Some(seal_id) = seal_id {
        sql = sql.push(" AND seal_id = ").bind(seal_id);
    }
    Ok(sql.push(" ORDER BY tenant"))
}

/// One tenant's rows of a snapshot, as [`super::digest::SealedRow`] fields.
pub fn read_snapshot(db: &str, seal_id: &str, tenant: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new(
        "SELECT tenant, meter, toUInt32(window_start), service, route, dimensions, unique_value, value, unit, \
         aggregation, source_id, batch_seq FROM ",
    )
    .ident(db)?
    .push(".sealed_usage WHERE seal_id = ")
    .bind(seal_id)
    .push(" AND tenant = ")
    .bind(tenant))
}

/// The tenants of a snapshot's `table` (`usage` or `sla`) and its row count, one row per tenant.
pub fn snapshot_tenants(db: &str, seal_id: &str, table: Snapshot) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("SELECT tenant, count() FROM ")
        .ident(db)?
        .push(match table {
            Snapshot::Usage => ".sealed_usage",
            Snapshot::Sla => ".sealed_sla",
        })
        .push(" WHERE seal_id = ")
        .bind(seal_id)
        .push(" GROUP BY tenant"))
}

/// Records `seal` (with its roll-ups) in `periods`.
pub fn record_seal(db: &str, seal: &Period) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("INSERT INTO ")
        .ident(db)?
        .push(".periods (month, seal_id, rows, sla_rows, digest, previous_digest, sealed_at, rollups) VALUES (")
        .bind(seal.month.as_str())
        .push(", ")
        .bind(seal.seal_id.as_str())
        .push(", ")
        .bind(seal.rows)
        .push(", ")
        .bind(seal.sla_rows)
        .push(", ")
        .bind(seal.digest.as_str())
        .push(", ")
        .bind(seal.previous_digest.as_str())
        .push(", ")
        .bind(Param::DateTime(seal.sealed_at.unix_timestamp() as u32))
        .push(", 1)"))
}

/// Every seal, the one that counts for each month first: month, seal id, rows,
/// SLA rows, digest, previous digest, sealed at (Unix seconds), whether it has roll-ups.
pub fn read_seals(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("SELECT month, seal_id, rows, sla_rows, digest, previous_digest, toUInt32(sealed_at), rollups FROM ")
        .ident(db)?
        .push(".periods ORDER BY month, sealed_at, seal_id"))
}

/// How many of a tenant's live collapsed rows of the month are not in the snapshot (late rows);
/// per tenant, as the snapshot is taken.
pub fn count_late(
    db: &str,
    seal_id: &str,
    tenant: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("SELECT count() FROM (SELECT tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq FROM ")
        .ident(db)?
        .push(".usage WHERE tenant = ")
        .bind(tenant)
        .push(" AND window_start >= ")
        .bind(Param::DateTime(from.unix_timestamp() as u32))
        .push(" AND window_start < ")
        .bind(Param::DateTime(to.unix_timestamp() as u32))
        .push(" GROUP BY tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq) \
               WHERE (tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq) NOT IN \
               (SELECT tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq FROM ")
        .ident(db)?
        .push(".sealed_usage WHERE seal_id = ")
        .bind(seal_id)
        .push(" AND tenant = ")
        .bind(tenant)
        .push(")"))
}
