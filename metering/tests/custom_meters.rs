//! Roll-ups of custom meters (count, sum, max, unique_count) with retried
//! batches, on ClickHouse 18.16 and on the modern dialect through chDB: the
//! same rows, the same SQL, the same exact values.

use metering::store::Store;
use std::collections::BTreeMap;
use std::time::Duration;

use metering::clickhouse::client::parse_tsv;
use metering::clickhouse::ClickHouse;
use metering::meter::{definition, Catalog};
use metering::pricing::BillingMonth;
use metering::record::{RecordProblem, UsageBatch, UsageRecord};
use metering::store::migrate::migrate;
use metering::store::rollup::{query_usage, Granularity, UsagePoint, UsageQuery};
use metering::store::writer::{encode_batch, UsageWriter};
use metering::store::Dialect;
use rust_decimal::Decimal;
use testkit::{Chdb, ClickHouseServer};
use time::macros::datetime;
use time::OffsetDateTime;

const METERS: &str = "meters:
  - {name: llm_tokens, signal: traces, aggregation: sum, attribute: llm.tokens, group_by: [model]}
  - {name: llm_calls, signal: traces, aggregation: count}
  - {name: llm_peak_tokens, signal: traces, aggregation: max, attribute: llm.tokens}
  - {name: llm_users, signal: traces, aggregation: unique_count, attribute: user.id, group_by: [model]}
";

const FROM: OffsetDateTime = datetime!(2026-05-01 00:00 UTC);
const TO: OffsetDateTime = datetime!(2026-06-01 00:00 UTC);

fn catalog() -> Catalog {
    Catalog::with_custom(&definition::parse(METERS, "meters.yaml".as_ref()).unwrap())
}

fn rec(meter: &str, time: OffsetDateTime, value: &str, model: Option<&str>) -> UsageRecord {
    let mut r = UsageRecord::new("acme", meter, time, value.parse().unwrap()).with_service("chat");
    if let Some(m) = model {
        r.dimensions.insert("model".into(), m.into());
    }
    r
}

fn user(time: OffsetDateTime, model: &str, id: &str) -> UsageRecord {
    rec("llm_users", time, "1", Some(model)).with_unique(id)
}

/// Three minutes of one hour and one minute of the next day, from two
/// sources; batches 1 and 2 of source `c1` are then sent again whole.
fn batches() -> Vec<UsageBatch> {
    let (m0, m1, m30) =
        (datetime!(2026-05-04 10:00:10 UTC), datetime!(2026-05-04 10:01:59 UTC), datetime!(2026-05-04 10:30 UTC));
    let next_day = datetime!(2026-05-05 08:00 UTC);
    let b1 = UsageBatch {
        source_id: "c1".into(),
        seq: 1,
        records: vec![
            rec("llm_tokens", m0, "100", Some("gpt")),
            rec("llm_tokens", m0, "50", Some("gpt")),
            rec("llm_tokens", m0, "30", Some("claude")),
            rec("llm_calls", m0, "3", None),
            rec("llm_peak_tokens", m0, "100", None),
            rec("llm_peak_tokens", m0, "50", None),
            user(m0, "gpt", "u1"),
            user(m0, "gpt", "u2"),
            user(m0, "gpt", "u1"),
            user(m0, "claude", "u1"),
            UsageRecord::new("acme", "spans", m0, 4.into()).with_service("chat"),
        ],
    };
    let b2 = UsageBatch {
        source_id: "c1".into(),
        seq: 2,
        records: vec![
            rec("llm_tokens", m1, "7", Some("gpt")),
            rec("llm_calls", m1, "1", None),
            rec("llm_peak_tokens", m1, "120", None),
            user(m1, "gpt", "u2"),
            user(m1, "gpt", "u3"),
        ],
    };
    let b3 = UsageBatch {
        source_id: "c2".into(),
        seq: 1,
        records: vec![
            rec("llm_tokens", m30, "0.5", Some("gpt")),
            rec("llm_peak_tokens", m30, "80", None),
            user(m30, "claude", "u1"),
            user(m30, "claude", "\"u\\\\"),
        ],
    };
    let b4 = UsageBatch {
        source_id: "c2".into(),
        seq: 2,
        records: vec![rec("llm_peak_tokens", next_day, "5", None), user(next_day, "gpt", "u4")],
    };
    vec![b1.clone(), b2.clone(), b3, b4, b1, b2]
}

fn query(g: Granularity, by_dims: bool) -> UsageQuery {
    let mut q = UsageQuery::new(FROM, TO);
    q.granularity = g;
    q.group_by_dimensions = by_dims;
    q.tenant = Some("acme".into());
    q
}

/// (meter, bucket start, model) -> value.
type Got = BTreeMap<(String, String, String), Decimal>;

fn got(points: &[UsagePoint]) -> Got {
    points
        .iter()
        .map(|p| {
            let model = p.dimensions.as_ref().and_then(|d| d.get("model").cloned()).unwrap_or_default();
            ((p.meter.clone(), p.start.time().to_string(), model), p.value)
        })
        .collect()
}

fn want(rows: &[(&str, &str, &str, &str)]) -> Got {
    rows.iter().map(|(m, t, d, v)| ((m.to_string(), t.to_string(), d.to_string()), v.parse().unwrap())).collect()
}

/// Checks every roll-up of [`batches`] with `run`.
fn check(mut run: impl FnMut(&UsageQuery) -> Vec<UsagePoint>) {
    // By hour: max is the largest of the hour, unique users are counted over the hour
    // (u1, u2, u3 and "u\: 4; the sum of per-minute uniques would be 7).
    let hour = run(&query(Granularity::Hour, false));
    assert_eq!(
        got(&hour),
        want(&[
            ("llm_calls", "10:00:00.0", "", "4"),
            ("llm_peak_tokens", "10:00:00.0", "", "120"),
            ("llm_peak_tokens", "8:00:00.0", "", "5"),
            ("llm_tokens", "10:00:00.0", "", "187.5"),
            ("llm_users", "10:00:00.0", "", "4"),
            ("llm_users", "8:00:00.0", "", "1"),
            ("spans", "10:00:00.0", "", "4"),
        ])
    );
    assert!(hour.iter().all(|p| p.unit == "count"));
    // By day: each day's users counted over the day, its peak.
    let day: BTreeMap<(String, String), Decimal> = run(&query(Granularity::Day, false))
        .iter()
        .map(|p| ((p.meter.clone(), p.start.date().to_string()), p.value))
        .collect();
    let at = |m: &str, d: &str| day[&(m.to_owned(), d.to_owned())];
    assert_eq!(
        [
            at("llm_users", "2026-05-04"),
            at("llm_users", "2026-05-05"),
            at("llm_peak_tokens", "2026-05-04"),
            at("llm_peak_tokens", "2026-05-05")
        ],
        [4, 1, 120, 5].map(Decimal::from)
    );
    assert_eq!((day.len(), at("llm_tokens", "2026-05-04")), (7, "187.5".parse().unwrap()));
    // By month: every user once, the peak of the month.
    let month = got(&run(&query(Granularity::Month, false)));
    let at = |m: &str| month[&(m.to_string(), "0:00:00.0".to_string(), String::new())];
    assert_eq!(
        [at("llm_calls"), at("llm_peak_tokens"), at("llm_tokens"), at("llm_users"), at("spans")],
        ["4", "120", "187.5", "5", "4"].map(|v| v.parse::<Decimal>().unwrap())
    );
    // By month and model: sums per model, distinct users per model.
    let by_model = got(&run(&query(Granularity::Month, true)));
    let at = |m: &str, model: &str| by_model[&(m.to_string(), "0:00:00.0".to_string(), model.to_string())];
    assert_eq!(at("llm_tokens", "gpt"), "157.5".parse().unwrap());
    assert_eq!(at("llm_tokens", "claude"), Decimal::from(30));
    assert_eq!(at("llm_users", "gpt"), Decimal::from(4));
    assert_eq!(at("llm_users", "claude"), Decimal::from(2));
    assert_eq!(at("llm_calls", ""), Decimal::from(4));
    // One meter, by minute: per-minute uniques.
    let mut q = query(Granularity::Minute, false);
    q.meter = Some("llm_users".into());
    let minutes: Vec<Decimal> = run(&q).iter().map(|p| p.value).collect();
    assert_eq!(minutes, [2, 2, 2, 1].map(Decimal::from));
    // Paging by dimensions visits every series once.
    let mut q = query(Granularity::Month, true);
    q.limit = 2;
    let mut pages = Vec::new();
    loop {
        let page = run(&q);
        let Some(last) = page.last() else { break };
        q.after = Some(last.key.clone());
        pages.extend(page);
    }
    assert_eq!(got(&pages), by_model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_meters_roll_up_exactly_on_18_16() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("custom").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    let mut writer = UsageWriter::new(ch.clone(), &db, catalog()).unwrap();
    for b in batches() {
        writer.push(&b).unwrap();
        // Retries land in their own INSERTs, as after a lost acknowledgement.
        writer.flush().await.unwrap();
    }
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        check(|q| rt.block_on(query_usage(&store, q)).unwrap());
    });
    // Merged parts collapse the retries and change nothing read.
    server.query(&format!("OPTIMIZE TABLE {db}.usage FINAL")).unwrap();
    tokio::task::block_in_place(|| {
        check(|q| rt.block_on(query_usage(&store, q)).unwrap());
    });
    // Sealed, May reads the same: days and months from the seal's daily roll-up, hours and
    // minutes from its snapshot.
    let may = BillingMonth::parse("2026-05").unwrap();
    let period = metering::seal::seal(&store, may, TO).await.unwrap();
    assert!(period.rollups);
    let sealed = |q: &UsageQuery| {
        let mut q = q.clone();
        q.sealed = Some(period.sealed());
        let daily = q.to_sql(&db).unwrap().as_str().contains(".sealed_usage_daily");
        assert_eq!(daily, matches!(q.granularity, Granularity::Day | Granularity::Month), "{q:?}");
        q
    };
    tokio::task::block_in_place(|| {
        check(|q| rt.block_on(query_usage(&store, &sealed(q))).unwrap());
    });
    let rolled = server.query(&format!("SELECT count() FROM {db}.sealed_usage_daily FORMAT TSV")).unwrap();
    // 05-04: tokens × 2 models, calls, peak, spans, 5 (model, user) pairs; 05-05: peak, 1 pair.
    assert_eq!(rolled.trim(), "12", "one row per meter, day, model and unique value");
    let v = metering::seal::verify(&store, may).await.unwrap().unwrap();
    assert!(v.verified && v.rollups_verified, "{v:?}");
    // A roll-up row forged after the seal fails verification, though the snapshot still digests.
    server
        .query(&format!(
            "INSERT INTO {db}.sealed_usage_daily VALUES ('{}', 'acme', 'spans', '2026-05-04 00:00:00', 'chat', '', '', 1, 'count', 'sum')",
            period.seal_id
        ))
        .unwrap();
    let v = metering::seal::verify(&store, may).await.unwrap().unwrap();
    assert_eq!((v.verified, v.rollups_verified, v.recomputed_digest == v.period.digest), (false, false, true));
}

#[test]
fn custom_meters_roll_up_exactly_on_the_modern_dialect() {
    let mut chdb = Chdb::start().unwrap();
    let db = "custom";
    testkit::usage::chdb_migrate(&mut chdb, db, Dialect::Modern);
    testkit::usage::chdb_insert_usage(&mut chdb, db, &batches(), &catalog());
    check(|q| q.parse_rows(parse_tsv(&chdb.query(q.to_sql(db).unwrap().as_str()).unwrap())).unwrap());
}

#[test]
fn unique_values_belong_to_unique_count_meters_only() {
    let t = datetime!(2026-05-04 10:00 UTC);
    let encode = |r: UsageRecord| {
        encode_batch(&UsageBatch { source_id: "s".into(), seq: 1, records: vec![r] }, &catalog(), &mut Vec::new())
            .map_err(|e| e.reason)
    };
    assert!(matches!(encode(rec("llm_users", t, "1", None)), Err(RecordProblem::Unique { .. })));
    assert!(matches!(encode(rec("llm_tokens", t, "1", None).with_unique("u1")), Err(RecordProblem::Unique { .. })));
    assert!(matches!(encode(rec("nope", t, "1", None)), Err(RecordProblem::UnknownMeter { .. })));
    assert_eq!(encode(user(t, "gpt", "u1")), Ok(1));
}
