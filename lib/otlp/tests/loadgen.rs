//! The load generator (testkit::loadgen) against the collector's own OTLP/gRPC
//! receiver, in process: what it reports as accepted is exactly what reached
//! the consumer, and every refusal is counted under its status.

mod common;

use std::time::Duration;

use otlp::{grpc, Outcome, DEFAULT_MAX_REQUEST_BYTES};
use testkit::loadgen::{self, Config, Pool};

fn base(url: String) -> Config {
    Config {
        url,
        tenants: 4,
        services_per_tenant: 3,
        spans_per_request: 250,
        pool: 3,
        concurrency: 4,
        seconds: 0.0,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_spans_are_exactly_what_the_receiver_took() {
    let recorder = common::recorder();
    let url = common::serve(grpc::router(recorder.clone(), DEFAULT_MAX_REQUEST_BYTES)).await;
    for gzip in [false, true] {
        let before = recorder.total("spans");
        // 10,100 spans: 41 requests of 250, the last one rounding up.
        let config = Config { total_spans: 10_100, gzip, key: Some("k1".into()), ..base(url.clone()) };
        let report = loadgen::run(&config, &Pool::build(&config)).await.unwrap();
        assert!(report.all_accepted(), "{report:?}");
        assert_eq!((report.requests, report.sent_spans, report.accepted_spans), (41, 10_250, 10_250));
        assert_eq!(recorder.total("spans") - before, 10_250);
        assert_eq!(report.accepted_by_tenant.values().sum::<u64>(), 10_250);
        assert_eq!(
            report.accepted_by_tenant.keys().collect::<Vec<_>>(),
            ["tenant-0", "tenant-1", "tenant-2", "tenant-3"]
        );
        assert!(report.accepted_server_spans > 0 && report.accepted_server_spans < 10_250 / 2, "{report:?}");
        assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.max);
    }
    assert!(
        recorder.seen.lock().unwrap().iter().all(|s| s.2.as_deref() == Some("k1")),
        "the key travels as a bearer token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_by_status_and_never_as_accepted() {
    let recorder = common::recorder();
    let url = common::serve(grpc::router(recorder.clone(), DEFAULT_MAX_REQUEST_BYTES)).await;
    // Two accepted, one partially rejected, then the store is down.
    recorder.script.lock().unwrap().extend([
        Outcome::Accepted { rejected: 0, message: String::new() },
        Outcome::Accepted { rejected: 0, message: String::new() },
        Outcome::Accepted { rejected: 7, message: "7 spans had no tenant".into() },
    ]);
    recorder.set(Outcome::Unavailable {
        retry_after: Duration::from_secs(5),
        message: "usage store unavailable: 100% down".into(),
    });
    let config = Config { total_spans: 1_250, concurrency: 1, ..base(url) };
    let report = loadgen::run(&config, &Pool::build(&config)).await.unwrap();
    assert!(!report.all_accepted());
    assert_eq!((report.requests, report.sent_spans), (5, 1_250));
    assert_eq!((report.accepted_spans, report.rejected_spans), (2 * 250 + 243, 7));
    assert_eq!(report.accepted_by_tenant.values().sum::<u64>(), 500, "per tenant counts only whole acceptances");
    let unavailable = &report.refused["UNAVAILABLE"];
    assert_eq!((unavailable.requests, unavailable.spans), (2, 500));
    assert_eq!(unavailable.first_message, "usage store unavailable: 100% down");
    assert_eq!(report.refused.len(), 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_a_counted_transport_failure_and_the_rate_is_kept() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = Config { total_spans: 500, concurrency: 1, ..base(format!("http://127.0.0.1:{port}")) };
    let report = loadgen::run(&config, &Pool::build(&config)).await.unwrap();
    assert_eq!(report.accepted_spans, 0);
    assert_eq!(report.refused["TRANSPORT"].spans, 500, "{report:?}");

    let recorder = common::recorder();
    let url = common::serve(grpc::router(recorder.clone(), DEFAULT_MAX_REQUEST_BYTES)).await;
    // 5 requests of 250 spans at 2,500 spans/s: the last one is due 0.4 s after the first.
    let config = Config { total_spans: 1_250, rate: 2_500, ..base(url) };
    let report = loadgen::run(&config, &Pool::build(&config)).await.unwrap();
    assert!(report.all_accepted(), "{report:?}");
    assert!(report.seconds >= 0.4 && report.seconds < 2.0, "{report:?}");
}
