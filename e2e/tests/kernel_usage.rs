//! The agent's eBPF usage, end to end (as root): a CPU burner and a client
//! opening N connections in a test cgroup mapped to a tenant → the agent's
//! probes → its usage reports → tally-collector → ClickHouse. And as `nobody`
//! without capabilities: the agent serves OTLP and says why its probes are off.

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use testkit::agent::start_agent_as;
use testkit::collector::{setup, start_collector, totals, value};
use testkit::service::sample;

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The cgroup2 mount, from /proc/self/mountinfo.
fn cgroup2() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(" - ").nth(1).is_some_and(|t| t.starts_with("cgroup2 ")))
        .expect("a cgroup2 mount");
    PathBuf::from(line.split_whitespace().nth(4).unwrap())
}

/// A cgroup created for the test and removed after it.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(relative: &str) -> Self {
        let path = cgroup2().join(relative);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn usage_usec(&self) -> u64 {
        let stat = std::fs::read_to_string(self.0.join("cpu.stat")).unwrap();
        stat.lines().find_map(|l| l.strip_prefix("usage_usec ")).unwrap().trim().parse().unwrap()
    }

    /// Runs `script` with sh inside this cgroup, to completion.
    fn run(&self, script: &str) {
        let procs = self.0.join("cgroup.procs");
        let status =
            Command::new("sh").arg("-c").arg(format!("echo $$ > {} && {script}", procs.display())).status().unwrap();
        assert!(status.success(), "{script}");
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_cpu_and_connections_reach_clickhouse_from_the_kernel() {
    if !is_root() {
        panic!("this test loads eBPF programs: run it as root (CI does)");
    }
    let (server, db, ch) = setup("agent_kernel").await;
    let dir = tempfile::tempdir().unwrap();
    let collector = start_collector(&server, &db, dir.path(), &[]).await;
    let parent = format!("tally-agent-test-{}", std::process::id());
    let rule = format!("--cgroup-tenant={parent}/burner=burner");
    let agent = start_agent_as(None, &[&collector.grpc_url], dir.path(), &[&rule]).await;
    let metrics = agent.service.metrics().await.unwrap();
    assert_eq!(sample(&metrics, "tally_agent_ebpf_probes{state=\"on\",missing=\"\"}"), 1, "{metrics}");

    let _parent = TestCgroup::new(&parent);
    let burner = TestCgroup::new(&format!("{parent}/burner"));
    // N connections to a listener outside the cgroup: each is one new connection of the client's.
    const N: u64 = 7;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = std::thread::spawn(move || {
        for _ in 0..N {
            let (mut c, _) = listener.accept().unwrap();
            let _ = c.read(&mut [0u8; 1]);
        }
    });
    let connect = format!("for i in $(seq {N}); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port})).close()'; done");
    // About two seconds of CPU, then the connections.
    burner.run(&format!("end=$(($(date +%s) + 2)); while [ $(date +%s) -lt $end ]; do :; done; {connect}"));
    acceptor.join().unwrap();
    let usec = burner.usage_usec();
    assert!(usec > 500_000, "the burner ran: {usec} µs");

    // The probes are read every report interval (1 s here); wait for what they read to be stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        agent.drained().await;
        collector.settle().await;
        let got = totals(&ch, &db).await;
        if value(&got, "burner", "tcp_connections") == Decimal::from(N)
            && value(&got, "burner", "cpu_seconds") * Decimal::from(1_000_000)
                >= Decimal::from(usec) * Decimal::new(98, 2)
        {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "burner's usage never arrived (cpu.stat {usec} µs, {N} connections): {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let cpu_usec = (value(&got, "burner", "cpu_seconds") * Decimal::from(1_000_000)).to_f64().unwrap();
    let error = (cpu_usec - usec as f64).abs() / usec as f64;
    assert!(error < 0.02, "cpu_seconds {cpu_usec} µs vs cpu.stat {usec} µs: {:.3}% apart", error * 100.0);
    assert_eq!(value(&got, "burner", "tcp_connections"), Decimal::from(N), "{got:?}");
    // Loopback traffic is not billed as network bytes.
    assert_eq!(value(&got, "burner", "net_tx_bytes") + value(&got, "burner", "net_rx_bytes"), Decimal::ZERO, "{got:?}");
    let metrics = agent.service.metrics().await.unwrap();
    assert!(sample(&metrics, "tally_agent_ebpf_program_runs_total{name=\"tally_sched_switch\"}") > 0, "{metrics}");
    assert!(
        sample(&metrics, "tally_agent_ebpf_program_runs_total{name=\"tally_inet_sock_set_state\"}") >= 2 * N,
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "tally_agent_ebpf_map_full_total{name=\"usage\"}"), 0);
    eprintln!("cpu_seconds {cpu_usec:.0} µs vs cpu.stat {usec} µs ({:.4}% apart); {N} connections", error * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_capabilities_the_agent_serves_otlp_and_says_why_probes_are_off() {
    if !is_root() {
        panic!("this test drops privileges with setpriv: run it as root (CI does)");
    }
    let dir = tempfile::tempdir().unwrap();
    // nobody must be able to write the agent's data directory.
    std::fs::create_dir(dir.path().join("agent")).unwrap();
    let status = Command::new("chown").args(["-R", "nobody:nogroup"]).arg(dir.path()).status().unwrap();
    assert!(status.success());
    let setpriv = ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"];
    // No collector is reachable: the agent still takes data into its WAL.
    let agent = start_agent_as(Some(&setpriv), &["http://127.0.0.1:9"], dir.path(), &[]).await;
    let metrics = agent.service.metrics().await.unwrap();
    assert_eq!(
        sample(&metrics, "tally_agent_ebpf_probes{state=\"off\",missing=\"CAP_BPF CAP_PERFMON CAP_NET_ADMIN\"}"),
        1,
        "{metrics}"
    );
    let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a","kind":2,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", agent.http_url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = agent.service.metrics().await.unwrap();
    assert_eq!(sample(&metrics, "tally_agent_items_total{signal=\"traces\",outcome=\"accepted\"}"), 1);
}
