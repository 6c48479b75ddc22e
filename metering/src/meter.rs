//! The meters Tally knows: what each counts and in which unit.

use std::fmt;

/// The unit a meter's values are expressed in, as reported by the billing API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// A built-in meter: its name (as stored and queried) and its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meter {
    /// The name used in storage and in the API, e.g. `spans`.
    pub name: &'static str,
    /// What the meter's values count.
    pub unit: Unit,
    /// One line for humans (OpenAPI, reports).
    pub description: &'static str,
}

const fn meter(name: &'static str, unit: Unit, description: &'static str) -> Meter {
    Meter { name, unit, description }
}

/// Every built-in meter. Throttled and dropped volumes are meters too, so that
/// nothing the pipeline refuses disappears from the books.
pub const BUILTIN: &[Meter] = &[
    meter("spans", Unit::Count, "spans received over OTLP"),
    meter("span_bytes", Unit::Bytes, "bytes of encoded OTLP spans"),
    meter("requests", Unit::Count, "SERVER and CONSUMER spans"),
    meter("metric_points", Unit::Count, "metric data points (a histogram point counts 1)"),
    meter("log_records", Unit::Count, "log records received over OTLP"),
    meter("log_bytes", Unit::Bytes, "bytes of encoded OTLP log records"),
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
];

/// The set of meters a deployment knows: the built-ins (custom meters join later).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    _private: (),
}

impl Catalog {
    /// The catalog of built-in meters.
    pub fn builtin() -> Self {
        Self::default()
    }

    /// Looks a meter up by name.
    ///
    /// ```
    /// let catalog = metering::meter::Catalog::builtin();
    /// assert_eq!(catalog.get("span_bytes").unwrap().unit.as_str(), "bytes");
    /// assert!(catalog.get("nope").is_none());
    /// ```
    pub fn get(&self, name: &str) -> Option<&'static Meter> {
        BUILTIN.iter().find(|m| m.name == name)
    }

    /// All meters, in catalog order.
    pub fn iter(&self) -> impl Iterator<Item = &'static Meter> {
        BUILTIN.iter()
    }

    /// The names of all meters, comma-separated, for error messages.
    pub fn names(&self) -> String {
        self.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prometheus_style() {
        let mut seen = std::collections::HashSet::new();
        for m in BUILTIN {
            assert!(seen.insert(m.name), "duplicate meter {}", m.name);
            assert!(m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", m.name);
        }
        assert_eq!(BUILTIN.len(), 16);
    }
}
