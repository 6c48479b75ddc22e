//! The systems under test, as processes on free loopback ports: Tally's agent
//! and collector (our binaries) and rotel (`rotel-agent`, from PyPI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::service::{binary, free_port, Service};

/// A running process under test.
pub enum Running {
    /// One of ours, with its admin port.
    Tally(Service),
    /// rotel.
    Rotel(Child),
}

impl Running {
    /// Its pid.
    pub fn pid(&self) -> Result<u32> {
        match self {
            Running::Tally(s) => s.pid().context("not running"),
            Running::Rotel(c) => Ok(c.id()),
        }
    }

    /// SIGTERM, and fails unless it exits cleanly within 30 s.
    pub fn stop(mut self) -> Result<()> {
        match &mut self {
            Running::Tally(s) => {
                let status = s.terminate()?;
                anyhow::ensure!(status.success(), "exited with {status} on SIGTERM");
            }
            Running::Rotel(c) => {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(30);
                while c.try_wait()?.is_none() {
                    if Instant::now() > deadline {
                        let _ = c.kill();
                        bail!("rotel did not exit within 30 s of SIGTERM");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Rotel(c) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `rotel-agent` with `args`, its OTLP/gRPC receiver on a free port; returns once it accepts connections.
pub async fn rotel(bin: &Path, args: &[&str]) -> Result<(Running, String)> {
    let (grpc, http) = (free_port(), free_port());
    let mut cmd = Command::new(bin);
    cmd.args([
        "start",
        "--otlp-grpc-endpoint",
        &format!("127.0.0.1:{grpc}"),
        "--otlp-http-endpoint",
        &format!("127.0.0.1:{http}"),
    ])
    .args(args)
    .stdout(Stdio::null())
    .stderr(if std::env::var_os("TALLY_TEST_LOGS").is_some() { Stdio::inherit() } else { Stdio::null() });
    let mut child = testkit::spawn::spawn_tied(cmd).with_context(|| format!("starting {}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", grpc)).await.is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{} exited with {status} before listening (TALLY_TEST_LOGS=1 shows its log)", bin.display());
        }
        if Instant::now() > deadline {
            bail!("{} not listening after 30 s", bin.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((Running::Rotel(child), format!("http://127.0.0.1:{grpc}")))
}

/// `tally-agent` forwarding to `collector_url`, its WAL in `data_dir`.
pub async fn tally_agent(collector_url: &str, data_dir: &Path, args: &[&str]) -> Result<(Running, String)> {
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let base = [
        "--otlp-grpc-listen",
        &format!("127.0.0.1:{grpc}"),
        "--otlp-http-listen",
        &format!("127.0.0.1:{http}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--collector",
        collector_url,
        // rotel has no kernel probes: compare the OTLP path alone.
        "--data-dir",
        &data_dir.to_string_lossy(),
        "--no-ebpf",
    ]
    .map(String::from);
    let mut agent = Service::new(binary("tally-agent"), base.to_vec(), format!("http://127.0.0.1:{admin}"));
    agent.start(args).await?;
    Ok((Running::Tally(agent), format!("http://127.0.0.1:{grpc}")))
}

/// `tally-collector` writing to `database` on `clickhouse_url`, spooling in `data_dir`.
pub async fn tally_collector(clickhouse_url: &str, database: &str, data_dir: &Path) -> Result<(Running, String)> {
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let args = [
        "--grpc-listen",
        &format!("127.0.0.1:{grpc}"),
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--clickhouse-url",
        clickhouse_url,
        "--clickhouse-database",
        database,
        "--data-dir",
        &data_dir.to_string_lossy(),
        "--allow-anonymous",
    ]
    .map(String::from);
    let mut collector = Service::new(binary("tally-collector"), args.to_vec(), format!("http://127.0.0.1:{admin}"));
    collector.start(&[]).await?;
    Ok((Running::Tally(collector), format!("http://127.0.0.1:{grpc}")))
}

/// The rotel binary: `--rotel PATH`, else `$TALLY_ROTEL`, else the one the `rotel` PyPI
/// package installed into the repository's `.venv`.
pub fn find_rotel(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given.or_else(|| std::env::var_os("TALLY_ROTEL").map(PathBuf::from)) {
        return Ok(p);
    }
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let out = Command::new(&python)
        .args(["-c", "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))"])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("rotel is not installed in .venv: run bench/run (it installs it), or pass --rotel PATH");
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}
