//! Reads of merged SLA data: requests, errors, the merged latency sketch and
//! the surviving exemplars per tenant × service (× route) × hour, day or month.
//!
//! Reads collapse retried batches exactly, as `store::rollup` does for usage:
//! the inner query keeps one row per full key including the batch identity
//! (`any` of the whole row as one tuple, so fields never mix across rows); the
//! outer query sums counts, merges sketches with `sumMap` and keeps exemplars
//! in [`Exemplar`] order. The same SQL runs on 18.16 and on current servers.

use time::OffsetDateTime;

use super::record::{bound_exemplars, Exemplar, MAX_FAILED, MAX_SLOWEST};
use super::sketch::LatencySketch;
use crate::clickhouse::sql::{BadIdentifier, Sql};
use crate::seal::rollup::{Rollup, Sealed};
use crate::settle::{Settled, Table, Tail, Watermark};
use crate::store::rollup::{validate_range, Granularity, QueryError, Scan};
use crate::store::Store;
use crate::store::StoreError;

// The SQL below keeps 3 of each literally.
const _: () = assert!(MAX_SLOWEST == 3 && MAX_FAILED == 3);

/// How finely a read splits a tenant's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaGrouping {
    /// One series per service (all routes merged).
    Service,
    /// One series per service and route.
    Route,
}

/// An SLA read. Times are UTC instants on whole minutes; `to` is exclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaQuery {
    /// One tenant, or all.
    pub tenant: Option<String>,
    /// One service, or all.
    pub service: Option<String>,
    /// Start, inclusive.
    pub from: OffsetDateTime,
    /// End, exclusive.
    pub to: OffsetDateTime,
    /// Bucket size.
    pub granularity: Granularity,
    /// Per service, or per service and route.
    pub grouping: SlaGrouping,
    /// Read a sealed month's snapshot instead of live rows.
    pub sealed: Option<Sealed>,
    /// Only each tenant's buckets with errors and the lowest availability: at most this many, in
    /// that order (a report's worst hours), not every bucket.
    pub worst: Option<u32>,
    /// Live reads: the settled rows up to a watermark and the unsettled tail since it, as read
    /// once by the caller or by the query when it runs; before the first fold, every stored row
    /// is read and collapsed.
    pub settled: Settled,
}

/// One bucket of merged SLA data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaPoint {
    /// The tenant.
    pub tenant: String,
    /// The service.
    pub service: String,
    /// The route, when grouped by route.
    pub route: Option<String>,
    /// Bucket start, clipped to the query's `from`.
    pub start: OffsetDateTime,
    /// Bucket end (exclusive), clipped to the query's `to`.
    pub end: OffsetDateTime,
    /// Requests served.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// All the bucket's latencies: ask it any quantile.
    pub latency: LatencySketch,
    /// The slowest and the slowest failed requests of the bucket.
    pub exemplars: Vec<Exemplar>,
}

impl SlaQuery {
    /// All tenants and services, per route, by day.
    pub fn new(from: OffsetDateTime, to: OffsetDateTime) -> Self {
        Self {
            tenant: None,
            service: None,
            from,
            to,
            granularity: Granularity::Day,
            grouping: SlaGrouping::Route,
            sealed: None,
            worst: None,
            settled: Settled::Latest,
        }
    }

    /// Checks the request against the store's bounds.
    pub fn validate(&self) -> Result<(), QueryError> {
        validate_range(self.tenant.as_deref(), self.from, self.to)
    }

    /// The query's SQL against `db.sla`. Call [`validate`](Self::validate) first.
    pub fn to_sql(&self, db: &str) -> Result<Sql, BadIdentifier> {
        let route = match self.grouping {
            SlaGrouping::Service => "''",
            SlaGrouping::Route => "route",
        };
        // Outermost: only the fields parse_row reads, as plain comma lists.
        let mut sql = Sql::new(
            "SELECT tenant, service, rt, bucket, req, err, \
             arrayStringConcat(arrayMap(x -> toString(x), lat.1), ','), \
             arrayStringConcat(arrayMap(x -> toString(x), lat.2), ','), \
             arrayStringConcat(arrayMap(x -> x.2, kept), ','), \
             arrayStringConcat(arrayMap(x -> toString(x.1), kept), ','), \
             arrayStringConcat(arrayMap(x -> toString(x.3), kept), ',') FROM (SELECT tenant, service, ",
        )
        .push(route)
        .push(" AS rt, ")
        .push(self.granularity.bucket_expr())
        .push(
            " AS bucket, sum(r.1) AS req, sum(r.2) AS err, sumMap(r.3, r.4) AS lat, \
                 arrayReverseSort(groupArrayArray(arrayMap((l, t, e) -> (l, t, e), r.6, r.5, r.7))) AS ex, \
                 arrayConcat(arraySlice(ex, 1, 3), arraySlice(arrayFilter(x -> x.3 = 1, ex), 1, 3)) AS kept \
                 FROM (",
        );
        sql = match (&self.sealed, self.settled.at()) {
            // A snapshot is one row per key already: no per-key pass over it (see the usage roll-up).
            (Some(_), _) => self.rows(sql, db, None, false)?,
            (None, None) => self.rows(sql, db, None, true)?,
            // Settled rows are one per key too; only the tail since the last fold needs the pass.
            (None, Some(w)) if w.tail == Tail::Empty => self.settled_rows(sql, db, w)?,
            (None, Some(w)) => {
                let sql = self.settled_rows(sql, db, w)?.push(" UNION ALL ");
                self.rows(sql, db, Some(w), true)?
            }
        };
        Ok(match self.worst {
            None => sql.push(") GROUP BY tenant, service, rt, bucket) ORDER BY tenant, service, rt, bucket"),
            // Worst first as the report orders them, but by a Float64 ratio: a correctly rounded
            // division never inverts two ratios, only ties ones closer than its precision (which
            // takes counts past 2^26 an hour), so the report orders what comes exactly.
            Some(n) => sql
                .push(
                    ") GROUP BY tenant, service, rt, bucket HAVING err > 0) \
                     ORDER BY tenant, err / req DESC, err DESC, bucket, service, rt LIMIT ",
                )
                .bind(u64::from(n))
                .push(" BY tenant"),
        })
    }

    /// `sql` followed by the settled rows up to `w`: rolled-up hours from `sla_settled_hourly`
    /// when the read is of whole hours, the rest of its range from minute rows (`UNION ALL`).
    fn settled_rows(&self, sql: Sql, db: &str, w: Watermark) -> Result<Sql, BadIdentifier> {
        let Some((a, b)) = w.rolled_part(Table::Sla, self.granularity, self.from, self.to) else {
            return self.rows(sql, db, Some(w), false);
        };
        let at = |t: u32| OffsetDateTime::from_unix_timestamp(i64::from(t)).expect("a u32 is a time");
        let (a, b) = (at(a), at(b));
        let part = |from, to| SlaQuery { from, to, ..self.clone() };
        let mut sql = w.rollups(part(a, b).stored_rows(sql, db, Table::Sla.rolled())?, db)?;
        if let Some(minutes) = w.late {
            let late = part(a, b).stored_rows(sql.push(" UNION ALL "), db, Table::Sla.settled())?;
            sql = w.late_rows(late.push(Table::Sla.data_rows()), db, minutes)?;
        }
        for (from, to) in [(self.from, a), (b, self.to)] {
            if from < to {
                sql = part(from, to).rows(sql.push(" UNION ALL "), db, Some(w), false)?;
            }
        }
        Ok(sql)
    }

    /// `sql` followed by `SELECT` the read's rows of `table` (`.sla_settled_hourly` or
    /// `.sla_settled`, one row per key) as they are stored, narrowed to its range, tenant and
    /// service: the caller adds which folds or roll-ups count.
    fn stored_rows(&self, sql: Sql, db: &str, table: &'static str) -> Result<Sql, BadIdentifier> {
        let sql = sql.push(
            "SELECT tenant, service, route, window_start, (requests, errors, latency_buckets, latency_counts, \
             exemplar_trace_ids, exemplar_latencies_ns, exemplar_errors) AS r FROM ",
        );
        let mut sql = self.scan().push_table(sql, db, table)?;
        if let Some(service) = &self.service {
            sql = sql.push(" AND service = ").bind(service);
        }
        Ok(sql)
    }

    /// `sql` followed by one `SELECT` of the rows the read merges, one per key: of the snapshot
    /// or the settled rows (`raw` false), or of `sla` collapsed by batch identity (all of it, or
    /// the tail past `settled`).
    fn rows(&self, sql: Sql, db: &str, settled: Option<Watermark>, raw: bool) -> Result<Sql, BadIdentifier> {
        let sql = sql.push("SELECT tenant, service, route, window_start, ").push(if raw {
            "any((requests, errors, latency_buckets, latency_counts, exemplar_trace_ids, exemplar_latencies_ns, \
             exemplar_errors)) AS r FROM "
        } else {
            "(requests, errors, latency_buckets, latency_counts, exemplar_trace_ids, exemplar_latencies_ns, \
             exemplar_errors) AS r FROM "
        });
        let scan = self.scan();
        let narrow = |mut sql: Sql| {
            if let Some(service) = &self.service {
                sql = sql.push(" AND service = ").bind(service);
            }
            sql
        };
        let mut sql = match (settled, raw) {
            (Some(_), false) => narrow(scan.push_table(sql, db, Table::Sla.settled())?),
            _ => narrow(scan.push(sql, db)?),
        };
        match (settled, raw) {
            (Some(w), false) => return w.folds(sql.push(Table::Sla.data_rows()), db),
            (None, false) => return Ok(sql),
            (Some(w), true) => {
                sql = w.tail_rows(sql);
                let rows = w.tail_rows(narrow(scan.conditions()));
                sql = w.unfolded(sql, db, Table::Sla, w.tail_minutes(scan.conditions()), &rows)?;
            }
            (None, true) => {}
        }
        Ok(sql.push(" GROUP BY tenant, service, route, window_start, source_id, batch_seq"))
    }

    fn scan(&self) -> Scan<'_> {
        Scan {
            rollup: Rollup::SlaHourly,
            granularity: self.granularity,
            from: self.from,
            to: self.to,
            sealed: self.sealed.as_ref(),
            tenant: self.tenant.as_deref(),
        }
    }

    /// Reads the rows [`to_sql`](Self::to_sql) returns (as TabSeparated fields).
    pub fn parse_rows(&self, rows: Vec<Vec<String>>) -> Result<Vec<SlaPoint>, StoreError> {
        rows.into_iter().map(|row| self.parse_row(row)).collect()
    }

    fn parse_row(&self, row: Vec<String>) -> Result<SlaPoint, StoreError> {
        let bad = |row: &[String], reason: String| StoreError::BadRow { row: row.to_vec(), reason };
        let fields: [String; 11] =
            <[String; 11]>::try_from(row).map_err(|row| bad(&row, "expected 11 fields".into()))?;
        let num = |i: usize| fields[i].parse::<u64>().map_err(|_| bad(&fields, format!("field {i} is not a UInt64")));
        let nums = |i: usize| -> Result<Vec<u64>, StoreError> {
            split(&fields[i])
                .map(|s| s.parse::<u64>())
                .collect::<Result<_, _>>()
                .map_err(|_| bad(&fields, format!("field {i} is not a list of UInt64")))
        };
        let bucket = num(3)?;
        let latency =
            LatencySketch::from_buckets(nums(6)?, nums(7)?).map_err(|e| bad(&fields, format!("latency: {e}")))?;
        let (ids, latencies, errors) = (split(&fields[8]).collect::<Vec<_>>(), nums(9)?, nums(10)?);
        if ids.len() != latencies.len() || ids.len() != errors.len() {
            return Err(bad(&fields, "exemplar arrays differ in length".into()));
        }
        let mut exemplars: Vec<Exemplar> = (ids.into_iter().zip(latencies).zip(errors))
            .map(|((id, latency_ns), e)| Exemplar { trace_id: id.to_owned(), latency_ns, error: e != 0 })
            .collect();
        bound_exemplars(&mut exemplars);
        let start = (bucket as i64).max(self.from.unix_timestamp());
        let end = self.granularity.bucket_end(bucket as i64).min(self.to.unix_timestamp());
        let at = |secs| OffsetDateTime::from_unix_timestamp(secs).map_err(|_| bad(&fields, "time out of range".into()));
        Ok(SlaPoint {
            start: at(start)?,
            end: at(end)?,
            requests: num(4)?,
            errors: num(5)?,
            latency,
            exemplars,
            route: (self.grouping == SlaGrouping::Route).then(|| fields[2].clone()),
            service: fields[1].clone(),
            tenant: fields[0].clone(),
        })
    }
}

fn split(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').filter(|p| !p.is_empty())
}

/// Runs an SLA read against `db.sla`.
pub async fn query_sla(store: &Store, query: &SlaQuery) -> Result<Vec<SlaPoint>, StoreError> {
    let mut query = query.clone();
    if query.sealed.is_none() {
        query.settled = Settled::At(match query.settled.watermark(store).await? {
            Some(w) => Some(w.with_tail(store, Table::Sla, query.tenant.as_deref(), query.scan().seconds()).await?),
            None => None,
        });
    }
    let rows = store.ch().query_tsv(&query.to_sql(store.db())?).await?;
    query.parse_rows(rows)
}
