//! Two cgroups mapped to two tenants: each tenant gets exactly its own cgroup's usage.

mod common;

use std::collections::BTreeMap;

use common::*;
use tally_ebpf::{
    attribution::{Attributor, TenantRules, UNKNOWN_TENANT},
    CgroupUsage, DeltaTracker,
};

/// Tenant A's cgroup burns CPU for 1.5 s and opens 7 connections to tenant B's server, which burns
/// 0.5 s. Usage goes through the whole path (snapshot → deltas → attribution by path rules) and
/// each tenant's sum matches its own cgroup: CPU within 2% of its `cpu.stat`, connections exact
/// (A only active, B only passive), bytes sent by A are received by B. Nothing of theirs lands
/// in `unknown`.
#[test]
fn no_usage_leaks_between_tenants() {
    let mut probes = load_probes();
    let mut parent = TestCgroup::new("tenants");
    let a = parent.child("team-a");
    let b = parent.child("team-b");
    let rules = TenantRules::parse(["tally-test-*-tenants/team-a=tenant-a", "tally-test-*-tenants/team-b/**=tenant-b"])
        .expect("rules");
    let mut attributor = Attributor::new(cgroup2(), rules);
    let mut tracker = DeltaTracker::new();
    let mut by_tenant: BTreeMap<String, CgroupUsage> = BTreeMap::new();
    let mut bill = |snapshot: &tally_ebpf::Snapshot, attributor: &mut Attributor| {
        for (id, delta) in tracker.update(snapshot) {
            if id != a.id && id != b.id {
                continue; // the rest of the host
            }
            let total = by_tenant.entry(attributor.attribute(id).tenant.clone()).or_default();
            total.cpu_ns += delta.cpu_ns;
            total.loopback_tx_bytes += delta.loopback_tx_bytes;
            total.loopback_rx_bytes += delta.loopback_rx_bytes;
            total.tcp_active += delta.tcp_active;
            total.tcp_passive += delta.tcp_passive;
        }
    };
    bill(&probes.read().unwrap(), &mut attributor);

    let (server, port) = start_server(&b, None, "127.0.0.1:0", 7);
    let burn_b = workload(&b, None).args(["burn", "500"]).spawn().expect("spawn");
    let burn_a = workload(&a, None).args(["burn", "1500"]).spawn().expect("spawn");
    let client = workload(&a, None).args(["send", &format!("127.0.0.1:{port}"), "7", "100000"]).spawn().expect("spawn");
    // A read in the middle, as the agent's interval would do.
    std::thread::sleep(std::time::Duration::from_millis(700));
    bill(&probes.read().unwrap(), &mut attributor);
    for child in [burn_a, burn_b, client, server] {
        wait_ok(child);
    }
    bill(&settle_and_read(&mut probes), &mut attributor);

    let ta = by_tenant.get("tenant-a").copied().unwrap_or_default();
    let tb = by_tenant.get("tenant-b").copied().unwrap_or_default();
    eprintln!("tenant-a {ta:?}\ntenant-b {tb:?}");
    assert_within("tenant-a cpu vs its cgroup", ta.cpu_ns as f64, a.usage_usec() as f64 * 1000.0, 0.02);
    assert_within("tenant-b cpu vs its cgroup", tb.cpu_ns as f64, b.usage_usec() as f64 * 1000.0, 0.02);
    assert_eq!((ta.tcp_active, ta.tcp_passive), (7, 0));
    assert_eq!((tb.tcp_active, tb.tcp_passive), (0, 7));
    assert_eq!(ta.loopback_tx_bytes, tb.loopback_rx_bytes);
    assert!(ta.loopback_tx_bytes >= 700_000);
    assert!(!by_tenant.contains_key(UNKNOWN_TENANT), "test cgroups fell to unknown: {by_tenant:?}");
}
