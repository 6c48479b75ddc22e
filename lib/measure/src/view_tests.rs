//! The view meters exactly as prost does: the same records, SLA aggregates,
//! refusals and mismatches, over hand-made, SDK-shaped and randomized
//! requests; malformed bytes are an error, never a panic or a miscount.

use std::path::Path;

use bytes::Bytes;
use metering::meter::MeterDefinition;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point, metric, number_data_point, ExponentialHistogram, ExponentialHistogramDataPoint,
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use time::OffsetDateTime;

use crate::{measure_with, Measured, Tenancy};
use otlp::view::Protobuf;
use otlp::{Payload, Signal};

const BUILT_IN: [&str; 6] = ["spans", "span_bytes", "requests", "metric_points", "log_records", "log_bytes"];
const WHEN: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

fn meters() -> Vec<MeterDefinition> {
    let yaml = "meters:
  - {name: llm_tokens, signal: traces, aggregation: sum, attribute: llm.tokens, filter: {llm.vendor: openai}, group_by: [model]}
  - {name: llm_calls, signal: traces, aggregation: count, filter: {llm.vendor: openai}}
  - {name: llm_peak, signal: traces, aggregation: max, attribute: llm.tokens}
  - {name: llm_users, signal: traces, aggregation: unique_count, attribute: user.id, group_by: [http.route]}
  - {name: log_users, signal: logs, aggregation: unique_count, attribute: user.id}
  - {name: log_tokens, signal: logs, aggregation: sum, attribute: llm.tokens, group_by: [service.name]}
  - {name: queue_peak, signal: metrics, aggregation: max, filter: {metric.name: queue.depth}, group_by: [queue]}
  - {name: point_sum, signal: metrics, aggregation: sum, group_by: [metric.name]}
  - {name: points_by_model, signal: metrics, aggregation: count, group_by: [model, metric.name]}
";
    metering::meter::definition::parse(yaml, Path::new("m.yaml")).unwrap()
}

fn encode(payload: &Payload) -> Vec<u8> {
    match payload {
        Payload::Traces(r) => r.encode_to_vec(),
        Payload::Metrics(r) => r.encode_to_vec(),
        Payload::Logs(r) => r.encode_to_vec(),
    }
}

/// Metering over the view of `bytes`, or the error.
fn via_view(signal: Signal, bytes: &[u8], tenancy: &Tenancy, meters: &[MeterDefinition]) -> Result<Measured, String> {
    let request = Protobuf::new(signal, Bytes::copy_from_slice(bytes)).map_err(|e| e.to_string())?;
    request.with_view(|view| measure_with(view, tenancy, WHEN, meters)).map_err(|e| e.to_string())
}

/// Metering over prost's decoding of `bytes`, or the error.
fn via_prost(signal: Signal, bytes: &[u8], tenancy: &Tenancy, meters: &[MeterDefinition]) -> Result<Measured, String> {
    let payload = otlp::decode(signal, otlp::Encoding::Protobuf, bytes).map_err(|e| e.to_string())?;
    Ok(measure_with(&payload, tenancy, WHEN, meters))
}

/// Both ways agree on `payload`, for both tenancies, and on its item count.
/// Returns what was compared, pinned to no tenant.
fn assert_same(payload: &Payload) -> Measured {
    let bytes = encode(payload);
    let defs = meters();
    let mut seen = Measured::default();
    for tenancy in [Tenancy::Pinned("acme".into()), Tenancy::FromResource] {
        let view = via_view(payload.signal(), &bytes, &tenancy, &defs).unwrap();
        let prost = via_prost(payload.signal(), &bytes, &tenancy, &defs).unwrap();
        assert_eq!(view, prost, "{tenancy:?}");
        // And measuring the prost types directly is the same thing.
        assert_eq!(prost, measure_with(payload, &tenancy, WHEN, &defs));
        seen.mismatched += view.mismatched;
        seen.rejected = view.rejected;
        seen.records = view.records;
        seen.sla = view.sla;
    }
    let framed = Protobuf::new(payload.signal(), Bytes::from(bytes)).unwrap();
    assert_eq!(framed.items(), payload.items());
    seen
}

/// A small deterministic generator (xorshift64*): the tests need variety, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn kv(key: &str, value: Option<any_value::Value>) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value }), ..Default::default() }
}

fn s(v: &str) -> Option<any_value::Value> {
    Some(any_value::Value::StringValue(v.into()))
}

fn value(rng: &mut Rng) -> Option<any_value::Value> {
    use any_value::Value::*;
    Some(match rng.below(14) {
        0 => return None,
        1 => BoolValue(rng.chance(50)),
        2 => IntValue(*rng.pick(&[0, 7, 200, 404, 500, 503, -3, i64::MAX])),
        3 => DoubleValue(*rng.pick(&[0.1, 0.25, 2.5, 1e-300, -1.5, f64::NAN, f64::INFINITY, 1e30])),
        4 => BytesValue(vec![1, 2, 3]),
        5 => {
            ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue { values: vec![AnyValue { value: s("x") }] })
        }
        6 => KvlistValue(KeyValueList { values: vec![kv("k", s("v"))] }),
        7 => StringValueStrindex(3),
        _ => StringValue(
            rng.pick(&[
                "openai",
                "gpt",
                "500",
                " 503 ",
                "200",
                "/a",
                "/b",
                "u1",
                "",
                "12.5",
                "0.0000000001",
                "x y",
                "é",
            ])
            .to_string(),
        ),
    })
}

const KEYS: [&str; 10] = [
    "http.route",
    "http.response.status_code",
    "http.status_code",
    "llm.tokens",
    "llm.vendor",
    "model",
    "user.id",
    "queue",
    "other",
    "service.name",
];

fn attributes(rng: &mut Rng, max: u64) -> Vec<KeyValue> {
    (0..rng.below(max + 1))
        .map(|_| {
            let key = *rng.pick(&KEYS);
            if rng.chance(3) {
                KeyValue { key: key.into(), value: None, ..Default::default() }
            } else {
                kv(key, value(rng))
            }
        })
        .collect()
}

fn resource(rng: &mut Rng) -> Option<Resource> {
    if rng.chance(10) {
        return None;
    }
    let mut attributes = attributes(rng, 3);
    for _ in 0..rng.below(3) {
        let tenant = *rng.pick(&["acme", "initech", "bad tenant", "globex", ""]);
        attributes.push(kv("tenant.id", if rng.chance(10) { Some(any_value::Value::IntValue(5)) } else { s(tenant) }));
    }
    if rng.chance(80) {
        let service = *rng.pick(&["api", "web", "worker"]);
        attributes.push(kv("service.name", s(service)));
    }
    if rng.chance(30) {
        attributes.push(kv("telemetry.sdk.language", s("python")));
    }
    let n = attributes.len();
    attributes.rotate_left(rng.below(n as u64 + 1) as usize % n.max(1));
    Some(Resource { attributes, ..Default::default() })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "opentelemetry.instrumentation.flask".into(),
        version: "0.48b0".into(),
        ..Default::default()
    })
}

fn span(rng: &mut Rng) -> Span {
    let start = rng.below(1 << 40);
    Span {
        trace_id: (0..*rng.pick(&[16u64, 16, 16, 0, 8])).map(|_| rng.below(256) as u8).collect(),
        span_id: (0..8).map(|_| rng.below(256) as u8).collect(),
        parent_span_id: if rng.chance(50) { vec![9; 8] } else { vec![] },
        name: "GET /items/{id}".into(),
        kind: rng.below(7) as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: if rng.chance(10) { start / 2 } else { start + rng.below(1 << 32) },
        attributes: attributes(rng, 8),
        events: if rng.chance(20) {
            vec![Event { name: "exception".into(), attributes: attributes(rng, 2), ..Default::default() }]
        } else {
            vec![]
        },
        links: if rng.chance(10) {
            vec![Link { trace_id: vec![1; 16], span_id: vec![2; 8], ..Default::default() }]
        } else {
            vec![]
        },
        status: match rng.below(4) {
            0 => None,
            c => Some(Status { code: c as i32 - 1, message: if c == 3 { "boom".into() } else { String::new() } }),
        },
        flags: 0x100,
        ..Default::default()
    }
}

fn traces(rng: &mut Rng) -> Payload {
    let resource_spans = (0..rng.below(4) + 1)
        .map(|_| ResourceSpans {
            resource: resource(rng),
            scope_spans: (0..rng.below(3))
                .map(|_| ScopeSpans {
                    scope: scope(),
                    spans: (0..rng.below(12)).map(|_| span(rng)).collect(),
                    ..Default::default()
                })
                .collect(),
            schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
        })
        .collect();
    Payload::Traces(ExportTraceServiceRequest { resource_spans })
}

fn number_points(rng: &mut Rng) -> Vec<NumberDataPoint> {
    (0..rng.below(4))
        .map(|_| NumberDataPoint {
            attributes: attributes(rng, 3),
            time_unix_nano: 1,
            value: match rng.below(4) {
                0 => None,
                1 => Some(number_data_point::Value::AsInt(*rng.pick(&[3, 7, -1, 0]))),
                _ => Some(number_data_point::Value::AsDouble(*rng.pick(&[9.5, 0.1, -2.0, f64::NAN]))),
            },
            ..Default::default()
        })
        .collect()
}

fn metric(rng: &mut Rng) -> Metric {
    let n = rng.below(3) as usize;
    let data = match rng.below(7) {
        0 => None,
        1 => Some(metric::Data::Gauge(Gauge { data_points: number_points(rng) })),
        2 => Some(metric::Data::Sum(Sum {
            data_points: number_points(rng),
            aggregation_temporality: 1,
            is_monotonic: true,
        })),
        3 => Some(metric::Data::Histogram(Histogram {
            data_points: (0..n)
                .map(|_| HistogramDataPoint {
                    attributes: attributes(rng, 2),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![1.0, 2.0],
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: 2,
        })),
        4 => Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: (0..n)
                .map(|_| ExponentialHistogramDataPoint {
                    attributes: attributes(rng, 2),
                    scale: -3,
                    positive: Some(exponential_histogram_data_point::Buckets { offset: -2, bucket_counts: vec![4, 5] }),
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: 1,
        })),
        5 => Some(metric::Data::Summary(Summary {
            data_points: (0..n)
                .map(|_| SummaryDataPoint { attributes: attributes(rng, 2), count: 3, ..Default::default() })
                .collect(),
        })),
        _ => Some(metric::Data::Gauge(Gauge { data_points: vec![] })),
    };
    Metric {
        name: rng.pick(&["queue.depth", "http.server.duration", "", "é"]).to_string(),
        unit: "ms".into(),
        data,
        ..Default::default()
    }
}

fn metrics(rng: &mut Rng) -> Payload {
    let resource_metrics = (0..rng.below(4) + 1)
        .map(|_| ResourceMetrics {
            resource: resource(rng),
            scope_metrics: (0..rng.below(3))
                .map(|_| ScopeMetrics {
                    scope: scope(),
                    metrics: (0..rng.below(5)).map(|_| metric(rng)).collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    Payload::Metrics(ExportMetricsServiceRequest { resource_metrics })
}

fn logs(rng: &mut Rng) -> Payload {
    let resource_logs = (0..rng.below(4) + 1)
        .map(|_| ResourceLogs {
            resource: resource(rng),
            scope_logs: (0..rng.below(3))
                .map(|_| ScopeLogs {
                    scope: scope(),
                    log_records: (0..rng.below(8))
                        .map(|_| LogRecord {
                            time_unix_nano: 5,
                            severity_number: 9,
                            severity_text: "INFO".into(),
                            body: Some(AnyValue { value: s("user logged in") }),
                            attributes: attributes(rng, 4),
                            trace_id: vec![3; 16],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    Payload::Logs(ExportLogsServiceRequest { resource_logs })
}

#[test]
fn randomized_requests_measure_the_same() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // What the requests exercised: per signal, refusals, mismatches, SLA records, custom records.
    let mut seen = [[0u64; 4]; 3];
    for _ in 0..300 {
        for (i, payload) in [traces(&mut rng), metrics(&mut rng), logs(&mut rng)].iter().enumerate() {
            let m = assert_same(payload);
            let custom = m.records.iter().filter(|r| !BUILT_IN.contains(&r.meter.as_str())).count();
            for (n, add) in seen[i].iter_mut().zip([m.rejected, m.mismatched, m.sla.len() as u64, custom as u64]) {
                *n += add;
            }
        }
    }
    for (signal, counts) in ["traces", "metrics", "logs"].iter().zip(seen) {
        assert!(counts[0] > 0 && counts[1] > 0 && counts[3] > 0, "{signal}: {counts:?}");
    }
    assert!(seen[0][2] > 0);
}

#[test]
fn empty_and_sdk_shaped_requests_measure_the_same() {
    assert_same(&Payload::Traces(ExportTraceServiceRequest::default()));
    assert_same(&Payload::Metrics(ExportMetricsServiceRequest::default()));
    assert_same(&Payload::Logs(ExportLogsServiceRequest::default()));
    // The shape the Python SDK sends: an SDK resource, one scope, SERVER spans with HTTP attributes.
    let resource = Resource {
        attributes: vec![
            kv("telemetry.sdk.language", s("python")),
            kv("telemetry.sdk.name", s("opentelemetry")),
            kv("tenant.id", s("acme")),
            kv("service.name", s("checkout")),
        ],
        ..Default::default()
    };
    let spans = (0..50)
        .map(|i| Span {
            trace_id: vec![i as u8; 16],
            span_id: vec![1; 8],
            name: "GET /cart".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_000_000_000 + i * 1_000_000,
            attributes: vec![
                kv("http.request.method", s("GET")),
                kv("http.route", s("/cart")),
                kv("http.response.status_code", Some(any_value::Value::IntValue(if i % 10 == 0 { 503 } else { 200 }))),
                kv("http.status_code", Some(any_value::Value::IntValue(200))),
            ],
            status: Some(Status { code: if i % 7 == 0 { 2 } else { 0 }, message: String::new() }),
            ..Default::default()
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans { scope: scope(), spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    assert_same(&Payload::Traces(request.clone()));
    // The SLA and usage came out of it, so the comparison compared something.
    let m = via_view(Signal::Traces, &request.encode_to_vec(), &Tenancy::FromResource, &[]).unwrap();
    assert_eq!((m.sla.len(), m.sla[0].requests, m.sla[0].errors), (1, 50, 12));
    assert_eq!(
        m.records.iter().find(|r| r.meter == "span_bytes").unwrap().value,
        rust_decimal::Decimal::from(
            request.resource_spans[0].scope_spans[0].spans.iter().map(|s| s.encoded_len() as u64).sum::<u64>()
        )
    );
}

/// Protobuf semantics the SDKs never exercise but a hand-made request can:
/// repeated singular fields (the last scalar wins, messages merge).
#[test]
fn repeated_fields_merge_as_protobuf_says() {
    let resource = |attrs: Vec<KeyValue>| {
        ResourceSpans { resource: Some(Resource { attributes: attrs, ..Default::default() }), ..Default::default() }
            .encode_to_vec()
    };
    let spans = |spans: Vec<Span>| {
        ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }
            .encode_to_vec()
    };
    let server = |status: i32, attrs: Vec<KeyValue>| Span {
        kind: 2,
        trace_id: vec![1; 16],
        status: Some(Status { code: status, message: String::new() }),
        attributes: attrs,
        ..Default::default()
    };
    let mut span_bytes = server(2, vec![kv("http.route", s("/a"))]).encode_to_vec();
    // A second status without a code, then kind 5 and another route: merged, the status stays ERROR.
    span_bytes.extend(
        Span {
            status: Some(Status { code: 0, message: "m".into() }),
            kind: 5,
            attributes: vec![kv("http.route", s("/b"))],
            ..Default::default()
        }
        .encode_to_vec(),
    );
    // An attribute whose value repeats: the second AnyValue is empty, so the first stands.
    let mut kv_bytes = kv("http.response.status_code", Some(any_value::Value::IntValue(503))).encode_to_vec();
    kv_bytes.extend(KeyValue { value: Some(AnyValue { value: None }), ..Default::default() }.encode_to_vec());
    prost::encoding::bytes::encode(9, &kv_bytes, &mut span_bytes);
    let mut scope = Vec::new();
    prost::encoding::bytes::encode(2, &span_bytes, &mut scope);
    let mut rs = resource(vec![kv("tenant.id", s("acme"))]);
    rs.extend(resource(vec![kv("service.name", s("api")), kv("tenant.id", s("initech"))]));
    rs.extend(spans(vec![server(0, vec![])]));
    prost::encoding::bytes::encode(2, &scope, &mut rs);
    let mut request = Vec::new();
    prost::encoding::bytes::encode(1, &rs, &mut request);
    let defs = meters();
    let view = via_view(Signal::Traces, &request, &Tenancy::FromResource, &defs).unwrap();
    let mut prost = via_prost(Signal::Traces, &request, &Tenancy::FromResource, &defs).unwrap();
    // Only the bytes differ: prost re-encodes the merged span, the view counts what came.
    let wire: u64 = span_bytes.len() as u64 + server(0, vec![]).encoded_len() as u64;
    let bytes = prost.records.iter_mut().find(|r| r.meter == "span_bytes").unwrap();
    assert_ne!(bytes.value, rust_decimal::Decimal::from(wire));
    bytes.value = rust_decimal::Decimal::from(wire);
    assert_eq!(view, prost);
    assert_eq!(view.records[0].tenant, "initech");
    let sla: Vec<_> = view.sla.iter().map(|r| (r.route.as_str(), r.requests, r.errors)).collect();
    assert_eq!(sla, [("", 1, 0), ("/b", 1, 1)]);
}

fn sample_requests() -> Vec<Payload> {
    let mut rng = Rng(42);
    let mut t = traces(&mut rng);
    while t.items() < 5 {
        t = traces(&mut rng);
    }
    vec![t, metrics(&mut rng), logs(&mut rng)]
}

/// Cut anywhere, a request is refused or, cut between top-level fields, a
/// shorter request that both ways meter alike; never a panic.
#[test]
fn truncations_are_errors_or_measure_the_same() {
    let defs = meters();
    for payload in sample_requests() {
        let bytes = encode(&payload);
        let signal = payload.signal();
        assert!(bytes.len() > 500, "{}", bytes.len());
        let mut refused = 0;
        for cut in 0..bytes.len() {
            let part = &bytes[..cut];
            let prost = via_prost(signal, part, &Tenancy::FromResource, &defs);
            match via_view(signal, part, &Tenancy::FromResource, &defs) {
                Err(e) => {
                    assert!(e.starts_with(&format!("malformed OTLP protobuf {} request: ", signal.name())), "{e}");
                    assert!(prost.is_err(), "the view refused what prost took at {cut}: {e}");
                    refused += 1;
                }
                Ok(view) => assert_eq!(Ok(view), prost, "cut at {cut}"),
            }
        }
        assert!(refused > bytes.len() / 2, "{refused} of {}", bytes.len());
    }
}

/// Any byte changed anywhere: no panic, and when both ways read the result,
/// the same counts (bytes meters aside: a changed byte can make the encoding
/// non-canonical, which prost's re-encoding normalizes).
#[test]
fn corrupted_bytes_never_panic_or_miscount() {
    let defs = meters();
    for payload in sample_requests() {
        let bytes = encode(&payload);
        let signal = payload.signal();
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let view = via_view(signal, &bad, &Tenancy::FromResource, &defs);
                let prost = via_prost(signal, &bad, &Tenancy::FromResource, &defs);
                if let (Ok(mut view), Ok(mut prost)) = (view, prost) {
                    for m in [&mut view, &mut prost] {
                        m.records.retain(|r| !r.meter.ends_with("_bytes"));
                    }
                    assert_eq!(view, prost, "byte {at} ^ {flip:#x}");
                }
            }
        }
    }
}

#[test]
fn malformed_fields_are_named() {
    let err = |bytes: &[u8]| via_view(Signal::Traces, bytes, &Tenancy::FromResource, &[]).unwrap_err();
    let in_request = |span: &[u8]| {
        let (mut scope, mut rs, mut req) = (Vec::new(), Vec::new(), Vec::new());
        prost::encoding::bytes::encode(2, &span.to_vec(), &mut scope);
        prost::encoding::bytes::encode(2, &scope, &mut rs);
        prost::encoding::bytes::encode(1, &rs, &mut req);
        req
    };
    assert_eq!(err(&[0x0a, 0xff, 0xff]), "malformed OTLP protobuf traces request: ExportTraceServiceRequest.resource_spans (field 1): invalid varint at byte 1");
    assert_eq!(err(&[0x0a, 0x05, 0x12]), "malformed OTLP protobuf traces request: ExportTraceServiceRequest.resource_spans (field 1): runs past the end of its message at byte 1");
    // kind sent as a string: found while metering, past the framing check.
    assert_eq!(
        err(&in_request(&[0x32, 0x01, 0x41])),
        "malformed OTLP protobuf traces request: Span.kind (field 6): wrong wire type 2 at byte 6"
    );
    // A group (wire type 3) is not OTLP.
    assert!(err(&in_request(&[0xa3, 0x06])).ends_with("Span field 100: unsupported wire type 3 at byte 6"));
    // A server span whose route is not UTF-8: metering reads it, so it is refused.
    let route = Span { kind: 2, attributes: vec![kv("http.route", s("AB"))], ..Default::default() }.encode_to_vec();
    let at = route.windows(2).position(|w| w == b"AB").unwrap();
    let mut bad = route.clone();
    bad[at] = 0xff;
    assert!(
        err(&in_request(&bad)).contains("AnyValue.string_value (field 1): is not valid UTF-8"),
        "{}",
        err(&in_request(&bad))
    );
    // The same bytes on a span whose route nothing reads, or a span name that is not UTF-8: metered (prost refuses both).
    bad[0..2].copy_from_slice(&[0x30, 0x01]);
    let name = Span { name: "AB".into(), ..Default::default() }.encode_to_vec();
    let mut bad_name = name.clone();
    bad_name[name.len() - 2] = 0xff;
    for span in [bad, bad_name] {
        let m = via_view(Signal::Traces, &in_request(&span), &Tenancy::FromResource, &[]).unwrap();
        assert_eq!(m.records.iter().find(|r| r.meter == "spans").unwrap().value, rust_decimal::Decimal::ONE);
        assert!(via_prost(Signal::Traces, &in_request(&span), &Tenancy::FromResource, &[]).is_err());
    }
    // A tenant id that is not UTF-8 is refused, never metered to someone else.
    let rs = ResourceSpans {
        resource: Some(Resource { attributes: vec![kv("tenant.id", s("AB"))], ..Default::default() }),
        scope_spans: vec![ScopeSpans { spans: vec![span_of_kind(1)], ..Default::default() }],
        ..Default::default()
    };
    let mut bytes = ExportTraceServiceRequest { resource_spans: vec![rs] }.encode_to_vec();
    let at = bytes.windows(2).position(|w| w == b"AB").unwrap();
    bytes[at + 1] = 0xc3;
    assert!(err(&bytes).contains("is not valid UTF-8"));
}

fn span_of_kind(kind: i32) -> Span {
    Span { kind, ..Default::default() }
}
