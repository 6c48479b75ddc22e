//! A CPU profile of one process while it is under load: `perf record` on the
//! software clock (these VMs expose no hardware counters), summarized as the
//! functions where it spent its samples.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{ensure, Context, Result};

/// `perf record` attached to a process.
pub struct Perf {
    child: Child,
    data: PathBuf,
    out: PathBuf,
}

impl Perf {
    /// Starts sampling `pid` (about 1 kHz); the summary goes to `out`.
    pub fn record(pid: u32, out: &Path) -> Result<Self> {
        let data = out.with_extension("perf.data");
        let child = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "997", "-p", &pid.to_string(), "-o"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("running perf (Debian: apt-get install linux-perf)")?;
        // perf needs a moment to attach before the load starts.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(Self { child, data, out: out.to_owned() })
    }

    /// Stops sampling and writes the summary: the top functions by self time.
    pub fn finish(mut self, title: &str) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid; perf writes its data on SIGINT.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        self.child.wait()?;
        let report = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", "dso,symbol", "--percent-limit", "0.7", "-i"])
            .arg(&self.data)
            .output()
            .context("running perf report")?;
        ensure!(report.status.success(), "perf report: {}", String::from_utf8_lossy(&report.stderr));
        // perf pads the symbol column to its widest entry; one space between columns is enough.
        let body: String = String::from_utf8_lossy(&report.stdout)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| format!("{}\n", l.split_whitespace().collect::<Vec<_>>().join(" ").trim_end_matches([' ', '-'])))
            .collect();
        std::fs::write(
            &self.out,
            format!("# {title}: where the CPU went under saturating load (perf, cpu-clock, self time)\n\n{body}"),
        )?;
        let _ = std::fs::remove_file(&self.data);
        Ok(())
    }
}
