//! Prints what each tenant and cgroup used, every interval: the loop the agent runs, on a
//! terminal.
//!
//! ```text
//! cargo run -p tally-ebpf --example usage_top -- [--interval SECS] [--cgroup-root DIR] [--rule PATTERN=TENANT]...
//! ```
//! (as root). Example: `--rule 'system.slice/**=platform' --rule 'user.slice=people'`.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use tally_ebpf::{
    attribution::{Attributor, TenantRules},
    CgroupUsage, DeltaTracker, ProbeConfig, Probes,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut interval = Duration::from_secs(5);
    let mut config = ProbeConfig::default();
    let mut rules = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--interval" => interval = Duration::from_secs_f64(value.parse()?),
            "--cgroup-root" => config.cgroup_root = Some(PathBuf::from(value)),
            "--rule" => rules.push(value),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let rules = TenantRules::parse(&rules)?;
    let mut probes = match Probes::load(&config) {
        Ok(probes) => probes,
        Err(error) => {
            eprintln!("probes unavailable (missing: {}): {error}", error.missing().unwrap_or_else(|| "-".into()));
            std::process::exit(2);
        }
    };
    let mut attributor = Attributor::new(probes.cgroup_root(), rules);
    let mut tracker = DeltaTracker::new();
    tracker.update(&probes.read()?); // what happened before we started is not shown
    loop {
        std::thread::sleep(interval);
        let snapshot = probes.read()?;
        let deltas = tracker.update(&snapshot);
        let mut tenants: BTreeMap<String, CgroupUsage> = BTreeMap::new();
        let mut cgroups: Vec<(u64, CgroupUsage)> = deltas.into_iter().collect();
        cgroups.sort_by_key(|(_, u)| std::cmp::Reverse(u.cpu_ns));
        for (id, d) in &cgroups {
            tenants.entry(attributor.attribute(*id).tenant.clone()).or_default().add(d);
        }
        let secs = interval.as_secs_f64();
        println!(
            "\n{:<24} {:>8} {:>12} {:>12} {:>12} {:>8}",
            "tenant", "cpu %", "net rx B/s", "net tx B/s", "lo B/s", "tcp/s"
        );
        for (tenant, u) in &tenants {
            println!(
                "{:<24} {:>8.2} {:>12.0} {:>12.0} {:>12.0} {:>8.1}",
                tenant,
                u.cpu_ns as f64 / 1e7 / secs,
                u.net_rx_bytes as f64 / secs,
                u.net_tx_bytes as f64 / secs,
                (u.loopback_rx_bytes + u.loopback_tx_bytes) as f64 / secs,
                u.tcp_connections() as f64 / secs
            );
        }
        println!("top cgroups by CPU:");
        for (id, d) in cgroups.iter().take(5) {
            let a = attributor.attribute(*id);
            let path = a.path.as_deref().map_or("?".into(), |p| format!("/{}", p.display()));
            println!("  {:>7.2}%  {:<12} {path}", d.cpu_ns as f64 / 1e7 / secs, a.tenant);
        }
        let s = &snapshot.stats;
        let kernel_ns: u128 = s.programs.iter().map(|p| p.run_time.as_nanos()).sum();
        println!(
            "probes: {} cgroups tracked of {}, map full {}, kernel time {:.3} ms since load",
            s.cgroups_tracked,
            s.max_cgroups,
            s.usage_map_full,
            kernel_ns as f64 / 1e6
        );
        for id in &snapshot.retired {
            attributor.forget(*id);
        }
    }
}
