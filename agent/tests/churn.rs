//! Churn: container cgroups appear and vanish while `cgscope run` scans. The agent
//! must not panic, not log a storm of errors, and return to its memory baseline.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::TestTree;

const BIN: &str = env!("CARGO_BIN_EXE_cgscope");
const BATCH: usize = 50;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Creates and removes `total` container cgroups, `BATCH` at a time, each under
/// its own pod, with a pause between batches so that scans see them.
fn churn(tree: &TestTree, round: usize, total: usize) {
    for batch in 0..total / BATCH {
        let mut made = Vec::new();
        for i in 0..BATCH {
            let n = round * 100_000 + batch * BATCH + i;
            let pod = tree.top.dir.join(format!(
                "kubepods-pod{n:08x}_0000_4000_8000_000000000000.slice"
            ));
            let container = pod.join(format!("cri-containerd-{n:064x}.scope"));
            std::fs::create_dir_all(&container).expect("mkdir");
            made.push((pod, container));
        }
        std::thread::sleep(Duration::from_millis(60));
        for (pod, container) in made {
            std::fs::remove_dir(&container).expect("rmdir container");
            std::fs::remove_dir(&pod).expect("rmdir pod");
        }
    }
}

#[test]
fn a_thousand_containers_come_and_go_while_scanning() {
    require_root_and_cgroup_v2!();
    let tree = TestTree::create("churn");
    let mut agent = Command::new(BIN)
        .args(["run", "--interval", "200ms", "--listen", "127.0.0.1:19465"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent");
    let pid = agent.id();
    std::thread::sleep(Duration::from_secs(2));
    churn(&tree, 0, 200); // warm-up: allocator pools reach their working size
    std::thread::sleep(Duration::from_secs(1));
    let baseline = rss_kib(pid);
    churn(&tree, 1, 1000);
    std::thread::sleep(Duration::from_secs(1)); // a few scans over the emptied tree
    let after = rss_kib(pid);

    let alive = agent.try_wait().expect("try_wait").is_none();
    let (status, stderr) = common::stop_agent(agent);
    eprintln!(
        "RSS {baseline} KiB before, {after} KiB after 1000 containers; {} log lines",
        stderr.lines().count()
    );
    assert!(alive, "agent died during churn: {stderr}");
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.lines().count() < 20, "error storm:\n{stderr}");
    assert!(
        after <= baseline + baseline / 5 + 1024,
        "RSS grew from {baseline} to {after} KiB"
    );
}
