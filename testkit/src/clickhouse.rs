//! A private `clickhouse-server` (Debian 18.16) per test.
//!
//! Each server gets its own temp dir (config, users, data, logs) and free
//! loopback ports, so tests can run in parallel and never touch a shared or
//! production instance. The server is tied to the test process with
//! `PR_SET_PDEATHSIG`, so a crashed test leaves no orphan behind.

use crate::http;
use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const MISSING_BINARY: &str = "clickhouse-server not found on PATH or in /usr/sbin: install it with \
    apt-get install -y clickhouse-server clickhouse-client (scripts/test does this)";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
const START_ATTEMPTS: usize = 3;

static DATABASE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A running private ClickHouse server; stopped and its data removed on drop.
///
/// Ports and data dir stay fixed for the value's lifetime, so [`restart`]
/// (e.g. after [`kill9`]) brings back the same server with the same data.
///
/// [`restart`]: ClickHouseServer::restart
/// [`kill9`]: ClickHouseServer::kill9
pub struct ClickHouseServer {
    child: Option<Child>,
    binary: PathBuf,
    http_port: u16,
    tcp_port: u16,
    // Declared last: removed only after `Drop::drop` has stopped the server.
    dir: TempDir,
}

impl ClickHouseServer {
    /// Starts a fresh server and waits until `/ping` answers `Ok.`.
    ///
    /// Fails (never skips) when the binary is missing, so CI cannot go green
    /// without having tested anything. Retries up to 3 times when a port
    /// picked as free was taken before the server bound it.
    pub fn start() -> Result<Self> {
        let binary = find_binary()?;
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let (http_port, tcp_port) = free_ports()?;
            let dir = tempfile::Builder::new()
                .prefix("tally-clickhouse-")
                .tempdir()
                .context("create temp dir for clickhouse-server")?;
            write_config(dir.path(), http_port, tcp_port)?;
            let mut server = Self { child: None, binary: binary.clone(), http_port, tcp_port, dir };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) if server.port_clashed() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context(format!("clickhouse-server: ports clashed {START_ATTEMPTS} times")))
    }

    /// Base URL of the HTTP interface, e.g. `http://127.0.0.1:40123`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Port of the HTTP interface on 127.0.0.1.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Port of the native TCP interface on 127.0.0.1.
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// The server's temp dir (config, `data/`, `server.log`, `err.log`), for debugging.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of the running server, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Creates a new, empty database and returns its name.
    ///
    /// The name is `<prefix>_<pid>_<counter>` with every non-identifier
    /// character of `prefix` replaced by `_`, so tests sharing a server (or
    /// running in parallel processes) never see each other's tables.
    pub fn database(&self, prefix: &str) -> Result<String> {
        let name = unique_name(prefix);
        self.query(&format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// Runs one statement through the HTTP interface and returns the body.
    ///
    /// Uses `wait_end_of_query=1` so that errors arrive as a non-200 status
    /// instead of being appended to a partial result; the error carries the
    /// server's message and the SQL.
    pub fn query(&self, sql: &str) -> Result<String> {
        let resp = http::request(self.http_port, "POST", "/?wait_end_of_query=1", sql.as_bytes(), QUERY_TIMEOUT)
            .with_context(|| format!("ClickHouse HTTP request to {} failed\nSQL: {sql}", self.http_url()))?;
        if resp.status != 200 {
            bail!("ClickHouse query failed (HTTP {}): {}\nSQL: {sql}", resp.status, resp.body.trim_end());
        }
        Ok(resp.body)
    }

    /// Stops the server gracefully: SIGTERM, up to 10 s, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL (a crash, for fault tests). Idempotent.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data dir and waits for
    /// `/ping`; stops it gracefully first if it is still running.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    fn launch(&mut self) -> Result<()> {
        let dir = self.dir.path();
        let stdout = fs::File::create(dir.join("stdout.log"))?;
        let stderr = fs::File::create(dir.join("stderr.log"))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg(format!("--config-file={}", dir.join("config.xml").display()))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = crate::spawn::spawn_tied(cmd).with_context(|| format!("spawn {}", self.binary.display()))?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready() {
            self.kill9();
            return Err(e.context(format!("clickhouse-server did not start\n{}", self.log_tail())));
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().context("server not running")?;
            if let Some(status) = child.try_wait()? {
                bail!("clickhouse-server exited with {status} before answering /ping");
            }
            if self.ping() {
                // The port could belong to a foreign server that won a race
                // for it; make sure the one answering is ours.
                return self.check_identity();
            }
            if start.elapsed() > READY_TIMEOUT {
                bail!("clickhouse-server did not answer /ping within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ping(&self) -> bool {
        matches!(
            http::request(self.http_port, "GET", "/ping", b"", Duration::from_secs(2)),
            Ok(r) if r.status == 200 && r.body == "Ok.\n"
        )
    }

    fn check_identity(&self) -> Result<()> {
        let path = self.query("SELECT data_path FROM system.databases WHERE name = 'default'")?;
        let ours = self.dir.path().join("data");
        if !path.trim().starts_with(&*ours.to_string_lossy()) {
            bail!(
                "port {} is answered by another server (data_path {:?}); Address already in use",
                self.http_port,
                path.trim()
            );
        }
        Ok(())
    }

    fn port_clashed(&self) -> bool {
        self.log_tail().contains("Address already in use")
    }

    fn log_tail(&self) -> String {
        ["err.log", "stderr.log"]
            .iter()
            .map(|name| {
                let text = fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                format!("--- tail of {name} ---\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        // The data dir is deleted next, so a graceful shutdown (which takes 18.16 ~10 s) buys nothing.
        self.kill9();
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: plain syscall on a child we have not reaped yet.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

pub(crate) fn find_binary() -> Result<PathBuf> {
    find_binary_in(&std::env::var_os("PATH").unwrap_or_default(), Path::new("/usr/sbin"))
}

fn find_binary_in(path: &std::ffi::OsStr, fallback: &Path) -> Result<PathBuf> {
    std::env::split_paths(path)
        .chain([fallback.to_path_buf()])
        .map(|d| d.join("clickhouse-server"))
        .find(|p| is_executable(p))
        .ok_or_else(|| anyhow!(MISSING_BINARY))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Two distinct free loopback ports (both held while picking so they differ).
fn free_ports() -> Result<(u16, u16)> {
    Ok((crate::service::free_port(), crate::service::free_port()))
}

fn unique_name(prefix: &str) -> String {
    let mut clean: String =
        prefix.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if clean.is_empty() {
        clean.push_str("db");
    } else if !clean.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        clean.insert_str(0, "db_");
    }
    let n = DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{clean}_{}_{n}", std::process::id())
}

/// The same config files the quickstart uses (`deploy/clickhouse/local/`).
const CONFIG_TEMPLATE: &str = include_str!("../../deploy/clickhouse/local/config.xml");
const USERS_TEMPLATE: &str = include_str!("../../deploy/clickhouse/local/users.xml");

fn write_config(dir: &Path, http_port: u16, tcp_port: u16) -> Result<()> {
    let d = dir.to_str().context("temp dir path is not UTF-8")?;
    let fill = |template: &str| {
        template
            .replace("@DIR@", d)
            .replace("@HTTP_PORT@", &http_port.to_string())
            .replace("@TCP_PORT@", &tcp_port.to_string())
    };
    fs::write(dir.join("config.xml"), fill(CONFIG_TEMPLATE)).context("write config.xml")?;
    fs::write(dir.join("users.xml"), fill(USERS_TEMPLATE)).context("write users.xml")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_fails_loudly() {
        let err = find_binary_in("/nonexistent/bin".as_ref(), Path::new("/nonexistent/sbin")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "clickhouse-server not found on PATH or in /usr/sbin: install it with apt-get install -y \
             clickhouse-server clickhouse-client (scripts/test does this)"
        );
        let found = find_binary_in("/nonexistent/bin".as_ref(), Path::new("/usr/sbin")).unwrap();
        assert_eq!(found, Path::new("/usr/sbin/clickhouse-server"));
    }

    #[test]
    fn unique_names_are_identifiers() {
        let a = unique_name("my-test");
        let b = unique_name("my-test");
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("my_test_{}_", std::process::id())), "{a}");
        assert!(unique_name("9x").starts_with("db_9x_"));
        assert!(unique_name("").starts_with(&format!("db_{}_", std::process::id())));
    }
}
