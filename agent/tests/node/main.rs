//! The real node (`cargo xtask node`): Debian bookworm in a VM with systemd as PID 1,
//! pure cgroup v2, containerd's CRI, Docker and Podman. Nothing here makes a
//! cgroup: the runtimes do, as on a production node. Pods are made as kubelet makes
//! them, through the CRI (kubelet itself is not available here; each call says which
//! of its behaviours it stands for), containers with `docker run` and `podman run`,
//! and cgscope, run there as root, must find each with the runtime's names.
//!
//! The tests are `#[ignore]`d: `cargo xtask node` boots the node and runs them
//! with `--include-ignored`; run anywhere else that way, each says `skipped: not on
//! the real node`.

#[path = "../common/mod.rs"]
mod common;
mod cri;
#[path = "../export/panels.rs"]
mod panels;
// The export tests' peers; the node runs Prometheus only.
#[allow(dead_code)]
#[path = "../export/peers.rs"]
mod peers;
mod pods;
mod runtimes;

use std::{collections::BTreeMap, path::Path, process::Command, time::Instant};

use pods::{ContainerSpec, PodSpec};
use runtimes::{sh, Driver, BUSYBOX};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cgscope");

macro_rules! require_node {
    () => {
        if !crate::common::on_node() {
            eprintln!("skipped: not on the real node (cargo xtask node boots one)");
            return;
        }
        let _took = crate::Took(std::time::Instant::now());
    };
}

/// Says how long the test it lives in took, when it ends (passed or not): the node's
/// phases are the tests, and the node's budget is minutes.
struct Took(Instant);

impl Drop for Took {
    fn drop(&mut self) {
        eprintln!(
            "node: {} took {:.1} s",
            std::thread::current().name().unwrap_or("a test"),
            self.0.elapsed().as_secs_f64()
        );
    }
}

// After the macro: their tests use it.
mod image;
mod limits;
mod scrape;
mod traffic;

/// The lines a CRI container wrote, from its log file (`<time> <stream> <tag> <line>`).
fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_owned))
        .collect()
}

/// How long cgscope may wait for a runtime here: under TCG, Podman's service takes
/// seconds to list its containers (2 s, the default, suits a real node).
const RUNTIME_TIMEOUT: &str = "20s";

/// One cgscope window of 2 s over the whole node.
fn snapshot_json() -> Value {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["snapshot", "--format", "json", "--duration", "2s"])
        .args(["--runtime-timeout", RUNTIME_TIMEOUT])
        .output()
        .expect("cgscope snapshot");
    assert!(
        out.status.success(),
        "cgscope snapshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "node: cgscope snapshot ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    serde_json::from_slice(&out.stdout).expect("snapshot JSON")
}

/// One cgscope window over the whole node: the snapshot's cgroups by path.
fn snapshot() -> BTreeMap<String, Value> {
    cgroups_of(&snapshot_json())
}

/// A snapshot's cgroups by path.
fn cgroups_of(snapshot: &Value) -> BTreeMap<String, Value> {
    snapshot["cgroups"]
        .as_array()
        .expect("cgroups")
        .iter()
        .map(|c| (c["path"].as_str().expect("path").to_owned(), c.clone()))
        .collect()
}

/// The cgroup whose container id is `id`, with its path.
fn container<'a>(cgroups: &'a BTreeMap<String, Value>, id: &str) -> (&'a str, &'a Value) {
    cgroups
        .iter()
        .find(|(_, c)| c["container"]["id"] == id)
        .map(|(p, c)| (p.as_str(), c))
        .unwrap_or_else(|| {
            panic!(
                "no cgroup for container {id}; containers: {:#?}",
                cgroups
                    .iter()
                    .filter(|(_, c)| c["kind"] == "container")
                    .map(|(p, _)| p)
                    .collect::<Vec<_>>()
            )
        })
}

/// A burstable pod with one container made through the CRI under `driver`, as
/// kubelet makes it: cgscope finds the pod and the container at the paths the
/// runtime chose, with the kind, pod UID, QoS and runtime from the path and the
/// names, image and labels from the CRI.
fn cri_pod_is_found_and_named(driver: Driver) {
    let cri = runtimes::containerd(driver);
    let uid = runtimes::uid();
    let pod = PodSpec::burstable("web-1", "shop", &uid, driver);
    let pod_id = cri.run_pod(&pod);
    let web = ContainerSpec::sleeper("web", BUSYBOX)
        .cpu_limit(500)
        .memory_limit(64 << 20);
    let container_id = cri.start(&pod_id, &pod, &web);

    let cgroups = snapshot();
    let (path, c) = container(&cgroups, &container_id);
    assert_eq!(
        path,
        pod.container_path(&container_id),
        "containerd placed the container elsewhere"
    );
    let meta = &c["container"];
    assert_eq!(c["kind"], "container");
    assert_eq!(meta["runtime"], "containerd");
    assert_eq!(meta["pod_uid"], uid.as_str());
    assert_eq!(meta["qos"], "burstable");
    assert_eq!(meta["name"], "web");
    assert_eq!(meta["pod"], "web-1");
    assert_eq!(meta["namespace"], "shop");
    assert_eq!(meta["image"], BUSYBOX);
    assert_eq!(meta["labels"]["app"], "web", "{meta:#}");
    // The pod spec's limits, as containerd wrote them to cpu.max and memory.max.
    assert_eq!(c["cpu"]["limit_cores"], 0.5, "{c:#}");
    assert_eq!(c["memory"]["max_bytes"], 64 << 20, "{c:#}");

    let p = &cgroups[pod.cgroup_path()];
    assert_eq!(p["kind"], "pod", "{p:#}");
    assert_eq!(p["container"]["pod_uid"], uid.as_str());
    assert_eq!(p["container"]["pod"], "web-1");

    cri.remove_pod(&pod_id, &pod);
}

#[test]
#[ignore = "needs the real node: cargo xtask node"]
fn cri_pod_under_the_systemd_driver_is_found_and_named() {
    require_node!();
    cri_pod_is_found_and_named(Driver::Systemd);
}

#[test]
#[ignore = "needs the real node: cargo xtask node"]
fn cri_pod_under_the_cgroupfs_driver_is_found_and_named() {
    require_node!();
    cri_pod_is_found_and_named(Driver::Cgroupfs);
}

/// `docker run` and `podman run` containers: found at the runtime's own paths, named
/// through each one's Docker Engine API.
#[test]
#[ignore = "needs the real node: cargo xtask node"]
fn docker_and_podman_containers_are_found_and_named() {
    require_node!();
    runtimes::images();
    runtimes::podman_service();
    let docker = sh(&format!(
        "docker run -d --name cgscope-docker --network none {BUSYBOX} sleep 3600"
    ));
    let podman = sh(&format!(
        "podman run -d --name cgscope-podman --network none {BUSYBOX} sleep 3600"
    ));
    let (docker, podman) = (docker.trim(), podman.trim());

    let cgroups = snapshot();
    for (id, runtime, name) in [
        (docker, "docker", "cgscope-docker"),
        (podman, "podman", "cgscope-podman"),
    ] {
        let (path, c) = container(&cgroups, id);
        eprintln!("node: {runtime} container at {path}");
        assert_eq!(c["kind"], "container");
        assert_eq!(c["container"]["runtime"], runtime, "{path}");
        assert_eq!(c["container"]["name"], name, "{path}");
        assert_eq!(c["container"]["image"], BUSYBOX, "{path}");
    }
    sh("docker rm -f cgscope-docker && podman rm -f cgscope-podman");
    // Podman's service, socket-activated by every name lookup, is not part of the
    // other tests' node.
    sh("systemctl stop podman.socket podman.service");
}
