//! `tally-agent`'s settings (flags, `TALLY_*` variables and config-file keys share names).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use metering::telemetry::LogFormat;

/// tally-agent: receives OTLP from the apps on its host and forwards it, through a disk WAL, to collectors.
#[derive(Debug, Parser)]
#[command(name = "tally-agent", version)]
pub struct Settings {
    /// OTLP/gRPC listen address for apps.
    #[arg(long, default_value = "0.0.0.0:4317")]
    pub otlp_grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address for apps.
    #[arg(long, default_value = "0.0.0.0:4318")]
    pub otlp_http_listen: SocketAddr,
    /// Collector URL to forward to (repeatable: balanced, with failover).
    #[arg(long)]
    pub collector: Vec<String>,
    /// This agent's key at the collectors.
    #[arg(long, hide_env_values = true)]
    pub key: Option<String>,
    /// Tenant stamped on data that names none (sidecar mode).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Directory of the WAL and the agent's stable id.
    #[arg(long, default_value = "/var/lib/tally-agent")]
    pub data_dir: PathBuf,
    /// Upper bound of the WAL on disk, in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub wal_max_bytes: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub admin_listen: SocketAddr,
    /// How logs are written (level from RUST_LOG).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
