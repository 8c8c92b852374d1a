//! Faults an operator meets: the agent runs out of descriptors (its limit lowered
//! below what it holds) while clients hold idle connections to its API. Its reads
//! fail for a few windows; no cgroup may be reported removed, and no number it
//! exports afterwards may exceed what the kernel counted (the cgroups' own
//! `cpu.stat`, read before and after, is the ground truth). The API's own share of
//! descriptors is bounded: `chaos.rs` floods it under a tight limit.

mod common;

use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::TestTree;

const BIN: &str = env!("CARGO_BIN_EXE_cgscope");

fn wait_ready(addr: &str, timeout: Duration) {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if matches!(common::http_get(addr, "/readyz"), Ok((200, _))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the agent was not ready within {timeout:?}");
}

#[test]
fn out_of_descriptors_is_not_a_removal_and_no_number_exceeds_the_kernels() {
    require_root_and_cgroup_v2!();
    let mut tree = TestTree::create("faults");
    // Two containers whose busy loops share CPU 0: together at most one CPU.
    let pod = "kubepods-podfa017000_0000_4000_8000_000000000000.slice";
    let ids = [format!("{:064x}", 0xfa01u64), format!("{:064x}", 0xfa02u64)];
    let dirs = tree.spinning_pod(pod, &ids);
    // CPU they used before the agent started: counted again only by a bug.
    std::thread::sleep(Duration::from_secs(3));

    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let before: f64 = dirs.iter().map(|d| common::cpu_seconds(d)).sum();
    let t0 = Instant::now();
    let agent = common::RunningAgent(Some(
        Command::new(BIN)
            .args(["run", "--interval", "1s", "--listen", &addr])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent"),
    ));
    let pid = agent.pid();
    wait_ready(&addr, Duration::from_secs(60));
    let attach_seconds = t0.elapsed().as_secs_f64();

    // Descriptors run out (none to spare), and clients connect and say nothing.
    std::thread::sleep(Duration::from_millis(1500));
    let base = common::open_descriptors(pid);
    // The soft limit only: raising a hard limit again needs CAP_SYS_RESOURCE.
    let hard = common::descriptor_limit(pid).rlim_max;
    let old = common::set_descriptor_limit(
        pid,
        libc::rlimit {
            rlim_cur: base,
            rlim_max: hard,
        },
    );
    let idle: Vec<TcpStream> = (0..60)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(3500));
    drop(idle);
    common::set_descriptor_limit(pid, old);

    // Recovered: the windows after it are read whole.
    std::thread::sleep(Duration::from_secs(4));
    let started = Instant::now();
    let metrics = loop {
        match common::http_get(&addr, "/metrics") {
            Ok((200, body)) => break body,
            _ if started.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(300))
            }
            other => panic!("/metrics after the fault: {other:?}"),
        }
    };
    let (status, snapshot) = common::http_get(&addr, "/api/v1/snapshot").expect("snapshot");
    let after: f64 = dirs.iter().map(|d| common::cpu_seconds(d)).sum();
    let (exit, stderr) = agent.stop();
    assert!(
        exit.success() && !stderr.contains("panicked"),
        "{exit:?}: {stderr}"
    );

    let reason = |r: &str| common::metric_sum(&metrics, "cgscope_scan_errors_total", r);
    let emfile = reason("\"EMFILE\"").unwrap_or(0.0);
    assert!(
        emfile > 0.0,
        "the fault did not happen (no EMFILE counted): base {base} fds\n{stderr}"
    );
    assert_eq!(
        reason("\"impossible\""),
        None,
        "a broken baseline had to be refused"
    );
    assert_eq!(
        common::metric_sum(&metrics, "cgscope_export_refused_total", ""),
        None,
        "the export store refused a window"
    );

    // Ground truth: the loops used `after - before` seconds while the agent ran; the
    // agent's totals cover less (from its first read, after attaching, to its last
    // window, at most one window and a scrape before `after`), never more.
    let exported = ids
        .iter()
        .map(|id| common::metric_sum(&metrics, "container_cpu_time_seconds_total", id))
        .collect::<Option<Vec<f64>>>()
        .unwrap_or_else(|| panic!("both containers exported:\n{metrics}"))
        .iter()
        .sum::<f64>();
    let truth = after - before;
    eprintln!(
        "{emfile} EMFILE reads; exported {exported:.2} s of CPU, cpu.stat {truth:.2} s \
         (attach {attach_seconds:.1} s)"
    );
    assert!(
        exported <= truth + 0.01,
        "exported {exported:.2} s of CPU, more than the {truth:.2} s cpu.stat counted"
    );
    let unseen = attach_seconds + 2.0 + started.elapsed().as_secs_f64();
    assert!(
        exported >= truth - unseen,
        "exported {exported:.2} s of the {truth:.2} s cpu.stat counted: windows were lost"
    );

    // The latest window: both containers present, read whole, never removed.
    assert_eq!(status, 200);
    let snapshot: serde_json::Value = serde_json::from_str(&snapshot).expect("JSON");
    let cgroups = snapshot["cgroups"].as_array().expect("cgroups");
    for id in &ids {
        let c = cgroups
            .iter()
            .find(|c| c["path"].as_str().is_some_and(|p| p.contains(id.as_str())))
            .unwrap_or_else(|| panic!("container {id} in the latest window"));
        assert_eq!(c["removed"], false);
        assert!(c["unreadable"].is_null(), "{c}");
        let window = snapshot["window_seconds"].as_f64().expect("window");
        let span = c["stats_window_seconds"].as_f64().unwrap_or(window);
        let usage = c["cpu"]["usage_seconds"].as_f64().expect("usage");
        assert!(
            usage <= span * 1.05 + 0.05,
            "{usage} s of CPU in {span} s on one CPU"
        );
    }
}
