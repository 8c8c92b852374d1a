//! A pod's own IO and TCP, made by its container in the pod's cgroup and CNI network
//! namespace: the probes attribute them to that container, counted as the workload
//! and the kernel count them in the same window (dd's writes and `io.stat`; the
//! server's accepts and the namespace's `ActiveOpens`). Then the pod is deleted
//! through the CRI while an agent runs: the probes' per-cgroup maps, read with
//! bpftool, keep no entry of its cgroups.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{ChildStderr, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::Value;

use super::{
    cgroups_of,
    common::{self, http_get, truth, RunningAgent},
    container,
    cri::{Cri, Mount},
    log_lines,
    pods::{ContainerSpec, PodSpec},
    runtimes::{self, Driver, BUSYBOX, GATEWAY},
    BIN, RUNTIME_TIMEOUT,
};

/// Direct 4 KiB writes per round: each is one request to the disk.
const WRITES: u64 = 400;
/// HTTP requests per round: each is one TCP connection from the pod.
const CONNECTS: u64 = 20;
/// The host directory mounted into the container (a hostPath volume).
const VOLUME: &str = "/var/lib/cgscope-traffic";

/// What the container runs: for each round, once the test creates `go<round>` in
/// the volume, `WRITES` direct overwrites of a preallocated file (no allocation,
/// so no metadata IO of its own) and `CONNECTS` HTTP requests to the node; what dd
/// says and `done <round>` go to stdout (the container's log, which the runtime's
/// shim writes, outside the container's cgroup).
fn script(port: u16) -> String {
    format!(
        "for round in 1 2; do
           while [ ! -e /data/go$round ]; do sleep 0.1; done
           dd if=/dev/zero of=/data/file bs=4096 count={WRITES} oflag=direct conv=notrunc 2>&1
           i=0
           while [ $i -lt {CONNECTS} ]; do
             wget -q -O /dev/null http://{GATEWAY}:{port}/ || echo wget failed
             i=$((i + 1))
           done
           echo done $round
         done
         exec sleep 3600"
    )
}

/// An HTTP server on every address of the node: counts the connections it accepts.
pub fn serve() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("0.0.0.0:0").expect("a listening socket");
    let port = listener.local_addr().expect("its address").port();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    (port, accepted)
}

/// `MAJ:MIN` of the disk holding `path` (the node's root is a whole NVMe disk).
fn disk_of(path: &Path) -> String {
    let dev = std::fs::metadata(path).expect("the volume").dev();
    format!(
        "{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    )
}

/// Writes to `disk` in the `io.stat` of the cgroup at `dir` (0 before the first:
/// the kernel lists a disk once the cgroup did IO to it).
fn writes(dir: &Path, disk: &str) -> u64 {
    truth::io_stat(&dir.join("io.stat"), disk, "wios").unwrap_or(0.0) as u64
}

/// Waits until the agent says its window started; the rest of what it says is
/// read on (so that it never blocks on a full pipe) and returned by the handle.
fn window_started(stderr: ChildStderr) -> std::thread::JoinHandle<String> {
    let mut lines = BufReader::new(stderr).lines();
    let mut said = String::new();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the agent ended before its window: {said}"))
            .expect("the agent's stderr");
        said.push_str(&line);
        said.push('\n');
        if line.contains("sampling a") {
            break;
        }
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            said.push_str(&line);
            said.push('\n');
        }
        said
    })
}

/// Lets round `round` start and waits for the container to say it is done.
fn run_round(round: u32, log: &Path) {
    std::fs::write(format!("{VOLUME}/go{round}"), "").expect("go");
    runtimes::wait_until(
        &format!("round {round} of the pod's IO and TCP"),
        Duration::from_secs(120),
        || log_lines(log).contains(&format!("done {round}")),
    );
}

/// The cgroup ids of a cgroup directory and everything below it.
fn cgroup_ids(dir: &Path) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(meta) = std::fs::metadata(&dir) {
            ids.insert(meta.ino());
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    ids
}

/// The per-cgroup maps of the agent `pid`: their names (as the kernel truncates
/// them) and the cgroup ids of their keys (a key starts with the cgroup id).
fn map_keys(pid: u32) -> Vec<(String, BTreeSet<u64>)> {
    let bpftool = |args: &[&str]| -> Value {
        let out = Command::new("bpftool")
            .args(args)
            .arg("--json")
            .output()
            .expect("bpftool");
        assert!(out.status.success(), "bpftool {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("bpftool JSON")
    };
    let maps = bpftool(&["map", "list"]);
    let ours = maps.as_array().into_iter().flatten().filter(|m| {
        ["RUNQ_HIST", "TCP_STATS", "BLOCKIO_STATS"].contains(&m["name"].as_str().unwrap_or(""))
            && m["pids"]
                .as_array()
                .is_none_or(|p| p.iter().any(|p| p["pid"] == pid))
    });
    ours.map(|m| {
        let id = m["id"].as_u64().expect("a map id").to_string();
        let keys = bpftool(&["map", "dump", "id", &id])
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| {
                let bytes: Vec<u8> = entry["key"]
                    .as_array()
                    .expect("a key")
                    .iter()
                    .map(|b| {
                        let hex = b.as_str().expect("a byte").trim_start_matches("0x");
                        u8::from_str_radix(hex, 16).expect("a hex byte")
                    })
                    .collect();
                u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes of cgroup id"))
            })
            .collect();
        (m["name"].as_str().unwrap_or("").to_owned(), keys)
    })
    .collect()
}

/// The volume, as a hostPath volume mounted at `/data`: its `file` of `blocks` 4 KiB
/// blocks, written and synced (so that direct IO to it needs no allocation), and
/// no `go<round>` files yet.
pub fn volume(blocks: u64) -> Mount {
    std::fs::create_dir_all(VOLUME).expect("the volume");
    for round in 1..=2 {
        let _ = std::fs::remove_file(format!("{VOLUME}/go{round}"));
    }
    let mut file = std::fs::File::create(format!("{VOLUME}/file")).expect("the file");
    file.write_all(&vec![1u8; 4096 * blocks as usize])
        .and_then(|()| file.sync_all())
        .expect("the file written");
    Mount {
        container_path: "/data".into(),
        host_path: VOLUME.into(),
        ..Default::default()
    }
}

/// The pod, its container (with a log and the volume) and the container's cgroup.
fn start_pod(cri: &Cri, port: u16) -> (PodSpec, String, String, PathBuf) {
    let pod = PodSpec::burstable("api-1", "shop", &runtimes::uid(), Driver::Systemd);
    let pod_id = cri.run_pod(&pod);
    let mut spec = ContainerSpec::shell("api", BUSYBOX, &script(port));
    spec.config.log_path = "api.log".into();
    spec.config.mounts = vec![volume(WRITES)];
    let id = cri.start(&pod_id, &pod, &spec);
    let dir = pod.container_dir(&id);
    (pod, pod_id, id, dir)
}

#[test]
#[ignore = "needs the real node: cargo xtask node"]
fn a_pods_io_and_tcp_are_its_own_and_its_deletion_leaves_no_map_entries() {
    require_node!();
    let cri = runtimes::containerd(Driver::Systemd);
    let (port, accepted) = serve();
    let (pod, pod_id, id, dir) = start_pod(&cri, port);
    let log = Path::new(&pod.config.log_directory).join("api.log");
    let disk = disk_of(Path::new(VOLUME));
    let pid: u32 = std::fs::read_to_string(dir.join("cgroup.procs"))
        .expect("the container's processes")
        .lines()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a process in the container");

    // Round 1 inside one window of `cgscope snapshot`.
    let mut agent = Command::new(BIN)
        .args(["snapshot", "--format", "json", "--duration", "20s"])
        .args(["--runtime-timeout", RUNTIME_TIMEOUT])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cgscope snapshot");
    let agent_log = window_started(agent.stderr.take().expect("stderr"));
    let (opens, wios, accepts) = (
        truth::tcp_counter(pid, "ActiveOpens"),
        writes(&dir, &disk),
        accepted.load(Ordering::SeqCst),
    );
    run_round(1, &log);
    let (opens, wios, accepts) = (
        truth::tcp_counter(pid, "ActiveOpens") - opens,
        writes(&dir, &disk) - wios,
        accepted.load(Ordering::SeqCst) - accepts,
    );
    let out = agent.wait_with_output().expect("cgscope snapshot");
    let agent_log = agent_log.join().expect("the agent's stderr");
    assert!(out.status.success(), "{agent_log}");
    let lines = log_lines(&log);
    eprintln!("node: the pod's container said: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{WRITES}+0 records out"))),
        "dd did not write {WRITES} blocks: {lines:?}"
    );
    assert!(!lines.iter().any(|l| l == "wget failed"), "{lines:?}");
    assert_eq!(accepts, CONNECTS, "the server's accepts");

    let snapshot: Value = serde_json::from_slice(&out.stdout).expect("snapshot JSON");
    let cgroups = cgroups_of(&snapshot);
    let (_, c) = container(&cgroups, &id);
    let device = c["io"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["device"] == disk.as_str())
        .unwrap_or_else(|| panic!("no IO on {disk} for the container: {:#}", c["io"]));
    let writes = device["completed"]["write"]["ops"].as_u64().unwrap_or(0);
    let connects = c["network"]["tcp_connect_latency"]["count"]
        .as_u64()
        .unwrap_or(0);
    let pod_opens = cgroups[pod.cgroup_path()]["network"]["tcp"]["active_opens"]
        .as_u64()
        .unwrap_or(0);
    eprintln!(
        "node: the container's writes to {disk}: probe {writes}, dd {WRITES}, io.stat {wios}; \
         connects: probe {connects}, server {accepts}, ActiveOpens {opens}, pod's netns {pod_opens}"
    );
    // Each direct write is one request; the container writes nothing else (its
    // output goes through the shim), so the range is exact up to a request of
    // the page cache's writeback that the kernel may charge to it.
    assert!(
        (WRITES..=WRITES + 2).contains(&writes),
        "completed writes {writes} vs dd's {WRITES}: {device:#}"
    );
    assert!(wios >= WRITES, "io.stat counted {wios} writes");
    assert_eq!(connects, CONNECTS, "{:#}", c["network"]);
    assert_eq!(opens, CONNECTS, "the namespace's ActiveOpens");
    assert_eq!(
        pod_opens,
        opens,
        "{:#}",
        cgroups[pod.cgroup_path()]["network"]
    );

    // Round 2 with an agent running: its maps have the pod's entries; once the
    // pod is deleted through the CRI, they must be gone.
    let listen = format!("127.0.0.1:{}", common::free_port());
    let agent = RunningAgent(Some(
        Command::new(BIN)
            .args(["run", "--interval", "2s", "--listen", &listen])
            .args(["--runtime-timeout", RUNTIME_TIMEOUT])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cgscope run"),
    ));
    let pod_dir = pod.cgroup_dir();
    let ids = cgroup_ids(&pod_dir);
    let shows = |what: &str| {
        http_get(&listen, "/api/v1/snapshot")
            .is_ok_and(|(status, body)| status == 200 && body.contains(&format!("\"{what}\"")))
    };
    runtimes::wait_until("the agent's first window", Duration::from_secs(120), || {
        shows(&id)
    });
    run_round(2, &log);
    let held = |maps: &[(String, BTreeSet<u64>)]| -> Vec<(String, Vec<u64>)> {
        maps.iter()
            .map(|(name, keys)| (name.clone(), keys.intersection(&ids).copied().collect()))
            .filter(|(_, held): &(String, Vec<u64>)| !held.is_empty())
            .collect()
    };
    let before = held(&map_keys(agent.pid()));
    eprintln!("node: the pod's map entries while it runs: {before:?}");
    for name in ["TCP_STATS", "BLOCKIO_STATS"] {
        assert!(
            before.iter().any(|(n, _)| n == name),
            "no {name} entry for the pod's cgroups {ids:?}"
        );
    }

    cri.remove_pod(&pod_id, &pod);
    assert!(
        !pod_dir.exists(),
        "the pod's cgroup outlived RemovePodSandbox"
    );
    // Two windows after the pod is gone from the agent's snapshot: the entries of
    // its last window are deleted once that window is reported.
    runtimes::wait_until(
        "the pod gone from the agent",
        Duration::from_secs(60),
        || !shows(&id),
    );
    std::thread::sleep(Duration::from_secs(5));
    let after = held(&map_keys(agent.pid()));
    let (status, stderr) = agent.stop();
    assert!(after.is_empty(), "left behind: {after:?}\n{stderr}");
    assert!(status.success(), "{status}: {stderr}");
}
