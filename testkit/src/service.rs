//! Tally's own binaries as child processes of a test: started on free loopback
//! ports, ready when their admin port says so, killed with -9, stopped with
//! SIGTERM, restarted with the same arguments (and the same data directory).

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A free loopback port, reserved for this test process until it exits.
///
/// Not `bind(127.0.0.1:0)`: that port comes from the kernel's ephemeral range, which every
/// outgoing connection also draws from, so between the probe's close and the child's bind any
/// test's connection to ClickHouse could take it (seen as a binary exiting at start). These
/// ports lie below the ephemeral range, and a lock on `<tmp>/tally-test-ports/<port>`, held
/// until this process exits, keeps the test processes nextest runs at once from handing out
/// the same one.
pub fn free_port() -> u16 {
    ports::reserve().expect("a free loopback port")
}

mod ports {
    use std::fs::{self, File};
    use std::net::TcpListener;
    use std::sync::Mutex;
    use std::time::{SystemTime, UNIX_EPOCH};

    use anyhow::{bail, Context, Result};

    /// The lowest port handed out: above the well-known and common service ports.
    const FIRST: u16 = 20_000;
    /// Lock files of the ports this process holds.
    static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

    pub(super) fn reserve() -> Result<u16> {
        let end = ephemeral_start().max(FIRST + 1_000);
        let dir = std::env::temp_dir().join("tally-test-ports");
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let span = u32::from(end - FIRST);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let start = (std::process::id().wrapping_mul(7_919) ^ nanos) % span;
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..span {
            let port = FIRST + ((start + i) % span) as u16;
            let path = dir.join(port.to_string());
            let lock = File::options().create(true).truncate(false).write(true).open(&path);
            let Ok(lock) = lock else { continue };
            if lock.try_lock().is_err() {
                continue; // another test process holds it
            }
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue; // a process outside the tests listens there
            }
            held.push(lock);
            return Ok(port);
        }
        bail!("no free loopback port in {FIRST}..{end}")
    }

    /// The first port of the kernel's ephemeral range (Linux's default when unreadable).
    fn ephemeral_start() -> u16 {
        fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(32_768)
    }
}

/// The workspace binary `name`, built beside the running test (or bench) executable
/// (`target/<profile>/`). `scripts/test` builds every binary first; when one is
/// missing (a test run for a single package), it is built here.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> (a test or bench) or target/<profile>/<bin> → target/<profile>/<name>
    let parent = exe.parent().expect("the executable's directory");
    let dir = if parent.ends_with("deps") { parent.parent().expect("target/<profile>") } else { parent };
    let path = dir.join(name);
    if !path.exists() {
        let profile = dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
        let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        // --workspace: run from a member's directory, cargo looks only in that package.
        cargo.args(["build", "--workspace", "--bin", name]);
        if profile == "release" {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("running cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    path
}

/// A running binary; killed when dropped.
pub struct Service {
    bin: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// `http://127.0.0.1:<port>` of its /readyz and /metrics.
    pub admin_url: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Service {
    /// A service of `bin` with `args` (flag-value pairs, or flags alone), not started.
    pub fn new(bin: PathBuf, args: Vec<String>, admin_url: String) -> Self {
        Self { bin, args, child: None, admin_url }
    }

    /// Starts it with its arguments, those in `more` taking precedence, and
    /// waits until `/readyz` answers 200.
    pub async fn start(&mut self, more: &[&str]) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is already running", self.bin.display());
        }
        let mut cmd = Command::new(&self.bin);
        cmd.args(merged(&self.args, more));
        cmd.stderr(if std::env::var_os("TALLY_TEST_LOGS").is_some() { Stdio::inherit() } else { Stdio::null() });
        self.child = Some(crate::spawn::spawn_tied(cmd).with_context(|| format!("starting {}", self.bin.display()))?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.admin_url)).await {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                bail!(
                    "{} exited with {status} before it was ready (TALLY_TEST_LOGS=1 shows its log)",
                    self.bin.display()
                );
            }
            if Instant::now() > deadline {
                bail!("{} not ready after 30 s", self.bin.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        // SAFETY: kill(2) on our own child's pid.
        if unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) } != 0 {
            bail!("kill -TERM: {}", std::io::Error::last_os_error());
        }
        Ok(c.wait()?)
    }

    /// Its `/metrics` exposition.
    pub async fn metrics(&self) -> Result<String> {
        Ok(reqwest::get(format!("{}/metrics", self.admin_url)).await?.text().await?)
    }

    /// Waits (up to `timeout`) until `/metrics` has the exact line `line`.
    pub async fn wait_for_line(&self, line: &str, timeout: Duration) -> Result<()> {
        self.wait_until(timeout, |text| text.lines().any(|l| l == line).then_some(()), || format!("no `{line}`")).await
    }

    /// Waits (up to `timeout`) until the sample `name` (with its labels) is at least `n`.
    pub async fn wait_for_sample(&self, name: &str, n: u64, timeout: Duration) -> Result<u64> {
        self.wait_until(
            timeout,
            |text| Some(sample(text, name)).filter(|now| *now >= n),
            || format!("{name} is not {n}"),
        )
        .await
    }

    /// Polls `/metrics` until `check` finds what it wants in it, or fails after `timeout`
    /// saying `missing` and showing the last exposition.
    async fn wait_until<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&str) -> Option<T>,
        missing: impl Fn() -> String,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.metrics().await?;
            if let Some(found) = check(&text) {
                return Ok(found);
            }
            if Instant::now() > deadline {
                bail!("{} after {timeout:?} in\n{text}", missing());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `base` with every flag that `more` sets again replaced by `more`'s.
/// A flag takes the following word as its value unless that word is a flag.
fn merged(base: &[String], more: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < base.len() {
        let takes_value = base.get(i + 1).is_some_and(|v| !v.starts_with("--"));
        let width = if takes_value { 2 } else { 1 };
        if !more.contains(&base[i].as_str()) {
            out.extend_from_slice(&base[i..i + width]);
        }
        i += width;
    }
    out.extend(more.iter().map(|s| s.to_string()));
    out
}

/// The value of the sample `name` (with its labels) in an exposition; 0 when absent.
pub fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_flags_replace_earlier_ones() {
        let base: Vec<String> = ["--a", "1", "--flag", "--b", "2"].iter().map(|s| s.to_string()).collect();
        assert_eq!(merged(&base, &["--b", "3"]), ["--a", "1", "--flag", "--b", "3"]);
        assert_eq!(merged(&base, &["--flag"]), ["--a", "1", "--b", "2", "--flag"]);
        assert_eq!(sample("x_total{a=\"b\"} 7\nx 3\n", "x"), 3);
        assert_eq!(sample("x_total{a=\"b\"} 7\n", "x_total{a=\"b\"}"), 7);
        assert_eq!(sample("", "x"), 0);
    }
}
