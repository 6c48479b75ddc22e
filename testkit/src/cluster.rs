//! A private ClickHouse cluster per test: one ZooKeeper and four
//! `clickhouse-server` 18.16 processes, two shards of two replicas, all on
//! free loopback ports under one temp dir.
//!
//! ZooKeeper is Debian's `zookeeper` package (3.8), run as a plain Java
//! process with our own `zoo.cfg` (never the system service). Each server gets
//! its config from `deploy/clickhouse/cluster/config.xml`: its own ports,
//! `<macros>` (shard `1`/`2`, replica `s<shard>r<replica>`), the cluster
//! `tally` in `<remote_servers>` and `<distributed_ddl>`, so `ON CLUSTER` DDL,
//! replication and `Distributed` tables work as in production.
//!
//! Every child is tied to the test process (see [`crate::spawn`]) and killed
//! on drop, so a panicking test leaves neither processes nor data behind.

use crate::http;
use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The name of the cluster in every server's `<remote_servers>`.
pub const CLUSTER: &str = "tally";
/// Shards of the test cluster.
pub const SHARDS: u32 = 2;
/// Replicas of each shard.
pub const REPLICAS: u32 = 2;

const MISSING_ZOOKEEPER: &str = "ZooKeeper not found (/usr/share/java/zookeeper.jar and java): \
    install it with apt-get install -y zookeeper (scripts/test does this)";
const MISSING_CLICKHOUSE: &str = "clickhouse-server not found on PATH or in /usr/sbin: install it with \
    apt-get install -y clickhouse-server clickhouse-client (scripts/test does this)";
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// ZooKeeper ticks every 500 ms, so sessions may be as short as 1 s.
const ZK_TICK_MS: u32 = 500;
/// The servers' ZooKeeper session: a replica killed with -9 holds its "active"
/// node this long, and a restarted one waits for it to expire before it
/// replicates again. Short for fast fault tests, long enough not to expire
/// under a loaded 2-core CI machine.
pub const ZK_SESSION: Duration = Duration::from_secs(6);
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const QUERY_TIMEOUT: Duration = Duration::from_secs(200);
const START_ATTEMPTS: usize = 3;

const CONFIG_TEMPLATE: &str = include_str!("../../deploy/clickhouse/cluster/config.xml");
const USERS_TEMPLATE: &str = include_str!("../../deploy/clickhouse/local/users.xml");

/// One `clickhouse-server` of the cluster.
pub struct ClusterNode {
    /// Shard number, from 1.
    pub shard: u32,
    /// Replica number within the shard, from 1.
    pub replica: u32,
    child: Option<Child>,
    http_port: u16,
    tcp_port: u16,
    dir: PathBuf,
}

impl ClusterNode {
    /// Base URL of its HTTP interface.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Port of its HTTP interface on 127.0.0.1.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Port of its native interface on 127.0.0.1 (what `system.clusters` lists).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// Its dir (config, `data/`, logs), for debugging.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Process id of the running server, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (not killed by [`ClickHouseCluster::kill9`]).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Runs one statement through the HTTP interface and returns the body; errors
    /// carry the server's message and the SQL.
    pub fn query(&self, sql: &str) -> Result<String> {
        self.query_with("", sql)
    }

    /// [`query`](Self::query) with settings as URL parameters (`a=1&b=2`).
    pub fn query_with(&self, settings: &str, sql: &str) -> Result<String> {
        self.query_within(settings, sql, QUERY_TIMEOUT)
    }

    fn query_within(&self, settings: &str, sql: &str, timeout: Duration) -> Result<String> {
        let path = format!("/?wait_end_of_query=1&{settings}");
        let resp = http::request(self.http_port, "POST", &path, sql.as_bytes(), timeout)
            .with_context(|| format!("ClickHouse HTTP request to {} failed\nSQL: {sql}", self.http_url()))?;
        if resp.status != 200 {
            bail!(
                "ClickHouse query on shard {} replica {} failed (HTTP {}): {}\nSQL: {sql}",
                self.shard,
                self.replica,
                resp.status,
                resp.body.trim_end()
            );
        }
        Ok(resp.body)
    }

    fn ping(&self) -> bool {
        matches!(
            http::request(self.http_port, "GET", "/ping", b"", Duration::from_secs(2)),
            Ok(r) if r.status == 200 && r.body == "Ok.\n"
        )
    }

    fn launch(&mut self, binary: &Path) -> Result<()> {
        let stdout = fs::File::create(self.dir.join("stdout.log"))?;
        let stderr = fs::File::create(self.dir.join("stderr.log"))?;
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config-file={}", self.dir.join("config.xml").display()))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        self.child = Some(crate::spawn::spawn_tied(cmd).with_context(|| format!("spawn {}", binary.display()))?);
        Ok(())
    }

    /// Waits for `/ping`, then checks that the answering server is this one
    /// (another process may have won the race for a port picked as free).
    fn wait_ready(&mut self, deadline: Instant) -> Result<()> {
        loop {
            let child = self.child.as_mut().context("server not running")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!("clickhouse-server s{}r{} exited with {status}\n{}", self.shard, self.replica, self.log_tail());
            }
            if self.ping() {
                let path = self.query("SELECT data_path FROM system.databases WHERE name = 'default'")?;
                if !path.trim().starts_with(&*self.dir.join("data").to_string_lossy()) {
                    bail!("port {} is answered by another server; Address already in use", self.http_port);
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("clickhouse-server s{}r{} did not answer /ping\n{}", self.shard, self.replica, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        log_tail(&self.dir, &["err.log", "stderr.log"])
    }
}

/// ZooKeeper, standalone, as a Java child process.
struct ZooKeeper {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl ZooKeeper {
    fn start(java: &Path, dir: PathBuf, port: u16) -> Result<Self> {
        fs::create_dir_all(dir.join("data"))?;
        let cfg = format!(
            "tickTime={ZK_TICK_MS}\ndataDir={data}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n",
            data = dir.join("data").display()
        );
        fs::write(dir.join("zoo.cfg"), cfg).context("write zoo.cfg")?;
        let mut cmd = Command::new(java);
        // ZooKeeperServerMain is the standalone server (QuorumPeerMain, the
        // service's class, needs a quorum config); logs go to stdout.log.
        cmd.arg("-Xmx256m")
            .arg(format!("-Dzookeeper.log.dir={}", dir.display()))
            .arg("-cp")
            .arg(ZOOKEEPER_JAR)
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(dir.join("zoo.cfg"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout.log"))?)
            .stderr(fs::File::create(dir.join("stderr.log"))?);
        let child = crate::spawn::spawn_tied(cmd).context("spawn ZooKeeper (java)")?;
        let mut zk = Self { child: Some(child), port, dir };
        zk.wait_ready()?;
        Ok(zk)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().context("ZooKeeper not running")?.try_wait()? {
                self.child = None;
                bail!("ZooKeeper exited with {status}\n{}", log_tail(&self.dir, &["stdout.log", "stderr.log"]));
            }
            if self.serving() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("ZooKeeper did not start serving\n{}", log_tail(&self.dir, &["stdout.log", "stderr.log"]));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether ZooKeeper serves sessions: its `srvr` report names its mode only
    /// then (`ruok` answers `imok` earlier, while it still refuses sessions, and
    /// an 18.16 server whose first session is refused never runs `ON CLUSTER` DDL).
    fn serving(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut answer = String::new();
        s.write_all(b"srvr").is_ok() && s.read_to_string(&mut answer).is_ok() && answer.contains("Mode: standalone")
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running cluster `tally` of [`SHARDS`] × [`REPLICAS`] servers and its
/// ZooKeeper; all stopped and their data removed on drop.
pub struct ClickHouseCluster {
    nodes: Vec<ClusterNode>,
    zookeeper: ZooKeeper,
    binary: PathBuf,
    // Declared last: removed only after `Drop::drop` has killed everything.
    dir: TempDir,
}

impl ClickHouseCluster {
    /// Starts ZooKeeper and the four servers, and waits until every server
    /// answers and lists the whole cluster in `system.clusters` and reaches
    /// ZooKeeper. Fails (never skips) when a package is missing. Retries up to
    /// 3 times when a port picked as free was taken before a server bound it.
    pub fn start() -> Result<Self> {
        let binary = crate::clickhouse::find_binary().map_err(|_| anyhow!(MISSING_CLICKHOUSE))?;
        let java = find_java()?;
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&binary, &java) {
                Ok(cluster) => return Ok(cluster),
                Err(e) if format!("{e:#}").contains("Address already in use") => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("no attempt made")).context("cluster: ports clashed 3 times"))
    }

    fn try_start(binary: &Path, java: &Path) -> Result<Self> {
        let dir =
            tempfile::Builder::new().prefix("tally-cluster-").tempdir().context("create temp dir for the cluster")?;
        let count = (SHARDS * REPLICAS) as usize;
        let ports = free_ports(1 + 3 * count)?;
        let zk_port = ports[0];
        let mut nodes = Vec::with_capacity(count);
        for shard in 1..=SHARDS {
            for replica in 1..=REPLICAS {
                let i = nodes.len();
                let node_dir = dir.path().join(format!("s{shard}r{replica}"));
                fs::create_dir_all(&node_dir)?;
                nodes.push(ClusterNode {
                    shard,
                    replica,
                    child: None,
                    http_port: ports[1 + 3 * i],
                    tcp_port: ports[2 + 3 * i],
                    dir: node_dir,
                });
            }
        }
        let shards_xml = shards_xml(&nodes);
        for (i, node) in nodes.iter().enumerate() {
            write_node_config(node, ports[3 + 3 * i], zk_port, &shards_xml)?;
        }
        let zookeeper = ZooKeeper::start(java, dir.path().join("zookeeper"), zk_port)?;
        let mut cluster = Self { nodes, zookeeper, binary: binary.to_path_buf(), dir };
        // Launch all, then wait: the four servers start in parallel.
        for node in &mut cluster.nodes {
            node.launch(binary)?;
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        for i in 0..cluster.nodes.len() {
            cluster.nodes[i].wait_ready(deadline)?;
            cluster.wait_cluster_visible(i, deadline)?;
        }
        cluster.check_distributed_ddl()?;
        Ok(cluster)
    }

    /// Until node `i` lists all servers of the cluster and talks to ZooKeeper.
    fn wait_cluster_visible(&self, i: usize, deadline: Instant) -> Result<()> {
        let node = &self.nodes[i];
        let want = (SHARDS * REPLICAS).to_string();
        loop {
            let listed = node.query(&format!("SELECT count() FROM system.clusters WHERE cluster = '{CLUSTER}'"));
            let zk = node.query("SELECT count() FROM system.zookeeper WHERE path = '/'");
            match (listed, zk) {
                (Ok(n), Ok(_)) if n.trim() == want => return Ok(()),
                (listed, zk) if Instant::now() > deadline => {
                    bail!(
                        "server s{}r{} never saw the cluster: {listed:?} {zk:?}\n{}",
                        node.shard,
                        node.replica,
                        node.log_tail()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Proves that every server runs `ON CLUSTER` DDL (each one's DDL worker
    /// holds a ZooKeeper session), with a create and a drop of a probe database.
    fn check_distributed_ddl(&self) -> Result<()> {
        for sql in [
            "CREATE DATABASE IF NOT EXISTS tally_harness_probe ON CLUSTER tally",
            "DROP DATABASE IF EXISTS tally_harness_probe ON CLUSTER tally",
        ] {
            let done = self.nodes[0].query_with("distributed_ddl_task_timeout=60", sql)?;
            // One status row per server: host, port, status 0, error, hosts left, active left.
            if done.lines().filter(|l| l.split('\t').nth(2) == Some("0")).count() != self.nodes.len() {
                bail!("`{sql}` did not succeed on every server:\n{done}");
            }
        }
        Ok(())
    }

    /// Every server, shard by shard: `nodes()[0]` is shard 1 replica 1,
    /// `nodes()[1]` shard 1 replica 2, `nodes()[2]` shard 2 replica 1, ...
    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// Server `i` (see [`nodes`](Self::nodes)).
    pub fn node(&self, i: usize) -> &ClusterNode {
        &self.nodes[i]
    }

    /// Runs `sql` on server `i`.
    pub fn query(&self, i: usize, sql: &str) -> Result<String> {
        self.nodes[i].query(sql)
    }

    /// Process id of ZooKeeper.
    pub fn zookeeper_pid(&self) -> Option<u32> {
        self.zookeeper.child.as_ref().map(Child::id)
    }

    /// The cluster's temp dir (one sub-dir per server and `zookeeper/`), for debugging.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills server `i` with SIGKILL (a crash). Its data dir stays. Idempotent.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
    }

    /// Starts server `i` again on the same ports and data dir (killing it first
    /// if it runs) and waits for `/ping`. Its replicated tables replicate again
    /// once ZooKeeper has expired the killed process's session ([`ZK_SESSION`]);
    /// [`sync_replica`](Self::sync_replica) waits for that.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.nodes[i].kill9();
        self.nodes[i].launch(&self.binary)?;
        self.nodes[i].wait_ready(Instant::now() + READY_TIMEOUT)
    }

    /// Waits until replicated `table` (`db.table`) on server `i` has fetched
    /// everything its shard's other replicas have (`SYSTEM SYNC REPLICA`),
    /// retrying while a restarted replica waits for its old session to expire.
    pub fn sync_replica(&self, i: usize, table: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // SYNC REPLICA blocks while a part it must fetch lives only on a replica that is down.
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
            match self.nodes[i].query_within("", &format!("SYSTEM SYNC REPLICA {table}"), left) {
                Ok(_) => {
                    // SYNC REPLICA returns early while the table is read-only (no session yet).
                    let ro = self.nodes[i].query(&format!(
                        "SELECT is_readonly, queue_size FROM system.replicas WHERE concat(database, '.', table) = '{table}'"
                    ))?;
                    if ro.trim() == "0\t0" {
                        return Ok(());
                    }
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("sync replica {table} on node {i}")))
                }
                Err(_) => {}
            }
            if Instant::now() > deadline {
                bail!("replica {table} on node {i} did not catch up within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for ClickHouseCluster {
    fn drop(&mut self) {
        // The data dirs are deleted next, so a graceful shutdown buys nothing.
        for node in &mut self.nodes {
            node.kill9();
        }
        self.zookeeper.kill9();
    }
}

fn find_java() -> Result<PathBuf> {
    if !Path::new(ZOOKEEPER_JAR).is_file() {
        bail!(MISSING_ZOOKEEPER);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("java"))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!(MISSING_ZOOKEEPER))
}

fn free_ports(n: usize) -> Result<Vec<u16>> {
    Ok((0..n).map(|_| crate::service::free_port()).collect())
}

/// The `<remote_servers>` body: one `<shard>` per shard, replicated internally
/// (a write through a Distributed table goes to one replica, which replicates).
fn shards_xml(nodes: &[ClusterNode]) -> String {
    let mut xml = String::new();
    for shard in 1..=SHARDS {
        xml.push_str("      <shard><internal_replication>true</internal_replication>");
        for n in nodes.iter().filter(|n| n.shard == shard) {
            xml.push_str(&format!("<replica><host>127.0.0.1</host><port>{}</port></replica>", n.tcp_port));
        }
        xml.push_str("</shard>\n");
    }
    xml
}

fn write_node_config(node: &ClusterNode, interserver_port: u16, zk_port: u16, shards_xml: &str) -> Result<()> {
    let d = node.dir.to_str().context("temp dir path is not UTF-8")?;
    let fill = |template: &str| {
        template
            .replace("@DIR@", d)
            .replace("@HTTP_PORT@", &node.http_port.to_string())
            .replace("@TCP_PORT@", &node.tcp_port.to_string())
            .replace("@INTERSERVER_PORT@", &interserver_port.to_string())
            .replace("@ZK_PORT@", &zk_port.to_string())
            .replace("@ZK_SESSION_MS@", &ZK_SESSION.as_millis().to_string())
            .replace("@SHARD@", &node.shard.to_string())
            // Unique across the cluster, so a table replicated to every server can use it alone.
            .replace("@REPLICA@", &format!("s{}r{}", node.shard, node.replica))
            .replace("@SHARDS_XML@", shards_xml.trim_end())
    };
    fs::write(node.dir.join("config.xml"), fill(CONFIG_TEMPLATE)).context("write config.xml")?;
    fs::write(node.dir.join("users.xml"), fill(USERS_TEMPLATE)).context("write users.xml")?;
    Ok(())
}

fn log_tail(dir: &Path, names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            let text = fs::read_to_string(dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "--- tail of {} ---\n{}",
                dir.join(name).display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        let nodes: Vec<ClusterNode> = (0..4)
            .map(|i| ClusterNode {
                shard: i / 2 + 1,
                replica: i % 2 + 1,
                child: None,
                http_port: 1000 + i as u16,
                tcp_port: 2000 + i as u16,
                dir: std::env::temp_dir(),
            })
            .collect();
        let xml = shards_xml(&nodes);
        assert_eq!(xml.matches("<shard>").count(), 2);
        assert_eq!(xml.matches("<replica>").count(), 4);
        assert!(xml.contains("<port>2001</port></replica></shard>"), "{xml}");
        let dir = tempfile::tempdir().unwrap();
        let node = ClusterNode { dir: dir.path().to_path_buf(), ..nodes.into_iter().nth(3).unwrap() };
        write_node_config(&node, 3003, 4004, &xml).unwrap();
        let config = fs::read_to_string(dir.path().join("config.xml")).unwrap();
        assert!(!config.contains('@'), "unfilled placeholder in {config}");
        assert!(config.contains("<shard>2</shard>") && config.contains("<replica>s2r2</replica>"));
        assert!(config.contains("<port>4004</port>") && config.contains("<interserver_http_port>3003<"));
    }
}
