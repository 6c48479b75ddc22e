//! Loading, attaching and reading the probes.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::File,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    time::Instant,
};

use aya::{
    maps::{HashMap as BpfHashMap, MapError, PerCpuArray, PerCpuHashMap},
    programs::{
        cgroup_skb::CgroupSkbLinkId, tp_btf::BtfTracePointLinkId, trace_point::TracePointLinkId, BtfTracePoint,
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};

use crate::{
    abi::{names, RawCounters, RawUsage, OBJECT},
    error::ProbeError,
    host::{self, Hierarchy},
    usage::{CgroupUsage, ProbeStats, ProgramStats, Snapshot},
};

/// How to load the probes.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// The cgroup whose subtree's network traffic is counted (the `cgroup_skb` programs attach
    /// there; the agent's `--cgroup-root`). `None`: the cgroup2 mount, i.e. the whole host. CPU
    /// and TCP connections are counted for every cgroup on the host whatever this is.
    pub cgroup_root: Option<PathBuf>,
    /// How many cgroups the kernel maps can hold (the `usage` map and the queue of removed
    /// cgroups). Preallocated at load: about `max_cgroups × possible CPUs × 88` bytes of kernel
    /// memory. A cgroup that finds the map full loses its usage, counted in
    /// [`ProbeStats::usage_map_full`]; size it above the cgroups alive within a few polls.
    pub max_cgroups: u32,
    /// Turn on the kernel's run-time statistics of BPF programs (`BPF_ENABLE_STATS`), so that
    /// [`ProgramStats`] are filled. Costs two clock reads per program run.
    pub run_stats: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self { cgroup_root: None, max_cgroups: 16_384, run_stats: true }
    }
}

enum Attached {
    BtfTracePoint(&'static str, BtfTracePointLinkId),
    TracePoint(&'static str, TracePointLinkId),
    CgroupSkb(&'static str, CgroupSkbLinkId),
}

/// (program, tracepoint) of the BTF-typed tracepoints (they get the tasks as pointers).
const BTF_TRACEPOINTS: &[(&str, &str)] = &[(names::SCHED_SWITCH, "sched_switch")];
/// (program, tracepoint category, tracepoint name)
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    (names::PROCESS_EXIT, "sched", "sched_process_exit"),
    (names::SOCK_STATE, "sock", "inet_sock_set_state"),
    (names::CGROUP_RMDIR, "cgroup", "cgroup_rmdir"),
];
const CGROUP_SKB: &[(&str, CgroupSkbAttachType)] =
    &[(names::SKB_INGRESS, CgroupSkbAttachType::Ingress), (names::SKB_EGRESS, CgroupSkbAttachType::Egress)];

/// The loaded and attached probes. Dropping them (or [`Probes::detach`]) detaches every program
/// and frees the maps.
pub struct Probes {
    ebpf: Ebpf,
    attached: Vec<Attached>,
    hierarchy: Hierarchy,
    cgroup_root: PathBuf,
    max_cgroups: u32,
    /// Keeps BPF_ENABLE_STATS on while held.
    _run_stats: Option<OwnedFd>,
    /// Removed cgroups waiting for their final read: id -> the poll that first saw them.
    removal_queue: HashMap<u64, u64>,
    polls: u64,
}

impl Probes {
    /// Checks the host, loads the programs and attaches them. Needs CAP_BPF, CAP_PERFMON and
    /// CAP_NET_ADMIN, a cgroup2 mount, tracefs (mounted here when absent and we may) and BTF.
    pub fn load(config: &ProbeConfig) -> Result<Probes, ProbeError> {
        let hierarchy = host::cgroup2_mount()?;
        if let Hierarchy::Hybrid { mount } = &hierarchy {
            tracing::warn!(
                cgroup2 = %mount.display(),
                "hybrid cgroup hierarchy: usage is counted per cgroup v2, so only tasks placed in \
                 the v2 tree are told apart; cgroups of v1-only runtimes share their v2 cgroup"
            );
        }
        let cgroup_root = config.cgroup_root.clone().unwrap_or_else(|| hierarchy.mount().to_path_buf());
        host::check_cgroup2_dir(&cgroup_root)?;
        host::check_capabilities()?;
        host::ensure_tracefs()?;
        host::check_btf()?;

        let max = config.max_cgroups.max(1);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::USAGE_MAP, max)
            .map_max_entries(names::REMOVED_MAP, max)
            // task_runtime is task local storage, which aya creates but has no typed API for:
            // only the programs use it.
            .allow_unsupported_maps()
            .load(OBJECT)
            .map_err(|e| ProbeError::Object(Box::new(e)))?;

        let run_stats = if config.run_stats {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(error) => {
                    tracing::warn!(%error, "BPF run-time statistics unavailable");
                    None
                }
            }
        } else {
            None
        };

        let btf = Btf::from_sys_fs().map_err(|e| ProbeError::NoBtf(std::io::Error::other(e)))?;
        let mut attached = Vec::new();
        for &(program, name) in BTF_TRACEPOINTS {
            let tp: &mut BtfTracePoint = program_mut(&mut ebpf, program)?;
            tp.load(name, &btf).map_err(|e| load_error(program, e))?;
            let link = tp.attach().map_err(|e| ProbeError::Attach {
                program,
                target: format!("BTF tracepoint {name}"),
                source: Box::new(e),
            })?;
            attached.push(Attached::BtfTracePoint(program, link));
        }
        for &(program, category, name) in TRACEPOINTS {
            let tp: &mut TracePoint = program_mut(&mut ebpf, program)?;
            tp.load().map_err(|e| load_error(program, e))?;
            let link = tp.attach(category, name).map_err(|e| ProbeError::Attach {
                program,
                target: format!("tracepoint {category}:{name}"),
                source: Box::new(e),
            })?;
            attached.push(Attached::TracePoint(program, link));
        }
        let root_dir =
            File::open(&cgroup_root).map_err(|source| ProbeError::Io { path: cgroup_root.clone(), source })?;
        for &(program, attach_type) in CGROUP_SKB {
            let skb: &mut CgroupSkb = program_mut(&mut ebpf, program)?;
            skb.load().map_err(|e| load_error(program, e))?;
            // On kernels >= 5.7 aya attaches through a BPF link, which always runs alongside the
            // cgroup's other programs (another agent, Cilium, a test) and takes no flags:
            // `Single` is the only mode link_create accepts. Ours only counts and passes packets.
            let link = skb.attach(&root_dir, attach_type, CgroupAttachMode::Single).map_err(|e| {
                ProbeError::Attach { program, target: format!("cgroup {}", cgroup_root.display()), source: Box::new(e) }
            })?;
            attached.push(Attached::CgroupSkb(program, link));
        }
        tracing::info!(
            cgroup_root = %cgroup_root.display(),
            max_cgroups = max,
            run_stats = run_stats.is_some(),
            "eBPF usage probes attached"
        );
        Ok(Probes {
            ebpf,
            attached,
            hierarchy,
            cgroup_root,
            max_cgroups: max,
            _run_stats: run_stats,
            removal_queue: HashMap::new(),
            polls: 0,
        })
    }

    /// The cgroup hierarchy found at load.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Where the network programs are attached.
    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    /// Reads every cgroup's cumulative usage, then retires the cgroups removed at least one poll
    /// ago: their final counters are in this snapshot (listed in [`Snapshot::retired`]) and their
    /// kernel slots are deleted after the reading. Waiting one poll lets the last increments of a
    /// removed cgroup (its tasks' final switches, packets still in flight) land first. Call it on
    /// an interval; the interval bounds how long a removed cgroup occupies a slot.
    pub fn read(&mut self) -> Result<Snapshot, ProbeError> {
        self.polls += 1;
        let poll = self.polls;

        {
            let removed: BpfHashMap<_, u64, u64> = map(&self.ebpf, names::REMOVED_MAP)?;
            for id in removed.keys() {
                let id = id.map_err(|e| ProbeError::map(names::REMOVED_MAP, e))?;
                self.removal_queue.entry(id).or_insert(poll);
            }
        }

        let mut usage = BTreeMap::new();
        {
            let map: PerCpuHashMap<_, u64, RawUsage> = map(&self.ebpf, names::USAGE_MAP)?;
            for entry in map.iter() {
                let (id, per_cpu) = entry.map_err(|e| ProbeError::map(names::USAGE_MAP, e))?;
                let mut total = CgroupUsage::default();
                for raw in per_cpu.iter() {
                    total.add_raw(raw);
                }
                usage.insert(id, total);
            }
        }
        let cgroups_tracked = usage.len();

        let due: Vec<u64> = self.removal_queue.iter().filter(|&(_, &seen)| seen < poll).map(|(&id, _)| id).collect();
        // A failed delete is logged and retried at the next poll, never returned as an error:
        // this snapshot already holds the final counters of the ids deleted before it.
        let mut retired = BTreeSet::new();
        for id in due {
            let deleted =
                delete_key::<PerCpuHashMap<_, u64, RawUsage>>(&mut self.ebpf, names::USAGE_MAP, id, |m, id| {
                    m.remove(id)
                })
                .and_then(|()| {
                    delete_key::<BpfHashMap<_, u64, u64>>(&mut self.ebpf, names::REMOVED_MAP, id, |m, id| m.remove(id))
                });
            match deleted {
                Ok(()) => {
                    self.removal_queue.remove(&id);
                    if usage.contains_key(&id) {
                        retired.insert(id);
                    }
                }
                Err(error) => {
                    tracing::warn!(cgroup_id = id, %error, "could not delete a removed cgroup's keys; retrying next poll");
                }
            }
        }
        if !retired.is_empty() {
            tracing::debug!(count = retired.len(), "retired removed cgroups after their final read");
        }

        let mut stats = self.stats()?;
        stats.cgroups_tracked = cgroups_tracked;
        Ok(Snapshot { taken_at: Instant::now(), usage, retired, stats })
    }

    /// The programs' cost and health counters, without reading the usage.
    pub fn stats(&self) -> Result<ProbeStats, ProbeError> {
        let mut programs = Vec::new();
        for &(name, _) in BTF_TRACEPOINTS {
            programs.push(self.program_stats(name)?);
        }
        for &(name, _, _) in TRACEPOINTS {
            programs.push(self.program_stats(name)?);
        }
        for &(name, _) in CGROUP_SKB {
            programs.push(self.program_stats(name)?);
        }
        let counters: PerCpuArray<_, RawCounters> = map(&self.ebpf, names::COUNTERS_MAP)?;
        let per_cpu = counters.get(&0, 0).map_err(|e| ProbeError::map(names::COUNTERS_MAP, e))?;
        let mut stats = ProbeStats { programs, max_cgroups: self.max_cgroups, ..Default::default() };
        for c in per_cpu.iter() {
            stats.usage_map_full += c.usage_map_full;
            stats.removed_map_full += c.removed_map_full;
            stats.sock_cgroup_unknown += c.sock_cgroup_unknown;
            stats.task_storage_failed += c.task_storage_failed;
        }
        Ok(stats)
    }

    fn program_stats(&self, name: &'static str) -> Result<ProgramStats, ProbeError> {
        let program = self.ebpf.program(name).expect("program names are those of usage.bpf.c");
        let info = program.info().map_err(|e| load_error(name, e))?;
        Ok(ProgramStats { name, run_count: info.run_count(), run_time: info.run_time() })
    }

    /// Detaches every program (as dropping does), logging any program that fails to detach.
    pub fn detach(mut self) {
        for attached in std::mem::take(&mut self.attached) {
            let (name, result) = match attached {
                Attached::BtfTracePoint(name, link) => {
                    let tp: Result<&mut BtfTracePoint, _> = program_mut(&mut self.ebpf, name);
                    (name, tp.map(|p| p.detach(link).map_err(|e| e.to_string())))
                }
                Attached::TracePoint(name, link) => {
                    let tp: Result<&mut TracePoint, _> = program_mut(&mut self.ebpf, name);
                    (name, tp.map(|p| p.detach(link).map_err(|e| e.to_string())))
                }
                Attached::CgroupSkb(name, link) => {
                    let skb: Result<&mut CgroupSkb, _> = program_mut(&mut self.ebpf, name);
                    (name, skb.map(|p| p.detach(link).map_err(|e| e.to_string())))
                }
            };
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(program = name, %error, "detach failed"),
                Err(error) => tracing::warn!(program = name, %error, "detach failed"),
            }
        }
        tracing::info!("eBPF usage probes detached");
    }
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).expect("program names are those of usage.bpf.c");
    program.try_into().map_err(|e| load_error(name, e))
}

fn map<'a, M>(ebpf: &'a Ebpf, name: &'static str) -> Result<M, ProbeError>
where
    M: TryFrom<&'a aya::maps::Map, Error = MapError>,
{
    let m = ebpf.map(name).expect("map names are those of usage.bpf.c");
    M::try_from(m).map_err(|e| ProbeError::map(name, e))
}

/// Deletes `id` from map `name` (of type `M`); a key already gone is not an error.
fn delete_key<'a, M>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
    id: u64,
    remove: impl FnOnce(&mut M, &u64) -> Result<(), MapError>,
) -> Result<(), MapError>
where
    M: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
{
    let mut map = M::try_from(ebpf.map_mut(name).expect("map names are those of usage.bpf.c"))?;
    ignore_missing(remove(&mut map, &id))
}

fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

fn load_error(program: &'static str, e: aya::programs::ProgramError) -> ProbeError {
    ProbeError::Load { program, source: Box::new(e) }
}
