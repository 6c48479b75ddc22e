//! What the benches share: a process's CPU time and peak memory from `/proc`,
//! waiting for a server to go idle, medians, and how the machine was when
//! the numbers were taken.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

/// CPU seconds of a process: `(own, reaped children)`, every thread included
/// (`/proc/<pid>/stat` fields 14-17, in clock ticks of 1/100 s).
pub fn cpu_times(pid: u32) -> Result<(f64, f64)> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses; the fields after its last ')' are fixed.
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let ticks: Vec<u64> = rest.split_whitespace().skip(11).take(4).map(str::parse).collect::<Result<_, _>>()?;
    ensure!(ticks.len() == 4, "short /proc/{pid}/stat");
    // USER_HZ, which /proc reports in, is 100 on every Linux architecture we run on.
    Ok(((ticks[0] + ticks[1]) as f64 / 100.0, (ticks[2] + ticks[3]) as f64 / 100.0))
}

/// User + system CPU seconds of a process, all threads.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    Ok(cpu_times(pid)?.0)
}

/// `VmHWM` (peak resident set) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM in /proc/<pid>/status")?;
    Ok(line.split_whitespace().nth(1).context("malformed VmHWM")?.parse()?)
}

/// Waits (at most 30 s) until a process is idle (under one clock tick in 200 ms),
/// so merges left by one measurement are not billed to the next.
pub fn wait_until_quiet(pid: u32) -> Result<()> {
    for _ in 0..150 {
        let before = cpu_seconds(pid)?;
        std::thread::sleep(Duration::from_millis(200));
        if cpu_seconds(pid)? - before < 0.015 {
            return Ok(());
        }
    }
    eprintln!("warning: process {pid} is still busy after 30 s; the next measurement shares it");
    Ok(())
}

/// The median (the mean of the middle two for an even count).
///
/// ```
/// assert_eq!(testkit::bench::median([3.0, 1.0, 2.0]), 2.0);
/// assert_eq!(testkit::bench::median([4.0, 1.0, 2.0, 3.0]), 2.5);
/// ```
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[mid],
        _ => (v[mid - 1] + v[mid]) / 2.0,
    }
}

/// The type of the filesystem holding `path`: the longest mount point above it in `/proc/self/mounts`.
pub fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (mount_point, fs_type) = (fields.nth(1)?, fields.next()?);
            path.starts_with(mount_point).then(|| (mount_point.len(), fs_type.to_owned()))
        })
        .max()
        .map_or_else(|| "?".to_owned(), |(_, fs_type)| fs_type)
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().next().unwrap_or("?").to_owned()
}

/// A number with thousands separators, rounded.
///
/// ```
/// assert_eq!(testkit::bench::thousands(1234567.8), "1,234,568");
/// ```
pub fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
