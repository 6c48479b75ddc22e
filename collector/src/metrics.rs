//! The collector's Prometheus metrics, served on the admin port at `/metrics`.
//! Every acceptance, refusal and store failure is counted here.

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of per-signal item counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    /// `traces`, `metrics` or `logs`.
    pub signal: &'static str,
    /// `accepted`, `rejected` (partial success, or a request found malformed while metering it),
    /// `throttled`, `unavailable`
    /// (spool full or unwritable: the sender retries) or `dropped` (could not be metered).
    /// Requests refused from their headers (401, 403) are never decoded, so their items are not
    /// counted here: the response counter counts them.
    pub outcome: &'static str,
}

/// Labels of per-meter counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeterLabels {
    /// The meter, e.g. `cpu_seconds`.
    pub meter: &'static str,
}

/// Labels of the response counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    /// `grpc` or `http`.
    pub transport: &'static str,
    /// HTTP status, or the gRPC status code.
    pub code: String,
}

/// The metrics.
pub struct Metrics {
    registry: Registry,
    /// `tally_collector_items_total`: spans, data points and log records by outcome.
    pub items: Family<ItemLabels, Counter>,
    /// `tally_collector_responses_total`: every answer given, by transport and status.
    pub responses: Family<ResponseLabels, Counter>,
    /// `tally_collector_clickhouse_write_seconds`: INSERT latency.
    pub clickhouse_write_seconds: Histogram,
    /// `tally_collector_clickhouse_write_errors_total`: failed INSERTs (senders told to retry).
    pub clickhouse_write_errors: Counter,
    /// `tally_collector_tenant_mismatch_items_total`: items a tenant key sent claiming another tenant.
    pub tenant_mismatch_items: Counter,
    /// `tally_collector_dropped_items_total`: items whose usage could not be stored, metered as `dropped_*`.
    pub dropped_items: Counter,
    /// `tally_collector_report_bound_refused_points_total`: kernel usage report points refused
    /// because their key's reports would have been over its bound over time, by meter.
    pub report_bound_refused: Family<MeterLabels, Counter>,
    /// `tally_collector_clickhouse_rows_total`: rows written to ClickHouse.
    pub clickhouse_rows: Counter,
    /// `tally_collector_spool_bytes`: acknowledged rows waiting on disk for ClickHouse.
    pub spool_bytes: Gauge,
    /// `tally_collector_spool_segments`: spool segment files on disk.
    pub spool_segments: Gauge,
    /// `tally_collector_spool_queued_bytes`: bytes of appends waiting for the spool's writer (they count in `--spool-max-bytes`).
    pub spool_queued_bytes: Gauge,
    /// `tally_collector_spool_full_total`: appends the spool refused because it was full
    /// (`--spool-max-bytes`, or its 65,536 segment files); senders were told to retry.
    pub spool_full: Counter,
    /// `tally_collector_spool_queue_full_total`: times the sink's queue of sealed segments was
    /// full and the spool's writer waited for it. Must stay 0.
    pub spool_queue_full: Counter,
    /// `tally_collector_spool_damaged_bytes_total`: spool bytes found damaged and skipped.
    pub spool_damaged_bytes: Counter,
    spool: std::sync::OnceLock<wal::Wal>,
}

impl Metrics {
    /// The metrics of a process whose OTLP receivers share the budget `inflight`.
    pub fn new(inflight: otlp::InFlight) -> Self {
        let mut registry = Registry::with_prefix("tally_collector");
        let items = Family::default();
        registry.register("items", "OTLP items by signal and outcome", items.clone());
        let responses = Family::default();
        registry.register("responses", "Responses by transport and status code", responses.clone());
        let clickhouse_write_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("clickhouse_write_seconds", "Latency of usage INSERTs", clickhouse_write_seconds.clone());
        let clickhouse_write_errors = Counter::default();
        registry.register("clickhouse_write_errors", "Usage INSERTs that failed", clickhouse_write_errors.clone());
        let tenant_mismatch_items = Counter::default();
        registry.register(
            "tenant_mismatch_items",
            "Items sent with a tenant key whose resource claimed another tenant (re-attributed)",
            tenant_mismatch_items.clone(),
        );
        let dropped_items = Counter::default();
        registry.register(
            "dropped_items",
            "Items whose usage could not be stored, metered as dropped_* usage with the reason (answered as rejected)",
            dropped_items.clone(),
        );
        let report_bound_refused = Family::default();
        registry.register(
            "report_bound_refused_points",
            "Kernel usage report points refused because their key's reports would have been over its bound over time \
             (--max-report-*, times the key's hosts:), by meter (answered as rejected)",
            report_bound_refused.clone(),
        );
        let clickhouse_rows = Counter::default();
        registry.register("clickhouse_rows", "Rows written to ClickHouse", clickhouse_rows.clone());
        let spool_bytes = Gauge::default();
        registry.register(
            "spool_bytes",
            "Acknowledged usage rows waiting on disk for ClickHouse, in bytes",
            spool_bytes.clone(),
        );
        let spool_segments = Gauge::default();
        registry.register("spool_segments", "Spool segment files on disk", spool_segments.clone());
        let spool_queued_bytes = Gauge::default();
        registry.register(
            "spool_queued_bytes",
            "Bytes of appends waiting for the spool's writer (counted in the spool's bound)",
            spool_queued_bytes.clone(),
        );
        let spool_full = Counter::default();
        registry.register(
            "spool_full",
            "Appends the spool refused because it was full (senders told to retry)",
            spool_full.clone(),
        );
        let spool_queue_full = Counter::default();
        registry.register(
            "spool_queue_full",
            "Times the sink's queue of sealed segments was full and the spool's writer waited",
            spool_queue_full.clone(),
        );
        let spool_damaged_bytes = Counter::default();
        registry.register(
            "spool_damaged_bytes",
            "Spool bytes found damaged (checksum, framing) and skipped",
            spool_damaged_bytes.clone(),
        );
        // `tally_<binary>_inflight_bytes` and `_inflight_refused_total`, read from the budget.
        registry.register_collector(Box::new(inflight));
        Self {
            registry,
            items,
            responses,
            clickhouse_write_seconds,
            clickhouse_write_errors,
            tenant_mismatch_items,
            dropped_items,
            report_bound_refused,
            clickhouse_rows,
            spool_bytes,
            spool_segments,
            spool_queued_bytes,
            spool_full,
            spool_queue_full,
            spool_damaged_bytes,
            spool: std::sync::OnceLock::new(),
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        if let Some(wal) = self.spool.get() {
            self.spool_bytes.set(i64::try_from(wal.pending_bytes()).unwrap_or(i64::MAX));
            self.spool_segments.set(i64::try_from(wal.segments()).unwrap_or(i64::MAX));
            self.spool_queued_bytes.set(i64::try_from(wal.queued_bytes()).unwrap_or(i64::MAX));
            // Raised to the spool's own count; fetch_max keeps concurrent scrapes from counting twice.
            self.spool_full.inner().fetch_max(wal.refused_full(), std::sync::atomic::Ordering::Relaxed);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Reports the depth of `wal` as the spool gauges.
    pub fn watch_spool(&self, wal: wal::Wal) {
        let _ = self.spool.set(wal);
    }

    /// Adds `n` points of `meter` refused by their key's bound over time.
    pub fn count_report_bound_refused(&self, meter: &'static str, n: u64) {
        if n > 0 {
            self.report_bound_refused.get_or_create(&MeterLabels { meter }).inc_by(n);
        }
    }

    /// Adds `n` items of `signal` with `outcome`.
    pub fn count_items(&self, signal: &'static str, outcome: &'static str, n: u64) {
        if n > 0 {
            self.items.get_or_create(&ItemLabels { signal, outcome }).inc_by(n);
        }
    }
}

/// Middleware counting every response of a receiver by its status (for gRPC,
/// the `grpc-status` of a trailers-only answer, else `0`).
pub async fn count_responses(metrics: Arc<Metrics>, transport: &'static str, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let code = match transport {
        "grpc" => response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_owned(),
        _ => response.status().as_u16().to_string(),
    };
    metrics.responses.get_or_create(&ResponseLabels { transport, code }).inc();
    response
}
