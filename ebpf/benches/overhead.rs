//! What the probes cost a context-switch-heavy workload — a pipe ping-pong between two threads
//! (every round trip is two wakeups and at least two context switches) — and a loopback HTTP load
//! (keep-alive GETs of 512 bytes over 4 connections, a new connection every 100 requests: packets,
//! wakeups and connections), each timed with the probes off, on, and on with the kernel's
//! run-time statistics, alternately, in the same run. Also
//! prints the kernel's own count of the programs' runs and run time (BPF_ENABLE_STATS), the cost
//! the agent reports on /metrics.
//!
//! ```text
//! cargo bench -p tally-ebpf --bench overhead [-- ROUNDS REPS]     (as root)
//! ```

use std::{
    process::Command,
    time::{Duration, Instant},
};

use tally_ebpf::{ProbeConfig, Probes};

fn workload(args: &[&str]) -> Duration {
    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_tally-ebpf-workload")).args(args).status().expect("run the workload");
    assert!(status.success(), "{args:?} failed: {status}");
    start.elapsed()
}

fn pingpong(rounds: u64) -> Duration {
    workload(&["pingpong", &rounds.to_string()])
}

fn http(requests: u64) -> Duration {
    workload(&["http", &requests.to_string(), "4"])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let rounds: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let reps: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the overhead bench loads eBPF programs: run it as root");
        std::process::exit(1);
    }

    let requests = rounds / 4;
    pingpong(rounds / 10); // warm up: page cache, CPU frequency
    http(requests / 10);
    let mut off = [Vec::new(), Vec::new()];
    let mut on = [Vec::new(), Vec::new()];
    let mut on_no_stats = [Vec::new(), Vec::new()];
    let per_unit = |d: Duration, n: u64| d.as_nanos() as f64 / n as f64;
    let run_both = |into: &mut [Vec<f64>; 2]| {
        into[0].push(per_unit(pingpong(rounds), rounds));
        into[1].push(per_unit(http(requests), requests));
    };
    let mut switch_runs = 0u64;
    let mut switch_time = Duration::ZERO;
    let mut total_time = Duration::ZERO;
    for _ in 0..reps {
        run_both(&mut off);
        let quiet = ProbeConfig { run_stats: false, ..ProbeConfig::default() };
        let probes = Probes::load(&quiet).expect("load the probes");
        run_both(&mut on_no_stats);
        probes.detach();
        let probes = Probes::load(&ProbeConfig::default()).expect("load the probes");
        run_both(&mut on);
        let stats = probes.stats().expect("probe stats");
        for p in &stats.programs {
            total_time += p.run_time;
            if p.name == "tally_sched_switch" {
                switch_runs += p.run_count;
                switch_time += p.run_time;
            }
        }
        probes.detach();
    }
    println!("{reps} runs per setting, alternating (medians): pipe ping-pong of {rounds} round trips; loopback HTTP of {requests} requests");
    println!("| workload | probes | ns per unit | slowdown |");
    println!("|---|---|--:|--:|");
    for (i, name) in ["pipe ping-pong (round trip)", "loopback HTTP (request)"].iter().enumerate() {
        let (off_ns, on_ns, quiet_ns) = (median(off[i].clone()), median(on[i].clone()), median(on_no_stats[i].clone()));
        println!("| {name} | off | {off_ns:.0} | |");
        println!("| {name} | on | {quiet_ns:.0} | {:+.1}% |", (quiet_ns / off_ns - 1.0) * 100.0);
        println!("| {name} | on, with BPF run-time stats | {on_ns:.0} | {:+.1}% |", (on_ns / off_ns - 1.0) * 100.0);
    }
    if switch_runs > 0 {
        println!(
            "sched_switch program: {switch_runs} runs, {:.0} ns per run (kernel run-time stats, \
             all hosts' switches while loaded); all programs: {:.1} ms of CPU over {reps} runs",
            switch_time.as_nanos() as f64 / switch_runs as f64,
            total_time.as_secs_f64() * 1000.0
        );
    }
}
