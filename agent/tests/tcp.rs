//! The tcp probe against ground truth: a client process in a test cgroup talks to a
//! server of the test. On loopback, the kernel's own view of the connection
//! (`ss -ti`) is the reference for its smoothed RTT; across a veth pair with netem
//! delay (VMs), the configured delay is; the connects the client makes (one
//! refused) are counted exactly, and netem loss must show up as retransmits.

mod common;
#[path = "tcp/lifecycle.rs"]
mod lifecycle;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicI32, AtomicU16, AtomicU32, Ordering},
    time::{Duration, Instant},
};

use cgscope::{
    sampler::{Sampler, SamplerConfig},
    snapshot::{NetworkSample, Snapshot},
};
use common::{TestCgroup, TestNetns, TestTree};

/// Where the client connects; set before the client is forked.
static SERVER_IP: AtomicU32 = AtomicU32::new(0x7f00_0001);
static SERVER_PORT: AtomicU16 = AtomicU16::new(0);
/// A port nothing listens on (bound, then closed, by the test).
static CLOSED_PORT: AtomicU16 = AtomicU16::new(0);
/// Where a forked child reports what it measured itself (`-1`: nowhere).
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);
/// Rounds the client times (the first ones: before any loss is switched on).
const TIMED_ROUNDS: usize = 15;

/// The client: after 200 ms (time to be moved into its cgroup), one refused
/// connect, then ping-pong with the server every 10 ms until the server closes.
/// It times its own connect and its first request/response rounds, the
/// application's view of the same path, and reports them ([`write_report`]) in
/// nanoseconds: connect, median round trip.
/// Runs in a forked child: only syscalls, no allocation.
fn client() -> ! {
    std::thread::sleep(Duration::from_millis(200));
    let ip = Ipv4Addr::from(SERVER_IP.load(Ordering::Relaxed));
    let _ = TcpStream::connect((ip, CLOSED_PORT.load(Ordering::Relaxed)));
    let start = Instant::now();
    let Ok(mut stream) = TcpStream::connect((ip, SERVER_PORT.load(Ordering::Relaxed))) else {
        // SAFETY: exits the child without running the parent's destructors.
        unsafe { libc::_exit(3) }
    };
    let connect = start.elapsed();
    let mut rounds = [Duration::MAX; TIMED_ROUNDS];
    let mut byte = [0u8; 1];
    for i in 0.. {
        let start = Instant::now();
        if stream.write_all(b"x").is_err() || stream.read_exact(&mut byte).is_err() {
            break;
        }
        if let Some(r) = rounds.get_mut(i) {
            *r = start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    rounds.sort_unstable();
    write_report(&[
        connect.as_nanos() as u64,
        rounds[TIMED_ROUNDS / 2].as_nanos() as u64,
    ]);
    // SAFETY: exits the child without running the parent's destructors.
    unsafe { libc::_exit(0) }
}

/// A pipe for a child's report: (read end, write end).
fn report_pipe() -> (std::fs::File, std::os::fd::OwnedFd) {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    REPORT_FD.store(write.as_raw_fd(), Ordering::Relaxed);
    (std::fs::File::from(read), write)
}

/// In a forked child: writes `values` to `REPORT_FD`, native-endian, if there is
/// one. Only syscalls, no allocation.
fn write_report(values: &[u64]) {
    let fd = REPORT_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    for v in values {
        let bytes = v.to_ne_bytes();
        // SAFETY: a write of our buffer to a pipe the parent made.
        unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    }
}

/// In a forked child that does not report: closes its copy of the pipe's write end,
/// so that the reader sees the end of the pipe when the reporting child exits.
fn close_report() {
    let fd = REPORT_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: our copy of the descriptor, not used again in this process.
        unsafe { libc::close(fd) };
    }
}

/// The `N` values a child reported; fails if it did not within a minute.
fn read_exact_report<const N: usize>(pipe: std::fs::File) -> [u64; N] {
    let mut poll = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one descriptor we own.
    let ready = unsafe { libc::poll(&mut poll, 1, 60_000) };
    assert_eq!(ready, 1, "no report from the child within a minute");
    let mut bytes = [0u8; 8];
    let mut pipe = pipe;
    let report = std::array::from_fn(|_| {
        pipe.read_exact(&mut bytes).expect("the child's report");
        u64::from_ne_bytes(bytes)
    });
    // Children forked from now on have no report to write.
    REPORT_FD.store(-1, Ordering::Relaxed);
    report
}

/// The client's own (connect, median round trip), in seconds.
fn read_report(pipe: std::fs::File) -> (f64, f64) {
    let [connect, median] = read_exact_report::<2>(pipe);
    (connect as f64 * 1e-9, median as f64 * 1e-9)
}

/// A listener on `ip` for one client, echoing for `duration`; sets the client's
/// target (and a closed port on the same address).
fn serve(ip: Ipv4Addr, duration: Duration) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind((ip, 0)).expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let closed = TcpListener::bind((ip, 0)).expect("bind");
    CLOSED_PORT.store(closed.local_addr().expect("addr").port(), Ordering::Relaxed);
    drop(closed);
    SERVER_IP.store(u32::from(ip), Ordering::Relaxed);
    SERVER_PORT.store(port, Ordering::Relaxed);
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let end = std::time::Instant::now() + duration;
        let mut byte = [0u8; 1];
        while std::time::Instant::now() < end {
            match stream.read(&mut byte) {
                Ok(0) => break,
                Ok(_) => {
                    if stream.write_all(&byte).is_err() {
                        break;
                    }
                }
                Err(_) => continue, // timeout: check the clock
            }
        }
    });
    (port, server)
}

/// The smoothed RTT `ss -ti` shows for the client's end of the connection, seconds.
fn ss_srtt(server_port: u16) -> Option<f64> {
    let out = Command::new("ss")
        .args(["-tin", "state", "established"])
        .arg(format!("dport = :{server_port}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "... rtt:0.052/0.026 ..." (milliseconds: srtt/rttvar)
    let rtt = text
        .split_whitespace()
        .find_map(|f| f.strip_prefix("rtt:"))?;
    let srtt_ms: f64 = rtt.split('/').next()?.parse().ok()?;
    Some(srtt_ms * 1e-3)
}

fn sampler() -> Sampler {
    let sampler = Sampler::start(&SamplerConfig::default()).expect("sampler");
    if let Err(e) = &sampler.probes().tcp {
        panic!("tcp probe did not attach: {e}");
    }
    sampler
}

fn network<'a>(snapshot: &'a Snapshot, path: &str) -> &'a NetworkSample {
    let network = snapshot
        .cgroups
        .iter()
        .find(|c| c.path == path)
        .and_then(|c| c.network.as_ref());
    let network = network.expect("the client's network sample");
    eprintln!(
        "rtt {:?} samples, p50 {:.1} µs; connects {:?}, p50 {:.1} µs; failures {:?}, \
         retransmits {:?}, resets received {:?}",
        network.tcp_rtt.as_ref().map(|h| h.count),
        network
            .tcp_rtt
            .as_ref()
            .map_or(0.0, |h| h.p50_seconds * 1e6),
        network.tcp_connect_latency.as_ref().map(|h| h.count),
        network
            .tcp_connect_latency
            .as_ref()
            .map_or(0.0, |h| h.p50_seconds * 1e6),
        network.tcp_connect_failures,
        network.tcp_retransmits,
        network.tcp_resets_received
    );
    network
}

#[test]
fn loopback_rtt_agrees_with_ss_and_connects_are_counted() {
    require_root_and_cgroup_v2!();
    let (port, server) = serve(Ipv4Addr::LOCALHOST, Duration::from_secs(4));
    let mut cg = TestCgroup::create("tcp-client");
    let mut sampler = sampler();
    let pid = cg.spawn(None, client);
    // The truth: the kernel's smoothed RTT of the same connection as `ss` shows it,
    // every 50 ms while it lives (one reading at one moment is not enough: on a busy
    // machine the loopback RTT moves by 2x within a second).
    let mut reference: Vec<f64> = Vec::new();
    let polling = Instant::now();
    while polling.elapsed() < Duration::from_millis(3500) {
        reference.extend(ss_srtt(port));
        std::thread::sleep(Duration::from_millis(50));
    }
    server.join().expect("server");
    assert!(
        cg.wait_exit(pid, Duration::from_secs(10)),
        "client finished"
    );
    let snapshot = sampler.sample(Some(&cg.path));

    let network = network(&snapshot, &cg.path);
    let rtt = network.tcp_rtt.as_ref().expect("rtt histogram");
    let connect = network.tcp_connect_latency.as_ref().expect("connects");
    assert_eq!(connect.count, 1, "one established active open");
    assert_eq!(network.tcp_connect_failures, Some(1), "one refused connect");
    // The refusal's reset, and maybe one more: the server may close with the
    // client's last request unread.
    let resets = network.tcp_resets_received.expect("resets");
    assert!((1..=2).contains(&resets), "{resets} resets received");
    // One sample per socket per second over the ~4 s the connection lived.
    assert!((3..=6).contains(&rtt.count), "{} RTT samples", rtt.count);
    let (Some(low), Some(high)) = (
        reference.iter().copied().reduce(f64::min),
        reference.iter().copied().reduce(f64::max),
    ) else {
        panic!("ss showed no RTT for the connection (iproute2's ss is required)");
    };
    // Our p50 of once-a-second samples of the same kernel value lies within what
    // ss saw over the connection's life, give or take the histogram's resolution
    // (buckets 9% wide) and the moments between ss's readings.
    eprintln!(
        "ss srtt {:.1}-{:.1} µs over {} readings",
        low * 1e6,
        high * 1e6,
        reference.len()
    );
    assert!(
        (low * 0.8..=high * 1.2).contains(&rtt.p50_seconds),
        "p50 {:.1} µs outside ss's {:.1}-{:.1} µs",
        rtt.p50_seconds * 1e6,
        low * 1e6,
        high * 1e6
    );
}

/// `tc qdisc <verb> dev <dev> root netem <netem...>`, in namespace `ns` if given.
fn netem(ns: Option<&str>, verb: &str, dev: &str, netem: &str) -> bool {
    let mut cmd = Command::new("tc");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["qdisc", verb, "dev", dev, "root", "netem"])
        .args(netem.split_whitespace())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn netem_delay_is_the_rtt_and_connect_latency_and_loss_retransmits() {
    require_root_and_cgroup_v2!();
    require_network_namespaces!();
    let netns = TestNetns::create();
    if !netem(None, "add", &netns.host_if, "delay 10ms") {
        eprintln!("skipped: no netem qdisc here (sch_netem; the VMs load it)");
        return;
    }
    let ns = Some(netns.name.as_str());
    assert!(
        netem(ns, "add", &netns.ns_if, "delay 10ms"),
        "netem in the namespace"
    );

    let (_, server) = serve(netns.host_ip, Duration::from_secs(6));
    let mut tree = TestTree::create("tcp-netem");
    let client_path = tree.mkdir("client");
    let mut sampler = sampler();
    let (report, write_end) = report_pipe();
    tree.spawn("client", netns.enter(), client);
    drop(write_end);
    // Once connected, the client's direction also loses packets: its requests are
    // retransmitted. (Not before: a lost SYN would make the connect take 1 s.)
    std::thread::sleep(Duration::from_millis(800));
    assert!(netem(ns, "change", &netns.ns_if, "delay 10ms loss 5%"));
    server.join().expect("server");
    let (app_connect, app_rtt) = read_report(report);
    let snapshot = sampler.sample(Some(&client_path));

    let network = network(&snapshot, &client_path);
    let rtt = network.tcp_rtt.as_ref().expect("rtt histogram");
    let connect = network.tcp_connect_latency.as_ref().expect("connects");
    eprintln!(
        "the client's own timing: connect {:.2} ms, request/response median {:.2} ms",
        app_connect * 1e3,
        app_rtt * 1e3
    );
    assert_eq!(connect.count, 1);
    assert!(rtt.count >= 3, "{} RTT samples", rtt.count);
    // The kernel's view lies between the netem delay (20 ms; the path adds more)
    // and what the application itself timed (the same path plus its own syscalls
    // and wakeups: 1-3 ms under emulation), up to the ±4.3 % of a bucket midpoint.
    for (what, p50, app) in [
        ("connect", connect.p50_seconds, app_connect),
        ("rtt", rtt.p50_seconds, app_rtt),
    ] {
        assert!(
            (0.020 * 0.957..=app * 1.043).contains(&p50),
            "{what} p50 {p50} outside [20 ms of netem, {app} timed by the client]"
        );
    }
    assert!(
        network.tcp_retransmits.is_some_and(|r| r > 0),
        "loss retransmitted"
    );
}
