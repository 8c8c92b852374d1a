//! `deploy/`: the manifests and the unit pass the real validators, grant exactly the
//! capabilities cgscope names (`privilege::NEEDS`), and cgscope, run here with that
//! set and nothing more, attaches every probe, reads a container's network as
//! another user's, and holds only CAP_SYS_PTRACE once attached.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use common::{http_get, Peer, TestNetns, TestTree};

const BIN: &str = env!("CARGO_BIN_EXE_cgscope");

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The DaemonSet's one container.
fn agent_container(daemonset: &Value) -> &Value {
    let containers = daemonset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1);
    &containers[0]
}

/// What cgscope says it needs, as Linux spells it (`CAP_BPF`), sorted.
fn needed() -> Vec<String> {
    let mut names: Vec<String> = cgscope::privilege::NEEDS
        .iter()
        .map(|n| n.capability.to_string())
        .collect();
    names.sort();
    names
}

/// The DaemonSet's `capabilities.add`, as Linux spells them.
fn daemonset_capabilities() -> Vec<String> {
    let daemonset = yaml(&deploy().join("kubernetes/daemonset.yaml"));
    let security = &agent_container(&daemonset)["securityContext"];
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let mut names: Vec<String> = security["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().expect("a name")))
        .collect();
    names.sort();
    names
}

/// A systemd directive's words (the last assignment wins, as in systemd).
fn unit_directive(unit: &str, key: &str) -> Vec<String> {
    let mut words: Vec<String> = unit
        .lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    words.sort();
    words
}

#[test]
fn every_deployment_grants_exactly_what_cgscope_needs_and_nothing_more() {
    assert_eq!(daemonset_capabilities(), needed(), "DaemonSet");
    let unit = std::fs::read_to_string(deploy().join("systemd/cgscope.service")).unwrap();
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        assert_eq!(unit_directive(&unit, key), needed(), "systemd {key}");
    }
    for (key, want) in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict")] {
        assert_eq!(unit_directive(&unit, key), [want], "systemd {key}");
    }

    let daemonset = yaml(&deploy().join("kubernetes/daemonset.yaml"));
    let container = agent_container(&daemonset);
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    for mount in container["volumeMounts"].as_array().expect("mounts") {
        assert_eq!(mount["readOnly"], true, "{mount}");
    }
    // Each capability and each mount says why, in a comment right above it.
    let text = std::fs::read_to_string(deploy().join("kubernetes/daemonset.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let item = line.trim_start();
        let justified = || lines[i - 1].trim_start().starts_with('#');
        if needed().iter().any(|c| item == format!("- {}", &c[4..])) {
            assert!(justified(), "no comment above capability {item}");
        }
        if item.starts_with("- name:") && lines[i + 1].trim_start().starts_with("mountPath:") {
            assert!(justified(), "no comment above mount {item}");
        }
    }
    // The downward API gives the node's name, the health endpoints are probed.
    let env = container["env"].as_array().expect("env");
    assert!(env
        .iter()
        .any(|e| e["name"] == "NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
}

/// Applies an RFC 6902 patch (the `add` and `replace` operations the overlays use).
fn apply_json_patch(doc: &mut Value, patch: &Value) {
    for op in patch.as_array().expect("a JSON patch is a list") {
        let path = op["path"].as_str().expect("path");
        let value = op["value"].clone();
        match op["op"].as_str() {
            Some("replace") => *doc.pointer_mut(path).expect(path) = value,
            Some("add") => {
                let (parent, key) = path.rsplit_once('/').expect(path);
                let parent = doc.pointer_mut(parent).expect(path);
                match parent {
                    Value::Array(items) if key == "-" => items.push(value),
                    Value::Object(fields) => {
                        fields.insert(key.to_owned(), value);
                    }
                    _ => panic!("cannot add at {path}"),
                }
            }
            other => panic!("patch op {other:?} not supported here"),
        }
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (cargo xtask setup installs it)"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn manifests_pass_yamllint_and_kubernetes_validate_also_rendered_privileged() {
    run_ok(
        Command::new("python3")
            .args(["-m", "yamllint", "--strict", "-c"])
            .arg(deploy().join(".yamllint"))
            .arg(deploy()),
    );

    let base = deploy().join("kubernetes");
    let kustomization = yaml(&base.join("kustomization.yaml"));
    let mut files: Vec<PathBuf> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| base.join(r.as_str().expect("a file")))
        .collect();

    // The privileged overlay, rendered as kustomize would: its patch on the base.
    let overlay = base.join("overlays/privileged");
    let overlay_kustomization = yaml(&overlay.join("kustomization.yaml"));
    assert_eq!(
        overlay_kustomization["resources"],
        serde_json::json!(["../.."])
    );
    let patch_file = overlay_kustomization["patches"][0]["path"]
        .as_str()
        .expect("patch");
    let mut daemonset = yaml(&base.join("daemonset.yaml"));
    apply_json_patch(&mut daemonset, &yaml(&overlay.join(patch_file)));
    let security = &agent_container(&daemonset)["securityContext"];
    assert_eq!(security["privileged"], true);
    let rendered =
        std::env::temp_dir().join(format!("cgscope-privileged-{}.json", std::process::id()));
    std::fs::write(&rendered, daemonset.to_string()).unwrap();
    files.push(rendered.clone());

    // The oldest Kubernetes with every field used (appArmorProfile: 1.30) and the
    // validator's newest.
    for version in ["1.30.0", "1.37.0"] {
        let out = run_ok(
            Command::new("python3")
                .args(["-m", "kubernetes_validate", "--strict", "-k", version])
                .args(&files),
        );
        eprint!("{out}");
        assert_eq!(
            out.matches("passed for resource").count(),
            files.len(),
            "{out}"
        );
    }
    let _ = std::fs::remove_file(rendered);
}

#[test]
fn systemd_unit_verifies() {
    // verify also checks that ExecStart exists: point it at the binary just built.
    let unit = std::fs::read_to_string(deploy().join("systemd/cgscope.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/cgscope run"));
    let dir = std::env::temp_dir().join(format!("cgscope-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("cgscope.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/cgscope", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (cargo xtask setup installs systemd)");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

/// cgscope started as the DaemonSet's container starts it: uid 0 with only `caps`
/// (the bounding set, hence permitted and effective after exec), no_new_privs
/// (`allowPrivilegeEscalation: false`).
fn as_daemonset(caps: &[String]) -> Command {
    let add: String = caps
        .iter()
        .map(|c| format!(",+{}", c["CAP_".len()..].to_lowercase()))
        .collect();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--inh-caps=-all",
        &format!("--bounding-set=-all{add}"),
        "--no-new-privs",
        "--",
        BIN,
    ]);
    cmd
}

const POD_REL: &str = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod4c1d2e3f_5a6b_4c7d_8e9f_0a1b2c3d4e5f.slice";
const CONTAINER_ID: &str = "5d1e0c7b9a8f6e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";

/// A pod whose one container process runs as `nobody` in the pod's own network
/// namespace, waking every millisecond (run-queue events for the runq probe).
/// Returns the pod's and the container's paths.
fn pod_of_another_user(tree: &mut TestTree, netns: &TestNetns) -> (String, String) {
    let pod = tree.mkdir(POD_REL);
    let container_rel = format!("{POD_REL}/cri-containerd-{CONTAINER_ID}.scope");
    let container = tree.mkdir(&container_rel);
    let enter = netns.enter();
    let become_nobody = move || {
        enter();
        let nobody = nix::unistd::Uid::from_raw(65534);
        let nogroup = nix::unistd::Gid::from_raw(65534);
        if nix::unistd::setresgid(nogroup, nogroup, nogroup).is_err()
            || nix::unistd::setresuid(nobody, nobody, nobody).is_err()
        {
            // SAFETY: _exit in a forked child.
            unsafe { libc::_exit(1) };
        }
    };
    tree.spawn(&container_rel, become_nobody, tick);
    (pod, container)
}

fn tick() -> ! {
    loop {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn find<'a>(snapshot: &'a Value, path: &str) -> &'a Value {
    snapshot["cgroups"]
        .as_array()
        .expect("cgroups")
        .iter()
        .find(|c| c["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in the snapshot"))
}

/// `CapEff` and `CapPrm` of every thread of `pid`, by thread name.
fn thread_capabilities(pid: u32) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(u64::MAX)
        };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        out.push((name.trim().to_owned(), field("CapEff:"), field("CapPrm:")));
    }
    out
}

#[test]
fn with_the_daemonset_capabilities_every_probe_attaches_and_only_ptrace_is_kept() {
    require_root_and_cgroup_v2!();
    if let Some(reason) = common::netns_skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let caps = daemonset_capabilities();
    let out = as_daemonset(&caps)
        .args(["check", "--format", "json"])
        .output()
        .expect("setpriv");
    let report: Value = serde_json::from_slice(&out.stdout).expect("check JSON");
    for probe in report["probes"].as_array().expect("probes") {
        assert_eq!(
            (&probe["attached"], &probe["error"]),
            (&Value::Bool(true), &Value::Null),
            "{probe}"
        );
    }
    for capability in report["capabilities"].as_array().expect("capabilities") {
        assert_eq!(capability["held"], true, "{capability}");
    }

    let mut tree = TestTree::create("deploy");
    let netns = TestNetns::create();
    let (pod, container) = pod_of_another_user(&mut tree, &netns);
    let addr = format!("127.0.0.1:{}", common::free_port());
    let log = std::env::temp_dir().join(format!("cgscope-deploy-{}.log", std::process::id()));
    let agent = Peer(
        as_daemonset(&caps)
            .args(["run", "--interval", "1s", "--listen", &addr])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start cgscope under setpriv"),
    );
    let started = Instant::now();
    while http_get(&addr, "/readyz").map(|r| r.0).unwrap_or(0) != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not ready in 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // After attach: every thread holds CAP_SYS_PTRACE only, in both sets.
    let kept: u64 = cgscope::privilege::NEEDS
        .iter()
        .filter(|n| n.kept)
        .map(|n| n.capability.bitmask())
        .sum();
    let threads = thread_capabilities(agent.0.id());
    assert!(threads.len() >= 3, "{threads:?}");
    for (name, effective, permitted) in &threads {
        assert_eq!(
            (*effective, *permitted),
            (kept, kept),
            "thread {name}: {effective:x}/{permitted:x}"
        );
    }

    // The maps are still read (runq) and the other user's netns is still found.
    let (mut runq, mut netns_seen) = (0, None);
    while started.elapsed() < Duration::from_secs(30) && (runq == 0 || netns_seen.is_none()) {
        std::thread::sleep(Duration::from_millis(1100));
        let (_, body) = http_get(&addr, "/api/v1/snapshot").expect("snapshot");
        let snapshot: Value = serde_json::from_str(&body).expect("snapshot JSON");
        runq = find(&snapshot, &container)["cpu"]["runq_latency"]["count"]
            .as_u64()
            .unwrap_or(0);
        netns_seen = find(&snapshot, &pod)["network"]["netns"].as_u64();
    }
    eprintln!("container runq events in a window: {runq}; pod netns {netns_seen:?}");
    assert!(
        runq > 0,
        "no run-queue events after the capabilities were dropped"
    );
    assert_eq!(netns_seen, Some(netns.inode()));
    drop(agent);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        log_text.contains("dropped CAP_BPF CAP_PERFMON"),
        "{log_text}"
    );
}

#[test]
fn a_missing_capability_is_named_with_what_it_breaks() {
    require_root_and_cgroup_v2!();
    if let Some(reason) = common::netns_skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let caps = daemonset_capabilities();
    let without =
        |name: &str| -> Vec<String> { caps.iter().filter(|c| *c != name).cloned().collect() };

    let out = as_daemonset(&without("CAP_PERFMON"))
        .args(["check", "--format", "json"])
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(1), "degraded, not fatal");
    let report: Value = serde_json::from_slice(&out.stdout).expect("check JSON");
    let perfmon = report["capabilities"]
        .as_array()
        .expect("capabilities")
        .iter()
        .find(|c| c["name"] == "CAP_PERFMON")
        .expect("CAP_PERFMON listed");
    assert_eq!(perfmon["held"], false);
    assert!(
        perfmon["without"].as_str().unwrap().contains("runq"),
        "{perfmon}"
    );
    for probe in report["probes"].as_array().expect("probes") {
        assert!(probe["error"].is_string(), "{probe}");
    }

    // Without CAP_SYS_PTRACE another user's netns cannot be read: said, not hidden.
    let mut tree = TestTree::create("deploy-noptrace");
    let netns = TestNetns::create();
    let (pod, _) = pod_of_another_user(&mut tree, &netns);
    let out = as_daemonset(&without("CAP_SYS_PTRACE"))
        .args([
            "snapshot",
            "--duration",
            "1s",
            "--format",
            "json",
            "--cgroup",
            &tree.top.path,
        ])
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("needs CAP_SYS_PTRACE"), "{stderr}");
    let snapshot: Value = serde_json::from_slice(&out.stdout).expect("snapshot JSON");
    assert!(find(&snapshot, &pod)["network"]["netns"].is_null());
}
