//! Invoices from usage and SLA rows stored in a real ClickHouse 18.16: `tally invoice`
//! and `GET /v1/tenants/{tenant}/invoices/{month}` give the hand-computed figures of
//! `src/pricing/tests.rs` (the arithmetic is written out there), and tenant keys read
//! only their own tenant. The same reads on chDB (the modern dialect) give the same invoices.

use std::path::{Path, PathBuf};
use std::time::Duration;

use metering::clickhouse::client::parse_tsv;
use metering::clickhouse::ClickHouse;
use metering::meter::{definition, Catalog};
use metering::pricing::invoice::{compute, windows, Inputs, Usage};
use metering::pricing::store as pricing_store;
use metering::pricing::{plan_file, BillingMonth};
use metering::record::{UsageBatch, UsageRecord};
use metering::sla::schema::SLA_ROW;
use metering::sla::{encode_sla_batch, insert_sla, SlaRecord};
use metering::store::migrate::migrate;
use metering::store::rollup::MAX_LIMIT;
use metering::store::writer::UsageWriter;
use metering::store::{Dialect, Store};
use serde_json::Value;
use testkit::tally::{start, tally, Serve};
use testkit::{Chdb, ClickHouseServer};
use time::macros::datetime;
use time::OffsetDateTime;

const BILLING: &str = "billing-key-1";
const ACME_KEY: &str = "acme-key-1";
const LOTUS_KEY: &str = "lotus-key-1";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../metering/tests/fixtures").join(name)
}

fn rec(tenant: &str, meter: &str, at: OffsetDateTime, value: u64, service: &str) -> UsageRecord {
    UsageRecord::new(tenant, meter, at, value.into()).with_service(service)
}

/// acme: starter until 2026-11-21, growth from then. Usage on both sides of the
/// change at the last and first minute, and outside November (not invoiced).
fn acme_usage() -> Vec<UsageRecord> {
    vec![
        rec("acme", "spans", datetime!(2026-10-31 23:59:59.999 UTC), 5_555_555, "api"),
        rec("acme", "spans", datetime!(2026-11-01 00:00 UTC), 1_000_000, "api"),
        rec("acme", "spans", datetime!(2026-11-10 12:34 UTC), 6_000_000, "web"),
        rec("acme", "spans", datetime!(2026-11-20 23:59:59.999 UTC), 345_678, "api"),
        rec("acme", "requests", datetime!(2026-11-05 08:00 UTC), 100_000, "api"),
        rec("acme", "requests", datetime!(2026-11-20 23:59 UTC), 23_457, "web"),
        // growth: 9,809,662 spans; requests are not priced by growth.
        rec("acme", "spans", datetime!(2026-11-21 00:00 UTC), 9_000_000, "api"),
        rec("acme", "spans", datetime!(2026-11-30 23:59:59 UTC), 809_662, "web"),
        rec("acme", "requests", datetime!(2026-11-25 10:00 UTC), 50_000, "api"),
        rec("acme", "spans", datetime!(2026-12-01 00:00 UTC), 7_777_777, "api"),
    ]
}

/// lotus on the reference plan: metric points by kind on three days of November.
fn lotus_usage() -> Vec<UsageRecord> {
    let mut out = vec![rec("lotus", "counter_points", datetime!(2026-10-31 12:00 UTC), 9_999_999, "")];
    for (day, counters, histograms, gauges) in [
        (datetime!(2026-11-03 00:00 UTC), 1_234_567u64, 50_000u64, 200_000u64),
        (datetime!(2026-11-04 00:00 UTC), 400_000, 350_000, 210_001),
        (datetime!(2026-11-30 00:00 UTC), 500_001, 100_000, 0),
    ] {
        // Split over the day, first and last minute.
        let late = day + time::Duration::minutes(1439);
        out.push(rec("lotus", "counter_points", day, counters - counters / 3, "a"));
        out.push(rec("lotus", "counter_points", late, counters / 3, "b"));
        out.push(rec("lotus", "histogram_points", late, histograms, "a"));
        if gauges > 0 {
            out.push(rec("lotus", "gauge_points", day, gauges, "a"));
        }
    }
    out
}

/// acme's November requests: 150,000 with 200 errors on `api`, 50,000 with 100 on
/// `web` (99.85 %); October's failures do not count.
fn acme_sla() -> Vec<Vec<SlaRecord>> {
    let mut api = SlaRecord::new("acme", "api", "/pay", datetime!(2026-11-10 10:00 UTC));
    for i in 0..150_000u64 {
        api.observe(1_000_000 + i, i < 200, "");
    }
    let mut web = SlaRecord::new("acme", "web", "", datetime!(2026-11-25 10:00 UTC));
    for i in 0..50_000u64 {
        web.observe(2_000_000, i < 100, "");
    }
    let mut october = SlaRecord::new("acme", "api", "/pay", datetime!(2026-10-31 23:59 UTC));
    for _ in 0..1000 {
        october.observe(1_000_000, true, "");
    }
    vec![vec![api], vec![web], vec![october]]
}

fn catalog() -> Catalog {
    Catalog::with_custom(&definition::load(&fixture("meters.yaml")).unwrap())
}

/// acme's and lotus's batches, then acme's again, as a retry would send it: it counts once.
fn usage_batches() -> Vec<UsageBatch> {
    let acme = UsageBatch { source_id: "agent-a:boot-1".into(), seq: 1, records: acme_usage() };
    let lotus = UsageBatch { source_id: "agent-b:boot-1".into(), seq: 7, records: lotus_usage() };
    vec![acme.clone(), lotus, acme]
}

/// The SLA rows as the collector writes them, the first batch twice (a retry).
fn sla_bytes() -> Vec<u8> {
    let mut bytes = Vec::new();
    let sla = acme_sla();
    for (seq, records) in sla.iter().enumerate().chain(std::iter::once((0, &sla[0]))) {
        encode_sla_batch("collector-a:boot-1", seq as u64, records, &mut bytes).unwrap();
    }
    bytes
}

async fn setup() -> (ClickHouseServer, String) {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("invoice").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    migrate(&Store::new(ch.clone(), &db)).await.unwrap();
    let mut writer = UsageWriter::new(ch.clone(), &db, catalog()).unwrap();
    for b in usage_batches() {
        writer.push(&b).unwrap();
        writer.flush().await.unwrap();
    }
    ch.insert_rowbinary(&insert_sla(&db).unwrap(), sla_bytes().into()).await.unwrap();
    (server, db)
}

fn amounts(inv: &Value) -> Vec<&str> {
    ["charges", "sla_credit", "subtotal", "tax", "total"].iter().map(|k| inv[k].as_str().unwrap()).collect()
}

fn line<'v>(inv: &'v Value, plan: &str, kind: &str, meter: Option<&str>) -> &'v Value {
    inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["plan"] == plan && l["kind"] == kind && meter.is_none_or(|m| l["meter"] == m))
        .unwrap_or_else(|| panic!("no {kind} line {meter:?} under {plan}: {inv}"))
}

/// The figures of `hand_computed_invoice_with_plan_change_conversion_credit_and_tax`.
fn check_acme(inv: &Value) {
    assert_eq!(
        (inv["tenant"].as_str(), inv["month"].as_str(), inv["currency"].as_str()),
        (Some("acme"), Some("2026-11"), Some("EUR")),
        "{inv}"
    );
    let plans: Vec<_> = inv["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["plan"].as_str().unwrap(),
                p["from"].as_str().unwrap(),
                p["until"].as_str().unwrap(),
                p["days"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(plans, [("starter", "2026-11-01", "2026-11-21", 20), ("growth", "2026-11-21", "2026-12-01", 10)]);
    assert_eq!(
        inv["plans"][0]["conversion"],
        serde_json::json!({"from": "USD", "to": "EUR", "rate": "0.8634", "date": "2026-11-30"})
    );
    let spans = line(inv, "starter", "usage", Some("spans"));
    let fields: Vec<_> =
        ["usage", "allowance", "free", "billable", "amount"].iter().map(|k| spans[k].as_str().unwrap()).collect();
    assert_eq!(fields, ["7345678", "1000000", "1000000", "6345678", "23.64"]);
    let tiers: Vec<_> = spans["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["quantity"].as_str().unwrap(), t["amount"].as_str().unwrap()))
        .collect();
    assert_eq!(tiers, [("2000000", "8.63"), ("4345678", "15.01"), ("0", "0.00")]);
    assert_eq!(line(inv, "starter", "usage", Some("requests"))["amount"], "7.46");
    assert_eq!(line(inv, "starter", "base_fee", None)["amount"], "17.27");
    let growth = line(inv, "growth", "usage", Some("spans"));
    assert_eq!(
        (growth["usage"].as_str(), growth["billable"].as_str(), growth["amount"].as_str()),
        (Some("9809662"), Some("7809662"), Some("23.60"))
    );
    assert_eq!(line(inv, "growth", "base_fee", None)["amount"], "25.90");
    assert_eq!(inv["lines"].as_array().unwrap().len(), 5);
    assert_eq!(inv["sla"], serde_json::json!({"requests": 200_000, "errors": 300, "availability_percent": "99.85"}));
    let credits: Vec<_> = inv["credits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["plan"].as_str().unwrap(), c["charges"].as_str().unwrap(), c["amount"].as_str().unwrap()))
        .collect();
    assert_eq!(credits, [("starter", "48.37", "4.84"), ("growth", "49.50", "7.43")]);
    assert_eq!(amounts(inv), ["97.87", "12.27", "85.60", "16.26", "101.86"]);
}

/// The figures of `hand_computed_invoice_with_daily_allowances_in_jpy`.
fn check_lotus(inv: &Value) {
    assert_eq!((inv["tenant"].as_str(), inv["currency"].as_str()), (Some("lotus"), Some("JPY")), "{inv}");
    let c = line(inv, "origin", "usage", Some("counter_points"));
    assert_eq!(
        (c["usage"].as_str(), c["free"].as_str(), c["billable"].as_str(), c["amount"].as_str()),
        (Some("2134568"), Some("1400000"), Some("734568"), Some("1256"))
    );
    assert_eq!(line(inv, "origin", "usage", Some("histogram_points"))["amount"], "1336");
    assert_eq!(line(inv, "origin", "usage", Some("gauge_points"))["amount"], "26");
    assert_eq!(amounts(inv), ["2618", "0", "2618", "157", "2775"]);
    assert_eq!(inv["sla"]["availability_percent"], Value::Null);
}

#[tokio::test]
async fn tally_invoice_prints_the_hand_computed_invoices() {
    let (server, db) = setup().await;
    let plans = fixture("plans.yaml");
    let meters = fixture("meters.yaml");
    // `tally invoice` on this store with the plans and meters files, then `args`.
    let invoice = |args: &[&str]| {
        let url = server.http_url();
        let (plans, meters) = (plans.to_str().unwrap(), meters.to_str().unwrap());
        let store = ["invoice", "--clickhouse-url", &url, "--clickhouse-database", &db];
        tally(&[&store[..], &["--plans", plans, "--meters", meters], args].concat())
    };
    let run = |tenant: &str, format: &str| invoice(&["--tenant", tenant, "--month", "2026-11", "--format", format]);
    let out = run("acme", "json");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_acme(&serde_json::from_slice(&out.stdout).unwrap());

    // The reference plan: daily allowances, CNY prices invoiced in JPY.
    let out = run("lotus", "json");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_lotus(&serde_json::from_slice(&out.stdout).unwrap());

    // Every tenant at once: the same invoices.
    let out = invoice(&["--all", "--month", "2026-11"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all["month"], "2026-11");
    assert_eq!(all["invoices"].as_array().map(Vec::len), Some(2), "{all}");
    check_acme(&all["invoices"][0]);
    check_lotus(&all["invoices"][1]);

    let out = run("acme", "text");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.starts_with("Invoice 2026-11 for tenant acme (EUR, region de)\n"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("  SLA credit [growth]: below 99.95 % → 15 % of 49.50 ") && l.ends_with(" 7.43 EUR")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("  total") && l.ends_with(" 101.86 EUR")), "{text}");

    // A month without a plan, and a bad plans file, fail with the reason.
    let out = invoice(&["--tenant", "lotus", "--month", "2026-10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tenant \"lotus\" has no plan in effect in 2026-10"));
    // Without the meters file, the plans' custom meters are unknown: refused at load with the line.
    let out = tally(&[
        "invoice",
        "--clickhouse-url",
        &server.http_url(),
        "--clickhouse-database",
        &db,
        "--plans",
        plans.to_str().unwrap(),
        "--tenant",
        "lotus",
        "--month",
        "2026-11",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "plans file {} line 40: plans.origin.meters.counter_points: unknown meter \"counter_points\"",
            plans.display()
        )),
        "{stderr}"
    );
}

async fn get(serve: &Serve, path: &str, key: &str) -> (u16, Value) {
    let resp = reqwest::Client::new().get(format!("{}{path}", serve.base)).bearer_auth(key).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn the_api_serves_invoices_and_tenant_keys_read_only_their_own() {
    let (server, db) = setup().await;
    let plans = fixture("plans.yaml");
    let meters = fixture("meters.yaml");
    let lotus_digest =
        "sha256:".to_owned() + &runtime::auth::digest(LOTUS_KEY).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let serve = start(
        &server.http_url(),
        &db,
        &[
            "--billing-key",
            BILLING,
            "--plans",
            plans.to_str().unwrap(),
            "--meters",
            meters.to_str().unwrap(),
            "--tenant-key",
            &format!("acme={ACME_KEY}"),
            "--tenant-key",
            &format!("lotus={lotus_digest}"),
        ],
    )
    .await;

    for key in [BILLING, ACME_KEY] {
        let (status, inv) = get(&serve, "/v1/tenants/acme/invoices/2026-11", key).await;
        assert_eq!(status, 200, "{inv}");
        check_acme(&inv);
    }
    let (status, inv) = get(&serve, "/v1/tenants/lotus/invoices/2026-11", LOTUS_KEY).await;
    assert_eq!((status, inv["total"].as_str()), (200, Some("2775")), "{inv}");

    // A tenant key reading another tenant: 403, for invoices and usage alike.
    let (status, body) = get(&serve, "/v1/tenants/acme/invoices/2026-11", LOTUS_KEY).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert_eq!(body["error"]["message"], "this key may not read tenant \"acme\"");
    let (status, body) = get(&serve, "/v1/tenants/nobody/invoices/2026-11", ACME_KEY).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let usage = "/v1/usage?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&granularity=month";
    let (status, body) = get(&serve, &format!("{usage}&tenant=acme"), LOTUS_KEY).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    // Without `tenant`, a tenant key reads its own usage only.
    let (status, body) = get(&serve, usage, LOTUS_KEY).await;
    assert_eq!(status, 200, "{body}");
    let tenants: Vec<_> = body["data"].as_array().unwrap().iter().map(|p| p["tenant"].as_str().unwrap()).collect();
    assert_eq!(tenants, ["lotus"; 3], "{body}");

    // Every tenant's month at once: the same invoices as one by one; a tenant key, its own.
    let (status, all) = get(&serve, "/v1/invoices/2026-11", BILLING).await;
    assert_eq!((status, all["month"].as_str()), (200, Some("2026-11")), "{all}");
    let tenants: Vec<_> = all["invoices"].as_array().unwrap().iter().map(|i| i["tenant"].as_str().unwrap()).collect();
    assert_eq!(tenants, ["acme", "lotus"]);
    check_acme(&all["invoices"][0]);
    check_lotus(&all["invoices"][1]);
    for (n, tenant) in tenants.iter().enumerate() {
        let one = get(&serve, &format!("/v1/tenants/{tenant}/invoices/2026-11"), BILLING).await.1;
        assert_eq!(all["invoices"][n], one, "{tenant}");
    }
    let (status, own) = get(&serve, "/v1/invoices/2026-11", LOTUS_KEY).await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["invoices"].as_array().map(Vec::len), Some(1));
    assert_eq!(own["invoices"][0], all["invoices"][1]);
    // October: lotus has no plan yet (left out). September: acme's starter plan is in USD for a
    // EUR invoice and no rate is dated by then.
    let (status, body) = get(&serve, "/v1/invoices/2026-10", BILLING).await;
    assert_eq!((status, body["error"]["code"].as_str()), (200, None), "{body}");
    assert_eq!(body["invoices"].as_array().unwrap().iter().map(|i| &i["tenant"]).collect::<Vec<_>>(), ["acme"]);
    let (status, body) = get(&serve, "/v1/invoices/2026-09", BILLING).await;
    assert_eq!((status, body["error"]["code"].as_str()), (500, Some("pricing_error")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("tenant \"acme\": no USD→EUR rate"), "{body}");
    for (path, want) in [("/v1/invoices/2026-13", 400), ("/v1/invoices/2026-11?tenant=acme", 400)] {
        let (status, body) = get(&serve, path, BILLING).await;
        assert_eq!((status, body["error"]["code"].as_str()), (want, Some("invalid_parameter")), "{path}: {body}");
    }
    assert_eq!(get(&serve, "/v1/invoices/2026-11", "nope").await.0, 401);

    // Errors: unknown key, bad month, unknown tenant, month without a plan, a parameter.
    let (status, _) = get(&serve, "/v1/tenants/acme/invoices/2026-11", "nope").await;
    assert_eq!(status, 401);
    for (path, want_status, code) in [
        ("/v1/tenants/acme/invoices/2026-13", 400, "invalid_parameter"),
        ("/v1/tenants/acme/invoices/2026-11?format=csv", 400, "invalid_parameter"),
        ("/v1/tenants/nobody/invoices/2026-11", 404, "unknown_tenant"),
        ("/v1/tenants/lotus/invoices/2026-10", 404, "no_plan"),
        ("/v1/tenants/acme/invoices/2026-09", 500, "pricing_error"),
    ] {
        let (status, body) = get(&serve, path, BILLING).await;
        assert_eq!((status, body["error"]["code"].as_str()), (want_status, Some(code)), "{path}: {body}");
    }

    // The OpenAPI document describes the route, its parameters, statuses and body.
    let doc: Value = reqwest::get(format!("{}/openapi.json", serve.base)).await.unwrap().json().await.unwrap();
    let route = &doc["paths"]["/v1/tenants/{tenant}/invoices/{month}"]["get"];
    let params: Vec<_> = route["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
        .collect();
    assert_eq!(params, [("tenant", "path"), ("month", "path")]);
    let statuses: Vec<_> = route["responses"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(statuses, ["200", "400", "401", "403", "404", "422", "429", "500", "503", "504"]);
    assert_eq!(
        route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Invoice"
    );
    // Every field the invoice has is described, and only those.
    let described: Vec<_> =
        doc["components"]["schemas"]["Invoice"]["properties"].as_object().unwrap().keys().cloned().collect();
    let mut present: Vec<_> = get(&serve, "/v1/tenants/acme/invoices/2026-11", BILLING)
        .await
        .1
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    present.sort();
    // Only for sealed months and the month after one: see tests/seal.rs.
    let mut described_sorted: Vec<_> =
        described.iter().filter(|k| !["sealed_digest", "adjustments"].contains(&k.as_str())).cloned().collect();
    described_sorted.sort();
    assert_eq!(described_sorted, present);
    assert!(doc["components"]["schemas"]["InvoiceLine"]["properties"]["meter"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "counter_points"));
}

/// The same reads on chDB (ClickHouse 26.x), with tables of both dialects, give the same invoices.
#[test]
fn invoice_reads_run_on_the_modern_dialect() {
    let catalog = catalog();
    let book = plan_file::load(&fixture("plans.yaml"), &catalog).unwrap();
    let month = BillingMonth::parse("2026-11").unwrap();
    let mut chdb = Chdb::start().unwrap();
    for (db, dialect) in [("modern", Dialect::Modern), ("legacy", Dialect::Legacy)] {
        testkit::usage::chdb_migrate(&mut chdb, db, dialect);
        testkit::usage::chdb_insert_usage(&mut chdb, db, &usage_batches(), &catalog);
        testkit::usage::chdb_insert_rowbinary(
            &mut chdb,
            &format!("{db}.sla"),
            &insert_sla(db).unwrap(),
            &SLA_ROW.structure(),
            &sla_bytes(),
        );
        let mut price = |tenant: &str| {
            let mut usage = Usage::new();
            for window in windows(&book, tenant, month).unwrap() {
                let q = pricing_store::usage_query(Some(tenant), &window);
                let points = q.parse_rows(parse_tsv(&chdb.query(q.to_sql(db).unwrap().as_str()).unwrap())).unwrap();
                assert!(points.len() < MAX_LIMIT as usize);
                pricing_store::record_usage(&mut usage, &window, &points);
            }
            let q = pricing_store::sla_query(Some(tenant), month);
            let sla = q.parse_rows(parse_tsv(&chdb.query(q.to_sql(db).unwrap().as_str()).unwrap())).unwrap();
            let inputs = Inputs { usage: &usage, availability: pricing_store::availability(&sla), catalog: &catalog };
            serde_json::to_value(compute(&book, tenant, month, inputs).unwrap()).unwrap()
        };
        check_acme(&price("acme"));
        check_lotus(&price("lotus"));
    }
}
