//! One fold, and the watermark reads combine with.

use std::time::Duration;

use crate::clickhouse::sql::{BadIdentifier, Param, Sql};
use crate::store::{Store, StoreError};

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
        match row.as_slice() {
            [upto, from] => Ok(Some(Self {
                upto: upto.parse().map_err(|_| bad(&row))?,
                tail_from: from.parse().map_err(|_| bad(&row))?,
            })),
            _ => Err(bad(&row)),
        }
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

    /// ` AND (identity) NOT IN (folded)`, for `usage` rows matching `raw` (a `WHERE` body of
    /// `usage`'s columns, the rows being filtered) in the minutes `window` (a `WHERE` body): the
    /// set holds only the identities in those rows.
    pub(crate) fn unfolded(&self, sql: Sql, db: &str, window: Sql, raw: &Sql) -> Result<Sql, BadIdentifier> {
        let sql = sql
            .push(" AND (tenant, source_id, batch_seq) NOT IN (SELECT tenant, source_id, batch_seq FROM ")
            .ident(db)?
            .push(".usage_settled WHERE meter = '' AND ")
            .append(window);
        let sql = self.folds(sql, db)?;
        Ok(among(sql, db, raw)?.push(")"))
    }
}

/// ` AND (identity) IN (SELECT identity FROM db.usage WHERE raw)`.
fn among(sql: Sql, db: &str, raw: &Sql) -> Result<Sql, BadIdentifier> {
    Ok(sql
        .push(" AND (tenant, source_id, batch_seq) IN (SELECT tenant, source_id, batch_seq FROM ")
        .ident(db)?
        .push(".usage WHERE ")
        .append(raw.clone())
        .push(")"))
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
    /// Batch identities (per tenant and minute) it took.
    pub batches: u64,
    /// Settled rows it wrote.
    pub rows: u64,
}

/// A fold's statements, in the order they run: [`statement`](Self::statement), then
/// [`commit`](Self::commit). Stopped anywhere before the commit, it leaves rows no read counts
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

    /// The fold itself, one INSERT: the batches inserted in the range that no committed fold
    /// took, as usage rows collapsed per key (a resent batch's copies collapse to one, then
    /// batches add up by the meter's aggregation) and as identity rows. One statement reads the
    /// rows once, so what is written as taken is exactly what is written as usage, whichever
    /// replica answers. A batch whose INSERT stamped some rows at or after `to` (its blocks a
    /// second apart) is left whole to the next fold.
    pub fn statement(&self, db: &str) -> Result<Sql, BadIdentifier> {
        let late = self.to.saturating_add(SAME_INSERT_SECS);
        let range = |from: u32, to: u32| {
            Sql::new("inserted_at >= ")
                .bind(Param::DateTime(from))
                .push(" AND inserted_at < ")
                .bind(Param::DateTime(to))
        };
        let mut rows = Sql::new(
            "SELECT tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq, \
             max(value) AS v, any(unit) AS u, any(aggregation) AS a FROM ",
        )
        .ident(db)?
        .push(".usage WHERE ")
        .append(range(self.from, late))
        .push(" AND (tenant, source_id, batch_seq) IN (SELECT tenant, source_id, batch_seq FROM ")
        .ident(db)?
        .push(".usage WHERE ")
        .append(range(self.from, late))
        .push(" GROUP BY tenant, source_id, batch_seq HAVING max(inserted_at) < ")
        .bind(Param::DateTime(self.to))
        .push(")");
        if let Some(w) = self.last {
            let window = Sql::new("1");
            rows = w.unfolded(rows, db, window, &range(self.from, late))?;
        }
        rows = rows.push(
            " GROUP BY tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq",
        );
        Ok(Sql::new("INSERT INTO ")
            .ident(db)?
            .push(
                ".usage_settled (fold, tenant, meter, window_start, service, route, dimensions, unique_value, value, \
                 unit, aggregation, source_id, batch_seq) SELECT ",
            )
            .bind(self.id.as_str())
            .push(
                ", tenant, m, window_start, s, r, d, uv, if(any(a) = 'max', max(v), sum(v)), any(u), any(a), sid, seq \
                 FROM (SELECT tenant, window_start, if(kind = 0, meter, '') AS m, if(kind = 0, service, '') AS s, \
                 if(kind = 0, route, '') AS r, if(kind = 0, dimensions, '') AS d, if(kind = 0, unique_value, '') AS uv, \
                 if(kind = 0, v, toDecimal128(0, 9)) AS v, if(kind = 0, u, '') AS u, if(kind = 0, a, '') AS a, \
                 if(kind = 1, source_id, '') AS sid, if(kind = 1, batch_seq, 0) AS seq FROM (",
            )
            .append(rows)
            .push(") ARRAY JOIN [0, 1] AS kind) GROUP BY tenant, m, window_start, s, r, d, uv, sid, seq"))
    }

    /// `SELECT countIf(identity rows), countIf(usage rows)` of the fold, for its commit.
    pub fn counts(&self, db: &str) -> Result<Sql, BadIdentifier> {
        Ok(Sql::new("SELECT countIf(meter = ''), countIf(meter != '') FROM ")
            .ident(db)?
            .push(".usage_settled WHERE fold = ")
            .bind(self.id.as_str()))
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
    let db = store.db();
    let now: u32 = scalar(store, Sql::new("SELECT toUInt32(now())")).await?;
    let until = now.saturating_sub(secs(options.grace));
    let last = Watermark::read(store).await?;
    let start = match last {
        Some(w) => w.upto,
        None => {
            // The first fold starts at the oldest row.
            let sql = Sql::new("SELECT toUInt32(min(inserted_at)), count() FROM ").ident(db)?.push(".usage");
            let row = store.ch().query_tsv(&sql).await?.into_iter().next().unwrap_or_default();
            match row.as_slice() {
                [_, n] if n == "0" => return Ok(None),
                [oldest, _] => oldest
                    .parse()
                    .map_err(|_| StoreError::BadRow { row: row.clone(), reason: "expected a UInt32".into() })?,
                _ => return Err(StoreError::BadRow { row, reason: "expected two fields".into() }),
            }
        }
    };
    let to = until.min(start.saturating_add(secs(options.max_span)));
    if to <= start {
        return Ok(None);
    }
    let from = if last.is_some() { start.saturating_sub(secs(options.margin)) } else { start };
    Ok(Some(FoldPlan::new(from, to, last)))
}

/// Runs a planned fold to its commit.
pub async fn run(store: &Store, plan: &FoldPlan) -> Result<Fold, StoreError> {
    let db = store.db();
    store.ch().execute(&plan.statement(db)?).await?;
    let row = store.ch().query_tsv(&plan.counts(db)?).await?.into_iter().next().unwrap_or_default();
    let bad = |row: &[String]| StoreError::BadRow { row: row.to_vec(), reason: "expected two counts".into() };
    let (batches, rows) = match row.as_slice() {
        [b, r] => (b.parse().map_err(|_| bad(&row))?, r.parse().map_err(|_| bad(&row))?),
        _ => return Err(bad(&row)),
    };
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
fn fold_id(to: u32) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{to:010}-{:x}", nanos ^ u128::from(std::process::id()))
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

async fn scalar<T: std::str::FromStr>(store: &Store, sql: Sql) -> Result<T, StoreError> {
    let values = store.ch().query_column(&sql).await?;
    let text = values.into_iter().next().unwrap_or_default();
    text.parse().map_err(|_| StoreError::BadRow { row: vec![text], reason: "expected one number".into() })
}
