//! The agent's Prometheus metrics, served on the admin port at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of per-signal counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalOutcome {
    /// `traces`, `metrics` or `logs`.
    pub signal: &'static str,
    /// What happened.
    pub outcome: &'static str,
}

/// The metrics.
pub struct Metrics {
    registry: Registry,
    /// `tally_agent_items_total{signal,outcome}`: items from apps, `accepted` (in the WAL),
    /// `refused` (WAL full, apps told to retry) or `dropped` (WAL full with drop-oldest, or
    /// refused by a collector for good).
    pub items: Family<SignalOutcome, Counter>,
    /// `tally_agent_batches_total{signal,outcome}`: exports `acked`, `retried` or `dropped` (refused for good).
    pub batches: Family<SignalOutcome, Counter>,
    /// `tally_agent_rejected_items_total`: items collectors refused in a partial success.
    pub rejected_items: Counter,
    /// `tally_agent_forward_seconds`: latency of one export to a collector.
    pub forward_seconds: Histogram,
    /// `tally_agent_wal_bytes`: bytes in the WAL not yet acknowledged by a collector.
    pub wal_bytes: Gauge,
    /// `tally_agent_wal_segments`: WAL segment files.
    pub wal_segments: Gauge,
    /// `tally_agent_wal_oldest_seconds`: age of the oldest data waiting in the WAL.
    pub wal_oldest_seconds: Gauge,
    /// `tally_agent_wal_damaged_bytes_total`: WAL bytes (or unreadable records) skipped as damaged.
    pub wal_damaged_bytes: Counter,
    wal: std::sync::OnceLock<collector::wal::Wal>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tally_agent");
        let items = Family::default();
        registry.register("items", "OTLP items from apps by signal and outcome", items.clone());
        let batches = Family::default();
        registry.register("batches", "Exports to collectors by signal and outcome", batches.clone());
        let rejected_items = Counter::default();
        registry.register("rejected_items", "Items collectors refused in a partial success", rejected_items.clone());
        let forward_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("forward_seconds", "Latency of one export to a collector", forward_seconds.clone());
        let wal_bytes = Gauge::default();
        registry.register("wal_bytes", "Bytes in the WAL not yet acknowledged by a collector", wal_bytes.clone());
        let wal_segments = Gauge::default();
        registry.register("wal_segments", "WAL segment files", wal_segments.clone());
        let wal_oldest_seconds = Gauge::default();
        registry.register("wal_oldest_seconds", "Age of the oldest WAL segment waiting to be shipped", wal_oldest_seconds.clone());
        let wal_damaged_bytes = Counter::default();
        registry.register("wal_damaged_bytes", "WAL bytes or records skipped as damaged", wal_damaged_bytes.clone());
        Self {
            registry,
            items,
            batches,
            rejected_items,
            forward_seconds,
            wal_bytes,
            wal_segments,
            wal_oldest_seconds,
            wal_damaged_bytes,
            wal: std::sync::OnceLock::new(),
        }
    }
}

impl Metrics {
    /// Reports `wal`'s depth in the WAL gauges.
    pub fn watch_wal(&self, wal: collector::wal::Wal) {
        let _ = self.wal.set(wal);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        if let Some(wal) = self.wal.get() {
            self.wal_bytes.set(i64::try_from(wal.pending_bytes()).unwrap_or(i64::MAX));
            self.wal_segments.set(i64::try_from(wal.segments()).unwrap_or(i64::MAX));
            self.wal_oldest_seconds.set(oldest_age(wal.dir()).map_or(0, |d| d.as_secs() as i64));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Adds `n` items of `signal` with `outcome`.
    pub fn count_items(&self, signal: &'static str, outcome: &'static str, n: u64) {
        if n > 0 {
            self.items.get_or_create(&SignalOutcome { signal, outcome }).inc_by(n);
        }
    }

    /// Counts one export of `signal` with `outcome`.
    pub fn count_batch(&self, signal: &'static str, outcome: &'static str) {
        self.batches.get_or_create(&SignalOutcome { signal, outcome }).inc();
    }
}

/// Age of the oldest segment file in `dir` (by modification time).
fn oldest_age(dir: &std::path::Path) -> Option<std::time::Duration> {
    let oldest = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| collector::wal::segment::parse_name(n).is_some()))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .min()?;
    oldest.elapsed().ok()
}
