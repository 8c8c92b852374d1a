//! The sampler: once per window it reads the kernel maps and the cgroup tree, and
//! turns cumulative counters into a [`Snapshot`] of what happened in the window.
//! Data flows one way: kernel maps and cgroupfs → sampler → snapshot → consumers.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use crate::{
    cgroup::{
        self,
        io::DeviceNames,
        mount::CgroupMounts,
        stats::{CgroupStats, StatsReader},
        tree::CgroupDir,
    },
    histogram::{LatencySummary, LatencyTotals},
    probes::{ProbeConfig, Probes},
    sample::{CgroupSample, CpuSample, Host, PressureSample, Snapshot, SCHEMA},
    window,
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
    stats: CgroupStats,
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
    devices: DeviceNames,
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
            devices: DeviceNames::default(),
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
        let mut errors = Vec::new();
        for dir in &self.dirs {
            let mut reader = StatsReader::new(&dir.dir, &mut self.text);
            let stats = reader.read();
            errors.append(&mut reader.errors);
            let Some(stats) = stats else {
                continue; // removed during the scan
            };
            let prev = self.previous.get(&dir.id);
            let runq = self.runq.get(&dir.id).cloned();
            if prefix.is_none_or(|p| cgroup::tree::under(&dir.path, p)) {
                let before = prev.map(|p| &p.stats);
                let mut cpu = window::cpu(&stats, before);
                cpu.runq_latency = runq_attached.then(|| {
                    let now = runq.clone().unwrap_or_default();
                    LatencySummary::from(now.since(prev.and_then(|p| p.runq.as_ref())))
                });
                cgroups.push(CgroupSample {
                    path: dir.path.clone(),
                    id: dir.id,
                    removed: false,
                    cpu,
                    memory: stats
                        .memory
                        .as_ref()
                        .map(|m| window::memory(m, before.and_then(|b| b.memory.as_ref()))),
                    io: window::io(&stats, before, window, &mut self.devices),
                    pids: window::pids(&stats, before),
                    pressure: window::pressure(&stats, before),
                    descendants: stats.cgroup.and_then(|c| c.nr_descendants),
                    dying_descendants: stats.cgroup.and_then(|c| c.nr_dying_descendants),
                });
            }
            next.insert(
                dir.id,
                Previous {
                    path: dir.path.clone(),
                    stats,
                    runq,
                },
            );
        }
        if let Some(first) = errors.first() {
            // One line per scan, however many files are bad: no error storm.
            log::warn!(
                "{first} (and {} more problems in this scan)",
                errors.len() - 1
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
                        memory: None,
                        io: None,
                        pids: None,
                        pressure: PressureSample::default(),
                        descendants: None,
                        dying_descendants: None,
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
