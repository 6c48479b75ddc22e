//! The shipper: takes sealed WAL segments in order, cuts them into batches,
//! sends each to a collector until it is acknowledged or refused for good, and
//! only then removes the segment.
//!
//! Collectors are used in turn (balanced); a retry goes to the next one
//! (failover). Waits grow exponentially with jitter and honour RetryInfo, with
//! a cap. A crash or shutdown mid-segment resends the whole segment next time:
//! its batches keep their identities, so the collectors count them once.
//!
//! A batch holds one tenant. When a collector throttles it (that tenant is over
//! its rate limit), the shipper goes on with the segment's other batches, and a
//! segment left with only throttled batches is parked until the collector's
//! RetryInfo delay has passed: it no longer takes one of the
//! `segments_in_flight` places, so one throttled tenant delays only itself.
//!
//! Sealed segments wait in a [`Backlog`] the intake may also take from: with
//! the drop-oldest policy, a full WAL gives up its oldest waiting segment
//! (never the one being shipped), and what it held is counted as dropped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use otlp::batch::BatchId;
use otlp::Signal;
use tokio::sync::{watch, Notify};
use wal::{segment, Segment, Wal};

use crate::batches::{cut, Batch};
use crate::forward::{Collector, Verdict};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::record::Record;

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
    /// Segments shipped at once (at least 1).
    pub segments_in_flight: usize,
}

/// Sealed segments waiting to be shipped, oldest first. The WAL hands each
/// sealed segment here as it seals it (see [`Backlog::sealed`]).
#[derive(Debug, Default)]
pub struct Backlog {
    segments: Mutex<VecDeque<Segment>>,
    arrived: Notify,
}

impl Backlog {
    /// Takes a segment the WAL sealed.
    pub fn sealed(&self, s: Segment) {
        self.push_back(s);
    }

    fn push_back(&self, s: Segment) {
        self.segments.lock().unwrap_or_else(|e| e.into_inner()).push_back(s);
        self.arrived.notify_one();
    }

    fn push_front(&self, s: Segment) {
        self.segments.lock().unwrap_or_else(|e| e.into_inner()).push_front(s);
    }

    fn pop_front(&self) -> Option<Segment> {
        self.segments.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }

    /// Removes the oldest waiting segment that holds only apps' data (one holding
    /// the agent's own usage report is kept: its counts would vanish with it);
    /// returns its items per signal and tenant, or `None` when there is no such
    /// segment (the segment being shipped and the open one are never dropped).
    pub fn drop_oldest(&self, wal: &Wal) -> Option<Vec<(Signal, BTreeMap<String, u64>)>> {
        let mut segments = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..segments.len() {
            let contents = segment::read(&segments[i].path).unwrap_or_default();
            let records: Vec<Record<'_>> = contents.records.iter().filter_map(|b| Record::decode(b).ok()).collect();
            if records.iter().any(|r| r.items.is_empty()) {
                continue;
            }
            let s = segments.remove(i).expect("in range");
            if let Err(e) = wal.remove(&s) {
                tracing::error!(segment = %s.path.display(), error = %e, "removing the oldest WAL segment failed");
            }
            let mut items: Vec<(Signal, BTreeMap<String, u64>)> = Vec::new();
            for r in records {
                let slot = match items.iter().position(|(sig, _)| *sig == r.signal) {
                    Some(at) => &mut items[at],
                    None => {
                        items.push((r.signal, BTreeMap::new()));
                        items.last_mut().expect("just pushed")
                    }
                };
                for (tenant, n) in r.items {
                    *slot.1.entry(tenant).or_default() += n;
                }
            }
            return Some(items);
        }
        None
    }
}

/// Where a shipper sends, and as whom.
pub struct Upstream {
    /// The collectors, used in turn.
    pub collectors: Vec<Collector>,
    /// The agent's key at the collectors.
    pub key: Option<String>,
    /// The agent's id, part of every batch identity.
    pub agent_id: String,
}

/// Ships a WAL to collectors.
pub struct Shipper {
    collectors: Vec<Collector>,
    next: AtomicUsize,
    key: Option<String>,
    agent_id: String,
    wal: Wal,
    backlog: Arc<Backlog>,
    ledger: Arc<Ledger>,
    boot: u64,
    metrics: Arc<Metrics>,
    options: ShipOptions,
}

enum Shipped {
    Done,
    /// Not done; try the same segment again.
    Again,
    /// Every batch not yet acknowledged was throttled: try them again at this time.
    Parked(Instant),
    Stopped,
}

/// A segment being shipped, with the sequence numbers of its batches acknowledged so far (a
/// parked segment is read and cut again when its time comes; only the rest is sent).
struct Shipment {
    segment: Segment,
    acked: BTreeSet<u64>,
}

/// How a shipment in flight ended.
enum Ended {
    Done,
    Parked(Shipment, Instant),
    /// Stopped before it was done: back to the backlog.
    Unfinished(Segment),
}

/// How one batch's delivery ended.
enum Delivered {
    Done,
    Throttled(Duration),
    Stopped,
}

impl Shipper {
    /// A shipper of `backlog` (fed from `wal`'s sealed segments) to `upstream`, accounting in
    /// `ledger` (its last report at shutdown is written for process `boot`).
    pub fn new(
        upstream: Upstream,
        wal: Wal,
        backlog: Arc<Backlog>,
        ledger: Arc<Ledger>,
        boot: u64,
        metrics: Arc<Metrics>,
        options: ShipOptions,
    ) -> Self {
        let Upstream { collectors, key, agent_id } = upstream;
        assert!(!collectors.is_empty(), "at least one collector");
        Self { collectors, next: AtomicUsize::new(0), key, agent_id, wal, backlog, ledger, boot, metrics, options }
    }

    /// Runs until `stop` changes, then ships what it can within the shutdown timeout.
    pub async fn run(self, mut stop: watch::Receiver<()>) {
        // Up to `segments_in_flight` segments are shipped at once, so one batch's round trip
        // does not hold up the next; each batch keeps its identity, so order does not matter
        // to the collectors, and a segment still leaves the WAL only when all of it is done.
        let mut in_flight = FuturesUnordered::new();
        let mut parked: Vec<(Shipment, Instant)> = Vec::new();
        let this = &self;
        loop {
            while in_flight.len() < self.options.segments_in_flight.max(1) {
                let now = Instant::now();
                // Parked segments whose time has come go first: they are the oldest data.
                let shipment = match parked.iter().position(|(_, at)| *at <= now) {
                    Some(i) => parked.swap_remove(i).0,
                    None => match self.backlog.pop_front() {
                        Some(segment) => Shipment { segment, acked: BTreeSet::new() },
                        None => break,
                    },
                };
                let mut stop = stop.clone();
                in_flight.push(async move {
                    let mut shipment = shipment;
                    loop {
                        match this.ship(&shipment.segment, &mut shipment.acked, Some(&mut stop), None).await {
                            Shipped::Done => return Ended::Done,
                            Shipped::Again => {}
                            Shipped::Parked(at) => return Ended::Parked(shipment, at),
                            Shipped::Stopped => return Ended::Unfinished(shipment.segment),
                        }
                    }
                });
            }
            let next_parked = parked.iter().map(|(_, at)| *at).min();
            tokio::select! {
                _ = stop.changed() => break,
                _ = self.backlog.arrived.notified() => {}
                _ = tokio::time::sleep_until(next_parked.unwrap_or_else(Instant::now).into()), if next_parked.is_some() => {}
                Some(ended) = in_flight.next(), if !in_flight.is_empty() => match ended {
                    Ended::Done => {}
                    Ended::Parked(shipment, at) => parked.push((shipment, at)),
                    Ended::Unfinished(segment) => self.backlog.push_front(segment),
                },
            }
        }
        // The shipments in flight see the stop too; what they did not finish waits again.
        while let Some(ended) = in_flight.next().await {
            match ended {
                Ended::Done => {}
                Ended::Parked(shipment, _) => self.backlog.push_front(shipment.segment),
                Ended::Unfinished(segment) => self.backlog.push_front(segment),
            }
        }
        drop(in_flight);
        for (shipment, _) in parked {
            self.backlog.push_front(shipment.segment);
        }
        let deadline = Instant::now() + self.options.shutdown_timeout;
        // Twice: what is waiting, then the last report, whose counts include what
        // the first round acknowledged.
        for round in 0..2 {
            if round == 1 {
                crate::report::write(&self.ledger, &self.wal, self.boot).await;
            }
            // Sealing hands the open segment to the backlog before it returns.
            self.wal.seal().await;
            let mut throttled = Vec::new();
            while let Some(s) = self.backlog.pop_front() {
                let mut acked = BTreeSet::new();
                let shipped = loop {
                    match self.ship(&s, &mut acked, None, Some(deadline)).await {
                        Shipped::Again => {}
                        other => break other,
                    }
                };
                match shipped {
                    // Still over its limit: it waits in the WAL for the next start.
                    Shipped::Parked(_) => throttled.push(s),
                    Shipped::Stopped => break,
                    Shipped::Done | Shipped::Again => {}
                }
            }
            for s in throttled {
                self.backlog.push_back(s);
            }
        }
        if self.wal.pending_bytes() == 0 {
            tracing::info!("WAL shipped");
        } else {
            tracing::warn!(
                bytes = self.wal.pending_bytes(),
                "shutdown deadline reached; the rest stays in the WAL for the next start"
            );
        }
    }

    /// Ships one segment's batches not in `acked` (adding each acknowledged one) and removes
    /// the segment when all are; `Parked` when only throttled ones are left, `Stopped` when
    /// asked to stop or past the deadline first.
    async fn ship(
        &self,
        s: &Segment,
        acked: &mut BTreeSet<u64>,
        mut stop: Option<&mut watch::Receiver<()>>,
        deadline: Option<Instant>,
    ) -> Shipped {
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
        // Damage is counted once per segment, not on every return from parking.
        if acked.is_empty() {
            if let Some(d) = &contents.damage {
                self.metrics.wal_damaged_bytes.inc_by(d.bytes_lost);
                tracing::error!(segment = %s.path.display(), offset = d.offset, bytes_lost = d.bytes_lost, reason = d.reason, "damaged WAL segment: its intact records are shipped, the rest skipped");
            }
        }
        let cut = cut(s.id, &contents.records, self.options.batch_max_bytes);
        if acked.is_empty() {
            for reason in &cut.unreadable {
                self.metrics.wal_damaged_bytes.inc();
                tracing::error!(segment = %s.path.display(), reason, "unreadable WAL record skipped");
            }
        }
        // Throttled tenants in this pass: their later batches wait with the first.
        let mut throttled: BTreeMap<&str, Duration> = BTreeMap::new();
        let pending: Vec<&Batch> = cut.batches.iter().filter(|b| !acked.contains(&b.seq)).collect();
        for batch in pending {
            if throttled.contains_key(batch.tenant.as_str()) {
                continue;
            }
            match self.deliver(batch, stop.as_deref_mut(), deadline).await {
                Delivered::Done => {
                    acked.insert(batch.seq);
                }
                Delivered::Throttled(after) => {
                    throttled.insert(&batch.tenant, after);
                }
                Delivered::Stopped => return Shipped::Stopped,
            }
        }
        if let Some(wait) = throttled.values().min() {
            return Shipped::Parked(Instant::now() + (*wait).min(self.options.backoff_max));
        }
        if let Err(e) = self.wal.remove(s) {
            tracing::error!(segment = %s.path.display(), error = %e, "removing a shipped WAL segment failed");
        }
        Shipped::Done
    }

    /// Sends a batch until it is acknowledged, refused for good, or throttled.
    async fn deliver(
        &self,
        batch: &Batch,
        mut stop: Option<&mut watch::Receiver<()>>,
        deadline: Option<Instant>,
    ) -> Delivered {
        let id = BatchId::agent(&self.agent_id, batch.boot, batch.seq, batch.accepted_millis);
        let signal = batch.signal.name();
        let mut wait = self.options.backoff_min;
        loop {
            let collector = &self.collectors[self.next.fetch_add(1, Ordering::Relaxed) % self.collectors.len()];
            let started = Instant::now();
            let verdict = collector.send(batch, &id, self.key.as_deref()).await;
            self.metrics.forward_seconds.observe(started.elapsed().as_secs_f64());
            match verdict {
                Verdict::Accepted { rejected, message } => {
                    self.metrics.count_batch(signal, "acked");
                    self.ledger.acked(batch.signal, &batch.items);
                    if rejected > 0 {
                        self.metrics.rejected_items.inc_by(rejected);
                        tracing::warn!(
                            collector = collector.url(),
                            rejected,
                            message,
                            "the collector refused part of a batch (partial success); not retried"
                        );
                    }
                    return Delivered::Done;
                }
                Verdict::Throttled { after, reason } => {
                    self.metrics.count_batch(signal, "throttled");
                    tracing::info!(
                        tenant = batch.tenant,
                        reason,
                        retry_in_ms = after.as_millis() as u64,
                        "a tenant's batch is throttled; other tenants' batches go on"
                    );
                    return Delivered::Throttled(after);
                }
                Verdict::Final { code, reason } => {
                    self.metrics.count_batch(signal, "dropped");
                    self.metrics.count_items(signal, "dropped", batch.items.values().sum());
                    self.ledger.dropped(batch.signal, &format!("refused by a collector: {code}"), &batch.items);
                    tracing::error!(
                        reason,
                        seq = batch.seq,
                        requests = batch.requests,
                        "the collector refused a batch for good; dropped"
                    );
                    return Delivered::Done;
                }
                Verdict::Retry { after, reason } => {
                    self.metrics.count_batch(signal, "retried");
                    let pause = after.unwrap_or(jitter(wait)).min(self.options.backoff_max);
                    tracing::warn!(reason, retry_in_ms = pause.as_millis() as u64, "sending a batch failed; retrying");
                    wait = (wait * 2).min(self.options.backoff_max);
                    if let Shipped::Stopped = self.pause(pause, stop.as_deref_mut(), deadline).await {
                        return Delivered::Stopped;
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
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    let mut x = u64::from(nanos) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    d.mul_f64(0.5 + (x % 1000) as f64 / 2000.0)
}
