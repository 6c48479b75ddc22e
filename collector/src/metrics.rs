//! The collector's Prometheus metrics, served on the admin port at `/metrics`.
//! Every acceptance, refusal and store failure is counted here.

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of per-signal item counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    /// `traces`, `metrics` or `logs`.
    pub signal: &'static str,
    /// `accepted`, `rejected` (partial success), `unauthenticated` or `unavailable`.
    pub outcome: &'static str,
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
}

impl Default for Metrics {
    fn default() -> Self {
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
        Self { registry, items, responses, clickhouse_write_seconds, clickhouse_write_errors, tenant_mismatch_items }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
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
