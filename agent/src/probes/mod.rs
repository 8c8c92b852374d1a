//! The userspace half of the eBPF probes: load the embedded object, resolve kernel
//! field offsets from BTF, attach each probe, read its maps. A probe that cannot
//! attach is reported with the exact reason; the others keep working.

pub mod runq;

use aya::{Ebpf, EbpfLoader};
use cgscope_common::runq::TaskOffsets;

use crate::{btf::BtfError, sample::ProbeStatus};

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

/// Load-time settings of the probes.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    /// Capacity of each per-cgroup map.
    pub max_cgroups: u32,
}

/// Every probe, attached or with the reason it is not.
pub struct Probes {
    /// Owns the programs and their links: dropping it detaches everything.
    _ebpf: Option<Ebpf>,
    pub runq: Result<runq::Runq, ProbeError>,
}

/// Offsets of the task fields the programs read, from the running kernel's BTF.
pub fn task_offsets(btf: &crate::btf::Btf) -> Result<TaskOffsets, BtfError> {
    Ok(TaskOffsets {
        task_pid: btf.offset_of("task_struct", "pid", 4)?,
        task_on_cpu: btf.offset_of("task_struct", "on_cpu", 4)?,
        task_cgroups: btf.offset_of("task_struct", "cgroups", 8)?,
        css_set_dfl_cgrp: btf.offset_of("css_set", "dfl_cgrp", 8)?,
        cgroup_kn: btf.offset_of("cgroup", "kn", 8)?,
        kernfs_node_id: btf.offset_of("kernfs_node", "id", 8)?,
    })
}

fn load(config: &ProbeConfig) -> Result<(Ebpf, aya::Btf), ProbeError> {
    if EBPF_OBJECT.is_empty() {
        return Err(ProbeError::NotBuilt);
    }
    // One read of the kernel's BTF for both parsers: ours for field offsets, aya's
    // for attaching the tp_btf programs.
    let data = crate::btf::vmlinux_bytes()?;
    let offsets = task_offsets(&crate::btf::Btf::parse(&data)?)?;
    let btf = aya::Btf::parse(&data, aya::Endianness::default())?;
    let ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("TASK_OFFSETS", &offsets, true)
        .map_max_entries("RUNQ_HIST", config.max_cgroups)
        .load(EBPF_OBJECT)?;
    Ok((ebpf, btf))
}

impl Probes {
    /// Loads the object and attaches every probe. Never fails as a whole: a probe
    /// that cannot attach carries its error.
    pub fn attach(config: &ProbeConfig) -> Self {
        match load(config) {
            Ok((mut ebpf, btf)) => {
                let runq = runq::Runq::attach(&mut ebpf, &btf);
                Self {
                    _ebpf: Some(ebpf),
                    runq,
                }
            }
            Err(e) => Self {
                _ebpf: None,
                runq: Err(e),
            },
        }
    }

    /// Status of every probe.
    pub fn status(&self) -> Vec<ProbeStatus> {
        vec![match &self.runq {
            Ok(runq) => ProbeStatus {
                name: runq::NAME,
                attached: true,
                error: None,
                dropped: runq.dropped(),
            },
            Err(e) => ProbeStatus {
                name: runq::NAME,
                attached: false,
                error: Some(e.to_string()),
                dropped: Default::default(),
            },
        }]
    }
}
