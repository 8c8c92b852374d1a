//! The `cgscope` binary as an SRE runs it: `check`, the `snapshot` JSON contract,
//! `run` with its HTTP API and a clean shutdown, and bad input.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{http_get, serial, TestCgroup};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cgscope");

/// cgscope's probes; each names its programs `<probe>_...`.
const PROBES: [&str; 4] = ["runq", "blockio", "oom", "tcp"];

/// The highest id of a loaded BPF program: programs loaded later have higher ones.
fn highest_program_id() -> u32 {
    aya::programs::loaded_programs()
        .flatten()
        .map(|p| p.id())
        .max()
        .unwrap_or(0)
}

/// `(id, name)` of the loaded programs of any of our probes loaded after the program
/// `since` (from [`highest_program_id`]): programs of other tools that happen to share a
/// name are older, and leave this test alone.
fn our_programs(since: u32) -> Vec<(u32, String)> {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| p.id() > since)
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_owned())))
        .filter(|(_, n)| {
            PROBES
                .iter()
                .any(|probe| n.starts_with(&format!("{probe}_")))
        })
        .collect()
}

/// Our programs loaded after `since` still loaded after `within`: the kernel frees a
/// program after an RCU grace period once its last link and fd are closed, so a
/// detached probe disappears shortly after, and a leaked link keeps it forever.
fn programs_left_after(since: u32, within: Duration) -> Vec<(u32, String)> {
    let deadline = Instant::now() + within;
    loop {
        let left = our_programs(since);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts the keys the `cgscope.snapshot/v1` contract promises.
fn assert_snapshot_contract(snapshot: &Value) {
    assert_eq!(snapshot["schema"], "cgscope.snapshot/v1");
    assert!(snapshot["window_seconds"].as_f64().is_some_and(|w| w > 0.0));
    assert!(snapshot["host"]["kernel"].is_string());
    assert!(["unified", "hybrid"].contains(&snapshot["host"]["cgroup_mode"].as_str().unwrap_or("")));
    let cgroups = snapshot["cgroups"].as_array().expect("cgroups[]");
    assert!(!cgroups.is_empty());
    for c in cgroups {
        assert!(
            c["path"].as_str().is_some_and(|p| p.starts_with('/')),
            "{c}"
        );
        assert!(c["id"].as_u64().is_some_and(|id| id > 0), "{c}");
        assert!(c["cpu"].get("usage_seconds").is_some(), "{c}");
        let runq = &c["cpu"]["runq_latency"];
        for key in [
            "count",
            "sum_seconds",
            "p50_seconds",
            "p99_seconds",
            "max_bucket_seconds",
        ] {
            assert!(runq[key].is_number(), "runq_latency.{key} in {c}");
        }
        let blame = &c["cpu"]["runq_blame"];
        for key in [
            "self",
            "same_pod",
            "other_containers",
            "system",
            "kernel",
            "idle",
            "own_quota",
            "removed",
            "unattributed",
        ] {
            assert!(
                blame["causes"][key].is_number(),
                "runq_blame.causes.{key} in {c}"
            );
        }
        assert!(blame["culprits"].is_array(), "runq_blame.culprits in {c}");
        let h = &runq["histogram"];
        for key in [
            "scale",
            "zero_count",
            "offset",
            "count",
            "sum_seconds",
            "zero_threshold_seconds",
        ] {
            assert!(h[key].is_number(), "histogram.{key} in {c}");
        }
        assert!(h["bucket_counts"].is_array());
    }
}

#[test]
fn check_reports_every_probe_attached() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let before = highest_program_id();
    let out = Command::new(BIN)
        .args(["check", "--format", "json"])
        .output()
        .expect("run check");
    let report: Value = serde_json::from_slice(&out.stdout).expect("check JSON");
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "exit {code:?}: {report}"
    );
    assert_eq!(report["exit_code"].as_i64().map(|c| c as i32), code);
    // Every probe, each attached without an error (the hooks exist on every kernel
    // the tests run on: this host and the VMs).
    let probes = report["probes"].as_array().expect("probes");
    let mut names: Vec<&str> = probes.iter().filter_map(|p| p["name"].as_str()).collect();
    names.sort_unstable();
    let mut want = PROBES;
    want.sort_unstable();
    assert_eq!(names, want, "{report}");
    for probe in probes {
        assert_eq!(
            (&probe["attached"], &probe["error"]),
            (&Value::Bool(true), &Value::Null),
            "{probe}"
        );
    }
    assert!(report["btf"].as_bool().unwrap_or(false));
    // What the probes cost over check's second of watching them: every attached
    // probe has a run time, and the runq programs ran (this process's switches).
    let cost = &report["cost"];
    assert_eq!(cost["budget"].as_f64(), Some(0.01), "{cost}");
    let share = cost["node_share"].as_f64().expect("node_share");
    assert!((0.0..1.0).contains(&share), "{cost}");
    let runq = cost["probe_seconds"]["runq"]
        .as_f64()
        .expect("runq's run time");
    assert!(runq > 0.0, "{cost}");
    let left = programs_left_after(before, Duration::from_secs(5));
    assert!(left.is_empty(), "check left programs loaded: {left:?}");
    // Under a budget nothing meets, check says so.
    let out = Command::new(BIN)
        .args(["check", "--cost-budget", "0.0000001", "--probes", "runq"])
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("probe cost"))
        .unwrap_or_else(|| panic!("no probe cost line: {text}"));
    assert!(
        line.contains("OVER the budget") && line.contains("runq"),
        "{line}"
    );
}

#[test]
fn snapshot_json_keeps_the_v1_contract() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let mut cg = TestCgroup::create("snap");
    cg.spawn(Some(0), common::spin);
    cg.spawn(Some(0), common::spin);
    let out = Command::new(BIN)
        .args([
            "snapshot",
            "--duration",
            "1s",
            "--format",
            "json",
            "--cgroup",
            &cg.path,
        ])
        .output()
        .expect("run snapshot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapshot: Value = serde_json::from_slice(&out.stdout).expect("snapshot JSON");
    assert_snapshot_contract(&snapshot);
    let cgroups = snapshot["cgroups"].as_array().expect("cgroups");
    assert_eq!(cgroups.len(), 1, "--cgroup filters: {cgroups:?}");
    assert_eq!(cgroups[0]["path"], cg.path.as_str());
    assert_eq!(cgroups[0]["id"].as_u64(), Some(cg.id()));
    assert!(cgroups[0]["cpu"]["runq_latency"]["count"]
        .as_u64()
        .is_some_and(|n| n > 0));
}

#[test]
fn run_serves_the_api_and_detaches_on_sigterm() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let addr = "127.0.0.1:19464";
    let before = highest_program_id();
    let agent = Command::new(BIN)
        .args(["run", "--interval", "1s", "--listen", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent");

    // The first window follows loading the probes: tens of seconds in a TCG guest.
    let started = Instant::now();
    let snapshot = loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no snapshot served within 120 s"
        );
        if let Ok((200, body)) = http_get(addr, "/api/v1/snapshot") {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_snapshot_contract(&serde_json::from_str(&snapshot).expect("API JSON"));
    assert_eq!(http_get(addr, "/healthz").expect("healthz").0, 200);
    // Every probe's programs are loaded while it runs: the check after SIGTERM
    // below covers them all.
    let running = our_programs(before);
    for probe in PROBES {
        assert!(
            running
                .iter()
                .any(|(_, n)| n.starts_with(&format!("{probe}_"))),
            "no {probe} program loaded while the agent runs: {running:?}"
        );
    }

    let (status, stderr) = common::stop_agent(agent);
    assert!(status.success(), "exit {status:?}: {stderr}");
    let left = programs_left_after(before, Duration::from_secs(5));
    assert!(left.is_empty(), "programs left after shutdown: {left:?}");
}

/// Over its cost budget (here one no agent can stay under) for three windows, the
/// agent says so in the snapshot, in `/healthz` (still 200) and in a metric, naming
/// the probe whose programs ran longest in the window, which its own `run_stats`
/// confirm.
#[test]
fn over_its_cost_budget_the_agent_says_so_and_names_the_costliest_probe() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let addr = "127.0.0.1:19465";
    let agent = Command::new(BIN)
        .args(["run", "--interval", "1s", "--listen", addr])
        .args(["--cost-budget", "0.0001"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent");
    let started = Instant::now();
    let snapshot: Value = loop {
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "not over budget within 150 s"
        );
        if let Ok((200, body)) = http_get(addr, "/api/v1/snapshot") {
            let snapshot: Value = serde_json::from_str(&body).expect("API JSON");
            if snapshot["cost"]["over_budget"] == true {
                break snapshot;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let cost = &snapshot["cost"];
    eprintln!("cost: {cost}");
    assert!(
        cost["windows_over"].as_u64().is_some_and(|n| n >= 3),
        "{cost}"
    );
    assert!(
        cost["node_share"].as_f64().is_some_and(|s| s > 1e-6),
        "{cost}"
    );
    let costliest = cost["costliest_probe"].as_str().expect("a costliest probe");
    let by_probe = cost["probe_seconds"].as_object().expect("probe_seconds");
    let most = by_probe
        .values()
        .filter_map(Value::as_f64)
        .fold(0.0, f64::max);
    assert_eq!(by_probe[costliest].as_f64(), Some(most), "{cost}");
    let (status, health) = http_get(addr, "/healthz").expect("healthz");
    assert_eq!(status, 200, "{health}");
    assert!(health.contains("over its cost budget"), "{health}");
    assert!(health.contains("the costliest probe is"), "{health}");
    let (_, metrics) = http_get(addr, "/metrics").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cgscope_cost_over_budget_ratio{") && l.ends_with(" 1")),
        "no over-budget series in /metrics"
    );
    let (status, stderr) = common::stop_agent(agent);
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(
        stderr.contains("over its cost budget"),
        "not logged: {stderr}"
    );
}

#[test]
fn bad_input_gets_a_clear_message_not_a_panic() {
    let _serial = serial();
    for (args, needle) in [
        (&["run", "--interval", "ten"][..], "try 10s"),
        (
            &["snapshot", "--duration", "0s"][..],
            "between 100ms and 1h",
        ),
        (
            &["run", "--listen", "nowhere"][..],
            "invalid socket address",
        ),
        (
            &["snapshot", "--cgroup-root", "/nonexistent/cgroup"][..],
            "/nonexistent/cgroup",
        ),
    ] {
        let out = Command::new(BIN).args(args).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
