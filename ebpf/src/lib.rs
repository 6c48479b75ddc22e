//! Tally's eBPF usage probes: CPU time, network bytes and new TCP connections per cgroup v2,
//! measured in the kernel by C programs (`bpf/usage.bpf.c`, compiled by clang from `build.rs`)
//! and read by an [`aya`] loader into typed per-cgroup snapshots.
//!
//! - [`Probes::load`] checks privileges and kernel features, mounts tracefs when needed, loads and
//!   attaches the programs; [`ProbeError::missing`] says what is missing when it cannot.
//! - [`Probes::read`] returns a [`Snapshot`]: cumulative [`CgroupUsage`] per cgroup id since load,
//!   plus the programs' own cost ([`ProbeStats`]).
//! - [`DeltaTracker`] turns successive snapshots into per-cgroup usage deltas, including the last
//!   usage of cgroups that were removed.
//! - [`attribution`] maps a cgroup id to its path, container and tenant.
//!
//! Attribution rules: CPU time belongs to the cgroup of the task that ran, as the scheduler
//! accounts it; network bytes and connections belong to the cgroup of the socket (the one its
//! creator was in; an accepted socket inherits its listener's), never to whatever task a softirq
//! interrupted. Loopback bytes are counted apart from network bytes.
//!
//! ```no_run
//! use tally_ebpf::{attribution::{Attributor, TenantRules}, DeltaTracker, ProbeConfig, Probes};
//!
//! let mut probes = Probes::load(&ProbeConfig::default()).map_err(|e| {
//!     // e.g. "CAP_BPF CAP_NET_ADMIN": run OTLP-only and expose it.
//!     eprintln!("probes off, missing {:?}: {e}", e.missing());
//!     e
//! })?;
//! let rules = TenantRules::parse(["kubepods.slice/**/*pod0c4f5a0e_*=acme"])?;
//! let mut attributor = Attributor::new(probes.cgroup_root(), rules);
//! let mut tracker = DeltaTracker::new();
//! loop {
//!     std::thread::sleep(std::time::Duration::from_secs(10));
//!     let snapshot = probes.read()?;
//!     for (cgroup_id, delta) in tracker.update(&snapshot) {
//!         let tenant = &attributor.attribute(cgroup_id).tenant;
//!         println!("{tenant}: {} ns CPU, {} B out", delta.cpu_ns, delta.net_tx_bytes);
//!     }
//!     for id in &snapshot.retired {
//!         attributor.forget(*id);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod abi;
pub mod attribution;
mod error;
mod host;
mod probes;
mod usage;

pub use error::{Capability, ProbeError};
pub use host::{cgroup2_mount, Hierarchy};
pub use probes::{ProbeConfig, Probes};
pub use usage::{CgroupUsage, DeltaTracker, ProbeStats, ProgramStats, Snapshot};
