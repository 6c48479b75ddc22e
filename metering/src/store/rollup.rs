//! Roll-ups of stored usage to minute, hour, day or month buckets (UTC),
//! optionally per service, with keyset pagination.
//!
//! Reads collapse retried batches exactly: the inner query groups by the full
//! row key including the batch identity and keeps one value per key; the outer
//! query combines the keys of a bucket by the rows' stored aggregation: the sum
//! (built-ins, `count`, `sum`), the largest (`max`), or the number of distinct
//! `unique_value`s (`unique_count`: a month's unique users are counted over the
//! month, not summed from its minutes). This costs one extra aggregation over
//! pre-aggregated minute rows, not over raw events.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use time::OffsetDateTime;

pub use super::granularity::Granularity;
use super::StoreError;
use crate::clickhouse::sql::{BadIdentifier, Param, Sql};
use crate::meter::Catalog;
use crate::record::{validate_tenant, TenantError};
use crate::seal::rollup::{Rollup, Sealed};
use crate::settle::{Settled, Table, Tail, Watermark};
use crate::store::Store;

/// The largest page a query may ask for.
pub const MAX_LIMIT: u32 = 10_000;

/// Where a page starts: the key of the last point of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageKey {
    /// Tenant of the last point.
    pub tenant: String,
    /// Meter of the last point.
    pub meter: String,
    /// Bucket start (Unix seconds) of the last point.
    pub bucket: u32,
    /// Service of the last point (empty unless grouped by service).
    pub service: String,
    /// Dimensions of the last point as stored (empty unless grouped by dimensions).
    pub dimensions: String,
}

/// A roll-up request. Times are UTC instants on whole minutes; `to` is exclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    /// One tenant, or all.
    pub tenant: Option<String>,
    /// One meter, or all.
    pub meter: Option<String>,
    /// Start, inclusive.
    pub from: OffsetDateTime,
    /// End, exclusive.
    pub to: OffsetDateTime,
    /// Bucket size.
    pub granularity: Granularity,
    /// One series per service instead of one per tenant and meter.
    pub group_by_service: bool,
    /// One series per set of dimensions (custom meters' `group_by` values) too.
    pub group_by_dimensions: bool,
    /// Continue after this key.
    pub after: Option<UsageKey>,
    /// At most this many points.
    pub limit: u32,
    /// Read a sealed month's snapshot instead of live usage.
    pub sealed: Option<Sealed>,
    /// Live reads: the settled rows up to a watermark and the unsettled tail since it, as read
    /// once by the caller or by the query when it runs; before the first fold, every stored row
    /// is read and collapsed.
    pub settled: Settled,
}

/// Which rows a roll-up reads.
#[derive(Debug, Clone, Copy)]
enum Rows {
    /// One row per key already: a seal's snapshot, or settled rows up to a watermark.
    Collapsed(Option<Watermark>),
    /// Settled rows rolled up by day, up to a watermark.
    Rolled(Watermark),
    /// Settled minute rows of rolled-up days that their roll-ups do not hold (late usage), in
    /// the minutes of the folds that took them.
    Late(Watermark, (u32, u32)),
    /// `usage` rows, collapsed by key and batch identity: all of them, or the tail past a watermark.
    Raw(Option<Watermark>),
}

/// One bucket of usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsagePoint {
    /// The tenant.
    pub tenant: String,
    /// The meter.
    pub meter: String,
    /// The service, when grouped by service.
    pub service: Option<String>,
    /// The dimensions, when grouped by dimensions.
    pub dimensions: Option<BTreeMap<String, String>>,
    /// Bucket start, clipped to the query's `from`.
    pub start: OffsetDateTime,
    /// Bucket end (exclusive), clipped to the query's `to`.
    pub end: OffsetDateTime,
    /// The bucket's value: the sum, or for `max` meters the largest, or for
    /// `unique_count` meters the number of distinct values.
    pub value: Decimal,
    /// The meter's unit.
    pub unit: String,
    /// The point's pagination key.
    pub key: UsageKey,
}

/// Why a roll-up request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The tenant id is malformed.
    #[error("tenant: {0}")]
    Tenant(#[from] TenantError),
    /// The meter is not known.
    #[error("unknown meter {meter:?}; known meters: {known}")]
    UnknownMeter {
        /// As given.
        meter: String,
        /// The catalog.
        known: String,
    },
    /// `from` is not before `to`.
    #[error("`from` ({from}) must be before `to` ({to})")]
    EmptyRange {
        /// As given, RFC 3339.
        from: String,
        /// As given, RFC 3339.
        to: String,
    },
    /// A bound is not on a whole minute.
    #[error("`{field}` ({value}) must be on a whole minute: usage is stored in 1-minute buckets")]
    NotMinuteAligned {
        /// `from` or `to`.
        field: &'static str,
        /// As given.
        value: String,
    },
    /// A bound is outside what the store holds.
    #[error("`{field}` ({value}) is outside 1970-01-01T00:00:00Z..2106-02-07T06:28:00Z")]
    OutOfRange {
        /// `from` or `to`.
        field: &'static str,
        /// As given.
        value: String,
    },
    /// The page size is out of bounds.
    #[error("`limit` must be between 1 and {MAX_LIMIT}, got {0}")]
    Limit(u32),
}

/// `t` as RFC 3339, as the API and errors write times.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// `t` as Unix seconds, refused unless minute-aligned and within ClickHouse's `DateTime`.
pub fn unix_seconds(field: &'static str, t: OffsetDateTime) -> Result<u32, QueryError> {
    let secs = t.unix_timestamp();
    if t.nanosecond() != 0 || secs % 60 != 0 {
        return Err(QueryError::NotMinuteAligned { field, value: rfc3339(t) });
    }
    u32::try_from(secs).map_err(|_| QueryError::OutOfRange { field, value: rfc3339(t) })
}

impl UsageQuery {
    /// A query for all tenants and meters by day, first page of 1,000.
    pub fn new(from: OffsetDateTime, to: OffsetDateTime) -> Self {
        Self {
            tenant: None,
            meter: None,
            from,
            to,
            granularity: Granularity::Day,
            group_by_service: false,
            group_by_dimensions: false,
            after: None,
            limit: 1000,
            sealed: None,
            settled: Settled::Latest,
        }
    }

    /// Checks the request against the catalog and the store's bounds.
    pub fn validate(&self, catalog: &Catalog) -> Result<(), QueryError> {
        validate_range(self.tenant.as_deref(), self.from, self.to)?;
        if let Some(meter) = &self.meter {
            if catalog.get(meter).is_none() {
                return Err(QueryError::UnknownMeter { meter: meter.clone(), known: catalog.names() });
            }
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(QueryError::Limit(self.limit));
        }
        Ok(())
    }

    /// The query's SQL against `db.usage` (and, past a [`Watermark`], `db.usage_settled`). Call
    /// [`validate`](Self::validate) first.
    pub fn to_sql(&self, db: &str) -> Result<Sql, BadIdentifier> {
        let service = if self.group_by_service { "service" } else { "''" };
        let dims = if self.group_by_dimensions { "dimensions" } else { "''" };
        let mut sql = Sql::new("SELECT tenant, meter, ")
            .push(self.granularity.bucket_expr())
            .push(" AS bucket, ")
            .push(service)
            .push(" AS svc, ")
            .push(dims)
            .push(
                " AS dims, multiIf(any(a) = 'max', max(v), \
                 any(a) = 'unique_count', toDecimal128(uniqExact(unique_value), 9), sum(v)) AS total, \
                 any(u) AS unit FROM (",
            );
        sql = match (&self.sealed, self.settled.at()) {
            // A snapshot is already one row per key (sealing collapsed it): read as it is, without
            // the per-key hash of every row that live usage needs (about 10× the cost).
            (Some(_), _) => self.rows(sql, db, Rows::Collapsed(None))?,
            (None, None) => self.rows(sql, db, Rows::Raw(None))?,
            // Settled rows need no collapsing either; only the tail since the last fold does.
            (None, Some(w)) if w.tail == Tail::Empty => self.settled_rows(sql, db, w)?,
            (None, Some(w)) => {
                let sql = self.settled_rows(sql, db, w)?.push(" UNION ALL ");
                self.rows(sql, db, Rows::Raw(Some(w)))?
            }
        };
        sql = sql.push(") GROUP BY tenant, meter, bucket, svc, dims");
        if let Some(after) = &self.after {
            sql = sql
                .push(" HAVING (tenant, meter, bucket, svc, dims) > (")
                .bind(&after.tenant)
                .push(", ")
                .bind(&after.meter)
                .push(", ")
                .bind(u64::from(after.bucket))
                .push(", ")
                .bind(&after.service)
                .push(", ")
                .bind(&after.dimensions)
                .push(")");
        }
        Ok(sql.push(" ORDER BY tenant, meter, bucket, svc, dims LIMIT ").bind(u64::from(self.limit)))
    }

    /// `sql` followed by the settled rows up to `w`: rolled-up days from `usage_settled_daily`
    /// when the read is of whole days, the rest of its range from minute rows (`UNION ALL`).
    fn settled_rows(&self, sql: Sql, db: &str, w: Watermark) -> Result<Sql, BadIdentifier> {
        let Some((a, b)) = w.rolled_part(Table::Usage, self.granularity, self.from, self.to) else {
            return self.rows(sql, db, Rows::Collapsed(Some(w)));
        };
        let at = |t: u32| OffsetDateTime::from_unix_timestamp(i64::from(t)).expect("a u32 is a time");
        let (a, b) = (at(a), at(b));
        let part = |from, to| UsageQuery { from, to, ..self.clone() };
        let mut sql = part(a, b).rows(sql, db, Rows::Rolled(w))?;
        if let Some(minutes) = w.late {
            sql = part(a, b).rows(sql.push(" UNION ALL "), db, Rows::Late(w, minutes))?;
        }
        for (from, to) in [(self.from, a), (b, self.to)] {
            if from < to {
                sql = part(from, to).rows(sql.push(" UNION ALL "), db, Rows::Collapsed(Some(w)))?;
            }
        }
        Ok(sql)
    }

    /// `sql` followed by one `SELECT` of the rows the query rolls up, one value per key.
    fn rows(&self, sql: Sql, db: &str, rows: Rows) -> Result<Sql, BadIdentifier> {
        let sql = sql.push("SELECT tenant, meter, window_start, service, dimensions, unique_value, ");
        let mut sql = match rows {
            Rows::Collapsed(None) => self.scan().push(sql.push("value AS v, unit AS u, aggregation AS a FROM "), db)?,
            Rows::Collapsed(Some(_)) | Rows::Late(..) | Rows::Rolled(_) => self.scan().push_table(
                sql.push("value AS v, unit AS u, aggregation AS a FROM "),
                db,
                if matches!(rows, Rows::Rolled(_)) { Table::Usage.rolled() } else { Table::Usage.settled() },
            )?,
            Rows::Raw(_) => {
                self.scan().push(sql.push("max(value) AS v, any(unit) AS u, any(aggregation) AS a FROM "), db)?
            }
        };
        sql = self.narrow(sql);
        match rows {
            Rows::Collapsed(None) => Ok(sql),
            // Identity rows (no meter) are for the test above, not usage.
            Rows::Collapsed(Some(w)) => w.folds(sql.push(Table::Usage.data_rows()), db),
            Rows::Rolled(w) => w.rollups(sql, db),
            Rows::Late(w, minutes) => w.late_rows(sql.push(Table::Usage.data_rows()), db, minutes),
            Rows::Raw(settled) => {
                if let Some(w) = settled {
                    sql = w.tail_rows(sql);
                    let raw = w.tail_rows(self.narrow(self.scan().conditions()));
                    sql = w.unfolded(sql, db, Table::Usage, w.tail_minutes(self.scan().conditions()), &raw)?;
                }
                Ok(sql.push(
                    " GROUP BY tenant, meter, window_start, service, route, dimensions, source_id, batch_seq, \
                     unique_value",
                ))
            }
        }
    }

    /// `sql` (a scan's `WHERE`) narrowed to the pages after `after` and the meter asked for.
    fn narrow(&self, mut sql: Sql) -> Sql {
        if let Some(after) = &self.after {
            sql = skip_pages(sql, after);
        }
        if let Some(meter) = &self.meter {
            sql = sql.push(" AND meter = ").bind(meter);
        }
        sql
    }

    fn scan(&self) -> Scan<'_> {
        Scan {
            rollup: Rollup::UsageDaily,
            granularity: self.granularity,
            from: self.from,
            to: self.to,
            sealed: self.sealed.as_ref(),
            tenant: self.tenant.as_deref(),
        }
    }

    /// Reads the rows [`to_sql`](Self::to_sql) returns (as TabSeparated fields).
    pub fn parse_rows(&self, rows: Vec<Vec<String>>) -> Result<Vec<UsagePoint>, StoreError> {
        rows.into_iter().map(|row| self.parse_row(row)).collect()
    }

    fn parse_row(&self, row: Vec<String>) -> Result<UsagePoint, StoreError> {
        let bad = |row: &[String], reason: &str| StoreError::BadRow { row: row.to_vec(), reason: reason.to_owned() };
        let [tenant, meter, bucket, service, dims, total, unit] =
            <[String; 7]>::try_from(row).map_err(|row| bad(&row, "expected 7 fields"))?;
        let fields =
            || vec![tenant.clone(), meter.clone(), bucket.clone(), service.clone(), dims.clone(), total.clone()];
        let bucket: u32 = bucket.parse().map_err(|_| bad(&fields(), "bucket is not a UInt32"))?;
        let value: Decimal = total.parse().map_err(|_| bad(&fields(), "total is not a decimal"))?;
        let start = i64::from(bucket).max(self.from.unix_timestamp());
        let end = self.granularity.bucket_end(i64::from(bucket)).min(self.to.unix_timestamp());
        let at = |secs| OffsetDateTime::from_unix_timestamp(secs).map_err(|_| bad(&fields(), "time out of range"));
        let dimensions = match (self.group_by_dimensions, dims.as_str()) {
            (false, _) => None,
            (true, "") => Some(BTreeMap::new()),
            (true, json) => Some(
                serde_json::from_str(json)
                    .map_err(|_| bad(&fields(), "dimensions are not a JSON object of strings"))?,
            ),
        };
        Ok(UsagePoint {
            start: at(start)?,
            end: at(end)?,
            value: value.normalize(),
            unit,
            service: self.group_by_service.then(|| service.clone()),
            dimensions,
            key: UsageKey { tenant: tenant.clone(), meter: meter.clone(), bucket, service, dimensions: dims },
            tenant,
            meter,
        })
    }
}

/// `sql` (a scan's `WHERE`) also dropping the rows of series and buckets before `after`'s: a
/// later page aggregates only what is left of the range, not all of it again. The rows of
/// `after`'s own bucket stay (its other services follow it); the `HAVING` keeps the exact order.
/// Written as `OR`s of comparisons on the sorting key's prefix, which 18.16's index analysis
/// uses (it does not use tuple comparisons).
fn skip_pages(sql: Sql, after: &UsageKey) -> Sql {
    sql.push(" AND (tenant > ")
        .bind(&after.tenant)
        .push(" OR (tenant = ")
        .bind(&after.tenant)
        .push(" AND (meter > ")
        .bind(&after.meter)
        .push(" OR (meter = ")
        .bind(&after.meter)
        .push(" AND window_start >= ")
        .bind(Param::DateTime(after.bucket))
        .push("))))")
}

/// Checks a read's tenant and its range `[from, to)`: usage and SLA reads alike.
pub(crate) fn validate_range(tenant: Option<&str>, from: OffsetDateTime, to: OffsetDateTime) -> Result<(), QueryError> {
    if let Some(tenant) = tenant {
        validate_tenant(tenant)?;
    }
    if unix_seconds("from", from)? >= unix_seconds("to", to)? {
        return Err(QueryError::EmptyRange { from: rfc3339(from), to: rfc3339(to) });
    }
    Ok(())
}

/// The rows a read scans: the live table of `rollup`, or a seal's snapshot or roll-up of it,
/// in `[from, to)`, of one tenant when given. Usage and SLA reads both start from it.
pub(crate) struct Scan<'a> {
    pub rollup: Rollup,
    pub granularity: Granularity,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub sealed: Option<&'a Sealed>,
    pub tenant: Option<&'a str>,
}

impl Scan<'_> {
    /// `sql` followed by `db.table WHERE …`.
    pub(crate) fn push(&self, sql: Sql, db: &str) -> Result<Sql, BadIdentifier> {
        // A snapshot and its roll-up have the live table's columns, so the same read serves them.
        let table = match self.sealed {
            None => self.rollup.live_table(),
            Some(s) => s.table(self.rollup, self.granularity, self.from, self.to),
        };
        self.push_table(sql, db, table)
    }

    /// `sql` followed by `db.<table> WHERE …`, for a table with the live table's columns.
    pub(crate) fn push_table(&self, sql: Sql, db: &str, table: &'static str) -> Result<Sql, BadIdentifier> {
        Ok(sql.ident(db)?.push(table).push(" WHERE ").append(self.conditions()))
    }

    /// The range `[from, to)` in Unix seconds, as `DateTime` holds them.
    pub(crate) fn seconds(&self) -> (u32, u32) {
        let secs = |t: OffsetDateTime| u32::try_from(t.unix_timestamp().max(0)).unwrap_or(u32::MAX);
        (secs(self.from), secs(self.to))
    }

    /// The `WHERE` body: the range, the seal, the tenant.
    pub(crate) fn conditions(&self) -> Sql {
        let (from, to) = self.seconds();
        let mut sql = Sql::new("window_start >= ")
            .bind(Param::DateTime(from))
            .push(" AND window_start < ")
            .bind(Param::DateTime(to));
        if let Some(s) = self.sealed {
            sql = sql.push(" AND seal_id = ").bind(&s.seal_id);
        }
        if let Some(tenant) = self.tenant {
            sql = sql.push(" AND tenant = ").bind(tenant);
        }
        sql
    }
}

/// The longest tail (since the latest fold's start) with which one read of every tenant's live
/// rows is still cheap: with `tally settle` running every minute it is about its margin (1 h).
const SHARED_TAIL_SECS: i64 = 6 * 3600;

/// Whether one read of every tenant (no `tenant`) is cheap enough to serve reports and invoices
/// of many tenants: a seal with roll-ups, or live rows with a recent watermark. Settled rows and
/// roll-ups are one row per key, aggregated as they stream; the tail since the watermark (and
/// every live row before the first fold) is collapsed by batch identity, which holds an entry
/// per row in the server's memory until the read ends (8.7 GB for 50 tenants' month of raw
/// minute usage): past that, a read per tenant.
pub fn one_read_for_all(sealed: Option<&Sealed>, settled: Settled) -> bool {
    match (sealed, settled.at()) {
        (Some(s), _) => s.rollups,
        (None, Some(w)) => {
            let age = OffsetDateTime::now_utc().unix_timestamp() - i64::from(w.tail_from);
            if age > SHARED_TAIL_SECS {
                // Reads stay exact, but cost a query per tenant again: say why.
                tracing::warn!(
                    tail_secs = age,
                    "the latest fold started over 6 h ago; reading tenant by tenant (is tally settle running?)"
                );
            }
            age <= SHARED_TAIL_SECS
        }
        (None, None) => false,
    }
}

/// Runs a roll-up against `db.usage`.
pub async fn query_usage(store: &Store, query: &UsageQuery) -> Result<Vec<UsagePoint>, StoreError> {
    let mut query = query.clone();
    if query.sealed.is_none() {
        query.settled = Settled::At(match query.settled.watermark(store).await? {
            Some(w) => Some(w.with_tail(store, Table::Usage, query.tenant.as_deref(), query.scan().seconds()).await?),
            None => None,
        });
    }
    let rows = store.ch().query_tsv(&query.to_sql(store.db())?).await?;
    query.parse_rows(rows)
}

/// Runs a roll-up against `db.usage` page after page (of [`MAX_LIMIT`] points,
/// whatever `query.limit` says) and returns every point, for readers that need
/// a whole month at once (invoices, reports).
pub async fn query_usage_all(store: &Store, query: &UsageQuery) -> Result<Vec<UsagePoint>, StoreError> {
    let mut query = query.clone();
    query.limit = MAX_LIMIT;
    let mut all = Vec::new();
    loop {
        let points = query_usage(store, &query).await?;
        let full = points.len() == MAX_LIMIT as usize;
        query.after = points.last().map(|p| p.key.clone());
        all.extend(points);
        if !full {
            return Ok(all);
        }
    }
}
