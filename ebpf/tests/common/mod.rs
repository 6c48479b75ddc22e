//! Shared by the kernel tests: test cgroups, network namespaces, the workload binary, tolerance
//! checks. The tests load real probes into the running kernel: they need root (CI runs as root).
#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use tally_ebpf::{attribution::CgroupPaths, CgroupUsage, ProbeConfig, Probes, Snapshot};

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the kernel tests load eBPF programs: run them as root");
}

pub fn load_probes() -> Probes {
    require_root();
    Probes::load(&ProbeConfig::default()).unwrap_or_else(|e| panic!("loading the probes: {e}"))
}

pub fn cgroup2() -> PathBuf {
    tally_ebpf::cgroup2_mount().expect("a cgroup2 mount").mount().to_path_buf()
}

/// A cgroup v2 directory made for one test, removed when dropped (after its processes exited).
pub struct TestCgroup {
    pub path: PathBuf,
    pub id: u64,
    children: Vec<PathBuf>,
}

impl TestCgroup {
    /// `<cgroup2 mount>/tally-test-<pid>-<name>`.
    pub fn new(name: &str) -> Self {
        Self::at(cgroup2().join(format!("tally-test-{}-{name}", std::process::id())))
    }

    /// A child cgroup of this one (removed with it).
    pub fn child(&mut self, name: &str) -> TestCgroup {
        let child = Self::at(self.path.join(name));
        self.children.push(child.path.clone());
        child
    }

    fn at(path: PathBuf) -> Self {
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        let id = CgroupPaths::id_of(&path).expect("cgroup inode");
        TestCgroup { path, id, children: Vec::new() }
    }

    /// `usage_usec` of the cgroup's `cpu.stat` (present in cgroup2 without the cpu controller).
    pub fn usage_usec(&self) -> u64 {
        let stat = fs::read_to_string(self.path.join("cpu.stat")).expect("cpu.stat");
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .expect("usage_usec in cpu.stat")
    }

    /// Removes the directory now (retrying while exited tasks are still being released).
    pub fn remove(&self) {
        for child in &self.children {
            remove_dir_retrying(child);
        }
        remove_dir_retrying(&self.path);
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if self.path.exists() {
            self.remove();
        }
    }
}

fn remove_dir_retrying(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while path.exists() {
        match fs::remove_dir(path) {
            Ok(()) => return,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("rmdir {}: {e}", path.display()),
        }
    }
}

/// A network namespace made with `ip netns add`, loopback up, deleted when dropped.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(name: &str) -> Self {
        let name = format!("tally-test-{}-{name}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        NetNs { name }
    }
}

impl NetNs {
    /// The namespace's IP and TCP counters (`/proc/net/snmp` and `/proc/net/netstat` read inside
    /// it), keyed `Ip:OutRequests`, `IpExt:OutOctets`, `Tcp:OutSegs`...
    pub fn snmp(&self) -> std::collections::HashMap<String, u64> {
        let mut counters = std::collections::HashMap::new();
        for file in ["/proc/net/snmp", "/proc/net/netstat"] {
            let text = output("ip", &["netns", "exec", &self.name, "cat", file]);
            let lines: Vec<&str> = text.lines().collect();
            for pair in lines.chunks(2) {
                let [names, values] = pair else { continue };
                let (prefix, names) = names.split_once(':').expect("prefix");
                let (_, values) = values.split_once(':').expect("prefix");
                for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
                    if let Ok(v) = value.parse() {
                        counters.insert(format!("{prefix}:{name}"), v);
                    }
                }
            }
        }
        counters
    }

    /// IP bytes this namespace sent, counted as on the wire: `IpExt:OutOctets` counts a GSO packet
    /// once with one set of headers, so add one 52-byte header (IPv4 20 + TCP 20 + timestamps 12)
    /// for every TCP segment beyond the IP packets (`Tcp:OutSegs - Ip:OutRequests`). Exact when
    /// the namespace carries only TCP over IPv4 with timestamps (Linux's default).
    pub fn wire_bytes_sent(&self) -> u64 {
        let c = self.snmp();
        c["IpExt:OutOctets"] + (c["Tcp:OutSegs"] - c["Ip:OutRequests"]) * 52
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

pub fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().expect(program);
    assert!(status.success(), "{program} {args:?}: {status}");
}

pub fn output(program: &str, args: &[&str]) -> String {
    let out: Output = Command::new(program).args(args).output().expect(program);
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The workload binary (src/bin/tally-ebpf-workload.rs), started inside `cgroup` (moved there
/// between fork and exec, as a container runtime does, so that all its CPU time is the cgroup's)
/// and, if given, inside network namespace `netns`.
pub fn workload(cgroup: &TestCgroup, netns: Option<&NetNs>) -> Command {
    use std::os::unix::{ffi::OsStrExt, process::CommandExt};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally-ebpf-workload"));
    if let Some(ns) = netns {
        cmd.args(["--netns", &ns.name]);
    }
    let procs = std::ffi::CString::new(cgroup.path.join("cgroup.procs").as_os_str().as_bytes()).expect("path");
    // SAFETY: only async-signal-safe calls (open, write, close) on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0" moves the writer itself.
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdout(Stdio::piped());
    cmd
}

pub fn wait_ok(child: Child) -> String {
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "workload failed: {}", out.status);
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Starts a `serve` workload and returns it with the port it listens on.
// The server is returned for the caller to wait on (killed here only if it never starts).
#[allow(clippy::zombie_processes)]
pub fn start_server(cgroup: &TestCgroup, netns: Option<&NetNs>, addr: &str, conns: u64) -> (Child, u16) {
    let port_file = std::env::temp_dir().join(format!("tally-test-port-{}-{}", std::process::id(), cgroup.id));
    let _ = fs::remove_file(&port_file);
    let mut child = workload(cgroup, netns)
        .arg("serve")
        .arg(addr)
        .arg(&port_file)
        .arg(conns.to_string())
        .spawn()
        .expect("spawn server");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(port) = fs::read_to_string(&port_file).ok().and_then(|t| t.trim().parse().ok()) {
            let _ = fs::remove_file(&port_file);
            return (child, port);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Lets in-flight kernel work (last context switches, softirqs) land, then reads.
pub fn settle_and_read(probes: &mut Probes) -> Snapshot {
    thread::sleep(Duration::from_millis(100));
    probes.read().expect("read the probes")
}

pub fn usage_of(snapshot: &Snapshot, cgroup: &TestCgroup) -> CgroupUsage {
    snapshot.usage.get(&cgroup.id).copied().unwrap_or_default()
}

/// Asserts |actual - expected| <= tolerance × expected and returns the relative error.
pub fn assert_within(what: &str, actual: f64, expected: f64, tolerance: f64) -> f64 {
    let error = (actual - expected) / expected;
    eprintln!("{what}: measured {actual:.0}, reference {expected:.0}, error {:+.4}%", error * 100.0);
    assert!(
        error.abs() <= tolerance,
        "{what}: measured {actual}, reference {expected}: off by {:.3}% (> {:.1}%)",
        error * 100.0,
        tolerance * 100.0
    );
    error
}
