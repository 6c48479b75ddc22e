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
//! Attribution rules (see `shared/EBPF.md`): CPU time belongs to the cgroup of the task that ran;
//! network bytes and connections belong to the cgroup of the socket (the one its creator was in;
//! an accepted socket inherits its listener's), never to whatever task the softirq interrupted.

mod abi;
pub mod attribution;
mod error;
mod host;
mod probes;
mod usage;

pub use error::{Capability, ProbeError};
pub use host::{cgroup2_mount, Hierarchy};
pub use probes::{ProbeConfig, ProbeStats, Probes, ProgramStats};
pub use usage::{CgroupUsage, DeltaTracker, Snapshot};
