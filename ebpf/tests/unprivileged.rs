//! Without privileges or kernel features, loading fails and says exactly which capability or
//! feature is missing. The loader runs in a child (the workload binary's `load-probes`) whose
//! capabilities `setpriv` takes away, or whose private mount namespace lacks tracefs.

mod common;

use std::process::Command;

use common::require_root;

fn load_probes_with(setpriv_args: &[&str]) -> (i32, String) {
    let out = Command::new("setpriv")
        .args(setpriv_args)
        .arg(env!("CARGO_BIN_EXE_tally-ebpf-workload"))
        .arg("load-probes")
        .output()
        .expect("setpriv (util-linux)");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn nobody_is_told_every_missing_capability() {
    require_root();
    let (code, out) = load_probes_with(&[
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ]);
    assert_eq!(code, 2, "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("missing: CAP_BPF CAP_PERFMON CAP_NET_ADMIN"));
    assert_eq!(
        lines.next(),
        Some(
            "error: missing capabilities CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN: the eBPF probes need \
             CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or CAP_SYS_ADMIN for the first two)"
        )
    );
}

#[test]
fn root_without_one_capability_is_told_that_one() {
    require_root();
    let (code, out) = load_probes_with(&["--inh-caps=-net_admin", "--bounding-set=-net_admin"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(out.lines().next(), Some("missing: CAP_NET_ADMIN"));

    // CAP_SYS_ADMIN grants BPF and PERFMON: losing only CAP_BPF changes nothing then, losing both
    // is reported as CAP_BPF.
    let (code, out) = load_probes_with(&["--inh-caps=-bpf,-sys_admin", "--bounding-set=-bpf,-sys_admin"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(out.lines().next(), Some("missing: CAP_BPF"));
}

#[test]
fn root_loads() {
    require_root();
    let (code, out) = load_probes_with(&[]);
    assert_eq!((code, out.as_str()), (0, "ok\n"));
}

/// Runs `load-probes` in a private mount namespace where tracefs is not mounted, after
/// `setpriv_args` (none: as root).
fn load_probes_without_tracefs(setpriv_args: &[&str]) -> (i32, String) {
    let workload = env!("CARGO_BIN_EXE_tally-ebpf-workload");
    let mut script =
        String::from("umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; ");
    script.push_str("grep -q ' - tracefs ' /proc/self/mountinfo && { echo 'tracefs still mounted'; exit 9; }; ");
    if setpriv_args.is_empty() {
        script.push_str(&format!("{workload} load-probes; rc=$?; "));
    } else {
        script.push_str(&format!("setpriv {} {workload} load-probes; rc=$?; ", setpriv_args.join(" ")));
    }
    script.push_str("grep ' - tracefs ' /proc/self/mountinfo | cut -d' ' -f5; exit $rc");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// tracefs absent: the loader mounts it at /sys/kernel/tracing and loads.
#[test]
fn mounts_tracefs_when_absent() {
    require_root();
    let (code, out) = load_probes_without_tracefs(&[]);
    assert_eq!((code, out.as_str()), (0, "ok\n/sys/kernel/tracing\n"));
}

/// tracefs absent and no right to mount it (no CAP_SYS_ADMIN): the error says tracefs.
#[test]
fn tracefs_absent_without_the_right_to_mount_it() {
    require_root();
    let (code, out) = load_probes_without_tracefs(&["--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]);
    assert_eq!(code, 2, "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("missing: tracefs"));
    let error = lines.next().unwrap_or_default();
    assert!(error.starts_with("error: tracefs is not mounted") && error.contains("Operation not permitted"), "{error}");
}

/// CAP_SYS_ADMIN is not needed when tracefs is there: CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN do.
#[test]
fn loads_without_cap_sys_admin() {
    require_root();
    // As root first, which mounts tracefs if the host has not.
    assert_eq!(load_probes_with(&[]), (0, "ok\n".to_string()));
    let (code, out) = load_probes_with(&["--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]);
    assert_eq!((code, out.as_str()), (0, "ok\n"));
}

/// A `cgroup_root` that is not a cgroup2 directory is refused before anything is loaded, as a
/// missing cgroup2.
#[test]
fn cgroup_root_must_be_cgroup2() {
    require_root();
    let config = tally_ebpf::ProbeConfig { cgroup_root: Some("/proc".into()), ..Default::default() };
    let error = tally_ebpf::Probes::load(&config).err().expect("/proc is not cgroup2");
    assert_eq!(error.missing().as_deref(), Some("cgroup2"));
    assert_eq!(error.to_string(), "cgroup root /proc is not a cgroup2 directory (filesystem type 0x9fa0)");
    let config = tally_ebpf::ProbeConfig { cgroup_root: Some("/nonexistent".into()), ..Default::default() };
    let error = tally_ebpf::Probes::load(&config).err().expect("no such directory");
    assert!(error.to_string().contains("No such file or directory"), "{error}");
}
