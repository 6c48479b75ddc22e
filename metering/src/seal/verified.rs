//! Verifications as they were made, stored (migration 7): recomputing a seal reads its whole
//! snapshot (minutes at hundreds of tenants), so a reader is served the latest verification
//! made of the seal, by a background task or an explicit request, and not one made on its
//! request. Every verification is kept: when each was made and what it found.

use time::OffsetDateTime;

use super::store::{Period, Verification};
use crate::clickhouse::sql::{BadIdentifier, Param, Sql};
use crate::store::{Store, StoreError};

/// `CREATE TABLE IF NOT EXISTS db.seal_verifications ...`: one row per verification made, the
/// verification as JSON. No tenant: in cluster mode one replicated table on every server.
pub fn create_seal_verifications(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
        ".seal_verifications (month String, seal_id String, digest String, verified_at DateTime('UTC'), \
         verification String) ENGINE = MergeTree ORDER BY (month, seal_id, digest, verified_at)",
    ))
}

/// A verification and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// What it found.
    pub verification: Verification,
    /// When (to the second).
    pub at: OffsetDateTime,
}

/// Stores a verification made at `at`.
pub async fn record(store: &Store, verification: &Verification, at: OffsetDateTime) -> Result<(), StoreError> {
    let p = &verification.period;
    let json = serde_json::to_string(verification)
        .map_err(|e| StoreError::BadRow { row: vec![p.month.clone()], reason: e.to_string() })?;
    let sql = Sql::new("INSERT INTO ")
        .ident(store.db())?
        .push(".seal_verifications (month, seal_id, digest, verified_at, verification) VALUES (")
        .bind(p.month.as_str())
        .push(", ")
        .bind(p.seal_id.as_str())
        .push(", ")
        .bind(p.digest.as_str())
        .push(", ")
        .bind(Param::DateTime(at.unix_timestamp().clamp(0, i64::from(u32::MAX)) as u32))
        .push(", ")
        .bind(json)
        .push(")");
    Ok(store.ch().execute(&sql).await?)
}

/// The latest verification stored of `period` (its seal id and digest), if any.
pub async fn latest(store: &Store, period: &Period) -> Result<Option<Verified>, StoreError> {
    let sql = Sql::new("SELECT toUInt32(verified_at), verification FROM ")
        .ident(store.db())?
        .push(".seal_verifications WHERE month = ")
        .bind(period.month.as_str())
        .push(" AND seal_id = ")
        .bind(period.seal_id.as_str())
        .push(" AND digest = ")
        .bind(period.digest.as_str())
        .push(" ORDER BY verified_at DESC LIMIT 1");
    let Some(row) = store.ch().query_tsv(&sql).await?.into_iter().next() else { return Ok(None) };
    let bad = |row: &[String], reason: String| StoreError::BadRow { row: row.to_vec(), reason };
    let [at, json] = row.as_slice() else { return Err(bad(&row, "expected two fields".into())) };
    let at: i64 = at.parse().map_err(|_| bad(&row, "verified_at is not a UInt32".into()))?;
    let at = OffsetDateTime::from_unix_timestamp(at).map_err(|e| bad(&row, e.to_string()))?;
    let verification = serde_json::from_str(json).map_err(|e| bad(&row, format!("verification: {e}")))?;
    Ok(Some(Verified { verification, at }))
}
