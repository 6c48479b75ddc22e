//! Unit tests of custom meter evaluation.

use std::path::Path;

use metering::meter::definition::parse;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{number_data_point, Metric};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::*;
use otlp::Payload;

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}
fn s(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.into()))
}
fn i(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}
fn f(key: &str, v: f64) -> KeyValue {
    kv(key, Value::DoubleValue(v))
}

fn meters(yaml: &str) -> Vec<MeterDefinition> {
    parse(&format!("meters:\n{yaml}"), Path::new("m.yaml")).unwrap()
}

fn traces(resource: Vec<KeyValue>, spans: Vec<Vec<KeyValue>>) -> Payload {
    Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: resource, ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                spans: spans.into_iter().map(|attributes| Span { attributes, ..Default::default() }).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn run(payload: &Payload, defs: &[MeterDefinition]) -> Evaluated {
    evaluate(payload, defs, OffsetDateTime::UNIX_EPOCH, |_| Some(("acme".into(), "chat".into())))
}

/// (meter, dimensions joined by `,`, unique) -> value.
fn table(e: &Evaluated) -> BTreeMap<(String, String, String), String> {
    e.records
        .iter()
        .map(|r| {
            let dims = r.dimensions.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            ((r.meter.clone(), dims, r.unique.clone()), r.value.normalize().to_string())
        })
        .collect()
}

fn row(m: &str, d: &str, u: &str, v: &str) -> ((String, String, String), String) {
    ((m.into(), d.into(), u.into()), v.into())
}

const LLM: &str = "
  - {name: llm_tokens, signal: traces, aggregation: sum, attribute: llm.tokens, filter: {llm.vendor: openai}, group_by: [model]}
  - {name: llm_calls, signal: traces, aggregation: count, filter: {llm.vendor: openai}}
  - {name: llm_peak, signal: traces, aggregation: max, attribute: llm.tokens}
  - {name: llm_users, signal: traces, aggregation: unique_count, attribute: user.id}
  - {name: log_lines, signal: logs, aggregation: count}
";

#[test]
fn filters_group_by_and_each_aggregation() {
    let payload = traces(
        // The resource supplies the vendor unless the span says otherwise.
        vec![s("llm.vendor", "openai"), s("service.name", "chat")],
        vec![
            vec![i("llm.tokens", 100), s("model", "gpt"), s("user.id", "u1")],
            vec![f("llm.tokens", 0.25), s("model", "gpt"), i("user.id", 7)],
            vec![s("llm.tokens", "30"), s("model", "mini"), s("user.id", "u1")],
            // Not openai: only max and unique count it.
            vec![i("llm.tokens", 500), s("llm.vendor", "anthropic"), s("model", "claude"), s("user.id", "u2")],
            // No model: the empty group; no tokens: sum and max skip it, count counts it.
            vec![i("llm.tokens", 1)],
            vec![s("model", "gpt")],
            // Duplicate keys: the last wins.
            vec![i("llm.tokens", 1000), s("model", "gpt"), i("llm.tokens", 2), s("user.id", "")],
        ],
    );
    let e = run(&payload, &meters(LLM));
    assert_eq!((e.rejected, e.reason.as_str()), (0, ""));
    assert_eq!(
        table(&e),
        BTreeMap::from([
            row("llm_tokens", "model=gpt", "", "102.25"),
            row("llm_tokens", "model=mini", "", "30"),
            row("llm_tokens", "model=", "", "1"),
            row("llm_calls", "", "", "6"),
            row("llm_peak", "", "", "500"),
            row("llm_users", "", "u1", "1"),
            row("llm_users", "", "u2", "1"),
            row("llm_users", "", "7", "1"),
        ])
    );
    assert!(e.records.iter().all(|r| r.tenant == "acme" && r.service == "chat"));
    // Filters on numbers and booleans compare as text; a filter value that never matches counts nothing.
    let defs = meters(
        "  - {name: ok_calls, signal: traces, aggregation: count, filter: {http.status_code: 200, cached: false}}\n",
    );
    let p = traces(
        vec![],
        vec![vec![i("http.status_code", 200), kv("cached", Value::BoolValue(false))], vec![i("http.status_code", 500)]],
    );
    assert_eq!(table(&run(&p, &defs)), BTreeMap::from([row("ok_calls", "", "", "1")]));
    // Meters of other signals see nothing; a refused resource counts nothing.
    assert!(run(&traces(vec![], vec![vec![]]), &meters(LLM)).records.is_empty());
    let none = evaluate(&payload, &meters(LLM), OffsetDateTime::UNIX_EPOCH, |_| None);
    assert_eq!(none, Evaluated::default());
}

#[test]
fn bad_values_refuse_the_item_with_a_reason() {
    let defs = meters(LLM);
    for (bad, why) in [
        (i("llm.tokens", -3), "custom meter llm_tokens: llm.tokens -3 is negative"),
        (f("llm.tokens", f64::NAN), "custom meter llm_tokens: llm.tokens NaN is not a finite number"),
        (f("llm.tokens", f64::INFINITY), "custom meter llm_tokens: llm.tokens inf is not a finite number"),
        (s("llm.tokens", "12 tokens"), "custom meter llm_tokens: llm.tokens \"12 tokens\" is not a decimal number"),
        (
            s("llm.tokens", "0.0000000001"),
            "custom meter llm_tokens: llm.tokens \"0.0000000001\" has more than 9 decimal places",
        ),
        (kv("llm.tokens", Value::BoolValue(true)), "custom meter llm_tokens: llm.tokens is not a number"),
    ] {
        let e = run(&traces(vec![s("llm.vendor", "openai")], vec![vec![bad], vec![i("llm.tokens", 4)]]), &defs);
        // The bad span counts for no value meter; the good one and the count are intact.
        assert_eq!((e.rejected, e.reason.as_str().replace("llm_peak", "llm_tokens")), (1, why.to_owned()));
        let t = table(&e);
        assert_eq!(t[&("llm_tokens".into(), "model=".into(), String::new())], "4");
        assert_eq!(t[&("llm_calls".into(), String::new(), String::new())], "2");
    }
    // A double is its shortest decimal, rounded to 9 places (half to even); a tiny one is 0:
    // 0.1 + 0.2 + 1.0000000005 + 1e-300 is exactly 1.3.
    let e = run(
        &traces(
            vec![s("llm.vendor", "openai")],
            vec![
                vec![f("llm.tokens", 0.1)],
                vec![f("llm.tokens", 0.2)],
                vec![f("llm.tokens", 1.0000000005)],
                vec![f("llm.tokens", 1e-300)],
            ],
        ),
        &defs,
    );
    assert_eq!(table(&e)[&("llm_tokens".into(), "model=".into(), String::new())], "1.3");
    // A unique value too long to store whole, or not a scalar.
    let long = "x".repeat(MAX_DIMENSION_LEN + 1);
    let e = run(
        &traces(vec![], vec![vec![s("user.id", &long)], vec![kv("user.id", Value::ArrayValue(ArrayValue::default()))]]),
        &defs,
    );
    assert_eq!(e.rejected, 2);
    assert!(e.reason.contains("user.id is not a string, number or boolean"), "{}", e.reason);
    assert!(!e.records.iter().any(|r| r.meter == "llm_users"));
}

#[test]
fn metric_points_and_logs() {
    let defs = meters(
        "  - {name: queue_peak, signal: metrics, aggregation: max, filter: {metric.name: queue.depth}, group_by: [queue]}
  - {name: gpu_points, signal: metrics, aggregation: count, group_by: [metric.name]}
  - {name: log_users, signal: logs, aggregation: unique_count, attribute: user.id}
",
    );
    let gauge = |name: &str, points: Vec<(Vec<KeyValue>, number_data_point::Value)>| Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: points
                .into_iter()
                .map(|(attributes, v)| NumberDataPoint { attributes, value: Some(v), ..Default::default() })
                .collect(),
        })),
        ..Default::default()
    };
    use number_data_point::Value::{AsDouble, AsInt};
    let hist = Metric {
        name: "latency".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint::default()],
            ..Default::default()
        })),
        ..Default::default()
    };
    let payload = Payload::Metrics(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    gauge(
                        "queue.depth",
                        vec![
                            (vec![s("queue", "a")], AsInt(7)),
                            (vec![s("queue", "a")], AsDouble(9.5)),
                            (vec![s("queue", "b")], AsInt(3)),
                        ],
                    ),
                    gauge("other", vec![(vec![s("queue", "a")], AsInt(99))]),
                    hist,
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    assert_eq!(
        table(&run(&payload, &defs)),
        BTreeMap::from([
            row("queue_peak", "queue=a", "", "9.5"),
            row("queue_peak", "queue=b", "", "3"),
            row("gpu_points", "metric.name=queue.depth", "", "3"),
            row("gpu_points", "metric.name=other", "", "1"),
            row("gpu_points", "metric.name=latency", "", "1"),
        ])
    );
    let logs = Payload::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: [s("user.id", "a"), s("user.id", "b"), s("user.id", "a")]
                    .into_iter()
                    .map(|a| LogRecord { attributes: vec![a], ..Default::default() })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    assert_eq!(
        table(&run(&logs, &defs)),
        BTreeMap::from([row("log_users", "", "a", "1"), row("log_users", "", "b", "1")])
    );
}
