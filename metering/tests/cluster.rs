//! Cluster mode against a real cluster: ZooKeeper and four ClickHouse 18.16
//! servers, two shards of two replicas (testkit's `ClickHouseCluster`).

use metering::store::Store;
use std::collections::BTreeMap;
use std::time::Duration;

use metering::clickhouse::ClickHouse;
use metering::meter::Catalog;
use metering::record::UsageBatch;
use metering::settle::{self, FoldOptions};
use metering::sla::{encode_sla_batch, insert_sla, query_sla, SlaGrouping, SlaQuery, SlaRecord};
use metering::store::migrate::{cluster_script, migrate_on_cluster, ClusterTarget};
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use metering::store::writer::UsageWriter;
use metering::store::{Dialect, StoreError, StoreSettings};
use rust_decimal::Decimal;
use testkit::cluster::{ClickHouseCluster, CLUSTER};
use testkit::usage::{actual, dataset, expected, FROM, TO};
use time::macros::datetime;

/// A client for server `i` as `--clickhouse-cluster tally` builds it.
fn client(cluster: &ClickHouseCluster, i: usize) -> ClickHouse {
    StoreSettings {
        clickhouse_url: cluster.node(i).http_url(),
        clickhouse_database: String::new(),
        clickhouse_timeout_secs: 60,
        clickhouse_cluster: Some(CLUSTER.into()),
    }
    .client()
    .unwrap()
}

/// One server per shard: the test servers share a host, so `ClusterTarget::discover`
/// (same port on every host) cannot find them.
fn target(cluster: &ClickHouseCluster) -> ClusterTarget {
    ClusterTarget { name: CLUSTER.into(), shards: vec![client(cluster, 0), client(cluster, 2)] }
}

fn unique_db(prefix: &str) -> String {
    format!("{prefix}_{}", std::process::id())
}

#[tokio::test]
async fn migrations_lay_out_replicated_sharded_tables_and_run_twice_as_a_no_op() {
    let cluster = ClickHouseCluster::start().unwrap();
    let db = unique_db("cluster_migrate");
    // `tally migrate --clickhouse-cluster` finds shards by host name; this cluster's share one host.
    let shared = ClusterTarget::discover(&client(&cluster, 0), CLUSTER).await.unwrap_err();
    assert!(matches!(shared, StoreError::ShardsShareHost { .. }), "{shared}");
    let unknown = ClusterTarget::discover(&client(&cluster, 0), "nope").await.unwrap_err();
    assert!(matches!(unknown, StoreError::NoCluster { .. }), "{unknown}");
    // Servers named per shard (`--clickhouse-shard-url`) must be one per shard.
    let short = ClusterTarget::with_shards(&client(&cluster, 0), CLUSTER, vec![client(&cluster, 0)]).await.unwrap_err();
    assert!(matches!(short, StoreError::ShardCount { shards: 2, given: 1, .. }), "{short}");
    let first = migrate_on_cluster(&Store::new(client(&cluster, 0), &db), &target(&cluster)).await.unwrap();
    assert_eq!((first.applied, first.skipped), (vec![1, 2, 3, 4, 5, 6, 7, 8, 9], vec![]));
    // Again, through another server of the other shard: everything is recorded already.
    let second = migrate_on_cluster(&Store::new(client(&cluster, 3), &db), &target(&cluster)).await.unwrap();
    assert_eq!((second.applied, second.skipped), (vec![], vec![1, 2, 3, 4, 5, 6, 7, 8, 9]));

    let key = "ORDER BY (tenant, meter, window_start, service, route, dimensions, source_id, batch_seq, unique_value)";
    for i in 0..4 {
        let tables = cluster
            .query(i, &format!("SELECT name, engine FROM system.tables WHERE database = '{db}' ORDER BY name"))
            .unwrap();
        assert_eq!(
            tables,
            // Tables with a tenant are sharded behind a Distributed table; the seals' chain
            // (`periods`) and the migrations' record are one replicated table on every server.
            "periods\tReplicatedMergeTree\nseal_verifications\tReplicatedMergeTree\nsealed_sla\tDistributed\nsealed_sla_hourly\tDistributed\n\
             sealed_sla_hourly_local\tReplicatedMergeTree\nsealed_sla_local\tReplicatedMergeTree\n\
             sealed_usage\tDistributed\nsealed_usage_daily\tDistributed\nsealed_usage_daily_local\tReplicatedMergeTree\n\
             sealed_usage_local\tReplicatedMergeTree\nsettle_folds\tReplicatedMergeTree\n\
             settle_rollups\tReplicatedMergeTree\n\
             sla\tDistributed\nsla_inserts\tDistributed\nsla_inserts_local\tReplicatedMergeTree\n\
             sla_inserts_mv\tMaterializedView\nsla_local\tReplicatedReplacingMergeTree\n\
             sla_settled\tDistributed\nsla_settled_hourly\tDistributed\nsla_settled_hourly_local\tReplicatedMergeTree\n\
             sla_settled_local\tReplicatedMergeTree\n\
             tally_migrations\tReplicatedMergeTree\n\
             usage\tDistributed\nusage_inserts\tDistributed\nusage_inserts_local\tReplicatedMergeTree\n\
             usage_inserts_mv\tMaterializedView\nusage_local\tReplicatedReplacingMergeTree\n\
             usage_settled\tDistributed\nusage_settled_daily\tDistributed\nusage_settled_daily_local\tReplicatedMergeTree\n\
             usage_settled_local\tReplicatedMergeTree\n",
            "server {i}"
        );
        let columns = |table: &str| {
            cluster
                .query(
                    i,
                    &format!("SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{table}' "),
                )
                .unwrap()
        };
        assert_eq!(columns("usage"), columns("usage_local"), "server {i}");
        assert!(
            columns("usage").contains("unique_value\tString\n") && columns("usage").contains("aggregation\tString\n")
        );
        assert_eq!(columns("sla"), columns("sla_local"), "server {i}");
        let usage_local = cluster.query(i, &format!("SHOW CREATE TABLE {db}.usage_local")).unwrap();
        let n = cluster.node(i);
        assert!(usage_local.contains(&format!("/clickhouse/tables/{{shard}}/{db}.usage")), "{usage_local}");
        assert!(usage_local.contains(key), "server {i} (shard {}): {usage_local}", n.shard);
        assert!(cluster.query(i, &format!("SHOW CREATE TABLE {db}.usage")).unwrap().contains("cityHash64(tenant)"));
        // Recorded once, through server 0, replicated to every server.
        cluster.sync_replica(i, &format!("{db}.tally_migrations"), Duration::from_secs(60)).unwrap();
        assert_eq!(
            cluster.query(i, &format!("SELECT version, name FROM {db}.tally_migrations ORDER BY version")).unwrap(),
            "1\tusage table\n2\tsla table\n3\tusage.unique_value and usage.aggregation for custom meters\n\
             4\tsealed_usage, sealed_sla and periods tables for sealed months\n\
             5\tsealed_usage_daily and sealed_sla_hourly roll-ups of seals, periods.rollups\n\
             6\tusage_settled, sla_settled and settle_folds for settled usage\n\
             7\tseal_verifications: every verification of a seal, served to readers\n\
             8\tusage_settled_daily, sla_settled_hourly and settle_rollups: settled rows rolled up by day\n\
             9\tusage_inserts and sla_inserts, the insert journals folds find batches by; settle_folds minutes\n"
        );
    }
    sla_reads_through_the_distributed_table_count_a_resent_batch_once(&cluster, &db).await;
    the_migrations_script_makes_the_same_tables(&cluster, &db);
    a_migration_stopped_before_the_distributed_rebuild_finishes_on_rerun(&cluster, &db).await;
}

/// Migration 3 as a run stopped after its ALTER: `usage_local` has the new columns, the
/// Distributed `usage` still the old ones, and version 3 is not recorded. A rerun must not ALTER
/// again (the columns exist) but must still rebuild `usage`.
async fn a_migration_stopped_before_the_distributed_rebuild_finishes_on_rerun(
    cluster: &ClickHouseCluster,
    migrated: &str,
) {
    let db = format!("{migrated}_stopped");
    migrate_on_cluster(&Store::new(client(cluster, 0), &db), &target(cluster)).await.unwrap();
    let run = |sql: String| cluster.query(0, &sql).unwrap_or_else(|e| panic!("{sql}: {e:#}"));
    run(format!("DROP TABLE {db}.usage ON CLUSTER {CLUSTER}"));
    run(format!(
        "CREATE TABLE {db}.usage ON CLUSTER {CLUSTER} (tenant String, meter String, window_start DateTime('UTC'), value Decimal(38, 9)) \
         ENGINE = Distributed({CLUSTER}, {db}, usage_local, cityHash64(tenant))"
    ));
    run(format!("ALTER TABLE {db}.tally_migrations DELETE WHERE version = 3"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while run(format!("SELECT count() FROM {db}.tally_migrations WHERE version = 3")).trim() != "0" {
        assert!(std::time::Instant::now() < deadline, "the mutation did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rerun = migrate_on_cluster(&Store::new(client(cluster, 0), &db), &target(cluster)).await.unwrap();
    assert_eq!((rerun.applied, rerun.skipped), (vec![3], vec![1, 2, 4, 5, 6, 7, 8, 9]));
    for i in 0..4 {
        let columns = |table: &str| {
            cluster
                .query(
                    i,
                    &format!("SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{table}'"),
                )
                .unwrap()
        };
        assert_eq!(columns("usage"), columns("usage_local"), "server {i}");
        assert!(columns("usage").contains("unique_value\tString\n"), "server {i}");
    }
}

/// `cluster_script` (what deploy/clickhouse/cluster/schema.sql shows) run by hand as its notes say
/// makes the very tables `tally migrate` made.
fn the_migrations_script_makes_the_same_tables(cluster: &ClickHouseCluster, migrated: &str) {
    let db = format!("{migrated}_script");
    let script = cluster_script(CLUSTER, &db, Dialect::Legacy).unwrap();
    for statement in script.split(";\n\n").filter(|s| !s.trim().is_empty()) {
        let servers: &[usize] = if statement.contains("-- on one server of each shard:") { &[0, 2] } else { &[0] };
        let sql: String = statement.lines().filter(|l| !l.starts_with("--")).collect::<Vec<_>>().join("\n");
        for &i in servers {
            cluster.query(i, &sql).unwrap_or_else(|e| panic!("{sql}: {e:#}"));
        }
    }
    for i in 0..4 {
        let tables = |db: &str| {
            cluster.query(i, &format!("SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name")).unwrap()
        };
        assert_eq!(tables(&db), tables(migrated), "server {i}");
        for table in tables(migrated).lines() {
            let show =
                |db: &str| cluster.query(i, &format!("SHOW CREATE TABLE {db}.{table}")).unwrap().replace(db, "DB");
            assert_eq!(show(&db), show(migrated), "server {i}: {table}");
        }
    }
}

/// deploy/clickhouse/cluster/schema.sql is what the migrations emit for a cluster named `tally`
/// of current servers (`TALLY_BLESS=1` rewrites it).
#[test]
fn the_deploy_schema_is_what_the_migrations_emit() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/clickhouse/cluster/schema.sql");
    let want = format!(
        "-- What `tally migrate --clickhouse-cluster tally` runs on a fresh cluster of ClickHouse >= 20.1\n\
         -- servers, database `tally` (generated from metering/src/store/migrate.rs by\n\
         -- metering/tests/cluster.rs; do not edit). Statements without a note run once, through any server.\n\n{}",
        cluster_script("tally", "tally", Dialect::Modern).unwrap()
    );
    if std::env::var_os("TALLY_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_default(),
        want,
        "{} is out of date; rerun with TALLY_BLESS=1",
        path.display()
    );
}

/// SLA rows of acme (shard 1) and globex (shard 2); batch 0 resent through another server.
async fn sla_reads_through_the_distributed_table_count_a_resent_batch_once(cluster: &ClickHouseCluster, db: &str) {
    let record = |tenant: &str, service: &str, at, n: u64, slow: u64| {
        let mut r = SlaRecord::new(tenant, service, "/pay", at);
        for i in 0..n {
            r.observe(slow * 1_000 + i, i % 100 == 0, "");
        }
        r
    };
    let batch0 = vec![
        record("acme", "api", datetime!(2026-11-10 10:00 UTC), 1000, 1000),
        record("globex", "web", datetime!(2026-11-10 10:00 UTC), 500, 3000),
    ];
    let batch1 = vec![record("acme", "api", datetime!(2026-11-10 11:00 UTC), 100, 2000)];
    let encode = |seq, records: &[SlaRecord]| {
        let mut bytes = Vec::new();
        encode_sla_batch("agent-a:boot-1", seq, records, &mut bytes).unwrap();
        bytes::Bytes::from(bytes)
    };
    let insert = insert_sla(db).unwrap();
    client(cluster, 0).insert_rowbinary(&insert, encode(0, &batch0)).await.unwrap();
    client(cluster, 1).insert_rowbinary(&insert, encode(1, &batch1)).await.unwrap();
    client(cluster, 3).insert_rowbinary(&insert, encode(0, &batch0)).await.unwrap();

    sync_replicas(cluster, db, &[0, 1, 2, 3]);
    // The month's acme/api as one record would have measured it.
    let mut acme = record("acme", "api", datetime!(2026-11-10 10:00 UTC), 1000, 1000);
    for i in 0..100 {
        acme.observe(2_000_000 + i, i % 100 == 0, "");
    }
    let mut q = SlaQuery::new(datetime!(2026-11-01 00:00 UTC), datetime!(2026-12-01 00:00 UTC));
    q.granularity = Granularity::Month;
    q.grouping = SlaGrouping::Service;
    for i in 0..4 {
        let points = query_sla(&Store::new(client(cluster, i), db), &q).await.unwrap();
        let got: Vec<_> =
            points.iter().map(|p| (p.tenant.as_str(), p.service.as_str(), p.requests, p.errors)).collect();
        assert_eq!(got, [("acme", "api", 1100, 11), ("globex", "web", 500, 5)], "server {i}");
        assert_eq!(points[0].latency, acme.latency, "server {i}");
        assert_eq!(points[1].latency, batch0[1].latency, "server {i}");
    }
}

async fn write(ch: &ClickHouse, db: &str, batch: &UsageBatch) -> Result<(), metering::store::StoreError> {
    let mut writer = UsageWriter::new(ch.clone(), db, Catalog::builtin()).unwrap();
    writer.push(batch).unwrap();
    writer.flush().await.map(drop)
}

/// Waits until every running replica has what its shard's other replicas have:
/// a read reaches one replica per shard, and replication is asynchronous.
fn sync_replicas(cluster: &ClickHouseCluster, db: &str, servers: &[usize]) {
    for &i in servers {
        for table in [
            "usage_local",
            "sla_local",
            "usage_settled_local",
            "sla_settled_local",
            "settle_folds",
            "usage_settled_daily_local",
            "sla_settled_hourly_local",
            "settle_rollups",
            "usage_inserts_local",
            "sla_inserts_local",
        ] {
            cluster.sync_replica(i, &format!("{db}.{table}"), Duration::from_secs(120)).unwrap();
        }
    }
}

/// Every roll-up, through every running server, against sums computed without the store.
async fn assert_exact(cluster: &ClickHouseCluster, db: &str, data: &[UsageBatch], servers: &[usize]) {
    sync_replicas(cluster, db, servers);
    for &i in servers {
        for g in [Granularity::Minute, Granularity::Day, Granularity::Month] {
            for by_service in [false, true] {
                let mut q = UsageQuery::new(FROM, TO);
                q.granularity = g;
                q.group_by_service = by_service;
                q.limit = 10_000;
                let got = actual(&query_usage(&Store::new(client(cluster, i), db), &q).await.unwrap());
                let want = expected(data, g, by_service, None, FROM, TO);
                assert_eq!(got.len(), want.len(), "server {i}, {g:?}, by service {by_service}");
                let diff: Vec<_> = want
                    .iter()
                    .filter(|(k, v)| got.get(*k) != Some(*v))
                    .take(3)
                    .map(|(k, v)| (k.clone(), *v, got.get(k).copied()))
                    .collect();
                assert!(diff.is_empty(), "server {i}, {g:?}, by service {by_service}: {diff:?}");
                assert_eq!(got, want, "server {i}, {g:?}, by service {by_service}");
            }
        }
    }
}

/// While a replica is down, a part only it had stored is missing from reads until it is
/// back: every read through every running server is then at most the exact answer, key
/// by key (nothing doubled, nothing invented).
async fn assert_never_over(cluster: &ClickHouseCluster, db: &str, data: &[UsageBatch], servers: &[usize]) {
    for &i in servers {
        let mut q = UsageQuery::new(FROM, TO);
        q.granularity = Granularity::Minute;
        q.limit = 10_000;
        let got = actual(&query_usage(&Store::new(client(cluster, i), db), &q).await.unwrap());
        let want = expected(data, Granularity::Minute, false, None, FROM, TO);
        let over: Vec<_> = got.iter().filter(|(k, v)| want.get(*k).is_none_or(|w| *v > w)).take(3).collect();
        assert!(over.is_empty(), "server {i} read more than was written: {over:?}");
        assert!(
            got.len() * 10 >= want.len() * 9,
            "server {i} lost more than one replica's share: {} of {}",
            got.len(),
            want.len()
        );
    }
}

/// Tenant → shards holding its rows, read from the local tables.
fn placement(cluster: &ClickHouseCluster, db: &str) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for i in [0, 2] {
        for tenant in
            cluster.query(i, &format!("SELECT DISTINCT tenant FROM {db}.usage_local ORDER BY tenant")).unwrap().lines()
        {
            out.entry(tenant.to_owned()).or_default().push(cluster.node(i).shard);
        }
    }
    out
}

#[tokio::test]
async fn resent_batches_through_other_servers_and_a_killed_replica_count_once() {
    let mut cluster = ClickHouseCluster::start().unwrap();
    let db = unique_db("cluster_once");
    migrate_on_cluster(&Store::new(client(&cluster, 0), &db), &target(&cluster)).await.unwrap();
    let data = dataset();

    // Batches 0..20 through server 0; 0..10 resent through server 3 (the other shard's replica),
    // as a collector's retry after a lost answer would, through another collector and node.
    for b in &data[..20] {
        write(&client(&cluster, 0), &db, b).await.unwrap();
    }
    for b in &data[..10] {
        write(&client(&cluster, 3), &db, b).await.unwrap();
    }
    assert_exact(&cluster, &db, &data[..20], &[0, 1, 2, 3]).await;
    // One tenant, one shard: resent rows meet their first copies there.
    let placed = placement(&cluster, &db);
    assert_eq!(
        placed,
        BTreeMap::from([("acme".into(), vec![1]), ("globex".into(), vec![2]), ("initech".into(), vec![2])])
    );

    // The rest alternates between servers 1 and 2; server 1 (shard 1, replica 2) is killed
    // with -9 at batch 25. A write that fails is resent through the next server, and
    // batches 25..30 are resent once more after the crash.
    let mut via = [1usize, 2].into_iter().cycle();
    let mut failed_writes = 0;
    for (n, b) in data[20..].iter().enumerate() {
        if n == 5 {
            cluster.kill9(1);
        }
        loop {
            let i = via.next().unwrap();
            match write(&client(&cluster, i), &db, b).await {
                Ok(()) => break,
                Err(_) => failed_writes += 1,
            }
        }
    }
    assert!(failed_writes >= 1, "writes through the killed server must fail and be resent");
    for b in &data[25..30] {
        write(&client(&cluster, 2), &db, b).await.unwrap();
    }
    // While it is down, the other servers never over-count (rows only it had wait for it).
    assert_never_over(&cluster, &db, &data, &[0, 2, 3]).await;

    cluster.restart(1).unwrap();
    sync_replicas(&cluster, &db, &[0, 1]);
    // The replica caught up: what it holds, collapsed by key as every read collapses it, is what
    // its peer holds. Raw rows are not compared: a key written twice (a resend that missed
    // ClickHouse's block deduplication) is two rows until a merge collapses them, and each replica
    // runs the merges of the replication log in its own time.
    let usage_local = format!("{db}.usage_local");
    assert_eq!(collapsed(&cluster, 1, &usage_local), collapsed(&cluster, 0, &usage_local));
    eprintln!("raw rows after the restart: {}", raw_rows(&cluster, &usage_local, &[0, 1]));
    assert_exact(&cluster, &db, &data, &[0, 1, 2, 3]).await;
    eprintln!("raw rows at the end: {}", raw_rows(&cluster, &usage_local, &[0, 1]));

    // Settled through one server: reads through every server are still exact.
    let now = FoldOptions { grace: Duration::ZERO, ..FoldOptions::default() };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fold = settle::fold(&Store::new(client(&cluster, 0), &db), now).await.unwrap().expect("a fold");
    assert!(fold.batches >= 40, "{fold:?}");
    assert_exact(&cluster, &db, &data, &[0, 1, 2, 3]).await;
    // Folded batches resent through other servers: in the tail, left out by identity on
    // their shard; then folded again through another server, taking none of them.
    for (n, b) in data.iter().enumerate() {
        write(&client(&cluster, [3, 2][n % 2]), &db, b).await.unwrap();
    }
    assert_exact(&cluster, &db, &data, &[0, 1, 2, 3]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fold = settle::fold(&Store::new(client(&cluster, 3), &db), now).await.unwrap().expect("a second fold");
    assert_eq!(fold.batches, 0, "{fold:?}");
    assert_exact(&cluster, &db, &data, &[0, 1, 2, 3]).await;

    // The settled days rolled up through a third server; late usage for them written through
    // a fourth, then folded (and copied rolled up) through the first.
    let mut rollups = 0;
    let through_2 = Store::new(client(&cluster, 2), &db);
    while settle::roll(&through_2).await.unwrap().is_some() {
        rollups += 1;
    }
    assert!(rollups >= 1);
    assert_exact(&cluster, &db, &data, &[0, 1, 2, 3]).await;
    let mut all = data.clone();
    all.push(UsageBatch {
        source_id: "agent-late:boot-1".into(),
        seq: 7,
        records: vec![
            metering::record::UsageRecord::new("globex", "spans", data[0].records[0].time, Decimal::from(17)),
            metering::record::UsageRecord::new("acme", "spans", data[5].records[0].time, Decimal::from(4)),
        ],
    });
    write(&client(&cluster, 1), &db, &all[all.len() - 1]).await.unwrap();
    assert_exact(&cluster, &db, &all, &[0, 1, 2, 3]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fold = settle::fold(&Store::new(client(&cluster, 0), &db), now).await.unwrap().expect("a fold of late usage");
    // The fold's own counts read back what it wrote through any replica (on a cluster they can
    // be short until the shard's other replica has it): count them once replicated.
    sync_replicas(&cluster, &db, &[0, 1, 2, 3]);
    let taken = format!("SELECT count() FROM {db}.usage_settled WHERE meter = '' AND fold = '{}'", fold.id);
    assert_eq!(cluster.query(0, &taken).unwrap().trim(), "2", "{fold:?}");
    assert!(fold.batches <= 2, "{fold:?}");
    assert_exact(&cluster, &db, &all, &[0, 1, 2, 3]).await;
}

const USAGE_KEY: &str = "tenant, meter, window_start, service, route, dimensions, source_id, batch_seq, unique_value";

/// Server `i`'s `table` as reads see it: one line per key with its value, and how many distinct
/// values the key's copies carry (a resend reproduces the same value, so always 1).
fn collapsed(cluster: &ClickHouseCluster, i: usize, table: &str) -> String {
    let got = cluster
        .query(i, &format!("SELECT {USAGE_KEY}, any(value), uniqExact(value) FROM {table} GROUP BY {USAGE_KEY} ORDER BY {USAGE_KEY}"))
        .unwrap();
    assert!(got.lines().all(|l| l.ends_with("\t1")), "server {i}: copies of a key disagree");
    assert!(got.lines().count() > 100, "server {i}: {got}");
    got
}

/// Per server: raw rows, distinct keys, and the active parts holding more than one copy of a key.
fn raw_rows(cluster: &ClickHouseCluster, table: &str, servers: &[usize]) -> String {
    let (db, name) = table.split_once('.').unwrap();
    let mut out = String::new();
    for &i in servers {
        let counts = cluster.query(i, &format!("SELECT count(), uniqExact({USAGE_KEY}) FROM {table}")).unwrap();
        let doubled = cluster
            .query(
                i,
                &format!(
                    "SELECT groupArray(_part) FROM {table} GROUP BY {USAGE_KEY} HAVING count() > 1 \
                     ORDER BY min(_part) LIMIT 5"
                ),
            )
            .unwrap();
        let parts = cluster
            .query(
                i,
                &format!(
                    "SELECT groupArray(concat(name, ':', toString(rows))) FROM system.parts \
                     WHERE database = '{db}' AND table = '{name}' AND active"
                ),
            )
            .unwrap();
        out.push_str(&format!(
            "\n server {i}: {} | doubled keys in {} | parts {}",
            counts.trim(),
            doubled.replace('\n', " "),
            parts.trim()
        ));
    }
    out
}

/// Sealing reads its snapshot back to digest it. On a cluster the snapshot lands on one replica
/// per shard first; read back from another that has not fetched it yet, the digest would cover
/// part of it and every later verification would fail. With fetches stopped for a while on every
/// server but the one sealing, the seal still digests the whole snapshot (without the wait, a read
/// back from shard 2's other replica misses half the time), and verifies through every server.
#[tokio::test]
async fn a_seal_on_a_cluster_digests_the_whole_snapshot_and_verifies_through_every_server() {
    let cluster = ClickHouseCluster::start().unwrap();
    let db = unique_db("cluster_seal");
    migrate_on_cluster(&Store::new(client(&cluster, 0), &db), &target(&cluster)).await.unwrap();
    let mut writer = UsageWriter::new(client(&cluster, 0), &db, Catalog::builtin()).unwrap();
    for b in dataset() {
        writer.push(&b).unwrap();
    }
    writer.flush().await.unwrap();
    sync_replicas(&cluster, &db, &[0, 1, 2, 3]);
    let live = cluster
        .query(
            0,
            &format!(
                "SELECT count() FROM (SELECT 1 FROM {db}.usage WHERE window_start >= toDateTime('2026-01-01 00:00:00', 'UTC') \
                 AND window_start < toDateTime('2026-02-01 00:00:00', 'UTC') \
                 GROUP BY tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq)"
            ),
        )
        .unwrap();
    let live: u64 = live.trim().parse().unwrap();
    assert!(live > 100, "{live}");

    for i in [1, 2, 3] {
        for table in ["sealed_usage_local", "sealed_sla_local"] {
            cluster.query(i, &format!("SYSTEM STOP FETCHES {db}.{table}")).unwrap();
        }
    }
    let restarted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let restart = {
        let urls: Vec<String> = [1, 2, 3].iter().map(|&i| cluster.node(i).http_url()).collect();
        let (db, restarted) = (db.clone(), restarted.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            restarted.store(true, std::sync::atomic::Ordering::SeqCst);
            for url in urls {
                for table in ["sealed_usage_local", "sealed_sla_local"] {
                    let sql = format!("SYSTEM START FETCHES {db}.{table}");
                    reqwest::Client::new().post(&url).body(sql).send().await.unwrap().error_for_status().unwrap();
                }
            }
        })
    };
    let month = metering::pricing::BillingMonth::parse("2026-01").unwrap();
    let sealed = metering::seal::seal(&Store::new(client(&cluster, 0), &db), month, datetime!(2026-12-01 00:00 UTC))
        .await
        .unwrap();
    // It waited for the replicas: no replica but the one written could have the snapshot sooner.
    assert!(restarted.load(std::sync::atomic::Ordering::SeqCst), "the seal returned while fetches were stopped");
    restart.await.unwrap();
    assert_eq!(sealed.rows, live);
    for i in 0..4 {
        cluster.sync_replica(i, &format!("{db}.sealed_usage_local"), Duration::from_secs(60)).unwrap();
    }
    for i in 0..4 {
        let v = metering::seal::verify(&Store::new(client(&cluster, i), &db), month).await.unwrap().unwrap();
        assert!(v.verified, "server {i}: {v:?}");
        assert_eq!((v.recomputed_rows, &v.period.digest), (live, &sealed.digest), "server {i}");
    }
}
