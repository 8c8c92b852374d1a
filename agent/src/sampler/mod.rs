//! The sampler: once per window it reads the kernel maps and the cgroup tree, and
//! turns cumulative counters into a [`Snapshot`] of what happened in the window.
//! Data flows one way, kernel maps and cgroupfs → sampler → snapshot → consumers,
//! but for two back-flows into the kernel, each named where it happens: the
//! on-demand attach of programs a window showed are needed, and `forget`, which
//! deletes the map entries of removed cgroups.
//!
//! A window's steps ([`Sampler::sample`]): read the maps, walk the tree, read each
//! walked cgroup's files ([`walk`]), identify (runtime names, network namespaces),
//! settle the cgroups the walk missed, forget the removed ones' entries, aggregate
//! the probes' windows up the tree, refuse impossible values, status and cost.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

mod blame;
pub mod cost;
mod network;
mod results;
mod scan;
mod walk;

use self::{network::assign_network, results::probe_results, scan::ScanErrors, walk::Walked};
use crate::{
    cgroup::{
        self, identity::Identity, io::DeviceNames, mount::CgroupMounts, stats::CgroupStats,
        tree::CgroupDir,
    },
    host::HostReader,
    metadata::{Metadata, MetadataConfig},
    net::NetnsReader,
    probes::{self, reader::ProbeReader, ProbeConfig, Probes},
    snapshot::{
        Bounds, CgroupKind, CgroupSample, ContainerSample, CostSample, Host, HostSample,
        ProbeStatus, Snapshot, Unreadable, SCHEMA,
    },
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

/// What the sampler needs to start. `Default` is what `cgscope run` uses without
/// flags or environment.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// cgroup v2 mount point; detected from mountinfo when `None`.
    pub cgroup_root: Option<PathBuf>,
    pub probes: ProbeConfig,
    pub metadata: MetadataConfig,
    /// Give up, once the probes are attached, the capabilities only attaching needs
    /// (`privilege::drop_after_attach`). Capabilities are per thread: the sampler
    /// must then start before any other thread.
    pub drop_capabilities: bool,
    /// The share of the node's CPU time cgscope may cost before it says so
    /// ([`cost`]).
    pub cost_budget: f64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            cgroup_root: None,
            probes: ProbeConfig {
                max_cgroups: cgscope_common::runq::DEFAULT_MAX_CGROUPS,
                enabled: crate::probes::ALL.map(str::to_owned).to_vec(),
                blame: true,
                run_stats: true,
            },
            metadata: MetadataConfig::default(),
            drop_capabilities: false,
            cost_budget: cost::DEFAULT_BUDGET,
        }
    }
}

/// What the sampler keeps of one cgroup between windows.
struct Previous {
    path: String,
    /// Its directory, for the second look that tells a removed cgroup from one
    /// that could not be listed.
    dir: PathBuf,
    identity: Identity,
    /// The last reading of its files, the baseline of the next window's counters;
    /// `None` if none has succeeded since it was found (its counters then count
    /// from its creation).
    stats: Option<CgroupStats>,
    /// When `stats` was read; without `stats`, the start of the window in which the
    /// cgroup was found (it was created after that).
    since: Instant,
}

pub struct Sampler {
    host: Host,
    root: PathBuf,
    probes: Probes,
    previous: HashMap<u64, Previous>,
    previous_at: Instant,
    // Buffers reused across windows.
    dirs: Vec<CgroupDir>,
    /// The probes' maps, as read this window and the one before.
    kernel: ProbeReader,
    text: String,
    devices: DeviceNames,
    netns: NetnsReader,
    host_reader: HostReader,
    metadata: Metadata,
    /// What the agent costs the node, window by window.
    cost: cost::CostWatch,
    /// Whether a scan has set the baselines (the first only reads them: its
    /// samples, counters since each cgroup's creation, are never reported).
    baselined: bool,
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
            window: HostSample::default(),
        };
        match scan::raise_descriptor_limit() {
            Ok(limit) => log::debug!("open descriptors: limit {limit}"),
            Err(e) => log::warn!("cannot raise the open-descriptor limit: {e}"),
        }
        // Said before the probes' own errors, which a missing capability explains.
        crate::privilege::warn_missing();
        let probes = Probes::attach(&config.probes, Some(&root));
        if config.drop_capabilities {
            match crate::privilege::drop_after_attach() {
                Ok(dropped) if dropped.is_empty() => {}
                Ok(dropped) => log::info!("probes attached; dropped {}", dropped.join(" ")),
                Err(e) => log::warn!("cannot drop capabilities after attaching: {e}"),
            }
            if crate::privilege::map_reads_need_cap_bpf() {
                log::info!(
                    "kept CAP_BPF: this kernel refuses every bpf() call, reading the maps too, \
                     without it (before 5.19, with kernel.unprivileged_bpf_disabled set)"
                );
            }
        }
        let mut sampler = Self {
            host,
            root,
            probes,
            previous: HashMap::new(),
            previous_at: Instant::now(),
            dirs: Vec::new(),
            kernel: ProbeReader::default(),
            text: String::new(),
            devices: DeviceNames::default(),
            netns: NetnsReader::default(),
            host_reader: HostReader::default(),
            metadata: Metadata::start(config.metadata.clone()),
            cost: cost::CostWatch::new(config.cost_budget),
            baselined: false,
        };
        let _baseline = sampler.sample(None);
        Ok(sampler)
    }

    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    /// Waits until every container runtime has answered once: see
    /// [`Metadata::wait_first_refresh`].
    pub fn wait_for_names(&self) {
        self.metadata.wait_first_refresh();
    }

    /// Ends the current window and returns it; the next window starts now.
    /// `prefix` keeps only cgroups at or below that path.
    pub fn sample(&mut self, prefix: Option<&str>) -> Snapshot {
        let now = Instant::now();
        let seconds = now.duration_since(self.previous_at).as_secs_f64();
        // Back-flow, sampler → kernel: what the last window showed the kernel needs
        // (a queue without issue timestamps) is attached now, for the next one.
        self.probes.attach_on_demand();
        // Maps first, tree second: a cgroup in the maps but not in the tree is gone.
        self.kernel.read(&mut self.probes);
        let mut scan = ScanErrors::default();
        let unlisted = self.walk(&mut scan);
        self.place_oom_kills();
        let mut walked = self.read_walked(prefix, seconds, &mut scan);
        self.identify(&mut walked);
        let missing = self.settle_missing(&mut walked, unlisted, seconds, &mut scan);
        self.forget(missing.dead, unlisted, &walked.next);
        self.aggregate(&mut walked, seconds);

        let Walked {
            next, mut cgroups, ..
        } = walked;
        // Walk order (parents before children), removed and unlisted cgroups last.
        cgroups.extend(
            missing
                .samples
                .into_iter()
                .filter(|c| prefix.is_none_or(|p| cgroup::tree::under(&c.path, p))),
        );
        self.host.window = self.host_reader.sample();
        let cpus = self.host.window.cpu.as_ref().map(|c| c.cpus);
        self.refuse_impossible(&mut cgroups, cpus, seconds, &mut scan);
        scan.log();

        self.previous = next;
        self.previous_at = now;
        let (probes, cost) = self.status_and_cost(cpus, seconds);
        Snapshot {
            schema: SCHEMA,
            timestamp_seconds: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            window_seconds: seconds,
            host: self.host.clone(),
            probes,
            scan_errors: scan.by_reason,
            cost,
            cgroups,
        }
    }

    /// Names the samples from the container runtimes and gives each network
    /// namespace's window to the cgroup that owns it.
    fn identify(&mut self, walked: &mut Walked) {
        self.metadata.annotate(&mut walked.cgroups);
        let network_errors = assign_network(
            &mut self.netns,
            &self.dirs,
            &mut walked.cgroups,
            &walked.sample_of,
        );
        if let Some(first) = network_errors.first() {
            log::warn!(
                "{first} (and {} more network problems in this scan)",
                network_errors.len() - 1
            );
        }
    }

    /// Back-flow, sampler → kernel: deletes the map entries of cgroups the kernel
    /// removed (`dead`), and of cgroups born and gone inside one window (in the maps,
    /// in neither the walk nor `next`). While a listing failed (`unlisted`), an id
    /// the walk missed may still be alive: those wait for a full walk.
    fn forget(
        &mut self,
        mut dead: Vec<u64>,
        unlisted: Option<&'static str>,
        next: &HashMap<u64, Previous>,
    ) {
        if unlisted.is_none() {
            let unknown: Vec<u64> = self
                .kernel
                .cgroup_ids()
                .filter(|id| !next.contains_key(id) && !dead.contains(id))
                .collect();
            dead.extend(unknown);
        }
        self.kernel.forget(&mut self.probes, &dead);
    }

    /// Like cpu.stat, a cgroup's probe windows cover its descendants: sums them
    /// bottom-up, puts them into the samples, and attributes the run-queue waits to
    /// the neighbours that caused them.
    fn aggregate(&mut self, walked: &mut Walked, seconds: f64) {
        let windows = &mut walked.windows;
        // The walk lists parents before children: summing from the end is bottom-up.
        for i in (1..self.dirs.len()).rev() {
            let Some(child) = windows[i].take() else {
                continue;
            };
            if let Some(parent) = self.dirs[i].parent {
                windows[parent].get_or_insert_with(Box::default).add(&child);
            }
            windows[i] = Some(child);
        }
        for (window, sample) in windows.iter().zip(&walked.sample_of) {
            if let Some(&s) = sample.as_ref() {
                probe_results(
                    &self.probes,
                    &self.kernel,
                    &mut self.devices,
                    &mut walked.cgroups[s],
                    window.as_deref(),
                    seconds,
                );
            }
        }
        if self.probes.runq.as_ref().is_ok_and(|r| r.blame().is_some())
            && !self.kernel.missing(probes::runq::NAME)
        {
            blame::attribute(&self.dirs, windows, &walked.sample_of, &mut walked.cgroups);
        }
    }

    /// The last line of defence: a value no true window can hold (a broken
    /// baseline) is refused, never reported: the cgroup's sample keeps its identity
    /// and says why it has no numbers.
    fn refuse_impossible(
        &mut self,
        cgroups: &mut [CgroupSample],
        cpus: Option<usize>,
        seconds: f64,
        scan: &mut ScanErrors,
    ) {
        // Not on the first scan, whose "windows" are whole lifetimes (on the node:
        // the root's 841 s of CPU in the 0.08 s since the sampler started, refused
        // and logged for a window nobody reads).
        let bounds = Bounds::now(cpus, seconds).filter(|_| self.baselined);
        self.baselined = true;
        let Some(bounds) = bounds else {
            return;
        };
        for c in cgroups {
            let Some(what) = c.impossible(&bounds) else {
                continue;
            };
            // What was refused, so that a broken baseline can be told from a clock
            // that jumped.
            let detail = match what {
                "cpu_time" => format!(
                    " ({:.3} s of CPU, {:.3} user, {:.3} system in {:.3} s on {} CPUs)",
                    c.cpu.usage_seconds.unwrap_or(f64::NAN),
                    c.cpu.user_seconds.unwrap_or(f64::NAN),
                    c.cpu.system_seconds.unwrap_or(f64::NAN),
                    c.stats_seconds(seconds),
                    bounds.cpus
                ),
                _ => String::new(),
            };
            let error = format!("{what} impossible in this window{detail}: refused");
            scan.count("impossible", 1);
            scan.note(format!("{}: {error}", c.path));
            *c = CgroupSample {
                path: std::mem::take(&mut c.path),
                raw_path_hex: c.raw_path_hex.take(),
                container: c.container.take(),
                unreadable: Some(Unreadable {
                    reason: "impossible",
                    error,
                }),
                ..CgroupSample::bare("", c.id, c.kind)
            };
        }
    }

    /// The probes' status this window (with why a map could not be read, and how
    /// full each per-cgroup map is) and what the agent cost the node.
    fn status_and_cost(
        &mut self,
        cpus: Option<usize>,
        seconds: f64,
    ) -> (Vec<ProbeStatus>, CostSample) {
        let mut probes = self.probes.status();
        for (name, error) in self.kernel.failures() {
            if let Some(p) = probes.iter_mut().find(|p| p.name == *name) {
                p.error = Some(error.clone());
            }
        }
        for (name, entries) in self.kernel.map_entries() {
            if let Some(p) = probes.iter_mut().find(|p| p.name == name && p.attached) {
                p.map_entries = Some(entries);
            }
        }
        let cost = self.cost.window(&probes, seconds, cpus);
        if cost.windows_over == cost::WINDOWS_OVER {
            if let Some(message) = cost.over_budget_message() {
                log::warn!("cgscope is {message}");
            }
        }
        (probes, cost)
    }
}

/// `/a/b` → `/a`, `/a` → `/`, `/` → none.
fn parent_path(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

/// The `container` object of pods and containers; `None` for everything else.
fn container_sample(identity: &Identity) -> Option<ContainerSample> {
    let kind = identity.kind?;
    if kind != CgroupKind::Pod && kind != CgroupKind::Container {
        return None;
    }
    Some(ContainerSample {
        kind,
        id: identity
            .container_id
            .clone()
            .or_else(|| identity.pod_uid.clone()),
        pod_uid: identity.pod_uid.clone(),
        runtime: identity.runtime,
        qos: identity.qos,
        ..ContainerSample::default()
    })
}

#[cfg(test)]
mod tests {
    use super::parent_path;

    #[test]
    fn parents() {
        assert_eq!(parent_path("/a/b"), Some("/a"));
        assert_eq!(parent_path("/a"), Some("/"));
        assert_eq!(parent_path("/"), None);
    }
}
