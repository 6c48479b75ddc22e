// SPDX-License-Identifier: GPL-2.0
/* Tally's usage probes: CPU time, network bytes and new TCP connections per cgroup v2.
 *
 * Everything is aggregated here, in per-CPU maps keyed by cgroup id; user space polls the sums.
 * Nothing is streamed per event. The tracepoint context structs are declared by hand from
 * /sys/kernel/tracing/events/<category>/<name>/format (stable ABI), so the build needs only clang
 * and libbpf-dev's headers, no generated vmlinux.h. The few kernel structs read through a pointer
 * (task_struct -> runtime, sock -> cgroup id) are declared with only the fields used and
 * preserve_access_index (CO-RE): their offsets are fixed up from the kernel's BTF at load.
 */
#include <stdbool.h>
#include <stddef.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "usage.h"

char LICENSE[] SEC("license") = "GPL";

#define LOOPBACK_IFINDEX 1 /* the kernel gives lo ifindex 1 in every network namespace */
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define CGROUP_DFL_HIERARCHY 0 /* hierarchy id of cgroup v2 ("0::/" in /proc/self/cgroup) */

/* max_entries of `usage` and `removed` are placeholders: the loader sets them (max_cgroups). Not
 * LRU: an eviction would silently drop billable usage; a full map is counted instead. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct cgroup_usage);
} usage SEC(".maps");

/* Cgroups removed since the last poll, so user space reads their final usage before deleting
 * their keys. Value: bpf_ktime_get_ns() at rmdir. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} removed SEC(".maps");

/* Per task (thread): its se.sum_exec_runtime when its CPU time was last charged, in the task's own
 * local storage (a pointer away, freed with the task; cheaper than a hash keyed by pid). Kept per
 * task, not per CPU, so that a context switch the probe did not see (none should be missed, but
 * the kernel gives no such promise) delays a charge instead of losing it: the next charge of the
 * task covers everything it ran since the last one. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} task_runtime SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct probe_counters);
} counters SEC(".maps");

/* Layout of the shared structs as clang lays them out for BPF, read by the Rust layout test. */
__attribute__((used)) const __u32 tally_abi_layout[] = {
	sizeof(struct cgroup_usage),
	offsetof(struct cgroup_usage, cpu_ns),
	offsetof(struct cgroup_usage, net_rx_bytes),
	offsetof(struct cgroup_usage, net_tx_bytes),
	offsetof(struct cgroup_usage, loopback_rx_bytes),
	offsetof(struct cgroup_usage, loopback_tx_bytes),
	offsetof(struct cgroup_usage, net_rx_packets),
	offsetof(struct cgroup_usage, net_tx_packets),
	offsetof(struct cgroup_usage, loopback_rx_packets),
	offsetof(struct cgroup_usage, loopback_tx_packets),
	offsetof(struct cgroup_usage, tcp_active),
	offsetof(struct cgroup_usage, tcp_passive),
	sizeof(struct probe_counters),
	offsetof(struct probe_counters, usage_map_full),
	offsetof(struct probe_counters, removed_map_full),
	offsetof(struct probe_counters, sock_cgroup_unknown),
	offsetof(struct probe_counters, task_storage_failed),
};

static __always_inline struct probe_counters *health(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&counters, &zero);
}

/* The usage slot of a cgroup on this CPU, created zeroed on first use. NULL only when the map is
 * full, which is counted. */
static __always_inline struct cgroup_usage *usage_of(__u64 cgroup_id)
{
	struct cgroup_usage *u = bpf_map_lookup_elem(&usage, &cgroup_id);
	if (u)
		return u;
	struct cgroup_usage zero = {};
	/* NOEXIST: another CPU may have created it meanwhile (EEXIST), then the lookup finds it.
	 * A per-CPU hash update from a program zero-fills the other CPUs' copies. */
	long err = bpf_map_update_elem(&usage, &cgroup_id, &zero, BPF_NOEXIST);
	u = bpf_map_lookup_elem(&usage, &cgroup_id);
	if (!u && err) {
		struct probe_counters *h = health();
		if (h)
			__sync_fetch_and_add(&h->usage_map_full, 1);
	}
	return u;
}

/* Additions are atomic even though each CPU has its own copy: a cgroup_skb program in process
 * context can be interrupted by a softirq running another one on the same CPU that adds to the
 * same field; a plain load-add-store would lose one of the two. */
#define ADD(field, n) __sync_fetch_and_add(&(field), (n))

/* Just enough of struct task_struct for CO-RE: se.sum_exec_runtime is the task's time on CPU as
 * the scheduler accounts it, the very sum the cgroup's cpu.stat usage_usec adds up (it leaves out
 * steal time when the hypervisor reports it, which wall-clock slices would not). */
struct sched_entity {
	__u64 sum_exec_runtime;
} __attribute__((preserve_access_index));
struct task_struct {
	int pid;
	struct sched_entity se;
} __attribute__((preserve_access_index));

static __always_inline void count_task_storage_failed(void)
{
	struct probe_counters *h = health();
	if (h)
		__sync_fetch_and_add(&h->task_storage_failed, 1);
}

/* Charges `task`, which is current, for its runtime since it was last charged, to current's
 * cgroup. A task seen for the first time on its way out (it was running before the probes were
 * attached) gets its storage created at its present runtime: only its runtime from now on is
 * known to be ours to count. */
static __always_inline void charge_current(struct task_struct *task)
{
	__u64 runtime = task->se.sum_exec_runtime;
	if (task->pid == 0)
		return; /* the idle tasks: nobody's usage */
	__u64 *last = bpf_task_storage_get(&task_runtime, task, &runtime, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!last) {
		count_task_storage_failed();
		return;
	}
	if (runtime > *last) {
		struct cgroup_usage *u = usage_of(bpf_get_current_cgroup_id());
		if (u)
			ADD(u->cpu_ns, runtime - *last);
	}
	*last = runtime;
}

/* sched_switch runs as the OUTGOING task (current == prev): what prev ran since it was last
 * charged belongs to current's cgroup. The scheduler has already brought prev's runtime up to
 * date (put_prev_task) when this fires. `next` starts being tracked at its first switch-in (the
 * storage is created with its runtime then, and left alone when it exists), so a task forked
 * after load is counted from its first nanosecond. */
SEC("tp_btf/sched_switch")
int BPF_PROG(tally_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	charge_current(prev);
	if (next->pid != 0) {
		__u64 runtime = next->se.sum_exec_runtime;
		if (!bpf_task_storage_get(&task_runtime, next, &runtime, BPF_LOCAL_STORAGE_GET_F_CREATE))
			count_task_storage_failed();
	}
	return 0;
}

/* /sys/kernel/tracing/events/sched/sched_process_exit/format */
struct sched_process_exit_args {
	__u64 common;
	char comm[16];
	int pid;
	int prio;
	__u8 group_dead;
};

/* A task that exits leaves its cgroup (cgroup_exit) before its last switch, and an empty cgroup
 * may be removed at once: charge what it ran so far while it still runs in its cgroup. Its
 * runtime is as of the last scheduler update (tick or switch); the rest is charged at its final
 * switch, from where this left off, so nothing is counted twice. */
SEC("tracepoint/sched/sched_process_exit")
int tally_sched_process_exit(struct sched_process_exit_args *ctx)
{
	charge_current(bpf_get_current_task_btf());
	return 0;
}

/* Length of the IP and transport headers at the start of the packet (cgroup_skb programs see the
 * packet from its network header), 0 if it cannot be read. */
static __always_inline __u32 headers_len(struct __sk_buff *skb)
{
	__u8 first, proto, doff;
	__u32 ip_len;
	if (bpf_skb_load_bytes(skb, 0, &first, 1))
		return 0;
	if ((first >> 4) == 4) {
		ip_len = (first & 0x0f) * 4;
		if (bpf_skb_load_bytes(skb, 9, &proto, 1))
			return 0;
	} else if ((first >> 4) == 6) {
		ip_len = 40; /* extension headers are rare on TCP/UDP and not followed */
		if (bpf_skb_load_bytes(skb, 6, &proto, 1))
			return 0;
	} else {
		return 0;
	}
	if (proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, ip_len + 12, &doff, 1))
			return ip_len;
		return ip_len + (doff >> 4) * 4;
	}
	if (proto == IPPROTO_UDP)
		return ip_len + 8;
	return ip_len;
}

/* Network bytes belong to the cgroup of the socket that owns the packet (bpf_skb_cgroup_id: the
 * socket's cgroup, set when the socket was created, inherited by accepted sockets), never to
 * current: ingress runs in softirq under whatever task was interrupted.
 *
 * A byte is an IP byte as it crosses the network: skb->len counts from the IP header (no
 * link-layer framing), and a GSO packet (egress, segmented later by the stack or the NIC) or a
 * GRO packet (ingress, merged earlier) of N segments carries N sets of IP and transport headers on
 * the wire, not the one skb->len includes: the N-1 others are added. Packets are those segments. */
static __always_inline void count_skb(struct __sk_buff *skb, int ingress)
{
	struct cgroup_usage *u = usage_of(bpf_skb_cgroup_id(skb));
	if (!u)
		return;
	__u64 len = skb->len;
	__u64 segs = skb->gso_segs;
	if (segs == 0)
		segs = 1;
	if (segs > 1)
		len += (segs - 1) * headers_len(skb);
	if (skb->ifindex == LOOPBACK_IFINDEX) {
		if (ingress) {
			ADD(u->loopback_rx_bytes, len);
			ADD(u->loopback_rx_packets, segs);
		} else {
			ADD(u->loopback_tx_bytes, len);
			ADD(u->loopback_tx_packets, segs);
		}
	} else {
		if (ingress) {
			ADD(u->net_rx_bytes, len);
			ADD(u->net_rx_packets, segs);
		} else {
			ADD(u->net_tx_bytes, len);
			ADD(u->net_tx_packets, segs);
		}
	}
}

/* Return 1: these programs only count; they must never drop a packet. */
SEC("cgroup_skb/ingress")
int tally_skb_ingress(struct __sk_buff *skb)
{
	count_skb(skb, 1);
	return 1;
}

SEC("cgroup_skb/egress")
int tally_skb_egress(struct __sk_buff *skb)
{
	count_skb(skb, 0);
	return 1;
}

/* Just enough of the kernel's structs to walk sock -> cgroup -> kernfs node -> id. CO-RE
 * (preserve_access_index) relocates each field by name against the running kernel's BTF. */
struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));
struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));
struct sock_cgroup_data {
	struct cgroup *cgroup;
} __attribute__((preserve_access_index));
struct sock {
	struct sock_cgroup_data sk_cgrp_data;
} __attribute__((preserve_access_index));

/* /sys/kernel/tracing/events/sock/inet_sock_set_state/format */
struct inet_sock_set_state_args {
	__u64 common;
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
};

/* New TCP connections, counted once per end when it becomes ESTABLISHED: SYN_SENT -> ESTABLISHED
 * on the connecting side, SYN_RECV -> ESTABLISHED on the accepted child socket.
 *
 * Why this tracepoint rather than sockops: both ends are attributed to the socket's own cgroup,
 * read from the socket (sk->sk_cgrp_data.cgroup->kn->id, the cgroup v2 id), which the tracepoint
 * gives us (skaddr). The passive transition runs in softirq, where current is unrelated, so
 * current's cgroup would be wrong; the socket's is right (an accepted socket carries its
 * listener's cgroup). A sockops program would see the same transitions, but only for sockets under
 * the attach point, and it has no helper that returns the socket's cgroup id; the tracepoint also
 * covers every socket on the host, as the CPU probe does. */
SEC("tracepoint/sock/inet_sock_set_state")
int tally_inet_sock_set_state(struct inet_sock_set_state_args *ctx)
{
	if (ctx->protocol != IPPROTO_TCP || ctx->newstate != TCP_ESTABLISHED)
		return 0;
	int active = ctx->oldstate == TCP_SYN_SENT;
	if (!active && ctx->oldstate != TCP_SYN_RECV)
		return 0;
	struct sock *sk = (struct sock *)ctx->skaddr;
	__u64 cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
	if (cgroup_id == 0) {
		/* Never dropped: counted under id 0 (tenant unknown) and flagged. */
		struct probe_counters *h = health();
		if (h)
			__sync_fetch_and_add(&h->sock_cgroup_unknown, 1);
	}
	struct cgroup_usage *u = usage_of(cgroup_id);
	if (!u)
		return 0;
	if (active)
		ADD(u->tcp_active, 1);
	else
		ADD(u->tcp_passive, 1);
	return 0;
}

/* /sys/kernel/tracing/events/cgroup/cgroup_rmdir/format */
struct cgroup_rmdir_args {
	__u64 common;
	int root;
	int level;
	__u64 id;
	__u32 path_loc;
};

/* A removed cgroup's key must not be deleted before its last usage is billed: queue it, user
 * space reads its final counters on a later poll, then deletes both keys. */
SEC("tracepoint/cgroup/cgroup_rmdir")
int tally_cgroup_rmdir(struct cgroup_rmdir_args *ctx)
{
	if (ctx->root != CGROUP_DFL_HIERARCHY)
		return 0; /* a cgroup v1 hierarchy: its ids are not the ones we count by */
	__u64 id = ctx->id;
	__u64 now = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&removed, &id, &now, BPF_ANY)) {
		struct probe_counters *h = health();
		if (h)
			__sync_fetch_and_add(&h->removed_map_full, 1);
	}
	return 0;
}
