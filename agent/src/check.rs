//! `cgscope check`: can cgscope run here, and what works.
//!
//! Exit status: 0 everything works, 1 degraded (a probe or a controller is missing,
//! the agent is still useful), 2 cannot run (no cgroup v2 to read).

use std::path::Path;

use serde::Serialize;

use crate::{
    btf::VMLINUX_BTF,
    privilege::{self, CapabilityStatus},
    probes::Probes,
    sampler::{cost::CostWatch, kernel_release, resolve_root, SamplerConfig},
    snapshot::{CgroupMode, CostSample, ProbeStatus},
};

/// How long `check` watches the attached probes run to tell what they cost.
pub const COST_SAMPLE: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub kernel: String,
    pub btf: bool,
    pub cgroup_mode: Option<CgroupMode>,
    pub cgroup_root: Option<String>,
    /// Controllers enabled at the v2 root (`cgroup.subtree_control`).
    pub root_controllers: Vec<String>,
    /// Why cgscope may see only part of the host's cgroup tree (a private cgroup
    /// namespace, or a subtree mounted as the root), if it may.
    pub hidden_host_tree: Option<String>,
    /// Pressure stall information: `/proc/pressure/*` and per-cgroup `*.pressure`.
    pub psi: bool,
    /// The capabilities cgscope uses, held or not (see `privilege`).
    pub capabilities: Vec<CapabilityStatus>,
    pub probes: Vec<ProbeStatus>,
    /// What the probes cost the node over [`COST_SAMPLE`] after attaching, against
    /// `--cost-budget` (the agent's process is idle meanwhile: the scan's and the
    /// export's share shows in `run`'s windows); `null` when no probe attached.
    pub cost: Option<CostSample>,
    /// Why cgscope cannot run at all, if it cannot.
    pub fatal: Option<String>,
    pub exit_code: i32,
}

/// Whether the cgroup tree cgscope reads is only part of the host's. The root of a
/// v2 hierarchy always has cgroup id (inode) 1: a mounted root with another inode is
/// a subtree, whether through a cgroup namespace or a bind mount.
fn hidden_host_tree(root: &Path, mount_source: Option<&str>) -> Option<String> {
    const FIX: &str = "run with the host's cgroup namespace (cgroupns=host) or mount the host's cgroupfs and pass --cgroup-root";
    if let Some(source) = mount_source.filter(|s| *s != "/") {
        return Some(format!(
            "the cgroup2 mount shows {source}, not the host's root: {FIX}"
        ));
    }
    match std::fs::metadata(root).map(|m| std::os::unix::fs::MetadataExt::ino(&m)) {
        Ok(1) | Err(_) => None,
        Ok(id) => Some(format!(
            "{} is cgroup {id}, not the root (1): {FIX}",
            root.display()
        )),
    }
}

pub fn run(config: &SamplerConfig) -> CheckReport {
    let mut report = CheckReport {
        kernel: kernel_release(),
        btf: Path::new(VMLINUX_BTF).exists(),
        cgroup_mode: None,
        cgroup_root: None,
        root_controllers: Vec::new(),
        hidden_host_tree: None,
        psi: Path::new("/proc/pressure/cpu").exists(),
        capabilities: privilege::status(),
        probes: Vec::new(),
        cost: None,
        fatal: None,
        exit_code: 0,
    };
    let mut v2_root = None;
    match resolve_root(config.cgroup_root.as_ref()) {
        Ok((mounts, root)) => {
            report.cgroup_mode = Some(mounts.mode);
            // mountinfo describes the detected mount, not a configured --cgroup-root.
            let source = mounts
                .v2_mount_source
                .as_deref()
                .filter(|_| config.cgroup_root.is_none());
            report.hidden_host_tree = hidden_host_tree(&root, source);
            report.psi &= root.join("cpu.pressure").exists();
            report.root_controllers = std::fs::read_to_string(root.join("cgroup.subtree_control"))
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
            report.cgroup_root = Some(root.display().to_string());
            v2_root = Some(root);
        }
        Err(e) => report.fatal = Some(e.to_string()),
    }
    let probes = Probes::attach(&config.probes, v2_root.as_deref());
    report.probes = probes.status();
    if report.probes.iter().any(|p| p.attached) {
        let mut watch = CostWatch::new(config.cost_budget);
        // The node's CPUs, as the agent's windows count them (`/proc/stat`), not those
        // this process may use.
        let cpus = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| crate::host::parse_proc_stat_cpus(&text).ok())
            .map(|cpus| cpus.len());
        watch.window(&report.probes, 0.0, cpus);
        std::thread::sleep(COST_SAMPLE);
        report.probes = probes.status();
        report.cost = Some(watch.window(&report.probes, COST_SAMPLE.as_secs_f64(), cpus));
    }
    let degraded = report.hidden_host_tree.is_some()
        || report.capabilities.iter().any(|c| c.needed && !c.held)
        || !report.btf
        || !report.psi
        || report.root_controllers.is_empty()
        || report.probes.iter().any(|p| p.error.is_some());
    report.exit_code = match (&report.fatal, degraded) {
        (Some(_), _) => 2,
        (None, true) => 1,
        (None, false) => 0,
    };
    report
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "NO" };
        writeln!(f, "kernel            {}", self.kernel)?;
        writeln!(f, "BTF               {} ({VMLINUX_BTF})", yes(self.btf))?;
        match (&self.cgroup_mode, &self.cgroup_root) {
            (Some(mode), Some(root)) => {
                writeln!(f, "cgroup mode       {} (v2 at {root})", mode.as_str())?
            }
            _ => writeln!(f, "cgroup mode       no cgroup v2")?,
        }
        let controllers = if self.root_controllers.is_empty() {
            "none (cpu/memory/io/pids stats unavailable below the root)".to_owned()
        } else {
            self.root_controllers.join(" ")
        };
        writeln!(f, "v2 controllers    {controllers}")?;
        if let Some(hidden) = &self.hidden_host_tree {
            writeln!(f, "cgroup namespace  PARTIAL VIEW: {hidden}")?;
        }
        writeln!(f, "PSI               {}", yes(self.psi))?;
        for c in &self.capabilities {
            let after = if c.kept_after_attach {
                "kept"
            } else {
                "dropped after attach"
            };
            match (c.held, c.via_sys_admin) {
                (false, _) if !c.needed => writeln!(
                    f,
                    "{:<17} not held, not needed on this kernel (it would {})",
                    c.name, c.purpose
                )?,
                (true, false) => writeln!(f, "{:<17} yes ({}; {after})", c.name, c.purpose)?,
                (true, true) => writeln!(
                    f,
                    "{:<17} yes, through CAP_SYS_ADMIN ({})",
                    c.name, c.purpose
                )?,
                (false, _) => writeln!(
                    f,
                    "{:<17} MISSING: {} (needed to {})",
                    c.name, c.without, c.purpose
                )?,
            }
        }
        for p in &self.probes {
            match &p.error {
                None if !p.attached => writeln!(f, "probe {:<11} not attached", p.name)?,
                None => writeln!(f, "probe {:<11} attached", p.name)?,
                Some(e) => writeln!(f, "probe {:<11} FAILED: {e}", p.name)?,
            }
            for note in &p.notes {
                writeln!(f, "{:<17} - {note}", "")?;
            }
        }
        if let Some(cost) = &self.cost {
            writeln!(f, "probe cost        {}", cost_line(cost))?;
        }
        if let Some(fatal) = &self.fatal {
            writeln!(f, "cannot run: {fatal}")?;
        }
        let verdict = ["ok", "degraded", "cannot run"][self.exit_code.clamp(0, 2) as usize];
        write!(f, "result            {verdict}")
    }
}

/// The probes' measured cost against the budget, in one line.
fn cost_line(cost: &CostSample) -> String {
    let seconds = COST_SAMPLE.as_secs_f64();
    let Some(by_probe) = &cost.probe_seconds else {
        return format!(
            "not measured: the kernel keeps no run-time statistics for the probes (their notes say why); budget {:.2}% of the node's CPU",
            cost.budget * 100.0
        );
    };
    let share = cost.node_share.unwrap_or(0.0);
    let verdict = if share > cost.budget {
        "OVER the budget"
    } else {
        "within the budget"
    };
    let detail: Vec<String> = by_probe
        .iter()
        .map(|(probe, s)| format!("{probe} {:.1} ms", s * 1e3))
        .collect();
    format!(
        "{:.3}% of the node's CPU over {seconds:.0} s, {verdict} of {:.2}% (--cost-budget); {}",
        share * 100.0,
        cost.budget * 100.0,
        detail.join(", ")
    )
}
