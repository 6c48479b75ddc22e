//! `tally-collector`'s settings (flags, `TALLY_*` variables and config-file keys share names).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use metering::store::StoreSettings;
use runtime::telemetry::LogFormat;

/// tally-collector: receives OTLP from agents and SDKs, meters usage per tenant into ClickHouse.
#[derive(Debug, Parser)]
#[command(name = "tally-collector", version)]
pub struct Settings {
    /// OTLP/gRPC listen address.
    #[arg(long, default_value = "0.0.0.0:4417")]
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address.
    #[arg(long, default_value = "0.0.0.0:4418")]
    pub http_listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9465")]
    pub admin_listen: SocketAddr,
    /// The usage store.
    #[command(flatten)]
    pub store: StoreSettings,
    /// Largest request accepted, in bytes, before and after decompression.
    #[arg(long, default_value_t = otlp::DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Bytes of requests the OTLP receivers (gRPC and HTTP together) hold at once, read and inflated;
    /// a request that does not fit is told to retry (UNAVAILABLE / 503). At least twice --max-request-bytes.
    #[arg(long, default_value_t = otlp::DEFAULT_MAX_INFLIGHT_BYTES)]
    pub max_inflight_bytes: usize,
    /// Directory of the spool: acknowledged usage waiting for ClickHouse.
    #[arg(long, default_value = "/var/lib/tally-collector")]
    pub data_dir: PathBuf,
    /// Upper bound of the spool on disk, in bytes; when it is full senders are told to retry.
    #[arg(long, default_value_t = 1 << 30)]
    pub spool_max_bytes: u64,
    /// How often spooled usage is written to ClickHouse, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub flush_interval_ms: u64,
    /// How long a shutdown (SIGTERM) waits for ClickHouse to take the spool, in seconds.
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// YAML file of sender keys (stored hashed) and the tenants they pin.
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// A tenant's rate limit in OTLP items (spans, data points, log records) per second, with an
    /// optional burst: TENANT=RATE[/BURST] (repeatable).
    #[arg(long)]
    pub tenant_limit: Vec<crate::limits::TenantLimit>,
    /// The rate limit of every tenant without its own, RATE[/BURST] (default: unlimited).
    #[arg(long)]
    pub default_tenant_limit: Option<crate::limits::Limit>,
    /// YAML file of custom meter definitions (see docs/collector.md, "Custom meters").
    #[arg(long)]
    pub meters: Option<PathBuf>,
    /// Accept senders without a key (local use only): they are trusted as agents are.
    #[arg(long)]
    pub allow_anonymous: bool,
    /// The oldest batch time (`tally-batch`, from agent keys) accepted, in hours before now: usage cannot be moved
    /// into a month billed long ago (an agent's WAL older than this is refused and counted as dropped).
    #[arg(long, default_value_t = 168)]
    pub batch_max_age_hours: u64,
    /// The most cores an agent's host may have: a kernel usage report claiming more CPU-seconds than this many cores
    /// busy for its whole interval is refused, and so are an agent key's reports past this many cores (times its
    /// hosts:) over time.
    #[arg(long, default_value_t = 512)]
    pub max_report_cores: u32,
    /// The fastest an agent's host may send or receive, in bits per second each way: a kernel usage report claiming
    /// more net_rx_bytes or net_tx_bytes than this carries in its interval is refused, and so are an agent key's
    /// reports past it (times its hosts:) over time. Above what a host's kernel carries (two 800 Gbit/s NICs at line rate).
    #[arg(long, default_value_t = 1_600_000_000_000)]
    pub max_report_link_bits_per_second: u64,
    /// The most TCP connections an agent's host may make and accept per second: a kernel usage report claiming more
    /// tcp_connections than this in its interval is refused, and so are an agent key's reports past it (times its
    /// hosts:) over time. 512 cores at 5 us of CPU per connection.
    #[arg(long, default_value_t = 100_000_000)]
    pub max_report_connections_per_second: u64,
    /// How logs are written (level from RUST_LOG).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
