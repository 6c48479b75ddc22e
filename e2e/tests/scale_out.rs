//! Scale-out end to end, every part real: the OTel Python SDK → one `tally-agent` with
//! two collectors (`--collector` twice) → two `tally-collector`s with
//! `--clickhouse-cluster`, each writing through another server of a cluster of four
//! ClickHouse 18.16 servers (two shards of two replicas, ZooKeeper) → `tally serve` on
//! the two servers no collector uses. Mid-stream one collector and the replica the other
//! collector writes through are killed with -9: `/v1/usage` is still exact on both
//! `tally serve`s, nothing lost, nothing doubled.

use std::collections::BTreeMap;
use std::time::Duration;

use testkit::agent::start_agent;
use testkit::cluster::{ClickHouseCluster, CLUSTER};
use testkit::collector::start_collector_at;
use testkit::tally::{tally, Serve};

const BILLING_KEY: &str = "billing-key";

/// `tally serve --clickhouse-cluster` on server `i`, killed on drop.
async fn serve_on(cluster: &ClickHouseCluster, i: usize, db: &str) -> Serve {
    testkit::tally::start(
        &cluster.node(i).http_url(),
        db,
        &["--clickhouse-cluster", CLUSTER, "--billing-key", BILLING_KEY],
    )
    .await
}

/// Today's usage per (tenant, meter) from `/v1/usage`, every page.
async fn usage(serve: &Serve) -> BTreeMap<(String, String), u64> {
    let today = time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
    let day = |d: time::OffsetDateTime| d.format(&time::format_description::well_known::Rfc3339).unwrap();
    let query = format!(
        "from={}&to={}&granularity=day&limit=100",
        day(today - time::Duration::days(1)),
        day(today + time::Duration::days(2))
    );
    let mut got = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{}/v1/usage?{query}&cursor={c}", serve.base),
            None => format!("{}/v1/usage?{query}", serve.base),
        };
        let resp = reqwest::Client::new().get(url).bearer_auth(BILLING_KEY).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        for item in body["data"].as_array().unwrap() {
            let key = (item["tenant"].as_str().unwrap().to_owned(), item["meter"].as_str().unwrap().to_owned());
            // Every meter here counts whole items: an integer JSON number, read exactly.
            *got.entry(key).or_default() += item["value"].as_u64().unwrap_or_else(|| panic!("a whole count: {item}"));
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return got,
        }
    }
}

async fn sdk(base: &str, protocol: &str, args: &[&str]) -> serde_json::Value {
    testkit::sdk::run("send_otlp.py", base, protocol, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_through_one_agent_and_two_collectors_into_a_cluster_is_exact_through_kills() {
    let mut cluster = ClickHouseCluster::start().unwrap();
    let db = format!("scale_out_{}", std::process::id());
    let shard_urls = [cluster.node(0).http_url(), cluster.node(2).http_url()];
    let migrate = |via: usize| {
        let url = cluster.node(via).http_url();
        let args = ["migrate", "--clickhouse-url", &url, "--clickhouse-database", &db, "--clickhouse-cluster", CLUSTER];
        tally(
            &[&args[..], &["--clickhouse-shard-url", &shard_urls[0], "--clickhouse-shard-url", &shard_urls[1]]]
                .concat(),
        )
    };
    let first = migrate(0);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stdout).contains("applied [1, 2, 3, 4, 5, 6, 7, 8, 9], already applied []"));
    // Again through a server of the other shard: nothing to do.
    let second = migrate(3);
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("applied [], already applied [1, 2, 3, 4, 5, 6, 7, 8, 9]"),
        "{second:?}"
    );

    let (dir_a, dir_b, dir_agent) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let on_cluster = ["--clickhouse-cluster", CLUSTER];
    // Collector A writes through server 1 (shard 1), B through server 2 (shard 2).
    let mut a = start_collector_at(&cluster.node(1).http_url(), &db, dir_a.path(), &on_cluster).await;
    let b = start_collector_at(&cluster.node(2).http_url(), &db, dir_b.path(), &on_cluster).await;
    let mut agent = start_agent(&[&a.grpc_url, &b.grpc_url], dir_agent.path(), &["--flush-interval-ms", "50"]).await;

    // acme lives on shard 1, globex on shard 2 (cityHash64(tenant) % 2). The apps pause at
    // gates (3,000, 9,000 and 15,000 spans between them) so each kill lands while they still
    // have spans to send, however fast this machine runs them.
    let gates = tempfile::tempdir().unwrap();
    let gate = |i: usize| gates.path().join(format!("g{i}")).display().to_string();
    let gate_args = |every: usize| -> Vec<String> {
        (1..=3).flat_map(|i| ["--gate".to_owned(), format!("{}:{}", every * (2 * i - 1), gate(i))]).collect()
    };
    let open = |i: usize| std::fs::write(gate(i), b"").unwrap();
    let (grpc, http) = (agent.grpc_url.clone(), agent.http_url.clone());
    let (acme_gates, globex_gates) = (gate_args(2000), gate_args(1000));
    let acme = tokio::spawn(async move {
        let mut args = vec!["--tenant", "acme", "--spans", "12000", "--spans-per-export", "50"];
        args.extend(acme_gates.iter().map(String::as_str));
        sdk(&grpc, "grpc", &args).await
    });
    let globex = tokio::spawn(async move {
        let mut args = vec!["--tenant", "globex", "--spans", "6000", "--spans-per-export", "40", "--logs", "30"];
        args.extend(globex_gates.iter().map(String::as_str));
        sdk(&http, "http", &args).await
    });
    let accepted = |n: u64| {
        let agent = &agent;
        async move {
            let name = "tally_agent_items_total{signal=\"traces\",outcome=\"accepted\"}";
            agent.service.wait_for_sample(name, n, Duration::from_secs(120)).await.unwrap();
        }
    };
    accepted(3000).await;
    open(1);
    accepted(4000).await;
    a.kill9();
    // The server B writes through; B spools what it acknowledges until the server is back.
    accepted(9000).await;
    open(2);
    accepted(10000).await;
    cluster.kill9(2);
    open(3);
    for sender in [acme, globex] {
        let r = sender.await.unwrap();
        assert_eq!(r["spans_ok"], true, "{r}");
    }
    agent.drained().await;
    // The agent failed over from A.
    let (retried, text) = agent.batches("retried").await;
    assert!(retried >= 1, "{text}");
    // Stopping, it ships its last report: its books then hold every span it acknowledged.
    assert!(agent.service.terminate().unwrap().success());
    // B has tried the dead server (and spooled) before it comes back.
    let errors = "tally_collector_clickhouse_write_errors_total";
    b.service.wait_for_sample(errors, 1, Duration::from_secs(60)).await.unwrap();
    cluster.restart(2).unwrap();
    // A, restarted on its spool, writes what it acknowledged before it died.
    a.start(&[]).await;
    for c in [&a, &b] {
        c.service.wait_for_line("tally_collector_spool_bytes 0", Duration::from_secs(180)).await.unwrap();
    }
    for i in 0..4 {
        for table in ["usage_local", "sla_local"] {
            cluster.sync_replica(i, &format!("{db}.{table}"), Duration::from_secs(180)).unwrap();
        }
    }

    let want = [
        ("acme", "spans", 12000),
        ("acme", "requests", 3000),
        ("acme", "agent_accepted_spans", 12000),
        ("acme", "agent_acked_spans", 12000),
        ("globex", "spans", 6000),
        ("globex", "requests", 1500),
        ("globex", "log_records", 30),
        ("globex", "agent_acked_spans", 6000),
    ];
    let (serve0, serve3) = (serve_on(&cluster, 0, &db).await, serve_on(&cluster, 3, &db).await);
    let got = usage(&serve0).await;
    for (tenant, meter, n) in want {
        assert_eq!(got.get(&(tenant.to_owned(), meter.to_owned())), Some(&n), "{tenant} {meter}: {got:?}");
    }
    assert_eq!(got.get(&("acme".to_owned(), "dropped_spans".to_owned())), None, "{got:?}");
    // Any node answers the same.
    assert_eq!(usage(&serve3).await, got);
}
