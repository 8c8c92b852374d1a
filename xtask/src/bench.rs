//! `cargo xtask bench`: what cgscope costs, next to a peer and the kernel's floor
//! in the same run (`bench_probes` for the probes, cargo bench targets for the scan
//! and the export), and the helpers the benches share.

use std::process::Child;

use anyhow::Context as _;
use clap::ValueEnum;

use crate::cmd;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Bench {
    /// Run-queue latency probe (with and without blame) vs libbpf-tools runqlat.
    Runq,
    /// One cgroup scan of 1,000 cgroups on a pure v2 node (a VM; `--here`: 100 /
    /// 1,000 / 5,000 on this host) vs replaying the scan's own file reads.
    Cgroups,
    /// Block IO probe vs libbpf-tools biolatency, on fio.
    Io,
    /// TCP probe vs a bpftrace tcp_probe histogram, on iperf3 and request/response.
    Net,
    /// One OTLP export of 500 containers vs the Prometheus text of the same series;
    /// the protobuf writer vs opentelemetry-proto + prost at 100 / 1,000 containers.
    Export,
    /// The agent with 1,000 idle plus 1,000 / 5,000 busy containers on a pure v2
    /// node (a VM): CPU, RSS, scrape and OTLP bytes, series per container.
    Scale,
    /// cgscope beside PCP (pmcd with the proc and bpf PMDAs, pmlogger) on 100 / 500 /
    /// 1,000 loaded containers: CPU, RSS, values per container.
    Agents,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    bench: Bench,
    /// Rounds per configuration; the table shows medians.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// `scale`, `cgroups`: run on this host's cgroup v2 mount instead of a pure v2 VM.
    #[arg(long)]
    pub here: bool,
    /// `scale`: the busy container counts, one configuration each.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 5_000])]
    pub busy: Vec<usize>,
}

/// Stops a tool we started (SIGINT to its PID, so runqlat exits cleanly) and waits.
pub(crate) fn stop(child: Option<Child>) {
    if let Some(mut child) = child {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = child.wait();
    }
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Restores `kernel.bpf_stats_enabled` when dropped.
pub(crate) struct BpfStats(String);

impl BpfStats {
    pub(crate) fn enable() -> anyhow::Result<Self> {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(path).context(path)?;
        std::fs::write(path, "1").context("enabling bpf_stats (needs root)")?;
        Ok(Self(old.trim().to_owned()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    crate::setup::run()?;
    if matches!(args.bench, Bench::Runq | Bench::Io | Bench::Net) {
        // Their floors are bpftrace programs.
        crate::bench_probes::mount_tracefs()?;
    }
    match args.bench {
        Bench::Runq => crate::bench_probes::runq(args.rounds),
        // In-process (thread CPU time, a counting allocator): a cargo bench target.
        // Here, every size and 50 rounds; in the VM (TCG), the size judged.
        Bench::Cgroups if args.here => crate::bench_vm::run("scan", true, &[]),
        Bench::Cgroups => crate::bench_vm::run(
            "scan",
            false,
            &["1000".into(), "--rounds".into(), args.rounds.to_string()],
        ),
        Bench::Io => crate::bench_probes::io(args.rounds),
        Bench::Net => crate::bench_probes::net(args.rounds),
        Bench::Export => cmd::cargo(&["bench", "-q", "-p", "cgscope", "--bench", "export"]),
        Bench::Scale => {
            let busy: Vec<String> = args.busy.iter().map(ToString::to_string).collect();
            crate::bench_vm::run("scale", args.here, &busy)
        }
        Bench::Agents => crate::bench_agents::run(args.rounds),
    }
}
