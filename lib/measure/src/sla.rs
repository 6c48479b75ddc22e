//! SLA observations from spans: per route, the requests, errors, latencies and
//! exemplar traces of one resource's spans, as [`SlaRecord`]s.
//!
//! The rules:
//! - a request is a SERVER or CONSUMER span (as the `requests` meter counts);
//! - it failed when its status is ERROR, or its HTTP status is 500 or more:
//!   `http.response.status_code`, else the pre-1.23 `http.status_code` (a
//!   sender with `OTEL_SEMCONV_STABILITY_OPT_IN=http/dup` sends both; the span
//!   counts once either way), as an int or a string;
//! - latency is end − start, 0 when the end is before the start;
//! - the route is `http.route` (empty when absent), cut to
//!   [`MAX_DIMENSION_LEN`] bytes on a character boundary;
//! - a repeated attribute key: the last one wins.
//!
//! Records carry `when` (the receive time), like usage: a sender's clock must
//! not choose the window a request is reported in.

use std::collections::BTreeMap;

use metering::record::MAX_DIMENSION_LEN;
use metering::sla::SlaRecord;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use time::OffsetDateTime;

use crate::truncate;
use otlp::view::{AnyValue, Attributes, SpanView};

/// The HTTP status attribute of current semantic conventions.
pub const HTTP_STATUS: &str = "http.response.status_code";
/// Its name before semantic conventions 1.23.
pub const HTTP_STATUS_OLD: &str = "http.status_code";
/// The route attribute.
pub const HTTP_ROUTE: &str = "http.route";

/// True for the spans the `requests` meter counts.
pub fn is_request<S: SpanView + ?Sized>(span: &S) -> bool {
    span.kind() == SpanKind::Server as i32 || span.kind() == SpanKind::Consumer as i32
}

/// The integer value of `key` (int, or a string of digits); the last one wins.
fn int_attribute<A: Attributes + ?Sized>(attrs: &A, key: &str) -> Option<i64> {
    match attrs.get(key)? {
        AnyValue::Int(n) => Some(n),
        AnyValue::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether a request span failed (see the module's rules).
pub fn is_error<S: SpanView + ?Sized>(span: &S) -> bool {
    if span.status_code() == StatusCode::Error as i32 {
        return true;
    }
    let attrs = span.attributes();
    let status = int_attribute(attrs, HTTP_STATUS).or_else(|| int_attribute(attrs, HTTP_STATUS_OLD));
    status.is_some_and(|code| code >= 500)
}

/// A 16-byte trace id as 32 lowercase hex digits, written into `out` (no allocation:
/// this runs for every request span).
fn hex<'a>(id: &[u8; 16], out: &'a mut [u8; 32]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in id.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    std::str::from_utf8(out).expect("hex digits are ASCII")
}

/// One record per route seen among `spans`' requests, in route order, all at `when`.
/// Spans that are not requests are ignored; no requests, no records.
pub fn observe<'a, S: SpanView + 'a>(
    spans: impl Iterator<Item = &'a S>,
    tenant: &str,
    service: &str,
    when: OffsetDateTime,
) -> Vec<SlaRecord> {
    let mut routes: BTreeMap<&str, SlaRecord> = BTreeMap::new();
    for span in spans.filter(|s| is_request(*s)) {
        let route = truncate(span.attributes().string(HTTP_ROUTE).unwrap_or(""), MAX_DIMENSION_LEN);
        let latency = span.end_time_unix_nano().saturating_sub(span.start_time_unix_nano());
        // A trace id that is not 16 bytes gives a string the record refuses as an exemplar.
        let mut buf = [0u8; 32];
        let trace_id = match <&[u8; 16]>::try_from(span.trace_id()) {
            Ok(id) => hex(id, &mut buf),
            Err(_) => "",
        };
        routes.entry(route).or_insert_with(|| SlaRecord::new(tenant, service, route, when)).observe(
            latency,
            is_error(span),
            trace_id,
        );
    }
    routes.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }
    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }
    fn i(v: i64) -> any_value::Value {
        any_value::Value::IntValue(v)
    }

    fn span(kind: SpanKind, latency_ms: u64, id: u8, attrs: Vec<KeyValue>) -> Span {
        Span {
            kind: kind as i32,
            trace_id: vec![id; 16],
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + latency_ms * 1_000_000,
            attributes: attrs,
            ..Default::default()
        }
    }

    fn errored(mut sp: Span) -> Span {
        sp.status = Some(Status { code: StatusCode::Error as i32, message: "boom".into() });
        sp
    }

    const WHEN: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    #[test]
    fn errors_by_status_or_http_code_counted_once() {
        let route = || kv(HTTP_ROUTE, s("/a"));
        let spans = [
            span(SpanKind::Server, 10, 1, vec![route()]),
            errored(span(SpanKind::Server, 20, 2, vec![route()])),
            span(SpanKind::Server, 30, 3, vec![route(), kv(HTTP_STATUS, i(503))]),
            span(SpanKind::Consumer, 40, 4, vec![route(), kv(HTTP_STATUS_OLD, s("500"))]),
            // http/dup: both keys, and an ERROR status too: one error.
            errored(span(SpanKind::Server, 50, 5, vec![route(), kv(HTTP_STATUS, i(502)), kv(HTTP_STATUS_OLD, i(502))])),
            span(SpanKind::Server, 60, 6, vec![route(), kv(HTTP_STATUS, s("404"))]),
            // The new key decides when both are there.
            span(SpanKind::Server, 70, 7, vec![route(), kv(HTTP_STATUS, i(200)), kv(HTTP_STATUS_OLD, i(500))]),
            // The last of a repeated key wins.
            span(SpanKind::Server, 80, 8, vec![route(), kv(HTTP_STATUS, i(500)), kv(HTTP_STATUS, i(200))]),
        ];
        let records = observe(spans.iter(), "acme", "api", WHEN);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!((r.requests, r.errors, r.latency.count()), (8, 4, 8));
        assert_eq!((r.tenant.as_str(), r.service.as_str(), r.route.as_str(), r.time), ("acme", "api", "/a", WHEN));
    }

    #[test]
    fn non_requests_are_ignored_and_routes_split() {
        let spans = [
            span(SpanKind::Internal, 10, 1, vec![]),
            errored(span(SpanKind::Client, 10, 2, vec![kv(HTTP_ROUTE, s("/a"))])),
            span(SpanKind::Producer, 10, 3, vec![]),
            span(SpanKind::Server, 10, 4, vec![kv(HTTP_ROUTE, s("/first")), kv(HTTP_ROUTE, s("/b"))]),
            span(SpanKind::Server, 10, 5, vec![]),
        ];
        let records = observe(spans.iter(), "acme", "api", WHEN);
        let routes: Vec<_> = records.iter().map(|r| (r.route.as_str(), r.requests, r.errors)).collect();
        assert_eq!(routes, [("", 1, 0), ("/b", 1, 0)]);
        assert!(observe(spans[..3].iter(), "acme", "api", WHEN).is_empty());
    }

    #[test]
    fn latencies_exemplars_and_long_routes() {
        let long = "é".repeat(600);
        let mut backwards = span(SpanKind::Server, 0, 9, vec![kv(HTTP_ROUTE, s(&long))]);
        backwards.end_time_unix_nano = 1; // before the start: latency 0
        let mut no_trace = span(SpanKind::Server, 900, 0, vec![kv(HTTP_ROUTE, s(&long))]);
        no_trace.trace_id = vec![1, 2];
        let mut spans = vec![backwards, no_trace];
        for (n, ms) in [(1u8, 100u64), (2, 500), (3, 300), (4, 400)] {
            spans.push(span(SpanKind::Server, ms, n, vec![kv(HTTP_ROUTE, s(&long))]));
        }
        spans.push(errored(span(SpanKind::Server, 5, 7, vec![kv(HTTP_ROUTE, s(&long))])));
        let records = observe(spans.iter(), "acme", "api", WHEN);
        let r = &records[0];
        assert_eq!(r.route.len(), MAX_DIMENSION_LEN);
        assert_eq!((r.requests, r.errors), (7, 1));
        assert_eq!(r.latency.quantile(0.0), Some(0));
        // The three slowest with a trace id, then the failed one; the 900 ms span had none.
        let kept: Vec<_> =
            r.exemplars.iter().map(|e| (e.latency_ns / 1_000_000, e.error, e.trace_id[..2].to_owned())).collect();
        assert_eq!(
            kept,
            [(500, false, "02".into()), (400, false, "04".into()), (300, false, "03".into()), (5, true, "07".into())]
        );
        assert!(r.latency.quantile(1.0).unwrap().abs_diff(900_000_000) * 256 <= 900_000_000);
    }
}
