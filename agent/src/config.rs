//! Configuration: one struct per command, resolved from flags and `CGSCOPE_*`
//! environment variables (a flag wins over the environment) in one place, by clap.
//! Every default is documented here and shown by `--help`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use cgscope_common::runq::DEFAULT_MAX_CGROUPS;
use clap::{Args, ValueEnum};

use crate::{
    export::filter::{parse_label, Filter, DEFAULT_MAX_SERIES},
    metadata::{MetadataConfig, DEFAULT_CRI_SOCKETS, DEFAULT_DOCKER_SOCKETS},
    probes::ProbeConfig,
    sampler::SamplerConfig,
    snapshot::CgroupKind,
};

/// Settings every command that samples shares.
#[derive(Debug, Clone, Args)]
pub struct SamplingOptions {
    /// cgroup v2 mount point to scan [default: found in /proc/self/mountinfo].
    /// Set it when the host's cgroupfs is mounted elsewhere (agent in a container).
    #[arg(long, env = "CGSCOPE_CGROUP_ROOT", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,

    /// Capacity of each per-cgroup kernel map; cgroups beyond it are counted as
    /// dropped. Memory: about 880 bytes × CPUs per cgroup that ran a task.
    #[arg(long, env = "CGSCOPE_MAX_CGROUPS", default_value_t = DEFAULT_MAX_CGROUPS,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_cgroups: u32,

    /// Docker Engine API sockets to ask for container names (Docker, and Podman's
    /// compatible service); absent ones are skipped. Repeat the flag, or separate
    /// with commas in the environment.
    #[arg(long = "docker-socket", env = "CGSCOPE_DOCKER_SOCKETS", value_delimiter = ',',
          default_values = DEFAULT_DOCKER_SOCKETS, value_name = "PATH")]
    pub docker_sockets: Vec<PathBuf>,

    /// CRI sockets to ask for Kubernetes pod and container names (containerd,
    /// CRI-O); absent ones are skipped.
    #[arg(long = "cri-socket", env = "CGSCOPE_CRI_SOCKETS", value_delimiter = ',',
          default_values = DEFAULT_CRI_SOCKETS, value_name = "PATH")]
    pub cri_sockets: Vec<PathBuf>,

    /// Bound on one exchange with a container runtime (e.g. 2s, 10s). Names wait
    /// for it, never a scan; raise it where a runtime answers slowly (Podman's
    /// service lists containers in seconds on a loaded node).
    #[arg(long, env = "CGSCOPE_RUNTIME_TIMEOUT", default_value = "2s",
          value_parser = parse_runtime_timeout, value_name = "DURATION")]
    pub runtime_timeout: Duration,

    /// The eBPF probes to attach; the others are reported as disabled.
    #[arg(long, env = "CGSCOPE_PROBES", value_delimiter = ',', default_values = crate::probes::ALL,
          value_parser = clap::builder::PossibleValuesParser::new(crate::probes::ALL))]
    pub probes: Vec<String>,

    /// Split each run-queue wait by what held the CPU (who delays this container);
    /// `false` keeps only the latency histograms, at a lower cost per switch.
    #[arg(long, env = "CGSCOPE_RUNQ_BLAME", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub runq_blame: bool,

    /// Have the kernel keep run-time statistics of BPF programs while the agent runs
    /// (BPF_ENABLE_STATS, needs CAP_SYS_ADMIN at start), so that the probes' cost
    /// per event is exported; every BPF program on the node, not only cgscope's,
    /// then pays two clock reads per run. `false`: statistics only where
    /// `kernel.bpf_stats_enabled` is already 1.
    #[arg(long, env = "CGSCOPE_PROBE_RUN_STATS", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub probe_run_stats: bool,

    /// The share of the node's CPU time, in percent, cgscope may cost (its process
    /// and its probes in the kernel) before it says so: over it for three windows in
    /// a row, the snapshot's `cost`, `/healthz` and `cgscope.cost.over_budget` name
    /// the costliest probe. Nothing is sampled away to stay under it.
    #[arg(long, env = "CGSCOPE_COST_BUDGET", default_value_t = crate::sampler::cost::DEFAULT_BUDGET * 100.0,
          value_parser = parse_percent, value_name = "PERCENT")]
    pub cost_budget: f64,
}

impl SamplingOptions {
    pub fn sampler(&self) -> SamplerConfig {
        SamplerConfig {
            cgroup_root: self.cgroup_root.clone(),
            probes: ProbeConfig {
                max_cgroups: self.max_cgroups,
                enabled: self.probes.clone(),
                blame: self.runq_blame,
                run_stats: self.probe_run_stats,
            },
            metadata: MetadataConfig {
                docker_sockets: self.docker_sockets.clone(),
                cri_sockets: self.cri_sockets.clone(),
                timeout: self.runtime_timeout,
                ..MetadataConfig::default()
            },
            drop_capabilities: false,
            cost_budget: self.cost_budget / 100.0,
        }
    }
}

/// `cgscope run`: the agent.
#[derive(Debug, Clone, Args)]
pub struct RunConfig {
    #[command(flatten)]
    pub sampling: SamplingOptions,

    /// Length of one sampling window (e.g. 10s, 500ms, 1m); one OTLP export per
    /// window [default: OTEL_METRIC_EXPORT_INTERVAL if set, else 10s].
    #[arg(long, env = "CGSCOPE_INTERVAL", value_parser = parse_interval)]
    pub interval: Option<Duration>,

    /// Address of the HTTP API (`/metrics`, `/api/v1/...`, `/healthz`, `/readyz`).
    /// Only loopback by default: the API has no authentication.
    #[arg(long, env = "CGSCOPE_LISTEN", default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub export: ExportOptions,
}

/// Default window length of `cgscope run`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// What is exported (OTLP and `/metrics`): the cardinality controls. OTLP itself is
/// configured by the standard `OTEL_*` variables.
#[derive(Debug, Clone, Args)]
pub struct ExportOptions {
    /// cgroup kinds to export.
    #[arg(long = "export-kinds", env = "CGSCOPE_EXPORT_KINDS", value_delimiter = ',',
          default_values = ["root", "pod", "container", "service"],
          value_parser = clap::builder::PossibleValuesParser::new(CgroupKind::ALL.map(CgroupKind::as_str)))]
    pub kinds: Vec<String>,

    /// Only these Kubernetes namespaces (repeat, or commas in the environment).
    #[arg(
        long = "include-namespace",
        env = "CGSCOPE_INCLUDE_NAMESPACES",
        value_delimiter = ','
    )]
    pub include_namespaces: Vec<String>,

    /// Never these Kubernetes namespaces.
    #[arg(
        long = "exclude-namespace",
        env = "CGSCOPE_EXCLUDE_NAMESPACES",
        value_delimiter = ','
    )]
    pub exclude_namespaces: Vec<String>,

    /// Only pods and containers with all these runtime labels (KEY=VALUE).
    #[arg(long = "include-label", env = "CGSCOPE_INCLUDE_LABELS", value_delimiter = ',',
          value_parser = parse_label, value_name = "KEY=VALUE")]
    pub include_labels: Vec<(String, String)>,

    /// Never pods and containers with any of these runtime labels (KEY=VALUE).
    #[arg(long = "exclude-label", env = "CGSCOPE_EXCLUDE_LABELS", value_delimiter = ',',
          value_parser = parse_label, value_name = "KEY=VALUE")]
    pub exclude_labels: Vec<(String, String)>,

    /// Only cgroups at or below these paths (relative to the v2 root).
    #[arg(
        long = "include-path",
        env = "CGSCOPE_INCLUDE_PATHS",
        value_delimiter = ',',
        value_name = "PATH_PREFIX"
    )]
    pub include_paths: Vec<String>,

    /// Never cgroups at or below these paths.
    #[arg(
        long = "exclude-path",
        env = "CGSCOPE_EXCLUDE_PATHS",
        value_delimiter = ',',
        value_name = "PATH_PREFIX"
    )]
    pub exclude_paths: Vec<String>,

    /// Export a cgroup only once it has existed this long (e.g. 30s): short-lived
    /// jobs would otherwise each make new series.
    #[arg(long, env = "CGSCOPE_MIN_AGE", default_value = "0s", value_parser = parse_age)]
    pub min_age: Duration,

    /// Series per metric; points beyond go to one overflow series
    /// (`otel.metric.overflow="true"`) and are counted in `cgscope.series.overflow`.
    #[arg(long, env = "CGSCOPE_MAX_SERIES", default_value_t = DEFAULT_MAX_SERIES,
          value_parser = clap::builder::ValueParser::new(parse_max_series))]
    pub max_series: usize,
}

impl ExportOptions {
    pub fn filter(&self) -> Filter {
        Filter {
            kinds: CgroupKind::ALL
                .into_iter()
                .filter(|k| self.kinds.iter().any(|s| s == k.as_str()))
                .collect(),
            include_namespaces: self.include_namespaces.clone(),
            exclude_namespaces: self.exclude_namespaces.clone(),
            include_labels: self.include_labels.clone(),
            exclude_labels: self.exclude_labels.clone(),
            include_paths: self.include_paths.clone(),
            exclude_paths: self.exclude_paths.clone(),
            min_age: self.min_age,
            max_series: self.max_series,
        }
    }
}

/// A share in percent, above 0 and at most 100.
fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("{s:?} is not a percentage above 0 and at most 100")),
    }
}

fn parse_max_series(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=10_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?}: expected a number of series from 1 to 10000000"
        )),
    }
}

/// A runtime's bound: humantime syntax, between 100 ms and 1 minute.
fn parse_runtime_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (try 2s, 10s)"))?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(60) {
        return Err(format!("{s:?}: must be between 100ms and 1m"));
    }
    Ok(d)
}

fn parse_age(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (try 30s, 5m)"))
}

/// `cgscope snapshot`: one window, printed.
#[derive(Debug, Clone, Args)]
pub struct SnapshotConfig {
    #[command(flatten)]
    pub sampling: SamplingOptions,

    /// Length of the window.
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    pub duration: Duration,

    /// Only cgroups at or below this path (relative to the v2 root, e.g. /kubepods.slice).
    #[arg(long = "cgroup", value_name = "PATH_PREFIX")]
    pub cgroup: Option<String>,

    #[arg(long, value_enum, default_value_t = SnapshotFormat::Table)]
    pub format: SnapshotFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotFormat {
    Table,
    Json,
}

/// `cgscope top`.
#[derive(Debug, Clone, Args)]
pub struct TopConfig {
    #[command(flatten)]
    pub sampling: SamplingOptions,

    /// Refresh: the length of each window.
    #[arg(long, default_value = "2s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Print one window as plain text and exit (also when stdout is not a terminal).
    #[arg(long)]
    pub once: bool,

    /// The column to sort by, highest first (NAME, CPU, THROTTLED, RUNQ-P99, MEM,
    /// MEM/LIM, PSI, R-IOPS, W-IOPS, IO-P99, RX, TX, RTT-P99).
    #[arg(long, default_value = "CPU", value_parser = crate::top::Sort::by)]
    pub sort: crate::top::Sort,

    /// Pods instead of containers.
    #[arg(long)]
    pub pods: bool,
}

/// `cgscope playbook run`.
#[derive(Debug, Clone, Args)]
pub struct PlaybookRunConfig {
    #[command(flatten)]
    pub sampling: SamplingOptions,

    /// The playbook (cgscope playbook list).
    pub name: String,

    /// Which cgroups: a container or pod name, namespace, container id (12+ digits),
    /// pod UID, or a cgroup path starting with / [default: every leaf cgroup].
    #[arg(long, value_name = "SELECTOR")]
    pub target: Option<String>,

    /// Length of the window the checks look at.
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    pub duration: Duration,

    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Markdown,
    Json,
}

/// `cgscope check`.
#[derive(Debug, Clone, Args)]
pub struct CheckConfig {
    #[command(flatten)]
    pub sampling: SamplingOptions,

    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

/// A window length: humantime syntax, between 100 ms and 1 hour.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (try 10s, 500ms, 1m)"))?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!("{s:?}: must be between 100ms and 1h"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_runtime_timeout("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_runtime_timeout("0s").is_err() && parse_runtime_timeout("2m").is_err());
        assert_eq!(parse_interval("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("2h").is_err());
        assert!(parse_interval("ten").unwrap_err().contains("try 10s"));
    }
}
