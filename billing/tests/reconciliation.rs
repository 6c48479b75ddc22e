//! `GET /v1/reconciliation` from agents' books and stored items written into a
//! real ClickHouse 18.16: per agent (across its boots), tenant and signal, the
//! exact accepted, acknowledged, stored and dropped items and the gap. The same
//! SQL on chDB gives the same lines.

use metering::store::Store;
use std::time::Duration;

use metering::clickhouse::client::parse_tsv;
use metering::clickhouse::ClickHouse;
use metering::meter::Catalog;
use metering::reconcile::{lines, to_sql};
use metering::record::{UsageBatch, UsageRecord};
use metering::store::migrate::migrate;
use metering::store::writer::UsageWriter;
use metering::store::Dialect;
use serde_json::{json, Value};
use testkit::tally::start;
use testkit::{Chdb, ClickHouseServer};
use time::macros::datetime;
use time::OffsetDateTime;

const BILLING: &str = "billing-key-1";
const ACME_KEY: &str = "acme-key-1";
const A1: &str = "3f2a1b/agent:node-1:00000000000000a1";
const A2: &str = "3f2a1b/agent:node-1:00000000000000a2";
const B1: &str = "9c0d1e/agent:node-2:00000000000000b1";

fn rec(tenant: &str, meter: &str, at: OffsetDateTime, value: u64, reason: Option<&str>) -> UsageRecord {
    let mut r = UsageRecord::new(tenant, meter, at, value.into());
    if let Some(reason) = reason {
        r.dimensions.insert("reason".into(), reason.into());
    }
    r
}

/// node-1 accepts 1,000 acme spans in its first boot and ships 600; after a
/// restart it ships 300 more and reports 60 dropped for a full WAL and 40 refused
/// (gap 0). It stored 50 of 55 globex log records (gap 5). node-2: 70 of 70
/// metric points. A collector's own rows and the next day are not in the window.
fn batches() -> Vec<UsageBatch> {
    let t = datetime!(2026-11-10 10:00 UTC);
    let next_day = datetime!(2026-11-11 00:00 UTC);
    let batch =
        |source: &str, seq: u64, records: Vec<UsageRecord>| UsageBatch { source_id: source.into(), seq, records };
    let first = batch(
        A1,
        1,
        vec![
            rec("acme", "spans", t, 600, None),
            rec("acme", "agent_accepted_spans", t, 1000, None),
            rec("acme", "agent_acked_spans", t, 600, None),
        ],
    );
    vec![
        first.clone(),
        batch(
            A1,
            2,
            vec![
                rec("globex", "log_records", t, 50, None),
                rec("globex", "agent_accepted_log_records", t, 55, None),
                rec("globex", "log_bytes", t, 5000, None),
            ],
        ),
        batch(
            A2,
            1,
            vec![
                rec("acme", "spans", t + Duration::from_secs(300), 300, None),
                rec("acme", "dropped_spans", t + Duration::from_secs(300), 60, Some("wal full")),
                rec(
                    "acme",
                    "dropped_spans",
                    t + Duration::from_secs(300),
                    40,
                    Some("refused by a collector: InvalidArgument"),
                ),
                rec("acme", "agent_acked_spans", t + Duration::from_secs(300), 300, None),
            ],
        ),
        batch(
            B1,
            1,
            vec![rec("acme", "metric_points", t, 70, None), rec("acme", "agent_accepted_metric_points", t, 70, None)],
        ),
        batch("collector:1:2", 1, vec![rec("acme", "spans", t, 999, None)]),
        batch(
            A2,
            2,
            vec![rec("acme", "spans", next_day, 7, None), rec("acme", "agent_accepted_spans", next_day, 7, None)],
        ),
        // node-1's first batch again, as a resend: it counts once.
        first,
    ]
}

fn expected() -> Value {
    json!([
        {"agent": "3f2a1b/agent:node-1", "tenant": "acme", "signal": "spans", "accepted": "1000", "acked": "900", "stored": "900", "dropped": "100",
         "dropped_by_reason": {"refused by a collector: InvalidArgument": "40", "wal full": "60"}, "gap": "0"},
        {"agent": "3f2a1b/agent:node-1", "tenant": "globex", "signal": "log_records", "accepted": "55", "acked": "0", "stored": "50", "dropped": "0",
         "dropped_by_reason": {}, "gap": "5"},
        {"agent": "9c0d1e/agent:node-2", "tenant": "acme", "signal": "metric_points", "accepted": "70", "acked": "0", "stored": "70", "dropped": "0",
         "dropped_by_reason": {}, "gap": "0"}
    ])
}

const FROM: OffsetDateTime = datetime!(2026-11-10 00:00 UTC);
const TO: OffsetDateTime = datetime!(2026-11-11 00:00 UTC);

#[tokio::test]
async fn reconciliation_is_exact_per_agent_tenant_and_signal() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("reconcile").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    let mut writer = UsageWriter::new(ch.clone(), &db, Catalog::builtin()).unwrap();
    for b in batches() {
        writer.push(&b).unwrap();
        writer.flush().await.unwrap();
    }
    let serve =
        start(&server.http_url(), &db, &["--billing-key", BILLING, "--tenant-key", &format!("acme={ACME_KEY}")]).await;
    let get = |path: &str, key: &str| {
        let (url, key) = (format!("{}{path}", serve.base), key.to_owned());
        async move {
            let resp = reqwest::Client::new().get(url).bearer_auth(key).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = get("/v1/reconciliation?from=2026-11-10T00:00:00Z&to=2026-11-11T00:00:00Z", BILLING).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["from"].as_str(), body["to"].as_str()),
        (Some("2026-11-10T00:00:00Z"), Some("2026-11-11T00:00:00Z"))
    );
    assert_eq!(body["data"], expected());
    // With the next day: node-1's later 7 spans are accepted and stored (gap still 0).
    let (_, body) = get("/v1/reconciliation?from=2026-11-10T00:00:00Z&to=2026-11-12T00:00:00Z", BILLING).await;
    assert_eq!(
        (body["data"][0]["accepted"].as_str(), body["data"][0]["stored"].as_str(), body["data"][0]["gap"].as_str()),
        (Some("1007"), Some("907"), Some("0"))
    );

    let (status, body) = get("/v1/reconciliation?from=2026-11-10T00:00:00Z&to=2026-11-11T00:00:00Z", ACME_KEY).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    for (path, code) in [
        ("/v1/reconciliation?to=2026-11-11T00:00:00Z", "missing_parameter"),
        ("/v1/reconciliation?from=2026-11-11T00:00:00Z&to=2026-11-10T00:00:00Z", "invalid_range"),
        ("/v1/reconciliation?from=2026-11-10T00:00:30Z&to=2026-11-11T00:00:00Z", "invalid_parameter"),
        ("/v1/reconciliation?from=2026-11-10T00:00:00Z&to=2026-11-11T00:00:00Z&tenant=acme", "invalid_parameter"),
    ] {
        let (status, body) = get(path, BILLING).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{path}: {body}");
    }
}

#[test]
fn reconciliation_sql_runs_on_the_modern_dialect() {
    let mut chdb = Chdb::start().unwrap();
    for (db, dialect) in [("modern", Dialect::Modern), ("legacy", Dialect::Legacy)] {
        testkit::usage::chdb_migrate(&mut chdb, db, dialect);
        testkit::usage::chdb_insert_usage(&mut chdb, db, &batches(), &Catalog::builtin());
        let got = lines(parse_tsv(&chdb.query(to_sql(db, FROM, TO).unwrap().as_str()).unwrap())).unwrap();
        assert_eq!(serde_json::to_value(got).unwrap(), expected(), "{db}");
    }
}
