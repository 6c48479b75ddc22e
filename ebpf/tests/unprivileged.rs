//! Without privileges, loading fails and says exactly which capability is missing. The loader
//! runs in a child (the workload binary's `load-probes`) whose capabilities `setpriv` takes away.

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
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
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
    assert_eq!(
        lines.next(),
        Some("missing: CAP_BPF CAP_PERFMON CAP_NET_ADMIN")
    );
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
    let (code, out) = load_probes_with(&[
        "--inh-caps=-bpf,-sys_admin",
        "--bounding-set=-bpf,-sys_admin",
    ]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(out.lines().next(), Some("missing: CAP_BPF"));
}

#[test]
fn root_loads() {
    require_root();
    let (code, out) = load_probes_with(&[]);
    assert_eq!((code, out.as_str()), (0, "ok\n"));
}
