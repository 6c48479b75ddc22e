//! The OTel Python SDK → tally-collector (the binary: receivers, measure, spool,
//! sink) → a real ClickHouse 18.16 → the SLA read: exact requests, errors and
//! error rates per route, percentiles within 1/256, the right exemplars.

use metering::store::Store;
use std::collections::BTreeMap;
use std::time::Duration;

use metering::clickhouse::ClickHouse;
use metering::sla::record::bound_exemplars;
use metering::sla::{query_sla, Exemplar, SlaGrouping, SlaQuery};
use metering::store::migrate::migrate;
use metering::store::rollup::Granularity;
use testkit::ClickHouseServer;
use time::OffsetDateTime;

/// This UTC month: [its first instant, the next month's).
fn this_month() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    let start = now.replace_day(1).unwrap().replace_time(time::Time::MIDNIGHT);
    let end = Granularity::Month.bucket_end(start.unix_timestamp());
    (start, OffsetDateTime::from_unix_timestamp(end).unwrap())
}

/// Runs python/send_sla.py against `base`; returns the requests it reports sending.
async fn send_sla(base: &str, protocol: &str, tenant: &str) -> Vec<(String, u64, bool, String)> {
    let report = testkit::sdk::run("send_sla.py", base, protocol, &["--tenant", tenant]).await;
    assert_eq!(report["ok"], true, "{report}");
    report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_owned();
            (s("route"), r["latency_ns"].as_u64().unwrap(), r["error"].as_bool().unwrap(), s("trace_id"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_spans_become_exact_sla_per_route_over_http_and_grpc() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("sla_e2e").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = testkit::collector::start_collector(&server, &db, dir.path(), &[]).await;
    let (http_base, grpc_base) = (running.http_url.clone(), running.grpc_url.clone());
    let (month, next_month) = this_month();

    for (tenant, base, protocol) in [("acme", &http_base, "http"), ("globex", &grpc_base, "grpc")] {
        let sent = send_sla(base, protocol, tenant).await;
        running.settle().await;
        let mut by_route: BTreeMap<String, Vec<(u64, bool, String)>> = BTreeMap::new();
        for (route, ns, err, trace) in sent {
            by_route.entry(route).or_default().push((ns, err, trace));
        }
        let mut q = SlaQuery::new(month, next_month);
        q.tenant = Some(tenant.into());
        q.granularity = Granularity::Month;
        q.grouping = SlaGrouping::Route;
        let points = query_sla(&store, &q).await.unwrap();
        let got: BTreeMap<String, (u64, u64)> =
            points.iter().map(|p| (p.route.clone().unwrap(), (p.requests, p.errors))).collect();
        // By hand from send_sla.py's plan: every 10th /pay failed; 4 in 20 of /users/{id}
        // (503; 500 in both keys; "502" in the old key; 504 in both keys plus status ERROR);
        // five CONSUMER spans without a route; INTERNAL and CLIENT spans ignored.
        let want: BTreeMap<String, (u64, u64)> =
            [("".to_owned(), (5, 0)), ("/pay".to_owned(), (200, 20)), ("/users/{id}".to_owned(), (100, 20))].into();
        assert_eq!(got, want, "{tenant}");
        for p in &points {
            let route = p.route.clone().unwrap();
            let mut reqs = by_route[&route].clone();
            assert_eq!((p.requests, p.errors), (reqs.len() as u64, reqs.iter().filter(|r| r.1).count() as u64));
            // Error rate, in parts per million: exact.
            let rate = p.errors * 1_000_000 / p.requests;
            assert_eq!(
                rate,
                [0, 100_000, 200_000][["", "/pay", "/users/{id}"].iter().position(|r| *r == route).unwrap()]
            );
            reqs.sort();
            for ppm in [500_000u32, 900_000, 950_000, 990_000] {
                let rank = (u64::from(ppm) * reqs.len() as u64).div_ceil(1_000_000) as usize;
                let exact = reqs[rank - 1].0;
                let estimate = p.latency.quantile_ppm(ppm).unwrap();
                assert!(estimate.abs_diff(exact) * 256 <= exact, "{tenant} {route} p{ppm}: {estimate} vs {exact}");
            }
            let mut exemplars: Vec<Exemplar> =
                reqs.iter().map(|r| Exemplar { trace_id: r.2.clone(), latency_ns: r.0, error: r.1 }).collect();
            bound_exemplars(&mut exemplars);
            assert_eq!(p.exemplars, exemplars, "{tenant} {route}");
        }
        // /pay: 5..=1000 ms in steps of 5, so p50 is 500 ms and p99 990 ms.
        let pay = points.iter().find(|p| p.route.as_deref() == Some("/pay")).unwrap();
        assert!(pay.latency.quantile(0.5).unwrap().abs_diff(500_000_000) * 256 <= 500_000_000);
        assert!(pay.latency.quantile(0.99).unwrap().abs_diff(990_000_000) * 256 <= 990_000_000);
        assert_eq!(pay.exemplars[0].latency_ns, 1_000_000_000);
    }
    // The whole service for both tenants: one series each.
    let mut q = SlaQuery::new(month, next_month);
    q.granularity = Granularity::Month;
    q.grouping = SlaGrouping::Service;
    let points = query_sla(&store, &q).await.unwrap();
    let totals: Vec<_> = points.iter().map(|p| (p.tenant.as_str(), p.service.as_str(), p.requests, p.errors)).collect();
    assert_eq!(totals, [("acme", "checkout", 305, 40), ("globex", "checkout", 305, 40)]);
}
