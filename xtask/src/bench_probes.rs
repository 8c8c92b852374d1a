//! `cargo xtask bench runq`, `bench io` and `bench net`: what each probe costs, next
//! to a reference tool attached to the same hooks, on the same workload, in the
//! same run (configurations interleaved round by round).
//!
//! Per-event cost from the kernel's accounting (`kernel.bpf_stats_enabled`): the
//! run time of every program a tool loaded, over the events of the workload, pooled
//! over the rounds (total run time / total events), with the spread of the
//! per-round figures beside it. The workload's own numbers (messages per second;
//! fio IOPS; iperf3 throughput; request/response rate) with nothing, cgscope, or
//! the reference attached give the slowdown. An empty bpftrace program on the
//! probe's busiest hook gives the floor: what the kernel charges for running any
//! program there (a perf-event tracepoint program; cgscope's tp_btf programs are
//! dispatched a little more cheaply, so the floor is approximate). The targets are
//! ratios to the floor or to another configuration of the same run: absolute
//! nanoseconds move from run to run on a shared machine.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{
    bench::{median, stop, BpfStats},
    cmd,
};

/// A tool attached during a round: its process and the programs it loaded.
pub(crate) struct Attached {
    pub(crate) child: Option<Child>,
    pub(crate) programs: BTreeSet<u64>,
}

/// A counter of `bpftool prog show --json`, which leaves out those still at 0.
fn counter(program: &serde_json::Value, key: &str) -> u64 {
    program[key].as_u64().unwrap_or(0)
}

/// (id → (name, run_cnt, run_time_ns)) of every loaded program.
pub(crate) fn programs() -> anyhow::Result<BTreeMap<u64, (String, u64, u64)>> {
    let out = cmd::output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    let progs: serde_json::Value = serde_json::from_str(&out).context("bpftool JSON")?;
    Ok(progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let id = p["id"].as_u64()?;
            let name = p["name"].as_str().unwrap_or("?").to_owned();
            Some((id, (name, counter(p, "run_cnt"), counter(p, "run_time_ns"))))
        })
        .collect())
}

/// Starts `command` (if any) and waits until the programs it loads stop changing.
pub(crate) fn attach(command: Option<Command>) -> anyhow::Result<Attached> {
    let Some(mut command) = command else {
        return Ok(Attached {
            child: None,
            programs: BTreeSet::new(),
        });
    };
    let before: BTreeSet<u64> = programs()?.into_keys().collect();
    // What the tool says when it fails to load is the only clue: kept to be shown.
    let mut stderr = tempfile_for_stderr()?;
    let child = command
        .stdout(Stdio::null())
        .stderr(stderr.try_clone()?)
        .spawn()?;
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    let mut stable_since = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
        let now: BTreeSet<u64> = programs()?
            .into_keys()
            .filter(|id| !before.contains(id))
            .collect();
        if now != seen {
            seen = now;
            stable_since = Instant::now();
        } else if !seen.is_empty() && stable_since.elapsed() > Duration::from_secs(1) {
            return Ok(Attached {
                child: Some(child),
                programs: seen,
            });
        }
    }
    stop(Some(child));
    let mut said = String::new();
    use std::io::Seek as _;
    stderr.rewind()?;
    let _ = stderr.read_to_string(&mut said);
    bail!(
        "{command:?} loaded no programs within 30 s; it said: {}",
        said.trim()
    )
}

/// An unnamed file (already unlinked) to take a child's stderr.
fn tempfile_for_stderr() -> anyhow::Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!("cgscope-bench-stderr-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| path.display().to_string())?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// bpftrace finds tracepoints in tracefs, which not every host mounts (this one
/// may not after a reboot): mounted at its usual place if absent.
pub(crate) fn mount_tracefs() -> anyhow::Result<()> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() {
        return Ok(());
    }
    cmd::run(
        Command::new("mount")
            .args(["-t", "tracefs", "tracefs"])
            .arg(tracing),
    )
    .context("mounting tracefs for bpftrace (needs root)")
}

/// Run time (ns) and runs of the programs `ids` between two readings.
pub(crate) fn cost(
    ids: &BTreeSet<u64>,
    before: &BTreeMap<u64, (String, u64, u64)>,
    after: &BTreeMap<u64, (String, u64, u64)>,
) -> (u64, u64) {
    ids.iter().fold((0, 0), |(ns, runs), id| {
        let (b, a) = (before.get(id), after.get(id));
        let d = |f: fn(&(String, u64, u64)) -> u64| a.map_or(0, f).saturating_sub(b.map_or(0, f));
        (ns + d(|p| p.2), runs + d(|p| p.1))
    })
}

/// One configuration's results over all rounds.
#[derive(Default)]
struct Results {
    /// The workload's figure of merit per round (higher is better).
    merit: Vec<f64>,
    /// Nanoseconds per event in each round.
    ns_per_event: Vec<f64>,
    probe_ns: u64,
    events: u64,
    /// Wall time of the workload runs.
    seconds: f64,
}

impl Results {
    /// Run time over events, pooled over the rounds.
    fn pooled_ns(&self) -> f64 {
        self.probe_ns as f64 / self.events.max(1) as f64
    }
}

/// The configuration that attaches an empty program to the probe's busiest hook:
/// what running any program there costs (the kernel's dispatch and the accounting's
/// own clock reads), the floor under every per-event figure.
const FLOOR: &str = "empty program";

/// `bpftrace -e '<tracepoint> { }'`: the [`FLOOR`] configuration's tool.
fn empty_program(tracepoint: &str) -> Option<Command> {
    let mut c = Command::new("bpftrace");
    c.args(["-e", &format!("{tracepoint} {{ }}")]);
    Some(c)
}

/// A configuration: its label, the tool to start (none for the baseline), and the
/// prefix of the names of the tool's programs to count (cgscope also loads its
/// other probes: only the probe under test is charged).
type Configuration<'a> = (&'static str, &'a dyn Fn() -> Option<Command>, &'static str);

/// Runs `workload` with each configuration attached, interleaved, `rounds` times.
/// The workload returns (figure of merit, events it caused).
fn compare(
    configurations: &[Configuration],
    rounds: usize,
    mut workload: impl FnMut() -> anyhow::Result<(f64, u64)>,
) -> anyhow::Result<BTreeMap<&'static str, Results>> {
    let _stats = BpfStats::enable()?;
    let mut results: BTreeMap<&'static str, Results> = BTreeMap::new();
    for round in 1..=rounds {
        for (label, command, prefix) in configurations {
            let mut attached = attach(command())?;
            let names = programs()?;
            attached
                .programs
                .retain(|id| names.get(id).is_some_and(|p| p.0.starts_with(prefix)));
            let before = programs()?;
            let started = Instant::now();
            let run = workload();
            let seconds = started.elapsed().as_secs_f64();
            let after = programs()?;
            stop(attached.child);
            let (merit, events) = run?;
            let (ns, _) = cost(&attached.programs, &before, &after);
            eprintln!("round {round}: {label:<18} {merit:.1}");
            let r = results.entry(label).or_default();
            r.merit.push(merit);
            r.ns_per_event.push(ns as f64 / events.max(1) as f64);
            r.probe_ns += ns;
            r.seconds += seconds;
            r.events += events;
        }
    }
    Ok(results)
}

/// `cgscope run` with only `probe` attached: the slowdown is that probe's (and the
/// agent's scans), not the other probes' on the same workload.
fn cgscope_run(binary: &Path, probe: &str) -> Command {
    let mut c = Command::new(binary);
    c.args([
        "run",
        "--interval",
        "1s",
        "--listen",
        "127.0.0.1:0",
        "--probes",
        probe,
    ]);
    c
}

/// A target: `label`'s pooled ns per event at most `max` times `against`'s, both
/// measured in the same run.
struct Target {
    label: &'static str,
    against: &'static str,
    max: f64,
}

impl Target {
    const fn new(label: &'static str, against: &'static str, max: f64) -> Self {
        Self {
            label,
            against,
            max,
        }
    }
}

/// Lowest and highest of `values`.
fn spread(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// Prints the table and checks the targets: ratios of ns per event, and (where
/// given) the share of the workload's merit that `loss_of` may cost.
fn report(
    what: &str,
    merit_unit: &str,
    results: &BTreeMap<&'static str, Results>,
    reference: &str,
    targets: &[Target],
    loss_of: Option<(&str, f64)>,
) -> anyhow::Result<()> {
    let base = median(
        &mut results
            .get("nothing attached")
            .context("baseline")?
            .merit
            .clone(),
    );
    println!("\n{what}\n");
    println!(
        "{:<20} {:>12} {:>8} {:>11} {:>12} {:>9} {:>15} {:>8} {:>8} {:>8}",
        "attached",
        merit_unit,
        "vs none",
        "min-max",
        "events",
        "ns/event",
        "rounds min-max",
        "vs ref",
        "vs floor",
        "in probe"
    );
    println!(
        "{:<20} {:>12} {:>8} {:>11} {:>12} {:>9}",
        "", "(median)", "", "", "", "(pooled)"
    );
    let ns_of = |label: &str| results.get(label).map_or(f64::NAN, Results::pooled_ns);
    let (reference_ns, floor_ns) = (ns_of(reference), ns_of(FLOOR));
    let mut merit = BTreeMap::new();
    for (label, r) in results.iter() {
        let m = median(&mut r.merit.clone());
        merit.insert(*label, m / base);
        let ns = r.pooled_ns();
        let (lo, hi) = spread(&r.merit);
        let (ns_lo, ns_hi) = spread(&r.ns_per_event);
        // The probe's run time as a share of the workload's wall time: on a serial
        // workload (QD1, one request in flight) the slowdown it causes, free of
        // the round-to-round noise of the workload's own figure.
        let share = r.probe_ns as f64 * 1e-9 / r.seconds.max(1e-9);
        println!(
            "{label:<20} {m:>12.1} {:>8.4} {:>11} {:>12} {ns:>9.1} {:>15} {:>8.2} {:>8.2} {:>7.2}%",
            m / base,
            format!("{:.2}-{:.2}", lo / base, hi / base),
            r.events,
            format!("{ns_lo:.0}-{ns_hi:.0}"),
            ns / reference_ns,
            ns / floor_ns,
            share * 100.0
        );
    }
    let verdict = |ok| if ok { "PASS" } else { "MISS" };
    let mut all_ok = true;
    println!();
    for t in targets {
        let ratio = ns_of(t.label) / ns_of(t.against);
        let ok = ratio <= t.max;
        all_ok &= ok;
        println!(
            "target: {} <= {:.2}x {} per event: {ratio:.2}x {}",
            t.label,
            t.max,
            t.against,
            verdict(ok)
        );
    }
    if let Some((label, max)) = loss_of {
        let loss = 1.0 - merit.get(label).copied().unwrap_or(f64::NAN);
        let ok = loss <= max;
        all_ok &= ok;
        println!(
            "target: {label} costs the workload <= {:.0} %: {:.2} % {}",
            max * 100.0,
            loss * 100.0,
            verdict(ok)
        );
    }
    println!("floor: an empty program on the hook costs {floor_ns:.1} ns per event here");
    if !all_ok {
        bail!("benchmark targets missed");
    }
    Ok(())
}

/// The runq workload: many short wakeups and context switches (10 groups of 20
/// senders each sending 1,000 messages to each of 20 receivers).
const MESSAGING: [&str; 7] = ["bench", "sched", "messaging", "-g", "10", "-l", "1000"];
const MESSAGES: f64 = 10.0 * 20.0 * 20.0 * 1000.0;

/// Context switches on all CPUs so far (`ctxt` of `/proc/stat`): the `sched_switch`
/// events, each of which runs the switch program.
pub(crate) fn context_switches() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    stat.lines()
        .find_map(|l| l.strip_prefix("ctxt "))
        .context("no ctxt in /proc/stat")?
        .trim()
        .parse()
        .context("ctxt")
}

/// One `perf bench sched messaging` run: (messages per second, context switches).
fn messaging() -> anyhow::Result<(f64, u64)> {
    let before = context_switches()?;
    let out = cmd::output(Command::new("perf").args(MESSAGING))?;
    let switches = context_switches()?.saturating_sub(before);
    let seconds: f64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Total time:"))
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .context("no 'Total time' in perf output")?;
    Ok((MESSAGES / seconds, switches))
}

/// `cargo xtask bench runq`: `perf bench sched messaging`; cgscope's runq probe with
/// and without who-delays-whom attribution, vs libbpf-tools runqlat. Per switch:
/// the run time of all of a tool's programs (wakeup, switch, migration, throttle)
/// over the context switches.
pub fn runq(rounds: usize) -> anyhow::Result<()> {
    crate::setup::run()?;
    let binary = cmd::build_release()?;
    let none = || None;
    let plain = || {
        let mut c = cgscope_run(&binary, "runq");
        c.args(["--runq-blame", "false"]);
        Some(c)
    };
    let blame = || {
        let mut c = cgscope_run(&binary, "runq");
        c.args(["--runq-blame", "true"]);
        Some(c)
    };
    let reference = || {
        let mut c = Command::new("runqlat");
        c.args(["3600", "1"]);
        Some(c)
    };
    let floor = || empty_program("tracepoint:sched:sched_switch");
    let configurations: [Configuration; 5] = [
        ("nothing attached", &none, ""),
        ("cgscope runq", &plain, "runq_"),
        ("cgscope runq+blame", &blame, "runq_"),
        ("runqlat", &reference, ""),
        (FLOOR, &floor, ""),
    ];
    let results = compare(&configurations, rounds, messaging)?;
    report(
        &format!(
            "runq: perf {} ({rounds} rounds), per context switch",
            MESSAGING.join(" ")
        ),
        "msg/s",
        &results,
        "runqlat",
        &[
            Target::new("cgscope runq", FLOOR, 2.0),
            Target::new("cgscope runq+blame", FLOOR, 2.0),
            Target::new("cgscope runq+blame", "cgscope runq", 1.3),
            Target::new("cgscope runq+blame", "runqlat", 1.0),
        ],
        None,
    )
}

/// A loop device over a file in the page cache: a fast device, so that a probe's
/// cost is as visible as it gets. Detached and removed on drop.
struct LoopDevice {
    file: PathBuf,
    dev: String,
}

impl LoopDevice {
    fn create() -> anyhow::Result<Self> {
        let file = cmd::workspace_root().join(".cache/bench-io.img");
        std::fs::create_dir_all(file.parent().expect("parent"))?;
        std::fs::write(&file, vec![0u8; 256 << 20])?;
        let dev = cmd::output(Command::new("losetup").args(["-f", "--show"]).arg(&file))?;
        Ok(Self {
            file,
            dev: dev.trim().to_owned(),
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// `cargo xtask bench io`: fio 4 KiB random reads (O_DIRECT, queue depth 1) on a
/// loop device; cgscope vs libbpf-tools biolatency.
pub fn io(rounds: usize) -> anyhow::Result<()> {
    crate::setup::run()?;
    let binary = cmd::build_release()?;
    let disk = LoopDevice::create()?;
    let disk_name = disk.dev.trim_start_matches("/dev/").to_owned();
    let none = || None;
    let ours = || Some(cgscope_run(&binary, "blockio"));
    let reference = || {
        let mut c = Command::new("biolatency");
        c.args(["-d", &disk_name]);
        Some(c)
    };
    let floor = || empty_program("tracepoint:block:block_rq_complete");
    let io_floor_ratio = if io_controller_on_v2() { 4.0 } else { 6.0 };
    let configurations: [Configuration; 4] = [
        ("nothing attached", &none, ""),
        ("cgscope blockio", &ours, "blockio_"),
        ("biolatency", &reference, ""),
        (FLOOR, &floor, ""),
    ];
    let results = compare(&configurations, rounds, || {
        let out = cmd::output(
            Command::new("fio")
                .args(["--name=bench", "--rw=randread", "--bs=4k", "--direct=1"])
                .args(["--ioengine=psync", "--time_based", "--runtime=3"])
                .args(["--output-format=json", &format!("--filename={}", disk.dev)]),
        )?;
        let report: serde_json::Value = serde_json::from_str(&out).context("fio JSON")?;
        let read = &report["jobs"][0]["read"];
        Ok((
            read["iops"].as_f64().context("iops")?,
            read["total_ios"].as_u64().context("ios")?,
        ))
    })?;
    report(
        &format!(
            "io: fio randread 4k O_DIRECT QD1 on {} ({rounds} rounds, medians)",
            disk.dev
        ),
        "IOPS",
        &results,
        "biolatency",
        &[
            Target::new("cgscope blockio", FLOOR, io_floor_ratio),
            Target::new("cgscope blockio", "biolatency", 1.0),
        ],
        Some(("cgscope blockio", 0.01)),
    )
}

/// Whether the io controller is on the cgroup v2 hierarchy: then the blockio probe
/// reads each request's blkcg from the bio; on a hybrid host it charges the
/// submitting task's cgroup, one more program per IO.
fn io_controller_on_v2() -> bool {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(|root| std::fs::read_to_string(format!("{root}/cgroup.controllers")))
        .find_map(Result::ok)
        .is_some_and(|c| c.split_whitespace().any(|c| c == "io"))
}

/// Request/response rounds per second over loopback TCP for `seconds`: one byte
/// each way, each round trip a few TCP events (segments received, ACKs).
fn request_response(seconds: f64) -> anyhow::Result<(f64, u64)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let (start, mut n, mut b) = (Instant::now(), 0u64, [0u8; 1]);
    while start.elapsed().as_secs_f64() < seconds {
        c.write_all(b"x")?;
        c.read_exact(&mut b)?;
        n += 1;
    }
    drop(c);
    let _ = server.join();
    // Each round trip: the request and the response, each a segment received.
    Ok((n as f64 / start.elapsed().as_secs_f64(), 2 * n))
}

/// iperf3 over loopback for 3 s: (Gbit/s, segments received as counted by the
/// kernel's TCP MIB, read before and after).
fn iperf3() -> anyhow::Result<(f64, u64)> {
    let in_segs = || -> anyhow::Result<u64> {
        let snmp = std::fs::read_to_string("/proc/net/snmp")?;
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let (keys, values) = (
            tcp.next().context("Tcp keys")?,
            tcp.next().context("Tcp values")?,
        );
        let at = keys
            .split_whitespace()
            .position(|k| k == "InSegs")
            .context("InSegs")?;
        values
            .split_whitespace()
            .nth(at)
            .context("InSegs value")?
            .parse()
            .context("InSegs")
    };
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", "15201"])
        .stdout(Stdio::null())
        .spawn()
        .context("iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(300));
    let before = in_segs()?;
    let out = cmd::output(Command::new("iperf3").args([
        "-c",
        "127.0.0.1",
        "-p",
        "15201",
        "-t",
        "3",
        "-J",
    ]));
    let after = in_segs()?;
    let _ = server.wait();
    let report: serde_json::Value = serde_json::from_str(&out?).context("iperf3 JSON")?;
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("bps")?;
    Ok((bps / 1e9, after.saturating_sub(before)))
}

/// `cargo xtask bench net`: iperf3 throughput and request/response rate on
/// loopback; cgscope vs a bpftrace `tcp_probe` histogram by cgroup.
pub fn net(rounds: usize) -> anyhow::Result<()> {
    crate::setup::run()?;
    let binary = cmd::build_release()?;
    let none = || None;
    let ours = || Some(cgscope_run(&binary, "tcp"));
    let reference = || {
        let mut c = Command::new("bpftrace");
        c.args([
            "-e",
            "tracepoint:tcp:tcp_probe { @rtt[cgroup] = hist(args->srtt); }",
        ]);
        Some(c)
    };
    let floor = || empty_program("tracepoint:tcp:tcp_probe");
    let configurations: [Configuration; 4] = [
        ("nothing attached", &none, ""),
        ("cgscope tcp", &ours, "tcp_"),
        ("bpftrace", &reference, ""),
        (FLOOR, &floor, ""),
    ];
    let targets = [
        Target::new("cgscope tcp", FLOOR, 1.5),
        Target::new("cgscope tcp", "bpftrace", 1.0),
    ];
    let loss = Some(("cgscope tcp", 0.01));
    let results = compare(&configurations, rounds, iperf3)?;
    let throughput = report(
        &format!("net: iperf3 -t 3 over loopback ({rounds} rounds, medians)"),
        "Gbit/s",
        &results,
        "bpftrace",
        &targets,
        loss,
    );
    let results = compare(&configurations, rounds, || request_response(3.0))?;
    let latency = report(
        &format!("net: 1-byte request/response over loopback, 3 s ({rounds} rounds, medians)"),
        "rounds/s",
        &results,
        "bpftrace",
        &targets,
        loss,
    );
    throughput.and(latency)
}
