//! The ClickHouse sink: measured rows are spooled to disk (a [`Wal`]) before the
//! sender is answered, and written to ClickHouse in batches from there.
//!
//! - Acknowledged means on disk: a request is answered OK once its rows are
//!   synced in the spool, so `kill -9` of the collector loses nothing it acknowledged.
//! - Batched: the spool seals its open segment every flush interval (or when
//!   it is large), and sealed segments become one INSERT per table, so ClickHouse
//!   sees a few INSERTs per second whatever the request rate.
//! - ClickHouse down: segments wait on disk and the sink retries with backoff;
//!   senders are told to retry only once the spool is full.
//! - Exactly once: rows carry their batch identity, so an INSERT retried after
//!   it landed (a timeout, a crash before the segment was removed) adds rows the
//!   store collapses.
//! - Shutdown (SIGTERM): the open segment is sealed and everything is flushed,
//!   within a deadline; what ClickHouse did not take stays on disk for the next start.

pub mod entry;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metering::clickhouse::sql::Sql;
use metering::clickhouse::ClickHouse;
use metering::store::writer::RowBuffer;
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use entry::Table;
use wal::{segment, Segment, Wal};

/// How the sink batches and retries. (How often the spool seals a segment,
/// and so how often the sink writes, is the spool's `seal_after`.)
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Sealed segments are combined into INSERTs of up to this many bytes.
    pub max_insert_bytes: u64,
    /// How long shutdown waits for ClickHouse to take what is spooled.
    pub shutdown_timeout: Duration,
}

/// Writes spooled rows to ClickHouse.
pub struct Sink {
    ch: ClickHouse,
    usage_insert: Sql,
    sla_insert: Sql,
    wal: Wal,
    metrics: Arc<Metrics>,
    options: SinkOptions,
}

/// The first and the longest wait between attempts while ClickHouse refuses.
const RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

impl Sink {
    /// A sink writing `wal`'s sealed segments into `database` on `ch`.
    pub fn new(
        ch: ClickHouse,
        database: &str,
        wal: Wal,
        metrics: Arc<Metrics>,
        options: SinkOptions,
    ) -> Result<Self, metering::clickhouse::sql::BadIdentifier> {
        let (usage_insert, sla_insert) =
            (metering::store::schema::insert_usage(database)?, metering::sla::schema::insert_sla(database)?);
        Ok(Self { ch, usage_insert, sla_insert, wal, metrics, options })
    }

    /// Runs until `stop` changes, then flushes what it can within the shutdown timeout.
    ///
    /// `queue` holds segments taken from `sealed` and not yet written; with `sealed` it
    /// holds at most the spool's `max_segments`, since a segment leaves the disk only
    /// after it leaves `queue`.
    pub async fn run(self, mut sealed: mpsc::Receiver<Segment>, mut stop: watch::Receiver<()>) {
        let mut queue = VecDeque::new();
        let mut wait = RETRY.0;
        let mut stopping = false;
        while !stopping {
            tokio::select! {
                _ = stop.changed() => break,
                Some(s) = sealed.recv() => queue.push_back(s),
            }
            while let Ok(s) = sealed.try_recv() {
                queue.push_back(s);
            }
            while !queue.is_empty() && !stopping {
                if self.flush(&mut queue).await {
                    wait = RETRY.0;
                    continue;
                }
                tokio::select! {
                    _ = stop.changed() => stopping = true,
                    _ = tokio::time::sleep(wait) => wait = (wait * 2).min(RETRY.1),
                }
            }
        }
        self.drain(&mut queue, &mut sealed).await;
    }

    /// Seals the open segment and writes everything, until done or the deadline.
    async fn drain(&self, queue: &mut VecDeque<Segment>, sealed: &mut mpsc::Receiver<Segment>) {
        let deadline = Instant::now() + self.options.shutdown_timeout;
        self.wal.seal().await;
        while let Ok(s) = sealed.try_recv() {
            queue.push_back(s);
        }
        while !queue.is_empty() && Instant::now() < deadline {
            if !self.flush(queue).await {
                tokio::time::sleep(RETRY.0).await;
            }
        }
        if queue.is_empty() {
            tracing::info!("spool flushed to ClickHouse");
        } else {
            tracing::warn!(
                segments = queue.len(),
                bytes = self.wal.pending_bytes(),
                dir = %self.wal.dir().display(),
                "ClickHouse did not take everything before the shutdown deadline; the rest stays spooled for the next start"
            );
        }
    }

    /// Writes the oldest segments (up to `max_insert_bytes`) and removes them.
    /// `false` when ClickHouse or the disk refused: they stay queued.
    async fn flush(&self, queue: &mut VecDeque<Segment>) -> bool {
        let mut take = 0;
        let mut bytes = 0;
        for s in queue.iter() {
            if take > 0 && bytes + s.bytes > self.options.max_insert_bytes {
                break;
            }
            take += 1;
            bytes += s.bytes;
        }
        let batch: Vec<Segment> = queue.iter().take(take).cloned().collect();
        let read = tokio::task::spawn_blocking(move || {
            batch.iter().map(|s| segment::read(&s.path)).collect::<Result<Vec<_>, _>>()
        })
        .await;
        let contents = match read {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading the spool failed; retrying");
                return false;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the spool panicked; retrying");
                return false;
            }
        };
        let mut usage = RowBuffer::new(self.usage_insert.clone());
        usage.data_mut().reserve(bytes as usize);
        let mut sla = RowBuffer::new(self.sla_insert.clone());
        let mut unreadable = 0u64;
        for record in contents.iter().flat_map(|c| &c.records) {
            match entry::decode(record) {
                Ok(sections) => {
                    for s in sections {
                        let rows = match s.table {
                            Table::Usage => &mut usage,
                            Table::Sla => &mut sla,
                        };
                        rows.append(u64::from(s.rows), s.data);
                    }
                }
                Err(reason) => {
                    unreadable += record.len() as u64;
                    tracing::error!(reason, "a spooled record does not parse; skipped");
                }
            }
        }
        // Usage first: if the SLA INSERT then fails, both are retried and the usage
        // rows that landed are collapsed by their batch identity.
        if !self.insert(&mut usage).await || !self.insert(&mut sla).await {
            return false;
        }
        for (s, c) in queue.drain(..take).zip(&contents) {
            if let Some(d) = &c.damage {
                self.metrics.spool_damaged_bytes.inc_by(d.bytes_lost);
                tracing::error!(segment = %s.path.display(), offset = d.offset, bytes_lost = d.bytes_lost, reason = d.reason, "damaged spool segment: its intact records were written, the rest skipped");
            }
            if let Err(e) = self.wal.remove(&s) {
                tracing::error!(segment = %s.path.display(), error = %e, "removing a written spool segment failed");
            }
        }
        self.metrics.spool_damaged_bytes.inc_by(unreadable);
        true
    }

    /// Inserts `rows` (nothing when empty); `false` when ClickHouse refused (the rows stay spooled).
    async fn insert(&self, rows: &mut RowBuffer) -> bool {
        if rows.pending_rows() == 0 {
            return true;
        }
        let started = Instant::now();
        let result = rows.flush(&self.ch).await;
        self.metrics.clickhouse_write_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(n) => {
                self.metrics.clickhouse_rows.inc_by(n);
                true
            }
            Err(e) => {
                self.metrics.clickhouse_write_errors.inc();
                tracing::warn!(error = %e, rows = rows.pending_rows(), retryable = e.is_retryable(), "INSERT into ClickHouse failed; the rows stay spooled and are retried");
                false
            }
        }
    }
}
