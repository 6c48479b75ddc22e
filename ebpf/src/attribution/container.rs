//! Cgroup path → container and pod, for the layouts of the cgroupfs and systemd cgroup drivers:
//!
//! | layout | example |
//! |---|---|
//! | kubelet, cgroupfs | `kubepods/burstable/pod<uid>/<64 hex>` (guaranteed pods: `kubepods/pod<uid>/…`) |
//! | kubelet, systemd | `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, _ for ->.slice/cri-containerd-<64 hex>.scope` |
//! | CRI-O | `…/crio-<64 hex>.scope` (`crio-conmon-<id>.scope` is the monitor, not the container) |
//! | Docker | `system.slice/docker-<64 hex>.scope`, or `docker/<64 hex>` (cgroupfs) |
//! | systemd services | `system.slice/<unit>.service`, with `\x2d`-style escapes in unit names |

use std::fmt;

/// The container runtime a cgroup's name reveals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// `cri-containerd-<id>.scope`
    Containerd,
    /// `crio-<id>.scope`
    CriO,
    /// `docker-<id>.scope` or `docker/<id>`
    Docker,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
        })
    }
}

/// What a cgroup path says about the workload in it. Every field is optional: a path may name a
/// pod but no container (the pod's own cgroup, or CRI-O's conmon), a service, or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerRef {
    /// The Kubernetes pod uid, with dashes (`0c4f5a0e-1b2c-4d3e-8f90-123456789abc`).
    pub pod_uid: Option<String>,
    /// The container id: 64 lowercase hex digits.
    pub container_id: Option<String>,
    /// The runtime, when the layout names it (cgroupfs layouts do not, except Docker's).
    pub runtime: Option<Runtime>,
    /// The innermost systemd unit that is not a container scope (`nginx.service`), unescaped.
    pub systemd_unit: Option<String>,
}

impl ContainerRef {
    /// Parses a cgroup path (absolute or relative to the cgroup root).
    ///
    /// ```
    /// use tally_ebpf::attribution::{ContainerRef, Runtime};
    /// let c = ContainerRef::parse(
    ///     "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0c4f5a0e_1b2c_4d3e_8f90_123456789abc.slice/cri-containerd-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.scope",
    /// );
    /// assert_eq!(c.pod_uid.as_deref(), Some("0c4f5a0e-1b2c-4d3e-8f90-123456789abc"));
    /// assert_eq!(c.runtime, Some(Runtime::Containerd));
    /// assert_eq!(c.container_id.as_deref().map(str::len), Some(64));
    /// ```
    pub fn parse(path: &str) -> ContainerRef {
        let mut found = ContainerRef::default();
        let mut previous: Option<&str> = None;
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            if let Some(uid) = pod_uid(segment) {
                found.pod_uid = Some(uid);
            }
            if segment.starts_with("crio-conmon-") {
                // CRI-O's monitor process: the pod's, not a container's.
            } else if let Some((runtime, id)) = container_scope(segment) {
                found.container_id = Some(id.to_string());
                found.runtime = Some(runtime);
            } else if is_container_id(segment) {
                found.container_id = Some(segment.to_string());
                found.runtime = (previous == Some("docker")).then_some(Runtime::Docker);
            } else if segment.ends_with(".service") || segment.ends_with(".scope") {
                found.systemd_unit = Some(systemd_unescape(segment));
            }
            previous = Some(segment);
        }
        found
    }
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid with _>.slice` (systemd).
fn pod_uid(segment: &str) -> Option<String> {
    let raw = if let Some(slice) = segment.strip_suffix(".slice") {
        let (_, after) = slice.rsplit_once("-pod")?;
        after.replace('_', "-")
    } else {
        segment.strip_prefix("pod")?.to_string()
    };
    is_uid(&raw).then_some(raw)
}

fn container_scope(segment: &str) -> Option<(Runtime, &str)> {
    let name = segment.strip_suffix(".scope")?;
    let (runtime, id) = if let Some(id) = name.strip_prefix("cri-containerd-") {
        (Runtime::Containerd, id)
    } else if let Some(id) = name.strip_prefix("crio-") {
        (Runtime::CriO, id)
    } else if let Some(id) = name.strip_prefix("docker-") {
        (Runtime::Docker, id)
    } else {
        return None;
    };
    is_container_id(id).then_some((runtime, id))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// systemd escapes bytes in unit names as `\xNN` (`-` as `\x2d`, since `-` means nesting).
pub(crate) fn systemd_unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            if let Some(byte) = s.get(i + 2..i + 4).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "0c4f5a0e-1b2c-4d3e-8f90-123456789abc";
    const UID_: &str = "0c4f5a0e_1b2c_4d3e_8f90_123456789abc";

    #[test]
    fn kubelet_cgroupfs() {
        let c = ContainerRef::parse(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!(c.pod_uid.as_deref(), Some(UID));
        assert_eq!(c.container_id.as_deref(), Some(ID));
        assert_eq!(c.runtime, None);
        // Guaranteed QoS has no QoS level; the pod's own cgroup has no container.
        let pod = ContainerRef::parse(&format!("kubepods/pod{UID}"));
        assert_eq!(pod.pod_uid.as_deref(), Some(UID));
        assert_eq!(pod.container_id, None);
    }

    #[test]
    fn kubelet_systemd_containerd_crio_conmon() {
        let base = format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        let c = ContainerRef::parse(&format!("{base}/cri-containerd-{ID}.scope"));
        assert_eq!(
            (c.pod_uid.as_deref(), c.container_id.as_deref(), c.runtime),
            (Some(UID), Some(ID), Some(Runtime::Containerd))
        );
        let c = ContainerRef::parse(&format!("{base}/crio-{ID}.scope"));
        assert_eq!(c.runtime, Some(Runtime::CriO));
        assert_eq!(c.container_id.as_deref(), Some(ID));
        let conmon = ContainerRef::parse(&format!("{base}/crio-conmon-{ID}.scope"));
        assert_eq!(conmon.pod_uid.as_deref(), Some(UID));
        assert_eq!((conmon.container_id, conmon.runtime), (None, None));
        // Guaranteed pods: kubepods-pod<uid>.slice directly under kubepods.slice.
        let g = ContainerRef::parse(&format!("kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"));
        assert_eq!(g.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn docker_both_drivers() {
        let c = ContainerRef::parse(&format!("system.slice/docker-{ID}.scope"));
        assert_eq!((c.container_id.as_deref(), c.runtime, c.systemd_unit), (Some(ID), Some(Runtime::Docker), None));
        let c = ContainerRef::parse(&format!("/docker/{ID}"));
        assert_eq!((c.container_id.as_deref(), c.runtime), (Some(ID), Some(Runtime::Docker)));
    }

    #[test]
    fn systemd_units_unescaped_and_garbage_ignored() {
        let c = ContainerRef::parse("system.slice/system-getty.slice/getty@tty1.service");
        assert_eq!(c.systemd_unit.as_deref(), Some("getty@tty1.service"));
        let c = ContainerRef::parse(r"machine.slice/machine-qemu\x2d1\x2dvm.scope");
        assert_eq!(c.systemd_unit.as_deref(), Some("machine-qemu-1-vm.scope"));
        // Not a uid, not a 64-hex id: nothing.
        assert_eq!(ContainerRef::parse("kubepods/podnot-a-uid/abc123"), ContainerRef::default());
        assert_eq!(ContainerRef::parse(""), ContainerRef::default());
        assert_eq!(systemd_unescape(r"a\x2db\xZZ"), r"a-b\xZZ");
    }
}
