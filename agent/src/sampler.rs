//! The sampler: once per window it reads the kernel maps and the cgroup tree, and
//! turns cumulative counters into a [`Snapshot`] of what happened in the window.
//! Data flows one way: kernel maps and cgroupfs → sampler → snapshot → consumers.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use crate::{
    cgroup::{self, cpu::CpuStat, mount::CgroupMounts, tree::CgroupDir},
    histogram::{LatencySummary, LatencyTotals},
    probes::{ProbeConfig, Probes},
    sample::{CgroupSample, CpuSample, Host, Snapshot, SCHEMA},
};

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("no cgroup v2 hierarchy is mounted (legacy cgroup v1 host); pass --cgroup-root")]
    NoCgroupV2,
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Mountinfo(std::io::Error),
    #[error("cannot read the cgroup v2 root {path}: {source}")]
    Root {
        path: String,
        source: std::io::Error,
    },
}

/// What the sampler needs to start.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// cgroup v2 mount point; detected from mountinfo when `None`.
    pub cgroup_root: Option<PathBuf>,
    pub probes: ProbeConfig,
}

/// Cumulative counters of one cgroup at the previous read.
struct Previous {
    path: String,
    cpu: Option<CpuStat>,
    runq: Option<LatencyTotals>,
}

pub struct Sampler {
    host: Host,
    root: PathBuf,
    probes: Probes,
    previous: HashMap<u64, Previous>,
    previous_at: Instant,
    // Buffers reused across windows.
    dirs: Vec<CgroupDir>,
    runq: HashMap<u64, LatencyTotals>,
    text: String,
}

/// Finds the cgroup v2 root and the host's cgroup mode.
pub fn resolve_root(configured: Option<&PathBuf>) -> Result<(CgroupMounts, PathBuf), SamplerError> {
    let mounts = cgroup::mount::detect().map_err(SamplerError::Mountinfo)?;
    let root = configured
        .cloned()
        .or_else(|| mounts.v2_root.clone())
        .ok_or(SamplerError::NoCgroupV2)?;
    std::fs::metadata(root.join("cgroup.procs")).map_err(|source| SamplerError::Root {
        path: root.display().to_string(),
        source,
    })?;
    Ok((mounts, root))
}

/// Kernel release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

impl Sampler {
    /// Attaches the probes and takes the baseline read that the first window starts from.
    pub fn start(config: &SamplerConfig) -> Result<Self, SamplerError> {
        let (mounts, root) = resolve_root(config.cgroup_root.as_ref())?;
        let host = Host {
            kernel: kernel_release(),
            cgroup_mode: mounts.mode,
            cgroup_root: root.display().to_string(),
        };
        let mut sampler = Self {
            host,
            root,
            probes: Probes::attach(&config.probes),
            previous: HashMap::new(),
            previous_at: Instant::now(),
            dirs: Vec::new(),
            runq: HashMap::new(),
            text: String::new(),
        };
        let _baseline = sampler.sample(None);
        Ok(sampler)
    }

    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    /// Ends the current window and returns it; the next window starts now.
    /// `prefix` keeps only cgroups at or below that path.
    pub fn sample(&mut self, prefix: Option<&str>) -> Snapshot {
        let now = Instant::now();
        let window = now.duration_since(self.previous_at).as_secs_f64();
        // Maps first, tree second: a cgroup in the maps but not in the tree is gone.
        if let Ok(runq) = &self.probes.runq {
            runq.read(&mut self.runq);
        }
        if let Err(e) = cgroup::tree::walk(&self.root, &mut self.dirs) {
            log::warn!("cannot walk {}: {e}", self.root.display());
        }

        let mut next: HashMap<u64, Previous> = HashMap::with_capacity(self.dirs.len());
        let mut cgroups = Vec::with_capacity(self.dirs.len());
        let runq_attached = self.probes.runq.is_ok();
        for dir in &self.dirs {
            let cpu = match cgroup::read_file(&dir.dir, "cpu.stat", &mut self.text) {
                Ok(true) => match self.text.parse::<CpuStat>() {
                    Ok(stat) => Some(stat),
                    Err(reason) => {
                        log::warn!("malformed {}/cpu.stat: {reason}", dir.dir.display());
                        None
                    }
                },
                Ok(false) => continue, // removed during the scan
                Err(e) => {
                    log::warn!("{e}");
                    None
                }
            };
            let prev = self.previous.get(&dir.id);
            let runq = self.runq.get(&dir.id).cloned();
            let sample = CgroupSample {
                path: dir.path.clone(),
                id: dir.id,
                removed: false,
                cpu: cpu_sample(cpu, prev, runq.as_ref(), runq_attached),
            };
            if prefix.is_none_or(|p| cgroup::tree::under(&dir.path, p)) {
                cgroups.push(sample);
            }
            next.insert(
                dir.id,
                Previous {
                    path: dir.path.clone(),
                    cpu,
                    runq,
                },
            );
        }

        // Cgroups removed during the window: report what they recorded, then forget.
        let mut dead = Vec::new();
        for (id, totals) in &self.runq {
            if next.contains_key(id) {
                continue;
            }
            dead.push(*id);
            let prev = self.previous.get(id);
            let path = prev.map(|p| p.path.clone());
            let window_runq = totals.since(prev.and_then(|p| p.runq.as_ref()));
            if let Some(path) = path.filter(|p| prefix.is_none_or(|x| cgroup::tree::under(p, x))) {
                if window_runq.count > 0 {
                    cgroups.push(CgroupSample {
                        path,
                        id: *id,
                        removed: true,
                        cpu: CpuSample {
                            runq_latency: Some(window_runq.into()),
                            ..CpuSample::default()
                        },
                    });
                }
            }
        }
        if let Ok(runq) = &mut self.probes.runq {
            runq.forget(&dead);
        }

        self.previous = next;
        self.previous_at = now;
        Snapshot {
            schema: SCHEMA,
            timestamp_seconds: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            window_seconds: window,
            host: self.host.clone(),
            probes: self.probes.status(),
            cgroups,
        }
    }
}

/// CPU figures of one cgroup for the window. A cgroup not seen at the previous read
/// was created during the window, so all its usage belongs to the window.
fn cpu_sample(
    cpu: Option<CpuStat>,
    prev: Option<&Previous>,
    runq: Option<&LatencyTotals>,
    runq_attached: bool,
) -> CpuSample {
    let before = prev.and_then(|p| p.cpu).unwrap_or_default();
    let seconds = |now: u64, then: u64| now.saturating_sub(then) as f64 * 1e-6;
    let runq_latency = runq_attached.then(|| {
        let now = runq.cloned().unwrap_or_default();
        LatencySummary::from(now.since(prev.and_then(|p| p.runq.as_ref())))
    });
    CpuSample {
        usage_seconds: cpu.map(|c| seconds(c.usage_usec, before.usage_usec)),
        user_seconds: cpu.map(|c| seconds(c.user_usec, before.user_usec)),
        system_seconds: cpu.map(|c| seconds(c.system_usec, before.system_usec)),
        runq_latency,
    }
}
