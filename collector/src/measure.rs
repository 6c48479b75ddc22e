//! Turns a decoded OTLP request into usage records: the built-in meters per
//! tenant × service, in the UTC minute the collector received it.
//!
//! Usage is metered at receive time, not at the timestamps inside the data: a
//! sender's clock (or a sender backdating data into a sealed month) must not
//! decide which month is billed.

use std::collections::BTreeMap;

use metering::meter::MeterDefinition;
use metering::record::{validate_tenant, UsageRecord, MAX_DIMENSION_LEN};
use metering::sla::SlaRecord;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use rust_decimal::Decimal;
use time::OffsetDateTime;

use crate::otlp::decode::metric_points;
use crate::otlp::Payload;

/// The tenant of data whose sender and resource name none.
pub const UNKNOWN_TENANT: &str = "unknown";
/// The resource attribute naming the tenant.
pub const TENANT_ATTRIBUTE: &str = "tenant.id";

/// Who may name the tenant of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenancy {
    /// A tenant key: everything is this tenant's, whatever the data claims.
    Pinned(String),
    /// A trusted agent or anonymous mode: the resource's `tenant.id` decides.
    FromResource,
}

/// What [`measure`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Measured {
    /// Usage records, one per tenant × service × meter.
    pub records: Vec<UsageRecord>,
    /// Items refused (a malformed tenant id), for partial success.
    pub rejected: u64,
    /// Why, when `rejected` > 0.
    pub reason: String,
    /// Items whose resource claimed another tenant than the key's.
    pub mismatched: u64,
    /// SLA records (see [`crate::sla`]), per resource and route; the encoder merges equal keys.
    pub sla: Vec<SlaRecord>,
}

/// The string value of `key` among `attrs`; the last one wins when a key repeats.
pub fn attribute<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().rev().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    })
}

#[derive(Default)]
struct Totals(BTreeMap<(String, String, &'static str), u64>);

impl Totals {
    fn add(&mut self, tenant: &str, service: &str, meter: &'static str, n: u64) {
        if n > 0 {
            *self.0.entry((tenant.to_owned(), service.to_owned(), meter)).or_default() += n;
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary: an overlong service
/// name must not cost the tenant's usage, only the name's tail.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Measures `payload` for `tenancy`, at `now`, with the built-in meters.
pub fn measure(payload: &Payload, tenancy: &Tenancy, now: OffsetDateTime) -> Measured {
    measure_with(payload, tenancy, now, &[])
}

/// Measures `payload` for `tenancy`, at `now`, with the built-in meters and the custom `meters`.
pub fn measure_with(payload: &Payload, tenancy: &Tenancy, now: OffsetDateTime, meters: &[MeterDefinition]) -> Measured {
    let mut totals = Totals::default();
    let mut out = Measured::default();
    let resolve = |resource: Option<&Resource>, items: u64, out: &mut Measured| -> Option<(String, String)> {
        let attrs = resource.map(|r| r.attributes.as_slice()).unwrap_or_default();
        let service = truncate(attribute(attrs, "service.name").unwrap_or(""), MAX_DIMENSION_LEN).to_owned();
        let claimed = attribute(attrs, TENANT_ATTRIBUTE);
        let tenant = match tenancy {
            Tenancy::Pinned(t) => {
                if claimed.is_some_and(|c| c != t) {
                    out.mismatched += items;
                }
                t.clone()
            }
            Tenancy::FromResource => match claimed {
                None => UNKNOWN_TENANT.to_owned(),
                Some(c) => match validate_tenant(c) {
                    Ok(()) => c.to_owned(),
                    Err(e) => {
                        out.rejected += items;
                        out.reason = format!("{TENANT_ATTRIBUTE}: {e}");
                        return None;
                    }
                },
            },
        };
        Some((tenant, service))
    };
    match payload {
        Payload::Traces(req) => {
            for rs in &req.resource_spans {
                let spans: Vec<_> = rs.scope_spans.iter().flat_map(|s| &s.spans).collect();
                let Some((tenant, service)) = resolve(rs.resource.as_ref(), spans.len() as u64, &mut out) else { continue };
                let requests = spans
                    .iter()
                    .filter(|s| s.kind == SpanKind::Server as i32 || s.kind == SpanKind::Consumer as i32)
                    .count();
                totals.add(&tenant, &service, "spans", spans.len() as u64);
                totals.add(&tenant, &service, "span_bytes", spans.iter().map(|s| s.encoded_len() as u64).sum());
                totals.add(&tenant, &service, "requests", requests as u64);
                out.sla.extend(crate::sla::observe(spans.iter().copied(), &tenant, &service, now));
            }
        }
        Payload::Metrics(req) => {
            for rm in &req.resource_metrics {
                let points = metric_points(rm);
                let Some((tenant, service)) = resolve(rm.resource.as_ref(), points, &mut out) else { continue };
                totals.add(&tenant, &service, "metric_points", points);
            }
        }
        Payload::Logs(req) => {
            for rl in &req.resource_logs {
                let logs: Vec<_> = rl.scope_logs.iter().flat_map(|s| &s.log_records).collect();
                let Some((tenant, service)) = resolve(rl.resource.as_ref(), logs.len() as u64, &mut out) else { continue };
                totals.add(&tenant, &service, "log_records", logs.len() as u64);
                totals.add(&tenant, &service, "log_bytes", logs.iter().map(|l| l.encoded_len() as u64).sum());
            }
        }
    }
    out.records = totals
        .0
        .into_iter()
        .map(|((tenant, service, meter), n)| UsageRecord::new(&tenant, meter, now, Decimal::from(n)).with_service(&service))
        .collect();
    // The same tenants and services as the built-ins (refusals are already counted above).
    crate::custom::evaluate(payload, meters, now, |r| resolve(r, 0, &mut Measured::default())).add_to(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
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
                spans(vec![kv(TENANT_ATTRIBUTE, "first"), kv("service.name", "api"), kv(TENANT_ATTRIBUTE, "acme")], &[SpanKind::Server, SpanKind::Internal, SpanKind::Consumer]),
                spans(vec![kv("service.name", "web")], &[SpanKind::Client]),
                spans(vec![kv(TENANT_ATTRIBUTE, "bad tenant")], &[SpanKind::Server, SpanKind::Server]),
            ],
        });
        let m = measure(&req, &Tenancy::FromResource, now);
        assert_eq!((value(&m, "acme", "spans"), value(&m, "acme", "requests")), (Decimal::from(3), Decimal::from(2)));
        assert_eq!(value(&m, "first", "spans"), Decimal::ZERO);
        assert_eq!((value(&m, UNKNOWN_TENANT, "spans"), value(&m, UNKNOWN_TENANT, "requests")), (Decimal::from(1), Decimal::ZERO));
        assert_eq!(m.rejected, 2);
        assert_eq!(m.reason, "tenant.id: tenant id \"bad tenant\" contains ' '; allowed are letters, digits and . _ : @ -");
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
    fn overlong_service_names_are_cut_not_refused() {
        let long = "é".repeat(600);
        let req = Payload::Traces(ExportTraceServiceRequest { resource_spans: vec![spans(vec![kv("service.name", &long)], &[SpanKind::Server])] });
        let m = measure(&req, &Tenancy::FromResource, OffsetDateTime::now_utc());
        assert_eq!(m.records[0].service.len(), MAX_DIMENSION_LEN);
    }
}
