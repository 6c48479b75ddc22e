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

/// What a report may claim, beyond being well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The most cores a host may have: `cpu_seconds` over an interval is at most this many
    /// times the interval.
    pub max_cores: u32,
}

impl Default for Bounds {
    fn default() -> Self {
        Self { max_cores: 512 }
    }
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
/// A report's kernel CPU usage must state the interval it covers (`start_time_unix_nano` up to
/// `time_unix_nano`, at most [`MAX_INTERVAL`]) and claim at most `bounds.max_cores` cores busy
/// all of it: a forged or broken report of 3.6e15 ns is refused, not billed.
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
        let value = match p.value {
            Some(Value::AsInt(n)) if n >= 0 => Decimal::new(n, scale),
            _ => return Err("values are non-negative integers (asInt)".into()),
        };
        if meter.name == "cpu_seconds" {
            plausible_cpu(p.start_time_unix_nano, p.time_unix_nano, value, bounds)?;
        }
        let mut record = UsageRecord::new(tenant, &meter.name, when, value).with_service(service);
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

/// Refuses CPU seconds that no host of `bounds.max_cores` could have used in the interval.
fn plausible_cpu(start_unix_nano: u64, end_unix_nano: u64, seconds: Decimal, bounds: Bounds) -> Result<(), String> {
    let interval = end_unix_nano
        .checked_sub(start_unix_nano)
        .filter(|d| start_unix_nano > 0 && *d > 0)
        .ok_or("kernel CPU usage states the interval it covers (start_time_unix_nano before time_unix_nano)")?;
    let interval = std::time::Duration::from_nanos(interval);
    if interval > MAX_INTERVAL {
        return Err(format!("its interval of {} s is longer than {} s", interval.as_secs(), MAX_INTERVAL.as_secs()));
    }
    let most = Decimal::from(bounds.max_cores) * Decimal::from_i128_with_scale(interval.as_nanos() as i128, 9);
    if seconds > most {
        return Err(format!(
            "{} CPU-seconds in {} s is more than {} cores could use (the collector's --max-report-cores)",
            seconds.normalize(),
            Decimal::from_i128_with_scale(interval.as_nanos() as i128, 9).normalize(),
            bounds.max_cores
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
            let got = extract(&mut request, &Catalog::builtin(), OffsetDateTime::now_utc(), Bounds { max_cores: 4 });
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
}
