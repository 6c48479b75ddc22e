//! `tally` as a process: the CLI, and `tally serve` on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `tally serve`, killed on drop.
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use crate::service::free_port;

/// Runs `tally` with `args` to completion (no config file from the environment).
pub fn tally(args: &[&str]) -> std::process::Output {
    Command::new(crate::service::binary("tally")).args(args).env_remove("TALLY_CONFIG").output().unwrap()
}

/// Starts `tally serve` on `clickhouse_url`/`db` with `args` (keys included) and waits for /healthz.
pub async fn start(clickhouse_url: &str, db: &str, args: &[&str]) -> Serve {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(crate::service::binary("tally"));
    cmd.args(["serve", "--listen", &listen, "--clickhouse-url", clickhouse_url, "--clickhouse-database", db])
        .args(args)
        .env_remove("TALLY_CONFIG")
        .stderr(Stdio::null());
    let child = crate::spawn::spawn_tied(cmd).unwrap();
    let serve = Serve { child, base: format!("http://{listen}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{}/healthz", serve.base)).await.is_err() {
        assert!(Instant::now() < deadline, "tally serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serve
}
