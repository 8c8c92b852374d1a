//! Chaos: `cgscope run` for a while (`CGSCOPE_CHAOS_SECONDS`, 60 by default) while
//! container cgroups come and go with processes that exit mid-scan, API clients
//! hammer it, hold idle connections and send their headers a byte at a time, the
//! collector goes down and comes back, and the descriptor limit is tight. No panic,
//! no impossible value in any window seen or in the exported totals (two loops
//! pinned to one CPU never get more than that CPU; their totals never exceed their
//! own `cpu.stat`), RSS bounded, and every read failure and failed export counted.

mod common;
#[path = "export/peers.rs"]
#[allow(dead_code)]
mod peers;

use std::{
    io::Write,
    net::TcpStream,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::TestTree;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cgscope");

fn rotel_installed() -> bool {
    Command::new("python3")
        .args(["-c", "import rotel"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `body` in a thread until `stop` is set.
fn until(stop: &Arc<AtomicBool>, body: impl Fn() + Send + 'static) -> std::thread::JoinHandle<()> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            body();
        }
    })
}

/// Every way a client can load the API, each in its own thread.
fn flood(addr: &str, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let a = addr.to_owned();
    let hammer = until(stop, move || {
        for path in [
            "/api/v1/snapshot",
            "/metrics",
            "/api/v1/containers",
            "/api/v1/containers/0123456789ab",
            "/api/v1/containers/%ff%00%1b",
            "/healthz",
        ] {
            let _ = common::http_get(&a, path);
        }
    });
    let a = addr.to_owned();
    let idle = until(stop, move || {
        let held: Vec<TcpStream> = (0..80)
            .filter_map(|_| TcpStream::connect(&a).ok())
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        drop(held);
    });
    let a = addr.to_owned();
    let slow = until(stop, move || {
        let mut held: Vec<TcpStream> = (0..10)
            .filter_map(|_| TcpStream::connect(&a).ok())
            .collect();
        for byte in b"GET /metrics HTTP/1.1\r\nhost: x\r\n"
            .iter()
            .cycle()
            .take(20)
        {
            held.retain_mut(|s| s.write_all(&[*byte]).is_ok());
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    vec![hammer, idle, slow]
}

/// Container cgroups that appear with a short-lived process and vanish.
fn churn(top: std::path::PathBuf, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let counter = std::sync::atomic::AtomicU64::new(0);
    until(stop, move || {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let pod = top.join(format!(
            "kubepods-pod{n:08x}_0000_4000_8000_000000000000.slice"
        ));
        let dir = pod.join(format!("cri-containerd-{:064x}.scope", n + 0xc4a0));
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        if let Ok(mut child) = Command::new("sleep").arg("0.3").spawn() {
            let _ = std::fs::write(dir.join("cgroup.procs"), child.id().to_string());
            let _ = child.wait();
        }
        std::thread::sleep(Duration::from_millis(100));
        common::remove_cgroup_dir(&dir);
        common::remove_cgroup_dir(&pod);
    })
}

#[test]
fn churn_floods_an_outage_and_tight_descriptors_leave_every_number_true() {
    require_root_and_cgroup_v2!();
    let seconds: u64 = std::env::var("CGSCOPE_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut tree = TestTree::create("chaos");
    let pod = "kubepods-podc4a05000_0000_4000_8000_000000000000.slice";
    let ids = [format!("{:064x}", 0xc4a1u64), format!("{:064x}", 0xc4a2u64)];
    let dirs = tree.spinning_pod(pod, &ids);
    tree.mkdir("churn");
    let churned = tree.top.dir.join("churn");

    let collector = rotel_installed().then(|| (common::free_port(), common::free_port()));
    if collector.is_none() {
        eprintln!("collector outage: skipped: rotel is not installed in this environment");
    }
    let mut rotel = collector.map(|(grpc, http)| peers::rotel(grpc, http));
    let addr = format!("127.0.0.1:{}", common::free_port());
    let log = std::env::temp_dir().join(format!("cgscope-chaos-{}.log", std::process::id()));
    let mut agent = Command::new(BIN);
    agent
        .args(["run", "--interval", "1s", "--listen", &addr])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    if let Some((grpc, _)) = collector {
        agent
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{grpc}"),
            )
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .env("OTEL_EXPORTER_OTLP_TIMEOUT", "3000");
    }
    let before: f64 = dirs.iter().map(|d| common::cpu_seconds(d)).sum();
    let t0 = Instant::now();
    let agent = common::RunningAgent(Some(agent.spawn().expect("start the agent")));
    let pid = agent.pid();
    while !matches!(common::http_get(&addr, "/readyz"), Ok((200, _))) {
        assert!(t0.elapsed() < Duration::from_secs(90), "not ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let attach = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let rss_start = common::rss_kib(pid);
    let fds = common::open_descriptors(pid);
    common::set_descriptor_limit(
        pid,
        libc::rlimit {
            rlim_cur: fds + 48,
            rlim_max: fds + 48,
        },
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = flood(&addr, &stop);
    threads.push(churn(churned.clone(), &stop));

    let (mut windows, mut last_seen, mut rss_max) = (0u32, 0.0f64, 0u64);
    let (mut failures_down, mut sent_back) = (None, None);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        let phase = started.elapsed().as_secs() * 3 / seconds;
        if phase == 1 && rotel.is_some() {
            rotel = None; // the collector goes away
        }
        if phase == 2 && rotel.is_none() && failures_down.is_none() {
            if let (Some((grpc, http)), Ok((200, m))) =
                (collector, common::http_get(&addr, "/metrics"))
            {
                failures_down = Some(
                    common::metric_sum(&m, "cgscope_export_failures_total", "").unwrap_or(0.0),
                );
                sent_back =
                    Some(common::metric_sum(&m, "cgscope_export_sent_total", "").unwrap_or(0.0));
                rotel = Some(peers::rotel(grpc, http));
            }
        }
        rss_max = rss_max.max(common::rss_kib(pid));
        if let Ok((200, body)) = common::http_get(&addr, "/api/v1/snapshot") {
            let s: Value = serde_json::from_str(&body).expect("snapshot JSON");
            let at = s["timestamp_seconds"].as_f64().unwrap_or(0.0);
            if at > last_seen {
                last_seen = at;
                windows += 1;
                check_window(&s, &ids);
            }
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    std::thread::sleep(Duration::from_secs(3));
    let (status, metrics) = common::http_get(&addr, "/metrics").expect("/metrics after");
    let after: f64 = dirs.iter().map(|d| common::cpu_seconds(d)).sum();
    let rss_end = common::rss_kib(pid);
    let (_, snapshot) = common::http_get(&addr, "/api/v1/snapshot").expect("snapshot after");
    let (exit, _) = agent.stop();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);

    let errors = common::metric_sum(&metrics, "cgscope_scan_errors_total", "").unwrap_or(0.0);
    eprintln!(
        "{seconds} s: {windows} windows seen, {errors} read failures counted, RSS {rss_start} -> \
         max {rss_max} -> {rss_end} KiB, CPU exported vs cpu.stat below"
    );
    assert!(
        exit.success() && !stderr.contains("panicked"),
        "{exit:?}\n{stderr}"
    );
    assert_eq!(status, 200);
    assert_eq!(
        common::metric_sum(&metrics, "cgscope_scan_errors_total", "\"impossible\""),
        None
    );
    assert_eq!(
        common::metric_sum(&metrics, "cgscope_export_refused_total", ""),
        None
    );
    // Sampling went on under the load: windows kept coming.
    let s: Value = serde_json::from_str(&snapshot).expect("JSON");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let age = now - s["timestamp_seconds"].as_f64().unwrap_or(0.0);
    // Stalled as `/healthz` defines it: no window for three windows, at least 30 s.
    assert!(
        age < 30.0,
        "the newest window is {age:.1} s old: sampling stalled"
    );
    // The API answered through the flood (slowly: idle clients hold connections).
    assert!(windows >= 3, "only {windows} windows seen in {seconds} s");
    // Totals: within what the kernel counted, and not missing more than the
    // time before the first read and after the last.
    let exported: f64 = ids
        .iter()
        .map(|id| {
            common::metric_sum(&metrics, "container_cpu_time_seconds_total", id).unwrap_or(0.0)
        })
        .sum();
    let truth = after - before;
    eprintln!("exported {exported:.2} s, cpu.stat {truth:.2} s, attach {attach:.1} s");
    assert!(
        exported <= truth + 0.01,
        "exported {exported:.2} > cpu.stat {truth:.2}"
    );
    assert!(
        exported >= truth - attach - 6.0,
        "exported {exported:.2} of {truth:.2}"
    );
    assert!(
        rss_end <= rss_start + rss_start / 2 + 16 * 1024,
        "RSS grew from {rss_start} to {rss_end} KiB"
    );
    if let (Some(failed), Some(sent)) = (failures_down, sent_back) {
        let failures =
            common::metric_sum(&metrics, "cgscope_export_failures_total", "").unwrap_or(0.0);
        let sent_now = common::metric_sum(&metrics, "cgscope_export_sent_total", "").unwrap_or(0.0);
        assert!(failed > 0.0, "the outage's failed exports were not counted");
        assert!(failures >= failed);
        assert!(
            sent_now > sent,
            "nothing delivered once the collector was back ({failed} failures during the \
             outage, {failures} in all; {sent} sent before, {sent_now} after)\n{}",
            stderr.lines().rev().take(15).collect::<Vec<_>>().join("\n")
        );
    }
    drop(rotel);
}

/// One window as the API served it: the pinned loops' CPU within one CPU, no
/// cgroup's CPU beyond the host's, no unreadable cgroup left without a reason.
fn check_window(s: &Value, pinned: &[String]) {
    let window = s["window_seconds"].as_f64().expect("window");
    let cpus = s["host"]["cpu"]["cpus"].as_f64().unwrap_or(0.0);
    let mut on_cpu0 = 0.0;
    let mut span = window;
    for c in s["cgroups"].as_array().expect("cgroups") {
        let my_span = c["stats_window_seconds"].as_f64().unwrap_or(window);
        let usage = c["cpu"]["usage_seconds"].as_f64().unwrap_or(0.0);
        if cpus > 0.0 {
            assert!(
                usage <= cpus * (my_span * 1.05 + 0.1),
                "{usage} s of CPU in {my_span} s on {cpus} CPUs: {}",
                c["path"]
            );
        }
        let path = c["path"].as_str().unwrap_or("");
        if pinned.iter().any(|id| path.contains(id.as_str())) {
            on_cpu0 += usage;
            span = span.max(my_span);
        }
        if !c["unreadable"].is_null() {
            assert!(c["unreadable"]["reason"].is_string(), "{c}");
            assert_ne!(c["unreadable"]["reason"], "impossible", "{c}");
        }
    }
    assert!(
        on_cpu0 <= span * 1.05 + 0.05,
        "two loops pinned to one CPU used {on_cpu0:.3} s in {span:.3} s"
    );
}
