//! Usage reports: what agents measure themselves — drops at the agent, eBPF
//! usage, reconciliation counts — sent as OTLP metrics in the reserved scope
//! [`SCOPE`]. They travel through the agent's WAL and batches like any other
//! data, so they are stored exactly once too.
//!
//! Only senders trusted to name tenants (agent keys, anonymous mode) may
//! report usage; from a tenant key the scope is ordinary metrics. A report is
//! a `Sum` per meter ([`metering::meter::is_reported`]), one integer data point
//! per set of dimensions (string attributes, e.g. `reason`), in the resource's
//! `tenant.id`. Integers keep amounts exact: a meter in seconds is reported in
//! nanoseconds (unit `ns`).

use metering::meter::{is_reported, Catalog, Unit};
use metering::record::{validate_tenant, UsageRecord, MAX_DIMENSION_LEN};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use rust_decimal::Decimal;
use time::OffsetDateTime;

use crate::{attribute, TENANT_ATTRIBUTE, UNKNOWN_TENANT};

/// The instrumentation scope name of usage reports.
pub const SCOPE: &str = "tally.usage";

/// The longest interval a report may cover: a little more than the collectors' batch window
/// (an agent's WAL that waited out a week-long outage reports what it counted meanwhile).
pub const MAX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(8 * 86_400);

/// What a report may claim, beyond being well formed: what one host can use per second of each
/// kernel meter. A report's kernel usage is at most that times its interval; the collectors also
/// bound an agent key's reports over time by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The most cores a host may have: `cpu_seconds` over an interval is at most this many
    /// times the interval.
    pub max_cores: u32,
    /// The fastest a host's network may carry, in bits per second each way: `net_rx_bytes` and
    /// `net_tx_bytes` over an interval are at most this over 8 times the interval.
    pub max_link_bits_per_second: u64,
    /// The most TCP connections a host may make and accept per second (`tcp_connections`).
    pub max_connections_per_second: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        // See `tally-collector --help`: each is above what any real host does, so an honest
        // agent never meets it.
        Self { max_cores: 512, max_link_bits_per_second: 1_600_000_000_000, max_connections_per_second: 100_000_000 }
    }
}

impl Bounds {
    /// What one host can use of the kernel meter `meter` per second; `None` for other meters.
    pub fn rate(&self, meter: &str) -> Option<Rate> {
        let (kind, configured) = match meter {
            "cpu_seconds" => (Kind::Cpu, u64::from(self.max_cores)),
            "net_rx_bytes" | "net_tx_bytes" => (Kind::Link, self.max_link_bits_per_second),
            "tcp_connections" => (Kind::Connections, self.max_connections_per_second),
            _ => return None,
        };
        let per_second = match kind {
            Kind::Cpu => u128::from(configured) * NANOS_PER_SECOND,
            // Whole bytes, rounded down: never more than the link carries.
            Kind::Link => u128::from(configured) / 8,
            Kind::Connections => u128::from(configured),
        };
        Some(Rate { per_second, kind, configured })
    }
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// What one host can use of a kernel meter per second, in the meter's reported unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Reported units (nanoseconds of CPU, bytes, connections) per second.
    pub per_second: u128,
    kind: Kind,
    /// The bound as the collector's flag states it (cores, bits per second, connections per second).
    configured: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cpu,
    Link,
    Connections,
}

impl Rate {
    /// `units` of the meter as its reader counts them: "1.5 CPU-seconds", "1500 bytes".
    pub fn amount(&self, units: u128) -> String {
        match self.kind {
            Kind::Cpu => format!("{} CPU-seconds", seconds(units)),
            Kind::Link => format!("{units} bytes"),
            Kind::Connections => format!("{units} connections"),
        }
    }

    /// The bound of `hosts` hosts: "512 cores", "1600000000000 bits/s", "100000000 connections/s".
    pub fn bound(&self, hosts: u32) -> String {
        let n = u128::from(self.configured) * u128::from(hosts);
        match self.kind {
            Kind::Cpu => format!("{n} cores"),
            Kind::Link => format!("{n} bits/s"),
            Kind::Connections => format!("{n} connections/s"),
        }
    }

    /// The collector's flag that sets it.
    pub fn flag(&self) -> &'static str {
        match self.kind {
            Kind::Cpu => "--max-report-cores",
            Kind::Link => "--max-report-link-bits-per-second",
            Kind::Connections => "--max-report-connections-per-second",
        }
    }
}

/// `nanos` as decimal seconds, without trailing zeros.
fn seconds(nanos: u128) -> Decimal {
    Decimal::from_i128_with_scale(i128::try_from(nanos).unwrap_or(i128::MAX), 9).normalize()
}

/// A kernel usage record's value in its meter's reported integer unit (CPU seconds as
/// nanoseconds, as they were reported); `None` for other meters.
pub fn kernel_units(record: &UsageRecord) -> Option<u128> {
    let scale = match record.meter.as_str() {
        "cpu_seconds" => Decimal::from(1_000_000_000u32),
        m if metering::meter::names::KERNEL.contains(&m) => Decimal::ONE,
        _ => return None,
    };
    use rust_decimal::prelude::ToPrimitive;
    // Reported as a non-negative i64 of units: never out of range.
    record.value.checked_mul(scale).and_then(|v| v.trunc().to_u128())
}

/// What [`extract`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Reported {
    /// One record per data point.
    pub records: Vec<UsageRecord>,
    /// Data points refused, for partial success.
    pub rejected: u64,
    /// Why, when `rejected` > 0.
    pub reason: String,
}

/// Takes the usage-report scopes out of `request` (what remains is ordinary
/// metrics) and returns their usage, metered at `when`.
/// A report's kernel usage must state the interval it covers (`start_time_unix_nano` up to
/// `time_unix_nano`, at most [`MAX_INTERVAL`]) and claim at most what one host of `bounds` could
/// use in all of it (e.g. `bounds.max_cores` cores busy): a forged or broken report of 3.6e15 ns
/// of CPU in 10 s is refused, not billed.
pub fn extract(
    request: &mut ExportMetricsServiceRequest,
    catalog: &Catalog,
    when: OffsetDateTime,
    bounds: Bounds,
) -> Reported {
    let mut out = Reported::default();
    for rm in &mut request.resource_metrics {
        let (reports, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut rm.scope_metrics)
            .into_iter()
            .partition(|s| s.scope.as_ref().is_some_and(|sc| sc.name == SCOPE));
        rm.scope_metrics = rest;
        if reports.is_empty() {
            continue;
        }
        let attrs = rm.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
        let tenant = attribute(attrs, TENANT_ATTRIBUTE).unwrap_or(UNKNOWN_TENANT);
        let service = attribute(attrs, "service.name").unwrap_or("");
        for metric in reports.iter().flat_map(|s| &s.metrics) {
            let points = match metric.data.as_ref() {
                Some(Data::Sum(sum)) => sum.data_points.len() as u64,
                _ => 1,
            };
            match records(metric, tenant, service, catalog, when, bounds) {
                Ok(records) => out.records.extend(records),
                Err(reason) => {
                    out.rejected += points;
                    out.reason = format!("usage report {:?}: {reason}", metric.name);
                }
            }
        }
    }
    out
}

fn records(
    metric: &Metric,
    tenant: &str,
    service: &str,
    catalog: &Catalog,
    when: OffsetDateTime,
    bounds: Bounds,
) -> Result<Vec<UsageRecord>, String> {
    validate_tenant(tenant).map_err(|e| format!("{TENANT_ATTRIBUTE}: {e}"))?;
    let meter = catalog.get(&metric.name).filter(|m| is_reported(&m.name)).ok_or("not a meter agents report")?;
    let Some(Data::Sum(sum)) = &metric.data else { return Err("a usage report is a Sum".into()) };
    let scale = match (meter.unit, metric.unit.as_str()) {
        (Unit::Seconds, "ns") => 9,
        (Unit::Seconds, _) => return Err("seconds are reported as integer nanoseconds (unit \"ns\")".into()),
        _ => 0,
    };
    let service = crate::truncate(service, MAX_DIMENSION_LEN);
    let mut out = Vec::with_capacity(sum.data_points.len());
    for p in &sum.data_points {
        let n = match p.value {
            Some(Value::AsInt(n)) if n >= 0 => n,
            _ => return Err("values are non-negative integers (asInt)".into()),
        };
        if let Some(rate) = bounds.rate(&meter.name) {
            plausible(p.start_time_unix_nano, p.time_unix_nano, n.unsigned_abs().into(), rate)?;
        }
        let mut record = UsageRecord::new(tenant, &meter.name, when, Decimal::new(n, scale)).with_service(service);
        for kv in &p.attributes {
            let Some(any_value::Value::StringValue(v)) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
                return Err(format!("dimension {:?} is not a string", kv.key));
            };
            // Last wins, as everywhere.
            record.dimensions.insert(kv.key.clone(), crate::truncate(v, MAX_DIMENSION_LEN).to_owned());
        }
        out.push(record);
    }
    Ok(out)
}

/// Refuses `units` (the integer reported) of a kernel meter that no host of `rate` could have used
/// in the interval.
fn plausible(start_unix_nano: u64, end_unix_nano: u64, units: u128, rate: Rate) -> Result<(), String> {
    let what = match rate.kind {
        Kind::Cpu => "kernel CPU usage",
        Kind::Link => "kernel network usage",
        Kind::Connections => "a kernel connection count",
    };
    let interval = end_unix_nano
        .checked_sub(start_unix_nano)
        .filter(|d| start_unix_nano > 0 && *d > 0)
        .ok_or_else(|| format!("{what} states the interval it covers (start_time_unix_nano before time_unix_nano)"))?;
    let interval = std::time::Duration::from_nanos(interval);
    if interval > MAX_INTERVAL {
        return Err(format!("its interval of {} s is longer than {} s", interval.as_secs(), MAX_INTERVAL.as_secs()));
    }
    // Both sides times 1e9 ns: exact, and far inside u128 (units < 2^63, the rate < 2^95).
    if units * NANOS_PER_SECOND > rate.per_second * interval.as_nanos() {
        let limit = match rate.kind {
            Kind::Cpu => format!("{} could use", rate.bound(1)),
            Kind::Link => format!("a link of {} carries", rate.bound(1)),
            Kind::Connections => format!("{} for all of it", rate.bound(1)),
        };
        return Err(format!(
            "{} in {} s is more than {limit} (the collector's {})",
            rate.amount(units),
            seconds(interval.as_nanos()),
            rate.flag()
        ));
    }
    Ok(())
}

/// A usage-report metric: `meter` per dimension set, as integer data points, counted over
/// `[start_unix_nano, time_unix_nano)`. What the agent builds; the inverse of [`extract`].
pub fn metric(
    meter: &str,
    unit: &str,
    points: Vec<(Vec<(String, String)>, i64)>,
    (start_unix_nano, time_unix_nano): (u64, u64),
) -> Metric {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, NumberDataPoint, Sum};
    let data_points = points
        .into_iter()
        .map(|(dims, n)| NumberDataPoint {
            attributes: dims
                .into_iter()
                .map(|(k, v)| KeyValue {
                    key: k,
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue(v)) }),
                    ..Default::default()
                })
                .collect(),
            start_time_unix_nano: start_unix_nano,
            time_unix_nano,
            value: Some(Value::AsInt(n)),
            ..Default::default()
        })
        .collect();
    Metric {
        name: meter.to_owned(),
        unit: unit.to_owned(),
        data: Some(Data::Sum(Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten seconds, ending at 2026-12-07 00:00:10 UTC.
    const TEN_S: (u64, u64) = (1_796_601_600_000_000_000, 1_796_601_610_000_000_000);
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn resource(tenant: &str, scopes: Vec<ScopeMetrics>) -> ResourceMetrics {
        let attr = KeyValue {
            key: TENANT_ATTRIBUTE.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(tenant.into())) }),
            ..Default::default()
        };
        ResourceMetrics {
            resource: Some(Resource { attributes: vec![attr], ..Default::default() }),
            scope_metrics: scopes,
            ..Default::default()
        }
    }

    fn scope(name: &str, metrics: Vec<Metric>) -> ScopeMetrics {
        ScopeMetrics {
            scope: Some(InstrumentationScope { name: name.into(), ..Default::default() }),
            metrics,
            ..Default::default()
        }
    }

    #[test]
    fn reports_become_usage_and_the_rest_stays_metrics() {
        let reason = |r: &str| vec![("reason".to_owned(), r.to_owned())];
        let mut request = ExportMetricsServiceRequest {
            resource_metrics: vec![
                resource(
                    "acme",
                    vec![
                        scope(
                            SCOPE,
                            vec![
                                metric(
                                    "dropped_spans",
                                    "1",
                                    vec![(reason("wal full"), 40), (reason("rejected"), 2)],
                                    TEN_S,
                                ),
                                metric("cpu_seconds", "ns", vec![(vec![], 1_500_000_001)], TEN_S),
                            ],
                        ),
                        scope("app", vec![metric("http.requests", "1", vec![(vec![], 9)], TEN_S)]),
                    ],
                ),
                resource(
                    "globex",
                    vec![scope(
                        SCOPE,
                        vec![
                            metric("spans", "1", vec![(vec![], 5)], TEN_S),
                            metric("agent_accepted_spans", "1", vec![(vec![], 7)], TEN_S),
                        ],
                    )],
                ),
            ],
        };
        let when = OffsetDateTime::now_utc();
        let got = extract(&mut request, &Catalog::builtin(), when, Bounds::default());
        let summary: Vec<_> = got
            .records
            .iter()
            .map(|r| (r.tenant.as_str(), r.meter.as_str(), r.value.to_string(), r.dimensions.get("reason").cloned()))
            .collect();
        assert_eq!(
            summary,
            [
                ("acme", "dropped_spans", "40".to_owned(), Some("wal full".to_owned())),
                ("acme", "dropped_spans", "2".to_owned(), Some("rejected".to_owned())),
                ("acme", "cpu_seconds", "1.500000001".to_owned(), None),
                ("globex", "agent_accepted_spans", "7".to_owned(), None),
            ]
        );
        // `spans` is measured by the collector, never reported: refused, visibly.
        assert_eq!((got.rejected, got.reason.as_str()), (1, "usage report \"spans\": not a meter agents report"));
        // The app's own metrics remain, to be counted as metric points.
        assert_eq!(request.resource_metrics[0].scope_metrics.len(), 1);
        assert_eq!(request.resource_metrics[0].scope_metrics[0].metrics[0].name, "http.requests");
        assert!(request.resource_metrics[1].scope_metrics.is_empty());
    }

    #[test]
    fn seconds_must_come_as_nanoseconds_and_values_as_non_negative_integers() {
        let mut request = ExportMetricsServiceRequest {
            resource_metrics: vec![resource(
                "acme",
                vec![scope(
                    SCOPE,
                    vec![
                        metric("cpu_seconds", "s", vec![(vec![], 2)], TEN_S),
                        metric("dropped_spans", "1", vec![(vec![], -1)], TEN_S),
                    ],
                )],
            )],
        };
        let got = extract(&mut request, &Catalog::builtin(), OffsetDateTime::now_utc(), Bounds::default());
        assert!(got.records.is_empty());
        assert_eq!(got.rejected, 2);
        assert_eq!(got.reason, "usage report \"dropped_spans\": values are non-negative integers (asInt)");
    }

    #[test]
    fn kernel_cpu_must_state_its_interval_and_fit_the_cores() {
        let cpu = |ns: i64, interval: (u64, u64)| {
            let mut request = ExportMetricsServiceRequest {
                resource_metrics: vec![resource(
                    "acme",
                    vec![scope(SCOPE, vec![metric("cpu_seconds", "ns", vec![(vec![], ns)], interval)])],
                )],
            };
            let got = extract(
                &mut request,
                &Catalog::builtin(),
                OffsetDateTime::now_utc(),
                Bounds { max_cores: 4, ..Bounds::default() },
            );
            (got.records.iter().map(|r| r.value.to_string()).collect::<Vec<_>>(), got.reason)
        };
        // 4 cores for 10 s: 40 CPU-seconds at most.
        assert_eq!(cpu(40_000_000_000, TEN_S), (vec!["40.000000000".to_owned()], String::new()));
        assert_eq!(
            cpu(40_000_000_001, TEN_S).1,
            "usage report \"cpu_seconds\": 40.000000001 CPU-seconds in 10 s is more than 4 cores could use \
             (the collector's --max-report-cores)"
        );
        assert_eq!(
            cpu(3_600_000_000_000_000, TEN_S).1,
            "usage report \"cpu_seconds\": 3600000 CPU-seconds in 10 s is more than 4 cores could use \
             (the collector's --max-report-cores)"
        );
        let no_interval = "usage report \"cpu_seconds\": kernel CPU usage states the interval it covers \
                           (start_time_unix_nano before time_unix_nano)";
        assert_eq!(cpu(1, (0, TEN_S.1)).1, no_interval);
        assert_eq!(cpu(1, (TEN_S.1, TEN_S.0)).1, no_interval);
        let nine_days = (TEN_S.1 - 9 * 86_400 * 1_000_000_000, TEN_S.1);
        assert_eq!(
            cpu(1, nine_days).1,
            "usage report \"cpu_seconds\": its interval of 777600 s is longer than 691200 s"
        );
    }

    #[test]
    fn network_bytes_and_connections_must_state_their_interval_and_fit_the_host() {
        let report = |meter: &str, n: i64, interval: (u64, u64)| {
            let mut request = ExportMetricsServiceRequest {
                resource_metrics: vec![resource(
                    "acme",
                    vec![scope(SCOPE, vec![metric(meter, "1", vec![(vec![], n)], interval)])],
                )],
            };
            // A link of 800 bits/s carries 100 bytes a second each way; 3 connections a second.
            let bounds = Bounds { max_link_bits_per_second: 800, max_connections_per_second: 3, ..Bounds::default() };
            let got = extract(&mut request, &Catalog::builtin(), OffsetDateTime::now_utc(), bounds);
            (got.records.iter().map(|r| r.value.to_string()).collect::<Vec<_>>(), got.reason)
        };
        for meter in ["net_rx_bytes", "net_tx_bytes"] {
            assert_eq!(report(meter, 1_000, TEN_S), (vec!["1000".to_owned()], String::new()));
            assert_eq!(
                report(meter, 1_001, TEN_S).1,
                format!(
                    "usage report \"{meter}\": 1001 bytes in 10 s is more than a link of 800 bits/s carries \
                     (the collector's --max-report-link-bits-per-second)"
                )
            );
            assert_eq!(
                report(meter, 1, (0, TEN_S.1)).1,
                format!(
                    "usage report \"{meter}\": kernel network usage states the interval it covers \
                     (start_time_unix_nano before time_unix_nano)"
                )
            );
        }
        assert_eq!(report("tcp_connections", 30, TEN_S), (vec!["30".to_owned()], String::new()));
        assert_eq!(
            report("tcp_connections", 31, TEN_S).1,
            "usage report \"tcp_connections\": 31 connections in 10 s is more than 3 connections/s for all of it \
             (the collector's --max-report-connections-per-second)"
        );
        // The agent's books are counts of items, not of a host's resources: no interval, no bound.
        assert_eq!(report("dropped_spans", i64::MAX, (0, 0)).1, "");
    }

    #[test]
    fn bounds_in_reported_units() {
        let b = Bounds::default();
        let per_second = |m: &str| b.rate(m).map(|r| r.per_second);
        assert_eq!(per_second("cpu_seconds"), Some(512_000_000_000), "512 cores, in CPU-nanoseconds a second");
        assert_eq!(per_second("net_rx_bytes"), Some(200_000_000_000), "1.6 Tbit/s is 200 GB/s");
        assert_eq!(per_second("net_tx_bytes"), Some(200_000_000_000));
        assert_eq!(per_second("tcp_connections"), Some(100_000_000));
        assert_eq!(per_second("spans"), None);
        let t = OffsetDateTime::now_utc();
        let cpu = UsageRecord::new("acme", "cpu_seconds", t, Decimal::new(1_500_000_001, 9));
        assert_eq!(kernel_units(&cpu), Some(1_500_000_001));
        assert_eq!(kernel_units(&UsageRecord::new("acme", "net_tx_bytes", t, Decimal::from(7))), Some(7));
        assert_eq!(kernel_units(&UsageRecord::new("acme", "dropped_spans", t, Decimal::from(7))), None);
    }
}
