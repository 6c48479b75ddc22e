//! Two collectors with `--clickhouse-cluster tally`, each writing through another
//! server of a ClickHouse cluster (ZooKeeper and four 18.16 servers, two shards
//! of two replicas): usage lands exactly once, on its tenant's shard, and reads
//! the same through every server.

use metering::store::Store;
use std::time::Duration;

use metering::store::migrate::{migrate_on_cluster, ClusterTarget};
use metering::store::StoreSettings;
use rust_decimal::Decimal;
use testkit::cluster::{ClickHouseCluster, CLUSTER};
use testkit::collector::{start_collector_at, totals, value};

fn client(cluster: &ClickHouseCluster, i: usize) -> metering::clickhouse::ClickHouse {
    StoreSettings {
        clickhouse_url: cluster.node(i).http_url(),
        clickhouse_database: String::new(),
        clickhouse_timeout_secs: 60,
        clickhouse_cluster: Some(CLUSTER.into()),
    }
    .client()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_write_through_the_distributed_table_exactly_once() {
    let cluster = ClickHouseCluster::start().unwrap();
    let db = format!("collector_cluster_{}", std::process::id());
    let target = ClusterTarget { name: CLUSTER.into(), shards: vec![client(&cluster, 0), client(&cluster, 2)] };
    migrate_on_cluster(&Store::new(client(&cluster, 0), &db), &target).await.unwrap();

    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Collector A writes through server 1 (shard 1), B through server 2 (shard 2).
    let a =
        start_collector_at(&cluster.node(1).http_url(), &db, dir_a.path(), &["--clickhouse-cluster", CLUSTER]).await;
    let b =
        start_collector_at(&cluster.node(2).http_url(), &db, dir_b.path(), &["--clickhouse-cluster", CLUSTER]).await;
    let send = |url: String, protocol: &'static str, args: Vec<&'static str>| async move {
        testkit::sdk::send_otlp(&url, protocol, &args).await
    };
    let r = send(a.http_url.clone(), "http", vec!["--tenant", "acme", "--spans", "300", "--logs", "10"]).await;
    assert_eq!((r["spans_ok"].as_bool(), r["logs_ok"].as_bool()), (Some(true), Some(true)));
    let r = send(b.grpc_url.clone(), "grpc", vec!["--key", "agent-key", "--tenant", "globex", "--spans", "250"]).await;
    assert_eq!(r["spans_ok"], true);
    // One tenant through both collectors.
    let r = send(a.grpc_url.clone(), "grpc", vec!["--key", "initech-key", "--spans", "60"]).await;
    assert_eq!(r["spans_ok"], true);
    let r = send(b.http_url.clone(), "http", vec!["--key", "initech-key", "--spans", "40"]).await;
    assert_eq!(r["spans_ok"], true);
    a.settle().await;
    b.settle().await;

    for i in 0..4 {
        for table in ["usage_local", "sla_local"] {
            cluster.sync_replica(i, &format!("{db}.{table}"), Duration::from_secs(120)).unwrap();
        }
    }
    let want = [
        ("acme", "spans", 300),
        ("acme", "requests", 75),
        ("acme", "log_records", 10),
        ("globex", "spans", 250),
        ("globex", "requests", 63),
        ("initech", "spans", 100),
        ("initech", "requests", 25),
    ];
    for i in 0..4 {
        let got = totals(&client(&cluster, i), &db).await;
        for (tenant, meter, n) in want {
            assert_eq!(value(&got, tenant, meter), Decimal::from(n), "server {i}: {tenant} {meter}: {got:?}");
        }
        let tenants: std::collections::BTreeSet<_> = got.keys().map(|k| k.0.as_str()).collect();
        assert_eq!(tenants.into_iter().collect::<Vec<_>>(), ["acme", "globex", "initech"], "server {i}");
    }
    // Each tenant's rows on its shard only (cityHash64(tenant) % 2: acme 0, globex and initech 1).
    let tenants =
        |i: usize| cluster.query(i, &format!("SELECT DISTINCT tenant FROM {db}.usage_local ORDER BY tenant")).unwrap();
    assert_eq!((tenants(0), tenants(1)), ("acme\n".to_owned(), "acme\n".to_owned()));
    assert_eq!((tenants(2), tenants(3)), ("globex\ninitech\n".to_owned(), "globex\ninitech\n".to_owned()));
    for running in [&a, &b] {
        let text = running.metrics().await;
        assert!(text.lines().any(|l| l == "tally_collector_clickhouse_write_errors_total 0"), "{text}");
    }

    // One batch identity delivered to both collectors, as an agent's resend after a lost
    // answer may be: each stores it, through another shard's server, and it counts once.
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"tenant.id","value":{"stringValue":"umbrella"}},{"key":"service.name","value":{"stringValue":"api"}}]},
      "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a","kind":2},
                              {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"b","kind":3},
                              {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b176","name":"c","kind":2}]}]}]}"#;
    let identity = format!("agent:u1:boot1 7 {}", (time::OffsetDateTime::now_utc().unix_timestamp() - 60) * 1000);
    for running in [&a, &b] {
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/traces", running.http_url))
            .header("content-type", "application/json")
            .header("authorization", "Bearer agent-key")
            .header("tally-batch", &identity)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    a.settle().await;
    b.settle().await;
    for i in 0..4 {
        cluster.sync_replica(i, &format!("{db}.usage_local"), Duration::from_secs(120)).unwrap();
    }
    for i in 0..4 {
        let got = totals(&client(&cluster, i), &db).await;
        assert_eq!(
            (value(&got, "umbrella", "spans"), value(&got, "umbrella", "requests")),
            (Decimal::from(3), Decimal::from(2)),
            "server {i}: {got:?}"
        );
    }
}
