//! New TCP connections per cgroup (inet_sock_set_state, by the socket's own cgroup).

mod common;

use common::*;

const CONNECTIONS: u64 = 25;

/// N connections from a client cgroup to a server cgroup over loopback: exactly N active
/// connections in the client's cgroup and N passive ones in the server's, and none the other way.
/// The passive side becomes ESTABLISHED in softirq, under whatever task was running: only the
/// socket's own cgroup (inherited from the listener) puts it in the server's cgroup.
#[test]
fn n_connections_counted_once_per_end() {
    let mut probes = load_probes();
    let client_cg = TestCgroup::new("tcp-client");
    let server_cg = TestCgroup::new("tcp-server");
    let (server, port) = start_server(&server_cg, None, "127.0.0.1:0", CONNECTIONS);
    let client = workload(&client_cg, None)
        .args(["send", &format!("127.0.0.1:{port}"), &CONNECTIONS.to_string(), "1000"])
        .spawn()
        .expect("spawn client");
    wait_ok(client);
    assert_eq!(wait_ok(server).trim().parse::<u64>().expect("bytes"), CONNECTIONS * 1000);

    let snapshot = settle_and_read(&mut probes);
    let (c, s) = (usage_of(&snapshot, &client_cg), usage_of(&snapshot, &server_cg));
    assert_eq!((c.tcp_active, c.tcp_passive), (CONNECTIONS, 0), "client: {c:?}");
    assert_eq!((s.tcp_active, s.tcp_passive), (0, CONNECTIONS), "server: {s:?}");
    assert_eq!(c.tcp_connections() + s.tcp_connections(), 2 * CONNECTIONS);
}

/// The same over IPv6 loopback: the tracepoint covers both families.
#[test]
fn ipv6_connections_counted_once_per_end() {
    let mut probes = load_probes();
    let client_cg = TestCgroup::new("tcp6-client");
    let server_cg = TestCgroup::new("tcp6-server");
    let (server, port) = start_server(&server_cg, None, "[::1]:0", 9);
    let client =
        workload(&client_cg, None).args(["send", &format!("[::1]:{port}"), "9", "10"]).spawn().expect("spawn client");
    wait_ok(client);
    assert_eq!(wait_ok(server).trim(), "90");
    let snapshot = settle_and_read(&mut probes);
    let (c, s) = (usage_of(&snapshot, &client_cg), usage_of(&snapshot, &server_cg));
    assert_eq!((c.tcp_active, c.tcp_passive), (9, 0), "client: {c:?}");
    assert_eq!((s.tcp_active, s.tcp_passive), (0, 9), "server: {s:?}");
    assert!(c.loopback_tx_bytes > 90 && c.loopback_tx_bytes == s.loopback_rx_bytes, "{c:?} {s:?}");
}
