//! The cluster harness itself: four servers that see one cluster, `ON CLUSTER`
//! DDL, replication, a replica killed with -9 that catches up, and teardown.

use std::path::Path;
use std::time::{Duration, Instant};
use testkit::cluster::{ClickHouseCluster, CLUSTER};

#[test]
fn cluster_replicates_survives_kill9_and_cleans_up() {
    let mut cluster = ClickHouseCluster::start().unwrap();
    let expected: String =
        cluster.nodes().iter().map(|n| format!("{}\t{}\t127.0.0.1\t{}\n", n.shard, n.replica, n.tcp_port())).collect();
    for i in 0..4 {
        let listed = cluster
            .query(i, &format!("SELECT shard_num, replica_num, host_address, port FROM system.clusters WHERE cluster = '{CLUSTER}' ORDER BY shard_num, replica_num"))
            .unwrap();
        assert_eq!(listed, expected, "node {i}");
        let n = cluster.node(i);
        let macros = cluster.query(i, "SELECT macro, substitution FROM system.macros ORDER BY macro").unwrap();
        assert_eq!(macros, format!("replica\ts{}r{}\nshard\t{}\n", n.shard, n.replica, n.shard));
    }

    cluster.query(3, "CREATE DATABASE h ON CLUSTER tally").unwrap();
    cluster
        .query(
            0,
            "CREATE TABLE h.t ON CLUSTER tally (n UInt64) \
             ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/h.t', '{replica}') ORDER BY n",
        )
        .unwrap();
    cluster.query(0, "INSERT INTO h.t SELECT number FROM system.numbers LIMIT 10").unwrap();
    cluster.sync_replica(1, "h.t", Duration::from_secs(60)).unwrap();
    assert_eq!(cluster.query(1, "SELECT count(), sum(n) FROM h.t").unwrap(), "10\t45\n");
    // Shard 2 is another replication group: it has none of shard 1's rows.
    assert_eq!(cluster.query(2, "SELECT count() FROM h.t").unwrap(), "0\n");

    // Replica 2 of shard 1 crashes; its peer takes more rows meanwhile.
    let data = cluster.node(1).dir().join("data");
    cluster.kill9(1);
    assert!(!cluster.node(1).is_running());
    assert!(cluster.query(1, "SELECT 1").is_err());
    cluster.query(0, "INSERT INTO h.t SELECT number + 10 FROM system.numbers LIMIT 5").unwrap();
    let restarted = Instant::now();
    cluster.restart(1).unwrap();
    assert!(data.join("data/h/t").is_dir(), "restart kept the data dir");
    cluster.sync_replica(1, "h.t", Duration::from_secs(120)).unwrap();
    eprintln!("replica caught up {:?} after its restart", restarted.elapsed());
    assert_eq!(cluster.query(1, "SELECT count(), sum(n) FROM h.t").unwrap(), "15\t105\n");

    let pids: Vec<u32> = cluster.nodes().iter().filter_map(|n| n.pid()).chain(cluster.zookeeper_pid()).collect();
    assert_eq!(pids.len(), 5);
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} outlived the cluster");
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
}
