//! The machine's ceiling for the same bytes: how fast one core turns the load
//! generator's requests into prost's types (what a collector that decodes
//! everything pays at least), and what Tally's collector does instead (the
//! zero-copy view's framing check and metering in place).

use std::time::Instant;

use measure::{measure, Tenancy};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use otlp::view::Protobuf;
use otlp::Signal;
use prost::Message;
use testkit::bench::median;
use testkit::loadgen::Pool;

/// `(stage, spans/s on one core)`, medians of `runs` runs of `seconds` each.
pub fn measure_all(pool: &Pool, runs: usize, seconds: f64) -> Vec<(&'static str, f64)> {
    let messages: Vec<(bytes::Bytes, u64)> = pool.requests.iter().map(|r| (r.frame.slice(5..), r.spans)).collect();
    assert!(!pool.gzip, "the ceiling reads uncompressed frames");
    let now = time::OffsetDateTime::now_utc();
    let prost = |m: &bytes::Bytes| {
        let request = ExportTraceServiceRequest::decode(m.clone()).expect("the pool's requests decode");
        std::hint::black_box(request);
    };
    let view = |m: &bytes::Bytes| {
        let request = Protobuf::new(Signal::Traces, m.clone()).expect("the pool's requests frame");
        let measured =
            request.with_view(|v| measure(v, &Tenancy::FromResource, now)).expect("the pool's requests meter");
        std::hint::black_box(measured);
    };
    type Stage<'a> = &'a dyn Fn(&bytes::Bytes);
    let stages: [(&'static str, Stage); 2] =
        [("prost decode alone", &prost), ("Tally's collector path: view framing check + metering in place", &view)];
    stages
        .into_iter()
        .map(|(name, stage)| {
            let rates = (0..runs).map(|_| {
                let started = Instant::now();
                let mut spans = 0u64;
                while started.elapsed().as_secs_f64() < seconds {
                    for (m, n) in &messages {
                        stage(m);
                        spans += n;
                    }
                }
                spans as f64 / started.elapsed().as_secs_f64()
            });
            (name, median(rates.collect::<Vec<_>>()))
        })
        .collect()
}
