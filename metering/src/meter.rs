//! The meters Tally knows: what each counts, in which unit, and how its
//! stored minutes roll up. Built-in meters are listed in [`BUILTIN`]; operators
//! add their own in a meters file ([`definition`]).

pub mod definition;
pub mod names;

use std::borrow::Cow;
use std::fmt;

pub use crate::signal::Signal;
pub use definition::{Aggregation, DefinitionError, MeterDefinition};

/// The unit a meter's values are expressed in, as reported by the billing API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// A number of things (spans, requests, points, connections).
    Count,
    /// Bytes.
    Bytes,
    /// Seconds (fractional; stored with nanosecond precision).
    Seconds,
}

impl Unit {
    /// The unit's name as stored and served (`count`, `bytes`, `seconds`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "count",
            Unit::Bytes => "bytes",
            Unit::Seconds => "seconds",
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A meter: its name (as stored and queried), its unit and how it rolls up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meter {
    /// The name used in storage and in the API, e.g. `spans`.
    pub name: Cow<'static, str>,
    /// What the meter's values count.
    pub unit: Unit,
    /// How stored values combine within a batch and in a roll-up bucket.
    pub aggregation: Aggregation,
    /// One line for humans (OpenAPI, reports).
    pub description: Cow<'static, str>,
}

const fn meter(name: &'static str, unit: Unit, description: &'static str) -> Meter {
    Meter { name: Cow::Borrowed(name), unit, aggregation: Aggregation::Sum, description: Cow::Borrowed(description) }
}

/// Every built-in meter. Throttled and dropped volumes are meters too, so that
/// nothing the pipeline refuses disappears from the books.
pub const BUILTIN: &[Meter] = &[
    meter(names::SPANS, Unit::Count, "spans received over OTLP"),
    meter(names::SPAN_BYTES, Unit::Bytes, "bytes of encoded OTLP spans"),
    meter(names::REQUESTS, Unit::Count, "SERVER and CONSUMER spans"),
    meter(names::METRIC_POINTS, Unit::Count, "metric data points (a histogram point counts 1)"),
    meter(names::LOG_RECORDS, Unit::Count, "log records received over OTLP"),
    meter(names::LOG_BYTES, Unit::Bytes, "bytes of encoded OTLP log records"),
    meter("cpu_seconds", Unit::Seconds, "CPU time of the tenant's cgroups (eBPF)"),
    meter("net_rx_bytes", Unit::Bytes, "bytes received by the tenant's cgroups (eBPF)"),
    meter("net_tx_bytes", Unit::Bytes, "bytes sent by the tenant's cgroups (eBPF)"),
    meter("tcp_connections", Unit::Count, "new established TCP connections (eBPF)"),
    meter("throttled_spans", Unit::Count, "spans refused by the tenant's rate limit"),
    meter("throttled_metric_points", Unit::Count, "metric points refused by the tenant's rate limit"),
    meter("throttled_log_records", Unit::Count, "log records refused by the tenant's rate limit"),
    meter("dropped_spans", Unit::Count, "spans that could not be stored, by reason"),
    meter("dropped_metric_points", Unit::Count, "metric points that could not be stored, by reason"),
    meter("dropped_log_records", Unit::Count, "log records that could not be stored, by reason"),
    meter("agent_accepted_spans", Unit::Count, "spans agents accepted from apps (reconciliation)"),
    meter("agent_accepted_metric_points", Unit::Count, "metric points agents accepted from apps (reconciliation)"),
    meter("agent_accepted_log_records", Unit::Count, "log records agents accepted from apps (reconciliation)"),
    meter("agent_acked_spans", Unit::Count, "spans collectors acknowledged to agents (reconciliation)"),
    meter("agent_acked_metric_points", Unit::Count, "metric points collectors acknowledged to agents (reconciliation)"),
    meter("agent_acked_log_records", Unit::Count, "log records collectors acknowledged to agents (reconciliation)"),
];

/// Meters that agents report themselves (in usage reports, see the collector's
/// `reports`) rather than the collector measuring them from OTLP data: drops
/// that happened at the agent, eBPF usage, and reconciliation counts.
///
/// ```
/// assert!(metering::meter::is_reported("dropped_spans"));
/// assert!(!metering::meter::is_reported("spans"));
/// ```
pub fn is_reported(name: &str) -> bool {
    name.starts_with(names::DROPPED)
        || name.starts_with(names::AGENT_ACCEPTED)
        || name.starts_with(names::AGENT_ACKED)
        || names::KERNEL.contains(&name)
}

/// The set of meters a deployment knows: the built-ins plus the operator's custom meters.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    custom: Vec<Meter>,
}

impl Catalog {
    /// The catalog of built-in meters.
    pub fn builtin() -> Self {
        Self::default()
    }

    /// The built-ins plus the given custom meters, which [`definition::load`] has checked
    /// (names unique and no built-in's).
    ///
    /// ```
    /// use metering::meter::{definition::parse, Aggregation, Catalog};
    /// let defs = parse("meters:\n  - {name: llm_tokens, signal: traces, aggregation: sum, attribute: llm.tokens}\n", "meters.yaml".as_ref())?;
    /// let catalog = Catalog::with_custom(&defs);
    /// assert_eq!(catalog.get("llm_tokens").unwrap().aggregation, Aggregation::Sum);
    /// assert!(catalog.get("spans").is_some());
    /// # Ok::<(), metering::meter::DefinitionError>(())
    /// ```
    pub fn with_custom(definitions: &[MeterDefinition]) -> Self {
        Self { custom: definitions.iter().map(MeterDefinition::meter).collect() }
    }

    /// Looks a meter up by name.
    ///
    /// ```
    /// let catalog = metering::meter::Catalog::builtin();
    /// assert_eq!(catalog.get("span_bytes").unwrap().unit.as_str(), "bytes");
    /// assert!(catalog.get("nope").is_none());
    /// ```
    pub fn get(&self, name: &str) -> Option<&Meter> {
        self.iter().find(|m| m.name == name)
    }

    /// All meters, in catalog order: built-ins first.
    pub fn iter(&self) -> impl Iterator<Item = &Meter> {
        BUILTIN.iter().chain(&self.custom)
    }

    /// The custom meters alone.
    pub fn custom(&self) -> &[Meter] {
        &self.custom
    }

    /// The names of all meters, comma-separated, for error messages.
    pub fn names(&self) -> String {
        self.iter().map(|m| m.name.as_ref()).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prometheus_style() {
        let mut seen = std::collections::HashSet::new();
        for m in BUILTIN {
            assert!(seen.insert(m.name.as_ref()), "duplicate meter {}", m.name);
            assert!(m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", m.name);
        }
        assert_eq!(BUILTIN.len(), 22);
    }
}
