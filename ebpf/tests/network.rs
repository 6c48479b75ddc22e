//! Network bytes per cgroup (cgroup_skb ingress/egress, by the socket's cgroup).
//!
//! What a byte is: an IP byte as it crosses the network, headers included, no link-layer framing:
//! `skb->len` from the IP header, plus one IP and transport header per extra segment of a GSO or
//! GRO packet. A TCP stream of N payload bytes therefore counts N plus 52 bytes (20 IP + 32 TCP
//! with timestamps) per segment, plus the handshake and teardown: about 0.1% over loopback
//! (64 KiB segments), about 3.6% over a 1500-byte MTU (1448-byte segments).
//!
//! Headers are accounted two ways:
//! - per segment: payload + 52 × the segments the probes counted must be within 2% (the SYN, FIN
//!   and pure ACKs are the rest);
//! - exactly, against the kernel's own counters of the namespace the test makes (only our sockets
//!   live there): `IpExt:OutOctets` plus 52 bytes per TCP segment beyond the IP packets sent (see
//!   `NetNs::wire_bytes_sent`); within 0.1%.

mod common;

use common::*;

const PAYLOAD: u64 = 10_000_000;
const TCP_IP_HEADERS: u64 = 52;

/// 10 MB from a client in cgroup A to a server in cgroup B over loopback, inside a private network
/// namespace so that its `lo` carries nothing else. Loopback stays out of the network counters.
#[test]
fn loopback_bytes_between_two_cgroups() {
    let mut probes = load_probes();
    let ns = NetNs::new("lo");
    let client_cg = TestCgroup::new("lo-client");
    let server_cg = TestCgroup::new("lo-server");

    let (server, port) = start_server(&server_cg, Some(&ns), "127.0.0.1:0", 1);
    let client = workload(&client_cg, Some(&ns))
        .args(["send", &format!("127.0.0.1:{port}"), "1", &PAYLOAD.to_string()])
        .spawn()
        .expect("spawn client");
    wait_ok(client);
    let received: u64 = wait_ok(server).trim().parse().expect("bytes received");
    assert_eq!(received, PAYLOAD);

    let snapshot = settle_and_read(&mut probes);
    let (c, s) = (usage_of(&snapshot, &client_cg), usage_of(&snapshot, &server_cg));
    eprintln!("client {c:?}\nserver {s:?}");

    assert!(c.loopback_tx_bytes >= PAYLOAD, "client loopback tx {} < payload", c.loopback_tx_bytes);
    assert_within("client loopback tx vs payload", c.loopback_tx_bytes as f64, PAYLOAD as f64, 0.02);
    let with_headers = PAYLOAD + TCP_IP_HEADERS * c.loopback_tx_packets;
    assert_within("client loopback tx vs payload + headers", c.loopback_tx_bytes as f64, with_headers as f64, 0.02);
    // The same segments, seen leaving one socket and reaching the other.
    assert_eq!(c.loopback_tx_bytes, s.loopback_rx_bytes, "every byte A sent reached B's socket");
    assert_eq!(c.loopback_tx_packets, s.loopback_rx_packets);
    assert_eq!(s.loopback_tx_bytes, c.loopback_rx_bytes, "every ACK B sent reached A's socket");

    let counted = c.loopback_tx_bytes + s.loopback_tx_bytes;
    assert_within(
        "loopback tx of both vs the namespace's wire bytes",
        counted as f64,
        ns.wire_bytes_sent() as f64,
        0.001,
    );

    assert_eq!(
        (c.net_rx_bytes, c.net_tx_bytes, s.net_rx_bytes, s.net_tx_bytes),
        (0, 0, 0, 0),
        "loopback is not network"
    );
}

/// The production shape: client and server in two network namespaces joined by a veth pair
/// (MTU 1500), so the bytes cross a network device. 10 MB from A in one namespace to B in the
/// other. Addresses live on the veth pair only, inside namespaces this test creates.
#[test]
fn veth_bytes_between_two_network_namespaces() {
    let mut probes = load_probes();
    let a = NetNs::new("va");
    let b = NetNs::new("vb");
    let pid = std::process::id();
    let (va, vb) = (format!("tva{pid}"), format!("tvb{pid}"));
    run("ip", &["-n", &a.name, "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &b.name]);
    for (ns, dev, addr) in [(&a, &va, "10.254.77.1/30"), (&b, &vb, "10.254.77.2/30")] {
        // No IPv6 on the pair: its neighbour discovery would add packets that are not ours.
        let ipv6_off = format!("echo 1 > /proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
        run("ip", &["netns", "exec", &ns.name, "sh", "-c", &ipv6_off]);
        run("ip", &["-n", &ns.name, "addr", "add", addr, "dev", dev]);
        run("ip", &["-n", &ns.name, "link", "set", dev, "up"]);
    }
    let client_cg = TestCgroup::new("veth-client");
    let server_cg = TestCgroup::new("veth-server");

    let (server, port) = start_server(&server_cg, Some(&b), "10.254.77.2:0", 1);
    let client = workload(&client_cg, Some(&a))
        .args(["send", &format!("10.254.77.2:{port}"), "1", &PAYLOAD.to_string()])
        .spawn()
        .expect("spawn client");
    wait_ok(client);
    assert_eq!(wait_ok(server).trim().parse::<u64>().expect("bytes"), PAYLOAD);

    let snapshot = settle_and_read(&mut probes);
    let (c, s) = (usage_of(&snapshot, &client_cg), usage_of(&snapshot, &server_cg));
    eprintln!("client {c:?}\nserver {s:?}");

    let with_headers = PAYLOAD + TCP_IP_HEADERS * c.net_tx_packets;
    assert!(c.net_tx_bytes >= PAYLOAD, "client net tx {} < payload", c.net_tx_bytes);
    assert_within("client net tx vs payload + headers", c.net_tx_bytes as f64, with_headers as f64, 0.02);
    assert_eq!(c.net_tx_bytes, s.net_rx_bytes, "every byte A sent reached B's socket");
    assert_eq!(s.net_tx_bytes, c.net_rx_bytes, "every ACK B sent reached A's socket");
    // Each is the only socket in its namespace: its bytes are all its namespace sent.
    assert_within(
        "client net tx vs its namespace's wire bytes",
        c.net_tx_bytes as f64,
        a.wire_bytes_sent() as f64,
        0.001,
    );
    assert_within(
        "server net tx vs its namespace's wire bytes",
        s.net_tx_bytes as f64,
        b.wire_bytes_sent() as f64,
        0.001,
    );
    assert_eq!(
        (c.loopback_rx_bytes, c.loopback_tx_bytes, s.loopback_rx_bytes, s.loopback_tx_bytes),
        (0, 0, 0, 0),
        "veth traffic is not loopback"
    );
}

/// `--cgroup-root`: the network programs attach at the given cgroup and count its subtree only.
/// A client inside the root and one outside it send the same bytes to a server inside: the one
/// outside counts nothing (the server, inside, still counts what it received from both).
#[test]
fn network_counts_only_under_the_cgroup_root() {
    require_root();
    let mut root = TestCgroup::new("netroot");
    let inside = root.child("inside");
    let server_cg = root.child("server");
    let outside = TestCgroup::new("netroot-outside");
    let config = tally_ebpf::ProbeConfig { cgroup_root: Some(root.path.clone()), ..Default::default() };
    let mut probes = tally_ebpf::Probes::load(&config).expect("load at a subtree");
    assert_eq!(probes.cgroup_root(), root.path.as_path());

    let (server, port) = start_server(&server_cg, None, "127.0.0.1:0", 2);
    for cg in [&inside, &outside] {
        let client =
            workload(cg, None).args(["send", &format!("127.0.0.1:{port}"), "1", "100000"]).spawn().expect("spawn");
        wait_ok(client);
    }
    assert_eq!(wait_ok(server).trim(), "200000");
    let snapshot = settle_and_read(&mut probes);
    let (i, o, s) = (usage_of(&snapshot, &inside), usage_of(&snapshot, &outside), usage_of(&snapshot, &server_cg));
    assert!(i.loopback_tx_bytes >= 100_000, "inside: {i:?}");
    assert_eq!((o.loopback_tx_bytes, o.loopback_rx_bytes), (0, 0), "outside the root: {o:?}");
    assert!(s.loopback_rx_bytes >= 200_000, "server: {s:?}");
    // CPU and connections are host-wide whatever the root.
    assert_eq!(o.tcp_active, 1);
}
