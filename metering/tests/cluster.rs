//! Cluster mode against a real cluster: ZooKeeper and four ClickHouse 18.16
//! servers, two shards of two replicas (testkit's `ClickHouseCluster`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{actual, dataset, expected, FROM, TO};
use metering::clickhouse::ClickHouse;
use metering::meter::Catalog;
use metering::record::UsageBatch;
use metering::store::migrate::{migrate_on_cluster, ClusterTarget};
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use metering::store::writer::UsageWriter;
use metering::store::StoreSettings;
use testkit::cluster::{ClickHouseCluster, CLUSTER};

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
    let first = migrate_on_cluster(&client(&cluster, 0), &db, &target(&cluster)).await.unwrap();
    assert_eq!((first.applied, first.skipped), (vec![1, 2, 3], vec![]));
    // Again, through another server of the other shard: everything is recorded already.
    let second = migrate_on_cluster(&client(&cluster, 3), &db, &target(&cluster)).await.unwrap();
    assert_eq!((second.applied, second.skipped), (vec![], vec![1, 2, 3]));

    let key = "ORDER BY (tenant, meter, window_start, service, route, dimensions, source_id, batch_seq, unique_value)";
    for i in 0..4 {
        let tables = cluster
            .query(i, &format!("SELECT name, engine FROM system.tables WHERE database = '{db}' ORDER BY name"))
            .unwrap();
        assert_eq!(
            tables,
            "sla\tDistributed\nsla_local\tReplicatedReplacingMergeTree\ntally_migrations\tReplicatedMergeTree\n\
             usage\tDistributed\nusage_local\tReplicatedReplacingMergeTree\n",
            "server {i}"
        );
        let columns = |table: &str| {
            cluster
                .query(i, &format!("SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{table}' "))
                .unwrap()
        };
        assert_eq!(columns("usage"), columns("usage_local"), "server {i}");
        assert!(columns("usage").contains("unique_value\tString\n") && columns("usage").contains("aggregation\tString\n"));
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
            "1\tusage table\n2\tsla table\n3\tusage.unique_value and usage.aggregation for custom meters\n"
        );
    }
}

async fn write(ch: &ClickHouse, db: &str, batch: &UsageBatch) -> Result<(), metering::store::StoreError> {
    let mut writer = UsageWriter::new(ch.clone(), db, Catalog::builtin()).unwrap();
    writer.push(batch).unwrap();
    writer.flush().await.map(drop)
}

/// Every roll-up, through every running server, against sums computed without the store.
async fn assert_exact(cluster: &ClickHouseCluster, db: &str, data: &[UsageBatch], servers: &[usize]) {
    for &i in servers {
        for g in [Granularity::Minute, Granularity::Day, Granularity::Month] {
            for by_service in [false, true] {
                let mut q = UsageQuery::new(FROM, TO);
                q.granularity = g;
                q.group_by_service = by_service;
                q.limit = 10_000;
                let got = actual(&query_usage(&client(cluster, i), db, &q).await.unwrap());
                let want = expected(data, g, by_service, None, FROM, TO);
                assert_eq!(got.len(), want.len(), "server {i}, {g:?}, by service {by_service}");
                assert_eq!(got, want, "server {i}, {g:?}, by service {by_service}");
            }
        }
    }
}

/// Tenant → shards holding its rows, read from the local tables.
fn placement(cluster: &ClickHouseCluster, db: &str) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for i in [0, 2] {
        for tenant in cluster.query(i, &format!("SELECT DISTINCT tenant FROM {db}.usage_local ORDER BY tenant")).unwrap().lines() {
            out.entry(tenant.to_owned()).or_default().push(cluster.node(i).shard);
        }
    }
    out
}

#[tokio::test]
async fn resent_batches_through_other_servers_and_a_killed_replica_count_once() {
    let mut cluster = ClickHouseCluster::start().unwrap();
    let db = unique_db("cluster_once");
    migrate_on_cluster(&client(&cluster, 0), &db, &target(&cluster)).await.unwrap();
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
    // While it is down, the other servers answer exactly.
    assert_exact(&cluster, &db, &data, &[0, 2, 3]).await;

    cluster.restart(1).unwrap();
    let usage_local = format!("{db}.usage_local");
    cluster.sync_replica(1, &usage_local, Duration::from_secs(120)).unwrap();
    cluster.sync_replica(0, &usage_local, Duration::from_secs(120)).unwrap();
    // The replica caught up: the very same rows as its peer, none doubled by the resends
    // beyond what the keys collapse.
    let rows = |i| {
        cluster
            .query(i, &format!("SELECT count(), uniqExact(tenant, meter, window_start, service, route, dimensions, source_id, batch_seq, unique_value), sum(value) FROM {usage_local}"))
            .unwrap()
    };
    assert_eq!(rows(1), rows(0));
    assert_exact(&cluster, &db, &data, &[0, 1, 2, 3]).await;
}
