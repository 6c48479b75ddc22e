//! What the agent admits of an app's request, by the collectors' own rules: the reserved scope
//! refused, the sidecar's tenant stamped, resources whose tenant the collectors would refuse
//! taken out, and the rest measured as the collectors will, with their built-in meters and
//! custom meters. Apart from the WAL, so the rules can be tested on a request alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use measure::reported::SCOPE;
use measure::{attribute, Tenancy, TENANT_ATTRIBUTE};
use metering::meter::{names, MeterDefinition};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use otlp::decode::metric_points;
use otlp::view::RequestView;
use otlp::{Outcome, Payload, Request, Signal};
use prost::Message;

/// How the agent admits requests.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// Stamped as `tenant.id` on resources that name no tenant (sidecar mode).
    pub tenant: Option<String>,
    /// The collectors' custom meters (`--meters`, the same file): an item one of them refuses is
    /// in the app's partial success, as a collector would answer it.
    pub meters: Arc<[MeterDefinition]>,
}

impl Admission {
    /// The bytes to write to the WAL for `request` and what they hold, or the answer refusing it.
    pub(crate) fn admit(
        &self,
        request: Request,
        now: time::OffsetDateTime,
    ) -> Result<(bytes::Bytes, Admitted), Outcome> {
        match request {
            // Protobuf spans and logs with nothing to stamp or strip go to the WAL as they came:
            // measured in place, never decoded or encoded again.
            Request::Protobuf(p) if self.tenant.is_none() && p.signal() != Signal::Metrics => {
                match p.with_view(|v| Admitted::of(v, now, &self.meters)) {
                    Err(e) => Err(Outcome::Invalid(e.to_string())),
                    // An item a custom meter refuses stays as sent: the other meters count it.
                    Ok(admitted) if admitted.refused_whole == 0 => Ok((p.bytes().clone(), admitted)),
                    Ok(_) => self.rewrite(Request::Protobuf(p), now),
                }
            }
            other => self.rewrite(other, now),
        }
    }

    /// The request decoded and edited for the WAL: the reserved scope refused, the sidecar's
    /// tenant stamped, resources whose tenant the collectors would refuse taken out (so what
    /// is forwarded is what is acknowledged), then measured as the collectors will. The answer
    /// joins the reasons: of the items taken out, and of those a custom meter refuses (which stay).
    fn rewrite(&self, request: Request, now: time::OffsetDateTime) -> Result<(bytes::Bytes, Admitted), Outcome> {
        let mut payload = request.into_payload().map_err(|e| Outcome::Invalid(e.to_string()))?;
        let (reserved, reserved_why) = refuse_reserved_scope(&mut payload);
        if let Some(tenant) = &self.tenant {
            stamp(&mut payload, tenant);
        }
        let (malformed, malformed_why) = strip_refused_tenants(&mut payload);
        let request = match &payload {
            Payload::Traces(r) => r.encode_to_vec(),
            Payload::Metrics(r) => r.encode_to_vec(),
            Payload::Logs(r) => r.encode_to_vec(),
        };
        let mut admitted = Admitted::of(&payload, now, &self.meters);
        admitted.rejected += reserved + malformed;
        admitted.refused_whole += reserved + malformed;
        let custom_why = std::mem::take(&mut admitted.reason);
        admitted.reason = [reserved_why, malformed_why, custom_why]
            .into_iter()
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Ok((request.into(), admitted))
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

/// What the agent acknowledges of a request: its items per tenant, and the items it refuses,
/// found by the collectors' own measure over the same view, with the same custom meters. So the
/// agent acknowledges only what every collector accepts: a field a collector reads and cannot
/// parse (a malformed `http.route`, say) is refused here, to the app, before anything is
/// acknowledged, and an item a custom meter refuses is in the app's partial success.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Admitted {
    pub(crate) items: BTreeMap<String, u64>,
    pub(crate) rejected: u64,
    pub(crate) reason: String,
    /// Of `rejected`, the items refused whole, to be taken out of what is forwarded. The others
    /// were refused by a custom meter alone: they are forwarded, and the other meters count them.
    refused_whole: u64,
}

impl Admitted {
    fn of<R: RequestView + ?Sized>(request: &R, now: time::OffsetDateTime, meters: &[MeterDefinition]) -> Self {
        let measured = measure::measure_with(request, &Tenancy::FromResource, now, meters);
        let mut items = BTreeMap::new();
        for r in measured.records.iter().filter(|r| names::ITEMS.contains(&r.meter.as_str())) {
            let n = u64::try_from(r.value.trunc().mantissa()).unwrap_or(u64::MAX);
            if n > 0 {
                *items.entry(r.tenant.clone()).or_default() += n;
            }
        }
        Self { items, rejected: measured.rejected, reason: measured.reason, refused_whole: measured.refused_whole }
    }
}

/// Takes out the resources whose `tenant.id` the collectors refuse (see
/// [`measure::resource_tenant`]); returns their items and why.
fn strip_refused_tenants(payload: &mut Payload) -> (u64, String) {
    let mut refused = 0;
    let mut reason = String::new();
    let mut keep = |resource: &Option<Resource>, items: u64| {
        let claimed = resource.as_ref().and_then(|r| attribute(&r.attributes, TENANT_ATTRIBUTE));
        match measure::resource_tenant(claimed) {
            Ok(_) => true,
            Err(e) => {
                refused += items;
                reason = format!("{TENANT_ATTRIBUTE}: {e}");
                false
            }
        }
    };
    match payload {
        Payload::Traces(r) => {
            r.resource_spans.retain(|x| keep(&x.resource, x.scope_spans.iter().map(|s| s.spans.len() as u64).sum()))
        }
        Payload::Metrics(r) => r.resource_metrics.retain(|x| keep(&x.resource, metric_points(x))),
        Payload::Logs(r) => {
            r.resource_logs.retain(|x| keep(&x.resource, x.scope_logs.iter().map(|s| s.log_records.len() as u64).sum()))
        }
    }
    (refused, reason)
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

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
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
        let admitted = Admitted::of(&payload, now(), &[]);
        assert_eq!(admitted.items, BTreeMap::from([("acme".to_owned(), 7), ("unknown".to_owned(), 2)]));
        assert_eq!(admitted.rejected, 1, "the collectors refuse a malformed tenant id");
        assert!(admitted.reason.starts_with("tenant.id: tenant id \"bad tenant\" contains ' '"), "{}", admitted.reason);
        // What is refused is taken out of what is forwarded.
        let (refused, why) = strip_refused_tenants(&mut payload);
        assert_eq!((refused, why), (1, admitted.reason.clone()));
        assert_eq!(
            Admitted::of(&payload, now(), &[]),
            Admitted { items: admitted.items.clone(), ..Default::default() }
        );
        // Sidecar mode: resources naming no tenant get the agent's.
        stamp(&mut payload, "sidecar");
        assert_eq!(
            Admitted::of(&payload, now(), &[]).items,
            BTreeMap::from([("acme".to_owned(), 7), ("sidecar".to_owned(), 2)])
        );
    }

    #[test]
    fn apps_may_not_send_usage_reports() {
        let scope = |name: &str, points: usize| ScopeMetrics {
            scope: Some(InstrumentationScope { name: name.into(), ..Default::default() }),
            metrics: vec![metric("dropped_spans", "1", vec![(vec![], 5); points], (1, 2))],
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
        assert_eq!(Admitted::of(&payload, now(), &[]).items, BTreeMap::from([("acme".to_owned(), 3)]));
    }

    /// Four spans of `tenant`: `llm.tokens` 5, "lots" (not a number), none, and -3 (negative).
    fn llm_spans(tenant: Option<&str>) -> ResourceSpans {
        use any_value::Value::{IntValue, StringValue};
        let tokens = [Some(IntValue(5)), Some(StringValue("lots".into())), None, Some(IntValue(-3))];
        let spans = tokens
            .into_iter()
            .map(|t| Span {
                attributes: t
                    .map(|v| KeyValue {
                        key: "llm.tokens".into(),
                        value: Some(AnyValue { value: Some(v) }),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            })
            .collect();
        ResourceSpans {
            resource: resource(tenant),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }
    }

    fn protobuf(request: &ExportTraceServiceRequest) -> Request {
        Request::Protobuf(otlp::view::Protobuf::new(Signal::Traces, request.encode_to_vec().into()).unwrap())
    }

    #[test]
    fn items_a_custom_meter_refuses_are_in_the_answer_and_forwarded_as_sent() {
        let meters = metering::meter::definition::parse(
            "meters:\n  - {name: llm_tokens, signal: traces, aggregation: sum, attribute: llm.tokens}\n",
            "m.yaml".as_ref(),
        )
        .unwrap();
        let request = ExportTraceServiceRequest { resource_spans: vec![llm_spans(Some("acme"))] };
        let sent = request.encode_to_vec();
        let why = "custom meter llm_tokens: llm.tokens -3 is negative";

        // Without the meters file the agent knows nothing of them.
        let (_, admitted) = Admission::default().admit(protobuf(&request), now()).unwrap();
        assert_eq!((admitted.rejected, admitted.reason.as_str()), (0, ""));

        // With it, the two refused items are answered with the last reason, as a collector answers,
        // and every span is acknowledged and forwarded untouched: a custom meter refuses an item for
        // itself only.
        let admission = Admission { tenant: None, meters: meters.clone().into() };
        let (forwarded, admitted) = admission.admit(protobuf(&request), now()).unwrap();
        assert_eq!(forwarded, sent);
        assert_eq!(
            admitted,
            Admitted {
                items: BTreeMap::from([("acme".to_owned(), 4)]),
                rejected: 2,
                reason: why.to_owned(),
                refused_whole: 0
            }
        );

        // In sidecar mode, beside a resource refused whole: the reasons of both, and only that
        // resource is taken out.
        let request = ExportTraceServiceRequest { resource_spans: vec![spans(Some("bad tenant"), 1), llm_spans(None)] };
        let admission = Admission { tenant: Some("sidecar".into()), meters: meters.into() };
        let (forwarded, admitted) = admission.admit(protobuf(&request), now()).unwrap();
        assert_eq!(admitted.items, BTreeMap::from([("sidecar".to_owned(), 4)]));
        assert_eq!((admitted.rejected, admitted.refused_whole), (3, 1));
        assert!(admitted.reason.starts_with("tenant.id: tenant id \"bad tenant\" contains ' '"), "{}", admitted.reason);
        assert!(admitted.reason.ends_with(&format!("; {why}")), "{}", admitted.reason);
        let mut want = Payload::Traces(ExportTraceServiceRequest { resource_spans: vec![llm_spans(None)] });
        stamp(&mut want, "sidecar");
        assert_eq!(Payload::Traces(ExportTraceServiceRequest::decode(forwarded).unwrap()), want);
    }
}
