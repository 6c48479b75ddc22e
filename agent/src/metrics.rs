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

/// Labels of the probe state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeState {
    /// `on`, `off` (could not load: see `missing` and the log) or `disabled` (`--no-ebpf`).
    pub state: &'static str,
    /// What is missing when off: capabilities (`CAP_BPF CAP_NET_ADMIN`), `cgroup2`, `tracefs`,
    /// `btf`, or `error` for another failure.
    pub missing: String,
}

/// Labels naming an eBPF program or map.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Named {
    /// The name.
    pub name: &'static str,
}

/// The metrics.
pub struct Metrics {
    registry: Registry,
    /// `tally_agent_items_total{signal,outcome}`: items from apps, `accepted` (in the WAL),
    /// `refused` (WAL full, apps told to retry) or `dropped` (WAL full with drop-oldest, or
    /// refused by a collector for good).
    pub items: Family<SignalOutcome, Counter>,
    /// `tally_agent_batches_total{signal,outcome}`: exports `acked`, `retried`, `throttled` (its tenant over its rate limit) or `dropped` (refused for good).
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
    /// `tally_agent_wal_queued_bytes`: bytes of appends waiting for the WAL's writer (they count in `--wal-max-bytes`).
    pub wal_queued_bytes: Gauge,
    /// `tally_agent_wal_full_total`: appends the WAL refused because it was full (`--wal-max-bytes`, or
    /// its 65,536 segment files), before the `--wal-full` policy applied.
    pub wal_full: Counter,
    /// `tally_agent_wal_damaged_bytes_total`: WAL bytes (or unreadable records) skipped as damaged.
    pub wal_damaged_bytes: Counter,
    /// `tally_agent_ebpf_probes{state,missing}`: 1 for the probes' state.
    pub ebpf_probes: Family<ProbeState, Gauge>,
    /// `tally_agent_ebpf_program_runs_total{name}`: runs of each eBPF program.
    pub ebpf_program_runs: Family<Named, Counter>,
    /// `tally_agent_ebpf_program_run_seconds_total{name}`: kernel CPU time of each eBPF program.
    pub ebpf_program_run_seconds: Family<Named, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// `tally_agent_ebpf_map_full_total{name}`: updates a full map refused (`usage`: usage lost;
    /// `removed`: a removed cgroup's slot never freed). Must stay 0.
    pub ebpf_map_full: Family<Named, Counter>,
    /// `tally_agent_ebpf_task_storage_failed_total`: threads whose CPU time was counted from their next switch. Must stay 0.
    pub ebpf_task_storage_failed: Counter,
    /// `tally_agent_ebpf_sock_cgroup_unknown_total`: connections whose socket's cgroup could not be read (billed to `unknown`).
    pub ebpf_sock_cgroup_unknown: Counter,
    /// `tally_agent_ebpf_cgroups`: cgroups the probes track.
    pub ebpf_cgroups: Gauge,
    /// `tally_agent_ebpf_read_errors_total`: failed reads of the probes' maps (retried next interval).
    pub ebpf_read_errors: Counter,
    wal: std::sync::OnceLock<wal::Wal>,
}

impl Metrics {
    /// The metrics of a process whose OTLP receivers share the budget `inflight`.
    pub fn new(inflight: otlp::InFlight) -> Self {
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
        registry.register(
            "wal_oldest_seconds",
            "Age of the oldest WAL segment waiting to be shipped",
            wal_oldest_seconds.clone(),
        );
        let wal_queued_bytes = Gauge::default();
        registry.register(
            "wal_queued_bytes",
            "Bytes of appends waiting for the WAL's writer (counted in the WAL's bound)",
            wal_queued_bytes.clone(),
        );
        let wal_full = Counter::default();
        registry.register("wal_full", "Appends the WAL refused because it was full", wal_full.clone());
        let wal_damaged_bytes = Counter::default();
        registry.register("wal_damaged_bytes", "WAL bytes or records skipped as damaged", wal_damaged_bytes.clone());
        let ebpf_probes = Family::default();
        registry.register(
            "ebpf_probes",
            "State of the eBPF usage probes (1 for the current state)",
            ebpf_probes.clone(),
        );
        let ebpf_program_runs = Family::default();
        registry.register("ebpf_program_runs", "Runs of each eBPF program", ebpf_program_runs.clone());
        let ebpf_program_run_seconds = Family::default();
        registry.register(
            "ebpf_program_run_seconds",
            "Kernel CPU time of each eBPF program",
            ebpf_program_run_seconds.clone(),
        );
        let ebpf_map_full = Family::default();
        registry.register(
            "ebpf_map_full",
            "Updates a full eBPF map refused (usage: usage lost)",
            ebpf_map_full.clone(),
        );
        let ebpf_task_storage_failed = Counter::default();
        registry.register(
            "ebpf_task_storage_failed",
            "Threads whose CPU time was counted from their next switch",
            ebpf_task_storage_failed.clone(),
        );
        let ebpf_sock_cgroup_unknown = Counter::default();
        registry.register(
            "ebpf_sock_cgroup_unknown",
            "Connections whose socket's cgroup could not be read",
            ebpf_sock_cgroup_unknown.clone(),
        );
        let ebpf_cgroups = Gauge::default();
        registry.register("ebpf_cgroups", "Cgroups the eBPF probes track", ebpf_cgroups.clone());
        let ebpf_read_errors = Counter::default();
        registry.register("ebpf_read_errors", "Failed reads of the eBPF maps", ebpf_read_errors.clone());
        // `tally_<binary>_inflight_bytes` and `_inflight_refused_total`, read from the budget.
        registry.register_collector(Box::new(inflight));
        Self {
            registry,
            items,
            batches,
            rejected_items,
            forward_seconds,
            wal_bytes,
            wal_segments,
            wal_oldest_seconds,
            wal_queued_bytes,
            wal_full,
            wal_damaged_bytes,
            ebpf_probes,
            ebpf_program_runs,
            ebpf_program_run_seconds,
            ebpf_map_full,
            ebpf_task_storage_failed,
            ebpf_sock_cgroup_unknown,
            ebpf_cgroups,
            ebpf_read_errors,
            wal: std::sync::OnceLock::new(),
        }
    }
}

impl Metrics {
    /// Reports `wal`'s depth in the WAL gauges.
    pub fn watch_wal(&self, wal: wal::Wal) {
        let _ = self.wal.set(wal);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        if let Some(wal) = self.wal.get() {
            self.wal_bytes.set(i64::try_from(wal.pending_bytes()).unwrap_or(i64::MAX));
            self.wal_segments.set(i64::try_from(wal.segments()).unwrap_or(i64::MAX));
            self.wal_oldest_seconds.set(oldest_age(wal.dir()).map_or(0, |d| d.as_secs() as i64));
            self.wal_queued_bytes.set(i64::try_from(wal.queued_bytes()).unwrap_or(i64::MAX));
            // Raised to the WAL's own count; fetch_max keeps concurrent scrapes from counting twice.
            self.wal_full.inner().fetch_max(wal.refused_full(), std::sync::atomic::Ordering::Relaxed);
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

    /// Sets the probes' state.
    pub fn ebpf_state(&self, state: &'static str, missing: &str) {
        self.ebpf_probes.clear();
        self.ebpf_probes.get_or_create(&ProbeState { state, missing: missing.to_owned() }).set(1);
    }

    /// Brings the eBPF counters up to the kernel's cumulative `stats`.
    pub fn ebpf_stats(&self, stats: &tally_ebpf::ProbeStats) {
        let catch_up = |c: &Counter, total: u64| c.inc_by(total.saturating_sub(c.get()));
        for p in &stats.programs {
            catch_up(&self.ebpf_program_runs.get_or_create(&Named { name: p.name }), p.run_count);
            let seconds = self.ebpf_program_run_seconds.get_or_create(&Named { name: p.name });
            let more = p.run_time.as_secs_f64() - seconds.get();
            if more > 0.0 {
                seconds.inc_by(more);
            }
        }
        catch_up(&self.ebpf_map_full.get_or_create(&Named { name: "usage" }), stats.usage_map_full);
        catch_up(&self.ebpf_map_full.get_or_create(&Named { name: "removed" }), stats.removed_map_full);
        catch_up(&self.ebpf_task_storage_failed, stats.task_storage_failed);
        catch_up(&self.ebpf_sock_cgroup_unknown, stats.sock_cgroup_unknown);
        self.ebpf_cgroups.set(i64::try_from(stats.cgroups_tracked).unwrap_or(i64::MAX));
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
        .filter(|e| e.file_name().to_str().is_some_and(|n| wal::segment::parse_name(n).is_some()))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .min()?;
    oldest.elapsed().ok()
}
