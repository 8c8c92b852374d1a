//! `cargo xtask bench runq`: cost of the run-queue latency probe, measured against
//! libbpf-tools `runqlat` in the same run, on the same workload.
//!
//! Per-event cost comes from the kernel's own accounting (`kernel.bpf_stats_enabled`,
//! `run_time_ns / run_cnt` per program); the workload's slowdown from its wall time
//! with nothing, cgscope, or runqlat attached, interleaved round by round.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::ValueEnum;

use crate::cmd;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Bench {
    /// Run-queue latency probe vs libbpf-tools runqlat.
    Runq,
    /// One cgroup scan of 100 / 1,000 / 5,000 cgroups vs reading the same files.
    Cgroups,
    /// Block IO probe vs libbpf-tools biolatency, on fio.
    Io,
    /// TCP probe vs a bpftrace tcp_probe histogram, on iperf3 and request/response.
    Net,
    /// One OTLP export of 500 containers vs the Prometheus text of the same series.
    Export,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    bench: Bench,
    /// Rounds per configuration; the table shows medians.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

/// Targets from the issue: per sched_switch event, and relative to runqlat.
const SWITCH_TARGET_NS: f64 = 60.0;

/// The workload: many short wakeups and context switches.
const WORKLOAD: [&str; 7] = ["bench", "sched", "messaging", "-g", "10", "-l", "1000"];

/// (cgscope program, runqlat program): the same hook in each tool.
const PAIRS: [(&str, &str); 3] = [
    ("runq_switch", "sched_switch"),
    ("runq_wakeup", "sched_wakeup"),
    ("runq_wakeup_new", "sched_wakeup_new"),
];

#[derive(Clone, Copy)]
enum Attached {
    Nothing,
    Cgscope,
    Runqlat,
}

impl Attached {
    const ALL: [Self; 3] = [Self::Nothing, Self::Cgscope, Self::Runqlat];

    fn label(self) -> &'static str {
        match self {
            Self::Nothing => "nothing attached",
            Self::Cgscope => "cgscope run",
            Self::Runqlat => "runqlat",
        }
    }
}

/// (run_cnt, run_time_ns) per program name, from `bpftool prog show`.
pub(crate) fn program_stats() -> anyhow::Result<HashMap<String, (u64, u64)>> {
    let out = cmd::output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    let progs: serde_json::Value = serde_json::from_str(&out).context("bpftool JSON")?;
    let mut stats = HashMap::new();
    for p in progs.as_array().into_iter().flatten() {
        if let Some(name) = p["name"].as_str() {
            let cnt = p["run_cnt"].as_u64().unwrap_or(0);
            let ns = p["run_time_ns"].as_u64().unwrap_or(0);
            let e = stats.entry(name.to_owned()).or_insert((0, 0));
            e.0 += cnt;
            e.1 += ns;
        }
    }
    Ok(stats)
}

/// Starts a tool and waits until its programs are loaded.
fn start(tool: Attached, cgscope: &std::path::Path) -> anyhow::Result<Option<Child>> {
    let (mut command, marker) = match tool {
        Attached::Nothing => return Ok(None),
        Attached::Cgscope => {
            let mut c = Command::new(cgscope);
            c.args(["run", "--interval", "1s", "--listen", "127.0.0.1:0"]);
            (c, "runq_switch")
        }
        Attached::Runqlat => {
            let mut c = Command::new("runqlat");
            c.args(["3600", "1"]);
            (c, "sched_switch")
        }
    };
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", tool.label()))?;
    let started = Instant::now();
    while !program_stats()?.contains_key(marker) {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{} did not load its programs within 30s", tool.label());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Some(child))
}

/// Stops a tool we started (SIGINT to its PID, so runqlat exits cleanly) and waits.
pub(crate) fn stop(child: Option<Child>) {
    if let Some(mut child) = child {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = child.wait();
    }
}

/// Wall time of one workload run, as perf reports it.
fn workload() -> anyhow::Result<f64> {
    let out = cmd::output(Command::new("perf").args(WORKLOAD))?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Total time:"))
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .context("no 'Total time' in perf output")
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
    match args.bench {
        Bench::Runq => runq(args),
        // In-process (thread CPU time, a counting allocator): a cargo bench target.
        Bench::Cgroups => cmd::cargo(&["bench", "-q", "-p", "cgscope", "--bench", "scan"]),
        Bench::Io => crate::bench_probes::io(args.rounds),
        Bench::Net => crate::bench_probes::net(args.rounds),
        Bench::Export => cmd::cargo(&["bench", "-q", "-p", "cgscope", "--bench", "export"]),
    }
}

fn runq(args: &BenchArgs) -> anyhow::Result<()> {
    let cgscope = cmd::build_release()?;
    let _stats = BpfStats::enable()?;

    let mut wall: HashMap<&str, Vec<f64>> = HashMap::new();
    // per program: (events, ns) summed over rounds
    let mut cost: HashMap<&str, (u64, u64)> = HashMap::new();
    for round in 1..=args.rounds {
        for tool in Attached::ALL {
            let child = start(tool, &cgscope)?;
            let before = program_stats()?;
            let seconds = workload();
            let after = program_stats()?;
            stop(child);
            let seconds = seconds?;
            eprintln!("round {round}: {:<16} {seconds:.3}s", tool.label());
            wall.entry(tool.label()).or_default().push(seconds);
            for (ours, theirs) in PAIRS {
                let name = match tool {
                    Attached::Cgscope => ours,
                    Attached::Runqlat => theirs,
                    Attached::Nothing => continue,
                };
                let (c0, n0) = before.get(name).copied().unwrap_or_default();
                let (c1, n1) = after.get(name).copied().unwrap_or_default();
                let e = cost.entry(name).or_default();
                e.0 += c1.saturating_sub(c0);
                e.1 += n1.saturating_sub(n0);
            }
        }
    }

    let ns = |name: &str| {
        cost.get(name)
            .map_or(f64::NAN, |&(c, n)| n as f64 / c.max(1) as f64)
    };
    let events = |name: &str| cost.get(name).map_or(0, |&(c, _)| c) / args.rounds as u64;
    println!(
        "\nrunq: perf {} ({} rounds, medians)\n",
        WORKLOAD.join(" "),
        args.rounds
    );
    println!(
        "{:<22} {:>12} {:>10} {:>12}",
        "program", "events/round", "ns/event", "vs runqlat"
    );
    for (ours, theirs) in PAIRS {
        let ratio = ns(ours) / ns(theirs);
        println!(
            "{:<22} {:>12} {:>10.1} {:>12.2}",
            format!("cgscope {ours}"),
            events(ours),
            ns(ours),
            ratio
        );
        println!(
            "{:<22} {:>12} {:>10.1} {:>12.2}",
            format!("runqlat {theirs}"),
            events(theirs),
            ns(theirs),
            1.0
        );
    }
    let base = median(
        wall.get_mut("nothing attached")
            .map(Vec::as_mut_slice)
            .unwrap_or_default(),
    );
    println!("\n{:<22} {:>12} {:>10}", "workload", "seconds", "vs none");
    for tool in Attached::ALL {
        let m = median(
            wall.get_mut(tool.label())
                .map(Vec::as_mut_slice)
                .unwrap_or_default(),
        );
        println!("{:<22} {:>12.3} {:>10.3}", tool.label(), m, m / base);
    }

    let switch_ns = ns("runq_switch");
    let per_event_ok = switch_ns <= SWITCH_TARGET_NS;
    let cg_total: f64 = PAIRS.iter().map(|(o, _)| ns(o) * events(o) as f64).sum();
    let rq_total: f64 = PAIRS.iter().map(|(_, t)| ns(t) * events(t) as f64).sum();
    let vs_runqlat_ok = cg_total <= rq_total;
    println!(
        "\ntarget runq_switch <= {SWITCH_TARGET_NS} ns/event: {switch_ns:.1} {}",
        if per_event_ok { "PASS" } else { "MISS" }
    );
    println!(
        "target total probe time <= runqlat's: {:.2} ms vs {:.2} ms per round {}",
        cg_total / 1e6,
        rq_total / 1e6,
        if vs_runqlat_ok { "PASS" } else { "MISS" }
    );
    if !(per_event_ok && vs_runqlat_ok) {
        bail!("benchmark targets missed");
    }
    Ok(())
}
