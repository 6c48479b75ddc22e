//! Usage and SLA reports from rows written into a real ClickHouse 18.16: exact
//! totals, daily series, availability, error budget, worst hours, exemplars and
//! credits, computed by hand below; over the API (JSON, CSV, HTML; tenant keys) and
//! the CLI. The HTML pages are opened in headless Chromium: no console errors, the
//! charts are rendered with the expected number of bars and lines, and a screenshot
//! is written. The report reads are the roll-up and SLA queries that `chdb.rs`,
//! `sla.rs` and `invoice.rs` already run on chDB; reports add no SQL of their own.

use metering::store::Store;
use std::path::PathBuf;
use std::time::Duration;

use metering::clickhouse::ClickHouse;
use metering::meter::Catalog;
use metering::record::{UsageBatch, UsageRecord};
use metering::sla::{encode_sla_batch, insert_sla, SlaRecord};
use metering::store::migrate::migrate;
use metering::store::writer::UsageWriter;
use serde_json::{json, Value};
use testkit::chromium::Chromium;
use testkit::tally::{start, tally, Serve};
use testkit::ClickHouseServer;
use time::macros::datetime;
use time::OffsetDateTime;

const BILLING: &str = "billing-key-1";
const ACME_KEY: &str = "acme-key-1";

/// acme is on `pro` all month: a 300 USD base fee plus 1 USD per 1,000 spans,
/// 99.9 % and p99 ≤ 500 ms, 10 % credit below 99.9 %, 25 % below 99 %. globex has no plan.
const PLANS: &str = "
plans:
  pro:
    currency: USD
    base_fee: 300
    meters:
      spans: {price: 1, per: 1000}
    slo: {availability: 99.9, p99_ms: 500}
    credits:
      - {below: 99.9, percent: 10}
      - {below: 99, percent: 25}
regions:
  us: {tax_percent: 0}
tenants:
  acme: {region: us, plans: [{plan: pro, from: 2026-01-01}]}
";

fn rec(tenant: &str, meter: &str, at: OffsetDateTime, value: &str) -> UsageRecord {
    UsageRecord::new(tenant, meter, at, value.parse().unwrap())
}

/// acme: spans 1,500 on the 1st (first and last minute), 250 on the 30th (last
/// minute); 123 requests on the 15th; 1.5 + 0.25 CPU seconds; outside November
/// (not reported) and an agent's book (left out). globex: 42 spans on the 2nd.
fn usage_batches() -> Vec<UsageBatch> {
    let acme = vec![
        rec("acme", "spans", datetime!(2026-11-01 00:00 UTC), "1000"),
        rec("acme", "spans", datetime!(2026-11-01 23:59:59 UTC), "500"),
        rec("acme", "spans", datetime!(2026-11-30 23:59 UTC), "250"),
        rec("acme", "spans", datetime!(2026-10-31 23:59:59.999 UTC), "7777"),
        rec("acme", "spans", datetime!(2026-12-01 00:00 UTC), "8888"),
        rec("acme", "requests", datetime!(2026-11-15 10:00 UTC), "123"),
        rec("acme", "cpu_seconds", datetime!(2026-11-15 10:00 UTC), "1.5"),
        rec("acme", "cpu_seconds", datetime!(2026-11-16 10:00 UTC), "0.25"),
        rec("acme", "agent_accepted_spans", datetime!(2026-11-01 00:00 UTC), "1750"),
    ];
    let acme = UsageBatch { source_id: "agent-a:boot-1".into(), seq: 1, records: acme };
    let globex = UsageBatch {
        source_id: "agent-b:boot-1".into(),
        seq: 1,
        records: vec![rec("globex", "spans", datetime!(2026-11-02 12:00 UTC), "42")],
    };
    // acme's batch again, as a retry: it counts once.
    vec![acme.clone(), globex, acme]
}

/// One request: tenant, service, time, latency (ns), failed, trace id.
type Request = (&'static str, &'static str, OffsetDateTime, u64, bool, String);

const MS: u64 = 1_000_000;

/// acme in November: 40,000 requests, 100 failed (99.75 %):
/// - api, 3rd 10:xx: 10,000, latencies 1–100 ms, every 200th failed (50);
/// - api, 3rd 11:xx: 20,000, 5–14 ms, none failed;
/// - api, 17th 02:xx: 1,000 of 1..=1000 ms with trace ids, every 50th failed (20);
/// - web, 17th 02:30: 5,000 of 2 ms, 5 failed;
/// - web, 25th 23:59: 4,000 of 3 ms, 25 failed;
///
/// and 500 failed on each side of the month (not counted). globex: 100 of 7 ms on the 2nd.
fn requests() -> Vec<Request> {
    let mut out = Vec::new();
    let at = |base: OffsetDateTime, i: u64| base + time::Duration::minutes((i % 60) as i64);
    for i in 0..10_000u64 {
        out.push((
            "acme",
            "api",
            at(datetime!(2026-11-03 10:00 UTC), i),
            (i % 100 + 1) * MS,
            i % 200 == 0,
            String::new(),
        ));
    }
    for i in 0..20_000u64 {
        out.push(("acme", "api", at(datetime!(2026-11-03 11:00 UTC), i), (5 + i % 10) * MS, false, String::new()));
    }
    for i in 1..=1000u64 {
        out.push((
            "acme",
            "api",
            at(datetime!(2026-11-17 02:00 UTC), i),
            i * MS,
            i % 50 == 0,
            format!("{:032x}", 0x1700_0000 + i),
        ));
    }
    for i in 0..5000u64 {
        out.push(("acme", "web", datetime!(2026-11-17 02:30 UTC), 2 * MS, i < 5, String::new()));
    }
    for i in 0..4000u64 {
        out.push(("acme", "web", datetime!(2026-11-25 23:59 UTC), 3 * MS, i < 25, String::new()));
    }
    for _ in 0..500 {
        out.push(("acme", "api", datetime!(2026-10-31 23:59 UTC), MS, true, String::new()));
        out.push(("acme", "api", datetime!(2026-12-01 00:00 UTC), MS, true, String::new()));
    }
    for _ in 0..100 {
        out.push(("globex", "api", datetime!(2026-11-02 12:00 UTC), 7 * MS, false, String::new()));
    }
    out
}

/// The SLA rows as collectors write them: two batches, the first sent twice (a retry).
fn sla_bytes() -> Vec<u8> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (n, (tenant, service, time, ns, err, trace)) in requests().into_iter().enumerate() {
        let mut r = SlaRecord::new(tenant, service, "", time);
        r.observe(ns, err, &trace);
        if n % 2 == 0 {
            a.push(r)
        } else {
            b.push(r)
        }
    }
    let mut bytes = Vec::new();
    encode_sla_batch("collector-a:boot-1", 1, &a, &mut bytes).unwrap();
    encode_sla_batch("collector-a:boot-1", 2, &b, &mut bytes).unwrap();
    encode_sla_batch("collector-a:boot-1", 1, &a, &mut bytes).unwrap();
    bytes
}

struct Fixture {
    server: ClickHouseServer,
    db: String,
    plans: tempfile::NamedTempFile,
}

async fn setup() -> Fixture {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("report").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    let mut writer = UsageWriter::new(ch.clone(), &db, Catalog::builtin()).unwrap();
    for b in usage_batches() {
        writer.push(&b).unwrap();
        writer.flush().await.unwrap();
    }
    ch.insert_rowbinary(&insert_sla(&db).unwrap(), sla_bytes().into()).await.unwrap();
    let plans = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(plans.path(), PLANS).unwrap();
    Fixture { server, db, plans }
}

async fn serve(f: &Fixture) -> Serve {
    start(
        &f.server.http_url(),
        &f.db,
        &[
            "--billing-key",
            BILLING,
            "--tenant-key",
            &format!("acme={ACME_KEY}"),
            "--plans",
            f.plans.path().to_str().unwrap(),
        ],
    )
    .await
}

async fn get(serve: &Serve, path: &str, key: &str) -> (u16, String, String) {
    let resp = reqwest::Client::new().get(format!("{}{path}", serve.base)).bearer_auth(key).send().await.unwrap();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (resp.status().as_u16(), ct, resp.text().await.unwrap())
}

async fn get_json(serve: &Serve, path: &str, key: &str) -> (u16, Value) {
    let (status, _, body) = get(serve, path, key).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

/// `(day of month, value)` of the days with usage.
fn nonzero_days(meter: &Value) -> Vec<(String, String)> {
    let daily = meter["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 30, "every day of November");
    daily
        .iter()
        .filter(|d| d["value"] != "0")
        .map(|d| (d["day"].as_str().unwrap()[8..].to_owned(), d["value"].as_str().unwrap().to_owned()))
        .collect()
}

fn check_usage(report: &Value, tenants: &[&str]) {
    assert_eq!(report["month"], "2026-11");
    let names: Vec<_> = report["tenants"].as_array().unwrap().iter().map(|t| t["tenant"].as_str().unwrap()).collect();
    assert_eq!(names, tenants, "{report}");
    for t in report["tenants"].as_array().unwrap() {
        let meters: Vec<_> = t["meters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["meter"].as_str().unwrap(), m["unit"].as_str().unwrap(), m["total"].as_str().unwrap()))
            .collect();
        match t["tenant"].as_str().unwrap() {
            "acme" => {
                // No agent_accepted_spans, nothing from October or December, the retry counted once.
                assert_eq!(
                    meters,
                    [("cpu_seconds", "seconds", "1.75"), ("requests", "count", "123"), ("spans", "count", "1750")]
                );
                let m = &t["meters"];
                assert_eq!(nonzero_days(&m[0]), [("15".into(), "1.5".into()), ("16".into(), "0.25".into())]);
                assert_eq!(nonzero_days(&m[1]), [("15".into(), "123".into())]);
                assert_eq!(nonzero_days(&m[2]), [("01".into(), "1500".into()), ("30".into(), "250".into())]);
            }
            "globex" => {
                assert_eq!(meters, [("spans", "count", "42")]);
                assert_eq!(nonzero_days(&t["meters"][0]), [("02".into(), "42".into())]);
            }
            other => panic!("tenant {other}"),
        }
    }
}

/// The hand-computed SLA figures of acme (see `requests`) and globex.
fn check_sla(report: &Value) {
    let acme = &report["tenants"][0];
    assert_eq!(acme["tenant"], "acme", "{report}");
    // 40,000 requests, 100 failed: 39,900 / 40,000 = 99.75 %.
    assert_eq!(
        (acme["requests"].as_u64(), acme["errors"].as_u64(), acme["availability_percent"].as_str()),
        (Some(40_000), Some(100), Some("99.75"))
    );
    assert_eq!(acme["slo"], json!({"plan": "pro", "availability_percent": "99.9", "p99_ms": 500}));
    // 99.9 % of 40,000 allows 40 errors; 100 is 250 % of the budget.
    assert_eq!(acme["error_budget_used_percent"], "250");
    // p99 is request 39,600 of 40,000: 39,100 are at most 100 ms, so it is the 500th of
    // 101..=1000 ms, 600 ms (within 1/256): over the 500 ms target.
    assert_eq!(acme["p99_met"], false);
    // The credit: 99.75 < 99.9 (not < 99) → 10 % of the charges, 300.00 + 1,750 spans × 1 / 1,000 = 301.75 → 30.175 → 30.18.
    assert_eq!(
        acme["credits"],
        json!({"currency": "USD", "total": "30.18", "credits": [{"plan": "pro", "plan_from": "2026-11-01", "target": "99.9", "below": "99.9", "percent": "10", "charges": "301.75", "amount": "30.18"}]})
    );
    let services: Vec<_> = acme["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap(),
                s["requests"].as_u64().unwrap(),
                s["errors"].as_u64().unwrap(),
                s["availability_percent"].as_str().unwrap(),
            )
        })
        .collect();
    // api: 31,000 with 70 failed = 99.7742 % (99.774193…); web: 9,000 with 30 = 99.6667 % (99.666…).
    assert_eq!(services, [("api", 31_000, 70, "99.7742"), ("web", 9_000, 30, "99.6667")]);
    // Worst hours: 20/1,000 = 2 %, 25/4,000 = 0.625 %, 50/10,000 = 0.5 %, 5/5,000 = 0.1 %; 11:00 on the 3rd had none.
    let worst: Vec<_> = acme["worst_hours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["service"].as_str().unwrap(),
                h["start"].as_str().unwrap(),
                h["requests"].as_u64().unwrap(),
                h["errors"].as_u64().unwrap(),
                h["availability_percent"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        worst,
        [
            ("api", "2026-11-17T02:00:00Z", 1000, 20, "98"),
            ("web", "2026-11-25T23:00:00Z", 4000, 25, "99.375"),
            ("api", "2026-11-03T10:00:00Z", 10_000, 50, "99.5"),
            ("web", "2026-11-17T02:00:00Z", 5000, 5, "99.9"),
        ]
    );
    // The worst hour's traces: the 3 slowest (1,000 ms failed, 999, 998) and the slowest failed (950, 900).
    let ex: Vec<_> = acme["worst_hours"][0]["exemplars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["trace_id"].as_str().unwrap().to_owned(),
                e["latency_ms"].as_str().unwrap().to_owned(),
                e["error"].as_bool().unwrap(),
            )
        })
        .collect();
    let want: Vec<_> = [(1000u64, true), (999, false), (998, false), (950, true), (900, true)]
        .iter()
        .map(|&(ms, e)| (format!("{:032x}", 0x1700_0000 + ms), ms.to_string(), e))
        .collect();
    assert_eq!(ex, want);
    // Daily: the 3rd 29,950/30,000, the 17th 5,975/6,000, the 25th 3,975/4,000; other days have no requests.
    let days: Vec<_> = acme["daily"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["requests"] != 0)
        .map(|d| {
            (
                d["day"].as_str().unwrap(),
                d["requests"].as_u64().unwrap(),
                d["errors"].as_u64().unwrap(),
                d["availability_percent"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        days,
        [
            ("2026-11-03", 30_000, 50, "99.8333"),
            ("2026-11-17", 6000, 25, "99.5833"),
            ("2026-11-25", 4000, 25, "99.375")
        ]
    );
    assert_eq!(acme["daily"].as_array().unwrap().len(), 30);
    assert_eq!(acme["daily"][0]["availability_percent"], Value::Null);
    // Percentiles within 1/256 of the exact value at rank ⌈q·n⌉ of acme's November latencies.
    let mut lat: Vec<u64> =
        requests().iter().filter(|r| r.0 == "acme" && r.2.month() == time::Month::November).map(|r| r.3).collect();
    lat.sort();
    for (field, ppm) in [("p50_ms", 500_000u64), ("p95_ms", 950_000), ("p99_ms", 990_000)] {
        let exact = lat[((ppm * lat.len() as u64).div_ceil(1_000_000) - 1) as usize];
        let got: f64 = acme[field].as_str().unwrap().parse().unwrap();
        let got_ns = (got * 1e6).round() as u64;
        assert!(got_ns.abs_diff(exact) * 256 <= exact, "{field}: {got} ms vs exact {exact} ns");
    }
    assert_eq!(lat[39_599], 600 * MS);

    let globex = &report["tenants"][1];
    assert_eq!(
        (globex["tenant"].as_str(), globex["requests"].as_u64(), globex["availability_percent"].as_str()),
        (Some("globex"), Some(100), Some("100"))
    );
    assert_eq!(
        (&globex["slo"], &globex["credits"], &globex["error_budget_used_percent"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    assert_eq!(globex["worst_hours"], json!([]));
}

#[tokio::test]
async fn reports_over_the_api_have_the_hand_computed_figures() {
    let f = setup().await;
    let serve = serve(&f).await;

    let (status, ct, body) = get(&serve, "/v1/reports/usage/2026-11", BILLING).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    check_usage(&serde_json::from_str(&body).unwrap(), &["acme", "globex"]);
    let (status, report) = get_json(&serve, "/v1/reports/usage/2026-11?format=json&tenant=globex", BILLING).await;
    assert_eq!(status, 200);
    check_usage(&report, &["globex"]);

    let (status, report) = get_json(&serve, "/v1/reports/sla/2026-11", BILLING).await;
    assert_eq!(status, 200, "{report}");
    check_sla(&report);

    // CSV: a row per tenant, meter and day, then the month's total.
    let (status, ct, csv) = get(&serve, "/v1/reports/usage/2026-11?format=csv", BILLING).await;
    assert_eq!((status, ct.as_str()), (200, "text/csv; charset=utf-8"));
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines.len(), 1 + 4 * 31 + 1, "header, 4 meters × (30 days + total), and the final CRLF");
    assert_eq!(lines[0], "tenant,meter,unit,period,value");
    assert_eq!(&lines[1..3], ["acme,cpu_seconds,seconds,2026-11-01,0", "acme,cpu_seconds,seconds,2026-11-02,0"]);
    assert!(lines.contains(&"acme,cpu_seconds,seconds,2026-11-15,1.5"));
    assert!(lines.contains(&"acme,spans,count,2026-11-01,1500"));
    assert!(lines.contains(&"acme,spans,count,2026-11,1750"));
    assert_eq!(lines[lines.len() - 2], "globex,spans,count,2026-11,42");
    let (_, _, csv) = get(&serve, "/v1/reports/sla/2026-11?format=csv", BILLING).await;
    assert_eq!(
        csv.split("\r\n").take(4).collect::<Vec<_>>(),
        [
            "month,tenant,service,requests,errors,availability_percent,p50_ms,p95_ms,p99_ms,slo_availability_percent,slo_p99_ms,error_budget_used_percent,credit,currency",
            &format!("2026-11,acme,,40000,100,99.75,{},{},{},99.9,500,250,30.18,USD", report["tenants"][0]["p50_ms"].as_str().unwrap(), report["tenants"][0]["p95_ms"].as_str().unwrap(), report["tenants"][0]["p99_ms"].as_str().unwrap()),
            &format!("2026-11,acme,api,31000,70,99.7742,{},{},{},,,,,", report["tenants"][0]["services"][0]["p50_ms"].as_str().unwrap(), report["tenants"][0]["services"][0]["p95_ms"].as_str().unwrap(), report["tenants"][0]["services"][0]["p99_ms"].as_str().unwrap()),
            // Percentiles are the sketch's (2 ms is answered as its bucket's midpoint, 2.003 ms).
            "2026-11,acme,web,9000,30,99.6667,2.003,3.006,3.006,,,,,",
        ]
    );

    // A tenant key reads its own tenant only (by default), and 403 for another.
    let (status, report) = get_json(&serve, "/v1/reports/usage/2026-11", ACME_KEY).await;
    assert_eq!(status, 200);
    check_usage(&report, &["acme"]);
    let (status, report) = get_json(&serve, "/v1/reports/sla/2026-11?tenant=acme", ACME_KEY).await;
    assert_eq!((status, report["tenants"].as_array().unwrap().len()), (200, 1));
    for path in ["/v1/reports/usage/2026-11?tenant=globex", "/v1/reports/sla/2026-11?tenant=globex&format=html"] {
        let (status, body) = get_json(&serve, path, ACME_KEY).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{path}: {body}");
        assert_eq!(body["error"]["message"], "this key may not read tenant \"globex\"");
    }
    for (path, code) in [
        ("/v1/reports/usage/2026-13", "invalid_parameter"),
        ("/v1/reports/usage/2026-11?format=pdf", "invalid_parameter"),
        ("/v1/reports/sla/2026-11?granularity=day", "invalid_parameter"),
        ("/v1/reports/sla/2026-11?tenant=a%20b", "invalid_parameter"),
    ] {
        let (status, body) = get_json(&serve, path, BILLING).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{path}: {body}");
    }
    assert_eq!(get(&serve, "/v1/reports/usage/2026-11", "nope").await.0, 401);
    // A month without data: empty reports.
    let (status, report) = get_json(&serve, "/v1/reports/sla/2026-09", BILLING).await;
    assert_eq!((status, report), (200, json!({"month": "2026-09", "tenants": []})));

    // OpenAPI: both routes, their parameters and media types; the JSON fields are the described ones.
    let doc: Value = reqwest::get(format!("{}/openapi.json", serve.base)).await.unwrap().json().await.unwrap();
    for (route, schema) in [("/v1/reports/usage/{month}", "UsageReport"), ("/v1/reports/sla/{month}", "SlaReport")] {
        let get = &doc["paths"][route]["get"];
        let params: Vec<_> = get["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
            .collect();
        assert_eq!(params, [("month", "path"), ("format", "query"), ("tenant", "query")], "{route}");
        let media: Vec<_> = get["responses"]["200"]["content"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(media, ["application/json", "text/csv", "text/html"]);
        assert_eq!(
            get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{schema}")
        );
        assert_eq!(
            get["responses"]["403"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
    }
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let (_, sla) = get_json(&serve, "/v1/reports/sla/2026-11", BILLING).await;
    let tenant_schema = &doc["components"]["schemas"]["SlaReport"]["properties"]["tenants"]["items"]["allOf"];
    let mut described = keys(&doc["components"]["schemas"]["SlaFigures"]["properties"]);
    described.extend(keys(&tenant_schema[1]["properties"]));
    described.sort();
    assert_eq!(described, keys(&sla["tenants"][0]));
    let (_, usage) = get_json(&serve, "/v1/reports/usage/2026-11", BILLING).await;
    let meter_schema = &doc["components"]["schemas"]["UsageReport"]["properties"]["tenants"]["items"]["properties"]
        ["meters"]["items"]["properties"];
    assert_eq!(keys(meter_schema), keys(&usage["tenants"][0]["meters"][0]));
}

#[tokio::test]
async fn tally_report_writes_the_same_reports() {
    let f = setup().await;
    let serve = serve(&f).await;
    let dir = tempfile::tempdir().unwrap();
    let url = f.server.http_url();
    let base = ["--clickhouse-url", url.as_str(), "--clickhouse-database", f.db.as_str(), "--month", "2026-11"];
    let out =
        tally(&[&["report", "usage"], &base[..], &["--format", "csv", "--out", dir.path().to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("wrote 2 usage reports of 2026-11 into {}\n", dir.path().display())
    );
    let mut files: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["usage-2026-11-acme.csv", "usage-2026-11-globex.csv"]);
    // The usage report reads no plans: a plans file given to it is an error, not silently ignored.
    let out = tally(&[&["report", "usage"], &base[..], &["--plans", "/nonexistent/plans.yaml"]].concat());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unexpected argument '--plans'"), "{stderr}");
    let sla_dir = tempfile::tempdir().unwrap();
    let one = ["--tenant", "acme", "--format", "html", "--out", sla_dir.path().to_str().unwrap()];
    let out = tally(&[&["report", "sla"], &base[..], &one[..]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("wrote 1 SLA report of 2026-11 into {}\n", sla_dir.path().display())
    );
    for t in ["acme", "globex"] {
        let file = std::fs::read_to_string(dir.path().join(format!("usage-2026-11-{t}.csv"))).unwrap();
        assert_eq!(file, get(&serve, &format!("/v1/reports/usage/2026-11?format=csv&tenant={t}"), BILLING).await.2);
    }
    let out = tally(&[&["report", "sla"], &base[..], &["--plans", f.plans.path().to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_sla(&report);
    // Without plans: the same figures, no objective, no credits.
    let out = tally(&[&["report", "sla"], &base[..], &["--tenant", "acme", "--format", "json"]].concat());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["tenants"][0]["requests"].as_u64(), &report["tenants"][0]["credits"], &report["tenants"][0]["slo"]),
        (Some(40_000), &Value::Null, &Value::Null)
    );
    let out = tally(&[&["report", "sla"], &base[..2], &["--clickhouse-database", &f.db, "--month", "2026-1"]].concat());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"2026-1\" is not a month written YYYY-MM"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Sealed, November's reports read every tenant at once from the seal's roll-ups: the same
    // hand-computed figures, worst hours, exemplars and credits.
    let out = tally(&[&["seal"], &base[..]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let digest = serde_json::from_slice::<Value>(&out.stdout).unwrap()["digest"].clone();
    assert_eq!(digest.as_str().map(str::len), Some(64), "{}", String::from_utf8_lossy(&out.stdout));
    let out = tally(&[&["report", "sla"], &base[..], &["--plans", f.plans.path().to_str().unwrap()]].concat());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_sla(&report);
    assert_eq!(report["sealed_digest"], digest);
    let out = tally(&[&["report", "usage"], &base[..], &["--format", "json"]].concat());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_usage(&report, &["acme", "globex"]);
    assert_eq!(report["sealed_digest"], digest);
}

/// Settled (folded and rolled up as `tally settle` does), November's reports read every tenant
/// at once — rolled-up days, the tail since the watermark — and give the bytes the raw reads
/// gave: with every batch resent into the tail, and with late usage for a rolled-up day, in the
/// tail and then folded.
#[tokio::test]
async fn settled_reports_read_every_tenant_at_once_and_equal_the_raw_reads() {
    use metering::settle::{self, FoldOptions, Settled};
    use metering::store::rollup::one_read_for_all;

    let f = setup().await;
    // Both tenants on a plan: the SLA report prices their credits from one read of both's usage.
    std::fs::write(
        f.plans.path(),
        format!("{PLANS}  globex: {{region: us, plans: [{{plan: pro, from: 2026-01-01}}]}}\n"),
    )
    .unwrap();
    let serve = serve(&f).await;
    let paths = [
        "/v1/reports/usage/2026-11",
        "/v1/reports/usage/2026-11?format=csv",
        "/v1/reports/sla/2026-11",
        "/v1/reports/sla/2026-11?format=csv",
        "/v1/tenants/acme/invoices/2026-11",
        "/v1/invoices/2026-11",
    ];
    let mut raw = Vec::new();
    for path in paths {
        let (status, _, body) = get(&serve, path, BILLING).await;
        assert_eq!(status, 200, "{path}: {body}");
        raw.push(body);
    }
    let store = Store::new(ClickHouse::new(&f.server.http_url(), Duration::from_secs(30)).unwrap(), &f.db);
    let settle = || async {
        // Past the second of the last insert, so a fold without grace takes it.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let now = FoldOptions { grace: Duration::ZERO, ..Default::default() };
        while settle::fold(&store, now).await.unwrap().is_some() {}
        while settle::roll(&store).await.unwrap().is_some() {}
    };
    settle().await;
    let Settled::At(Some(w)) = Settled::read(&store).await.unwrap() else { panic!("no watermark after folds") };
    let november = (
        datetime!(2026-11-01 00:00 UTC).unix_timestamp() as u32,
        datetime!(2026-12-01 00:00 UTC).unix_timestamp() as u32,
    );
    assert!(w.rolled.is_some_and(|d| d.from <= november.0 && d.to >= november.1), "November rolled up: {w:?}");
    assert!(one_read_for_all(None, Settled::At(Some(w))), "a recent watermark: one read for every tenant");

    let same = |when: &'static str| {
        let (serve, raw) = (&serve, &raw);
        async move {
            for (path, raw) in paths.iter().zip(raw) {
                let (status, _, body) = get(serve, path, BILLING).await;
                assert_eq!((status, &body), (200, raw), "{when}: {path}");
            }
        }
    };
    same("settled").await;
    let ch = store.ch();
    let mut writer = UsageWriter::new(ch.clone(), &f.db, Catalog::builtin()).unwrap();
    for b in usage_batches() {
        writer.push(&b).unwrap();
    }
    writer.flush().await.unwrap();
    ch.insert_rowbinary(&insert_sla(&f.db).unwrap(), sla_bytes().into()).await.unwrap();
    same("every batch resent into the tail").await;
    settle().await;
    same("the resends folded (taken by no fold)").await;

    // Late usage for a rolled-up day: 5 more spans for acme on the 3rd, counted once.
    let late = UsageBatch {
        source_id: "agent-a:boot-1".into(),
        seq: 2,
        records: vec![rec("acme", "spans", datetime!(2026-11-03 08:00 UTC), "5")],
    };
    writer.push(&late).unwrap();
    writer.flush().await.unwrap();
    for when in ["late usage in the tail", "late usage folded"] {
        let (_, report) = get_json(&serve, "/v1/reports/usage/2026-11", BILLING).await;
        let spans = &report["tenants"][0]["meters"][2];
        assert_eq!((spans["meter"].as_str(), spans["total"].as_str()), (Some("spans"), Some("1755")), "{when}");
        assert_eq!(
            nonzero_days(spans),
            [("01".into(), "1500".into()), ("03".into(), "5".into()), ("30".into(), "250".into())],
            "{when}"
        );
        let (_, invoice) = get_json(&serve, "/v1/tenants/acme/invoices/2026-11", BILLING).await;
        let (_, sla) = get_json(&serve, "/v1/reports/sla/2026-11", BILLING).await;
        // 1,755 spans at 1 USD per 1,000 beside the 300 USD base fee; the credit is 10 % of it.
        assert_eq!(sla["tenants"][0]["credits"]["total"], invoice["sla_credit"], "{when}");
        assert_eq!(invoice["sla_credit"], "30.18", "{when}: {invoice}");
        settle().await;
    }
}

#[tokio::test]
async fn tally_export_writes_cloudevents_stripe_meter_events_and_csv() {
    let f = setup().await;
    let url = f.server.http_url();
    let base =
        ["export", "--clickhouse-url", url.as_str(), "--clickhouse-database", f.db.as_str(), "--month", "2026-11"];
    let run = |extra: &[&str]| tally(&[&base[..], extra].concat());
    let json_lines = |out: &std::process::Output| -> Vec<Value> {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    // One event per tenant, meter and day with usage: acme's cpu_seconds (2 days), requests (1),
    // spans (2), globex's spans (1); no agent_* books.
    let events = json_lines(&run(&["--format", "cloudevents"]));
    let ids: Vec<_> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "acme/cpu_seconds/2026-11-15",
            "acme/cpu_seconds/2026-11-16",
            "acme/requests/2026-11-15",
            "acme/spans/2026-11-01",
            "acme/spans/2026-11-30",
            "globex/spans/2026-11-02"
        ]
    );
    assert_eq!(
        events[0]["data"],
        json!({"tenant": "acme", "meter": "cpu_seconds", "unit": "seconds", "start": "2026-11-15T00:00:00Z", "end": "2026-11-16T00:00:00Z", "value": "1.5"})
    );
    assert_eq!(
        (events[3]["source"].as_str(), events[3]["specversion"].as_str(), events[3]["data"]["value"].as_str()),
        (Some(format!("tally/{}", f.db).as_str()), Some("1.0"), Some("1500"))
    );

    let stripe = json_lines(&run(&[
        "--format",
        "stripe",
        "--meter",
        "spans",
        "--stripe-customer",
        "acme=cus_A",
        "--stripe-customer",
        "globex=cus_G",
    ]));
    assert_eq!(stripe.len(), 3);
    assert_eq!(
        stripe[1],
        json!({"event_name": "spans", "identifier": "tally-acme-spans-2026-11-30", "timestamp": datetime!(2026-11-30 00:00 UTC).unix_timestamp(),
                                 "payload": {"stripe_customer_id": "cus_A", "value": "250"}})
    );
    assert_eq!(stripe[2]["payload"], json!({"stripe_customer_id": "cus_G", "value": "42"}));
    // Refused, never rounded or guessed: fractional seconds, a tenant without a customer, an unknown meter.
    for (extra, message) in [
        (
            &["--format", "stripe", "--stripe-customer", "acme=cus_A", "--stripe-customer", "globex=cus_G"][..],
            "acme's cpu_seconds on 2026-11-15 is 1.5, and Stripe meter events take whole numbers",
        ),
        (
            &["--format", "stripe", "--meter", "spans", "--stripe-customer", "acme=cus_A"][..],
            "no Stripe customer for tenant(s) globex",
        ),
        (&["--format", "csv", "--meter", "spanz"][..], "--meter \"spanz\": no such meter in 2026-11's usage"),
    ] {
        let out = run(extra);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(message), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = run(&["--format", "csv", "--tenant", "globex"]);
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().count(), 1 + 31);
    assert!(
        csv.contains("\r\nglobex,spans,count,2026-11-02,42\r\n")
            && csv.ends_with("\r\nglobex,spans,count,2026-11,42\r\n"),
        "{csv}"
    );
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn html_reports_render_in_chromium_without_errors() {
    let f = setup().await;
    let serve = serve(&f).await;
    let dir = tempfile::tempdir().unwrap();
    let mut chromium = Chromium::start().unwrap();
    for kind in ["usage", "sla"] {
        let (status, ct, html) = get(&serve, &format!("/v1/reports/{kind}/2026-11?format=html"), BILLING).await;
        assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));
        assert!(
            !html.contains("http://")
                || html.matches("http://").all(|_| html.contains("xmlns=\"http://www.w3.org/2000/svg\"")),
            "no external assets"
        );
        assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src="));
        let path = dir.path().join(format!("{kind}.html"));
        std::fs::write(&path, &html).unwrap();
        let mut tab = chromium.open(&format!("file://{}", path.display()), 900).unwrap();
        let count = |tab: &mut testkit::chromium::Tab, selector: &str| {
            tab.eval(&format!("document.querySelectorAll({selector:?}).length")).unwrap().as_u64().unwrap()
        };
        // Charts are laid out at their size (not collapsed).
        let width = tab
            .eval("Math.round(document.querySelector('svg.chart').getBoundingClientRect().width)")
            .unwrap()
            .as_u64()
            .unwrap();
        assert_eq!(width, 720, "{kind}");
        match kind {
            "usage" => {
                // 4 charts (acme: 3 meters, globex: 1) of 30 daily bars; 6 days with usage have height.
                assert_eq!(count(&mut tab, "svg.chart"), 4);
                assert_eq!(count(&mut tab, "svg.chart rect.bar"), 120);
                let drawn = tab.eval("[...document.querySelectorAll('rect.bar')].filter(r => r.getBoundingClientRect().height > 0).map(r => r.querySelector('title').textContent)").unwrap();
                assert_eq!(
                    drawn,
                    json!([
                        "2026-11-15: 1.5 seconds",
                        "2026-11-16: 0.25 seconds",
                        "2026-11-15: 123 count",
                        "2026-11-01: 1,500 count",
                        "2026-11-30: 250 count",
                        "2026-11-02: 42 count"
                    ])
                );
                // The tallest bar of a chart reaches half its frame or more (a readable scale).
                let tallest = tab.eval("Math.max(...[...document.querySelectorAll('svg.chart')[2].querySelectorAll('rect.bar')].map(r => r.getBoundingClientRect().height))").unwrap().as_f64().unwrap();
                assert!(tallest >= 71.0, "{tallest}");
            }
            _ => {
                // Per tenant an availability chart and a latency chart: acme and globex.
                assert_eq!(count(&mut tab, "svg.chart"), 4);
                // A line per run of days with requests: acme's 3rd, 17th and 25th are apart, globex has the 2nd.
                assert_eq!(count(&mut tab, "polyline.series.s-availability"), 4);
                assert_eq!(count(&mut tab, "polyline.series.s-p50, polyline.series.s-p95, polyline.series.s-p99"), 12);
                // acme had requests on 3 days, globex on 1.
                assert_eq!(count(&mut tab, "circle.dot.s-availability"), 4);
                assert_eq!(count(&mut tab, "circle.dot.s-p99"), 4);
                // acme's targets: 99.9 % and p99 500 ms.
                assert_eq!(
                    tab.eval("[...document.querySelectorAll('line.target title')].map(t => t.textContent)").unwrap(),
                    json!(["target 99.9 %", "p99 target 500 ms"])
                );
                assert_eq!(count(&mut tab, "table.worst tr"), 5, "a header and acme's 4 worst hours");
                let first = tab.eval("document.querySelector('table.worst tr:nth-child(2)').innerText").unwrap();
                assert_eq!(
                    first,
                    "2026-11-17 02:00\tapi\t1,000\t20\t98 %\t\n000000000000000000000000170003e8 1000 ms failed\n000000000000000000000000170003e7 999 ms\n\
                     000000000000000000000000170003e6 998 ms\n000000000000000000000000170003b6 950 ms failed\n00000000000000000000000017000384 900 ms failed"
                );
                let kpis = tab.eval("[...document.querySelectorAll('section.tenant')[0].querySelectorAll('.kpi b')].map(b => b.textContent)").unwrap();
                assert_eq!(kpis[0], "99.75 %");
                assert_eq!(kpis[5], "250 %");
                assert_eq!(kpis[6], "30.18 USD");
            }
        }
        assert_eq!(tab.problems(), Vec::<String>::new(), "{kind}: console errors");
        let shot = screenshot_dir().join(format!("{kind}-2026-11.png"));
        tab.screenshot(&shot).unwrap();
        let png = std::fs::read(&shot).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // The whole page, at the 900 px viewport width.
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 900);
        eprintln!("screenshot: {}", shot.display());
    }
}

/// The check above would see a broken page: console errors, exceptions and failed loads.
#[test]
fn chromium_reports_console_errors_exceptions_and_failed_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.html");
    // A port nothing listens on: the image load is refused.
    let port = testkit::tally::free_port();
    let page = format!(
        "<!DOCTYPE html><html><body><p>x</p><img src=\"http://127.0.0.1:{port}/missing.png\">\
        <script>console.log('fine'); console.error('boom'); null.x;</script></body></html>"
    );
    std::fs::write(&path, page).unwrap();
    let mut chromium = Chromium::start().unwrap();
    let tab = chromium.open(&format!("file://{}", path.display()), 800).unwrap();
    let problems = tab.problems();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems.iter().any(|p| p.starts_with("console.error") && p.contains("boom")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.starts_with("exception") && p.contains("TypeError")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.starts_with("log: ") && p.contains("ERR_CONNECTION_REFUSED")), "{problems:#?}");
}
