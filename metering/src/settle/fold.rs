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

    /// `.<raw>_inserts` (after the database): the raw table's insert journal.
    pub const fn inserts(self) -> &'static str {
        match self {
            Table::Usage => ".usage_inserts",
            Table::Sla => ".sla_inserts",
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

/// What a read knows of its rows in the tail (stamped since the watermark's `tail_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Not looked up: the read scans every raw row of its range stamped since `tail_from`.
    Unknown,
    /// None: the read takes settled rows alone (a closed month's invoice, usually).
    Empty,
    /// They lie in these minutes (first, last; Unix seconds), as the insert journal says: the
    /// read scans raw rows only there, through the raw table's key.
    Within(u32, u32),
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
    /// Where a read's rows in the tail lie, once [`with_tail`](Self::with_tail) has looked.
    pub tail: Tail,
    /// The days rolled up by the roll-ups of folds up to `upto` (see [`super::rollup`]).
    pub rolled: Option<Days>,
    /// The first and last minute of the folds up to `upto` that ended after the first roll-up and
    /// recorded minutes in the rolled-up days (late usage for them), if there are any.
    pub late: Option<(u32, u32)>,
}

/// Which settled state a live read combines: the latest fold at the moment the query runs, or a
/// watermark read once for several reads (an invoice's usage and SLA reads, a report's pages).
/// Any committed watermark gives the same answer (the folds up to it plus the tail since it), so
/// reads that share one agree with each other and cost one read of it, not one each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Settled {
    /// Read the latest fold when the query runs.
    #[default]
    Latest,
    /// As read: `None` before the first fold (every stored row is read and collapsed).
    At(Option<Watermark>),
}

impl Settled {
    /// The latest fold, read now, for reads to share.
    pub async fn read(store: &Store) -> Result<Self, StoreError> {
        Ok(Self::At(Watermark::read(store).await?))
    }

    /// The watermark, read from `store` if it is [`Settled::Latest`].
    pub async fn watermark(self, store: &Store) -> Result<Option<Watermark>, StoreError> {
        match self {
            Self::Latest => Watermark::read(store).await,
            Self::At(w) => Ok(w),
        }
    }

    /// The watermark as read (`None` for [`Settled::Latest`], which a query resolves first).
    pub const fn at(self) -> Option<Watermark> {
        match self {
            Self::Latest => None,
            Self::At(w) => w,
        }
    }
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
        let w = Self { upto, tail_from, tail: Tail::Unknown, rolled: None, late: None };
        // Both read the roll-ups up to the fold just read, at once: without a roll-up there are no
        // late folds either.
        let late = Sql::new("SELECT toUInt32(min(window_from)), toUInt32(max(window_to)), count() ")
            .append(w.late_folds(store.db())?);
        let (rolled, late) = tokio::try_join!(Days::read(store, upto), bounds(store, &late))?;
        Ok(Some(Self { rolled, late: rolled.and(late), ..w }))
    }

    /// This watermark, knowing where in `[from, to)` (Unix seconds) `table`'s rows of `tenant` (or
    /// every tenant) stamped since `tail_from` lie: the insert journal since then (sorted by stamp,
    /// a few minutes of inserts) holds every such batch and its minutes. A read then scans raw rows
    /// only in those minutes, and none when there are none — the tail's identity test costs a scan
    /// of the minutes' identity rows even when there is nothing to test. A batch whose journal row
    /// is not visible yet (the INSERT writes the raw rows first, then the journal's) is not in the
    /// read, as it would not be in a read a moment earlier.
    pub async fn with_tail(
        self,
        store: &Store,
        table: Table,
        tenant: Option<&str>,
        (from, to): (u32, u32),
    ) -> Result<Self, StoreError> {
        let mut sql = Sql::new("SELECT toUInt32(min(window_min)), toUInt32(max(window_max)), count() FROM ")
            .ident(store.db())?
            .push(table.inserts())
            .push(" WHERE inserted_at >= ")
            .bind(Param::DateTime(self.tail_from))
            .push(" AND window_max >= ")
            .bind(Param::DateTime(from))
            .push(" AND window_min < ")
            .bind(Param::DateTime(to));
        if let Some(t) = tenant {
            sql = sql.push(" AND tenant = ").bind(t);
        }
        let tail = match bounds(store, &sql).await? {
            Some((lo, hi)) => Tail::Within(lo.max(from), hi.min(to.saturating_sub(1))),
            None => Tail::Empty,
        };
        Ok(Self { tail, ..self })
    }

    /// `sql` (a `WHERE` body of the raw table's columns) narrowed to the tail: stamped since
    /// `tail_from`, in the minutes the journal gave.
    pub(crate) fn tail_rows(&self, sql: Sql) -> Sql {
        let sql = sql.push(" AND inserted_at >= ").bind(Param::DateTime(self.tail_from));
        self.tail_minutes(sql)
    }

    /// `sql` (a `WHERE` body with `window_start`) narrowed to the tail's minutes, if known.
    pub(crate) fn tail_minutes(&self, sql: Sql) -> Sql {
        match self.tail {
            Tail::Within(lo, hi) => sql
                .push(" AND window_start >= ")
                .bind(Param::DateTime(lo))
                .push(" AND window_start <= ")
                .bind(Param::DateTime(hi)),
            Tail::Unknown | Tail::Empty => sql,
        }
    }

    /// ` AND fold IN (folds up to the watermark)`: the settled rows a read counts.
    pub(crate) fn folds(&self, sql: Sql, db: &str) -> Result<Sql, BadIdentifier> {
        folds_upto(sql, db, self.upto)
    }

    /// ` AND fold IN (roll-ups up to the watermark)`: the rolled-up rows a read counts.
    pub(crate) fn rollups(&self, sql: Sql, db: &str) -> Result<Sql, BadIdentifier> {
        Ok(sql
            .push(" AND fold IN (SELECT rollup FROM ")
            .ident(db)?
            .push(".settle_rollups WHERE folds_upto <= ")
            .bind(Param::DateTime(self.upto))
            .push(")"))
    }

    /// `FROM settle_folds WHERE` the folds up to the watermark that ended after the first
    /// roll-up up to it and recorded minutes in the rolled-up days: those whose minute rows a read
    /// of rolled-up days may need besides their roll-ups.
    fn late_folds(&self, db: &str) -> Result<Sql, BadIdentifier> {
        let rollups = |what: &'static str| -> Result<Sql, BadIdentifier> {
            Ok(Sql::new("(SELECT ")
                .push(what)
                .push(" FROM ")
                .ident(db)?
                .push(".settle_rollups WHERE folds_upto <= ")
                .bind(Param::DateTime(self.upto))
                .push(")"))
        };
        Ok(Sql::new("FROM ")
            .ident(db)?
            .push(".settle_folds WHERE inserted_to <= ")
            .bind(Param::DateTime(self.upto))
            .push(" AND inserted_to > ")
            .append(rollups("min(folds_upto)")?)
            .push(" AND window_to >= ")
            .append(rollups("min(day_from)")?)
            .push(" AND window_from < ")
            .append(rollups("max(day_to)")?))
    }

    /// ` AND` the settled minute rows of rolled-up days a read counts besides their roll-ups:
    /// those of the folds up to the watermark that ended after the roll-up of the row's day
    /// (late usage; a fold's end is the first ten digits of its id), looked for only within the
    /// minutes those folds recorded (`minutes`: [`Watermark::late`]).
    pub(crate) fn late_rows(&self, sql: Sql, db: &str, minutes: (u32, u32)) -> Result<Sql, BadIdentifier> {
        let (lo, hi) = minutes;
        Ok(sql
            .push(" AND window_start >= ")
            .bind(Param::DateTime(lo))
            .push(" AND window_start <= ")
            .bind(Param::DateTime(hi))
            .push(" AND fold IN (SELECT fold ")
            .append(self.late_folds(db)?)
            .push(
                ") AND toUInt32(substring(fold, 1, 10)) > toUInt32(arrayFirst(r -> r.1 > window_start, (SELECT \
                       arraySort(groupArray((day_to, folds_upto))) FROM ",
            )
            .ident(db)?
            .push(".settle_rollups WHERE folds_upto <= ")
            .bind(Param::DateTime(self.upto))
            .push(")).2)"))
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
        let window = window
            .push(" AND window_start >= ")
            .append(bound("min")?)
            .push(" AND window_start <= ")
            .append(bound("max")?);
        let candidates = Sql::new("SELECT tenant, source_id, batch_seq FROM ")
            .ident(db)?
            .push(table.raw())
            .push(" WHERE ")
            .append(raw.clone());
        self.not_folded(sql, db, table, window, candidates)
    }

    /// ` AND (identity) NOT IN (folded)`: the identities folded up to the watermark among the
    /// identity rows matching `window` (a `WHERE` body) and the identities `candidates` selects.
    pub(crate) fn not_folded(
        &self,
        sql: Sql,
        db: &str,
        table: Table,
        window: Sql,
        candidates: Sql,
    ) -> Result<Sql, BadIdentifier> {
        let sql = sql
            .push(" AND (tenant, source_id, batch_seq) NOT IN (SELECT tenant, source_id, batch_seq FROM ")
            .ident(db)?
            .push(table.settled())
            .push(table.identity_rows())
            .append(window);
        let sql = self.folds(sql, db)?;
        Ok(sql.push(" AND (tenant, source_id, batch_seq) IN (").append(candidates).push("))"))
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
    ///
    /// `minutes` are the journaled minutes of the range ([`minutes`](Self::minutes), read before):
    /// raw rows are read only within them, and only batches all of whose minutes lie within them
    /// are taken (a batch journaled after they were read waits for the next fold), so every row
    /// the fold writes is in them.
    pub fn statement(&self, db: &str, table: Table, minutes: (u32, u32)) -> Result<Sql, BadIdentifier> {
        let range = self.range();
        let (lo, hi) = (Param::DateTime(minutes.0), Param::DateTime(minutes.1));
        let minutes = Sql::new("window_start >= ").bind(lo.clone()).push(" AND window_start <= ").bind(hi.clone());
        // The batches to take, found through the journal's key: stamped in the range, none of
        // their rows at or after `to`, all of their minutes within the bounds.
        let taken = Sql::new("SELECT tenant, source_id, batch_seq FROM ")
            .ident(db)?
            .push(table.inserts())
            .push(" WHERE ")
            .append(range.clone())
            .push(" GROUP BY tenant, source_id, batch_seq HAVING max(inserted_at) < ")
            .bind(Param::DateTime(self.to))
            .push(" AND min(window_min) >= ")
            .bind(lo)
            .push(" AND max(window_max) <= ")
            .bind(hi);
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
        .append(minutes.clone())
        .push(" AND ")
        .append(range)
        .push(" AND (tenant, source_id, batch_seq) IN (")
        .append(taken.clone())
        .push(")");
        if let Some(w) = self.last {
            rows = w.not_folded(rows, db, table, minutes, taken)?;
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

    /// `inserted_at` in the range whose rows a fold looks at: `[from, to + SAME_INSERT_SECS)`.
    fn range(&self) -> Sql {
        Sql::new("inserted_at >= ")
            .bind(Param::DateTime(self.from))
            .push(" AND inserted_at < ")
            .bind(Param::DateTime(self.to.saturating_add(SAME_INSERT_SECS)))
    }

    /// The first and last minute journaled in the fold's range of `table` (through the journal's
    /// key), or `None` when nothing was stamped in it.
    pub async fn minutes(&self, store: &Store, table: Table) -> Result<Option<(u32, u32)>, StoreError> {
        let sql = Sql::new("SELECT toUInt32(min(window_min)), toUInt32(max(window_max)), count() FROM ")
            .ident(store.db())?
            .push(table.inserts())
            .push(" WHERE ")
            .append(self.range());
        bounds(store, &sql).await
    }

    /// `SELECT identity rows, data rows` of the fold in `table` (all within `minutes`), for its
    /// commit.
    pub fn counts(&self, db: &str, table: Table, minutes: (u32, u32)) -> Result<Sql, BadIdentifier> {
        let sql = Sql::new(match table {
            Table::Usage => "SELECT countIf(meter = ''), countIf(meter != '') FROM ",
            Table::Sla => "SELECT countIf(source_id != ''), countIf(source_id = '') FROM ",
        });
        Ok(sql
            .ident(db)?
            .push(table.settled())
            .push(" WHERE window_start >= ")
            .bind(Param::DateTime(minutes.0))
            .push(" AND window_start <= ")
            .bind(Param::DateTime(minutes.1))
            .push(" AND fold = ")
            .bind(self.id.as_str()))
    }

    /// The fold's row in `settle_folds`: from here on it counts. `minutes`: the first and last
    /// minute its rows can lie in (of every table; `None` when it read nothing).
    pub fn commit(&self, db: &str, batches: u64, rows: u64, minutes: Option<(u32, u32)>) -> Result<Sql, BadIdentifier> {
        let (lo, hi) = minutes.unwrap_or((0, 0));
        Ok(Sql::new("INSERT INTO ")
            .ident(db)?
            .push(".settle_folds (fold, inserted_from, inserted_to, batches, rows, window_from, window_to) VALUES (")
            .bind(self.id.as_str())
            .push(", ")
            .bind(Param::DateTime(self.from))
            .push(", ")
            .bind(Param::DateTime(self.to))
            .push(", ")
            .bind(batches)
            .push(", ")
            .bind(rows)
            .push(", ")
            .bind(Param::DateTime(lo))
            .push(", ")
            .bind(Param::DateTime(hi))
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
    least(store, |table| {
        Ok(Sql::new("SELECT toUInt32(min(inserted_at)), count() FROM ").ident(store.db())?.push(table.inserts()))
    })
    .await
}

/// `sql` followed by ` AND fold IN (the folds that ended at or before upto)`.
pub(super) fn folds_upto(sql: Sql, db: &str, upto: u32) -> Result<Sql, BadIdentifier> {
    Ok(sql
        .push(" AND fold IN (SELECT fold FROM ")
        .ident(db)?
        .push(".settle_folds WHERE inserted_to <= ")
        .bind(Param::DateTime(upto))
        .push(")"))
}

/// The first two values of a `SELECT toUInt32(min(…)), toUInt32(max(…)), count() …`, or `None`
/// when it counted no row.
pub(super) async fn bounds(store: &Store, sql: &Sql) -> Result<Option<(u32, u32)>, StoreError> {
    let row = store.ch().query_tsv(sql).await?.into_iter().next().unwrap_or_default();
    let bad = |row: &[String]| StoreError::BadRow { row: row.to_vec(), reason: "expected three numbers".into() };
    match row.as_slice() {
        [_, _, n] if n == "0" => Ok(None),
        [lo, hi, _] => Ok(Some((lo.parse().map_err(|_| bad(&row))?, hi.parse().map_err(|_| bad(&row))?))),
        _ => Err(bad(&row)),
    }
}

/// The least of `select(table)`'s first value over both tables (a `SELECT toUInt32(min(…)),
/// count() FROM …`), or `None` when neither has a row.
pub(super) async fn least(
    store: &Store,
    select: impl Fn(Table) -> Result<Sql, BadIdentifier>,
) -> Result<Option<u32>, StoreError> {
    let mut out: Option<u32> = None;
    for table in Table::ALL {
        let row = store.ch().query_tsv(&select(table)?).await?.into_iter().next().unwrap_or_default();
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
    let mut all: Option<(u32, u32)> = None;
    for table in Table::ALL {
        // Nothing journaled in the range: nothing to take (a later-visible insert is the next
        // fold's, which starts a margin earlier).
        let Some(minutes) = plan.minutes(store, table).await? else { continue };
        all = Some(all.map_or(minutes, |(lo, hi)| (lo.min(minutes.0), hi.max(minutes.1))));
        store.ch().execute(&plan.statement(db, table, minutes)?).await?;
        let row = store.ch().query_tsv(&plan.counts(db, table, minutes)?).await?.into_iter().next().unwrap_or_default();
        let bad = |row: &[String]| StoreError::BadRow { row: row.to_vec(), reason: "expected two counts".into() };
        match row.as_slice() {
            [b, r] => {
                batches += b.parse::<u64>().map_err(|_| bad(&row))?;
                rows += r.parse::<u64>().map_err(|_| bad(&row))?;
            }
            _ => return Err(bad(&row)),
        }
    }
    store.ch().execute(&plan.commit(db, batches, rows, all)?).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fold finds its batches and their minutes through the insert journal, never by a scan of
    /// every raw row's `inserted_at`: each read of the raw table is bounded by the journaled
    /// minutes (and so by the primary key).
    #[test]
    fn a_fold_reads_raw_rows_only_within_the_journaled_minutes() {
        let last = Watermark { upto: 1_000, tail_from: 100, tail: Tail::Unknown, rolled: None, late: None };
        let plan = FoldPlan { id: "f".into(), from: 400, to: 1_000, last: Some(last) };
        for table in Table::ALL {
            let sql = plan.statement("db", table, (60, 120)).unwrap();
            let raw = format!("`db`{} WHERE ", table.raw());
            let reads: Vec<&str> = sql.as_str().split(raw.as_str()).skip(1).collect();
            assert_eq!(reads.len(), 1, "{}", sql.as_str());
            let minutes = "window_start >= toDateTime(60, 'UTC') AND window_start <= toDateTime(120, 'UTC')";
            assert!(reads[0].starts_with(minutes), "{}", reads[0]);
            let counts = plan.counts("db", table, (60, 120)).unwrap();
            assert!(counts.as_str().contains(minutes), "{}", counts.as_str());
        }
    }
}
