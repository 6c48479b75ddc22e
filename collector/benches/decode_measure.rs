//! Decode + measure alone: how many spans per second one core turns from OTLP
//! protobuf bytes into usage records, with no network and no ClickHouse.
//!
//! `cargo bench -p tally-collector --bench decode_measure [-- --spans 1000 --attrs 13 --tenants 5 --seconds 3 --runs 5]`
//!
//! Prints, per stage (prost decode alone; prost decode + measure; the
//! collector's path: the zero-copy view's framing check + measure in place),
//! the median spans/s and CPU-seconds per million spans over the runs.

use std::time::{Duration, Instant};

use measure::{measure, Tenancy};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otlp::view::Protobuf;
use otlp::{decode, Encoding, Signal};
use prost::Message;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
        ..Default::default()
    }
}

/// One request: `spans` spans spread over `tenants` resources, each span with `attrs` string attributes.
fn request(spans: u64, attrs: u64, tenants: u64) -> Vec<u8> {
    let per = spans / tenants;
    let resource_spans = (0..tenants)
        .map(|t| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", format!("service-{t}")), kv("tenant.id", format!("tenant-{t}"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..per)
                    .map(|i| Span {
                        trace_id: (i as u128 * 7919).to_be_bytes().to_vec(),
                        span_id: (i * 104_729).to_be_bytes().to_vec(),
                        name: format!("GET /api/v1/items/{}", i % 50),
                        kind: if i % 4 == 0 { 2 } else { 1 },
                        start_time_unix_nano: 1_700_000_000_000_000_000 + i * 1000,
                        end_time_unix_nano: 1_700_000_000_000_500_000 + i * 1000,
                        attributes: (0..attrs)
                            .map(|a| kv(&format!("attr.key.{a}"), format!("value-{a}-{}", i % 97)))
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

/// CPU time of this process (user + system), from /proc/self/stat.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // CLK_TCK is 100 on Linux
}

#[derive(Clone, Copy)]
enum Stage {
    Decode,
    DecodeMeasure,
    ViewMeasure,
}

fn run(body: &bytes::Bytes, spans: u64, seconds: u64, stage: Stage) -> (f64, f64) {
    let now = time::OffsetDateTime::now_utc();
    let (wall, cpu0) = (Instant::now(), cpu());
    let mut done = 0u64;
    while wall.elapsed() < Duration::from_secs(seconds) {
        match stage {
            Stage::Decode | Stage::DecodeMeasure => {
                let payload = decode(Signal::Traces, Encoding::Protobuf, body).unwrap();
                if let Stage::DecodeMeasure = stage {
                    let m = measure(&payload, &Tenancy::FromResource, now);
                    assert!(!m.records.is_empty());
                }
                std::hint::black_box(&payload);
            }
            Stage::ViewMeasure => {
                // What the receiver and the pipeline do with a protobuf body.
                let request = Protobuf::new(Signal::Traces, body.clone()).unwrap();
                let m = request.with_view(|view| measure(view, &Tenancy::FromResource, now)).unwrap();
                assert!(!m.records.is_empty());
                std::hint::black_box(&m);
            }
        }
        done += spans;
    }
    let (secs, cpu_secs) = (wall.elapsed().as_secs_f64(), (cpu() - cpu0).as_secs_f64());
    (done as f64 / secs, cpu_secs / (done as f64 / 1e6))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (spans, attrs, tenants) = (arg("--spans", 1000), arg("--attrs", 13), arg("--tenants", 5));
    let (seconds, runs) = (arg("--seconds", 3), arg("--runs", 5));
    let body = bytes::Bytes::from(request(spans, attrs, tenants));
    println!(
        "one request: {spans} spans, {attrs} attributes each, {tenants} tenants, {} bytes ({} bytes/span); {runs} runs of {seconds} s, one thread",
        body.len(),
        body.len() as u64 / spans
    );
    println!("| stage | spans/s (median) | CPU-s per M spans |\n|---|--:|--:|");
    let stages = [
        ("prost decode alone", Stage::Decode),
        ("prost decode + measure", Stage::DecodeMeasure),
        ("view (zero-copy) + measure", Stage::ViewMeasure),
    ];
    for (name, stage) in stages {
        let results: Vec<(f64, f64)> = (0..runs).map(|_| run(&body, spans, seconds, stage)).collect();
        let rate = median(results.iter().map(|r| r.0).collect());
        let cpu = median(results.iter().map(|r| r.1).collect());
        println!("| {name} | {rate:.0} | {cpu:.2} |");
    }
}
