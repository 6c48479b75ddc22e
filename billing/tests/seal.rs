//! Sealed months on a real ClickHouse 18.16: seal October, store late usage and
//! requests for it, and check that the seal still verifies (it digests the sealed
//! snapshot), that October's invoice keeps its sealed figures (usage and the SLA
//! credit) and that November's invoice carries the late usage as an exact adjustment. The digest is recomputed here
//! from the stored rows with `sha256sum`, independently of the code under test.
//! The same snapshot and reads on chDB give the same digest.

use metering::store::Store;
use std::time::Duration;

use metering::clickhouse::client::parse_tsv;
use metering::clickhouse::ClickHouse;
use metering::meter::Catalog;
use metering::pricing::BillingMonth;
use metering::record::{UsageBatch, UsageRecord};
use metering::seal::digest::{digest, GENESIS};
use metering::seal::rollup::{Rollup, Sealed, Snapshot};
use metering::seal::schema;
use metering::seal::store::{parse_sla_snapshot, parse_snapshot};
use metering::sla::schema::SLA_ROW;
use metering::sla::{encode_sla_batch, insert_sla, SlaRecord};
use metering::store::migrate::migrate;
use metering::store::rollup::{Granularity, UsageQuery};
use metering::store::writer::UsageWriter;
use metering::store::Dialect;
use serde_json::{json, Value};
use testkit::tally::{start, tally, Serve};
use testkit::{Chdb, ClickHouseServer};
use time::macros::datetime;

const BILLING: &str = "billing-key-1";
const ACME_KEY: &str = "acme-key-1";

/// spans: 1,000 free a month, then 2 USD per 1,000 up to 10,000 billable, 1 USD per 1,000 above;
/// 10 % credit below 99.9 % availability; tax 10 %.
const PLANS: &str = "
plans:
  pro:
    currency: USD
    meters:
      spans:
        allowance: 1000
        per: 1000
        tiers:
          - {up_to: 10_000, price: 2}
          - {price: 1}
    credits:
      - {below: 99.9, percent: 10}
regions:
  us: {tax_percent: 10}
tenants:
  acme: {region: us, plans: [{plan: pro, from: 2026-01-01}]}
";

fn batch(seq: u64, at: time::OffsetDateTime, spans: u64) -> UsageBatch {
    UsageBatch {
        source_id: "agent-a:boot-1".into(),
        seq,
        records: vec![UsageRecord::new("acme", "spans", at, spans.into())],
    }
}

/// October's 5,000 spans, sealed; then 8,000 more for October (a new batch: late); November's 3,000.
fn october() -> UsageBatch {
    batch(1, datetime!(2026-10-10 00:00 UTC), 5000)
}
fn late() -> UsageBatch {
    batch(2, datetime!(2026-10-20 00:00 UTC), 8000)
}
fn november() -> UsageBatch {
    batch(3, datetime!(2026-11-05 00:00 UTC), 3000)
}

/// October's requests as a collector writes them: 1,000 of 1 ms on the 10th, 2 failed (99.8 %)
/// in batch 1; then, late, 1,000 more without errors (batch 2), which would lift October to 99.9 %.
fn sla_bytes(late: bool) -> Vec<u8> {
    let (seq, at, errors) =
        if late { (2, datetime!(2026-10-21 00:00 UTC), 0) } else { (1, datetime!(2026-10-10 00:00 UTC), 2) };
    let mut r = SlaRecord::new("acme", "api", "", at);
    for i in 0..1000 {
        r.observe(1_000_000, i < errors, "");
    }
    let mut bytes = Vec::new();
    encode_sla_batch("collector-a:boot-1", seq, &[r], &mut bytes).unwrap();
    bytes
}

async fn write(ch: &ClickHouse, db: &str, batches: &[UsageBatch]) {
    let mut writer = UsageWriter::new(ch.clone(), db, Catalog::builtin()).unwrap();
    for b in batches {
        writer.push(b).unwrap();
        writer.flush().await.unwrap();
    }
}

async fn call(serve: &Serve, method: reqwest::Method, path: &str, key: &str) -> (u16, Value) {
    let resp =
        reqwest::Client::new().request(method, format!("{}{path}", serve.base)).bearer_auth(key).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// The canonical text of the month's rows as `SELECT ... FROM usage` shows them, hashed by `sha256sum`.
fn sha256sum(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

fn amounts(inv: &Value) -> Vec<&str> {
    ["charges", "sla_credit", "subtotal", "tax", "total"].iter().map(|k| inv[k].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_sealed_month_verifies_after_late_usage_which_is_adjusted_next_month() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("seal").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    write(&ch, &db, &[october(), november()]).await;
    ch.insert_rowbinary(&insert_sla(&db).unwrap(), sla_bytes(false).into()).await.unwrap();
    let plans = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(plans.path(), PLANS).unwrap();
    let serve = start(
        &server.http_url(),
        &db,
        &[
            "--billing-key",
            BILLING,
            "--tenant-key",
            &format!("acme={ACME_KEY}"),
            "--plans",
            plans.path().to_str().unwrap(),
        ],
    )
    .await;
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    // October before the seal: 5,000 − 1,000 free = 4,000 × 2 / 1,000 = 8.00; 99.8 % < 99.9 %:
    // a 10 % credit of 0.80; subtotal 7.20, tax 0.72, total 7.92.
    let (_, inv) = call(&serve, get.clone(), "/v1/tenants/acme/invoices/2026-10", BILLING).await;
    assert_eq!(amounts(&inv), ["8.00", "0.80", "7.20", "0.72", "7.92"], "{inv}");
    assert_eq!(inv.get("sealed_digest"), None);

    let (status, body) = call(&serve, get.clone(), "/v1/periods/2026-10", ACME_KEY).await;
    assert_eq!((status, body), (200, json!({"month": "2026-10", "sealed": false})));
    let (status, body) = call(&serve, post.clone(), "/v1/periods/2026-10/seal", ACME_KEY).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");

    let (status, sealed) = call(&serve, post.clone(), "/v1/periods/2026-10/seal", BILLING).await;
    assert_eq!(status, 201, "{sealed}");
    assert_eq!(
        (
            sealed["month"].as_str(),
            sealed["rows"].as_u64(),
            sealed["sla_rows"].as_u64(),
            sealed["previous_digest"].as_str()
        ),
        (Some("2026-10"), Some(1), Some(1), Some(GENESIS))
    );
    // The digest, recomputed without the code under test: the month's one row as the server stores it.
    let stored = server.query(&format!(
        "SELECT tenant, meter, toUInt32(window_start), service, route, dimensions, unique_value, value, unit, aggregation, source_id, batch_seq \
         FROM {db}.usage WHERE toYYYYMM(window_start) = 202610 FORMAT TSV"
    )).unwrap();
    let fields: Vec<&str> = stored.trim_end().split('\t').collect();
    assert_eq!(fields[..3], ["acme", "spans", &datetime!(2026-10-10 00:00 UTC).unix_timestamp().to_string()]);
    assert_eq!(fields[7], "5000.000000000", "18.16 writes the decimal's scale; the canonical text does not");
    let mut line: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    line[7] = "5000".into();
    // The SLA row: 1,000 requests of 1 ms (one latency bucket), 2 failed, no trace ids.
    let sla = server
        .query(&format!(
            "SELECT toUInt32(window_start), latency_buckets[1], latency_counts[1] FROM {db}.sla FORMAT TSV"
        ))
        .unwrap();
    let sla: Vec<&str> = sla.trim_end().split('\t').collect();
    let sla_line = format!("acme\tapi\t\t{}\t1000\t2\t{}:{}\t\tcollector-a:boot-1\t1", sla[0], sla[1], sla[2]);
    assert_eq!(sla[2], "1000");
    let text = format!("tally-seal-v1\n2026-10\n{GENESIS}\n1\n{}\nsla 1\n{sla_line}\n", line.join("\t"));
    let october_digest = sha256sum(&text);
    assert_eq!(sealed["digest"], october_digest);

    // Late usage for October, and a retry of October's sealed batch (the same rows: not late).
    write(&ch, &db, &[late(), october()]).await;
    ch.insert_rowbinary(&insert_sla(&db).unwrap(), sla_bytes(true).into()).await.unwrap();
    let (status, period) = call(&serve, get.clone(), "/v1/periods/2026-10", ACME_KEY).await;
    assert_eq!(status, 200, "{period}");
    assert_eq!(
        (period["sealed"].as_bool(), period["verified"].as_bool(), period["late_rows"].as_u64()),
        (Some(true), Some(true), Some(1)),
        "{period}"
    );
    assert_eq!(
        (period["digest"].as_str(), period["recomputed_digest"].as_str()),
        (Some(october_digest.as_str()), Some(october_digest.as_str()))
    );

    // October's invoice keeps the sealed figures, usage and availability, and says so (live
    // October is now 13,000 spans and 1,998 good of 2,000 requests = 99.9 %: no credit).
    let (_, inv) = call(&serve, get.clone(), "/v1/tenants/acme/invoices/2026-10", BILLING).await;
    assert_eq!(amounts(&inv), ["8.00", "0.80", "7.20", "0.72", "7.92"], "{inv}");
    assert_eq!(inv["sla"], json!({"requests": 1000, "errors": 2, "availability_percent": "99.8"}));
    assert_eq!(inv["lines"][0]["usage"], "5000");
    assert_eq!(inv["sealed_digest"], october_digest.as_str());
    // So do its reports (the late 8,000 spans and 1,000 requests are not in them).
    let (_, report) = call(&serve, get.clone(), "/v1/reports/usage/2026-10", BILLING).await;
    assert_eq!(
        (report["sealed_digest"].as_str(), report["tenants"][0]["meters"][0]["total"].as_str()),
        (Some(october_digest.as_str()), Some("5000")),
        "{report}"
    );
    let (_, report) = call(&serve, get.clone(), "/v1/reports/sla/2026-10", BILLING).await;
    let acme = &report["tenants"][0];
    assert_eq!(
        (
            report["sealed_digest"].as_str(),
            acme["requests"].as_u64(),
            acme["availability_percent"].as_str(),
            acme["credits"]["total"].as_str()
        ),
        (Some(october_digest.as_str()), Some(1000), Some("99.8"), Some("0.80")),
        "{report}"
    );
    // November: its own 3,000 − 1,000 free = 2,000 × 2 / 1,000 = 4.00, plus October's late 8,000 spans:
    // October at 13,000 would have been 12,000 billable = 10,000 × 2 / 1,000 + 2,000 × 1 / 1,000 = 22.00,
    // 14.00 more than sealed. Charges 18.00, tax 1.80, total 19.80.
    let (_, inv) = call(&serve, get.clone(), "/v1/tenants/acme/invoices/2026-11", BILLING).await;
    assert_eq!(inv["lines"][0]["amount"], "4.00", "{inv}");
    assert_eq!(
        inv["adjustments"],
        json!([{"month": "2026-10", "plan": "pro", "plan_from": "2026-10-01", "meter": "spans", "unit": "count", "late_usage": "8000", "amount": "14.00"}])
    );
    assert_eq!(amounts(&inv), ["18.00", "0.00", "18.00", "1.80", "19.80"]);
    let out = tally(&[
        "invoice",
        "--clickhouse-url",
        &server.http_url(),
        "--clickhouse-database",
        &db,
        "--plans",
        plans.path().to_str().unwrap(),
        "--tenant",
        "acme",
        "--month",
        "2026-11",
        "--format",
        "text",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("  adjustment 2026-10 spans [pro]: late usage 8000 count")
                && l.ends_with(" 14.00 USD")),
        "{text}"
    );

    // November seals onto October's digest (the chain); the CLI verifies both.
    let url = server.http_url();
    let cli = |cmd: &str, month: &str| {
        tally(&[cmd, "--clickhouse-url", &url, "--clickhouse-database", &db, "--month", month])
    };
    let out = cli("seal", "2026-11");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let november_seal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (november_seal["previous_digest"].as_str(), november_seal["rows"].as_u64()),
        (Some(october_digest.as_str()), Some(1))
    );
    for month in ["2026-10", "2026-11"] {
        let out = cli("verify", month);
        assert!(out.status.success(), "{month}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["verified"], true);
    }

    // Refusals: again, out of order, not over, a malformed month.
    for (path, status, code) in [
        ("/v1/periods/2026-10/seal", 409, "already_sealed"),
        ("/v1/periods/2026-09/seal", 409, "out_of_order"),
        ("/v1/periods/2099-01/seal", 409, "month_not_over"),
        ("/v1/periods/2026-1/seal", 400, "invalid_parameter"),
    ] {
        let (got, body) = call(&serve, post.clone(), path, BILLING).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{path}: {body}");
    }

    // A row slipped into October's snapshot is caught by verification.
    let seal_id = sealed["seal_id"].as_str().unwrap();
    forge_row(&server, &db, seal_id);
    // GET serves the verification made on the seal's first read; a billing key has it redone.
    let (_, period) = call(&serve, get.clone(), "/v1/periods/2026-10", BILLING).await;
    assert_eq!(period["verified"].as_bool(), Some(true), "{period}");
    let (_, period) = call(&serve, post.clone(), "/v1/periods/2026-10/verify", BILLING).await;
    assert_eq!(
        (period["verified"].as_bool(), period["recomputed_rows"].as_u64(), period["rows"].as_u64()),
        (Some(false), Some(2), Some(1)),
        "{period}"
    );
    // And so is an SLA row slipped into November's (which sealed none): credits follow them.
    let (_, november) = call(&serve, get.clone(), "/v1/periods/2026-11", BILLING).await;
    assert_eq!((november["verified"].as_bool(), november["sla_rows"].as_u64()), (Some(true), Some(0)), "{november}");
    server.query(&format!(
        "INSERT INTO {db}.sealed_sla (seal_id, tenant, service, route, window_start, requests, errors, source_id, batch_seq) \
         VALUES ('{}', 'acme', 'api', '', toDateTime('2026-11-11 00:00:00', 'UTC'), 1000, 1000, 'forged', 1)",
        november["seal_id"].as_str().unwrap()
    )).unwrap();
    let (status, body) = call(&serve, post.clone(), "/v1/periods/2026-11/verify", ACME_KEY).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (_, november) = call(&serve, post.clone(), "/v1/periods/2026-11/verify", BILLING).await;
    assert_eq!(
        (november["verified"].as_bool(), november["recomputed_sla_rows"].as_u64()),
        (Some(false), Some(1)),
        "{november}"
    );
    assert_ne!(period["recomputed_digest"], period["digest"]);
    let out = cli("verify", "2026-10");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2026-10 does not verify"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli("verify", "2026-08");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("2026-08 is not sealed"));
}

/// The snapshot, its read-back and the late-row count run on chDB (both dialects'
/// tables) and give the digest a 18.16 server gives for the same rows.
#[test]
fn seal_sql_runs_on_the_modern_dialect_with_the_same_digest() {
    let month = BillingMonth::parse("2026-10").unwrap();
    let (from, to) = (month.first_day().midnight().assume_utc(), month.end().midnight().assume_utc());
    let mut chdb = Chdb::start().unwrap();
    let mut digests = Vec::new();
    for (db, dialect) in [("modern", Dialect::Modern), ("legacy", Dialect::Legacy)] {
        testkit::usage::chdb_migrate(&mut chdb, db, dialect);
        testkit::usage::chdb_insert_usage(&mut chdb, db, &[october(), november(), october()], &Catalog::builtin());
        let mut sla = sla_bytes(false);
        sla.extend(sla_bytes(false)); // a retry: the same rows
        testkit::usage::chdb_insert_rowbinary(
            &mut chdb,
            &format!("{db}.sla"),
            &insert_sla(db).unwrap(),
            &SLA_ROW.structure(),
            &sla,
        );
        for table in [Snapshot::Usage, Snapshot::Sla] {
            assert_eq!(
                parse_tsv(&chdb.query(schema::tenants(db, table, None, from, to).unwrap().as_str()).unwrap()),
                [["acme"]]
            );
        }
        chdb.query(schema::snapshot(db, "s1", "acme", from, to).unwrap().as_str()).unwrap();
        chdb.query(schema::snapshot_sla(db, "s1", "acme", from, to).unwrap().as_str()).unwrap();
        // The roll-ups written from the snapshot read back as they are recomputed.
        for rollup in Rollup::ALL {
            chdb.query(rollup.write(db, "s1", "acme").unwrap().as_str()).unwrap();
            let stored = chdb.query(rollup.read_stored(db, "s1", "acme").unwrap().as_str()).unwrap();
            assert_eq!(stored.lines().count(), 1, "{stored}");
            assert_eq!(stored, chdb.query(rollup.read_computed(db, "s1", "acme").unwrap().as_str()).unwrap());
            assert_eq!(parse_tsv(&chdb.query(rollup.tenants(db, "s1").unwrap().as_str()).unwrap()), [["acme"]]);
        }
        let tenants = |chdb: &mut Chdb, table| {
            parse_tsv(&chdb.query(schema::snapshot_tenants(db, "s1", table).unwrap().as_str()).unwrap())
        };
        assert_eq!(tenants(&mut chdb, Snapshot::Usage), [["acme", "1"]]);
        assert_eq!(tenants(&mut chdb, Snapshot::Sla), [["acme", "1"]]);
        let rows =
            parse_snapshot(parse_tsv(&chdb.query(schema::read_snapshot(db, "s1", "acme").unwrap().as_str()).unwrap()))
                .unwrap();
        let sla_rows = parse_sla_snapshot(parse_tsv(
            &chdb.query(schema::read_sla_snapshot(db, "s1", "acme").unwrap().as_str()).unwrap(),
        ))
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].value, 5000.into());
        assert_eq!(
            (sla_rows.len(), sla_rows[0].requests, sla_rows[0].errors, sla_rows[0].exemplars.as_str()),
            (1, 1000, 2, "")
        );
        digests.push(digest("2026-10", GENESIS, &rows, &sla_rows));
        // A sealed read of the snapshot is the live read of the same month.
        let mut q = metering::sla::SlaQuery::new(from, to);
        let live = q.parse_rows(parse_tsv(&chdb.query(q.to_sql(db).unwrap().as_str()).unwrap())).unwrap();
        // From the snapshot, and from its hourly roll-up.
        for rollups in [false, true] {
            q.sealed = Some(Sealed { seal_id: "s1".into(), rollups });
            let sql = q.to_sql(db).unwrap();
            assert_eq!(sql.as_str().contains(".sealed_sla_hourly"), rollups);
            let sealed = q.parse_rows(parse_tsv(&chdb.query(sql.as_str()).unwrap())).unwrap();
            assert_eq!((sealed.len(), &sealed), (1, &live));
        }
        let mut q = UsageQuery::new(from, to);
        q.granularity = Granularity::Month;
        let live = q.parse_rows(parse_tsv(&chdb.query(q.to_sql(db).unwrap().as_str()).unwrap())).unwrap();
        for rollups in [false, true] {
            q.sealed = Some(Sealed { seal_id: "s1".into(), rollups });
            let sql = q.to_sql(db).unwrap();
            assert_eq!(sql.as_str().contains(".sealed_usage_daily"), rollups);
            let sealed = q.parse_rows(parse_tsv(&chdb.query(sql.as_str()).unwrap())).unwrap();
            assert_eq!(
                sealed.iter().map(|p| (&p.tenant, &p.meter, p.value)).collect::<Vec<_>>(),
                [(&"acme".to_owned(), &"spans".to_owned(), 5000.into())]
            );
            assert_eq!(sealed, live);
        }
        let late_rows =
            |chdb: &mut Chdb| chdb.query(schema::count_late(db, "s1", "acme", from, to).unwrap().as_str()).unwrap();
        assert_eq!(late_rows(&mut chdb), "0\n");
        testkit::usage::chdb_insert_usage(&mut chdb, db, &[late()], &Catalog::builtin());
        assert_eq!(late_rows(&mut chdb), "1\n");
        let recorded = metering::seal::Period {
            month: "2026-10".into(),
            seal_id: "s1".into(),
            rows: 1,
            sla_rows: 1,
            digest: digests[0].clone(),
            previous_digest: GENESIS.into(),
            sealed_at: from,
            rollups: true,
        };
        chdb.query(schema::record_seal(db, &recorded).unwrap().as_str()).unwrap();
        assert_eq!(
            parse_tsv(&chdb.query(schema::read_seals(db).unwrap().as_str()).unwrap())[0][..2],
            ["2026-10", "s1"]
        );
    }
    // The same one row as on 18.16: 2026-10-10 00:00, 5,000 spans of batch agent-a:boot-1 #1.
    assert_eq!(digests[0], digests[1]);
    let aggregation = Catalog::builtin().get("spans").unwrap().aggregation.as_str();
    let ts = datetime!(2026-10-10 00:00 UTC).unix_timestamp();
    let bucket = metering::sla::sketch::bucket_of(1_000_000);
    let text = format!(
        "tally-seal-v1\n2026-10\n{GENESIS}\n1\nacme\tspans\t{ts}\t\t\t\t\t5000\tcount\t{aggregation}\tagent-a:boot-1\t1\n\
         sla 1\nacme\tapi\t\t{ts}\t1000\t2\t{bucket}:1000\t\tcollector-a:boot-1\t1\n"
    );
    assert_eq!(digests[0], sha256sum(&text));
}

/// The `tally_api_seal_verifications_total` sample of `/metrics`.
async fn verifications(serve: &Serve) -> u64 {
    let text = reqwest::get(format!("{}/metrics", serve.base)).await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("tally_api_seal_verifications_total ")).expect("the counter");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_tenant_key_sees_only_its_part_of_a_seal_verified_once() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("periods").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    migrate(&Store::new(ch.clone(), &db)).await.unwrap();
    let globex = UsageBatch {
        source_id: "agent-b:boot-1".into(),
        seq: 1,
        records: (0..3)
            .map(|d| {
                UsageRecord::new("globex", "spans", datetime!(2026-10-01 00:00 UTC) + time::Duration::days(d), 7.into())
            })
            .collect(),
    };
    write(&ch, &db, &[october(), globex]).await;
    let serve = start(
        &server.http_url(),
        &db,
        &["--billing-key", BILLING, "--tenant-key", &format!("acme={ACME_KEY}"), "--tenant-key", "globex=globex-key"],
    )
    .await;
    let (status, sealed) = call(&serve, reqwest::Method::POST, "/v1/periods/2026-10/seal", BILLING).await;
    assert_eq!((status, sealed["rows"].as_u64()), (201, Some(4)), "{sealed}");
    assert_eq!(verifications(&serve).await, 0);

    // Late usage for acme, after the seal.
    write(&ch, &db, &[late()]).await;
    let (status, acme) = call(&serve, reqwest::Method::GET, "/v1/periods/2026-10", ACME_KEY).await;
    assert_eq!(status, 200, "{acme}");
    let keys: Vec<&str> = acme.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "digest",
            "expected_previous_digest",
            "late_rows",
            "month",
            "previous_digest",
            "recomputed_digest",
            "rollups",
            "rollups_verified",
            "seal_id",
            "sealed",
            "sealed_at",
            "tenant",
            "tenant_rows",
            "tenant_sla_rows",
            "verified",
            "verified_at"
        ],
        "{acme}"
    );
    assert_eq!(
        (acme["tenant"].as_str(), acme["tenant_rows"].as_u64(), acme["late_rows"].as_u64(), acme["verified"].as_bool()),
        (Some("acme"), Some(1), Some(1), Some(true))
    );
    assert_eq!(acme["digest"], sealed["digest"]);
    let (_, globex) = call(&serve, reqwest::Method::GET, "/v1/periods/2026-10", "globex-key").await;
    assert_eq!(
        (globex["tenant"].as_str(), globex["tenant_rows"].as_u64(), globex["late_rows"].as_u64()),
        (Some("globex"), Some(3), Some(0)),
        "{globex}"
    );
    // A billing key sees every tenant's part, from the same verification.
    let (_, all) = call(&serve, reqwest::Method::GET, "/v1/periods/2026-10", BILLING).await;
    assert_eq!(
        all["tenants"],
        json!([
            {"tenant": "acme", "rows": 1, "sla_rows": 0, "late_rows": 1},
            {"tenant": "globex", "rows": 3, "sla_rows": 0, "late_rows": 0}
        ])
    );
    assert_eq!((all["rows"].as_u64(), all["late_rows"].as_u64()), (Some(4), Some(1)));
    assert_eq!(all["verified_at"], acme["verified_at"]);
    // Three reads, one verification; a billing key's request for another makes two.
    assert_eq!(verifications(&serve).await, 1);
    let (status, _) = call(&serve, reqwest::Method::POST, "/v1/periods/2026-10/verify", BILLING).await;
    assert_eq!(status, 200);
    let (_, _) = call(&serve, reqwest::Method::GET, "/v1/periods/2026-10", ACME_KEY).await;
    assert_eq!(verifications(&serve).await, 2);
}

#[tokio::test]
async fn a_seals_verification_is_stored_refreshed_in_the_background_and_served_after_a_restart() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("verifications").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    migrate(&Store::new(ch.clone(), &db)).await.unwrap();
    write(&ch, &db, &[october()]).await;
    let sealed =
        tally(&["seal", "--month", "2026-10", "--clickhouse-url", &server.http_url(), "--clickhouse-database", &db]);
    assert!(sealed.status.success(), "{}", String::from_utf8_lossy(&sealed.stderr));
    let sealed: Value = serde_json::from_slice(&sealed.stdout).unwrap();

    // Verified in the background every second, before anyone asks.
    let serve = start(&server.http_url(), &db, &["--billing-key", BILLING, "--verify-every-secs", "1"]).await;
    until_verified(&serve, 1).await;
    let (_, first) = call(&serve, reqwest::Method::GET, "/v1/periods/2026-10", BILLING).await;
    assert_eq!((first["verified"].as_bool(), first["digest"].as_str()), (Some(true), sealed["digest"].as_str()));

    // A row slipped into the snapshot: a later background pass finds it, with no request asking.
    let seal_id = sealed["seal_id"].as_str().unwrap();
    forge_row(&server, &db, seal_id);
    let now = verifications(&serve).await;
    until_verified(&serve, now + 2).await;
    let (_, tampered) = call(&serve, reqwest::Method::GET, "/v1/periods/2026-10", BILLING).await;
    assert_eq!(
        (tampered["verified"].as_bool(), tampered["recomputed_rows"].as_u64(), tampered["rows"].as_u64()),
        (Some(false), Some(2), Some(1)),
        "{tampered}"
    );
    drop(serve);

    // Another API process, verifying only on request: it serves the stored verification, as made.
    let serve = start(&server.http_url(), &db, &["--billing-key", BILLING, "--verify-every-secs", "0"]).await;
    let (_, stored) = call(&serve, reqwest::Method::GET, "/v1/periods/2026-10", BILLING).await;
    assert_eq!(stored["verified"].as_bool(), Some(false), "{stored}");
    assert_eq!(stored["recomputed_digest"], tampered["recomputed_digest"]);
    let latest = server
        .query(&format!(
            "SELECT formatDateTime(max(verified_at), '%Y-%m-%dT%H:%M:%SZ', 'UTC') FROM {db}.seal_verifications \
             WHERE seal_id = '{seal_id}'"
        ))
        .unwrap();
    assert_eq!(stored["verified_at"].as_str(), Some(latest.trim()));
    assert_eq!(verifications(&serve).await, 0, "nothing recomputed");
}

/// Waits (up to a minute: this is not what is measured) until `serve` has made `want` verifications.
async fn until_verified(serve: &Serve, want: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while verifications(serve).await < want {
        assert!(std::time::Instant::now() < deadline, "fewer than {want} background verifications");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Slips a forged row (1 span of acme on 2026-10-11) into snapshot `seal_id`.
fn forge_row(server: &ClickHouseServer, db: &str, seal_id: &str) {
    server
        .query(&format!(
            "INSERT INTO {db}.sealed_usage (seal_id, tenant, meter, window_start, value, unit, source_id, batch_seq) \
             VALUES ('{seal_id}', 'acme', 'spans', toDateTime('2026-10-11 00:00:00', 'UTC'), 1, 'count', 'forged', 1)"
        ))
        .unwrap();
}
