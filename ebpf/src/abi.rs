//! The `#[repr(C)]` mirrors of the structs in `bpf/usage.h`: the only place Rust depends on the C
//! layout. The test below reads the layout clang produced (`tally_abi_layout` in the object) and
//! fails if the two drift.

/// `struct cgroup_usage`: one CPU's copy of a cgroup's counters in the `usage` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawUsage {
    pub cpu_ns: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub loopback_rx_bytes: u64,
    pub loopback_tx_bytes: u64,
    pub net_rx_packets: u64,
    pub net_tx_packets: u64,
    pub loopback_rx_packets: u64,
    pub loopback_tx_packets: u64,
    pub tcp_active: u64,
    pub tcp_passive: u64,
}

/// `struct probe_counters`: one CPU's copy of the programs' health counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawCounters {
    pub usage_map_full: u64,
    pub removed_map_full: u64,
    pub sock_cgroup_unknown: u64,
    pub task_storage_failed: u64,
}

// SAFETY: plain structs of u64 without padding; every bit pattern is a valid value.
unsafe impl aya::Pod for RawUsage {}
unsafe impl aya::Pod for RawCounters {}

/// Names of the maps and programs in `bpf/usage.bpf.c`.
pub(crate) mod names {
    pub const USAGE_MAP: &str = "usage";
    pub const REMOVED_MAP: &str = "removed";
    pub const COUNTERS_MAP: &str = "counters";
    pub const SCHED_SWITCH: &str = "tally_sched_switch";
    pub const PROCESS_EXIT: &str = "tally_sched_process_exit";
    pub const SOCK_STATE: &str = "tally_inet_sock_set_state";
    pub const CGROUP_RMDIR: &str = "tally_cgroup_rmdir";
    pub const SKB_INGRESS: &str = "tally_skb_ingress";
    pub const SKB_EGRESS: &str = "tally_skb_egress";
}

/// The compiled eBPF object, embedded in the binary.
pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/usage.bpf.o"));

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use object::{Object, ObjectSection, ObjectSymbol};

    use super::*;

    /// The u32 values of `tally_abi_layout`, as clang computed them for the BPF target.
    fn c_layout() -> Vec<u32> {
        let file = object::File::parse(OBJECT).expect("the embedded object is ELF");
        let symbol =
            file.symbols().find(|s| s.name() == Ok("tally_abi_layout")).expect("usage.bpf.c defines tally_abi_layout");
        let section = file.section_by_index(symbol.section_index().expect("in a section")).expect("section exists");
        let data = section.data().expect("section data");
        let start = symbol.address() as usize;
        data[start..start + symbol.size() as usize]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn layout_matches_c() {
        let rust = vec![
            size_of::<RawUsage>(),
            offset_of!(RawUsage, cpu_ns),
            offset_of!(RawUsage, net_rx_bytes),
            offset_of!(RawUsage, net_tx_bytes),
            offset_of!(RawUsage, loopback_rx_bytes),
            offset_of!(RawUsage, loopback_tx_bytes),
            offset_of!(RawUsage, net_rx_packets),
            offset_of!(RawUsage, net_tx_packets),
            offset_of!(RawUsage, loopback_rx_packets),
            offset_of!(RawUsage, loopback_tx_packets),
            offset_of!(RawUsage, tcp_active),
            offset_of!(RawUsage, tcp_passive),
            size_of::<RawCounters>(),
            offset_of!(RawCounters, usage_map_full),
            offset_of!(RawCounters, removed_map_full),
            offset_of!(RawCounters, sock_cgroup_unknown),
            offset_of!(RawCounters, task_storage_failed),
        ];
        let rust: Vec<u32> = rust.into_iter().map(|n| n as u32).collect();
        assert_eq!(rust, c_layout());
    }
}
