//! Per-cgroup usage as the loader reports it, and the tracker that turns cumulative snapshots
//! into deltas without losing the last usage of removed cgroups.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use crate::abi::RawUsage;

/// Usage of one cgroup v2, summed over CPUs. In a [`Snapshot`] the counters are cumulative since
/// the probes were loaded (or since the cgroup first used anything); out of a [`DeltaTracker`]
/// they are the usage since the previous snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Nanoseconds on CPU of the cgroup's tasks, as the scheduler accounts them (the sum the
    /// cgroup's own `cpu.stat` `usage_usec` shows; hypervisor steal time is not in it).
    pub cpu_ns: u64,
    /// IP bytes received on network devices (not loopback) by the cgroup's sockets, as they
    /// crossed the network: IP and transport headers of every segment included (a GRO-merged
    /// packet counts the headers of each packet merged), link-layer framing not.
    pub net_rx_bytes: u64,
    /// IP bytes sent on network devices, counted the same way (a GSO/TSO packet counts the
    /// headers of every segment it becomes).
    pub net_tx_bytes: u64,
    /// The same on the loopback device: traffic that stays on the host, not billed by default.
    pub loopback_rx_bytes: u64,
    /// See [`Self::loopback_rx_bytes`].
    pub loopback_tx_bytes: u64,
    /// IP packets (segments) behind [`Self::net_rx_bytes`]: each carries one IP and one
    /// transport header in the byte count.
    pub net_rx_packets: u64,
    /// IP packets (segments) behind [`Self::net_tx_bytes`].
    pub net_tx_packets: u64,
    /// Packets behind [`Self::loopback_rx_bytes`].
    pub loopback_rx_packets: u64,
    /// Packets behind [`Self::loopback_tx_bytes`].
    pub loopback_tx_packets: u64,
    /// TCP connections the cgroup opened (connect) that became established.
    pub tcp_active: u64,
    /// TCP connections the cgroup's listening sockets accepted (handshake completed).
    pub tcp_passive: u64,
}

const FIELDS: usize = 11;

impl CgroupUsage {
    /// New established TCP connections, both ends: the `tcp_connections` meter.
    pub fn tcp_connections(&self) -> u64 {
        self.tcp_active + self.tcp_passive
    }

    /// True when nothing was used.
    pub fn is_zero(&self) -> bool {
        *self == CgroupUsage::default()
    }

    /// Adds `other`'s counters to these (a tenant's total over its cgroups; sums wrap like
    /// the kernel's u64 counters would).
    pub fn add(&mut self, other: &CgroupUsage) {
        let (mine, theirs) = (self.fields(), other.fields());
        *self = Self::from_fields(std::array::from_fn(|i| mine[i].wrapping_add(theirs[i])));
    }

    fn fields(&self) -> [u64; FIELDS] {
        [
            self.cpu_ns,
            self.net_rx_bytes,
            self.net_tx_bytes,
            self.loopback_rx_bytes,
            self.loopback_tx_bytes,
            self.net_rx_packets,
            self.net_tx_packets,
            self.loopback_rx_packets,
            self.loopback_tx_packets,
            self.tcp_active,
            self.tcp_passive,
        ]
    }

    fn from_fields(f: [u64; FIELDS]) -> Self {
        let [cpu_ns, net_rx_bytes, net_tx_bytes, loopback_rx_bytes, loopback_tx_bytes, net_rx_packets, net_tx_packets, loopback_rx_packets, loopback_tx_packets, tcp_active, tcp_passive] =
            f;
        CgroupUsage {
            cpu_ns,
            net_rx_bytes,
            net_tx_bytes,
            loopback_rx_bytes,
            loopback_tx_bytes,
            net_rx_packets,
            net_tx_packets,
            loopback_rx_packets,
            loopback_tx_packets,
            tcp_active,
            tcp_passive,
        }
    }

    /// The usage since `earlier`, a previous reading of the same counters. `None` when a counter
    /// went backwards, which means the kernel's slot was deleted and created again in between
    /// (then all of `self` is new usage).
    pub fn since(&self, earlier: &CgroupUsage) -> Option<CgroupUsage> {
        let (now, then) = (self.fields(), earlier.fields());
        let mut delta = [0; FIELDS];
        for i in 0..FIELDS {
            delta[i] = now[i].checked_sub(then[i])?;
        }
        Some(Self::from_fields(delta))
    }

    /// Adds one CPU's copy (sums wrap like the kernel's u64 counters would; they never get near).
    pub(crate) fn add_raw(&mut self, raw: &RawUsage) {
        let RawUsage {
            cpu_ns,
            net_rx_bytes,
            net_tx_bytes,
            loopback_rx_bytes,
            loopback_tx_bytes,
            net_rx_packets,
            net_tx_packets,
            loopback_rx_packets,
            loopback_tx_packets,
            tcp_active,
            tcp_passive,
        } = *raw;
        let add = [
            cpu_ns,
            net_rx_bytes,
            net_tx_bytes,
            loopback_rx_bytes,
            loopback_tx_bytes,
            net_rx_packets,
            net_tx_packets,
            loopback_rx_packets,
            loopback_tx_packets,
            tcp_active,
            tcp_passive,
        ];
        self.add(&Self::from_fields(add));
    }
}

/// Cost of one program, from the kernel (zero unless [`crate::ProbeConfig::run_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// The program's name in `bpf/usage.bpf.c`.
    pub name: &'static str,
    /// Times it ran since the stats were turned on.
    pub run_count: u64,
    /// Time spent running it, all CPUs together.
    pub run_time: Duration,
}

/// The probes' own cost and health, read with each [`Snapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Per program: runs and kernel CPU time.
    pub programs: Vec<ProgramStats>,
    /// Times a cgroup could not get a slot in the full `usage` map: usage lost. Must stay 0.
    pub usage_map_full: u64,
    /// Times a removed cgroup could not be queued for its final read (its key then stays in the
    /// map: not lost, but never freed).
    pub removed_map_full: u64,
    /// TCP connections whose socket's cgroup could not be read (counted under cgroup id 0).
    pub sock_cgroup_unknown: u64,
    /// Times a thread's local storage (where the CPU probe keeps the runtime it last charged)
    /// could not be had: that thread's CPU time is counted from its next switch on. Must stay 0.
    pub task_storage_failed: u64,
    /// Cgroups in the `usage` map at this reading.
    pub cgroups_tracked: usize,
    /// The maps' capacity ([`crate::ProbeConfig::max_cgroups`]).
    pub max_cgroups: u32,
}

/// One reading of the kernel's counters by [`crate::Probes::read`].
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// When the maps were read.
    pub taken_at: Instant,
    /// Cumulative usage per cgroup id (the inode number of the cgroup's directory in cgroup2).
    /// Id 0 holds TCP connections whose socket's cgroup could not be read.
    pub usage: BTreeMap<u64, CgroupUsage>,
    /// Cgroups removed at least one poll ago whose kernel counters were deleted right after this
    /// reading: their values in [`Self::usage`] are final, and they will not appear again (unless
    /// a socket that outlived its cgroup counts more bytes, which then start again from zero).
    pub retired: BTreeSet<u64>,
    /// The probes' own cost and health.
    pub stats: ProbeStats,
}

/// Turns successive [`Snapshot`]s into per-cgroup usage deltas.
///
/// The first snapshot's cumulative counters are all new usage. A cgroup retired in a snapshot
/// gets its final delta from that snapshot and is then forgotten; a counter that goes backwards
/// (the kernel's slot was recreated) counts its whole new value.
#[derive(Debug, Default)]
pub struct DeltaTracker {
    previous: BTreeMap<u64, CgroupUsage>,
}

impl DeltaTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Usage per cgroup since the previous snapshot; cgroups that used nothing are left out.
    pub fn update(&mut self, snapshot: &Snapshot) -> BTreeMap<u64, CgroupUsage> {
        let mut deltas = BTreeMap::new();
        for (&id, now) in &snapshot.usage {
            let delta = match self.previous.get(&id) {
                Some(before) => now.since(before).unwrap_or(*now),
                None => *now,
            };
            if !delta.is_zero() {
                deltas.insert(id, delta);
            }
            self.previous.insert(id, *now);
        }
        // Ids absent from the snapshot had their kernel slot deleted: start them from zero.
        self.previous.retain(|id, _| snapshot.usage.contains_key(id));
        for id in &snapshot.retired {
            self.previous.remove(id);
        }
        deltas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(usage: &[(u64, u64, u64)], retired: &[u64]) -> Snapshot {
        Snapshot {
            taken_at: Instant::now(),
            usage: usage
                .iter()
                .map(|&(id, cpu, tx)| (id, CgroupUsage { cpu_ns: cpu, net_tx_bytes: tx, ..Default::default() }))
                .collect(),
            retired: retired.iter().copied().collect(),
            stats: ProbeStats::default(),
        }
    }

    fn cpu(deltas: &BTreeMap<u64, CgroupUsage>) -> Vec<(u64, u64)> {
        deltas.iter().map(|(&id, u)| (id, u.cpu_ns)).collect()
    }

    #[test]
    fn deltas_between_snapshots() {
        let mut t = DeltaTracker::new();
        assert_eq!(cpu(&t.update(&snap(&[(1, 100, 0), (2, 50, 0)], &[]))), vec![(1, 100), (2, 50)]);
        // 2 did nothing: left out.
        assert_eq!(cpu(&t.update(&snap(&[(1, 130, 0), (2, 50, 0)], &[]))), vec![(1, 30)]);
    }

    #[test]
    fn retired_cgroup_gets_its_last_usage_then_is_forgotten() {
        let mut t = DeltaTracker::new();
        t.update(&snap(&[(7, 1_000, 10)], &[]));
        let last = t.update(&snap(&[(7, 1_500, 40)], &[7]));
        assert_eq!(last[&7].cpu_ns, 500);
        assert_eq!(last[&7].net_tx_bytes, 30);
        // Its key was deleted; a socket that outlived it counts again from zero: all new usage.
        let again = t.update(&snap(&[(7, 0, 25)], &[]));
        assert_eq!(again[&7].net_tx_bytes, 25);
        assert_eq!(again[&7].cpu_ns, 0);
    }

    #[test]
    fn counter_going_backwards_counts_whole_value() {
        let mut t = DeltaTracker::new();
        t.update(&snap(&[(3, 1_000, 0)], &[]));
        let d = t.update(&snap(&[(3, 200, 0)], &[]));
        assert_eq!(d[&3].cpu_ns, 200);
    }

    #[test]
    fn since_and_tcp_connections() {
        let a = CgroupUsage { tcp_active: 3, tcp_passive: 2, ..Default::default() };
        assert_eq!(a.tcp_connections(), 5);
        let b = CgroupUsage { tcp_active: 5, tcp_passive: 2, cpu_ns: 9, ..Default::default() };
        let d = b.since(&a).unwrap();
        assert_eq!((d.tcp_active, d.tcp_passive, d.cpu_ns), (2, 0, 9));
        assert_eq!(a.since(&b), None);
    }
}
