//! `tally migrate` and `tally serve` as processes, against a real ClickHouse.

use std::time::Duration;

use metering::clickhouse::ClickHouse;
use metering::meter::Catalog;
use metering::store::rollup::Granularity;
use metering::store::writer::UsageWriter;
use rust_decimal::Decimal;
use serde_json::Value;
use testkit::tally::{tally, Serve};
use testkit::usage::{dataset, expected, FROM, TO};
use testkit::ClickHouseServer;

const KEY: &str = "billing-secret-1";

async fn serve(server: &ClickHouseServer, db: &str) -> Serve {
    serve_with(server, db, &[]).await
}

async fn serve_with(server: &ClickHouseServer, db: &str, extra: &[&str]) -> Serve {
    let mut args = vec!["--billing-key", "other-key", "--billing-key", KEY];
    args.extend_from_slice(extra);
    testkit::tally::start(&server.http_url(), db, &args).await
}

async fn get(serve: &Serve, query: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{}/v1/usage?{query}", serve.base));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, exact_json(&resp.text().await.unwrap()))
}

/// Parses a response, keeping every `value` number exactly as written (as a
/// string), so that assertions compare digits, not floats.
fn exact_json(text: &str) -> Value {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("\"value\":") {
        let (head, tail) = rest.split_at(i + 8);
        let end = tail.find([',', '}']).unwrap();
        out.push_str(head);
        out.push('"');
        out.push_str(&tail[..end]);
        out.push('"');
        rest = &tail[end..];
    }
    out.push_str(rest);
    serde_json::from_str(&out).unwrap()
}

async fn setup() -> (ClickHouseServer, String, Serve) {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("api").unwrap();
    let out = tally(&["migrate", "--clickhouse-url", &server.http_url(), "--clickhouse-database", &db]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let mut writer = UsageWriter::new(ch, &db, Catalog::builtin()).unwrap();
    for b in dataset() {
        writer.push(&b).unwrap();
    }
    writer.flush().await.unwrap();
    let serve = serve(&server, &db).await;
    (server, db, serve)
}

#[test]
fn migrate_twice_reports_what_it_did() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("cli").unwrap();
    let args = ["migrate", "--clickhouse-url", &server.http_url(), "--clickhouse-database", &db];
    let first = tally(&args);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success());
    assert!(
        stdout.contains("is at version 9 (legacy dialect): applied [1, 2, 3, 4, 5, 6, 7, 8, 9], already applied []"),
        "{stdout}"
    );
    // The same settings from a config file: the second run finds nothing to do.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tally.yaml");
    std::fs::write(&config, format!("clickhouse-url: {}\nclickhouse-database: {db}\n", server.http_url())).unwrap();
    let second = tally(&["migrate", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(stdout.contains(&format!("database {db} on {} is at version 9", server.http_url())), "{stdout}");
    assert!(stdout.contains("applied [], already applied [1, 2, 3, 4, 5, 6, 7, 8, 9]"), "{stdout}");
    // A typo in the file is refused with its line.
    std::fs::write(&config, "clickhouse-url: http://127.0.0.1:1\nclickhouse-databse: x\n").unwrap();
    let typo = tally(&["migrate", "--config", config.to_str().unwrap()]);
    assert_eq!(typo.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(stderr.contains("line 2: unknown setting `clickhouse-databse`"), "{stderr}");
    // A server that is not there: a clear error and a failing exit status.
    let down = tally(&["migrate", "--clickhouse-url", "http://127.0.0.1:9", "--clickhouse-timeout-secs", "2"]);
    assert!(!down.status.success());
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(
        stderr.contains("migrating database tally on http://127.0.0.1:9") && stderr.contains("unreachable"),
        "{stderr}"
    );
}

#[tokio::test]
async fn usage_is_exact_and_pages_with_cursors() {
    let (_server, _db, serve) = setup().await;
    let data = dataset();
    let (status, body) =
        get(&serve, "from=2026-01-01T00:00:00Z&to=2026-04-01T00:00:00Z&granularity=month", Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    let want = expected(&data, Granularity::Month, false, None, FROM, TO);
    let items = body["data"].as_array().unwrap();
    assert_eq!(items.len(), want.len());
    assert_eq!(body["next_cursor"], Value::Null);
    for item in items {
        let start = time::OffsetDateTime::parse(
            item["start"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let key = (
            item["tenant"].as_str().unwrap().to_owned(),
            item["meter"].as_str().unwrap().to_owned(),
            String::new(),
            start.unix_timestamp(),
        );
        // The value is an exact JSON number: compare its digits with the expected decimal.
        assert_eq!(item["value"].as_str().unwrap(), want[&key].normalize().to_string(), "{item}");
        let unit = if key.1 == "cpu_seconds" {
            "seconds"
        } else if key.1 == "span_bytes" {
            "bytes"
        } else {
            "count"
        };
        assert_eq!(item["unit"], unit);
    }
    // One tenant, one meter, by service and by day, three points a page.
    let q = "tenant=acme&meter=spans&from=2026-01-31T00:00:00Z&to=2026-03-01T00:00:00Z&granularity=day&group_by=service&limit=3";
    let want = expected(
        &data,
        Granularity::Day,
        true,
        Some("acme"),
        time::macros::datetime!(2026-01-31 00:00 UTC),
        time::macros::datetime!(2026-03-01 00:00 UTC),
    );
    let want: Vec<_> = want.into_iter().filter(|(k, _)| k.1 == "spans").collect();
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("{q}&cursor={c}"),
            None => q.to_owned(),
        };
        let (status, body) = get(&serve, &query, Some(KEY)).await;
        assert_eq!(status, 200, "{body}");
        let page = body["data"].as_array().unwrap();
        assert!(page.len() <= 3);
        for item in page {
            let start = time::OffsetDateTime::parse(
                item["start"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            let service = item["service"].as_str().unwrap().to_owned();
            got.push(((start.unix_timestamp(), service), item["value"].as_str().unwrap().parse::<Decimal>().unwrap()));
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    // Pages come in (tenant, meter, bucket, service) order.
    let mut want: Vec<_> = want.into_iter().map(|(k, v)| ((k.3, k.2), v)).collect();
    want.sort();
    assert_eq!(got, want);
    // A cursor used with other parameters is refused.
    let (_, body) = get(&serve, &format!("{q}&cursor={}", first_cursor(&serve, q).await), Some(KEY)).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 3);
    let other = q.replace("tenant=acme", "tenant=globex");
    let (status, body) = get(&serve, &format!("{other}&cursor={}", first_cursor(&serve, q).await), Some(KEY)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_cursor")));
}

async fn first_cursor(serve: &Serve, q: &str) -> String {
    get(serve, q, Some(KEY)).await.1["next_cursor"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn bad_requests_get_precise_errors() {
    let (_server, _db, serve) = setup().await;
    let ok = "from=2026-02-01T00:00:00Z&to=2026-03-01T00:00:00Z";
    let cases: Vec<(String, u16, &str, &str)> = vec![
        (
            format!("{ok}&meter=spanz"),
            400,
            "unknown_meter",
            "unknown meter \"spanz\"; known meters: spans, span_bytes,",
        ),
        (
            "from=2026-03-01T00:00:00Z&to=2026-02-01T00:00:00Z".into(),
            400,
            "invalid_range",
            "`from` (2026-03-01T00:00:00Z) must be before `to` (2026-02-01T00:00:00Z)",
        ),
        ("from=2026-02-01T00:00:00Z&to=2026-02-01T00:00:00Z".into(), 400, "invalid_range", "must be before"),
        (
            "from=2026-02-30&to=2026-03-01T00:00:00Z".into(),
            400,
            "invalid_parameter",
            "`from`: \"2026-02-30\" is not an RFC 3339 time",
        ),
        (
            "from=yesterday&to=2026-03-01T00:00:00Z".into(),
            400,
            "invalid_parameter",
            "`from`: \"yesterday\" is not an RFC 3339 time",
        ),
        ("to=2026-03-01T00:00:00Z".into(), 400, "missing_parameter", "`from` is required"),
        (
            "from=2026-02-01T00:00:30Z&to=2026-03-01T00:00:00Z".into(),
            400,
            "invalid_parameter",
            "must be on a whole minute",
        ),
        (
            format!("{ok}&tenant=acme%27%20OR%201%3D1%20--"),
            400,
            "invalid_parameter",
            "tenant: tenant id \"acme' OR 1=1 --\" contains '\\''",
        ),
        (format!("{ok}&tenant=%27%3B%20DROP%20TABLE%20usage"), 400, "invalid_parameter", "contains '\\''"),
        (
            format!("{ok}&granularity=week"),
            400,
            "invalid_parameter",
            "`granularity`: \"week\" is not one of minute, hour, day, month",
        ),
        (format!("{ok}&group_by=route"), 400, "invalid_parameter", "`group_by`: \"route\" is not supported"),
        (format!("{ok}&limit=0"), 400, "invalid_parameter", "`limit` must be between 1 and 10000, got 0"),
        (format!("{ok}&limit=ten"), 400, "invalid_parameter", "`limit`: \"ten\" is not a whole number"),
        (format!("{ok}&tennant=acme"), 400, "invalid_parameter", "unknown parameter `tennant`"),
        (format!("{ok}&cursor=not-a-cursor"), 400, "invalid_cursor", "not a cursor this API returned"),
    ];
    for (query, status, code, message) in cases {
        let (got_status, body) = get(&serve, &query, Some(KEY)).await;
        assert_eq!(got_status, status, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{query}: {text}");
    }
    // Authentication comes first: no key, a wrong key and a wrong scheme are 401.
    for key in [None, Some("wrong")] {
        let (status, body) = get(&serve, ok, key).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")));
    }
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/usage?{ok}", serve.base))
        .header("Authorization", format!("Basic {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    // The data survived all of that, and the other key works too.
    let (status, body) = get(&serve, &format!("{ok}&granularity=month"), Some("other-key")).await;
    assert_eq!(status, 200);
    assert!(!body["data"].as_array().unwrap().is_empty());
    // Unknown routes and methods answer in the same error shape.
    let resp = reqwest::get(format!("{}/v1/nope", serve.base)).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "not_found");
    let resp = reqwest::Client::new().post(format!("{}/v1/usage", serve.base)).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    // Without --plans no tenant has a plan, and the answer says why.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/tenants/acme/invoices/2026-02", serve.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body = resp.json::<Value>().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_tenant");
    assert_eq!(body["error"]["message"], "tally serve runs without a plans file (--plans), so no tenant has a plan");
}

#[tokio::test]
async fn openapi_describes_the_routes_and_a_down_store_is_503() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("down").unwrap();
    let serve = serve(&server, &db).await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", serve.base)).await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths: Vec<_> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        paths,
        vec![
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/v1/invoices/{month}",
            "/v1/periods/{month}",
            "/v1/periods/{month}/seal",
            "/v1/periods/{month}/verify",
            "/v1/reconciliation",
            "/v1/reports/sla/{month}",
            "/v1/reports/usage/{month}",
            "/v1/tenants/{tenant}/invoices/{month}",
            "/v1/usage"
        ]
    );
    let params: Vec<_> = doc["paths"]["/v1/usage"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(params, billing::api::usage::PARAMS);
    drop(server);
    let (status, body) = get(&serve, "from=2026-02-01T00:00:00Z&to=2026-03-01T00:00:00Z", Some(KEY)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("storage_unavailable")), "{body}");
}

/// `/metrics` counts every answer by route template and status, and times each route; a tenant
/// or a key never becomes a label.
#[tokio::test]
async fn metrics_count_answers_by_route_and_status() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("metrics").unwrap();
    let out = tally(&["migrate", "--clickhouse-url", &server.http_url(), "--clickhouse-database", &db]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let serve = serve(&server, &db).await;
    let query = "tenant=acme&from=2026-02-01T00:00:00Z&to=2026-03-01T00:00:00Z";
    for _ in 0..2 {
        assert_eq!(get(&serve, query, Some(KEY)).await.0, 200);
    }
    assert_eq!(get(&serve, query, None).await.0, 401);
    let client = reqwest::Client::new();
    let invoice = client.get(format!("{}/v1/tenants/globex/invoices/2026-02", serve.base)).bearer_auth(KEY);
    assert_eq!(invoice.send().await.unwrap().status().as_u16(), 404, "no plans file: no tenant has a plan");
    assert_eq!(client.get(format!("{}/nope", serve.base)).send().await.unwrap().status().as_u16(), 404);
    let text = client.get(format!("{}/metrics", serve.base)).send().await.unwrap().text().await.unwrap();
    // The harness polls /healthz until the server answers: how often is not this test's to say.
    let lines: Vec<&str> =
        text.lines().filter(|l| l.starts_with("tally_api_responses_total") && !l.contains("\"/healthz\"")).collect();
    let mut lines = lines.into_iter().map(str::to_owned).collect::<Vec<_>>();
    lines.sort();
    assert_eq!(
        lines,
        [
            "tally_api_responses_total{route=\"/v1/tenants/{tenant}/invoices/{month}\",code=\"404\"} 1",
            "tally_api_responses_total{route=\"/v1/usage\",code=\"200\"} 2",
            "tally_api_responses_total{route=\"/v1/usage\",code=\"401\"} 1",
            "tally_api_responses_total{route=\"unmatched\",code=\"404\"} 1",
        ],
        "{text}"
    );
    assert!(text.contains("tally_api_request_seconds_count{route=\"/v1/usage\"} 3"), "{text}");
    assert!(!text.contains("acme") && !text.contains(KEY), "{text}");
}

#[test]
fn serve_without_a_billing_key_refuses_to_start() {
    let out = tally(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tally serve needs at least one --billing-key"));
}

#[tokio::test]
async fn custom_meters_are_known_with_the_meters_file_only() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("api_custom").unwrap();
    let out = tally(&["migrate", "--clickhouse-url", &server.http_url(), "--clickhouse-database", &db]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let meters = dir.path().join("meters.yaml");
    let yaml = "meters:\n  - {name: llm_tokens, signal: traces, aggregation: sum, attribute: llm.tokens}\n  \
                - {name: gpu_seconds, signal: metrics, aggregation: sum, unit: seconds}\n";
    std::fs::write(&meters, yaml).unwrap();
    let catalog = Catalog::with_custom(&metering::meter::definition::load(&meters).unwrap());
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let mut writer = UsageWriter::new(ch, &db, catalog).unwrap();
    let t = time::macros::datetime!(2026-02-10 12:00 UTC);
    let records = vec![
        metering::record::UsageRecord::new("acme", "llm_tokens", t, "1234.5".parse().unwrap()),
        metering::record::UsageRecord::new("acme", "gpu_seconds", t, "0.25".parse().unwrap()),
    ];
    writer.push(&metering::record::UsageBatch { source_id: "t".into(), seq: 1, records }).unwrap();
    writer.flush().await.unwrap();
    let q = |meter: &str| format!("from=2026-02-01T00:00:00Z&to=2026-03-01T00:00:00Z&granularity=month&meter={meter}");

    let with = serve_with(&server, &db, &["--meters", meters.to_str().unwrap()]).await;
    for (meter, value, unit) in [("llm_tokens", "1234.5", "count"), ("gpu_seconds", "0.25", "seconds")] {
        let (status, body) = get(&with, &q(meter), Some(KEY)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"][0]["value"], value, "{body}");
        assert_eq!(body["data"][0]["unit"], unit, "{body}");
    }
    let doc: Value = reqwest::get(format!("{}/openapi.json", with.base)).await.unwrap().json().await.unwrap();
    let meter_param = doc["paths"]["/v1/usage"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "meter")
        .unwrap()
        .clone();
    assert!(meter_param["schema"]["enum"].as_array().unwrap().iter().any(|m| m == "llm_tokens"), "{meter_param}");
    drop(with);

    let without = serve(&server, &db).await;
    let (status, body) = get(&without, &q("llm_tokens"), Some(KEY)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unknown_meter", "{body}");

    // A bad meters file stops `tally serve` before it listens, naming the file, meter and reason.
    std::fs::write(&meters, "meters:\n  - {name: spans, signal: traces, aggregation: count}\n").unwrap();
    let out = tally(&["serve", "--billing-key", KEY, "--meters", meters.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "meters file {} line 2: meter #0 (\"spans\"): name \"spans\" is a built-in meter's",
            meters.display()
        )),
        "{stderr}"
    );
}
