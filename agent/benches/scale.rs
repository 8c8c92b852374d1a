//! `cargo xtask bench scale`: what the agent costs on a dense node, and what one
//! container costs downstream. Run as root, on a pure cgroup v2 tree (the xtask runs
//! it in a VM) or on this host's v2 mount. For each configuration it creates Docker-like
//! container cgroups (`docker-<id>.scope`): "busy" ones with one task that wakes up
//! every second, and 1,000 "idle" ones with one task that never wakes. Then it runs the
//! real agent (`cgscope run`, 10 s windows, its defaults) with an OTLP/HTTP endpoint
//! that counts the bytes it receives, scrapes `/metrics` once per window as Prometheus
//! would (gzip), and measures over three steady windows: the agent's CPU (its process
//! from /proc, its probes' kernel run time from its own `cost`), RSS (steady and peak),
//! scrape bytes (text and gzip), series per idle and per busy container, OTLP bytes per
//! window, the probes' map fill and the time to the first window.
//! Targets (issue 19), at 1,000 busy containers (plus the 1,000 idle): at most
//! 10 millicores, 64 MiB peak RSS, 15 series per idle container, 3.7 MB of text for
//! 1,000 idle containers (a tenth of the 36.9 MB measured before).
//!
//! `cargo bench -p cgscope --bench scale -- 1000 5000` (busy counts; default both).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cgscope::{
    cgroup::trace,
    sampler::{resolve_root, Sampler, SamplerConfig},
};

#[path = "support/containers.rs"]
mod containers;
#[path = "support/floor.rs"]
mod floor;
#[path = "support/process.rs"]
mod process;

use containers::Containers;
use floor::{thread_cpu, Floor};
use process::{cgroup_path, cpu_seconds, get, status_mib};

const WINDOW: Duration = Duration::from_secs(10);
/// Steady windows measured after the first (which pays for attaching).
const MEASURED_WINDOWS: u32 = 3;
const IDLE: usize = 1_000;

/// An OTLP/HTTP endpoint that answers every export with success and records each
/// request body's size as sent.
fn otlp_sink() -> (String, Arc<Mutex<Vec<usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = serve_exports(stream, &seen);
            });
        }
    });
    (format!("http://{addr}"), bodies)
}

/// Requests on one connection until it closes: headers, a Content-Length or chunked
/// body, and an empty 200 (an empty ExportMetricsServiceResponse).
fn serve_exports(stream: TcpStream, seen: &Mutex<Vec<usize>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let (mut length, mut chunked) = (0usize, false);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
        }
        let size = if chunked {
            let mut total = 0;
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk)?;
                total += n;
                if n == 0 {
                    break total;
                }
            }
        } else {
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            length
        };
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(size);
        writer.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )?;
    }
}

/// Series and text bytes of a text exposition, by cgroup path (node series under "").
fn series_by_cgroup(text: &str) -> BTreeMap<String, (usize, usize)> {
    let mut by = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let entry = by
            .entry(cgroup_path(line).unwrap_or("").to_owned())
            .or_insert((0, 0));
        entry.0 += 1;
        entry.1 += line.len() + 1;
    }
    by
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Of the containers whose path starts with `prefix` (one with no series counts as
/// zero): series per container, median and max, and text bytes per container, median.
struct PerContainer {
    series: f64,
    max_series: usize,
    bytes: f64,
}

fn per_container(
    by: &BTreeMap<String, (usize, usize)>,
    paths: &[String],
    prefix: &str,
) -> PerContainer {
    let counts: Vec<(usize, usize)> = paths
        .iter()
        .filter(|p| p.starts_with(prefix))
        .map(|p| by.get(p).copied().unwrap_or((0, 0)))
        .collect();
    PerContainer {
        series: median(counts.iter().map(|c| c.0 as f64).collect()),
        max_series: counts.iter().map(|c| c.0).max().unwrap_or(0),
        bytes: median(counts.iter().map(|c| c.1 as f64).collect()),
    }
}

/// The agent's scan alone, and the floor under it, in millicores at 10 s windows:
/// a sampler in this process (defaults, probes attached) scans the same tree, its
/// file reads recorded and replayed bare (`support/floor.rs`). Medians of rounds.
struct ScanCost {
    scan_mcpu: f64,
    floor_mcpu: f64,
    files: usize,
}

fn scan_cost(root: &Path) -> ScanCost {
    const ROUNDS: usize = 3;
    let config = SamplerConfig {
        cgroup_root: Some(root.to_path_buf()),
        ..SamplerConfig::default()
    };
    let mut sampler = Sampler::start(&config).expect("sampler");
    sampler.sample(None); // the first window pays for attaching
    let (_, calls) = trace::record(|| sampler.sample(None));
    let mut floor = Floor::new(&calls);
    floor.replay(); // as warm as the scan's caches
    let cpu = || {
        let (u, s) = thread_cpu();
        (u + s).as_secs_f64()
    };
    let mcpu = |seconds: f64| seconds / WINDOW.as_secs_f64() * 1e3;
    let (mut scans, mut floors) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t0 = cpu();
        drop(sampler.sample(None));
        let t1 = cpu();
        floor.replay();
        scans.push(mcpu(t1 - t0));
        floors.push(mcpu(cpu() - t1));
    }
    ScanCost {
        scan_mcpu: median(scans),
        floor_mcpu: median(floors),
        files: floor.files(),
    }
}

struct Figures {
    first_window: Duration,
    process_mcpu: f64,
    probe_mcpu: f64,
    scan: ScanCost,
    rss_mib: f64,
    peak_mib: f64,
    text_bytes: usize,
    gzip_bytes: usize,
    series: usize,
    idle: PerContainer,
    busy: PerContainer,
    otlp_bytes: f64,
    maps: String,
    dropped: String,
    overflow: f64,
}

fn measure(root: &Path, busy: usize) -> Figures {
    let mut containers = Containers::default();
    let started = Instant::now();
    containers
        .add(root, "cgscope-idle.slice", IDLE, containers::sleep_forever)
        .and_then(|()| {
            containers.add(
                root,
                "cgscope-busy.slice",
                busy,
                containers::wake_every_second,
            )
        })
        .expect("container cgroups and their tasks (run as root, on cgroup v2)");
    eprintln!(
        "scale: {} containers and their tasks created in {:.1?}",
        IDLE + busy,
        started.elapsed()
    );
    let (endpoint, exports) = otlp_sink();
    let listen = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let spawned = Instant::now();
    let agent = Command::new(env!("CARGO_BIN_EXE_cgscope"))
        .args([
            "run",
            "--interval",
            "10s",
            "--listen",
            &listen,
            "--cgroup-root",
        ])
        .arg(root)
        .env("OTEL_METRICS_EXPORTER", "otlp")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cgscope");
    let agent = Agent(agent);
    let pid = agent.0.id();
    while get(&listen, "/readyz", false).0 != 200 {
        assert!(
            spawned.elapsed() < Duration::from_secs(300),
            "no window after 300 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let first_window = spawned.elapsed();
    // A second into the next window: the first (attach) window is behind us.
    let next = |n: u32| first_window + WINDOW * n + Duration::from_secs(1);
    std::thread::sleep(next(1).saturating_sub(spawned.elapsed()));
    get(&listen, "/metrics", true);
    let (cpu_before, at_before) = (cpu_seconds(pid), Instant::now());
    let exports_before = exports.lock().unwrap_or_else(|e| e.into_inner()).len();
    let mut gzip_bytes = 0;
    for n in 2..=1 + MEASURED_WINDOWS {
        std::thread::sleep(next(n).saturating_sub(spawned.elapsed()));
        gzip_bytes = get(&listen, "/metrics", true).1.len();
    }
    let process_mcpu = (cpu_seconds(pid) - cpu_before) / at_before.elapsed().as_secs_f64() * 1e3;
    let (rss_mib, peak_mib) = (status_mib(pid, "VmRSS"), status_mib(pid, "VmHWM"));
    let (status, text) = get(&listen, "/metrics", false);
    assert_eq!(status, 200, "/metrics");
    let text = String::from_utf8_lossy(&text).into_owned();
    let series = series_by_cgroup(&text);
    let paths = containers.paths(root);
    // Points of metrics that reached --max-series, folded into overflow series.
    let overflow: f64 = text
        .lines()
        .filter(|l| l.starts_with("cgscope_series_overflow"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let (_, snapshot) = get(&listen, "/api/v1/snapshot", false);
    let snapshot: serde_json::Value = serde_json::from_slice(&snapshot).expect("snapshot JSON");
    let window = snapshot["window_seconds"].as_f64().unwrap_or(f64::NAN);
    let probe_seconds: f64 = snapshot["cost"]["probe_seconds"]
        .as_object()
        .map_or(f64::NAN, |m| m.values().filter_map(|v| v.as_f64()).sum());
    let (mut maps, mut dropped) = (Vec::new(), Vec::new());
    for p in snapshot["probes"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("?");
        if let Some(n) = p["map_entries"].as_u64() {
            maps.push(format!("{name} {n}"));
        }
        for (what, n) in p["dropped"].as_object().into_iter().flatten() {
            if n.as_u64().unwrap_or(0) > 0 {
                dropped.push(format!("{name}.{what} {n}"));
            }
        }
    }
    let bodies = exports.lock().unwrap_or_else(|e| e.into_inner());
    let otlp_bytes = median(bodies[exports_before..].iter().map(|&b| b as f64).collect());
    drop(bodies);
    drop(agent);
    Figures {
        first_window,
        process_mcpu,
        scan: scan_cost(root),
        probe_mcpu: probe_seconds / window * 1e3,
        rss_mib,
        peak_mib,
        text_bytes: text.len(),
        gzip_bytes,
        series: series.values().map(|v| v.0).sum(),
        idle: per_container(&series, &paths, "/cgscope-idle.slice/"),
        busy: per_container(&series, &paths, "/cgscope-busy.slice/"),
        otlp_bytes,
        overflow,
        maps: maps.join(", "),
        dropped: if dropped.is_empty() {
            "none".into()
        } else {
            dropped.join(", ")
        },
    }
}

/// The agent: SIGTERM to its PID and reaped when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signals only the agent this bench started.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn main() {
    let (_, root) = resolve_root(None).expect("cgroup v2");
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![1_000, 5_000]
    } else {
        counts
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "scale: cgscope run (defaults, 10 s windows, OTLP/HTTP + a gzip scrape per window) on {}, kernel {}, {} CPUs",
        root.display(),
        kernel.trim(),
        std::thread::available_parallelism().map_or(1, usize::from),
    );
    let mut all = Vec::new();
    for busy in counts {
        all.push((busy, measure(&root, busy)));
    }
    println!(
        "\n{:>6} {:>6} {:>8} {:>7} {:>7} {:>6} {:>6} {:>9} {:>8} {:>7} {:>13} {:>13} {:>9}",
        "busy",
        "idle",
        "1st win",
        "mCPU",
        "probes",
        "RSS",
        "peak",
        "scrape",
        "gzip",
        "series",
        "idle ser/B",
        "busy ser/B",
        "OTLP/win"
    );
    for (busy, f) in &all {
        println!(
            "{:>6} {:>6} {:>7.1}s {:>7.1} {:>7.1} {:>5.0}M {:>5.0}M {:>8.0}K {:>7.0}K {:>7} {:>3.0}({:>2})/{:>5.0} {:>3.0}({:>2})/{:>5.0} {:>8.0}K",
            busy,
            IDLE,
            f.first_window.as_secs_f64(),
            f.process_mcpu,
            f.probe_mcpu,
            f.rss_mib,
            f.peak_mib,
            f.text_bytes as f64 / 1e3,
            f.gzip_bytes as f64 / 1e3,
            f.series,
            f.idle.series,
            f.idle.max_series,
            f.idle.bytes,
            f.busy.series,
            f.busy.max_series,
            f.busy.bytes,
            f.otlp_bytes / 1e3,
        );
        println!(
            "       map entries: {}; dropped: {}; points over --max-series: {}",
            f.maps, f.dropped, f.overflow
        );
        println!(
            "       the scan alone {:.1} mCPU; its floor {:.1} mCPU ({} files read per window, \
             replayed bare): {:.2}x",
            f.scan.scan_mcpu,
            f.scan.floor_mcpu,
            f.scan.files,
            f.scan.scan_mcpu / f.scan.floor_mcpu
        );
    }
    println!(
        "\nmCPU: the agent's process (user+system, all threads) over {MEASURED_WINDOWS} windows with a \
         scrape each; probes: its programs' kernel run time (last window). RSS: steady (VmRSS) \
         and peak (VmHWM), MiB. ser/B: series per container, median (max) / text bytes per \
         container, median. scrape: the whole text exposition; OTLP/win: one export's body."
    );
    let Some((_, f)) = all.iter().find(|(busy, _)| *busy == 1_000) else {
        return;
    };
    let cpu = f.process_mcpu + f.probe_mcpu;
    // What 1,000 idle containers add to a scrape (the 36.9 MB measured before was
    // 1,000 idle containers).
    let idle_scrape = f.idle.bytes * 1_000.0 / 1e6;
    println!("targets at 1,000 busy containers (+{IDLE} idle):");
    println!(
        "  CPU {cpu:.1} mCPU (process + probes) <= 10: {} (reading the files alone costs \
         {:.1}: the floor)",
        verdict(cpu <= 10.0),
        f.scan.floor_mcpu
    );
    println!(
        "  peak RSS {:.0} MiB <= 64: {}",
        f.peak_mib,
        verdict(f.peak_mib <= 64.0)
    );
    println!(
        "  series per idle container (max) {} <= 15: {}",
        f.idle.max_series,
        verdict(f.idle.max_series <= 15)
    );
    println!(
        "  scrape of 1,000 idle containers {idle_scrape:.2} MB <= 3.7: {}",
        verdict(idle_scrape <= 3.7)
    );
}
