//! The agent's OTLP consumer: what apps send is written to the WAL (stamped
//! with the default tenant in sidecar mode) and acknowledged once it is there.
//! When the WAL is full, apps are told to retry, or the oldest waiting data is
//! dropped (and counted) to make room, per `--wal-full`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use measure::reported::SCOPE;
use measure::{attribute, TENANT_ATTRIBUTE, UNKNOWN_TENANT};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use otlp::decode::metric_points;
use otlp::view::{Attributes, MetricView, RequestView};
use otlp::{Consumer, Delivery, Grant, Outcome, Payload, Request, Signal};
use prost::Message;
use wal::{AppendError, Wal};

use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::record::Record;
use crate::ship::Backlog;

/// How long apps are told to wait when the WAL is full.
pub const FULL_RETRY_AFTER: Duration = Duration::from_secs(2);

/// What a full WAL does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhenFull {
    /// Apps are told to retry (gRPC UNAVAILABLE, HTTP 503): nothing is lost, apps buffer.
    Backpressure,
    /// The oldest data waiting in the WAL is dropped to make room, counted as `dropped_*` usage.
    DropOldest,
}

/// Takes requests from apps into the WAL.
pub struct Intake {
    wal: Wal,
    boot: u64,
    tenant: Option<String>,
    when_full: WhenFull,
    backlog: Arc<Backlog>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
}

impl Intake {
    /// An intake appending to `wal` for the process `boot`, stamping `tenant`
    /// on resources that name none.
    pub fn new(
        wal: Wal,
        boot: u64,
        tenant: Option<String>,
        when_full: WhenFull,
        backlog: Arc<Backlog>,
        ledger: Arc<Ledger>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { wal, boot, tenant, when_full, backlog, ledger, metrics }
    }

    async fn take(&self, delivery: Delivery) -> Outcome {
        let signal = delivery.request.signal();
        let (request, items, rejected, message) = match delivery.request {
            // Protobuf spans and logs with nothing to stamp go to the WAL as they came:
            // counted per tenant in place, never decoded or encoded again.
            Request::Protobuf(p) if self.tenant.is_none() && signal != Signal::Metrics => {
                match p.with_view(|v| items_by_tenant(v)) {
                    Ok(items) => (p.bytes().clone(), items, 0, String::new()),
                    Err(e) => return Outcome::Invalid(e.to_string()),
                }
            }
            other => {
                let mut payload = match other.into_payload() {
                    Ok(payload) => payload,
                    Err(e) => return Outcome::Invalid(e.to_string()),
                };
                let (rejected, message) = refuse_reserved_scope(&mut payload);
                if let Some(tenant) = &self.tenant {
                    stamp(&mut payload, tenant);
                }
                let request = match &payload {
                    Payload::Traces(r) => r.encode_to_vec(),
                    Payload::Metrics(r) => r.encode_to_vec(),
                    Payload::Logs(r) => r.encode_to_vec(),
                };
                (request.into(), items_by_tenant(&payload), rejected, message)
            }
        };
        let millis = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let record = Record {
            signal,
            boot: self.boot,
            accepted_millis: millis as u64,
            items: items.clone().into_iter().collect(),
            request: &request,
        }
        .encode();
        let total: u64 = items.values().sum();
        if total == 0 {
            // Nothing to meter or forward (an empty export, or only the reserved scope).
            return Outcome::Accepted { rejected, message };
        }
        let mut record = Some(record);
        loop {
            // Only drop-oldest appends again after a refusal; it alone needs a copy.
            let attempt = match self.when_full {
                WhenFull::DropOldest => record.clone(),
                WhenFull::Backpressure => record.take(),
            };
            match self.wal.append(attempt.expect("appended once, or kept for drop-oldest")).await {
                Ok(()) => {
                    self.metrics.count_items(signal.name(), "accepted", total);
                    self.ledger.accepted(signal, &items);
                    return Outcome::Accepted { rejected, message };
                }
                Err(e) if e.is_full() && self.when_full == WhenFull::DropOldest => {
                    let Some(dropped) = self.backlog.drop_oldest(&self.wal) else {
                        return self.refuse(
                            signal,
                            total,
                            AppendError::Full { pending: self.wal.pending_bytes(), max: 0 },
                        );
                    };
                    for (sig, by_tenant) in dropped {
                        self.metrics.count_items(sig.name(), "dropped", by_tenant.values().sum());
                        self.ledger.dropped(sig, "wal full", &by_tenant);
                    }
                    tracing::warn!("WAL full: dropped its oldest waiting segment to take new data");
                }
                Err(e) => return self.refuse(signal, total, e),
            }
        }
    }

    fn refuse(&self, signal: otlp::Signal, items: u64, e: AppendError) -> Outcome {
        self.metrics.count_items(signal.name(), "refused", items);
        if !e.is_full() {
            tracing::error!(error = %e, "writing the WAL failed; apps are told to retry");
        }
        Outcome::Unavailable { retry_after: FULL_RETRY_AFTER, message: format!("the agent cannot take data now: {e}") }
    }
}

impl Consumer for Intake {
    /// Apps on the host send without keys; the agent names its own batches, so an app's
    /// `tally-batch` is refused.
    fn authenticate(&self, _key: Option<&str>) -> Result<Grant, String> {
        Ok(Grant::default())
    }

    fn consume(&self, delivery: Delivery) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(self.take(delivery))
    }
}

/// Apps may not send metrics in the scope of usage reports: the collectors
/// would take them for the agent's own accounting. They are refused (partial success).
fn refuse_reserved_scope(payload: &mut Payload) -> (u64, String) {
    let Payload::Metrics(request) = payload else { return (0, String::new()) };
    let mut rejected = 0;
    for rm in &mut request.resource_metrics {
        let before = metric_points(rm);
        rm.scope_metrics.retain(|s| s.scope.as_ref().is_none_or(|sc| sc.name != SCOPE));
        rejected += before - metric_points(rm);
    }
    let message = if rejected > 0 {
        format!("the instrumentation scope {SCOPE:?} is reserved for Tally agents' usage reports")
    } else {
        String::new()
    };
    (rejected, message)
}

/// Items per tenant as the collectors will attribute them: the resource's
/// `tenant.id` (last wins), else `unknown`.
fn items_by_tenant<R: RequestView + ?Sized>(request: &R) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut add = |attrs: &R::Resource, n: u64| {
        if n > 0 {
            let tenant = attrs
                .string(TENANT_ATTRIBUTE)
                .filter(|t| metering::record::validate_tenant(t).is_ok())
                .unwrap_or(UNKNOWN_TENANT);
            *out.entry(tenant.to_owned()).or_default() += n;
        }
    };
    request.for_each_resource_spans(|r, spans| add(r, spans.len() as u64));
    request.for_each_resource_logs(|r, logs| add(r, logs.len() as u64));
    request.for_each_resource_metrics(|r, metrics| add(r, metrics.iter().map(|m| m.data_points()).sum()));
    out
}

/// Adds `tenant.id = tenant` to every resource that names no tenant.
fn stamp(payload: &mut Payload, tenant: &str) {
    let fill = |resource: &mut Option<Resource>| {
        let r = resource.get_or_insert_with(Resource::default);
        if attribute(&r.attributes, TENANT_ATTRIBUTE).is_none() {
            r.attributes.push(KeyValue {
                key: TENANT_ATTRIBUTE.to_owned(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue(tenant.to_owned())) }),
                ..Default::default()
            });
        }
    };
    match payload {
        Payload::Traces(r) => r.resource_spans.iter_mut().for_each(|x| fill(&mut x.resource)),
        Payload::Metrics(r) => r.resource_metrics.iter_mut().for_each(|x| fill(&mut x.resource)),
        Payload::Logs(r) => r.resource_logs.iter_mut().for_each(|x| fill(&mut x.resource)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use measure::reported::metric;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn resource(tenant: Option<&str>) -> Option<Resource> {
        let attributes = tenant
            .map(|t| KeyValue {
                key: TENANT_ATTRIBUTE.into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue(t.into())) }),
                ..Default::default()
            })
            .into_iter()
            .collect();
        Some(Resource { attributes, ..Default::default() })
    }

    fn spans(tenant: Option<&str>, n: usize) -> ResourceSpans {
        ResourceSpans {
            resource: resource(tenant),
            scope_spans: vec![ScopeSpans { spans: vec![Span::default(); n], ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn items_are_counted_per_tenant_as_collectors_attribute_them() {
        let mut payload = Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![
                spans(Some("acme"), 3),
                spans(None, 2),
                spans(Some("bad tenant"), 1),
                spans(Some("acme"), 4),
            ],
        });
        assert_eq!(items_by_tenant(&payload), BTreeMap::from([("acme".to_owned(), 7), ("unknown".to_owned(), 3)]));
        // Sidecar mode: resources naming no tenant get the agent's.
        stamp(&mut payload, "sidecar");
        assert_eq!(
            items_by_tenant(&payload),
            BTreeMap::from([("acme".to_owned(), 7), ("sidecar".to_owned(), 2), ("unknown".to_owned(), 1)])
        );
    }

    #[test]
    fn apps_may_not_send_usage_reports() {
        let scope = |name: &str, points: usize| ScopeMetrics {
            scope: Some(InstrumentationScope { name: name.into(), ..Default::default() }),
            metrics: vec![metric("dropped_spans", "1", vec![(vec![], 5); points], 0)],
            ..Default::default()
        };
        let mut payload = Payload::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(Some("acme")),
                scope_metrics: vec![scope(SCOPE, 2), scope("app", 3)],
                ..Default::default()
            }],
        });
        let (rejected, message) = refuse_reserved_scope(&mut payload);
        assert_eq!(
            (rejected, message.as_str()),
            (2, "the instrumentation scope \"tally.usage\" is reserved for Tally agents' usage reports")
        );
        assert_eq!(items_by_tenant(&payload), BTreeMap::from([("acme".to_owned(), 3)]));
    }
}
