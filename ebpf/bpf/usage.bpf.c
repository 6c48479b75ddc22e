// SPDX-License-Identifier: GPL-2.0
/* Tally's usage probes: CPU time, network bytes and new TCP connections per cgroup v2.
 *
 * Everything is aggregated here, in per-CPU maps keyed by cgroup id; user space polls the sums.
 * Nothing is streamed per event. The tracepoint context structs are declared by hand from
 * /sys/kernel/tracing/events/<category>/<name>/format (stable ABI), so the build needs only clang
 * and libbpf-dev's headers, no generated vmlinux.h. The few kernel structs read through a pointer
 * (struct sock -> cgroup id) use CO-RE: their offsets are fixed up from the kernel's BTF at load.
 */
#include <stddef.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "usage.h"

char LICENSE[] SEC("license") = "GPL";

#define LOOPBACK_IFINDEX 1 /* the kernel gives lo ifindex 1 in every network namespace */
#define IPPROTO_TCP 6
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

/* When the task now on this CPU was switched in (0: not seen yet since the probe was attached). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} switched_in SEC(".maps");

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
	offsetof(struct cgroup_usage, tcp_active),
	offsetof(struct cgroup_usage, tcp_passive),
	sizeof(struct probe_counters),
	offsetof(struct probe_counters, usage_map_full),
	offsetof(struct probe_counters, removed_map_full),
	offsetof(struct probe_counters, sock_cgroup_unknown),
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

static __always_inline void charge_cpu(__u64 now)
{
	__u32 zero = 0;
	__u64 *since = bpf_map_lookup_elem(&switched_in, &zero);
	if (!since)
		return;
	__u64 start = *since;
	*since = now;
	if (start == 0 || start > now)
		return; /* first switch seen on this CPU: the slice's start is unknown */
	struct cgroup_usage *u = usage_of(bpf_get_current_cgroup_id());
	if (u)
		ADD(u->cpu_ns, now - start);
}

/* /sys/kernel/tracing/events/sched/sched_switch/format */
struct sched_switch_args {
	__u64 common;
	char prev_comm[16];
	int prev_pid;
	int prev_prio;
	long prev_state;
	char next_comm[16];
	int next_pid;
	int next_prio;
};

/* sched_switch runs as the OUTGOING task (current == prev): the slice that just ended, from the
 * previous switch on this CPU until now, belongs to current's cgroup. The idle task (pid 0) is
 * nobody's usage. Tracepoints run with preemption off, so nothing interleaves on this CPU between
 * reading and writing `switched_in`. */
SEC("tracepoint/sched/sched_switch")
int tally_sched_switch(struct sched_switch_args *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	if (ctx->prev_pid == 0) {
		__u32 zero = 0;
		__u64 *since = bpf_map_lookup_elem(&switched_in, &zero);
		if (since)
			*since = now;
		return 0;
	}
	charge_cpu(now);
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
 * may be removed at once: charge what it ran so far while it still runs in its cgroup, and start
 * a new slice; the few microseconds of exit after this are charged at its final switch. */
SEC("tracepoint/sched/sched_process_exit")
int tally_sched_process_exit(struct sched_process_exit_args *ctx)
{
	if (ctx->pid == 0)
		return 0;
	charge_cpu(bpf_ktime_get_ns());
	return 0;
}

/* Network bytes belong to the cgroup of the socket that owns the packet (bpf_skb_cgroup_id: the
 * socket's cgroup, set when the socket was created, inherited by accepted sockets), never to
 * current: ingress runs in softirq under whatever task was interrupted. skb->len counts from the
 * IP header: the bytes of IP packets, without link-layer framing. */
static __always_inline void count_skb(struct __sk_buff *skb, int ingress)
{
	struct cgroup_usage *u = usage_of(bpf_skb_cgroup_id(skb));
	if (!u)
		return;
	__u64 len = skb->len;
	if (skb->ifindex == LOOPBACK_IFINDEX) {
		if (ingress)
			ADD(u->loopback_rx_bytes, len);
		else
			ADD(u->loopback_tx_bytes, len);
	} else {
		if (ingress)
			ADD(u->net_rx_bytes, len);
		else
			ADD(u->net_tx_bytes, len);
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
