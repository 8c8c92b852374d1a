//! Playbooks against the situations they are for, built with real cgroups and
//! workloads: the right finding comes first, on the right cgroup, and an idle control
//! cgroup gets no finding.

mod common;

use std::process::Command;

use common::{TestCgroup, TestTree};
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

/// A victim and a nice -10 neighbour, both busy on CPU 0, and an idle control: the
/// tree and the three paths.
fn contention(name: &str) -> (TestTree, String, String, String) {
    let mut tree = TestTree::create(name);
    let victim = tree.mkdir("victim");
    let noisy = tree.mkdir("noisy");
    let idle = tree.mkdir("idle");
    // One CPU, two busy loops: the neighbour at nice -10 gets ~90% of it.
    let v = tree.spawn("victim", || {}, common::spin);
    let n = tree.spawn("noisy", || {}, common::spin);
    common::pin(v, 0);
    common::pin(n, 0);
    // SAFETY: setpriority on a child this test started.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, n.as_raw() as u32, -10) };
    assert_eq!(rc, 0, "renice the neighbour");
    tree.spawn("idle", || {}, common::sleep_forever);
    (tree, victim, noisy, idle)
}

#[test]
fn playbook_cpu_contention_finds_the_noisy_neighbour() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let (tree, victim, noisy, idle) = contention("contention");
    let report = run(&["cpu-contention", "--target", &tree.top.path]);
    let first = &report["findings"][0];
    assert_eq!(first["path"], victim.as_str(), "{report:#}");
    assert_eq!(first["measure"], "cpu.runq_wait");
    assert_eq!(first["severity"], "critical");
    assert_eq!(first["neighbours"][0]["path"], noisy.as_str(), "{report:#}");
    assert!(first["neighbours"][0]["cpu_cores"].as_f64().unwrap_or(0.0) > 0.7);
    assert!(
        findings_on(&report, &idle).is_empty(),
        "false alarm on the idle control: {report:#}"
    );
    assert_eq!(report["examined"], 3);
}

#[test]
fn playbook_triage_ranks_the_victim_first() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let (tree, victim, _, idle) = contention("triage");
    let report = run(&["triage", "--target", &tree.top.path]);
    let first = &report["findings"][0];
    assert_eq!(first["path"], victim.as_str(), "{report:#}");
    assert_eq!(first["measure"], "cpu.runq_wait");
    assert_eq!(first["severity"], "critical");
    assert!(first["next"]
        .as_str()
        .unwrap_or("")
        .starts_with("cgscope playbook run cpu-contention"));
    assert!(
        findings_on(&report, &idle).is_empty(),
        "false alarm on the idle control: {report:#}"
    );
}

#[test]
fn playbook_memory_pressure_reports_the_oom_kill() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    if let Some(reason) = common::missing_controllers(&["memory"]) {
        eprintln!("skipped: {reason}");
        return;
    }
    const LIMIT: u64 = 64 << 20;
    let mut hog = TestCgroup::create("oom-playbook");
    std::fs::write(hog.dir.join("memory.max"), LIMIT.to_string()).expect("memory.max");
    std::fs::write(hog.dir.join("memory.swap.max"), "0").ok();
    let mut control = TestCgroup::create("oom-control");
    std::fs::write(control.dir.join("memory.max"), LIMIT.to_string()).expect("memory.max");
    control.spawn(None, common::sleep_forever);

    // The kill must fall inside the window: start the run, then the hog.
    let mut child = Command::new(BIN)
        .args([
            "playbook",
            "run",
            "memory-pressure",
            "--duration",
            "4s",
            "--format",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cgscope");
    // Attaching the probes can take seconds (the VMs emulate the CPU): wait for the
    // run to say its window has started.
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("sampling") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).expect("read stderr");
        assert!(n > 0, "cgscope ended before its window started");
    }
    let pid = hog.spawn(None, common::eat_memory);
    assert!(
        hog.wait_exit(pid, std::time::Duration::from_secs(10)),
        "the hog outlived memory.max"
    );
    let out = child.wait_with_output().expect("cgscope");
    assert!(out.status.success(), "cgscope failed: {:?}", out.status);
    let report: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let first = &report["findings"][0];
    assert_eq!(first["path"], hog.path.as_str(), "{report:#}");
    assert_eq!(first["measure"], "memory.oom_kills");
    assert_eq!(first["severity"], "critical");
    assert!(first["value"].as_f64().unwrap_or(0.0) >= 1.0);
    assert!(findings_on(&report, &control.path).is_empty(), "{report:#}");
}

#[test]
fn playbook_cpu_throttling_flags_the_limited_container() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    if let Some(reason) = common::missing_controllers(&["cpu"]) {
        eprintln!("skipped: {reason}");
        return;
    }
    let mut limited = TestCgroup::create("throttled");
    std::fs::write(limited.dir.join("cpu.max"), "20000 100000").expect("cpu.max");
    limited.spawn(None, common::spin);
    let mut control = TestCgroup::create("unthrottled");
    control.spawn(None, common::sleep_forever);

    let report = run(&["cpu-throttling"]);
    let first = &report["findings"][0];
    assert_eq!(first["path"], limited.path.as_str(), "{report:#}");
    assert_eq!(first["measure"], "cpu.throttled_periods");
    assert_eq!(first["severity"], "critical");
    assert!(first["value"].as_f64().unwrap_or(0.0) > 0.9, "{report:#}");
    assert!(findings_on(&report, &control.path).is_empty(), "{report:#}");
}

#[test]
fn playbook_cli_lists_explains_and_refuses_bad_input() {
    let out = Command::new(BIN)
        .args(["playbook", "list"])
        .output()
        .expect("list");
    let list = String::from_utf8_lossy(&out.stdout);
    for name in [
        "triage",
        "cpu-throttling",
        "cpu-contention",
        "memory-pressure",
    ] {
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
