//! The agent's usage report: the ledger's counts as OTLP metrics in the
//! collectors' usage-report scope, written to the WAL like any request so they
//! are batched, retried and stored exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use measure::reported::{metric, SCOPE};
use metering::meter::names;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use otlp::Signal;
use prost::Message;
use wal::Wal;

use crate::ledger::{Entries, Ledger};
use crate::record::Record;

/// The report of `entries`, counted from `entries.since` to `time_unix_nano`: per tenant, `agent_accepted_<items>`,
/// `agent_acked_<items>`, `dropped_<items>{reason}` and the measured meters.
pub fn request(entries: &Entries, time_unix_nano: u64) -> ExportMetricsServiceRequest {
    // tenant → meter → (dimensions, value) points
    type Points = Vec<(Vec<(String, String)>, i64)>;
    let mut by_tenant: BTreeMap<&str, BTreeMap<String, Points>> = BTreeMap::new();
    let books = [
        (names::AGENT_ACCEPTED, &entries.accepted),
        (names::AGENT_ACKED, &entries.acked),
        (names::DROPPED, &entries.dropped),
        ("", &entries.measured),
    ];
    for (prefix, counts) in books {
        for ((tenant, items, reason), n) in counts {
            let dims = if reason.is_empty() { vec![] } else { vec![("reason".to_owned(), reason.clone())] };
            let points = by_tenant.entry(tenant).or_default().entry(format!("{prefix}{items}")).or_default();
            points.push((dims, i64::try_from(*n).unwrap_or(i64::MAX)));
        }
    }
    let resource_metrics = by_tenant
        .into_iter()
        .map(|(tenant, meters)| ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: measure::TENANT_ATTRIBUTE.to_owned(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue(tenant.to_owned())) }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope { name: SCOPE.to_owned(), ..Default::default() }),
                metrics: meters
                    .into_iter()
                    .map(|(meter, points)| metric(&meter, unit(&meter), points, (entries.since, time_unix_nano)))
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

/// The unit a meter is reported in: seconds travel as integer nanoseconds.
fn unit(meter: &str) -> &'static str {
    if meter == "cpu_seconds" {
        "ns"
    } else {
        "1"
    }
}

/// Writes what the ledger counted since the last call into the WAL; when the
/// WAL cannot take it, the counts wait for the next call.
pub async fn write(ledger: &Ledger, wal: &Wal, boot: u64) {
    let entries = ledger.take();
    if entries.is_empty() {
        return;
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let body = request(&entries, now as u64).encode_to_vec();
    let record = Record {
        signal: Signal::Metrics,
        boot,
        accepted_millis: (now / 1_000_000) as u64,
        items: vec![],
        request: &body,
    };
    if let Err(e) = wal.append(record.encode()).await {
        tracing::warn!(error = %e, "the usage report waits for room in the WAL");
        ledger.restore(entries);
    }
}

/// Writes a report every `every` until the task is dropped.
pub async fn run(ledger: Arc<Ledger>, wal: Wal, boot: u64, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        write(&ledger, &wal, boot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Counts;
    use metering::meter::Catalog;

    #[test]
    fn the_collector_reads_back_what_the_agent_counted() {
        let entries = Entries {
            accepted: Counts::from([
                (("acme".into(), "spans", String::new()), 100),
                (("globex".into(), "log_records", String::new()), 4),
            ]),
            acked: Counts::from([(("acme".into(), "spans", String::new()), 60)]),
            dropped: Counts::from([(("acme".into(), "spans", "wal full".into()), 40)]),
            measured: Counts::from([
                (("acme".into(), "cpu_seconds", String::new()), 2_500_000_001),
                (("acme".into(), "net_tx_bytes", String::new()), 1500),
                (("unknown".into(), "tcp_connections", String::new()), 3),
            ]),
            // One second: 2.5 CPU-seconds in it is within the default bound.
            since: 1_000_000_000,
        };
        let mut req = request(&entries, 2_000_000_000);
        let now = time::OffsetDateTime::now_utc();
        let got = measure::reported::extract(&mut req, &Catalog::builtin(), now, Default::default());
        assert_eq!(got.rejected, 0, "{}", got.reason);
        let mut summary: Vec<_> = got
            .records
            .iter()
            .map(|r| (r.tenant.clone(), r.meter.clone(), r.value.to_string(), r.dimensions.get("reason").cloned()))
            .collect();
        summary.sort();
        assert_eq!(
            summary,
            [
                ("acme".into(), "agent_accepted_spans".into(), "100".into(), None),
                ("acme".into(), "agent_acked_spans".into(), "60".into(), None),
                ("acme".into(), "cpu_seconds".into(), "2.500000001".into(), None),
                ("acme".into(), "dropped_spans".into(), "40".into(), Some("wal full".into())),
                ("acme".into(), "net_tx_bytes".into(), "1500".into(), None),
                ("globex".into(), "agent_accepted_log_records".into(), "4".into(), None),
                ("unknown".into(), "tcp_connections".into(), "3".into(), None),
            ]
        );
    }
}
