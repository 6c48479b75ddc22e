//! Why the probes could not start, precise enough for an operator to fix it and for the agent to
//! run OTLP-only and expose the probe state on `/metrics`.

use std::{fmt, io, path::PathBuf};

/// A Linux capability the probes need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Load programs and create maps (`CAP_SYS_ADMIN` also grants it).
    Bpf,
    /// Attach to tracepoints and read kernel memory from them (`CAP_SYS_ADMIN` also grants it).
    Perfmon,
    /// Attach `cgroup_skb` programs.
    NetAdmin,
}

impl Capability {
    /// The capability's bit in `/proc/<pid>/status` `CapEff`.
    pub(crate) const fn bit(self) -> u32 {
        match self {
            Capability::Bpf => 39,
            Capability::Perfmon => 38,
            Capability::NetAdmin => 12,
        }
    }

    /// Its name as `capabilities(7)` writes it.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::Bpf => "CAP_BPF",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::NetAdmin => "CAP_NET_ADMIN",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why [`crate::Probes::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The process lacks capabilities (read from `/proc/self/status` `CapEff`).
    #[error("missing capabilities {}: the eBPF probes need CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or CAP_SYS_ADMIN for the first two)", join(.0))]
    MissingCapabilities(Vec<Capability>),
    /// No cgroup2 filesystem is mounted.
    #[error("no cgroup2 filesystem is mounted (none in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup`")]
    NoCgroup2,
    /// The configured cgroup root is not a directory of a cgroup2 filesystem.
    #[error("cgroup root {path} is not a cgroup2 directory ({reason})")]
    NotCgroup2 { path: PathBuf, reason: String },
    /// tracefs is not mounted and could not be mounted.
    #[error("tracefs is not mounted (at /sys/kernel/tracing or /sys/kernel/debug/tracing) and mounting it at /sys/kernel/tracing failed: {0} (needs CAP_SYS_ADMIN, or mount it before starting)")]
    NoTracefs(#[source] io::Error),
    /// The kernel exposes no BTF, which the TCP probe needs to read a socket's cgroup.
    #[error("the kernel has no BTF (/sys/kernel/btf/vmlinux: {0}); it needs CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf(#[source] io::Error),
    /// The object could not be loaded (maps created, relocations applied).
    #[error("loading the eBPF object failed: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    /// The verifier or the kernel refused a program.
    #[error("loading program {program} failed: {source}")]
    Load {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A program could not be attached.
    #[error("attaching program {program} to {target} failed: {source}")]
    Attach {
        program: &'static str,
        target: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map could not be read or written.
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A file the loader needs could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ProbeError {
    /// What is missing, in a few words for a `/metrics` label or a log field: the capabilities
    /// (`"CAP_BPF CAP_NET_ADMIN"`), `"cgroup2"`, `"tracefs"` or `"btf"`; `None` when the failure
    /// is not a missing privilege or feature (then the error's message tells what happened).
    pub fn missing(&self) -> Option<String> {
        match self {
            ProbeError::MissingCapabilities(caps) => Some(caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(" ")),
            ProbeError::NoCgroup2 | ProbeError::NotCgroup2 { .. } => Some("cgroup2".into()),
            ProbeError::NoTracefs(_) => Some("tracefs".into()),
            ProbeError::NoBtf(_) => Some("btf".into()),
            _ => None,
        }
    }

    pub(crate) fn map(map: &'static str, source: aya::maps::MapError) -> Self {
        ProbeError::Map { map, source: Box::new(source) }
    }
}

fn join(caps: &[Capability]) -> String {
    caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_names_each_capability() {
        let e = ProbeError::MissingCapabilities(vec![Capability::Bpf, Capability::NetAdmin]);
        assert_eq!(e.missing().as_deref(), Some("CAP_BPF CAP_NET_ADMIN"));
        assert!(e.to_string().starts_with("missing capabilities CAP_BPF, CAP_NET_ADMIN:"));
        assert_eq!(ProbeError::NoCgroup2.missing().as_deref(), Some("cgroup2"));
        let io = io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(ProbeError::NoTracefs(io).missing().as_deref(), Some("tracefs"));
    }
}
