//! A pod's limits as the runtime enforces them, measured against the kernel's own
//! account in the same window: a pod at its CPU quota is throttled (`cpu.stat`), a
//! pod over its memory limit is OOM-killed and cgscope's kill is the container the
//! runtime reports as `OOMKilled`.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::{
    cgroups_of,
    common::truth::{self, Recorder},
    container,
    cri::container_state,
    pods::{ContainerSpec, PodSpec},
    runtimes::{self, Driver, BUSYBOX},
    snapshot_json, BIN, RUNTIME_TIMEOUT,
};

/// A busy loop limited to 0.2 CPU: throttled in almost every 100 ms period.
#[test]
#[ignore = "needs the real node: cargo xtask node"]
fn a_pod_at_its_cpu_quota_is_throttled_as_cpu_stat_says() {
    require_node!();
    let cri = runtimes::containerd(Driver::Systemd);
    let pod = PodSpec::burstable("batch-1", "jobs", &runtimes::uid(), Driver::Systemd);
    let pod_id = cri.run_pod(&pod);
    let spin = ContainerSpec::shell("spin", BUSYBOX, "while :; do :; done").cpu_limit(200);
    let id = cri.start(&pod_id, &pod, &spin);
    let dir = pod.container_dir(&id).join("cpu.stat");

    // The truth: the container's cpu.stat, read while cgscope measures.
    let stat = dir.clone();
    let throttled = Recorder::start(Duration::from_millis(10), move || {
        truth::flat_key(&stat, "throttled_usec")
    });
    let stat = dir.clone();
    let usage = Recorder::start(Duration::from_millis(10), move || {
        truth::flat_key(&stat, "usage_usec")
    });
    let snapshot = snapshot_json();
    let (throttled, usage) = (throttled.finish(), usage.finish());
    let cgroups = cgroups_of(&snapshot);
    let (_, c) = container(&cgroups, &id);
    // The cgroup's own span between its reads, else the snapshot's window.
    let window = c["stats_window_seconds"]
        .as_f64()
        .or_else(|| snapshot["window_seconds"].as_f64())
        .expect("a window");
    let seconds = |v: &Value| v.as_f64().expect("a number");
    let got_throttled = seconds(&c["cpu"]["throttled_seconds"]) / window;
    let got_usage = seconds(&c["cpu"]["usage_seconds"]) / window;
    let range = |t: truth::Trace| {
        let (low, high) = t
            .rate_range_near(Duration::from_secs_f64(window))
            .expect("cpu.stat over the window");
        (low * 1e-6, high * 1e-6)
    };
    let (t_low, t_high) = range(throttled);
    let (u_low, u_high) = range(usage);
    eprintln!(
        "node: throttled {got_throttled:.3} s/s (cpu.stat {t_low:.3}-{t_high:.3}), \
         usage {got_usage:.3} cores (cpu.stat {u_low:.3}-{u_high:.3}), limit {}",
        c["cpu"]["limit_cores"]
    );
    assert_eq!(c["cpu"]["limit_cores"], 0.2);
    assert!(
        got_throttled > 0.0 && (t_low * 0.9..=t_high * 1.1).contains(&got_throttled),
        "throttled {got_throttled} s/s vs cpu.stat {t_low}-{t_high}"
    );
    assert!(
        (u_low * 0.9..=u_high * 1.1).contains(&got_usage),
        "usage {got_usage} vs cpu.stat {u_low}-{u_high}"
    );
    assert!(
        c["cpu"]["throttled_periods"].as_u64().unwrap_or(0) > 0,
        "{c:#}"
    );
    cri.remove_pod(&pod_id, &pod);
}

/// A container that outgrows its 32 MiB: the kernel kills it, containerd reports
/// `OOMKilled`, and cgscope's kill names the same container's cgroup and process.
#[test]
#[ignore = "needs the real node: cargo xtask node"]
fn an_oom_kill_is_the_container_the_runtime_reports_oomkilled() {
    require_node!();
    let cri = runtimes::containerd(Driver::Systemd);
    let pod = PodSpec::burstable("cache-1", "shop", &runtimes::uid(), Driver::Systemd);
    let pod_id = cri.run_pod(&pod);

    // One window long enough to hold the container's start and its death; the
    // cgroup of a killed container goes with it, so the kill is read from the
    // pod's cgroup (a parent counts its descendants' kills, naming their cgroup).
    let agent = Command::new(BIN)
        .args(["snapshot", "--format", "json", "--duration", "40s"])
        .args(["--runtime-timeout", RUNTIME_TIMEOUT])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cgscope snapshot");
    std::thread::sleep(Duration::from_secs(5));
    // `tail` keeps its whole input: a line of 256 MiB of zeros.
    let hog = ContainerSpec::shell(
        "cache",
        BUSYBOX,
        "sleep 8; head -c 268435456 /dev/zero | tail",
    )
    .memory_limit(32 << 20);
    let id = cri.start(&pod_id, &pod, &hog);
    let dir = pod.container_dir(&id);
    let cgroup_id = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&dir)
            .expect("the container's cgroup")
            .ino()
    };
    let status = cri.wait_container(&id, Duration::from_secs(60), |s| {
        s.state == container_state::EXITED && s.reason == "OOMKilled"
    });
    assert_eq!(
        (status.state, status.reason.as_str()),
        (container_state::EXITED, "OOMKilled"),
        "{status:?}"
    );

    let out = agent.wait_with_output().expect("cgscope snapshot");
    assert!(out.status.success());
    let snapshot: Value = serde_json::from_slice(&out.stdout).expect("snapshot JSON");
    let cgroups = cgroups_of(&snapshot);
    let kills: Vec<(&String, &Value)> = cgroups
        .iter()
        .flat_map(|(path, c)| {
            c["memory"]["oom_kills"]["victims"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |v| (path, v))
        })
        .filter(|(_, v)| v["cgroup_id"] == cgroup_id)
        .collect();
    eprintln!("node: kills of the container's cgroup {cgroup_id}: {kills:?}");
    assert!(
        kills.iter().any(|(_, v)| v["command"] == "tail"),
        "no kill of `tail` in cgroup {cgroup_id}: {:#}",
        cgroups[pod.cgroup_path()]["memory"]
    );
    // Counted on the pod (the container's cgroup may be gone by the window's end).
    assert!(
        kills
            .iter()
            .any(|(path, _)| path.as_str() == pod.cgroup_path()),
        "{kills:?}"
    );
    cri.remove_pod(&pod_id, &pod);
}

/// Two pods on one CPU (as the static CPU manager, or plain bad luck, puts them):
/// the victim's wait is found, and the noisy pod, with 20 times its CPU request,
/// is named by `playbook run cpu-contention` as the neighbour that held the CPU
/// for most of that wait (the kernel's split of each wait), with the names the
/// CRI gave it.
#[test]
#[ignore = "needs the real node: cargo xtask node"]
fn a_noisy_pod_on_the_same_cpu_is_the_victims_neighbour() {
    require_node!();
    let cri = runtimes::containerd(Driver::Systemd);
    let victim = PodSpec::burstable("web-2", "shop", &runtimes::uid(), Driver::Systemd);
    let noisy = PodSpec::burstable("batch-2", "jobs", &runtimes::uid(), Driver::Systemd);
    let (victim_pod, noisy_pod) = (cri.run_pod(&victim), cri.run_pod(&noisy));
    let spin = |name: &str, millicores: i64| {
        ContainerSpec::shell(name, BUSYBOX, "while :; do :; done")
            .cpus(1)
            .cpu_request(millicores)
    };
    let victim_id = cri.start(&victim_pod, &victim, &spin("web", 100));
    let noisy_id = cri.start(&noisy_pod, &noisy, &spin("batch", 2000));
    let target = victim.container_path(&victim_id);

    let out = Command::new(BIN)
        .args(["playbook", "run", "cpu-contention", "--target", &target])
        .args(["--runtime-timeout", RUNTIME_TIMEOUT])
        .args(["--duration", "3s", "--format", "json"])
        .output()
        .expect("cgscope playbook run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let first = &report["findings"][0];
    assert_eq!(first["path"], target.as_str(), "{report:#}");
    assert_eq!(first["measure"], "cpu.runq_wait", "{report:#}");
    // The victim's wait in the window, and who held its CPU meanwhile.
    let waited = first["value"].as_f64().expect("wait per second")
        * report["window_seconds"].as_f64().expect("window");
    let neighbour = &first["neighbours"][0];
    eprintln!("node: the victim waited {waited:.3} s; first neighbour {neighbour}");
    let path = neighbour["path"].as_str().expect("neighbour path");
    assert!(
        path == noisy.container_path(&noisy_id) || path == noisy.cgroup_path(),
        "the noisy pod first among the neighbours: {report:#}"
    );
    assert_eq!(neighbour["name"], "batch", "named by the CRI: {report:#}");
    // The two busy loops are the only busy tasks on their CPU: whenever the
    // victim waits, it is nearly always the noisy pod that runs. Not more than the
    // wait (the agent reads the wait and its split one after the other: one
    // scheduler slice either way); less where a wait spans more than the
    // timeline's 8 occupants (its oldest part is `unattributed`).
    let held = neighbour["held_seconds"].as_f64().expect("held_seconds");
    assert!(
        held > 0.0 && held <= waited * 1.05 + 0.02,
        "held {held} s of the victim's {waited} s wait: {report:#}"
    );
    cri.remove_pod(&victim_pod, &victim);
    cri.remove_pod(&noisy_pod, &noisy);
}
