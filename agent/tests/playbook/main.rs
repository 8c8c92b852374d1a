//! Playbooks against the situations they are for, built with real cgroups and
//! workloads: the right finding comes first, on the right cgroup, and an idle control
//! cgroup gets no finding.

#[path = "../common/mod.rs"]
mod common;
mod scenarios;

use std::process::Command;

use scenarios::Scenario;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cgscope");

/// One scenario at a time: each sees the whole node, other scenarios included.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["playbook", "run"])
        .args(args)
        .args(["--duration", "3s", "--format", "json"])
        .output()
        .expect("run cgscope");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

fn findings_on<'a>(report: &'a Value, path: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["path"] == path)
        .collect()
}

/// Runs `playbook` against the scenario `name`: the first finding is the scenario's
/// measure on its culprit, and its idle control has none. `None` (after saying why)
/// where the scenario cannot be built here.
fn against(playbook: &str, name: &str) -> Option<(Scenario, Value)> {
    let scenario = match scenarios::build(name) {
        Ok(s) => s,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return None;
        }
    };
    let mut args = vec![playbook];
    if let Some(target) = &scenario.target {
        args.extend(["--target", target]);
    }
    let report = run(&args);
    let first = &report["findings"][0];
    assert_eq!(first["path"], scenario.culprit.as_str(), "{report:#}");
    assert_eq!(first["measure"], scenario.measure, "{report:#}");
    assert!(
        findings_on(&report, &scenario.control).is_empty(),
        "false alarm on the idle control: {report:#}"
    );
    Some((scenario, report))
}

#[test]
fn playbook_cpu_contention_finds_the_noisy_neighbour() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let Some((s, report)) = against("cpu-contention", "cpu-contention") else {
        return;
    };
    let first = &report["findings"][0];
    assert_eq!(first["severity"], "critical");
    let noisy = format!("{}/noisy", s.tree.top.path);
    assert_eq!(first["neighbours"][0]["path"], noisy.as_str(), "{report:#}");
    assert!(first["neighbours"][0]["cpu_cores"].as_f64().unwrap_or(0.0) > 0.7);
    assert_eq!(report["examined"], 3);
}

#[test]
fn playbook_triage_ranks_the_victim_first() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let Some((_, report)) = against("triage", "cpu-contention") else {
        return;
    };
    let first = &report["findings"][0];
    assert_eq!(first["severity"], "critical");
    assert!(first["next"]
        .as_str()
        .unwrap_or("")
        .starts_with("cgscope playbook run cpu-contention"));
}

#[test]
fn playbook_memory_pressure_reports_the_oom_kills() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let Some((_, report)) = against("memory-pressure", "memory-pressure") else {
        return;
    };
    let first = &report["findings"][0];
    assert_eq!(first["severity"], "critical");
    assert!(first["value"].as_f64().unwrap_or(0.0) >= 1.0);
}

#[test]
fn playbook_cpu_throttling_flags_the_limited_container() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let Some((_, report)) = against("cpu-throttling", "cpu-throttling") else {
        return;
    };
    let first = &report["findings"][0];
    assert_eq!(first["severity"], "critical");
    assert!(first["value"].as_f64().unwrap_or(0.0) > 0.9, "{report:#}");
}

#[test]
fn playbook_disk_io_finds_the_reader() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let Some((s, report)) = against("disk-io", "disk-io") else {
        return;
    };
    let first = &report["findings"][0];
    assert_eq!(first["severity"], "critical", "{report:#}");
    let on = first["on"].as_str().unwrap_or("");
    if s.measure == "io.iops_of_limit" {
        // 50 reads per second allowed, fio asks for 200 (5 ms each).
        assert_eq!(on, "nullb0 read", "{report:#}");
        assert!(first["value"].as_f64().unwrap_or(0.0) >= 0.95, "{report:#}");
    }
    // The IO costs the reader: its tasks stall on IO most of the window.
    assert!(
        findings_on(&report, &s.culprit)
            .iter()
            .any(|f| f["measure"] == "io.pressure"),
        "{report:#}"
    );
    // The probe saw its requests.
    let no_data = report["no_data"].to_string();
    assert!(!no_data.contains("io.latency_p99"), "{report:#}");
}

#[test]
fn playbook_network_latency_finds_the_queue() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let Some((_, report)) = against("network-latency", "network-latency") else {
        return;
    };
    let first = &report["findings"][0];
    assert_eq!(first["severity"], "critical", "{report:#}");
    // 1 Mbit/s with up to a second of queue: the RTT is the queue, far above the
    // veth's tens of microseconds.
    assert!(first["value"].as_f64().unwrap_or(0.0) >= 0.1, "{report:#}");
}

#[test]
fn playbook_host_finds_the_pinned_load() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let Some((s, report)) = against("host", "host") else {
        return;
    };
    let first = &report["findings"][0];
    assert_eq!(first["on"], "cpu0", "{report:#}");
    assert_eq!(
        first["neighbours"][0]["path"],
        s.tree.top.path.as_str(),
        "the busiest top-level cgroup: {report:#}"
    );
    let usage = report["readings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["path"] == s.tree.top.path.as_str() && r["measure"] == "cpu.usage_of_node");
    assert!(usage.is_some(), "{report:#}");
}

#[test]
fn playbook_throughput_ceiling_ranks_the_nearest_ceiling_first() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let Some((s, report)) = against("throughput-ceiling", "throughput-ceiling") else {
        return;
    };
    let first = &report["findings"][0];
    assert_eq!(first["severity"], "critical", "{report:#}");
    let readings = report["readings"].as_array().expect("readings");
    assert_eq!(
        readings[0]["measure"], s.measure,
        "highest first: {report:#}"
    );
    // The other resources' headroom is reported, the control's too.
    assert!(readings.iter().any(|r| r["path"] == s.control.as_str()));
    if s.measure == "cpu.usage_of_limit" {
        let memory = readings
            .iter()
            .find(|r| r["path"] == s.culprit.as_str() && r["measure"] == "memory.usage_of_limit")
            .unwrap_or_else(|| panic!("memory reading: {report:#}"));
        assert!(
            memory["headroom"].as_f64().unwrap_or(0.0) > 0.8,
            "{report:#}"
        );
    }
}

/// Flags the lab's signals set; it polls.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn stop(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `cargo xtask lab <scenario>`: builds the scenario `CGSCOPE_LAB` names and holds it
/// until SIGINT or SIGTERM, then tears it down. Without a name, lists them.
#[test]
#[ignore = "run by cargo xtask lab"]
fn lab() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let name = std::env::var("CGSCOPE_LAB").unwrap_or_default();
    if name.is_empty() {
        println!("scenarios:");
        for (name, _) in scenarios::ALL {
            println!("  {name}");
        }
        return;
    }
    require_root_and_cgroup_v2!();
    let handler = SigAction::new(SigHandler::Handler(stop), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &handler) }.expect("signal handler");
    }
    let scenario = match scenarios::build(&name) {
        Ok(s) => s,
        Err(reason) => panic!("scenario {name} cannot run here: {reason}"),
    };
    let target = scenario
        .target
        .as_deref()
        .map(|t| format!(" --target {t}"))
        .unwrap_or_default();
    println!("scenario {name} is running:");
    println!(
        "  culprit: {} (expect {} first)",
        scenario.culprit, scenario.measure
    );
    println!("  control: {} (expect no finding)", scenario.control);
    println!("  try:     cgscope playbook run {name}{target} --duration 10s");
    println!("           cgscope top");
    println!("Ctrl-C tears it down.");
    while !STOP.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(scenario);
    println!("scenario {name} torn down");
}

#[test]
fn playbook_cli_lists_explains_and_refuses_bad_input() {
    let out = Command::new(BIN)
        .args(["playbook", "list"])
        .output()
        .expect("list");
    let list = String::from_utf8_lossy(&out.stdout);
    for (name, _) in scenarios::ALL {
        assert!(list.contains(name), "{name} missing from {list}");
    }
    let out = Command::new(BIN)
        .args(["playbook", "explain", "cpu-throttling"])
        .output()
        .expect("explain");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("# cpu-throttling"));
    let out = Command::new(BIN)
        .args(["playbook", "explain", "no-such"])
        .output()
        .expect("explain");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cgscope playbook list"));
}
