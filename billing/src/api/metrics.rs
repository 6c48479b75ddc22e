//! The billing API's Prometheus metrics, served at `/metrics` on the API's own port: every
//! response by route and status, and how long each route takes. Labels are route templates
//! (`/v1/tenants/{tenant}/invoices/{month}`), never a tenant or a key.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of the response counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    /// The route template, or `unmatched`.
    pub route: String,
    /// The HTTP status.
    pub code: u16,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template, or `unmatched`.
    pub route: String,
}

/// The metrics.
pub struct Metrics {
    registry: Registry,
    /// `tally_api_responses_total`: every answer, by route and status.
    pub responses: Family<ResponseLabels, Counter>,
    /// `tally_api_request_seconds`: time to answer, by route.
    pub seconds: Family<RouteLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Counter::default())
    }
}

impl Metrics {
    /// The metrics, with `verifications` (counted where seals are verified) among them.
    pub fn new(verifications: Counter) -> Self {
        let mut registry = Registry::with_prefix("tally_api");
        let responses = Family::<ResponseLabels, Counter>::default();
        registry.register("responses", "Answers of the billing API, by route and HTTP status", responses.clone());
        let seconds = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register("request_seconds", "Time the billing API took to answer, by route", seconds.clone());
        registry.register(
            "seal_verifications",
            "Seals recomputed and checked (in the background and on request; GET /v1/periods serves the latest)",
            verifications,
        );
        Self { registry, responses, seconds }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Middleware timing and counting every response.
pub async fn observe(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.seconds.get_or_create(&RouteLabels { route: route.clone() }).observe(started.elapsed().as_secs_f64());
    metrics.responses.get_or_create(&ResponseLabels { route, code: response.status().as_u16() }).inc();
    response
}
