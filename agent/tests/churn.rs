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
    // Ready first (probes verified and attached, the signal handler in place):
    // under TCG the kernel's verifier alone can take seconds.
    common::wait_ready("127.0.0.1:19465", Duration::from_secs(60));
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

/// Where the short-lived containers connect; set before they are forked.
static PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// A container's whole life: wait to be moved into its cgroup, open a TCP
/// connection (runq and tcp map entries for its cgroup), exit.
fn short_life() -> ! {
    std::thread::sleep(Duration::from_millis(2));
    let port = PORT.load(std::sync::atomic::Ordering::Relaxed);
    let _ = std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port));
    // SAFETY: exits the forked child without running the parent's destructors.
    unsafe { libc::_exit(0) }
}

#[test]
fn ten_thousand_container_lives_leave_the_maps_at_baseline() {
    use cgscope::sampler::{Sampler, SamplerConfig};
    use nix::unistd::{fork, ForkResult};
    require_root_and_cgroup_v2!();
    const LIVES: usize = 10_000;
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).expect("listen");
    PORT.store(
        listener.local_addr().expect("addr").port(),
        std::sync::atomic::Ordering::Relaxed,
    );
    std::thread::spawn(move || for _ in listener.incoming() {});
    let tree = TestTree::create("lives");
    let mut sampler = Sampler::start(&SamplerConfig::default()).expect("sampler");
    let entries = |sampler: &mut Sampler| -> Vec<(&'static str, Option<u64>)> {
        let snapshot = sampler.sample(None);
        snapshot
            .probes
            .iter()
            .map(|p| (p.name, p.map_entries))
            .collect()
    };
    // Two windows: the second shows what the first forgot.
    entries(&mut sampler);
    let baseline = entries(&mut sampler);
    let mut peak = baseline.clone();
    for life in 0..LIVES {
        let dir = tree
            .top
            .dir
            .join(format!("cri-containerd-{life:064x}.scope"));
        std::fs::create_dir(&dir).expect("mkdir");
        // SAFETY: the child sleeps, connects and exits: syscalls only.
        let pid = match unsafe { fork() }.expect("fork") {
            ForkResult::Child => short_life(),
            ForkResult::Parent { child } => child,
        };
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("move");
        nix::sys::wait::waitpid(pid, None).expect("wait");
        assert!(common::remove_cgroup_dir(&dir), "rmdir {}", dir.display());
        if life % 500 == 499 {
            for (p, now) in peak.iter_mut().zip(entries(&mut sampler)) {
                p.1 = p.1.max(now.1);
            }
        }
    }
    entries(&mut sampler);
    let after = entries(&mut sampler);
    eprintln!("map entries: baseline {baseline:?}, peak {peak:?}, after {after:?}");
    for ((name, before), (_, now)) in baseline.iter().zip(&after) {
        // Live cgroups may gain a few entries meanwhile (the test's own accepted
        // sockets, the host writing to disk); a leak would be thousands.
        assert!(
            now.unwrap_or(0) <= before.unwrap_or(0) + 5,
            "{name}: {now:?} entries after {LIVES} container lives, {before:?} before"
        );
    }
    let grown = peak.iter().zip(&baseline).any(|(p, b)| p.1 > b.1);
    assert!(grown, "the lives created map entries at all");
}
