//! The real `tally-collector` binary against a private ClickHouse: start, kill,
//! restart on the same spool, wait for the spool to drain, read usage back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use metering::clickhouse::ClickHouse;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use rust_decimal::Decimal;
use testkit::ClickHouseServer;

pub fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A running collector; killed when dropped. Its data dir outlives it, for restarts.
pub struct Running {
    child: Option<Child>,
    args: Vec<String>,
    pub data_dir: PathBuf,
    pub http_url: String,
    pub grpc_url: String,
    pub admin_url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts the collector with keys `initech-key` (pins tenant initech) and
/// `agent-key` (names tenants), anonymous senders allowed, flushing every 100 ms.
pub async fn start_collector(server: &ClickHouseServer, db: &str, dir: &Path, extra: &[&str]) -> Running {
    let keys = dir.join("keys.yaml");
    std::fs::write(
        &keys,
        format!("keys:\n  - sha256: {}\n    tenant: initech\n  - sha256: {}\n", sha256_hex("initech-key"), sha256_hex("agent-key")),
    )
    .unwrap();
    let (grpc, http, admin) = (port(), port(), port());
    let data_dir = dir.join("data");
    let args: Vec<String> = [
        "--grpc-listen", &format!("127.0.0.1:{grpc}"), "--http-listen", &format!("127.0.0.1:{http}"),
        "--admin-listen", &format!("127.0.0.1:{admin}"), "--clickhouse-url", &server.http_url(),
        "--clickhouse-database", db, "--keys", keys.to_str().unwrap(), 
        "--clickhouse-timeout-secs", "5", "--data-dir", data_dir.to_str().unwrap(), "--flush-interval-ms", "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut running = Running {
        child: None,
        args,
        data_dir,
        http_url: format!("http://127.0.0.1:{http}"),
        grpc_url: format!("http://127.0.0.1:{grpc}"),
        admin_url: format!("http://127.0.0.1:{admin}"),
    };
    running.start(extra).await;
    running
}

/// `base` with every flag that `more` sets again replaced by `more`'s (flags here all take one value).
fn merged(base: &[String], more: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = base.iter();
    while let Some(flag) = it.next() {
        let value = it.next().cloned();
        if !more.contains(&flag.as_str()) {
            out.push(flag.clone());
            out.extend(value);
        }
    }
    out.extend(more.iter().map(|s| s.to_string()));
    out
}

impl Running {
    /// (Re)starts the process with its arguments, those in `more` taking precedence.
    pub async fn start(&mut self, more: &[&str]) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(env!("CARGO_BIN_EXE_tally-collector"))
            .arg("--allow-anonymous")
            .args(merged(&self.args, more))
            .stderr(if std::env::var_os("TALLY_TEST_LOGS").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/readyz", self.admin_url)).await.map(|r| r.status() != 200).unwrap_or(true) {
            assert!(Instant::now() < deadline, "collector not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM, then waits for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let ok = Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap();
        assert!(ok.success());
        c.wait().unwrap()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin_url)).await.unwrap().text().await.unwrap()
    }

    /// Waits until nothing is left in the spool: every acknowledged row is in ClickHouse.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.metrics().await;
            if text.lines().any(|l| l == "tally_collector_spool_bytes 0") {
                return;
            }
            assert!(Instant::now() < deadline, "the spool did not drain:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The value of the sample `name` (with its labels) in an exposition.
pub fn sample(text: &str, name: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' ')).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Usage per (tenant, meter) from yesterday to two days ahead.
pub async fn totals(ch: &ClickHouse, db: &str) -> BTreeMap<(String, String), Decimal> {
    let now = time::OffsetDateTime::now_utc();
    let from = now.replace_time(time::Time::MIDNIGHT) - time::Duration::days(1);
    let mut q = UsageQuery::new(from, from + time::Duration::days(3));
    q.granularity = Granularity::Month;
    let mut got = BTreeMap::new();
    for p in query_usage(ch, db, &q).await.unwrap() {
        *got.entry((p.tenant, p.meter)).or_insert(Decimal::ZERO) += p.value;
    }
    got
}

/// One meter of one tenant in `totals`, zero when absent.
pub fn value(got: &BTreeMap<(String, String), Decimal>, tenant: &str, meter: &str) -> Decimal {
    got.get(&(tenant.to_owned(), meter.to_owned())).copied().unwrap_or_default()
}
