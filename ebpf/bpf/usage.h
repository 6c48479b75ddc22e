/* Structs shared between the eBPF programs (usage.bpf.c) and the Rust loader (src/abi.rs).
 * Change one side, change the other: the Rust test `abi::tests::layout_matches_c` reads the
 * layout clang produced (tally_abi_layout in usage.bpf.c) and fails when they drift. */
#ifndef TALLY_USAGE_H
#define TALLY_USAGE_H

#include <linux/types.h>

/* Cumulative usage of one cgroup v2 (the value of the per-CPU hash `usage`, keyed by cgroup id). */
struct cgroup_usage {
	__u64 cpu_ns;            /* time on CPU of the cgroup's tasks */
	__u64 net_rx_bytes;      /* IP bytes received on non-loopback devices (headers of every
	                          * GRO/GSO segment included, no link-layer framing) */
	__u64 net_tx_bytes;      /* IP bytes sent on non-loopback devices */
	__u64 loopback_rx_bytes; /* the same on the loopback device (ifindex 1 in every netns) */
	__u64 loopback_tx_bytes;
	__u64 net_rx_packets;    /* IP packets (segments) behind net_rx_bytes */
	__u64 net_tx_packets;
	__u64 loopback_rx_packets;
	__u64 loopback_tx_packets;
	__u64 tcp_active;        /* TCP SYN_SENT -> ESTABLISHED (connect) */
	__u64 tcp_passive;       /* TCP SYN_RECV -> ESTABLISHED (accept side) */
};

/* Health counters of the programs themselves (per-CPU array `counters`, one entry). */
struct probe_counters {
	__u64 usage_map_full;      /* a new cgroup could not get a slot in `usage`: its usage is lost */
	__u64 removed_map_full;    /* a removed cgroup could not be queued in `removed` */
	__u64 sock_cgroup_unknown; /* a TCP socket whose cgroup could not be read (counted under id 0) */
	__u64 task_storage_failed; /* a thread's `task_runtime` storage could not be had */
};

#endif
