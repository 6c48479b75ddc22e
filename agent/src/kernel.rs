//! Usage measured in the kernel by the eBPF probes (`tally-ebpf`): CPU time,
//! network bytes and new TCP connections per cgroup, attributed to tenants by
//! the `--cgroup-tenant` rules and booked in the ledger, so the next usage
//! report carries them through the WAL to the collectors like any data.
//!
//! Loopback bytes (a pod talking to itself, a sidecar to its app) are not
//! billed: they cost nothing on a cloud bill. Usage of cgroups no rule maps is
//! billed to `unknown`, never dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tally_ebpf::attribution::{Attributor, RuleError, TenantRules};
use tally_ebpf::{CgroupUsage, DeltaTracker, ProbeConfig, ProbeError, ProbeStats, Probes};

use crate::ledger::Ledger;
use crate::metrics::Metrics;

/// How the probes are set up.
#[derive(Debug, Clone, Default)]
pub struct KernelOptions {
    /// Where network bytes are counted from (`None`: the cgroup2 mount).
    pub cgroup_root: Option<PathBuf>,
    /// `PATTERN=TENANT` rules, first match wins.
    pub rules: Vec<String>,
}

/// The probes, loaded and attached, and what turns their counters into tenants' usage.
pub struct KernelUsage {
    probes: Probes,
    tracker: DeltaTracker,
    attributor: Attributor,
}

/// Why the probes are off.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A `--cgroup-tenant` rule is malformed (a configuration error: the agent stops).
    #[error("--cgroup-tenant: {0}")]
    Rule(#[from] RuleError),
    /// The kernel, the privileges or the mounts do not allow the probes (the agent runs OTLP-only).
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

impl KernelUsage {
    /// Checks the rules, then loads and attaches the probes.
    pub fn load(options: &KernelOptions) -> Result<Self, KernelError> {
        let rules = TenantRules::parse(&options.rules)?;
        let config = ProbeConfig { cgroup_root: options.cgroup_root.clone(), ..ProbeConfig::default() };
        let probes = Probes::load(&config)?;
        let attributor = Attributor::new(probes.cgroup_root(), rules);
        Ok(Self { probes, tracker: DeltaTracker::new(), attributor })
    }

    /// Reads the probes and books what each tenant used since the last read
    /// (since the probes were loaded, the first time).
    pub fn collect(&mut self, ledger: &Ledger) -> Result<ProbeStats, ProbeError> {
        let snapshot = self.probes.read()?;
        let mut by_tenant: BTreeMap<String, CgroupUsage> = BTreeMap::new();
        for (id, delta) in self.tracker.update(&snapshot) {
            by_tenant.entry(self.attributor.attribute(id).tenant.clone()).or_default().add(&delta);
        }
        // A removed cgroup's last counters are in this snapshot's deltas; its id may be reused.
        for id in &snapshot.retired {
            self.attributor.forget(*id);
        }
        for (tenant, u) in &by_tenant {
            ledger.measured(tenant, "cpu_seconds", u.cpu_ns);
            ledger.measured(tenant, "net_rx_bytes", u.net_rx_bytes);
            ledger.measured(tenant, "net_tx_bytes", u.net_tx_bytes);
            ledger.measured(tenant, "tcp_connections", u.tcp_connections());
        }
        Ok(snapshot.stats)
    }
}

/// The probes' reader: a thread that books usage every interval, and once more when stopped.
pub struct Collecting {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Collecting {
    /// Collects every `every` into `ledger`, exposing the probes' own cost in `metrics`.
    pub fn start(mut usage: KernelUsage, ledger: Arc<Ledger>, metrics: Arc<Metrics>, every: Duration) -> Self {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ebpf-usage".into())
            .spawn(move || loop {
                let last = match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => false,
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                };
                match usage.collect(&ledger) {
                    Ok(stats) => metrics.ebpf_stats(&stats),
                    Err(e) => {
                        metrics.ebpf_read_errors.inc();
                        tracing::error!(error = %e, "reading the eBPF probes failed; their counters keep counting for the next read");
                    }
                }
                if last {
                    usage.probes.detach();
                    return;
                }
            })
            .expect("spawning the eBPF reader thread");
        Self { stop, thread }
    }

    /// Books the usage since the last read, detaches the probes and returns.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
