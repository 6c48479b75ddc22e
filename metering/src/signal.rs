//! The three kinds of telemetry Tally meters, as OTLP names them.

use serde::Deserialize;

use crate::meter::names;

/// An OTLP signal: what a request carries, and what a custom meter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// Spans (`/v1/traces`).
    Traces,
    /// Metric data points (`/v1/metrics`).
    Metrics,
    /// Log records (`/v1/logs`).
    Logs,
}

impl Signal {
    /// All three, in the order of the OTLP paths.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// `traces`, `metrics` or `logs`, as in the HTTP path and the meters file.
    pub const fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The meter counting the signal's items: `spans`, `metric_points` or `log_records`.
    pub const fn items_meter(self) -> &'static str {
        match self {
            Signal::Traces => names::SPANS,
            Signal::Metrics => names::METRIC_POINTS,
            Signal::Logs => names::LOG_RECORDS,
        }
    }

    /// What the signal's items are called in messages.
    pub const fn items(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "data points",
            Signal::Logs => "log records",
        }
    }
}
