//! The batched usage writer: validates batches, sums records that share a key,
//! encodes rows as RowBinary and inserts many batches in one INSERT.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::{schema, StoreError};
use crate::clickhouse::rowbinary::Row;
use crate::clickhouse::sql::{check_identifier, BadIdentifier, Sql};
use crate::clickhouse::{ClickHouse, ClickHouseError};
use crate::meter::Catalog;
use crate::record::{check_record, minute_of, RecordError, RecordProblem, UsageBatch, VALUE_SCALE};

/// The key a row is stored under within its batch: tenant, meter, minute, service,
/// route, dimensions (canonical JSON) and unique value.
type RowKey<'a> = (&'a str, &'a str, u32, &'a str, &'a str, String, &'a str);

/// Encodes a batch as RowBinary rows of `usage` ([`schema::USAGE_ROW`]) into
/// `out` and returns the number of rows. Records sharing tenant, meter, minute,
/// dimensions and unique value are combined first by the meter's aggregation
/// (summed, or the largest kept for `max` and `unique_count`), so each key
/// appears once per batch (the store collapses equal keys; two rows with one key
/// would lose one). A bad record rejects the whole batch and leaves `out` untouched.
///
/// ```
/// use metering::{meter::Catalog, record::{UsageBatch, UsageRecord}, store::writer::encode_batch};
/// use time::macros::datetime;
/// let t = datetime!(2026-05-01 10:00:05 UTC);
/// let batch = UsageBatch { source_id: "agent-1".into(), seq: 1, records: vec![
///     UsageRecord::new("acme", "spans", t, 2.into()),
///     UsageRecord::new("acme", "spans", t + time::Duration::seconds(30), 3.into()),
/// ]};
/// let mut out = Vec::new();
/// assert_eq!(encode_batch(&batch, &Catalog::builtin(), &mut out), Ok(1));
/// ```
pub fn encode_batch(batch: &UsageBatch, catalog: &Catalog, out: &mut Vec<u8>) -> Result<usize, RecordError> {
    let reject = |index, reason| RecordError { source_id: batch.source_id.clone(), seq: batch.seq, index, reason };
    if batch.source_id.is_empty() {
        return Err(reject(0, RecordProblem::EmptySource));
    }
    let mut rows: BTreeMap<RowKey<'_>, Decimal> = BTreeMap::new();
    for (index, record) in batch.records.iter().enumerate() {
        check_record(record, catalog).map_err(|reason| reject(index, reason))?;
        let aggregation = catalog.get(&record.meter).expect("checked above").aggregation;
        let dims = if record.dimensions.is_empty() {
            String::new()
        } else {
            // BTreeMap order makes the JSON canonical, so equal dimensions give equal keys.
            serde_json::to_string(&record.dimensions).expect("string map serializes")
        };
        let key = (
            record.tenant.as_str(),
            record.meter.as_str(),
            minute_of(record.time),
            record.service.as_str(),
            record.route.as_str(),
            dims,
            record.unique.as_str(),
        );
        match rows.entry(key) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(record.value);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let combined = aggregation.combine(*e.get(), record.value);
                *e.get_mut() = combined.ok_or_else(|| reject(index, RecordProblem::Overflow))?;
            }
        }
    }
    for ((tenant, meter, minute, service, route, dims, unique), value) in &rows {
        let m = catalog.get(meter).expect("checked above");
        Row::new(schema::USAGE_ROW, out)
            .str("tenant", tenant)
            .str("meter", meter)
            .datetime("window_start", *minute)
            .str("service", service)
            .str("route", route)
            .str("dimensions", dims)
            .str("unique_value", unique)
            .decimal("value", *value, VALUE_SCALE)
            .str("unit", m.unit.as_str())
            .str("aggregation", m.aggregation.as_str())
            .str("source_id", &batch.source_id)
            .u64("batch_seq", batch.seq)
            .finish();
    }
    Ok(rows.len())
}

/// Encoded rows of one table on their way into one INSERT: the one write path. The collector's
/// sink fills it from its spool, [`UsageWriter`] from batches; both insert with [`RowBuffer::flush`].
#[derive(Debug)]
pub struct RowBuffer {
    insert: Sql,
    data: Vec<u8>,
    rows: u64,
}

impl RowBuffer {
    /// An empty buffer for `insert` (`db.table (columns)`, e.g. [`schema::insert_usage`]).
    pub fn new(insert: Sql) -> Self {
        Self { insert, data: Vec::new(), rows: 0 }
    }

    /// Appends `rows` rows already encoded as RowBinary in `data`.
    pub fn append(&mut self, rows: u64, data: &[u8]) {
        self.data.extend_from_slice(data);
        self.rows += rows;
    }

    /// Where encoders append rows; the caller counts them with [`RowBuffer::count`].
    pub fn data_mut(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Counts `rows` rows written through [`RowBuffer::data_mut`].
    pub fn count(&mut self, rows: u64) {
        self.rows += rows;
    }

    /// Rows buffered and not yet inserted.
    pub fn pending_rows(&self) -> u64 {
        self.rows
    }

    /// Bytes buffered and not yet inserted.
    pub fn pending_bytes(&self) -> usize {
        self.data.len()
    }

    /// Drops everything buffered.
    pub fn discard(&mut self) {
        self.data.clear();
        self.rows = 0;
    }

    /// Inserts everything buffered in one INSERT through `ch`; returns the rows inserted. On
    /// error the buffer is kept for a retry: the rows carry their batch identities, so a retry of
    /// rows that did land counts nothing twice.
    pub async fn flush(&mut self, ch: &ClickHouse) -> Result<u64, ClickHouseError> {
        if self.rows == 0 {
            return Ok(0);
        }
        let body = bytes::Bytes::from(std::mem::take(&mut self.data));
        if let Err(e) = ch.insert_rowbinary(&self.insert, body.clone()).await {
            // Ours is the only other handle once the request is dropped, so this does not copy.
            self.data = Vec::from(body);
            return Err(e);
        }
        Ok(std::mem::take(&mut self.rows))
    }
}

/// Validates batches, encodes them and inserts them together through a [`RowBuffer`].
///
/// A failed flush keeps the buffer, so the caller can retry it: the rows carry
/// their batch identities, and a retry of rows that did land counts nothing twice.
#[derive(Debug)]
pub struct UsageWriter {
    ch: ClickHouse,
    catalog: Catalog,
    rows: RowBuffer,
}

impl UsageWriter {
    /// A writer into `database.usage`.
    pub fn new(ch: ClickHouse, database: &str, catalog: Catalog) -> Result<Self, BadIdentifier> {
        check_identifier(database)?;
        Ok(Self { ch, catalog, rows: RowBuffer::new(schema::insert_usage(database)?) })
    }

    /// Validates and buffers a batch; returns the rows it added. A refused batch adds nothing.
    pub fn push(&mut self, batch: &UsageBatch) -> Result<usize, RecordError> {
        let rows = encode_batch(batch, &self.catalog, self.rows.data_mut())?;
        self.rows.count(rows as u64);
        Ok(rows)
    }

    /// Rows buffered and not yet inserted.
    pub fn pending_rows(&self) -> usize {
        self.rows.pending_rows() as usize
    }

    /// Bytes buffered and not yet inserted.
    pub fn pending_bytes(&self) -> usize {
        self.rows.pending_bytes()
    }

    /// Drops everything buffered. For callers that tell their sender to resend
    /// instead of retrying themselves: keeping the rows too would count them twice.
    pub fn discard(&mut self) {
        self.rows.discard();
    }

    /// Inserts everything buffered in one INSERT; returns the rows inserted.
    /// On error the buffer is kept for a retry.
    pub async fn flush(&mut self) -> Result<usize, StoreError> {
        Ok(self.rows.flush(&self.ch).await? as usize)
    }
}
