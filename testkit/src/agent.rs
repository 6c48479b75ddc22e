//! The `tally-agent` binary as the tests run it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::service::{binary, free_port, Service};

pub struct Agent {
    pub service: Service,
    pub data_dir: PathBuf,
    pub http_url: String,
    pub grpc_url: String,
}

/// An agent forwarding to `collectors` with the collectors' `agent-key`, cutting batches every
/// 100 ms and reporting every second, its eBPF probes off (their usage would add tenants).
pub async fn start_agent(collectors: &[&str], dir: &Path, extra: &[&str]) -> Agent {
    start_agent_as(None, collectors, dir, &[&["--no-ebpf"], extra].concat()).await
}

/// The same, run by `setpriv` with `setpriv_args` when given (another user, fewer capabilities).
pub async fn start_agent_as(setpriv_args: Option<&[&str]>, collectors: &[&str], dir: &Path, extra: &[&str]) -> Agent {
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let data_dir = dir.join("agent");
    let mut args: Vec<String> = [
        "--otlp-grpc-listen",
        &format!("127.0.0.1:{grpc}"),
        "--otlp-http-listen",
        &format!("127.0.0.1:{http}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--key",
        "agent-key",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--flush-interval-ms",
        "100",
        "--max-backoff-secs",
        "1",
        "--report-interval-secs",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for c in collectors {
        args.extend(["--collector".to_owned(), c.to_string()]);
    }
    let bin = match setpriv_args {
        Some(setpriv) => {
            let mut wrapped: Vec<String> = setpriv.iter().map(|s| s.to_string()).collect();
            wrapped.push(binary("tally-agent").to_string_lossy().into_owned());
            args.splice(0..0, wrapped);
            PathBuf::from("setpriv")
        }
        None => binary("tally-agent"),
    };
    let mut service = Service::new(bin, args, format!("http://127.0.0.1:{admin}"));
    service.start(extra).await.unwrap();
    Agent {
        service,
        data_dir,
        http_url: format!("http://127.0.0.1:{http}"),
        grpc_url: format!("http://127.0.0.1:{grpc}"),
    }
}

impl Agent {
    /// Waits until the WAL holds nothing a collector has not acknowledged.
    pub async fn drained(&self) {
        self.service.wait_for_line("tally_agent_wal_bytes 0", Duration::from_secs(90)).await.unwrap();
    }

    /// Exports of every signal with `outcome` (`acked`, `retried`, ...), and the exposition read.
    pub async fn batches(&self, outcome: &str) -> (u64, String) {
        let text = self.service.metrics().await.unwrap();
        let n = ["traces", "metrics", "logs"]
            .iter()
            .map(|signal| {
                crate::service::sample(
                    &text,
                    &format!("tally_agent_batches_total{{signal=\"{signal}\",outcome=\"{outcome}\"}}"),
                )
            })
            .sum();
        (n, text)
    }
}
