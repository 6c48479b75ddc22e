//! What the host gives the probes: the cgroup2 mount, the hierarchy kind, capabilities, tracefs,
//! BTF. Checked before loading so that a failure names what is missing.

use std::{
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use crate::error::{Capability, ProbeError};

const MOUNTINFO: &str = "/proc/self/mountinfo";
const TRACEFS: &str = "/sys/kernel/tracing";
const TRACEFS_DEBUGFS: &str = "/sys/kernel/debug/tracing";
const BTF_VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// How the host mounts cgroups. Cgroup ids (and so everything the probes count) are cgroup v2
/// ids: on a hybrid host only the tasks placed in the v2 tree are told apart (container runtimes
/// there usually manage v1 controllers only, so their containers may all share one v2 cgroup).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// Only cgroup2 (production nodes: `/sys/fs/cgroup`).
    Unified { mount: PathBuf },
    /// cgroup2 next to cgroup v1 controllers (here: `/sys/fs/cgroup/unified`).
    Hybrid { mount: PathBuf },
}

impl Hierarchy {
    /// The cgroup2 mount point.
    pub fn mount(&self) -> &Path {
        match self {
            Hierarchy::Unified { mount } | Hierarchy::Hybrid { mount } => mount,
        }
    }
}

/// One line of mountinfo, the fields we use.
struct Mount<'a> {
    root: &'a str,
    mount_point: PathBuf,
    fs_type: &'a str,
}

fn parse_mountinfo_line(line: &str) -> Option<Mount<'_>> {
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let root = fields.nth(3)?;
    let mount_point = unescape_octal(fields.next()?);
    let fs_type = after.split(' ').next()?;
    Some(Mount { root, mount_point: PathBuf::from(mount_point), fs_type })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push((bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The hierarchy described by a mountinfo text: the first cgroup2 mount of the whole tree (root
/// `/`), hybrid when cgroup v1 hierarchies are mounted too. `None` without cgroup2.
pub(crate) fn hierarchy_from_mountinfo(mountinfo: &str) -> Option<Hierarchy> {
    let mounts: Vec<Mount<'_>> = mountinfo.lines().filter_map(parse_mountinfo_line).collect();
    let v2 = mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup2")
        .min_by_key(|m| (m.root != "/", m.mount_point.as_os_str().len()))?;
    let mount = v2.mount_point.clone();
    if mounts.iter().any(|m| m.fs_type == "cgroup") {
        Some(Hierarchy::Hybrid { mount })
    } else {
        Some(Hierarchy::Unified { mount })
    }
}

/// Detects the cgroup hierarchy from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Result<Hierarchy, ProbeError> {
    let text = fs::read_to_string(MOUNTINFO).map_err(|source| ProbeError::Io { path: MOUNTINFO.into(), source })?;
    hierarchy_from_mountinfo(&text).ok_or(ProbeError::NoCgroup2)
}

/// Fails unless `path` is a directory on a cgroup2 filesystem.
pub(crate) fn check_cgroup2_dir(path: &Path) -> Result<(), ProbeError> {
    let not = |reason: String| ProbeError::NotCgroup2 { path: path.to_path_buf(), reason };
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| not("contains NUL".into()))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string, st a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(not(io::Error::last_os_error().to_string()));
    }
    if st.f_type as i64 != CGROUP2_SUPER_MAGIC {
        return Err(not(format!("filesystem type {:#x}", st.f_type)));
    }
    Ok(())
}

/// The capabilities in a `/proc/<pid>/status` text that the probes need and lack.
/// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, as the kernel allows.
pub(crate) fn missing_capabilities(status: &str) -> Vec<Capability> {
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    const SYS_ADMIN: u32 = 21;
    [Capability::Bpf, Capability::Perfmon, Capability::NetAdmin]
        .into_iter()
        .filter(|c| match c {
            Capability::Bpf | Capability::Perfmon => !has(c.bit()) && !has(SYS_ADMIN),
            Capability::NetAdmin => !has(c.bit()),
        })
        .collect()
}

pub(crate) fn check_capabilities() -> Result<(), ProbeError> {
    let path = "/proc/self/status";
    let status = fs::read_to_string(path).map_err(|source| ProbeError::Io { path: path.into(), source })?;
    let missing = missing_capabilities(&status);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ProbeError::MissingCapabilities(missing))
    }
}

fn tracefs_mounted(mountinfo: &str) -> bool {
    mountinfo.lines().filter_map(parse_mountinfo_line).any(|m| {
        m.fs_type == "tracefs" && (m.mount_point == Path::new(TRACEFS) || m.mount_point == Path::new(TRACEFS_DEBUGFS))
    })
}

/// Makes sure tracefs is mounted where aya looks (tracepoint ids are read from it): mounts it at
/// `/sys/kernel/tracing` when it is absent.
pub(crate) fn ensure_tracefs() -> Result<(), ProbeError> {
    let text = fs::read_to_string(MOUNTINFO).map_err(|source| ProbeError::Io { path: MOUNTINFO.into(), source })?;
    if tracefs_mounted(&text) {
        return Ok(());
    }
    let target = CString::new(TRACEFS).expect("no NUL");
    let fstype = CString::new("tracefs").expect("no NUL");
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(ProbeError::NoTracefs(io::Error::last_os_error()));
    }
    tracing::info!(path = TRACEFS, "mounted tracefs");
    Ok(())
}

pub(crate) fn check_btf() -> Result<(), ProbeError> {
    fs::metadata(BTF_VMLINUX).map(|_| ()).map_err(ProbeError::NoBtf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
";
    const UNIFIED: &str = "\
31 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
40 31 0:26 /kubepods /host/cg rw shared:9 - cgroup2 cgroup2 rw
50 25 0:12 / /sys/kernel/tracing rw,nosuid,nodev,noexec,relatime shared:20 - tracefs tracefs rw
";

    #[test]
    fn detects_hybrid_and_unified() {
        assert_eq!(
            hierarchy_from_mountinfo(HYBRID),
            Some(Hierarchy::Hybrid { mount: "/sys/fs/cgroup/unified".into() })
        );
        // A bind mount of a subtree (root /kubepods) is not the hierarchy's mount.
        assert_eq!(hierarchy_from_mountinfo(UNIFIED), Some(Hierarchy::Unified { mount: "/sys/fs/cgroup".into() }));
        assert_eq!(hierarchy_from_mountinfo("25 30 0:23 / /sys rw - sysfs sysfs rw\n"), None);
    }

    #[test]
    fn finds_tracefs_and_unescapes_mount_points() {
        assert!(tracefs_mounted(UNIFIED));
        assert!(!tracefs_mounted(HYBRID));
        let line = "60 25 0:40 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            hierarchy_from_mountinfo(line).map(|h| h.mount().to_path_buf()),
            Some(PathBuf::from("/mnt/with space"))
        );
    }

    #[test]
    fn capabilities_from_status() {
        // root: everything.
        assert!(missing_capabilities("CapEff:\t000001ffffffffff\n").is_empty());
        // nobody: nothing.
        assert_eq!(
            missing_capabilities("CapEff:\t0000000000000000\n"),
            vec![Capability::Bpf, Capability::Perfmon, Capability::NetAdmin]
        );
        // CAP_SYS_ADMIN alone covers BPF and PERFMON, not NET_ADMIN.
        assert_eq!(missing_capabilities("CapEff:\t0000000000200000\n"), vec![Capability::NetAdmin]);
        // root without CAP_NET_ADMIN (bit 12).
        let all_but_net_admin = 0x1ff_ffff_ffffu64 & !(1 << 12);
        assert_eq!(missing_capabilities(&format!("CapEff:\t{all_but_net_admin:016x}\n")), vec![Capability::NetAdmin]);
    }
}
