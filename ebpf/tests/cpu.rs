//! CPU time per cgroup (sched_switch + sched_process_exit) against the kernel's own count.

mod common;

use common::*;

/// A CPU burner alone in a test cgroup for 3 s: the probes' nanoseconds match the cgroup's
/// `cpu.stat` `usage_usec` within 2%. The only expected gap is the slice during which the burner
/// moved itself into the cgroup: the probe charges a slice to the cgroup current is in when it
/// ends, the kernel splits it at the move; a few ms at most.
#[test]
fn cpu_time_matches_cpu_stat() {
    let mut probes = load_probes();
    let cgroup = TestCgroup::new("cpu");
    let burner = workload(&cgroup, None).args(["burn", "3000"]).spawn().expect("spawn");
    wait_ok(burner);
    let snapshot = settle_and_read(&mut probes);
    let reference_ns = cgroup.usage_usec() as f64 * 1000.0;
    assert!(reference_ns > 1e9, "the burner ran at least 1 s of CPU ({reference_ns} ns)");
    assert_within("cpu_ns vs cpu.stat", usage_of(&snapshot, &cgroup).cpu_ns as f64, reference_ns, 0.02);

    // The probes' own cost is reported: sched_switch ran, and nothing was lost to a full map.
    let stats = &snapshot.stats;
    let switch = stats.programs.iter().find(|p| p.name == "tally_sched_switch").expect("sched_switch stats");
    assert!(switch.run_count > 0, "run_count of sched_switch: {switch:?}");
    assert!(!switch.run_time.is_zero(), "run_time of sched_switch: {switch:?}");
    eprintln!(
        "sched_switch: {} runs, {:.0} ns per run",
        switch.run_count,
        switch.run_time.as_nanos() as f64 / switch.run_count as f64
    );
    eprintln!("stats {stats:?}");
    assert_eq!((stats.usage_map_full, stats.task_storage_failed), (0, 0));
}

/// A cgroup whose tasks ran, exited and whose directory was removed is still billed: its final
/// counters are in the snapshot that retires it, the tracker turns them into deltas, and its
/// kernel slot is freed afterwards.
#[test]
fn removed_cgroup_is_flushed_before_its_key_is_deleted() {
    let mut probes = load_probes();
    let mut tracker = tally_ebpf::DeltaTracker::new();
    let mut billed_ns = 0u64;
    let mut bill = |snapshot: &tally_ebpf::Snapshot, id: u64| {
        billed_ns += tracker.update(snapshot).get(&id).map_or(0, |u| u.cpu_ns);
    };

    let cgroup = TestCgroup::new("removed");
    let id = cgroup.id;
    // Read once while it runs, so part of its usage is billed before removal.
    let burner = workload(&cgroup, None).args(["burn", "800"]).spawn().expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(300));
    bill(&probes.read().unwrap(), id);
    wait_ok(burner);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let reference_ns = cgroup.usage_usec() as f64 * 1000.0;
    cgroup.remove();

    // First poll after rmdir: queued, still present, not retired.
    let first = settle_and_read(&mut probes);
    assert!(first.usage.contains_key(&id), "still readable right after rmdir");
    assert!(!first.retired.contains(&id));
    bill(&first, id);
    // Next poll: final counters, retired, key deleted.
    let second = probes.read().unwrap();
    assert!(second.retired.contains(&id), "retired one poll after rmdir");
    bill(&second, id);
    let third = probes.read().unwrap();
    assert!(!third.usage.contains_key(&id), "its slot was freed");
    bill(&third, id);

    assert_within("billed cpu of the removed cgroup vs its cpu.stat", billed_ns as f64, reference_ns, 0.02);
}

/// Short-lived cgroups (a Job pod living a moment): 12 cgroups, each created, given a 60 ms CPU
/// burner, emptied and removed, while the agent-like loop keeps reading. Every one is billed:
/// the sum of their deltas matches the sum of their `cpu.stat`, and each one's own total too.
#[test]
fn short_lived_cgroups_are_all_billed() {
    let mut probes = load_probes();
    let mut tracker = tally_ebpf::DeltaTracker::new();
    let mut billed: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut reference: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut bill = |snapshot: &tally_ebpf::Snapshot, billed: &mut std::collections::BTreeMap<u64, u64>| {
        for (id, d) in tracker.update(snapshot) {
            *billed.entry(id).or_default() += d.cpu_ns;
        }
    };
    for i in 0..12 {
        let cgroup = TestCgroup::new(&format!("job{i}"));
        wait_ok(workload(&cgroup, None).args(["burn", "60"]).spawn().expect("spawn"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        reference.insert(cgroup.id, cgroup.usage_usec() * 1000);
        cgroup.remove();
        if i % 3 == 0 {
            bill(&probes.read().unwrap(), &mut billed);
        }
    }
    // Two more polls: the last removed cgroups are read once more, then retired.
    for _ in 0..2 {
        bill(&settle_and_read(&mut probes), &mut billed);
    }
    let still_tracked = probes.read().unwrap();
    for (&id, &expected_ns) in &reference {
        let got = billed.get(&id).copied().unwrap_or(0);
        assert_within(&format!("cgroup {id}"), got as f64, expected_ns as f64, 0.02);
        assert!(!still_tracked.usage.contains_key(&id), "cgroup {id} was retired");
    }
    let (got, expected): (u64, u64) =
        (reference.keys().map(|id| billed.get(id).copied().unwrap_or(0)).sum(), reference.values().sum());
    assert_within("all short-lived cgroups", got as f64, expected as f64, 0.001);
}
