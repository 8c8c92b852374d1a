//! `cargo xtask bench agents`: cgscope beside PCP (Debian's `pcp`), the agent the
//! seed documents weighed, on the same node and the same load, configurations
//! interleaved round by round. 100, 500 and 1,000 Docker-like container cgroups each
//! run a small load once a second (0.2 ms of CPU, a TCP round trip over loopback, a
//! 4 KiB O_DIRECT read). Then, in turn: nothing; `cgscope run` (its defaults, 10 s
//! windows) with `/metrics` scraped every 10 s; PCP: a private `pmcd` (on loopback)
//! with the proc PMDA (`cgroup.*`), the linux PMDA and the bpf PMDA (its default
//! modules: `runqlat`, `biolatency`, `oomkill`), everything fetched every 10 s by
//! `pmlogger`. Per agent over three windows: CPU of all its processes, the kernel run
//! time of all the BPF programs it loaded (per context switch too), RSS (steady and
//! peak, summed over its processes), values per container, and whether its latency
//! distributions name a container. Target: cgscope at most 0.5x PCP's CPU (processes
//! plus programs) and RSS.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpListener,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicI32, AtomicU16, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

// Shared with the scale bench, which uses the idle and waking bodies.
#[allow(dead_code)]
#[path = "../../agent/benches/support/containers.rs"]
mod containers;
#[path = "../../agent/benches/support/process.rs"]
mod process;

use crate::{
    bench::{median, stop, BpfStats},
    bench_probes::{attach, context_switches, cost, programs},
    cmd,
};
use process::{cgroup_path, cpu_seconds, get, stat_fields, status_mib};

const SIZES: [usize; 3] = [100, 500, 1_000];
const WINDOW: Duration = Duration::from_secs(10);
const MEASURED_WINDOWS: u32 = 3;
const PCP_PORT: u16 = 44_399;
const PCP_BIN: &str = "/usr/lib/pcp/bin";
const PMDAS: &str = "/var/lib/pcp/pmdas";
const SLICE: &str = "cgscope-agents.slice";
/// The file the containers read from, O_DIRECT (on the root file system's disk).
const DATA: &str = "/var/tmp/cgscope-bench-agents.dat";
const DATA_BLOCKS: u64 = 16_384;

/// Set before the containers are forked; read by their tasks.
static ECHO_PORT: AtomicU16 = AtomicU16::new(0);
static DATA_FD: AtomicI32 = AtomicI32::new(-1);

/// A 4 KiB buffer aligned for O_DIRECT.
#[repr(C, align(4096))]
struct Block([u8; 4096]);

/// A container's load: once a second, 0.2 ms of CPU, a 1-byte TCP round trip and a
/// 4 KiB direct read. Raw syscalls only (see [`containers::Body`]).
fn load(i: usize) -> ! {
    containers::sleep(containers::phase(i));
    // SAFETY: plain syscalls on descriptors and buffers this task owns.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: ECHO_PORT.load(Ordering::Relaxed).to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let connected = libc::connect(
            socket,
            (&raw const address).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) == 0;
        let mut block = Block([0; 4096]);
        let mut byte = [b'x'];
        let mut n: u64 = 0;
        loop {
            let start = now_ns();
            while now_ns() - start < 200_000 {}
            if connected {
                libc::write(socket, byte.as_ptr().cast(), 1);
                libc::read(socket, byte.as_mut_ptr().cast(), 1);
            }
            let block_index = (i as u64 * 7_919 + n) % DATA_BLOCKS;
            libc::pread(
                DATA_FD.load(Ordering::Relaxed),
                block.0.as_mut_ptr().cast(),
                4096,
                (block_index * 4096) as libc::off_t,
            );
            n += 1;
            containers::sleep(Duration::from_secs(1));
        }
    }
}

fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Answers each byte of every connection with itself, a thread per connection.
fn echo_server(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut stream = stream;
                    let mut byte = [0u8];
                    while stream.read_exact(&mut byte).is_ok() && stream.write_all(&byte).is_ok() {}
                });
        }
    });
}

/// The data file, written once, opened for direct reads.
fn open_data() -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let size = DATA_BLOCKS * 4096;
    if std::fs::metadata(DATA).map(|m| m.len()).ok() != Some(size) {
        std::fs::write(DATA, vec![7u8; size as usize]).context(DATA)?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(DATA)
        .context(DATA)
}

/// The processes of one agent, as (pid, what) pairs.
type Processes = Vec<(u32, &'static str)>;

/// The children of `parent` (PMDAs of pmcd).
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parent = parent.to_string();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        // The parent's PID follows the state.
        .filter(|&pid| stat_fields(pid).get(1) == Some(&parent))
        .collect()
}

/// One agent's figures in one round.
#[derive(Default, Clone)]
struct Round {
    /// CPU of its processes, millicores, by process.
    mcpu: BTreeMap<&'static str, f64>,
    /// Kernel run time of its BPF programs, millicores.
    bpf_mcpu: f64,
    bpf_ns_per_switch: f64,
    rss_mib: f64,
    peak_mib: f64,
    /// Values it holds per container (median): series in /metrics, or metric
    /// instances in PCP's cgroup.* that name the container.
    per_container: f64,
    /// Latency distributions (metrics) that name a container.
    latency_per_container: usize,
    switches_per_second: f64,
}

/// What an agent does between start and stop.
enum Agent {
    Nothing,
    Cgscope { binary: PathBuf },
    Pcp { dir: PathBuf },
}

impl Agent {
    fn label(&self) -> &'static str {
        match self {
            Self::Nothing => "nothing",
            Self::Cgscope { .. } => "cgscope",
            Self::Pcp { .. } => "PCP",
        }
    }
}

/// A directory removed, with what is in it, when dropped (however the bench ends).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private pmcd's files: the namespace of the PMDAs it runs, its config, the PMDAs'
/// logs and pmlogger's archives.
fn pcp_dir() -> anyhow::Result<Scratch> {
    for tool in ["pmcd", "pmlogger", "pmnsmerge"] {
        if !Path::new(PCP_BIN).join(tool).exists() {
            bail!("{PCP_BIN}/{tool} is missing: install Debian's pcp (cargo xtask setup)");
        }
    }
    let scratch =
        Scratch(std::env::temp_dir().join(format!("cgscope-bench-pcp-{}", std::process::id())));
    let dir = scratch.0.clone();
    std::fs::create_dir_all(&dir)?;
    let pmns = Path::new("/var/lib/pcp/pmns");
    let root = dir.join("root");
    let _ = std::fs::remove_file(&root);
    cmd::run(
        Command::new(Path::new(PCP_BIN).join("pmnsmerge"))
            .args(["root_pmcd", "root_proc", "root_linux", "root_bpf"])
            .arg(&root)
            .current_dir(pmns),
    )?;
    std::fs::write(
        dir.join("pmcd.conf"),
        format!(
            "pmcd\t2\tdso\tpmcd_init\t{PMDAS}/pmcd/pmda_pmcd.so\n\
             proc\t3\tpipe\tbinary\t\t{PMDAS}/proc/pmdaproc -d 3\n\
             linux\t60\tpipe\tbinary\t\t{PMDAS}/linux/pmdalinux\n\
             bpf\t157\tpipe\tbinary\t\t{PMDAS}/bpf/pmdabpf -d 157\n\
             [access]\nallow \"local:*\" : all;\n"
        ),
    )?;
    std::fs::write(
        dir.join("pmlogger.conf"),
        "log mandatory on every 10 seconds {\n    cgroup\n    bpf\n}\n",
    )?;
    Ok(scratch)
}

/// Runs one agent for a warm-up window and [`MEASURED_WINDOWS`] more, with the load
/// of `fleet` running; its figures.
fn round(agent: &Agent, fleet: &containers::Containers, root: &Path) -> anyhow::Result<Round> {
    let host = format!("127.0.0.1:{PCP_PORT}");
    let listen = TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    let command = match agent {
        Agent::Nothing => None,
        Agent::Cgscope { binary } => {
            let mut c = Command::new(binary);
            c.args(["run", "--interval", "10s", "--listen", &listen]);
            Some(c)
        }
        Agent::Pcp { dir } => {
            let mut c = Command::new(Path::new(PCP_BIN).join("pmcd"));
            c.args(["-f", "-A", "-i", "127.0.0.1", "-p", &PCP_PORT.to_string()])
                .arg("-n")
                .arg(dir.join("root"))
                .arg("-c")
                .arg(dir.join("pmcd.conf"))
                .arg("-s")
                .arg(dir.join("pmcd.socket"))
                .arg("-l")
                .arg(dir.join("pmcd.log"))
                .arg("-x")
                .arg(dir.join("pmcd.err"))
                // The PMDAs write their logs in pmcd's directory.
                .current_dir(dir);
            Some(c)
        }
    };
    // Started, and its BPF programs loaded.
    let attached = attach(command)?;
    let mut pmlogger = None;
    let mut processes: Processes = Vec::new();
    if let Some(child) = &attached.child {
        processes.push((child.id(), agent.label()));
    }
    match agent {
        Agent::Cgscope { .. } => {
            let started = Instant::now();
            while get(&listen, "/readyz", false).0 != 200 {
                if started.elapsed() > Duration::from_secs(120) {
                    stop(attached.child);
                    bail!("cgscope was not ready after 120 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Agent::Pcp { dir } => {
            let pmcd = processes[0].0;
            processes.extend(children(pmcd).into_iter().map(|pid| (pid, "PMDAs")));
            let logger = Command::new(Path::new(PCP_BIN).join("pmlogger"))
                .args(["-h", &host, "-t", "10"])
                .arg("-c")
                .arg(dir.join("pmlogger.conf"))
                .arg("-l")
                .arg(dir.join("pmlogger.log"))
                .arg(dir.join(format!("archive-{}", now_ns())))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting pmlogger")?;
            processes.push((logger.id(), "pmlogger"));
            pmlogger = Some(logger);
        }
        Agent::Nothing => {}
    }
    // The warm-up window (the first scan, the first fetches).
    std::thread::sleep(WINDOW);
    let cpu_before: Vec<f64> = processes.iter().map(|(pid, _)| cpu_seconds(*pid)).collect();
    let (programs_before, switches_before) = (programs()?, context_switches()?);
    let started = Instant::now();
    for _ in 0..MEASURED_WINDOWS {
        std::thread::sleep(WINDOW);
        if let Agent::Cgscope { .. } = agent {
            get(&listen, "/metrics", true); // Prometheus' scrape
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (programs_after, switches) = (programs()?, context_switches()? - switches_before);
    let mut r = Round {
        switches_per_second: switches as f64 / seconds,
        ..Round::default()
    };
    for ((pid, what), before) in processes.iter().zip(&cpu_before) {
        *r.mcpu.entry(what).or_default() += (cpu_seconds(*pid) - before) / seconds * 1e3;
        r.rss_mib += status_mib(*pid, "VmRSS");
        r.peak_mib += status_mib(*pid, "VmHWM");
    }
    let (bpf_ns, _) = cost(&attached.programs, &programs_before, &programs_after);
    r.bpf_mcpu = bpf_ns as f64 / 1e9 / seconds * 1e3;
    r.bpf_ns_per_switch = bpf_ns as f64 / switches.max(1) as f64;
    let paths = fleet.paths(root);
    match agent {
        Agent::Cgscope { .. } => {
            let text = String::from_utf8_lossy(&get(&listen, "/metrics", false).1).into_owned();
            (r.per_container, r.latency_per_container) = cgscope_values(&text, &paths);
        }
        Agent::Pcp { .. } => {
            (r.per_container, r.latency_per_container) = pcp_values(&host, &paths)?
        }
        Agent::Nothing => {}
    }
    stop(pmlogger);
    stop(attached.child);
    Ok(r)
}

/// Series per container (median) and latency histograms that name a container.
fn cgscope_values(text: &str, paths: &[String]) -> (f64, usize) {
    let mut series: BTreeMap<&str, usize> = BTreeMap::new();
    let mut histograms = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some(path) = cgroup_path(line) else {
            continue;
        };
        *series.entry(path).or_default() += 1;
        let name = line.split(['{', ' ']).next().unwrap_or("");
        if name.ends_with("_bucket") && paths.iter().any(|p| p == path) {
            histograms.insert(name.to_owned());
        }
    }
    let mut counts: Vec<f64> = paths
        .iter()
        .map(|p| series.get(p.as_str()).copied().unwrap_or(0) as f64)
        .collect();
    (median(&mut counts), histograms.len())
}

/// Metric instances per container (median) in PCP's cgroup.* and bpf.* metrics
/// whose instance names a container, from `pmprobe -I`.
fn pcp_values(host: &str, paths: &[String]) -> anyhow::Result<(f64, usize)> {
    let out = cmd::output(Command::new("pmprobe").args(["-h", host, "-I", "cgroup", "bpf"]))?;
    let mut per_path: BTreeMap<&str, usize> = BTreeMap::new();
    let mut latency = std::collections::BTreeSet::new();
    // Instance names are quoted in pmprobe's output.
    let quoted: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    for line in out.lines() {
        let Some((metric, rest)) = line.split_once(' ') else {
            continue;
        };
        for (path, quoted) in paths.iter().zip(&quoted) {
            if rest.contains(quoted.as_str()) {
                *per_path.entry(path.as_str()).or_default() += 1;
                if metric.starts_with("bpf.") {
                    latency.insert(metric.to_owned());
                }
            }
        }
    }
    let mut counts: Vec<f64> = paths
        .iter()
        .map(|p| per_path.get(p.as_str()).copied().unwrap_or(0) as f64)
        .collect();
    Ok((median(&mut counts), latency.len()))
}

pub fn run(rounds: usize) -> anyhow::Result<()> {
    crate::setup::run()?;
    let binary = cmd::build_release()?;
    let root = v2_root()?;
    let pcp = pcp_dir()?;
    let _stats = BpfStats::enable()?;
    let data = open_data()?;
    DATA_FD.store(data.as_raw_fd(), Ordering::Relaxed);
    let agents = [
        Agent::Nothing,
        Agent::Cgscope { binary },
        Agent::Pcp { dir: pcp.0.clone() },
    ];
    let mut table: Vec<(usize, &'static str, Vec<Round>)> = Vec::new();
    for size in SIZES {
        // A fresh listener per size, bound before the fork: the tasks connect to
        // its queue, and the echo thread starts after.
        let listener = TcpListener::bind("127.0.0.1:0")?;
        ECHO_PORT.store(listener.local_addr()?.port(), Ordering::Relaxed);
        let mut fleet = containers::Containers::default();
        fleet
            .add(&root, SLICE, size, load)
            .with_context(|| format!("{size} containers under {}", root.display()))?;
        echo_server(listener);
        let mut rounds_of: Vec<Vec<Round>> = vec![Vec::new(); agents.len()];
        for n in 1..=rounds {
            for (agent, results) in agents.iter().zip(&mut rounds_of) {
                let r = round(agent, &fleet, &root)?;
                eprintln!(
                    "agents: {size} containers, round {n}: {:<8} {:.1} mCPU + {:.1} mCPU in BPF, {:.0} MiB",
                    agent.label(),
                    r.mcpu.values().sum::<f64>(),
                    r.bpf_mcpu,
                    r.rss_mib
                );
                results.push(r);
            }
        }
        for (agent, results) in agents.iter().zip(rounds_of) {
            table.push((size, agent.label(), results));
        }
    }
    report(&table, rounds)
}

/// The cgroup v2 mount (pure v2, or the unified one of a hybrid host).
fn v2_root() -> anyhow::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(at))
        })
        .next()
        .context("no cgroup2 mount")
}

fn report(table: &[(usize, &'static str, Vec<Round>)], rounds: usize) -> anyhow::Result<()> {
    println!(
        "\nagents: {} rounds, {MEASURED_WINDOWS} windows of {WINDOW:?} each, medians over the rounds",
        rounds
    );
    println!(
        "{:>6} {:<8} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7} {:>10} {:>10} {:>9}",
        "cgroups",
        "agent",
        "proc mCPU",
        "BPF mCPU",
        "total",
        "BPF ns/sw",
        "RSS",
        "peak",
        "per cont.",
        "latency/c",
        "ctxt/s"
    );
    let mut verdicts = Vec::new();
    for size in SIZES {
        let med = |rs: &[Round], f: &dyn Fn(&Round) -> f64| {
            median(&mut rs.iter().map(f).collect::<Vec<_>>())
        };
        let mut totals = BTreeMap::new();
        for (_, label, rs) in table.iter().filter(|(s, _, _)| *s == size) {
            let proc_mcpu = med(rs, &|r| r.mcpu.values().sum());
            let bpf = med(rs, &|r| r.bpf_mcpu);
            let total = med(rs, &|r| r.mcpu.values().sum::<f64>() + r.bpf_mcpu);
            let rss = med(rs, &|r| r.rss_mib);
            totals.insert(*label, (total, rss));
            println!(
                "{:>6} {:<8} {:>9.1} {:>9.1} {:>9.1} {:>10.0} {:>6.0}M {:>6.0}M {:>10.0} {:>10.0} {:>9.0}",
                size,
                label,
                proc_mcpu,
                bpf,
                total,
                med(rs, &|r| r.bpf_ns_per_switch),
                rss,
                med(rs, &|r| r.peak_mib),
                med(rs, &|r| r.per_container),
                med(rs, &|r| r.latency_per_container as f64),
                med(rs, &|r| r.switches_per_second),
            );
            if *label == "PCP" {
                let parts: Vec<String> = ["PCP", "PMDAs", "pmlogger"]
                    .iter()
                    .map(|p| {
                        format!(
                            "{p} {:.1}",
                            med(rs, &|r| r.mcpu.get(p).copied().unwrap_or(0.0))
                        )
                    })
                    .collect();
                println!(
                    "{:>15} processes, mCPU: {} (pmcd as PCP)",
                    "",
                    parts.join(", ")
                );
            }
        }
        if let (Some(&(c_cpu, c_rss)), Some(&(p_cpu, p_rss))) =
            (totals.get("cgscope"), totals.get("PCP"))
        {
            verdicts.push(format!(
                "{size} containers: CPU {:.2}x PCP's (target <= 0.5: {}), RSS {:.2}x (target <= 0.5: {})",
                c_cpu / p_cpu,
                verdict(c_cpu <= 0.5 * p_cpu),
                c_rss / p_rss,
                verdict(c_rss <= 0.5 * p_rss)
            ));
        }
    }
    println!(
        "\nproc mCPU: user+system of the agent's processes (PCP: pmcd, its PMDAs, pmlogger); \
         BPF: the kernel run time of the programs it loaded (charged to the tasks they run \
         in, so not in proc); per cont.: series per container in /metrics (cgscope) or \
         metric instances naming the container (PCP); latency/c: latency histograms that \
         name a container (PCP's bpf modules are host-wide)."
    );
    for v in &verdicts {
        println!("{v}");
    }
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}
