//! Names of the built-in meters the pipeline itself writes, spelled once.

/// Spans received over OTLP.
pub const SPANS: &str = "spans";
/// Bytes of encoded OTLP spans.
pub const SPAN_BYTES: &str = "span_bytes";
/// SERVER and CONSUMER spans.
pub const REQUESTS: &str = "requests";
/// Metric data points.
pub const METRIC_POINTS: &str = "metric_points";
/// Log records received over OTLP.
pub const LOG_RECORDS: &str = "log_records";
/// Bytes of encoded OTLP log records.
pub const LOG_BYTES: &str = "log_bytes";
/// The meters counting OTLP items, one per signal: what rate limits and drops count.
pub const ITEMS: [&str; 3] = [SPANS, METRIC_POINTS, LOG_RECORDS];
/// The meters agents measure in the kernel (eBPF) and report: what a key may be barred from.
pub const KERNEL: [&str; 4] = ["cpu_seconds", "net_rx_bytes", "net_tx_bytes", "tcp_connections"];
/// Prefix of an item meter's volume refused by a rate limit.
pub const THROTTLED: &str = "throttled_";
/// Prefix of an item meter's volume that could not be stored.
pub const DROPPED: &str = "dropped_";
/// Prefix of an item meter's volume agents accepted from apps.
pub const AGENT_ACCEPTED: &str = "agent_accepted_";
/// Prefix of an item meter's volume collectors acknowledged to agents.
pub const AGENT_ACKED: &str = "agent_acked_";
