//! Sealing and verifying months in ClickHouse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::digest::{Digester, SealedRow, SealedSlaRow, SlaLine, UsageLine, GENESIS};
pub use super::period::Period;
use super::rollup::{Rollup, Snapshot};
use super::schema;
use crate::clickhouse::rowbinary::{ReadError, Reader};
use crate::clickhouse::sql::Sql;
use crate::clickhouse::ClickHouse;
use crate::pricing::BillingMonth;
use crate::store::Store;
use crate::store::StoreError;

/// The outcome of recomputing a seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// The seal as recorded.
    #[serde(flatten)]
    pub period: Period,
    /// The digest recomputed from the snapshot now.
    pub recomputed_digest: String,
    /// Usage rows in the snapshot now.
    pub recomputed_rows: u64,
    /// SLA rows in the snapshot now.
    pub recomputed_sla_rows: u64,
    /// The digest the chain says `previous_digest` must be.
    pub expected_previous_digest: String,
    /// The roll-ups as stored equal the roll-ups recomputed from the snapshot (true for a seal
    /// without roll-ups: there is nothing to differ).
    pub rollups_verified: bool,
    /// Recomputed digest, row count, chain link and roll-ups all match.
    pub verified: bool,
    /// Usage rows for the month that arrived after the seal (not in it; billed as an
    /// adjustment on the next month's invoice).
    pub late_rows: u64,
    /// Each tenant's share of the rows above, in tenant order: what a tenant may be shown.
    pub tenants: Vec<TenantRows>,
}

/// One tenant's part of a seal's verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRows {
    /// The tenant.
    pub tenant: String,
    /// Its usage rows in the snapshot now.
    pub rows: u64,
    /// Its SLA rows in the snapshot now.
    pub sla_rows: u64,
    /// Its usage rows for the month that arrived after the seal.
    pub late_rows: u64,
}

/// Why a month could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The month is sealed already.
    #[error("{} is already sealed (digest {})", .0.month, .0.digest)]
    AlreadySealed(Box<Period>),
    /// The month has not ended (UTC).
    #[error("{0} has not ended yet; a month can be sealed from the 1st of the next month (UTC)")]
    NotOver(String),
    /// A later month is sealed: the chain runs in month order.
    #[error("{later} is sealed already and seals chain in month order, so {month} can no longer be sealed")]
    OutOfOrder {
        /// The month asked for.
        month: String,
        /// The latest sealed month.
        later: String,
    },
}

fn bad(row: &[String], reason: &str) -> StoreError {
    StoreError::BadRow { row: row.to_vec(), reason: reason.to_owned() }
}

/// Every month's seal (the first, if two raced), in month order.
pub async fn seals(store: &Store) -> Result<Vec<Period>, StoreError> {
    let mut out: Vec<Period> = Vec::new();
    for row in store.ch().query_tsv(&schema::read_seals(store.db())?).await? {
        let [month, seal_id, rows, sla_rows, digest, previous, at, rollups] =
            <[String; 8]>::try_from(row.clone()).map_err(|r| bad(&r, "expected 8 fields"))?;
        if out.last().is_some_and(|p| p.month == month) {
            continue;
        }
        let sealed_at = at
            .parse::<i64>()
            .ok()
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .ok_or_else(|| bad(&row, "sealed_at"))?;
        let rows = rows.parse().map_err(|_| bad(&row, "rows is not a UInt64"))?;
        let sla_rows = sla_rows.parse().map_err(|_| bad(&row, "sla_rows is not a UInt64"))?;
        out.push(Period {
            month,
            seal_id,
            rows,
            sla_rows,
            digest,
            previous_digest: previous,
            sealed_at,
            rollups: rollups == "1",
        });
    }
    Ok(out)
}

/// `month`'s seal, if it is sealed.
pub async fn period(store: &Store, month: BillingMonth) -> Result<Option<Period>, StoreError> {
    let month = month.to_string();
    Ok(seals(store).await?.into_iter().find(|p| p.month == month))
}

/// A snapshot read back and digested.
struct Digested {
    /// The digest, chained to the previous seal's.
    digest: String,
    /// Usage rows read.
    rows: u64,
    /// SLA rows read.
    sla_rows: u64,
    /// The tenants of `sealed_usage` and of `sealed_sla`, in canonical order.
    tenants: [Vec<String>; 2],
    /// Rows read per tenant: usage, SLA.
    per_tenant: BTreeMap<String, (u64, u64)>,
}

/// The tenants of a snapshot's `table` and their row counts, in the canonical order's tenant
/// order (bytes, as Rust's and ClickHouse's strings compare).
async fn snapshot_tenants(store: &Store, seal_id: &str, table: Snapshot) -> Result<Vec<(String, u64)>, StoreError> {
    let mut rows: Vec<(String, u64)> = store
        .ch()
        .query_tsv(&schema::snapshot_tenants(store.db(), seal_id, table)?)
        .await?
        .into_iter()
        .map(|r| match <[String; 2]>::try_from(r) {
            Ok([tenant, n]) => match n.parse() {
                Ok(count) => Ok((tenant, count)),
                Err(_) => Err(bad(&[tenant, n], "count is not an integer")),
            },
            Err(r) => Err(bad(&r, "expected tenant and count")),
        })
        .collect::<Result<_, _>>()?;
    rows.sort();
    Ok(rows)
}

/// Snapshot `seal_id` of `month` digested, chained to `previous`. Read one tenant at a time: a month of 1,000 tenants' minute usage is hundreds of
/// millions of rows, far more than memory (the whole canonical text of 432 M rows is ~40 GB).
/// Each tenant's rows are read on its own, so a count from before the read (the header's) that
/// differs from the rows read gives a digest that does not verify, never a wrong one that does.
async fn digest_snapshot(store: &Store, seal_id: &str, month: &str, previous: &str) -> Result<Digested, StoreError> {
    let usage_tenants = snapshot_tenants(store, seal_id, Snapshot::Usage).await?;
    let sla_tenants = snapshot_tenants(store, seal_id, Snapshot::Sla).await?;
    let mut d = Digester::new(month, previous, usage_tenants.iter().map(|t| t.1).sum());
    let mut usage_rows = 0;
    let mut per_tenant = BTreeMap::<String, (u64, u64)>::new();
    for (tenant, _) in &usage_tenants {
        let bytes = store.ch().query_rowbinary(&schema::read_snapshot(store.db(), seal_id, tenant)?).await?;
        let rows = usage_lines(&bytes)?;
        usage_rows += rows.len() as u64;
        per_tenant.entry(tenant.clone()).or_default().0 += rows.len() as u64;
        d.usage_lines(&rows);
    }
    d.sla_section(sla_tenants.iter().map(|t| t.1).sum());
    let mut sla_rows = 0;
    for (tenant, _) in &sla_tenants {
        let bytes = store.ch().query_rowbinary(&schema::read_sla_snapshot(store.db(), seal_id, tenant)?).await?;
        let rows = sla_lines(&bytes)?;
        sla_rows += rows.len() as u64;
        per_tenant.entry(tenant.clone()).or_default().1 += rows.len() as u64;
        d.sla_lines(&rows);
    }
    let names = |tenants: Vec<(String, u64)>| tenants.into_iter().map(|t| t.0).collect();
    Ok(Digested {
        digest: d.finish(),
        rows: usage_rows,
        sla_rows,
        tenants: [names(usage_tenants), names(sla_tenants)],
        per_tenant,
    })
}

/// The rows [`schema::read_snapshot`] returns as RowBinary, borrowed from its bytes.
pub fn usage_lines(bytes: &[u8]) -> Result<Vec<UsageLine<'_>>, StoreError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    let unreadable = |e: ReadError| StoreError::BadRow { row: vec![], reason: format!("snapshot: {e}") };
    while !r.is_empty() {
        out.push(UsageLine {
            tenant: r.str().map_err(unreadable)?,
            meter: r.str().map_err(unreadable)?,
            window_start: r.u32().map_err(unreadable)?,
            service: r.str().map_err(unreadable)?,
            route: r.str().map_err(unreadable)?,
            dimensions: r.str().map_err(unreadable)?,
            unique_value: r.str().map_err(unreadable)?,
            value: r.decimal128(9).map_err(unreadable)?,
            unit: r.str().map_err(unreadable)?,
            aggregation: r.str().map_err(unreadable)?,
            source_id: r.str().map_err(unreadable)?,
            batch_seq: r.u64().map_err(unreadable)?,
        });
    }
    Ok(out)
}

/// The rows [`schema::read_sla_snapshot`] returns as RowBinary, borrowed from its bytes.
pub fn sla_lines(bytes: &[u8]) -> Result<Vec<SlaLine<'_>>, StoreError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    let unreadable = |e: ReadError| StoreError::BadRow { row: vec![], reason: format!("SLA snapshot: {e}") };
    while !r.is_empty() {
        out.push(SlaLine {
            tenant: r.str().map_err(unreadable)?,
            service: r.str().map_err(unreadable)?,
            route: r.str().map_err(unreadable)?,
            window_start: r.u32().map_err(unreadable)?,
            requests: r.u64().map_err(unreadable)?,
            errors: r.u64().map_err(unreadable)?,
            latency: r.str().map_err(unreadable)?,
            exemplars: r.str().map_err(unreadable)?,
            source_id: r.str().map_err(unreadable)?,
            batch_seq: r.u64().map_err(unreadable)?,
        });
    }
    Ok(out)
}

/// Reads the rows [`schema::read_snapshot`] returns (as TabSeparated fields).
pub fn parse_snapshot(rows: Vec<Vec<String>>) -> Result<Vec<SealedRow>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let f: [String; 12] = <[String; 12]>::try_from(row).map_err(|r| bad(&r, "expected 12 fields"))?;
            let num = |i: usize| f[i].parse::<u64>().map_err(|_| bad(&f, "not an integer"));
            let value = f[7].parse().map_err(|_| bad(&f, "value is not a decimal"))?;
            let window_start = u32::try_from(num(2)?).map_err(|_| bad(&f, "window_start"))?;
            let batch_seq = num(11)?;
            let [tenant, meter, _, service, route, dimensions, unique_value, _, unit, aggregation, source_id, _] = f;
            Ok(SealedRow {
                window_start,
                batch_seq,
                value,
                tenant,
                meter,
                service,
                route,
                dimensions,
                unique_value,
                unit,
                aggregation,
                source_id,
            })
        })
        .collect()
}

/// Reads the rows [`schema::read_sla_snapshot`] returns (as TabSeparated fields).
pub fn parse_sla_snapshot(rows: Vec<Vec<String>>) -> Result<Vec<SealedSlaRow>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let f: [String; 10] = <[String; 10]>::try_from(row).map_err(|r| bad(&r, "expected 10 fields"))?;
            let num = |i: usize| f[i].parse::<u64>().map_err(|_| bad(&f, "not an integer"));
            let window_start = u32::try_from(num(3)?).map_err(|_| bad(&f, "window_start"))?;
            let (requests, errors, batch_seq) = (num(4)?, num(5)?, num(9)?);
            let [tenant, service, route, _, _, _, latency, exemplars, source_id, _] = f;
            Ok(SealedSlaRow {
                window_start,
                requests,
                errors,
                batch_seq,
                tenant,
                service,
                route,
                latency,
                exemplars,
                source_id,
            })
        })
        .collect()
}

fn bounds(month: BillingMonth) -> (OffsetDateTime, OffsetDateTime) {
    (month.first_day().midnight().assume_utc(), month.end().midnight().assume_utc())
}

/// The digest the month before `month` in the chain ends with.
fn previous_digest(all: &[Period], month: &str) -> String {
    all.iter().rfind(|p| p.month.as_str() < month).map_or_else(|| GENESIS.to_owned(), |p| p.digest.clone())
}

/// The client that writes a snapshot. On a cluster (`sealed_usage` is Distributed) the snapshot
/// lands on one replica per shard first, and reading it back from another replica that has not
/// fetched it yet would digest part of it: so the write waits until every replica of each shard
/// has it (`insert_quorum`, the fewest replicas of any shard; sealing then needs them all up).
async fn snapshot_writer(store: &Store) -> Result<ClickHouse, StoreError> {
    let engine = store
        .ch()
        .query_column(
            &Sql::new("SELECT engine_full FROM system.tables WHERE database = ")
                .bind(store.db())
                .push(" AND name = 'sealed_usage'"),
        )
        .await?;
    let engine = engine.first().map_or("", String::as_str);
    let Some(args) = engine.strip_prefix("Distributed(") else { return Ok(store.ch().clone()) };
    let cluster = args.split(',').next().unwrap_or_default().trim().trim_matches(['`', '\'', '"']);
    let replicas = store
        .ch()
        .query_column(
            &Sql::new("SELECT min(n) FROM (SELECT count() AS n FROM system.clusters WHERE cluster = ")
                .bind(cluster)
                .push(" GROUP BY shard_num)"),
        )
        .await?;
    let quorum: u64 = replicas.first().and_then(|n| n.parse().ok()).unwrap_or(0);
    if quorum == 0 {
        return Err(StoreError::NoCluster { cluster: cluster.to_owned(), url: store.ch().url().to_owned() });
    }
    let writer = store.ch().clone().with_setting("insert_distributed_sync", "1");
    Ok(if quorum > 1 { writer.with_setting("insert_quorum", &quorum.to_string()) } else { writer })
}

/// The tenants with live `table` rows in the month.
async fn live_tenants(
    store: &Store,
    table: Snapshot,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<String>, StoreError> {
    Ok(store.ch().query_column(&schema::tenants(store.db(), table, None, from, to)?).await?)
}

/// Seals `month` (which must have ended by `now`, and be later than every sealed month).
pub async fn seal(store: &Store, month: BillingMonth, now: OffsetDateTime) -> Result<Period, SealError> {
    let name = month.to_string();
    let (from, to) = bounds(month);
    if now < to {
        return Err(SealError::NotOver(name));
    }
    let all = seals(store).await?;
    if let Some(p) = all.iter().find(|p| p.month == name) {
        return Err(SealError::AlreadySealed(Box::new(p.clone())));
    }
    if let Some(later) = all.iter().rfind(|p| p.month > name) {
        return Err(SealError::OutOfOrder { month: name, later: later.month.clone() });
    }
    let previous = previous_digest(&all, &name);
    let seal_id = format!("{name}/{}/{}", now.unix_timestamp_nanos(), std::process::id());
    let writer = snapshot_writer(store).await?;
    for table in [Snapshot::Usage, Snapshot::Sla] {
        let rollup = Rollup::of(table);
        for tenant in live_tenants(store, table, from, to).await? {
            let snapshot = match table {
                Snapshot::Usage => schema::snapshot(store.db(), &seal_id, &tenant, from, to),
                Snapshot::Sla => schema::snapshot_sla(store.db(), &seal_id, &tenant, from, to),
            };
            for step in [snapshot, rollup.write(store.db(), &seal_id, &tenant)] {
                writer.execute(&step.map_err(StoreError::from)?).await.map_err(StoreError::from)?;
            }
        }
    }
    // Digest what was stored, not what was meant to be: the snapshot read back.
    let Digested { digest, rows, sla_rows, .. } = digest_snapshot(store, &seal_id, &name, &previous).await?;
    let recorded = Period {
        month: name.clone(),
        seal_id: seal_id.clone(),
        rows,
        sla_rows,
        digest,
        previous_digest: previous,
        sealed_at: now,
        rollups: true,
    };
    let record = schema::record_seal(store.db(), &recorded).map_err(StoreError::from)?;
    store.ch().execute(&record).await.map_err(StoreError::from)?;
    // Two seals may have raced; the first recorded is the one everybody reads.
    match period(store, month).await? {
        Some(p) if p.seal_id == seal_id => {
            tracing::info!(month = %name, rows = p.rows, digest = %p.digest, "month sealed");
            Ok(p)
        }
        Some(p) => Err(SealError::AlreadySealed(Box::new(p))),
        None => Err(SealError::Store(StoreError::BadRow {
            row: vec![seal_id],
            reason: "the seal just recorded is not in periods".into(),
        })),
    }
}

/// Whether seal `seal_id`'s roll-ups, tenant by tenant, are what its snapshot rolls up to
/// (a roll-up row forged, lost or added fails it). `snapshot_tenants` are those of
/// `sealed_usage` and `sealed_sla` (as [`Digested`] has them); the roll-ups' own tenants are
/// added, so a tenant missing from either side is a mismatch too.
async fn rollups_match(store: &Store, seal_id: &str, snapshot_tenants: [Vec<String>; 2]) -> Result<bool, StoreError> {
    for (table, mut tenants) in [Snapshot::Usage, Snapshot::Sla].into_iter().zip(snapshot_tenants) {
        let rollup = Rollup::of(table);
        tenants.extend(store.ch().query_column(&rollup.tenants(store.db(), seal_id)?).await?);
        tenants.sort();
        tenants.dedup();
        for tenant in &tenants {
            let stored = store.ch().query_tsv(&rollup.read_stored(store.db(), seal_id, tenant)?).await?;
            let computed = store.ch().query_tsv(&rollup.read_computed(store.db(), seal_id, tenant)?).await?;
            if stored != computed {
                tracing::error!(
                    seal_id,
                    tenant,
                    table = rollup.table(),
                    stored = stored.len(),
                    computed = computed.len(),
                    "a seal's roll-up differs from its snapshot"
                );
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Recomputes `month`'s seal from its snapshot; `None` when it is not sealed.
pub async fn verify(store: &Store, month: BillingMonth) -> Result<Option<Verification>, StoreError> {
    let all = seals(store).await?;
    let name = month.to_string();
    let Some(p) = all.iter().find(|p| p.month == name).cloned() else { return Ok(None) };
    let Digested { digest: recomputed, rows, sla_rows, tenants, per_tenant } =
        digest_snapshot(store, &p.seal_id, &name, &p.previous_digest).await?;
    let expected_previous = previous_digest(&all, &name);
    let (from, to) = bounds(month);
    let rollups_verified = !p.rollups || rollups_match(store, &p.seal_id, tenants).await?;
    let mut parts: BTreeMap<String, TenantRows> = per_tenant
        .into_iter()
        .map(|(tenant, (rows, sla_rows))| (tenant.clone(), TenantRows { tenant, rows, sla_rows, late_rows: 0 }))
        .collect();
    let mut late_rows = 0;
    for tenant in live_tenants(store, Snapshot::Usage, from, to).await? {
        let late = store.ch().query_column(&schema::count_late(store.db(), &p.seal_id, &tenant, from, to)?).await?;
        let late = late.first().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        late_rows += late;
        if late > 0 {
            let part = parts.entry(tenant.clone()).or_insert_with(|| TenantRows {
                tenant,
                rows: 0,
                sla_rows: 0,
                late_rows: 0,
            });
            part.late_rows += late;
        }
    }
    Ok(Some(Verification {
        verified: recomputed == p.digest
            && rows == p.rows
            && sla_rows == p.sla_rows
            && expected_previous == p.previous_digest
            && rollups_verified,
        rollups_verified,
        recomputed_digest: recomputed,
        recomputed_rows: rows,
        recomputed_sla_rows: sla_rows,
        expected_previous_digest: expected_previous,
        late_rows,
        tenants: parts.into_values().collect(),
        period: p,
    }))
}
