//! The Grafana dashboards of `dashboards/` against real data: every ClickHouse query (panels and
//! template variables), with Grafana's macros substituted as the ClickHouse datasource does,
//! runs on a real ClickHouse 18.16 and on chDB (the modern dialect) over usage and SLA rows
//! written by our own writers, and returns rows. The latency percentiles computed in SQL equal
//! the Rust sketch's answers. The pipeline dashboard's Prometheus metrics exist in the code.

use metering::store::Store;
use std::collections::BTreeMap;
use std::time::Duration;

use metering::clickhouse::client::parse_tsv;
use metering::clickhouse::ClickHouse;
use metering::meter::Catalog;
use metering::record::{UsageBatch, UsageRecord};
use metering::sla::schema::SLA_ROW;
use metering::sla::{encode_sla_batch, insert_sla, LatencySketch, SlaRecord};
use metering::store::migrate::migrate;
use metering::store::writer::UsageWriter;
use metering::store::Dialect;
use rust_decimal::Decimal;
use serde_json::Value;
use testkit::{Chdb, ClickHouseServer};
use time::OffsetDateTime;

const CLICKHOUSE: &str = "grafana-clickhouse-datasource";

fn dashboard(name: &str) -> Value {
    let path = format!("{}/../dashboards/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every ClickHouse query of a dashboard: (where, SQL), template variables first.
fn clickhouse_queries(name: &str) -> Vec<(String, String)> {
    let d = dashboard(name);
    let mut out = Vec::new();
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["datasource"]["type"] == CLICKHOUSE {
            out.push((format!("{name}: variable {}", v["name"]), v["query"].as_str().unwrap().to_owned()));
        }
    }
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            if t["datasource"]["type"] == CLICKHOUSE {
                out.push((
                    format!("{name}: panel {} {}", p["title"], t["refId"]),
                    t["rawSql"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out
}

/// The first instant of the month `months` before `t`'s (UTC).
fn month_start(t: OffsetDateTime, months: u8) -> OffsetDateTime {
    let mut d = t.date().replace_day(1).unwrap();
    for _ in 0..months {
        d = d.previous_day().unwrap().replace_day(1).unwrap();
    }
    d.midnight().assume_utc()
}

/// The dashboard's time range and data times: one point within this month (before now) and one
/// within last month, so month to date and last month both have usage.
struct Times {
    from: i64,
    to: i64,
    this_month: OffsetDateTime,
    last_month: OffsetDateTime,
}

fn times() -> Times {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let start = month_start(now, 0);
    let this_month = start + (now - start) / 2;
    let last_month = month_start(now, 1) + time::Duration::days(3);
    Times { from: month_start(now, 1).unix_timestamp(), to: now.unix_timestamp() + 60, this_month, last_month }
}

/// Usage of two tenants in two services, this month and last, with a retried batch (must count
/// once) and pipeline meters.
fn usage(t: &Times) -> Vec<UsageBatch> {
    let mut batches = Vec::new();
    for (seq, at) in [(1u64, t.this_month), (2, t.last_month)] {
        let mut records = Vec::new();
        for (tenant, n) in [("acme", 1000), ("globex", 250)] {
            for service in ["checkout", "search"] {
                records.push(UsageRecord::new(tenant, "spans", at, Decimal::from(n)).with_service(service));
                records
                    .push(UsageRecord::new(tenant, "cpu_seconds", at, Decimal::new(12_345, 3)).with_service(service));
            }
            records.push(UsageRecord::new(tenant, "dropped_spans", at, Decimal::from(3)));
            records.push(UsageRecord::new(tenant, "throttled_spans", at, Decimal::from(7)));
        }
        batches.push(UsageBatch { source_id: "agent-a:boot-1".into(), seq, records });
    }
    batches.push(UsageBatch { source_id: batches[0].source_id.clone(), seq: 1, records: batches[0].records.clone() });
    batches
}

/// acme/checkout: 200 requests of 1..=200 ms, every 50th failed; globex/api: 50 of 2 ms.
fn sla(t: &Times) -> (Vec<u8>, LatencySketch) {
    let mut records = Vec::new();
    let mut checkout = LatencySketch::new();
    for i in 1..=200u64 {
        let mut r = SlaRecord::new("acme", "checkout", "/pay", t.this_month);
        r.observe(i * 1_000_000, i % 50 == 0, &format!("{i:032x}"));
        checkout.add(i * 1_000_000);
        records.push(r);
    }
    for i in 1..=50u64 {
        let mut r = SlaRecord::new("globex", "api", "", t.this_month);
        r.observe(2_000_000, false, &format!("{:032x}", 1000 + i));
        records.push(r);
    }
    let mut bytes = Vec::new();
    encode_sla_batch("collector-a", 1, &records, &mut bytes).unwrap();
    encode_sla_batch("collector-a", 1, &records, &mut bytes).unwrap(); // a retry: counts once
    (bytes, checkout)
}

/// `sql` as Grafana's ClickHouse datasource sends it for the range and interval.
fn substitute(sql: &str, db: &str, t: &Times, interval_s: i64) -> String {
    let mut out = sql.replace("${database}", db);
    while let Some(at) = out.find("$__timeFilter(") {
        let open = at + "$__timeFilter(".len();
        let close = open + out[open..].find(')').unwrap();
        let col = out[open..close].to_owned();
        let filter = format!("{col} >= toDateTime({}) AND {col} <= toDateTime({})", t.from, t.to);
        out.replace_range(at..=close, &filter);
    }
    out = out
        .replace("$__fromTime", &format!("toDateTime({})", t.from))
        .replace("$__toTime", &format!("toDateTime({})", t.to))
        .replace("$__interval_s", &interval_s.to_string())
        .replace("$tenant", "'acme','globex'")
        .replace("$meter", "spans")
        .replace("$slo", "99.9");
    assert!(!out.contains('$'), "a macro or variable the test does not know: {out}");
    out
}

fn all_queries() -> Vec<(String, String)> {
    let all: Vec<_> = ["usage", "sla"].into_iter().flat_map(clickhouse_queries).collect();
    // usage: 2 variables + 6 panels; sla: 1 variable + 5 panels.
    assert_eq!(all.len(), 14, "{all:#?}");
    all
}

/// Rows each query returned, which every query must have.
fn check_rows(results: &BTreeMap<String, Vec<Vec<String>>>) {
    for (name, rows) in results {
        assert!(!rows.is_empty(), "{name} returned no rows");
    }
    let rows = |suffix: &str| -> &Vec<Vec<String>> {
        results.iter().find(|(k, _)| k.contains(suffix)).unwrap_or_else(|| panic!("no query {suffix}")).1
    };
    // Top tenants: acme first; month to date and last month each 2 services × 1000 spans,
    // the retried batch counted once.
    let top = rows("Top tenants");
    assert_eq!(top.len(), 2, "{top:?}");
    assert_eq!(top[0][..4], ["acme", "count", "2000", "2000"].map(String::from), "{top:?}");
    assert_eq!(top[1][..4], ["globex", "count", "500", "500"].map(String::from), "{top:?}");
    // The range covers both months: 4 meters per tenant.
    let by_meter = rows("Usage by tenant and meter");
    assert_eq!(by_meter.len(), 8, "{by_meter:?}");
    let acme_spans = by_meter.iter().find(|r| r[0] == "acme" && r[1] == "spans").unwrap();
    assert_eq!(acme_spans[3], "4000");
    let worst = rows("Worst hours");
    assert_eq!(worst[0][1..5], ["acme", "checkout", "200", "4"].map(String::from), "{worst:?}");
    let budget = rows("Availability and error budget");
    assert_eq!(budget[0][..4], ["acme", "checkout", "200", "4"].map(String::from), "{budget:?}");
    // 2 % errors against a 0.1 % budget: 2,000 % of it used.
    assert!((budget[0][5].parse::<f64>().unwrap() - 2000.0).abs() < 1e-6, "{budget:?}");
    assert_eq!(rows("variable \"tenant\"").len(), 2);
}

/// The percentile panel over one bucket equals the sketch's answers for acme/checkout.
fn check_percentiles(rows: &[Vec<String>], sketch: &LatencySketch) {
    let got: BTreeMap<&str, f64> =
        rows.iter().filter(|r| r[1].starts_with("checkout ")).map(|r| (r[1].as_str(), r[2].parse().unwrap())).collect();
    assert_eq!(got.len(), 4, "{rows:?}");
    for (label, ppm) in
        [("checkout p50", 500_000), ("checkout p90", 900_000), ("checkout p95", 950_000), ("checkout p99", 990_000)]
    {
        let want = sketch.quantile_ppm(ppm).unwrap() as f64 / 1e6;
        assert_eq!(got[label], want, "{label}: {rows:?}");
    }
    // Exactly the 99th request's neighbourhood: 198 ms within the sketch's 1/256.
    assert!((got["checkout p99"] - 198.0).abs() * 256.0 <= 198.0);
}

const PERCENTILES: &str = "Latency p50";

#[tokio::test]
async fn dashboard_queries_return_rows_on_18_16() {
    let t = times();
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("dashboards").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    assert_eq!(migrate(&store).await.unwrap().dialect, Dialect::Legacy);
    let mut writer = UsageWriter::new(ch.clone(), &db, Catalog::builtin()).unwrap();
    for b in usage(&t) {
        writer.push(&b).unwrap();
        writer.flush().await.unwrap(); // one INSERT per batch, as the collector's sink does
    }
    let (sla_rows, sketch) = sla(&t);
    ch.insert_rowbinary(&insert_sla(&db).unwrap(), sla_rows.into()).await.unwrap();

    let mut results = BTreeMap::new();
    for (name, sql) in all_queries() {
        let sql = substitute(&sql, &db, &t, 3600);
        let out = server.query(&format!("{sql} FORMAT TabSeparated")).unwrap_or_else(|e| panic!("{name}: {e}\n{sql}"));
        results.insert(name, parse_tsv(&out));
    }
    check_rows(&results);
    let (_, pct) = all_queries().into_iter().find(|(n, _)| n.contains(PERCENTILES)).unwrap();
    let one_bucket = substitute(&pct, &db, &t, 100 * 86_400);
    check_percentiles(&parse_tsv(&server.query(&format!("{one_bucket} FORMAT TabSeparated")).unwrap()), &sketch);
}

#[test]
fn dashboard_queries_return_rows_on_the_modern_dialect() {
    let t = times();
    let mut chdb = Chdb::start().unwrap();
    let db = "dashboards";
    testkit::usage::chdb_migrate(&mut chdb, db, Dialect::Modern);
    testkit::usage::chdb_insert_usage(&mut chdb, db, &usage(&t), &Catalog::builtin());
    let (sla_rows, sketch) = sla(&t);
    testkit::usage::chdb_insert_rowbinary(&mut chdb, "sla", &insert_sla(db).unwrap(), &SLA_ROW.structure(), &sla_rows);

    let mut results = BTreeMap::new();
    for (name, sql) in all_queries() {
        let sql = substitute(&sql, db, &t, 3600);
        let out = chdb.query(&sql).unwrap_or_else(|e| panic!("{name}: {e}\n{sql}"));
        results.insert(name, parse_tsv(&out));
    }
    check_rows(&results);
    let (_, pct) = all_queries().into_iter().find(|(n, _)| n.contains(PERCENTILES)).unwrap();
    check_percentiles(&parse_tsv(&chdb.query(&substitute(&pct, db, &t, 100 * 86_400)).unwrap()), &sketch);
}

/// Every metric the pipeline dashboard plots is one the running agent or collector exposes on
/// /metrics (its `# TYPE` line; counters and histograms by their family name). Labelled
/// families appear only once they have a sample (traffic, loaded eBPF probes): those must be
/// registered under that name in the binary's metrics.rs.
#[tokio::test]
async fn pipeline_dashboard_metrics_are_exposed() {
    use testkit::service::{binary, free_port, Service};
    let dir = tempfile::tempdir().unwrap();
    let port = |p: u16| format!("127.0.0.1:{p}");
    let (grpc, c_admin, a_admin) = (free_port(), free_port(), free_port());
    let collector_args =
        ["--allow-anonymous", "--clickhouse-url", "http://127.0.0.1:9", "--http-listen", &port(free_port())];
    let mut collector = Service::new(
        binary("tally-collector"),
        collector_args.iter().map(|s| s.to_string()).collect(),
        format!("http://{}", port(c_admin)),
    );
    let data = dir.path().join("spool").display().to_string();
    collector
        .start(&["--grpc-listen", &port(grpc), "--admin-listen", &port(c_admin), "--data-dir", &data])
        .await
        .unwrap();
    let mut agent = Service::new(binary("tally-agent"), vec!["--no-ebpf".into()], format!("http://{}", port(a_admin)));
    let wal = dir.path().join("wal").display().to_string();
    let collector_url = format!("http://{}", port(grpc));
    let (otlp_grpc, otlp_http) = (port(free_port()), port(free_port()));
    agent
        .start(&[
            "--collector",
            &collector_url,
            "--admin-listen",
            &port(a_admin),
            "--data-dir",
            &wal,
            "--otlp-grpc-listen",
            &otlp_grpc,
            "--otlp-http-listen",
            &otlp_http,
        ])
        .await
        .unwrap();
    let exposed = format!("{}{}", agent.metrics().await.unwrap(), collector.metrics().await.unwrap());

    let d = dashboard("pipeline");
    let mut metrics = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["type"], "prometheus", "{}", p["title"]);
            let mut rest = t["expr"].as_str().unwrap();
            while let Some(at) = rest.find("tally_") {
                let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + name.len()..];
                metrics.push(name);
            }
        }
    }
    metrics.sort();
    metrics.dedup();
    assert_eq!(metrics.len(), 17, "{metrics:#?}");
    let registered = |family: &str| {
        let (krate, name) = family.strip_prefix("tally_agent_").map(|n| ("agent", n)).unwrap_or_else(|| {
            ("collector", family.strip_prefix("tally_collector_").unwrap_or_else(|| panic!("{family}: whose?")))
        });
        let src = std::fs::read_to_string(format!("{}/../{krate}/src/metrics.rs", env!("CARGO_MANIFEST_DIR"))).unwrap();
        // Whitespace-blind: rustfmt may put the name on a line of its own.
        let src: String = src.chars().filter(|c| !c.is_whitespace()).collect();
        src.contains(&format!("register(\"{name}\""))
    };
    let (mut seen, mut by_source) = (0, 0);
    for m in &metrics {
        let family = m.trim_end_matches("_bucket").trim_end_matches("_total");
        if exposed.contains(&format!("# TYPE {family} ")) {
            seen += 1;
        } else {
            assert!(registered(family), "{m} is neither exposed nor registered:\n{exposed}");
            by_source += 1;
        }
    }
    // Unlabelled gauges, counters and histograms are exposed from the start; six labelled
    // families (agent items and batches, eBPF run seconds and map full; collector items and
    // responses) wait for samples.
    assert_eq!((seen, by_source), (11, 6), "{metrics:#?}");
}
