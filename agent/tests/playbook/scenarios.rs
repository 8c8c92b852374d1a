//! The situation each playbook is for, built with real cgroups and workloads: the
//! tests run the playbooks against them, and `cargo xtask lab <scenario>` builds one
//! and holds it for a person to look at. Each has a culprit (the cgroup the
//! playbook must name first), an idle control (which must get no finding) and
//! the measure of the first finding; dropping it tears everything down.

use std::{
    any::Any,
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    sync::atomic::{AtomicU16, AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::common::{self, TestCgroup, TestNetns, TestTree};

pub struct Scenario {
    /// Built last, dropped first: the workloads end before what they use goes.
    pub tree: TestTree,
    /// `--target` for the playbook: the tree, or `None` for the whole node.
    pub target: Option<String>,
    /// The cgroup the first finding must be on.
    pub culprit: String,
    /// An idle cgroup that must get no finding.
    pub control: String,
    /// The measure of the first finding.
    pub measure: &'static str,
    /// The culprit's io.max riops, where the scenario sets one, on `device`
    /// (`MAJ:MIN`).
    pub iops_limit: Option<f64>,
    pub device: String,
    /// What the workloads use: a network namespace, a device, another cgroup.
    _keep: Vec<Box<dyn Any>>,
}

type Build = fn() -> Result<Scenario, String>;

/// Every scenario, by the playbook it is for.
pub const ALL: &[(&str, Build)] = &[
    ("cpu-throttling", cpu_throttling),
    ("cpu-contention", cpu_contention),
    ("memory-pressure", memory_pressure),
    ("disk-io", disk_io),
    ("network-latency", network_latency),
    ("host", host),
    ("throughput-ceiling", throughput_ceiling),
];

pub fn build(name: &str) -> Result<Scenario, String> {
    let (_, build) = ALL
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| format!("no scenario {name:?}"))?;
    build()
}

impl Scenario {
    fn new(tree: TestTree, culprit: String, control: String, measure: &'static str) -> Self {
        Self {
            target: Some(tree.top.path.clone()),
            tree,
            culprit,
            control,
            measure,
            iops_limit: None,
            device: String::new(),
            _keep: Vec::new(),
        }
    }
}

/// A tree with `controllers` enabled for its children, or why not.
fn tree_with(name: &str, controllers: &[&str]) -> Result<TestTree, String> {
    if let Some(reason) = common::missing_controllers(controllers) {
        return Err(reason);
    }
    let tree = TestTree::create(name);
    let enable: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    std::fs::write(
        tree.top.dir.join("cgroup.subtree_control"),
        enable.join(" "),
    )
    .map_err(|e| format!("enable {controllers:?}: {e}"))?;
    Ok(tree)
}

fn write(tree: &TestTree, rel: &str, file: &str, value: &str) -> Result<(), String> {
    std::fs::write(tree.top.dir.join(rel).join(file), value)
        .map_err(|e| format!("{rel}/{file} = {value}: {e}"))
}

/// A busy loop at one fifth of a CPU's quota.
fn cpu_throttling() -> Result<Scenario, String> {
    let mut tree = tree_with("throttling", &["cpu"])?;
    let limited = tree.mkdir("limited");
    let idle = tree.mkdir("idle");
    write(&tree, "limited", "cpu.max", "20000 100000")?;
    tree.spawn("limited", || {}, common::spin);
    tree.spawn("idle", || {}, common::sleep_forever);
    Ok(Scenario::new(tree, limited, idle, "cpu.throttled_periods"))
}

/// A victim and a nice -10 neighbour, both busy on CPU 0.
fn cpu_contention() -> Result<Scenario, String> {
    let mut tree = TestTree::create("contention");
    let victim = tree.mkdir("victim");
    tree.mkdir("noisy");
    let idle = tree.mkdir("idle");
    // One CPU, two busy loops: the neighbour at nice -10 gets ~90% of it.
    let v = tree.spawn("victim", || {}, common::spin);
    let n = tree.spawn("noisy", || {}, common::spin);
    common::pin(v, 0);
    common::pin(n, 0);
    // SAFETY: setpriority on a child this test started.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, n.as_raw() as u32, -10) };
    if rc != 0 {
        return Err("cannot renice the neighbour".into());
    }
    tree.spawn("idle", || {}, common::sleep_forever);
    Ok(Scenario::new(tree, victim, idle, "cpu.runq_wait"))
}

/// Starts a memory hog every half second under a 64 MiB memory.max without swap:
/// every window sees OOM kills.
fn hog_loop() -> ! {
    // Time for the parent to move this process into its cgroup.
    std::thread::sleep(Duration::from_millis(200));
    loop {
        // SAFETY: the child only runs eat_memory (mmap and writes).
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => common::eat_memory(),
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                let _ = nix::sys::wait::waitpid(child, None);
            }
            // SAFETY: exits the forked child without the parent's destructors.
            Err(_) => unsafe { libc::_exit(1) },
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn memory_pressure() -> Result<Scenario, String> {
    let mut tree = tree_with("memory", &["memory"])?;
    let hog = tree.mkdir("hog");
    let idle = tree.mkdir("idle");
    for rel in ["hog", "idle"] {
        write(&tree, rel, "memory.max", &(64u64 << 20).to_string())?;
    }
    let _ = write(&tree, "hog", "memory.swap.max", "0");
    tree.spawn("hog", || {}, hog_loop);
    tree.spawn("idle", || {}, common::sleep_forever);
    Ok(Scenario::new(tree, hog, idle, "memory.oom_kills"))
}

/// fio reading `device` at random, O_DIRECT, one IO at a time, for ten minutes.
fn fio_reader(tree: &mut TestTree, rel: &str, device: &str) {
    let mut fio = common::command_in(&tree.top.dir.join(rel), "fio");
    fio.args([
        "--name=cgscope-lab",
        "--rw=randread",
        "--direct=1",
        "--bs=4k",
    ])
    .args([
        "--ioengine=psync",
        "--thread",
        "--time_based",
        "--runtime=600",
    ])
    .arg(format!("--filename={device}"));
    tree.start(fio);
}

/// The io.max of the disk-io scenario: reads per second.
const READ_IOPS_LIMIT: u32 = 50;

/// How fast the reader in `rel` reads from `dev` (`MAJ:MIN`) over `span`, by its
/// io.stat.
fn read_rate(tree: &TestTree, rel: &str, dev: &str, span: Duration) -> Option<f64> {
    let stat = tree.top.dir.join(rel).join("io.stat");
    // The counters appear with the first IO.
    let deadline = Instant::now() + Duration::from_secs(10);
    let start = loop {
        match common::truth::io_stat(&stat, dev, "rios") {
            Some(n) => break n,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            None => return None,
        }
    };
    let t0 = Instant::now();
    std::thread::sleep(span);
    let end = common::truth::io_stat(&stat, dev, "rios")?;
    Some((end - start) / t0.elapsed().as_secs_f64())
}

/// With the io controller and a null_blk device (the VMs): fio at an io.max of 50
/// reads per second, once it is shown to read at least twice as fast without it (so
/// that the limit, not the machine, holds it). Otherwise: fio on a loop device.
fn disk_io() -> Result<Scenario, String> {
    if !common::have("fio") {
        return Err("no fio".into());
    }
    let null_blk = std::fs::read_to_string("/sys/block/nullb0/dev").ok();
    if let (Some(dev), Ok(mut tree)) = (null_blk, tree_with("disk-io", &["io"])) {
        let dev = dev.trim().to_owned();
        let reader = tree.mkdir("reader");
        let idle = tree.mkdir("idle");
        fio_reader(&mut tree, "reader", "/dev/nullb0");
        let free = read_rate(&tree, "reader", &dev, Duration::from_secs(1))
            .ok_or("fio's reads never showed in io.stat")?;
        if free < 2.0 * f64::from(READ_IOPS_LIMIT) {
            return Err(format!(
                "needs headroom: fio reads {free:.0}/s here without io.max, less than twice \
                 the {READ_IOPS_LIMIT}/s limit that must hold it"
            ));
        }
        write(
            &tree,
            "reader",
            "io.max",
            &format!("{dev} riops={READ_IOPS_LIMIT}"),
        )?;
        tree.spawn("idle", || {}, common::sleep_forever);
        let mut scenario = Scenario::new(tree, reader, idle, "io.iops_of_limit");
        scenario.iops_limit = Some(f64::from(READ_IOPS_LIMIT));
        scenario.device = dev;
        return Ok(scenario);
    }
    let disk = common::LoopDevice::create().ok_or("cannot create a loop device")?;
    let mut tree = TestTree::create("disk-io");
    let reader = tree.mkdir("reader");
    let idle = tree.mkdir("idle");
    fio_reader(&mut tree, "reader", &disk.dev);
    tree.spawn("idle", || {}, common::sleep_forever);
    // /proc/diskstats leaves loop devices out (io.device_busy), there is no io.max:
    // the sign of IO-bound is the stall.
    let mut scenario = Scenario::new(tree, reader, idle, "io.pressure");
    scenario._keep.push(Box::new(disk));
    Ok(scenario)
}

/// Where the sender connects; set before it is forked.
static SINK_IP: AtomicU32 = AtomicU32::new(0);
static SINK_PORT: AtomicU16 = AtomicU16::new(0);

/// Sends as fast as the path takes it, until killed.
fn sender() -> ! {
    // Time to be moved into its cgroup: a socket belongs to the cgroup it was
    // created in.
    std::thread::sleep(Duration::from_millis(200));
    let ip = Ipv4Addr::from(SINK_IP.load(Ordering::Relaxed));
    let Ok(mut stream) = TcpStream::connect((ip, SINK_PORT.load(Ordering::Relaxed))) else {
        // SAFETY: exits the child without running the parent's destructors.
        unsafe { libc::_exit(3) }
    };
    let chunk = [0u8; 16 << 10];
    while stream.write_all(&chunk).is_ok() {}
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// Reads and discards one connection on `ip` (a thread that ends with it, or after
/// ten seconds without one).
fn sink(ip: Ipv4Addr) -> Result<(), String> {
    let listener = TcpListener::bind((ip, 0)).map_err(|e| format!("listen: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    SINK_IP.store(u32::from(ip), Ordering::Relaxed);
    SINK_PORT.store(port, Ordering::Relaxed);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let mut buf = vec![0u8; 64 << 10];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(())
}

/// A bulk TCP sender in a network namespace whose way out is shaped to 1 Mbit/s
/// with a one-second queue (TBF): the queue it fills is what its RTT measures.
fn network_latency() -> Result<Scenario, String> {
    if let Some(reason) = common::netns_skip_reason() {
        return Err(reason.into());
    }
    let netns = TestNetns::create();
    let shaped = std::process::Command::new("tc")
        .args([
            "-n",
            &netns.name,
            "qdisc",
            "add",
            "dev",
            &netns.ns_if,
            "root",
        ])
        .args(["tbf", "rate", "1mbit", "burst", "16kb", "latency", "1s"])
        .status()
        .is_ok_and(|s| s.success());
    if !shaped {
        return Err("no tbf qdisc here".into());
    }
    sink(netns.host_ip)?;
    let mut tree = TestTree::create("network");
    let sending = tree.mkdir("sender");
    let idle = tree.mkdir("idle");
    tree.spawn("sender", netns.enter(), sender);
    tree.spawn("idle", || {}, common::sleep_forever);
    let mut scenario = Scenario::new(tree, sending, idle, "net.tcp_rtt_p99");
    scenario._keep.push(Box::new(netns));
    Ok(scenario)
}

/// A busy loop pinned to CPU 0 in a top-level cgroup, an idle top-level cgroup: the
/// node's load sits on one CPU.
fn host() -> Result<Scenario, String> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return Err("one CPU: its load cannot sit on some CPUs".into());
    }
    let mut tree = TestTree::create("host");
    tree.mkdir("pinned");
    let pid = tree.spawn("pinned", || {}, common::spin);
    common::pin(pid, 0);
    let mut idle = TestCgroup::create("host-idle");
    idle.spawn(None, common::sleep_forever);
    let mut scenario = Scenario::new(tree, "/".into(), idle.path.clone(), "host.cpu.imbalance");
    scenario.target = None;
    scenario._keep.push(Box::new(idle));
    Ok(scenario)
}

/// With the cpu and memory controllers (the VMs): a busy loop at a quota of half a
/// CPU, holding little of its memory.max. Otherwise: a busy loop on every CPU.
fn throughput_ceiling() -> Result<Scenario, String> {
    if let Ok(mut tree) = tree_with("ceiling", &["cpu", "memory"]) {
        let load = tree.mkdir("load");
        let idle = tree.mkdir("idle");
        write(&tree, "load", "cpu.max", "50000 100000")?;
        write(&tree, "load", "memory.max", &(256u64 << 20).to_string())?;
        tree.spawn("load", || {}, common::spin);
        tree.spawn("idle", || {}, common::sleep_forever);
        return Ok(Scenario::new(tree, load, idle, "cpu.usage_of_limit"));
    }
    let mut tree = TestTree::create("ceiling");
    let load = tree.mkdir("load");
    let idle = tree.mkdir("idle");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for _ in 0..cpus {
        tree.spawn("load", || {}, common::spin);
    }
    tree.spawn("idle", || {}, common::sleep_forever);
    Ok(Scenario::new(tree, load, idle, "cpu.usage_of_node"))
}
