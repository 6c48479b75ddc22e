//! One fold, and the watermark reads combine with.

use std::time::Duration;

use crate::clickhouse::sql::{BadIdentifier, Param, Sql};
use crate::store::{Store, StoreError};

use super::rollup::Days;

/// A table of batch rows and its settled table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `usage` → `usage_settled`.
    Usage,
    /// `sla` → `sla_settled`.
    Sla,
}

impl Table {
    /// Both, in the order a fold writes them.
    pub const ALL: [Table; 2] = [Table::Usage, Table::Sla];

    /// `.raw` (after the database).
    pub const fn raw(self) -> &'static str {
        match self {
            Table::Usage => ".usage",
            Table::Sla => ".sla",
        }
    }

    /// `.settled` (after the database).
    pub const fn settled(self) -> &'static str {
        match self {
            Table::Usage => ".usage_settled",
            Table::Sla => ".sla_settled",
        }
    }

    /// ` AND` the settled table's rows that are usage (or SLA data), not identities.
    pub const fn data_rows(self) -> &'static str {
        match self {
            Table::Usage => " AND meter != ''",
            Table::Sla => " AND source_id = ''",
        }
    }

    /// The settled table's identity rows: ` WHERE … AND `.
    const fn identity_rows(self) -> &'static str {
        match self {
            Table::Usage => " WHERE meter = '' AND ",
            Table::Sla => " WHERE source_id != '' AND ",
        }
    }
}

/// How a settler folds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldOptions {
    /// Rows inserted less than this long ago are left to a later fold (inserts in flight).
    pub grace: Duration,
    /// Each fold starts this long before the previous one ended, to take rows a slow INSERT
    /// made visible late.
    pub margin: Duration,
    /// The longest range of insert times one fold takes (a first fold over a long history is
    /// done in steps of this).
    pub max_span: Duration,
}

impl Default for FoldOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(60),
            margin: Duration::from_secs(3600),
            max_span: Duration::from_secs(86_400),
        }
    }
}

/// What reads combine with: the folds that ended at or before `upto` (Unix seconds of
/// `inserted_to`), and the tail of rows inserted from `tail_from` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// The latest fold's end.
    pub upto: u32,
    /// The latest fold's start: rows inserted before it were taken by a fold (or by none,
    /// if they became visible more than the margin late).
    pub tail_from: u32,
    /// Whether a read looks at the tail: false once [`without_empty_tail`](Self::without_empty_tail)
    /// found none of a read's rows there (a closed month's invoice reads settled rows alone).
    pub tail: bool,
    /// The days rolled up by the roll-ups of folds up to `upto` (see [`super::rollup`]).
    pub rolled: Option<Days>,
}

impl Watermark {
    /// The latest fold, or `None` before the first.
    pub async fn read(store: &Store) -> Result<Option<Self>, StoreError> {
        let sql = Sql::new("SELECT toUInt32(inserted_to), toUInt32(inserted_from) FROM ")
            .ident(store.db())?
            .push(".settle_folds ORDER BY inserted_to DESC, fold LIMIT 1");
        let rows = store.ch().query_tsv(&sql).await?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        let bad = |row: &[String]| StoreError::BadRow { row: row.to_vec(), reason: "expected two UInt32".into() };
        let (upto, tail_from): (u32, u32) = match row.as_slice() {
            [upto, from] => (upto.parse().map_err(|_| bad(&row))?, from.parse().map_err(|_| bad(&row))?),
            _ => return Err(bad(&row)),
        };
        let rolled = Days::read(store, upto).await?;
        Ok(Some(Self { upto, tail_from, tail: true, rolled }))
    }

    /// This watermark, without the tail when `table` holds no row matching `rows` (a `WHERE` body:
    /// a read's range and tenant) stamped in it: the tail's identity test costs a scan of the
    /// range's identity rows even when there is nothing to test. A row stamped after this check
    /// is not in the read, as it would not be in a read a moment earlier.
    pub async fn without_empty_tail(self, store: &Store, table: Table, rows: Sql) -> Result<Self, StoreError> {
        let sql = Sql::new("SELECT count() FROM ")
            .ident(store.db())?
            .push(table.raw())
            .push(" WHERE ")
            .append(rows)
            .push(" AND inserted_at >= ")
            .bind(Param::DateTime(self.tail_from));
        let n = store.ch().query_column(&sql).await?.into_iter().next().unwrap_or_default();
        Ok(Self { tail: n != "0", ..self })
    }

    /// ` AND fold IN (folds up to the watermark)`: the settled rows a read counts.
    pub(crate) fn folds(&self, sql: Sql, db: &str) -> Result<Sql, BadIdentifier> {
        Ok(sql
            .push(" AND fold IN (SELECT fold FROM ")
            .ident(db)?
            .push(".settle_folds WHERE inserted_to <= ")
            .bind(Param::DateTime(self.upto))
            .push(")"))
    }

    /// ` AND (fold IN (roll-ups up to the watermark) OR fold IN (folds up to it))`: the rows of
    /// a rolled-up table a read counts (roll-ups, and folds' copies of late usage).
    pub(crate) fn rollups(&self, sql: Sql, db: &str) -> Result<Sql, BadIdentifier> {
        let sql = sql
            .push(" AND (fold IN (SELECT rollup FROM ")
            .ident(db)?
            .push(".settle_rollups WHERE folds_upto <= ")
            .bind(Param::DateTime(self.upto))
            .push(") OR fold IN (SELECT fold FROM ")
            .ident(db)?
            .push(".settle_folds WHERE inserted_to <= ")
            .bind(Param::DateTime(self.upto))
            .push("))");
        Ok(sql)
    }

    /// ` AND (identity) NOT IN (folded)`, for `table`'s rows matching `raw` (a `WHERE` body of
    /// its columns, the rows being filtered) that also match `window` (a `WHERE` body, e.g. the
    /// tenant): the set holds only the identities in those rows. Identity rows are found by
    /// minute, between the earliest and the latest minute of those rows (a resend carries its
    /// batch's minutes), not over every identity ever folded.
    pub(crate) fn unfolded(
        &self,
        sql: Sql,
        db: &str,
        table: Table,
        window: Sql,
        raw: &Sql,
    ) -> Result<Sql, BadIdentifier> {
        let bound = |f: &'static str| -> Result<Sql, BadIdentifier> {
            Ok(Sql::new("(SELECT ")
                .push(f)
                .push("(window_start) FROM ")
                .ident(db)?
                .push(table.raw())
                .push(" WHERE ")
                .append(raw.clone())
                .push(")"))
        };
        let sql = sql
            .push(" AND (tenant, source_id, batch_seq) NOT IN (SELECT tenant, source_id, batch_seq FROM ")
            .ident(db)?
            .push(table.settled())
            .push(table.identity_rows())
            .append(window)
            .push(" AND window_start >= ")
            .append(bound("min")?)
            .push(" AND window_start <= ")
            .append(bound("max")?);
        let sql = self.folds(sql, db)?;
        Ok(sql
            .push(" AND (tenant, source_id, batch_seq) IN (SELECT tenant, source_id, batch_seq FROM ")
            .ident(db)?
            .push(table.raw())
            .push(" WHERE ")
            .append(raw.clone())
            .push("))"))
    }
}

/// A fold that was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    /// Its id.
    pub id: String,
    /// The insert times it took, Unix seconds, `[from, to)`.
    pub from: u32,
    /// End, exclusive.
    pub to: u32,
    /// Batch identities (per tenant and minute) it took, of usage and SLA rows.
    pub batches: u64,
    /// Settled usage and SLA rows it wrote.
    pub rows: u64,
}

/// A fold's statements, in the order they run: [`statement`](Self::statement) for each
/// [`Table`], then [`commit`](Self::commit). Stopped anywhere before the commit, it leaves rows no read counts
/// and no later fold mistakes for its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldPlan {
    /// The fold's id.
    pub id: String,
    /// The insert times it takes, Unix seconds, `[from, to)`.
    pub from: u32,
    /// End, exclusive.
    pub to: u32,
    /// The latest committed fold when it was planned: the batches up to it are left out.
    pub last: Option<Watermark>,
}

impl FoldPlan {
    /// The plan for rows inserted in `[from, to)` after the folds up to `last`.
    pub fn new(from: u32, to: u32, last: Option<Watermark>) -> Self {
        Self { id: fold_id(to), from, to, last }
    }

    /// The fold of `table`, one INSERT: the batches inserted in the range that no committed fold
    /// took, as data rows collapsed per key (a resent batch's copies collapse to one, then
    /// batches merge: usage by the meter's aggregation; SLA counts summed, sketches merged, the
    /// exemplars any coarser read picks kept) and as identity rows. One statement reads the rows
    /// once, so what is written as taken is exactly what is written as data, whichever replica
    /// answers. A batch whose INSERT stamped some rows at or after `to` (its blocks a second
    /// apart) is left whole to the next fold.
    pub fn statement(&self, db: &str, table: Table) -> Result<Sql, BadIdentifier> {
        let late = self.to.saturating_add(SAME_INSERT_SECS);
        let range = |from: u32, to: u32| {
            Sql::new("inserted_at >= ")
                .bind(Param::DateTime(from))
                .push(" AND inserted_at < ")
                .bind(Param::DateTime(to))
        };
        let mut rows = Sql::new(match table {
            Table::Usage => {
                "SELECT tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq, \
                 max(value) AS v, any(unit) AS u, any(aggregation) AS a FROM "
            }
            Table::Sla => {
                "SELECT tenant, service, route, window_start, source_id, batch_seq, any((requests, errors, \
                 latency_buckets, latency_counts, exemplar_trace_ids, exemplar_latencies_ns, exemplar_errors)) AS x FROM "
            }
        })
        .ident(db)?
        .push(table.raw())
        .push(" WHERE ")
        .append(range(self.from, late))
        .push(" AND (tenant, source_id, batch_seq) IN (SELECT tenant, source_id, batch_seq FROM ")
        .ident(db)?
        .push(table.raw())
        .push(" WHERE ")
        .append(range(self.from, late))
        .push(" GROUP BY tenant, source_id, batch_seq HAVING max(inserted_at) < ")
        .bind(Param::DateTime(self.to))
        .push(")");
        if let Some(w) = self.last {
            rows = w.unfolded(rows, db, table, Sql::new("1"), &range(self.from, late))?;
        }
        rows = rows.push(match table {
            Table::Usage => {
                " GROUP BY tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq"
            }
            Table::Sla => " GROUP BY tenant, service, route, window_start, source_id, batch_seq",
        });
        let sql = Sql::new("INSERT INTO ").ident(db)?.push(table.settled());
        Ok(match table {
            Table::Usage => sql
                .push(
                    " (fold, tenant, meter, window_start, service, route, dimensions, unique_value, value, unit, \
                     aggregation, source_id, batch_seq) SELECT ",
                )
                .bind(self.id.as_str())
                .push(
                    ", tenant, m, window_start, s, r, d, uv, if(any(a) = 'max', max(v), sum(v)), any(u), any(a), sid, \
                     seq FROM (SELECT tenant, window_start, if(kind = 0, meter, '') AS m, if(kind = 0, service, '') AS s, \
                     if(kind = 0, route, '') AS r, if(kind = 0, dimensions, '') AS d, \
                     if(kind = 0, unique_value, '') AS uv, if(kind = 0, v, toDecimal128(0, 9)) AS v, \
                     if(kind = 0, u, '') AS u, if(kind = 0, a, '') AS a, if(kind = 1, source_id, '') AS sid, \
                     if(kind = 1, batch_seq, 0) AS seq FROM (",
                )
                .append(rows)
                .push(") ARRAY JOIN [0, 1] AS kind) GROUP BY tenant, m, window_start, s, r, d, uv, sid, seq"),
            // Exemplars as the SLA hour roll-up keeps them (seal::rollup): the 3 slowest, and the 3
            // slowest failed among the rest, so every coarser read's picks are among a minute's.
            Table::Sla => sql
                .push(
                    " (fold, tenant, service, route, window_start, requests, errors, latency_buckets, \
                     latency_counts, exemplar_trace_ids, exemplar_latencies_ns, exemplar_errors, source_id, batch_seq) \
                     SELECT ",
                )
                .bind(self.id.as_str())
                .push(
                    ", tenant, s, r, window_start, req, err, lat.1, lat.2, arrayMap(e -> e.2, kept), \
                     arrayMap(e -> e.1, kept), arrayMap(e -> e.3, kept), sid, seq FROM (SELECT tenant, s, r, \
                     window_start, sid, seq, sum(req) AS req, sum(err) AS err, sumMap(lb, lc) AS lat, \
                     arrayReverseSort(groupArrayArray(arrayMap((l, t, e) -> (l, t, e), el, et, ee))) AS ex, \
                     arrayConcat(arraySlice(ex, 1, 3), arraySlice(arrayFilter(e -> e.3 = 1, arraySlice(ex, 4)), 1, 3)) \
                     AS kept FROM (SELECT tenant, window_start, if(kind = 0, service, '') AS s, \
                     if(kind = 0, route, '') AS r, if(kind = 0, x.1, 0) AS req, if(kind = 0, x.2, 0) AS err, \
                     if(kind = 0, x.3, emptyArrayUInt16()) AS lb, if(kind = 0, x.4, emptyArrayUInt64()) AS lc, \
                     if(kind = 0, x.5, emptyArrayString()) AS et, if(kind = 0, x.6, emptyArrayUInt64()) AS el, \
                     if(kind = 0, x.7, emptyArrayUInt8()) AS ee, if(kind = 1, source_id, '') AS sid, \
                     if(kind = 1, batch_seq, 0) AS seq FROM (",
                )
                .append(rows)
                .push(") ARRAY JOIN [0, 1] AS kind) GROUP BY tenant, s, r, window_start, sid, seq)"),
        })
    }

    /// The earliest minute of `table`'s rows stamped in the fold's range (read after the fold, so
    /// of a superset of the rows it took), or `None` when there are none.
    async fn earliest(&self, store: &Store, table: Table) -> Result<Option<u32>, StoreError> {
        let sql = Sql::new("SELECT toUInt32(min(window_start)), count() FROM ")
            .ident(store.db())?
            .push(table.raw())
            .push(" WHERE inserted_at >= ")
            .bind(Param::DateTime(self.from))
            .push(" AND inserted_at < ")
            .bind(Param::DateTime(self.to.saturating_add(SAME_INSERT_SECS)));
        let row = store.ch().query_tsv(&sql).await?.into_iter().next().unwrap_or_default();
        let bad = |row: &[String]| StoreError::BadRow { row: row.to_vec(), reason: "expected two numbers".into() };
        match row.as_slice() {
            [_, n] if n == "0" => Ok(None),
            [t, _] => Ok(Some(t.parse().map_err(|_| bad(&row))?)),
            _ => Err(bad(&row)),
        }
    }

    /// `SELECT identity rows, data rows` of the fold in `table`, for its commit.
    pub fn counts(&self, db: &str, table: Table) -> Result<Sql, BadIdentifier> {
        let sql = Sql::new(match table {
            Table::Usage => "SELECT countIf(meter = ''), countIf(meter != '') FROM ",
            Table::Sla => "SELECT countIf(source_id != ''), countIf(source_id = '') FROM ",
        });
        Ok(sql.ident(db)?.push(table.settled()).push(" WHERE fold = ").bind(self.id.as_str()))
    }

    /// The fold's row in `settle_folds`: from here on it counts.
    pub fn commit(&self, db: &str, batches: u64, rows: u64) -> Result<Sql, BadIdentifier> {
        Ok(Sql::new("INSERT INTO ")
            .ident(db)?
            .push(".settle_folds (fold, inserted_from, inserted_to, batches, rows) VALUES (")
            .bind(self.id.as_str())
            .push(", ")
            .bind(Param::DateTime(self.from))
            .push(", ")
            .bind(Param::DateTime(self.to))
            .push(", ")
            .bind(batches)
            .push(", ")
            .bind(rows)
            .push(")"))
    }
}

/// How long after a fold's end rows of a batch in it are looked for (to leave the batch whole to
/// the next fold).
const SAME_INSERT_SECS: u32 = 600;

/// Plans the next fold: what was inserted since the last one (at most `max_span` of it, and
/// nothing younger than `grace`); `None` when there is nothing old enough to fold yet.
pub async fn plan(store: &Store, options: FoldOptions) -> Result<Option<FoldPlan>, StoreError> {
    let now: u32 = scalar(store, Sql::new("SELECT toUInt32(now())")).await?;
    let until = now.saturating_sub(secs(options.grace));
    let last = Watermark::read(store).await?;
    let start = match last {
        Some(w) => w.upto,
        // The first fold starts at the oldest row of either table.
        None => match oldest(store).await? {
            Some(oldest) => oldest,
            None => return Ok(None),
        },
    };
    let to = until.min(start.saturating_add(secs(options.max_span)));
    if to <= start {
        return Ok(None);
    }
    let from = if last.is_some() { start.saturating_sub(secs(options.margin)) } else { start };
    Ok(Some(FoldPlan::new(from, to, last)))
}

/// The oldest `inserted_at` of any batch row, or `None` when there is none.
async fn oldest(store: &Store) -> Result<Option<u32>, StoreError> {
    let mut out: Option<u32> = None;
    for table in Table::ALL {
        let sql = Sql::new("SELECT toUInt32(min(inserted_at)), count() FROM ").ident(store.db())?.push(table.raw());
        let row = store.ch().query_tsv(&sql).await?.into_iter().next().unwrap_or_default();
        let bad = |row: &[String]| StoreError::BadRow { row: row.to_vec(), reason: "expected two numbers".into() };
        match row.as_slice() {
            [_, n] if n == "0" => {}
            [t, _] => {
                let t: u32 = t.parse().map_err(|_| bad(&row))?;
                out = Some(out.map_or(t, |o| o.min(t)));
            }
            _ => return Err(bad(&row)),
        }
    }
    Ok(out)
}

/// Runs a planned fold to its commit.
pub async fn run(store: &Store, plan: &FoldPlan) -> Result<Fold, StoreError> {
    let db = store.db();
    let (mut batches, mut rows) = (0u64, 0u64);
    for table in Table::ALL {
        store.ch().execute(&plan.statement(db, table)?).await?;
        // Late usage for rolled-up days: copied rolled up under this fold's id, so reads of
        // those days (which read only rolled-up rows) count it from this fold's commit on.
        if let Some(days) = plan.last.and_then(|w| w.rolled) {
            if let Some((from, to)) = plan.earliest(store, table).await?.and_then(|t| days.overlap(t, days.to)) {
                let source = Sql::new("fold = ").bind(plan.id.as_str());
                store.ch().execute(&table.roll(db, &plan.id, from, to, source)?).await?;
            }
        }
        let row = store.ch().query_tsv(&plan.counts(db, table)?).await?.into_iter().next().unwrap_or_default();
        let bad = |row: &[String]| StoreError::BadRow { row: row.to_vec(), reason: "expected two counts".into() };
        match row.as_slice() {
            [b, r] => {
                batches += b.parse::<u64>().map_err(|_| bad(&row))?;
                rows += r.parse::<u64>().map_err(|_| bad(&row))?;
            }
            _ => return Err(bad(&row)),
        }
    }
    store.ch().execute(&plan.commit(db, batches, rows)?).await?;
    Ok(Fold { id: plan.id.clone(), from: plan.from, to: plan.to, batches, rows })
}

/// Plans and runs the next fold: `None` when there is nothing old enough to fold yet. Call
/// again until it returns `None` to catch up.
pub async fn fold(store: &Store, options: FoldOptions) -> Result<Option<Fold>, StoreError> {
    match plan(store, options).await? {
        Some(p) => Ok(Some(run(store, &p).await?)),
        None => Ok(None),
    }
}

/// A fold's id: its end, then enough of the clock and the process to tell two apart.
pub(super) fn fold_id(to: u32) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{to:010}-{:x}", nanos ^ u128::from(std::process::id()))
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

pub(super) async fn scalar<T: std::str::FromStr>(store: &Store, sql: Sql) -> Result<T, StoreError> {
    let values = store.ch().query_column(&sql).await?;
    let text = values.into_iter().next().unwrap_or_default();
    text.parse().map_err(|_| StoreError::BadRow { row: vec![text], reason: "expected one number".into() })
}
