//! OTLP/JSON decoding against the proto3 JSON mapping: doubles as numbers or
//! strings (the special values only as strings), 64-bit integers as numbers or
//! strings, and precise refusals of what is malformed.

use opentelemetry_proto::tonic::common::v1::{any_value::Value as Any, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value as Point, Metric};
use otlp::{decode, Encoding, Payload, Signal};

fn metrics(json: &str) -> Vec<Metric> {
    match decode(Signal::Metrics, Encoding::Json, json.as_bytes()) {
        Ok(Payload::Metrics(r)) => {
            r.resource_metrics.into_iter().flat_map(|r| r.scope_metrics).flat_map(|s| s.metrics).collect()
        }
        other => panic!("{other:?}"),
    }
}

fn refusal(signal: Signal, json: &str) -> String {
    decode(signal, Encoding::Json, json.as_bytes()).unwrap_err().to_string()
}

fn attribute(attrs: &[KeyValue], key: &str) -> Any {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()?.value).unwrap()
}

fn double(value: Any) -> f64 {
    match value {
        Any::DoubleValue(d) => d,
        other => panic!("{other:?}"),
    }
}

fn as_double(value: Option<Point>) -> f64 {
    match value {
        Some(Point::AsDouble(d)) => d,
        other => panic!("{other:?}"),
    }
}

/// Every double of the metrics schema, written as strings.
const STRING_DOUBLES: &str = r#"{"resourceMetrics":[{
  "resource":{"attributes":[{"key":"load","value":{"kvlistValue":{"values":[{"key":"avg","value":{"doubleValue":"NaN"}}]}}}]},
  "scopeMetrics":[{"metrics":[
    {"name":"g","gauge":{"dataPoints":[
      {"asDouble":"1.5","attributes":[{"key":"ratio","value":{"doubleValue":"-Infinity"}}],
       "exemplars":[{"asDouble":"0.25","traceId":"5b8efff798038103d269b633813fc60c"}]},
      {"asInt":"-3"}]}},
    {"name":"s","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"asDouble":"NaN"}]}},
    {"name":"h","histogram":{"aggregationTemporality":2,"dataPoints":[{"count":"3","sum":"Infinity","min":"-Infinity",
      "max":"2e3","bucketCounts":["1","2"],"explicitBounds":["0.5",1,"Infinity"]}]}},
    {"name":"e","exponentialHistogram":{"aggregationTemporality":2,"dataPoints":[{"count":"1","sum":"3.25","min":"NaN",
      "max":"1","zeroThreshold":"1e-9","scale":1,"positive":{"offset":-1,"bucketCounts":["1"]}}]}},
    {"name":"q","summary":{"dataPoints":[{"count":"2","sum":"7.5","quantileValues":[{"quantile":"0.5","value":"-0"}]}]}}
  ]}]}]}"#;

#[test]
fn doubles_in_strings_are_read_exactly() {
    let m = metrics(STRING_DOUBLES);
    assert_eq!(m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["g", "s", "h", "e", "q"]);
    let Payload::Metrics(request) = decode(Signal::Metrics, Encoding::Json, STRING_DOUBLES.as_bytes()).unwrap() else {
        unreachable!()
    };
    assert_eq!(Payload::Metrics(request.clone()).items(), 6);
    let resource = &request.resource_metrics[0].resource.as_ref().unwrap().attributes;
    let Any::KvlistValue(load) = attribute(resource, "load") else { panic!() };
    assert!(double(attribute(&load.values, "avg")).is_nan());

    let Some(Data::Gauge(g)) = &m[0].data else { panic!("{:?}", m[0].data) };
    assert_eq!(as_double(g.data_points[0].value), 1.5);
    assert_eq!(double(attribute(&g.data_points[0].attributes, "ratio")), f64::NEG_INFINITY);
    assert_eq!(g.data_points[0].exemplars[0].value, Some(Point::AsDouble(0.25).into_exemplar()));
    assert_eq!(g.data_points[1].value, Some(Point::AsInt(-3)));

    let Some(Data::Sum(s)) = &m[1].data else { panic!("{:?}", m[1].data) };
    assert!(as_double(s.data_points[0].value).is_nan());

    let Some(Data::Histogram(h)) = &m[2].data else { panic!("{:?}", m[2].data) };
    let p = &h.data_points[0];
    assert_eq!((p.count, p.sum, p.min, p.max), (3, Some(f64::INFINITY), Some(f64::NEG_INFINITY), Some(2000.0)));
    assert_eq!(
        (p.bucket_counts.as_slice(), p.explicit_bounds.as_slice()),
        (&[1, 2][..], &[0.5, 1.0, f64::INFINITY][..])
    );

    let Some(Data::ExponentialHistogram(e)) = &m[3].data else { panic!("{:?}", m[3].data) };
    let p = &e.data_points[0];
    assert_eq!((p.sum, p.max, p.zero_threshold), (Some(3.25), Some(1.0), 1e-9));
    assert!(p.min.unwrap().is_nan());

    let Some(Data::Summary(q)) = &m[4].data else { panic!("{:?}", m[4].data) };
    let p = &q.data_points[0];
    assert_eq!((p.sum, p.quantile_values[0].quantile, p.quantile_values[0].value), (7.5, 0.5, 0.0));
    assert!(p.quantile_values[0].value.is_sign_negative());
}

/// The exemplar's oneof has a type of its own; this spells it like the point's.
trait IntoExemplar {
    fn into_exemplar(self) -> opentelemetry_proto::tonic::metrics::v1::exemplar::Value;
}

impl IntoExemplar for Point {
    fn into_exemplar(self) -> opentelemetry_proto::tonic::metrics::v1::exemplar::Value {
        use opentelemetry_proto::tonic::metrics::v1::exemplar::Value as E;
        match self {
            Point::AsDouble(d) => E::AsDouble(d),
            Point::AsInt(i) => E::AsInt(i),
        }
    }
}

#[test]
fn doubles_in_strings_are_read_in_traces_and_logs_too() {
    let spans = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
      "spanId":"eee19b7ec3c1b174","name":"a","attributes":[{"key":"ratio","value":{"doubleValue":"0.125"}},
      {"key":"list","value":{"arrayValue":{"values":[{"doubleValue":"Infinity"},{"intValue":"7"}]}}}]}]}]}]}"#;
    let Ok(Payload::Traces(t)) = decode(Signal::Traces, Encoding::Json, spans.as_bytes()) else { panic!() };
    let attrs = &t.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(double(attribute(attrs, "ratio")), 0.125);
    let Any::ArrayValue(list) = attribute(attrs, "list") else { panic!() };
    assert_eq!(list.values[0].value, Some(Any::DoubleValue(f64::INFINITY)));
    assert_eq!(list.values[1].value, Some(Any::IntValue(7)));

    let logs = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"doubleValue":"-2.5e-3"}}]}]}]}"#;
    let Ok(Payload::Logs(l)) = decode(Signal::Logs, Encoding::Json, logs.as_bytes()) else { panic!() };
    let body = l.resource_logs[0].scope_logs[0].log_records[0].body.clone();
    assert_eq!(body, Some(AnyValue { value: Some(Any::DoubleValue(-0.0025)) }));
}

const NOT_A_DOUBLE: &str = "expected a double (a number, or a string holding one, NaN, Infinity or -Infinity)";

#[test]
fn a_malformed_double_is_refused_naming_its_field() {
    let at = "resourceMetrics[0].scopeMetrics[0].metrics[0]";
    let cases = [
        (r#"{"name":"h","histogram":{"dataPoints":[{"sum":"1.5x"}]}}"#, "histogram.dataPoints[0].sum", "\"1.5x\""),
        (
            r#"{"name":"g","gauge":{"dataPoints":[{"asInt":"1"},{"asDouble":"1.5x"}]}}"#,
            "gauge.dataPoints[1].asDouble",
            "\"1.5x\"",
        ),
        (
            r#"{"name":"h","histogram":{"dataPoints":[{"explicitBounds":[1,"inf"]}]}}"#,
            "histogram.dataPoints[0].explicitBounds[1]",
            "\"inf\"",
        ),
        (
            r#"{"name":"e","exponentialHistogram":{"dataPoints":[{"zeroThreshold":" 1"}]}}"#,
            "exponentialHistogram.dataPoints[0].zeroThreshold",
            "\" 1\"",
        ),
        (
            r#"{"name":"q","summary":{"dataPoints":[{"quantileValues":[{"quantile":"1e999"}]}]}}"#,
            "summary.dataPoints[0].quantileValues[0].quantile",
            "\"1e999\"",
        ),
        (
            r#"{"name":"g","gauge":{"dataPoints":[{"asInt":"1","attributes":[{"key":"k","value":{"doubleValue":"nan"}}]}]}}"#,
            "gauge.dataPoints[0].attributes[0].value.doubleValue",
            "\"nan\"",
        ),
    ];
    for (metric, field, found) in cases {
        let json = format!(r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{metric}]}}]}}]}}"#);
        assert_eq!(
            refusal(Signal::Metrics, &json),
            format!("malformed OTLP JSON metrics request: {at}.{field}: {NOT_A_DOUBLE}, found {found}"),
        );
    }
    let spans = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":{"doubleValue":"1.5x"}}]}}]}"#;
    assert_eq!(
        refusal(Signal::Traces, spans),
        format!("malformed OTLP JSON traces request: resourceSpans[0].resource.attributes[0].value.doubleValue: {NOT_A_DOUBLE}, found \"1.5x\""),
    );
}

#[test]
fn other_malformed_json_is_still_refused() {
    // A string where the schema has no double is not read as one, and the error names where it is.
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a","startTimeUnixNano":"1.5"}]}]}]}"#;
    assert_eq!(
        refusal(Signal::Traces, json),
        "malformed OTLP JSON traces request: resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: invalid digit found in string"
    );
    // Inside a metric's data, serde drops what it cannot read: the metric is refused by name.
    let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[{"asInt":"1","timeUnixNano":"1.5"}]}}]}]}]}"#;
    assert_eq!(
        refusal(Signal::Metrics, json),
        "malformed OTLP JSON metrics request: metric \"g\" has no gauge, sum, histogram, exponentialHistogram or summary that could be read"
    );
    // A repeated field of a message is refused as serde_json refuses it.
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a","name":"b"}]}]}]}"#;
    assert_eq!(
        refusal(Signal::Traces, json),
        "malformed OTLP JSON traces request: resourceSpans[0].scopeSpans[0].spans[0]: duplicate field `name`"
    );
    // A double that is neither number nor string.
    let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"h","histogram":{"dataPoints":[{"sum":true}]}}]}]}]}"#;
    assert_eq!(
        refusal(Signal::Metrics, json),
        "malformed OTLP JSON metrics request: metric \"h\" has no gauge, sum, histogram, exponentialHistogram or summary that could be read"
    );
    // Syntax errors keep serde_json's position.
    assert_eq!(
        refusal(Signal::Logs, r#"{"resourceLogs": ["#),
        "malformed OTLP JSON logs request: EOF while parsing a list at line 1 column 18"
    );
}
