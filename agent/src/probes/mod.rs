//! The userspace half of the eBPF probes: load the embedded object, resolve kernel
//! field offsets from BTF, attach each probe, read its maps. A probe that cannot
//! attach is reported with the exact reason; the others keep working.

pub mod blame;
pub mod blockio;
pub mod cost;
mod memlock;
pub mod oom;
mod prealloc;
pub mod reader;
pub mod runq;
pub mod sys;
pub mod tcp;

use std::{collections::BTreeMap, path::Path};

use aya::{
    maps::{MapData, PerCpuArray},
    programs::BtfTracePoint,
    Ebpf, EbpfLoader,
};
use cgscope_common::{blockio::BlockioConfig, runq::TaskOffsets, tcp::TcpConfig};

use crate::{btf::BtfError, snapshot::ProbeStatus};

/// The kernel programs, built by `build.rs` (empty with `AYA_BUILD_SKIP=1`).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cgscope-ebpf"));

/// Errors of one probe; each names the probe, program or map it is about.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("this binary carries no eBPF programs (built with AYA_BUILD_SKIP=1)")]
    NotBuilt,
    #[error("kernel BTF: {0}")]
    Btf(#[from] BtfError),
    #[error("kernel BTF (aya): {0}")]
    AyaBtf(#[from] aya::BtfError),
    #[error("loading the eBPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("program {program} (hook {hook}): {source}{log}")]
    Program {
        program: &'static str,
        hook: &'static str,
        source: Box<aya::programs::ProgramError>,
        /// Tail of the verifier log, if the kernel rejected the program.
        log: String,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("map {0} missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("{0}")]
    Load(String),
    #[error("disabled (--probes)")]
    Disabled,
    #[error("program {0} missing from the eBPF object")]
    MissingProgram(&'static str),
}

impl ProbeError {
    pub(crate) fn program(
        program: &'static str,
        hook: &'static str,
        source: aya::programs::ProgramError,
    ) -> Self {
        let log = match &source {
            aya::programs::ProgramError::LoadError { verifier_log, .. } => {
                let text = verifier_log.to_string();
                let tail: Vec<&str> = text.lines().rev().take(12).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("\nverifier log (tail):\n{}", tail.join("\n"))
            }
            _ => String::new(),
        };
        Self::Program {
            program,
            hook,
            source: Box::new(source),
            log,
        }
    }
}

/// Every probe's name, in the order they attach.
pub const ALL: [&str; 4] = [runq::NAME, blockio::NAME, oom::NAME, tcp::NAME];

/// Load-time settings of the probes.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Capacity of each per-cgroup map.
    pub max_cgroups: u32,
    /// The probes to attach (names from [`ALL`]); the others report "disabled".
    pub enabled: Vec<String>,
    /// Whether runq splits each wait by what held the CPU ([`blame`]).
    pub blame: bool,
    /// Whether the agent turns on the kernel's run-time statistics ([`cost`]).
    pub run_stats: bool,
}

impl ProbeConfig {
    fn wants(&self, name: &str) -> bool {
        self.enabled.iter().any(|e| e == name)
    }
}

/// Every entry of a map, each value converted by `f`, into `out` (cleared first).
/// aya skips an entry removed while iterating (not an error); any other error ends
/// the read, and the caller reports the probe's numbers as missing for the window,
/// never as the zeros an empty read would look like.
pub(crate) fn read_map<K, V, T>(
    entries: impl Iterator<Item = Result<(K, V), aya::maps::MapError>>,
    out: &mut std::collections::HashMap<K, T>,
    f: impl Fn(V) -> T,
) -> Result<(), aya::maps::MapError>
where
    K: Eq + std::hash::Hash,
{
    out.clear();
    for entry in entries {
        let (key, value) = entry?;
        out.insert(key, f(value));
    }
    Ok(())
}

/// Deletes `keys` from a per-cgroup map: the entries of removed cgroups. A key
/// already gone (the kernel or an earlier window removed it) is no error.
pub(crate) fn forget_keys<'a, K: aya::Pod + 'a, V: aya::Pod>(
    map: &mut aya::maps::HashMap<MapData, K, V>,
    keys: impl IntoIterator<Item = &'a K>,
) {
    for key in keys {
        let _ = map.remove(key);
    }
}

/// Every probe, attached or with the reason it is not.
pub struct Probes {
    /// Owns the programs and their links: dropping it detaches everything.
    ebpf: Option<Ebpf>,
    pub runq: Result<runq::Runq, ProbeError>,
    pub blockio: Result<blockio::Blockio, ProbeError>,
    pub oom: Result<oom::Oom, ProbeError>,
    pub tcp: Result<tcp::Tcp, ProbeError>,
    /// What the maps cost on this kernel and where it is charged (see
    /// [`prealloc`], [`memlock`]): probe, note.
    memory_notes: Vec<(&'static str, String)>,
    /// Whether the kernel keeps the programs' run-time statistics.
    run_stats: cost::RunStats,
}

/// Loads the fentry or fexit program (`$kind`: `FEntry`, `FExit`) named by
/// `$program: (name, kernel function)` and attaches it to that function: its link
/// id, or why not.
macro_rules! attach_traced {
    ($ebpf:expr, $btf:expr, $kind:ty, $program:expr) => {{
        let (name, function): (&'static str, &'static str) = $program;
        (|| {
            let program: &mut $kind = $ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram(name))?
                .try_into()
                .map_err(|e| ProbeError::program(name, function, e))?;
            program
                .load(function, $btf)
                .map_err(|e| ProbeError::program(name, function, e))?;
            program
                .attach()
                .map_err(|e| ProbeError::program(name, function, e))
        })()
    }};
}
pub(crate) use attach_traced;

/// Loads the tp_btf programs `(program, tracepoint)` and attaches them; on failure,
/// unloads what it loaded, so that a probe is attached whole or not at all.
pub(crate) fn attach_all(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    programs: &[(&'static str, &'static str)],
) -> Result<(), ProbeError> {
    let mut loaded: Vec<&'static str> = Vec::new();
    let result = (|| {
        for &(program, hook) in programs {
            let prog = tracepoint_program(ebpf, program, hook)?;
            prog.load(hook, btf)
                .map_err(|e| ProbeError::program(program, hook, e))?;
            loaded.push(program);
            prog.attach()
                .map_err(|e| ProbeError::program(program, hook, e))?;
        }
        Ok(())
    })();
    if result.is_err() {
        for program in loaded {
            if let Some(Ok(prog)) = ebpf
                .program_mut(program)
                .map(<&mut BtfTracePoint>::try_from)
            {
                let _ = prog.unload();
            }
        }
    }
    result
}

/// The tp_btf program `program` of the object (`hook` only names it in errors).
pub(crate) fn tracepoint_program<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
    hook: &'static str,
) -> Result<&'a mut BtfTracePoint, ProbeError> {
    ebpf.program_mut(program)
        .ok_or(ProbeError::MissingProgram(program))?
        .try_into()
        .map_err(|e| ProbeError::program(program, hook, e))
}

/// Takes a map out of the loaded object, typed.
pub(crate) fn take_map<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, ProbeError> {
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    T::try_from(map).map_err(|source| ProbeError::Map { map: name, source })
}

/// Sums the per-CPU slots of an event-counter array into `(name, total)` pairs.
pub(crate) fn counters(
    array: &PerCpuArray<MapData, u64>,
    names: &[&'static str],
) -> BTreeMap<&'static str, u64> {
    names
        .iter()
        .enumerate()
        .map(|(slot, name)| {
            let total = array
                .get(&(slot as u32), 0)
                .map(|cpus| cpus.iter().sum())
                .unwrap_or(0);
            (*name, total)
        })
        .collect()
}

/// Offsets of the task fields the programs read, from the running kernel's BTF.
pub fn task_offsets(btf: &crate::btf::Btf) -> Result<TaskOffsets, BtfError> {
    Ok(TaskOffsets {
        task_pid: btf.offset_of("task_struct", "pid", 4)?,
        // `int` until 7.x, then one byte.
        task_on_cpu: btf
            .offset_of("task_struct", "on_cpu", 4)
            .or_else(|_| btf.offset_of("task_struct", "on_cpu", 1))?,
        task_cgroups: btf.offset_of("task_struct", "cgroups", 8)?,
        css_set_dfl_cgrp: btf.offset_of("css_set", "dfl_cgrp", 8)?,
        cgroup_kn: btf.offset_of("cgroup", "kn", 8)?,
        kernfs_node_id: btf.offset_of("kernfs_node", "id", 8)?,
        task_tgid: btf.offset_of("task_struct", "tgid", 4)?,
        task_comm: btf.offset_of("task_struct", "comm", 16)?,
        // Renamed `__parent` in 6.15 (RCU-protected since).
        kernfs_node_parent: btf
            .offset_of("kernfs_node", "parent", 8)
            .or_else(|_| btf.offset_of("kernfs_node", "__parent", 8))?,
        task_flags: btf.offset_of("task_struct", "flags", 4)?,
        // `task_struct.cpu` since 5.16; before, in the embedded `thread_info`.
        task_cpu: btf.offset_of("task_struct", "cpu", 4).or_else(|_| {
            Ok::<_, BtfError>(
                btf.member("task_struct", "thread_info")?.offset
                    + btf.offset_of("thread_info", "cpu", 4)?,
            )
        })?,
        // Blame's throttle programs only: see `group_offsets`.
        cfs_rq_rq: 0,
        cfs_rq_tg: 0,
        task_group_css_cgroup: 0,
        rq_cpu: 0,
        // Set by `load` where `sched_switch` has no `prev_state`.
        task_state: 0,
        task_on_cpu_size: btf.member("task_struct", "on_cpu")?.size,
        _pad: 0,
    })
}

/// The task field the runq switch program reads the outgoing task's state from, on
/// kernels whose `sched_switch` has no `prev_state` (before 5.18): `__state`
/// (`unsigned int`, 5.14+) or `state` (`long`).
pub fn switch_state_field(btf: &crate::btf::Btf) -> Result<Option<&'static str>, BtfError> {
    if btf.tracepoint_arity("sched_switch")? >= 4 {
        return Ok(None);
    }
    if btf.offset_of("task_struct", "__state", 4).is_ok() {
        return Ok(Some("__state"));
    }
    btf.offset_of("task_struct", "state", 8)?;
    Ok(Some("state"))
}

/// The `cfs_rq`, `task_group` and `rq` fields blame's throttle programs read, set
/// into `offsets`; an error (and the programs refused) without group scheduling.
pub fn group_offsets(btf: &crate::btf::Btf, offsets: &mut TaskOffsets) -> Result<(), BtfError> {
    offsets.cfs_rq_rq = btf.offset_of("cfs_rq", "rq", 8)?;
    offsets.cfs_rq_tg = btf.offset_of("cfs_rq", "tg", 8)?;
    // `css.cgroup`, inside the embedded `css` (both first members today: 0).
    offsets.task_group_css_cgroup = btf.member("task_group", "css")?.offset
        + btf.offset_of("cgroup_subsys_state", "cgroup", 8)?;
    offsets.rq_cpu = btf.offset_of("rq", "cpu", 4)?;
    Ok(())
}

/// What the probes learn from the kernel's BTF besides offsets.
struct KernelFacts {
    /// Whether the blockio fields were found (else why not).
    blockio: Result<(), BtfError>,
    /// The task field read for `sched_switch`'s missing `prev_state` (before 5.18).
    switch_state: Option<&'static str>,
    /// Whether `mark_victim` passes the victim task (6.8+) rather than a pid.
    oom_victim_is_task: bool,
    /// Whether the tcp fields were found (else why not).
    tcp: Result<(), BtfError>,
    /// Whether the `cfs_rq`/`task_group` fields of blame's throttle programs were
    /// found (else why not).
    group_offsets: Result<(), BtfError>,
    /// What the maps cost on this kernel and where it is charged: probe, note.
    memory_notes: Vec<(&'static str, String)>,
}

/// The loaded object, aya's parsed BTF, and what else the BTF told.
type Loaded = (Ebpf, aya::Btf, KernelFacts);

fn load(config: &ProbeConfig, io_owner: u32) -> Result<Loaded, ProbeError> {
    if EBPF_OBJECT.is_empty() {
        return Err(ProbeError::NotBuilt);
    }
    // One read of the kernel's BTF for both parsers: ours for field offsets, aya's
    // for attaching the tp_btf programs.
    let data = crate::btf::vmlinux_bytes()?;
    let ours = crate::btf::Btf::parse(&data)?;
    let mut offsets = task_offsets(&ours)?;
    let switch_state = switch_state_field(&ours)?;
    if let Some(field) = switch_state {
        offsets.task_state = ours.member("task_struct", field)?.offset;
    }
    let group = group_offsets(&ours, &mut offsets);
    // A kernel without the block layer's fields still gets the other probes: the
    // blockio programs then fail to load, with this error.
    let blockio = blockio::config(&ours, io_owner);
    let btf = aya::Btf::parse(&data, aya::Endianness::default())?;
    let tcp = tcp::config(&ours);
    let timelines = if config.blame {
        aya::util::nr_cpus().map_or(1024, |n| n as u32)
    } else {
        1
    };
    let unused = BlockioConfig::default();
    let unused_tcp = TcpConfig::default();
    let mut loader = EbpfLoader::new();
    loader
        .btf(Some(&btf))
        .override_global("TASK_OFFSETS", &offsets, true)
        .override_global("BLOCKIO_CONFIG", blockio.as_ref().unwrap_or(&unused), true)
        .override_global("TCP_CONFIG", tcp.as_ref().unwrap_or(&unused_tcp), true)
        .map_max_entries("RUNQ_HIST", config.max_cgroups)
        .map_max_entries("RUNQ_START", runq::start_capacity())
        // Four (waiter, culprit) pairs per cgroup; one timeline per possible CPU.
        .map_max_entries("BLAME", config.max_cgroups.saturating_mul(4))
        .map_max_entries("CPU_TIMELINE", timelines);
    tcp::size_maps(&mut loader, config);
    blockio::size_maps(&mut loader, config, io_owner);
    // Where the kernel charges the maps to RLIMIT_MEMLOCK: raised first, as far
    // as this process may (the limit then in force, None: unlimited).
    let memlock = memlock::kernel_charges_memlock(&ours).then(memlock::raise);
    let limit = memlock.flatten();
    let (object, preallocated) = if prealloc::kernel_allocates_safely(&ours) {
        (std::borrow::Cow::Borrowed(EBPF_OBJECT), Vec::new())
    } else {
        let (object, names) = prealloc::preallocate(EBPF_OBJECT)?;
        (std::borrow::Cow::Owned(object), names)
    };
    let ebpf = loader
        .load(&object)
        .map_err(|e| memlock::explain(e, limit))?;
    let mut memory_notes = preallocation_notes(&ebpf, &preallocated);
    if memlock.is_some() {
        for probe in [runq::NAME, blockio::NAME, oom::NAME, tcp::NAME] {
            memory_notes.push((probe, memlock::note(limit)));
        }
    }
    let facts = KernelFacts {
        blockio: blockio.map(drop),
        switch_state,
        oom_victim_is_task: ours
            .tracepoint_arg_is_pointer("mark_victim", 0)
            .unwrap_or(false),
        tcp: tcp.map(drop),
        group_offsets: group.map(drop),
        memory_notes,
    };
    Ok((ebpf, btf, facts))
}

/// The probe a program or map of the object belongs to, by its name's prefix
/// (`runq_switch`, `RUNQ_HIST`, `blockio_...`); blame's are runq's.
pub(crate) fn probe_of(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    ALL.into_iter()
        .find(|p| lower.starts_with(p))
        .or_else(|| lower.starts_with("blame").then_some(runq::NAME))
}

/// For each preallocated map of a probe: its probe and what it holds.
fn preallocation_notes(ebpf: &Ebpf, names: &[String]) -> Vec<(&'static str, String)> {
    let cpus = aya::util::nr_cpus().map_or(1, |n| n as u64);
    names
        .iter()
        .filter_map(|name| {
            let probe = probe_of(name)?;
            let (info, per_cpu) = match ebpf.map(name)? {
                aya::maps::Map::HashMap(d) => (d.info().ok()?, false),
                aya::maps::Map::PerCpuHashMap(d) => (d.info().ok()?, true),
                _ => return None,
            };
            let bytes = prealloc::preallocated_bytes(&info, per_cpu, cpus);
            Some((
                probe,
                format!(
                    "{name} preallocated for {} entries, about {:.1} MiB of kernel memory: this \
                     kernel (before 6.1) has no BPF memory allocator, so maps that grow as they \
                     fill are unsafe in its scheduler hooks",
                    info.max_entries(),
                    bytes as f64 / f64::from(1 << 20)
                ),
            ))
        })
        .collect()
}

impl Probes {
    /// Loads the object and attaches every probe. Never fails as a whole: a probe
    /// that cannot attach carries its error. `cgroup_root` tells where the io
    /// controller lives (see [`blockio::owner_mode`]).
    pub fn attach(config: &ProbeConfig, cgroup_root: Option<&Path>) -> Self {
        // While this thread still holds its capabilities.
        let run_stats = cost::RunStats::enable(config.run_stats);
        let io_owner = blockio::owner_mode(cgroup_root);
        match load(config, io_owner) {
            Ok((mut ebpf, btf, facts)) => {
                let wanted = |name| config.wants(name).then_some(()).ok_or(ProbeError::Disabled);
                let runq = wanted(runq::NAME).and_then(|()| {
                    let group = facts.group_offsets.as_ref().map_err(|e| e.to_string());
                    let group = group.map(|_| ());
                    runq::Runq::attach(&mut ebpf, &btf, config.blame, group, facts.switch_state)
                });
                let blockio = wanted(blockio::NAME).and_then(|()| {
                    let fields = facts.blockio.as_ref().map(|_| ());
                    blockio::Blockio::attach(&mut ebpf, &btf, io_owner, fields)
                });
                let oom = wanted(oom::NAME)
                    .and_then(|()| oom::Oom::attach(&mut ebpf, &btf, facts.oom_victim_is_task));
                let tcp = wanted(tcp::NAME).and_then(|()| {
                    tcp::Tcp::attach(&mut ebpf, &btf, facts.tcp.as_ref().map(|_| ()))
                });
                Self {
                    ebpf: Some(ebpf),
                    runq,
                    blockio,
                    oom,
                    tcp,
                    memory_notes: facts.memory_notes,
                    run_stats,
                }
            }
            Err(e) => Self {
                ebpf: None,
                blockio: Err(ProbeError::Load(e.to_string())),
                oom: Err(ProbeError::Load(e.to_string())),
                tcp: Err(ProbeError::Load(e.to_string())),
                runq: Err(e),
                memory_notes: Vec::new(),
                run_stats,
            },
        }
    }

    /// Attaches the programs that wait for the kernel to show they are needed (see
    /// [`blockio::Blockio::attach_fallback`]), for disks that still exist. Called at
    /// each window's end.
    pub fn attach_on_demand(&mut self) {
        if let (Some(ebpf), Ok(blockio)) = (&mut self.ebpf, &mut self.blockio) {
            blockio.forget_removed_disks();
            blockio.attach_fallback(ebpf);
        }
    }

    /// Status of every probe.
    pub fn status(&self) -> Vec<ProbeStatus> {
        let failed = |name, e: &ProbeError| ProbeStatus {
            name,
            attached: false,
            // Not attached by choice: no error, a note.
            error: (!matches!(e, ProbeError::Disabled)).then(|| e.to_string()),
            dropped: Default::default(),
            notes: match e {
                ProbeError::Disabled => vec![e.to_string()],
                _ => Vec::new(),
            },
            map_entries: None,
            run_stats: None,
        };
        let mut status = vec![
            match &self.runq {
                Ok(runq) => ProbeStatus {
                    name: runq::NAME,
                    attached: true,
                    error: None,
                    dropped: runq.dropped(),
                    notes: runq.notes(),
                    map_entries: None,
                    run_stats: None,
                },
                Err(e) => failed(runq::NAME, e),
            },
            match &self.blockio {
                Ok(blockio) => blockio.status(),
                Err(e) => failed(blockio::NAME, e),
            },
            match &self.oom {
                Ok(oom) => oom.status(),
                Err(e) => failed(oom::NAME, e),
            },
            match &self.tcp {
                Ok(tcp) => tcp.status(),
                Err(e) => failed(tcp::NAME, e),
            },
        ];
        for (probe, note) in &self.memory_notes {
            if let Some(s) = status.iter_mut().find(|s| s.name == *probe && s.attached) {
                s.notes.push(note.clone());
            }
        }
        for s in status.iter_mut().filter(|s| s.attached) {
            match (&self.run_stats.available, &self.ebpf) {
                (Ok(()), Some(ebpf)) => s.run_stats = self.run_stats.of(ebpf, s.name),
                (Err(why), _) => s.notes.push(why.clone()),
                _ => {}
            }
        }
        status
    }
}
