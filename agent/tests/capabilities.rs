//! cgscope run with exactly the DaemonSet's capabilities (`setpriv`, as the
//! container runtime would start it): every probe attaches, every thread holds only
//! CAP_SYS_PTRACE once attached, the maps are still read and another user's network
//! namespace still found; without a capability, `check` and the scan say what is
//! missing. Runs on the host and in the VMs (setpriv is copied in).

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use common::{daemonset_capabilities, http_get, Peer, TestNetns, TestTree};

const BIN: &str = env!("CARGO_BIN_EXE_cgscope");

/// cgscope started as the DaemonSet's container starts it: uid 0 with only `caps`
/// (the bounding set, hence permitted and effective after exec), no_new_privs
/// (`allowPrivilegeEscalation: false`).
fn as_daemonset(caps: &[String]) -> Command {
    let add: String = caps
        .iter()
        .map(|c| format!(",+{}", c["CAP_".len()..].to_lowercase()))
        .collect();
    // util-linux's, by path: the VMs' busybox has a smaller setpriv earlier in PATH.
    let mut cmd = Command::new("/usr/bin/setpriv");
    cmd.args([
        "--inh-caps=-all",
        &format!("--bounding-set=-all{add}"),
        "--no-new-privs",
        "--",
        BIN,
    ]);
    cmd
}

/// `cgscope check --format json`'s report; what went wrong if it printed none.
fn check_report(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check JSON: {e}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
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

/// The entry of `check`'s report for capability `name` (`CAP_PERFMON`).
fn capability<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["capabilities"]
        .as_array()
        .expect("capabilities")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
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
    require_network_namespaces!();
    let caps = daemonset_capabilities();
    let out = as_daemonset(&caps)
        .args(["check", "--format", "json"])
        .output()
        .expect("setpriv");
    let report = check_report(&out);
    for probe in report["probes"].as_array().expect("probes") {
        assert_eq!(
            (&probe["attached"], &probe["error"]),
            (&Value::Bool(true), &Value::Null),
            "{probe}"
        );
    }
    // Every capability this kernel needs is held (CAP_SYS_RESOURCE is needed only
    // before 5.11; a sandbox may hold it back from the test's own bounding set).
    for capability in report["capabilities"].as_array().expect("capabilities") {
        if capability["needed"] == true {
            assert_eq!(capability["held"], true, "{capability}");
        }
    }

    let mut tree = TestTree::create("deploy");
    let netns = TestNetns::create();
    let (pod, container) = pod_of_another_user(&mut tree, &netns);
    let addr = format!("127.0.0.1:{}", common::free_port());
    let log = std::env::temp_dir().join(format!("cgscope-deploy-{}.log", std::process::id()));
    let mut agent = Peer(
        as_daemonset(&caps)
            .args(["run", "--interval", "1s", "--listen", &addr])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start cgscope under setpriv"),
    );
    // Ready once the probes are loaded, which takes the verifier tens of seconds
    // in a TCG guest: waited for while the agent runs (two minutes at most).
    let started = Instant::now();
    while http_get(&addr, "/readyz").map(|r| r.0).unwrap_or(0) != 200 {
        let exited = agent.0.try_wait().expect("agent status");
        if exited.is_some() || started.elapsed() > Duration::from_secs(120) {
            panic!(
                "not ready after {:.0?} (exit {exited:?}); log:\n{}",
                started.elapsed(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // After attach: every thread holds CAP_SYS_PTRACE only, in both sets (bit 19 of
    // linux/capability.h, not what cgscope's own table says it keeps), and CAP_BPF
    // (bit 39) where the kernel refuses map reads without it.
    let keeps_bpf = map_reads_need_cap_bpf();
    let kept: u64 = (1 << 19) | if keeps_bpf { 1 << 39 } else { 0 };
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
    let ready = Instant::now();
    while ready.elapsed() < Duration::from_secs(30) && (runq == 0 || netns_seen.is_none()) {
        std::thread::sleep(Duration::from_millis(1100));
        let (_, body) = http_get(&addr, "/api/v1/snapshot").expect("snapshot");
        let snapshot: Value = serde_json::from_str(&body).expect("snapshot JSON");
        runq = find(&snapshot, &container)["cpu"]["runq_latency"]["count"]
            .as_u64()
            .unwrap_or(0);
        netns_seen = find(&snapshot, &pod)["network"]["netns"].as_u64();
    }
    eprintln!("container runq events in a window: {runq}; pod netns {netns_seen:?}");
    drop(agent);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        runq > 0,
        "no run-queue events after the capabilities were dropped; agent log:\n{log_text}"
    );
    assert_eq!(netns_seen, Some(netns.inode()));
    // What was dropped, as logged (CAP_SYS_RESOURCE where the test could grant it).
    let dropped: Vec<&str> = log_text
        .lines()
        .find_map(|l| l.split_once("probes attached; dropped ").map(|(_, d)| d))
        .unwrap_or_else(|| panic!("no drop logged: {log_text}"))
        .split_whitespace()
        .collect();
    assert!(dropped.contains(&"CAP_PERFMON"), "{dropped:?}");
    assert_eq!(dropped.contains(&"CAP_BPF"), !keeps_bpf, "{dropped:?}");
    assert!(!dropped.contains(&"CAP_SYS_PTRACE"), "{dropped:?}");
    assert_eq!(log_text.contains("kept CAP_BPF"), keeps_bpf, "{log_text}");
}

/// The kernel's release as (major, minor).
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut numbers = release.split(['.', '-']).map(|p| p.trim().parse::<u32>());
    let (major, minor) = (numbers.next(), numbers.next());
    (major.unwrap().unwrap(), minor.unwrap().unwrap())
}

/// Before 5.19, `kernel.unprivileged_bpf_disabled` refused every bpf() command to a
/// caller without CAP_BPF, not only loading programs and creating maps.
fn map_reads_need_cap_bpf() -> bool {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .map(|s| s.trim() != "0")
        .unwrap_or(false);
    kernel_version() < (5, 19) && disabled
}

/// Whether the running kernel charges BPF maps to RLIMIT_MEMLOCK (before 5.11).
fn kernel_charges_memlock() -> bool {
    kernel_version() < (5, 11)
}

/// Before 5.11 a map's memory counts against RLIMIT_MEMLOCK. With the DaemonSet's
/// capabilities but CAP_SYS_RESOURCE, and the 64 KiB limit systemd before v253 gives a
/// container runtime, the maps cannot be created: `check` names the limit and what
/// to grant, and says CAP_SYS_RESOURCE is missing; with it, every probe attaches
/// under that same limit (the test above, whose limit is the VM's 64 KiB).
#[test]
fn before_5_11_the_memlock_limit_is_raised_or_named() {
    require_root_and_cgroup_v2!();
    require_network_namespaces!();
    if !kernel_charges_memlock() {
        eprintln!(
            "skipped: this kernel (5.11+) charges BPF maps to the memory cgroup, not RLIMIT_MEMLOCK"
        );
        return;
    }
    let caps: Vec<String> = daemonset_capabilities()
        .into_iter()
        .filter(|c| c != "CAP_SYS_RESOURCE")
        .collect();
    let limit = libc::rlimit {
        rlim_cur: 64 << 10,
        rlim_max: 64 << 10,
    };
    let mut check = as_daemonset(&caps);
    check.args(["check", "--format", "json"]);
    // SAFETY: setrlimit is async-signal-safe; only the child's limit changes.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut check, move || {
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = check.output().expect("setpriv");
    assert_eq!(out.status.code(), Some(1), "degraded, not fatal");
    let report = check_report(&out);
    let resource = capability(&report, "CAP_SYS_RESOURCE");
    assert_eq!(
        (&resource["held"], &resource["needed"]),
        (&Value::Bool(false), &Value::Bool(true)),
        "{resource}"
    );
    for probe in report["probes"].as_array().expect("probes") {
        let error = probe["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("RLIMIT_MEMLOCK, 64 KiB") && error.contains("CAP_SYS_RESOURCE"),
            "{probe}"
        );
    }
}

#[test]
fn a_missing_capability_is_named_with_what_it_breaks() {
    require_root_and_cgroup_v2!();
    require_network_namespaces!();
    let caps = daemonset_capabilities();
    let without =
        |name: &str| -> Vec<String> { caps.iter().filter(|c| *c != name).cloned().collect() };

    let out = as_daemonset(&without("CAP_PERFMON"))
        .args(["check", "--format", "json"])
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(1), "degraded, not fatal");
    let report = check_report(&out);
    let perfmon = capability(&report, "CAP_PERFMON");
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
    // Said at start-up, and again where it bites.
    assert!(
        stderr.contains("CAP_SYS_PTRACE missing: no network counters"),
        "{stderr}"
    );
    assert!(stderr.contains("needs CAP_SYS_PTRACE"), "{stderr}");
    let snapshot: Value = serde_json::from_slice(&out.stdout).expect("snapshot JSON");
    assert!(find(&snapshot, &pod)["network"]["netns"].is_null());
}
