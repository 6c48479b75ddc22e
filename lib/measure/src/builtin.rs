//! Turns an OTLP request into usage records: the built-in meters per
//! tenant × service, in the UTC minute the collector received it. Written
//! once over [`RequestView`], so protobuf read in place and prost types
//! (OTLP/JSON) are metered by the same code.
//!
//! Usage is metered at receive time, not at the timestamps inside the data: a
//! sender's clock (or a sender backdating data into a sealed month) must not
//! decide which month is billed.

use std::collections::BTreeMap;

use metering::meter::{names, MeterDefinition};
use metering::record::{UsageRecord, MAX_DIMENSION_LEN};
use otlp::view::{Attributes, LogView, MetricView, RequestView, SpanView};
use otlp::{DecodeError, Request, Signal};
use rust_decimal::Decimal;
use time::OffsetDateTime;

use crate::{truncate, Measured, Tenancy, TENANT_ATTRIBUTE};

#[derive(Default)]
struct Totals(BTreeMap<(String, String, &'static str), u64>);

impl Totals {
    fn add(&mut self, tenant: &str, service: &str, meter: &'static str, n: u64) {
        if n > 0 {
            *self.0.entry((tenant.to_owned(), service.to_owned(), meter)).or_default() += n;
        }
    }
}

/// Measures `request` for `tenancy`, at `now`, with the built-in meters.
pub fn measure<R: RequestView + ?Sized>(request: &R, tenancy: &Tenancy, now: OffsetDateTime) -> Measured {
    measure_with(request, tenancy, now, &[])
}

/// Measures a request as the receiver delivered it: protobuf in place (a
/// malformed field metering reads is the error), JSON from its prost types.
pub fn measure_request(
    request: &Request,
    tenancy: &Tenancy,
    now: OffsetDateTime,
    meters: &[MeterDefinition],
) -> Result<Measured, DecodeError> {
    match request {
        Request::Protobuf(p) => p.with_view(|view| measure_with(view, tenancy, now, meters)),
        Request::Decoded(p) => Ok(measure_with(p, tenancy, now, meters)),
    }
}

/// Measures `request` for `tenancy`, at `now`, with the built-in meters and the custom `meters`.
pub fn measure_with<R: RequestView + ?Sized>(
    request: &R,
    tenancy: &Tenancy,
    now: OffsetDateTime,
    meters: &[MeterDefinition],
) -> Measured {
    let mut totals = Totals::default();
    let mut out = Measured::default();
    let mut custom = crate::custom::Evaluator::new(request.signal(), meters);
    let resolve = |attrs: &R::Resource, items: u64, out: &mut Measured| -> Option<(String, String)> {
        let service = truncate(attrs.string("service.name").unwrap_or(""), MAX_DIMENSION_LEN).to_owned();
        let claimed = attrs.string(TENANT_ATTRIBUTE);
        let tenant = match tenancy {
            Tenancy::Pinned(t) => {
                if claimed.is_some_and(|c| c != t) {
                    out.mismatched += items;
                }
                t.clone()
            }
            Tenancy::FromResource => match crate::resource_tenant(claimed) {
                Ok(t) => t.to_owned(),
                Err(e) => {
                    out.rejected += items;
                    out.refused_whole += items;
                    out.reason = format!("{TENANT_ATTRIBUTE}: {e}");
                    return None;
                }
            },
        };
        Some((tenant, service))
    };
    match request.signal() {
        Signal::Traces => request.for_each_resource_spans(|resource, spans| {
            let Some(who) = resolve(resource, spans.len() as u64, &mut out) else { return };
            let (tenant, service) = (who.0.as_str(), who.1.as_str());
            let requests = spans.iter().filter(|s| crate::sla::is_request(**s)).count();
            totals.add(tenant, service, names::SPANS, spans.len() as u64);
            totals.add(tenant, service, names::SPAN_BYTES, spans.iter().map(|s| s.encoded_bytes()).sum());
            totals.add(tenant, service, names::REQUESTS, requests as u64);
            out.sla.extend(crate::sla::observe(spans.iter().copied(), tenant, service, now));
            custom.items(resource, spans.iter().map(|s| s.attributes()), &who);
        }),
        Signal::Metrics => request.for_each_resource_metrics(|resource, metrics| {
            let points = metrics.iter().map(|m| m.data_points()).sum();
            let Some(who) = resolve(resource, points, &mut out) else { return };
            totals.add(&who.0, &who.1, names::METRIC_POINTS, points);
            custom.metrics(resource, metrics, &who);
        }),
        Signal::Logs => request.for_each_resource_logs(|resource, logs| {
            let Some(who) = resolve(resource, logs.len() as u64, &mut out) else { return };
            totals.add(&who.0, &who.1, names::LOG_RECORDS, logs.len() as u64);
            totals.add(&who.0, &who.1, names::LOG_BYTES, logs.iter().map(|l| l.encoded_bytes()).sum());
            custom.items(resource, logs.iter().map(|l| l.attributes()), &who);
        }),
    }
    out.records = totals
        .0
        .into_iter()
        .map(|((tenant, service, meter), n)| {
            UsageRecord::new(&tenant, meter, now, Decimal::from(n)).with_service(&service)
        })
        .collect();
    // The same tenants and services as the built-ins (refusals are already counted above).
    custom.finish(now).add_to(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UNKNOWN_TENANT;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use otlp::Payload;
    use prost::Message;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            ..Default::default()
        }
    }

    fn spans(attrs: Vec<KeyValue>, kinds: &[SpanKind]) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource { attributes: attrs, ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                spans: kinds.iter().map(|k| Span { kind: *k as i32, name: "x".into(), ..Default::default() }).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn value(m: &Measured, tenant: &str, meter: &str) -> Decimal {
        m.records.iter().filter(|r| r.tenant == tenant && r.meter == meter).map(|r| r.value).sum()
    }

    #[test]
    fn tenants_services_requests_and_rejections() {
        let now = OffsetDateTime::now_utc();
        let req = Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![
                // Duplicate keys: the last one wins, here as everywhere.
                spans(
                    vec![kv(TENANT_ATTRIBUTE, "first"), kv("service.name", "api"), kv(TENANT_ATTRIBUTE, "acme")],
                    &[SpanKind::Server, SpanKind::Internal, SpanKind::Consumer],
                ),
                spans(vec![kv("service.name", "web")], &[SpanKind::Client]),
                spans(vec![kv(TENANT_ATTRIBUTE, "bad tenant")], &[SpanKind::Server, SpanKind::Server]),
            ],
        });
        let m = measure(&req, &Tenancy::FromResource, now);
        assert_eq!((value(&m, "acme", "spans"), value(&m, "acme", "requests")), (Decimal::from(3), Decimal::from(2)));
        assert_eq!(value(&m, "first", "spans"), Decimal::ZERO);
        assert_eq!(
            (value(&m, UNKNOWN_TENANT, "spans"), value(&m, UNKNOWN_TENANT, "requests")),
            (Decimal::from(1), Decimal::ZERO)
        );
        assert_eq!((m.rejected, m.refused_whole), (2, 2));
        assert_eq!(
            m.reason,
            "tenant.id: tenant id \"bad tenant\" contains ' '; allowed are letters, digits and . _ : @ -"
        );
        assert!(m.records.iter().all(|r| r.time == now));
        assert_eq!(m.records.iter().find(|r| r.tenant == "acme").unwrap().service, "api");
        let span_bytes = value(&m, "acme", "span_bytes");
        let one = Span { kind: SpanKind::Server as i32, name: "x".into(), ..Default::default() }.encoded_len();
        // Every span here encodes to the same length (name and kind only).
        assert_eq!(span_bytes, Decimal::from(3 * one as u64));

        // A tenant key pins everything and counts what claimed otherwise.
        let m = measure(&req, &Tenancy::Pinned("initech".into()), now);
        assert_eq!(value(&m, "initech", "spans"), Decimal::from(6));
        assert_eq!((m.rejected, m.mismatched), (0, 5));
    }

    #[test]
    fn an_item_a_custom_meter_refuses_is_rejected_not_refused_whole() {
        let meters = metering::meter::definition::parse(
            "meters:\n  - {name: llm_tokens, signal: traces, aggregation: sum, attribute: llm.tokens}\n",
            "m.yaml".as_ref(),
        )
        .unwrap();
        let mut acme = spans(vec![kv(TENANT_ATTRIBUTE, "acme")], &[SpanKind::Server, SpanKind::Server]);
        acme.scope_spans[0].spans[0].attributes = vec![kv("llm.tokens", "lots")];
        let req = Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![spans(vec![kv(TENANT_ATTRIBUTE, "bad tenant")], &[SpanKind::Server]), acme],
        });
        let m = measure_with(&req, &Tenancy::FromResource, OffsetDateTime::now_utc(), &meters);
        assert_eq!((m.rejected, m.refused_whole), (2, 1));
        assert_eq!(m.reason, "custom meter llm_tokens: llm.tokens \"lots\" is not a decimal number");
        // The other meters count the item the custom meter refused.
        assert_eq!((value(&m, "acme", "spans"), value(&m, "acme", "requests")), (Decimal::from(2), Decimal::from(2)));
    }

    #[test]
    fn overlong_service_names_are_cut_not_refused() {
        let long = "é".repeat(600);
        let req = Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![spans(vec![kv("service.name", &long)], &[SpanKind::Server])],
        });
        let m = measure(&req, &Tenancy::FromResource, OffsetDateTime::now_utc());
        assert_eq!(m.records[0].service.len(), MAX_DIMENSION_LEN);
    }
}
