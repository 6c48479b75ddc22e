//! The shipper: takes sealed WAL segments in order, cuts them into batches,
//! sends each to a collector until it is acknowledged or refused for good, and
//! only then removes the segment.
//!
//! Collectors are used in turn (balanced); a retry goes to the next one
//! (failover). Waits grow exponentially with jitter and honour RetryInfo, with
//! a cap. A crash or shutdown mid-segment resends the whole segment next time:
//! its batches keep their identities, so the collectors count them once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use collector::wal::{segment, Segment, Wal};
use tokio::sync::{mpsc, watch};

use crate::batches::{cut, Batch};
use crate::forward::{Collector, Verdict};
use crate::metrics::Metrics;

/// How the shipper batches, retries and stops. (How often new data is shipped
/// is the WAL's `seal_after`.)
#[derive(Debug, Clone)]
pub struct ShipOptions {
    /// Largest batch, in bytes before compression (a larger single request goes alone).
    pub batch_max_bytes: usize,
    /// First wait after a failed send.
    pub backoff_min: Duration,
    /// Longest wait between sends, RetryInfo included.
    pub backoff_max: Duration,
    /// How long a shutdown keeps shipping.
    pub shutdown_timeout: Duration,
}

/// Ships a WAL to collectors.
pub struct Shipper {
    collectors: Vec<Collector>,
    next: AtomicUsize,
    key: Option<String>,
    agent_id: String,
    wal: Wal,
    metrics: Arc<Metrics>,
    options: ShipOptions,
}

enum Shipped {
    Done,
    /// Not done; try the same segment again.
    Again,
    Stopped,
}

impl Shipper {
    /// A shipper of `wal` to `collectors`, as agent `agent_id` with `key`.
    pub fn new(collectors: Vec<Collector>, key: Option<String>, agent_id: String, wal: Wal, metrics: Arc<Metrics>, options: ShipOptions) -> Self {
        assert!(!collectors.is_empty(), "at least one collector");
        Self { collectors, next: AtomicUsize::new(0), key, agent_id, wal, metrics, options }
    }

    /// Runs until `stop` changes, then ships what it can within the shutdown timeout.
    pub async fn run(self, mut sealed: mpsc::UnboundedReceiver<Segment>, mut stop: watch::Receiver<()>) {
        let mut queue = VecDeque::new();
        'run: loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(s) = sealed.recv() => queue.push_back(s),
            }
            while let Ok(s) = sealed.try_recv() {
                queue.push_back(s);
            }
            while let Some(s) = queue.front() {
                match self.ship(s, Some(&mut stop), None).await {
                    Shipped::Done => {
                        queue.pop_front();
                    }
                    Shipped::Again => {}
                    Shipped::Stopped => break 'run,
                }
            }
        }
        let deadline = Instant::now() + self.options.shutdown_timeout;
        self.wal.seal().await;
        while let Ok(s) = sealed.try_recv() {
            queue.push_back(s);
        }
        while let Some(s) = queue.front() {
            match self.ship(s, None, Some(deadline)).await {
                Shipped::Done => {
                    queue.pop_front();
                }
                Shipped::Again => {}
                Shipped::Stopped => break,
            }
        }
        if queue.is_empty() {
            tracing::info!("WAL shipped");
        } else {
            tracing::warn!(segments = queue.len(), bytes = self.wal.pending_bytes(), "shutdown deadline reached; the rest stays in the WAL for the next start");
        }
    }

    /// Ships one segment and removes it; `Stopped` when asked to stop or past the deadline first.
    async fn ship(&self, s: &Segment, mut stop: Option<&mut watch::Receiver<()>>, deadline: Option<Instant>) -> Shipped {
        let contents = match segment::read(&s.path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(segment = %s.path.display(), error = %e, "reading a WAL segment failed; it is kept and retried");
                return match self.pause(self.options.backoff_max, stop, deadline).await {
                    Shipped::Stopped => Shipped::Stopped,
                    _ => Shipped::Again,
                };
            }
        };
        if let Some(d) = &contents.damage {
            self.metrics.wal_damaged_bytes.inc_by(d.bytes_lost);
            tracing::error!(segment = %s.path.display(), offset = d.offset, bytes_lost = d.bytes_lost, reason = d.reason, "damaged WAL segment: its intact records are shipped, the rest skipped");
        }
        let cut = cut(s.id, &contents.records, self.options.batch_max_bytes);
        for reason in &cut.unreadable {
            self.metrics.wal_damaged_bytes.inc();
            tracing::error!(segment = %s.path.display(), reason, "unreadable WAL record skipped");
        }
        for batch in &cut.batches {
            if let Shipped::Stopped = self.deliver(batch, stop.as_deref_mut(), deadline).await {
                return Shipped::Stopped;
            }
        }
        if let Err(e) = self.wal.remove(s) {
            tracing::error!(segment = %s.path.display(), error = %e, "removing a shipped WAL segment failed");
        }
        Shipped::Done
    }

    /// Sends a batch until it is acknowledged or refused for good.
    async fn deliver(&self, batch: &Batch, mut stop: Option<&mut watch::Receiver<()>>, deadline: Option<Instant>) -> Shipped {
        let source = format!("agent:{}:{:016x}", self.agent_id, batch.boot);
        let signal = batch.signal.name();
        let mut wait = self.options.backoff_min;
        loop {
            let collector = &self.collectors[self.next.fetch_add(1, Ordering::Relaxed) % self.collectors.len()];
            let started = Instant::now();
            let verdict = collector.send(batch, &source, self.key.as_deref()).await;
            self.metrics.forward_seconds.observe(started.elapsed().as_secs_f64());
            match verdict {
                Verdict::Accepted { rejected, message } => {
                    self.metrics.count_batch(signal, "acked");
                    if rejected > 0 {
                        self.metrics.rejected_items.inc_by(rejected);
                        tracing::warn!(collector = collector.url(), rejected, message, "the collector refused part of a batch (partial success); not retried");
                    }
                    return Shipped::Done;
                }
                Verdict::Final { reason } => {
                    self.metrics.count_batch(signal, "dropped");
                    tracing::error!(reason, seq = batch.seq, requests = batch.requests, "the collector refused a batch for good; dropped");
                    return Shipped::Done;
                }
                Verdict::Retry { after, reason } => {
                    self.metrics.count_batch(signal, "retried");
                    let pause = after.unwrap_or(jitter(wait)).min(self.options.backoff_max);
                    tracing::warn!(reason, retry_in_ms = pause.as_millis() as u64, "sending a batch failed; retrying");
                    wait = (wait * 2).min(self.options.backoff_max);
                    if let Shipped::Stopped = self.pause(pause, stop.as_deref_mut(), deadline).await {
                        return Shipped::Stopped;
                    }
                }
            }
        }
    }

    async fn pause(&self, d: Duration, stop: Option<&mut watch::Receiver<()>>, deadline: Option<Instant>) -> Shipped {
        if deadline.is_some_and(|end| Instant::now() + d >= end) {
            return Shipped::Stopped;
        }
        match stop {
            Some(stop) => tokio::select! {
                _ = stop.changed() => Shipped::Stopped,
                _ = tokio::time::sleep(d) => Shipped::Done,
            },
            None => {
                tokio::time::sleep(d).await;
                Shipped::Done
            }
        }
    }
}

/// `d` scaled by a pseudo-random factor in [0.5, 1), so agents that failed
/// together do not retry together.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    let mut x = u64::from(nanos) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    d.mul_f64(0.5 + (x % 1000) as f64 / 2000.0)
}
