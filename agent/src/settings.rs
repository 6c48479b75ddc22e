//! `tally-agent`'s settings (flags, `TALLY_*` variables and config-file keys share names).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use runtime::telemetry::LogFormat;

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
    /// YAML file of custom meter definitions, the collectors' own (see docs/collector.md, "Custom meters"): an item
    /// one of them refuses is in the agent's partial success to the app, as a collector would answer.
    #[arg(long)]
    pub meters: Option<PathBuf>,
    /// Directory of the WAL and the agent's stable id.
    #[arg(long, default_value = "/var/lib/tally-agent")]
    pub data_dir: PathBuf,
    /// Upper bound of the WAL on disk, in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub wal_max_bytes: u64,
    /// What a full WAL does: `backpressure` tells apps to retry (nothing is lost); `drop-oldest`
    /// drops the oldest waiting data to make room (counted as dropped_* usage with reason "wal full").
    #[arg(long, value_enum, default_value = "backpressure")]
    pub wal_full: crate::intake::WhenFull,
    /// How often the agent reports its books (accepted, acknowledged and dropped items per
    /// tenant) to the collectors as usage, in seconds.
    #[arg(long, default_value_t = 10)]
    pub report_interval_secs: u64,
    /// When the WAL is synced: 0 before an app is acknowledged (nothing acknowledged is lost,
    /// even to a power cut); N > 0 at most N milliseconds after (a machine crash can lose N ms).
    #[arg(long, default_value_t = 0)]
    pub wal_fsync_ms: u64,
    /// How often accepted data is cut into batches and forwarded, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub flush_interval_ms: u64,
    /// Largest batch sent to a collector, in bytes before compression. Usage is stored per
    /// batch (its identity is what makes resends free), so larger batches mean fewer ClickHouse
    /// rows per span (see docs/scaling.md), at the cost of memory.
    #[arg(long, default_value_t = 4 << 20)]
    pub batch_max_bytes: usize,
    /// How batches are compressed for the collectors: `zstd` (Tally's collectors take it; about
    /// gzip's size at a fraction of its CPU), `gzip` (what any OTLP receiver takes) or `none`
    /// (collectors on a fast network).
    #[arg(long, value_enum, default_value = "zstd")]
    pub compression: Compression,
    /// WAL segments forwarded at once (each up to 8 MiB or two batches, read whole): more overlaps the
    /// collectors' round trips, at the cost of memory.
    #[arg(long, default_value_t = 2)]
    pub segments_in_flight: usize,
    /// Timeout of one export to a collector, in seconds.
    #[arg(long, default_value_t = 10)]
    pub collector_timeout_secs: u64,
    /// Longest wait between retries of a batch, in seconds (RetryInfo included).
    #[arg(long, default_value_t = 30)]
    pub max_backoff_secs: u64,
    /// How long a shutdown (SIGTERM) keeps forwarding, in seconds; the rest stays in the WAL.
    #[arg(long, default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// Turns the eBPF usage probes off (OTLP only).
    #[arg(long)]
    pub no_ebpf: bool,
    /// Cgroup under which network bytes are counted (default: the cgroup2 mount).
    #[arg(long)]
    pub cgroup_root: Option<PathBuf>,
    /// Bills a cgroup's kernel usage to a tenant: PATTERN=TENANT, PATTERN a path relative to the
    /// cgroup root where `*` and `?` match within a segment and `**` any number of segments; a
    /// rule covers the cgroups under what it matches; the first match wins; no match is `unknown`
    /// (repeatable).
    #[arg(long, value_name = "PATTERN=TENANT")]
    pub cgroup_tenant: Vec<String>,
    /// Largest request accepted from apps, in bytes, before and after decompression.
    #[arg(long, default_value_t = otlp::DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Bytes of requests the OTLP receivers (gRPC and HTTP together) hold at once, read and inflated;
    /// a request that does not fit is told to retry (UNAVAILABLE / 503). At least twice --max-request-bytes.
    #[arg(long, default_value_t = otlp::DEFAULT_MAX_INFLIGHT_BYTES)]
    pub max_inflight_bytes: usize,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub admin_listen: SocketAddr,
    /// How logs are written (level from RUST_LOG).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Compression of the batches sent to collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// zstd (level 3, as tonic sends it).
    Zstd,
    /// gzip (level 6, as tonic sends it).
    Gzip,
    /// Uncompressed.
    None,
}
