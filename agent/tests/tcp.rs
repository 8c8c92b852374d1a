//! The tcp probe against ground truth: a client process in a test cgroup talks to a
//! server of the test; the kernel's own view of the connection (`ss -ti`) is the
//! reference for its smoothed RTT, and the connects the client makes (one refused)
//! are counted exactly.

mod common;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    sync::atomic::{AtomicU16, Ordering},
    time::Duration,
};

use cgscope::{
    net::NetworkSample,
    sampler::{Sampler, SamplerConfig},
};
use common::TestCgroup;

/// Where the client connects; set before the client is forked.
static SERVER_PORT: AtomicU16 = AtomicU16::new(0);
/// A port nothing listens on (bound, then closed, by the test).
static CLOSED_PORT: AtomicU16 = AtomicU16::new(0);
/// Request/response rounds of the client, one every 10 ms.
const ROUNDS: u32 = 400;

/// The client: one refused connect, then ping-pong with the server, then exit.
/// Runs in a forked child: only syscalls, no allocation.
fn client() -> ! {
    let closed = CLOSED_PORT.load(Ordering::Relaxed);
    let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, closed));
    let port = SERVER_PORT.load(Ordering::Relaxed);
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        // SAFETY: exits the child without running the parent's destructors.
        unsafe { libc::_exit(3) }
    };
    let mut byte = [0u8; 1];
    for _ in 0..ROUNDS {
        if stream.write_all(b"x").is_err() || stream.read_exact(&mut byte).is_err() {
            // SAFETY: as above.
            unsafe { libc::_exit(4) }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

fn delayed_client() -> ! {
    std::thread::sleep(Duration::from_millis(200));
    client()
}

/// The smoothed RTT `ss -ti` shows for the client's end of the connection, seconds.
fn ss_srtt(client_port_of_server: u16) -> Option<f64> {
    let out = std::process::Command::new("ss")
        .args(["-tin", "state", "established"])
        .arg(format!("dport = :{client_port_of_server}"))
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

#[test]
fn rtt_connects_and_failures_of_a_client_cgroup() {
    require_root_and_cgroup_v2!();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    let port = listener.local_addr().expect("addr").port();
    SERVER_PORT.store(port, Ordering::Relaxed);
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    CLOSED_PORT.store(closed.local_addr().expect("addr").port(), Ordering::Relaxed);
    drop(closed);

    let mut cg = TestCgroup::create("tcp-client");
    let mut sampler = Sampler::start(&SamplerConfig::default()).expect("sampler");
    if let Err(e) = &sampler.probes().tcp {
        panic!("tcp probe did not attach: {e}");
    }
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut byte = [0u8; 1];
        while stream.read_exact(&mut byte).is_ok() {
            if stream.write_all(&byte).is_err() {
                break;
            }
        }
    });
    // The child must be in the cgroup before it creates its sockets: it is moved
    // right after fork, and waits for that before connecting.
    let pid = cg.spawn(None, delayed_client);
    std::thread::sleep(Duration::from_secs(3));
    let reference = ss_srtt(port);
    assert!(
        cg.wait_exit(pid, Duration::from_secs(30)),
        "client finished"
    );
    server.join().expect("server");
    let snapshot = sampler.sample(Some(&cg.path));

    let network: &NetworkSample = snapshot
        .cgroups
        .iter()
        .find(|c| c.path == cg.path)
        .and_then(|c| c.network.as_ref())
        .expect("the client's network sample");
    let rtt = network.tcp_rtt.as_ref().expect("rtt histogram");
    let connect = network
        .tcp_connect_latency
        .as_ref()
        .expect("connect histogram");
    eprintln!(
        "rtt: {} samples, p50 {:.1} µs; ss srtt {:?} µs; connects {} (p50 {:.1} µs), \
         failures {:?}, resets received {:?}",
        rtt.count,
        rtt.p50_seconds * 1e6,
        reference.map(|r| r * 1e6),
        connect.count,
        connect.p50_seconds * 1e6,
        network.tcp_connect_failures,
        network.tcp_resets_received
    );
    assert_eq!(connect.count, 1, "one established active open");
    assert_eq!(network.tcp_connect_failures, Some(1), "one refused connect");
    assert_eq!(network.tcp_resets_received, Some(1), "the refusal's reset");
    // One sample per socket per second over the ~4 s the connection lived.
    assert!((3..=6).contains(&rtt.count), "{} RTT samples", rtt.count);
    match reference {
        None => eprintln!("note: no `ss` here; RTT not compared"),
        Some(reference) => {
            // Our p50 of once-a-second samples against ss's srtt at one moment: the
            // same kernel value, sampled at different times (seen: within 15 %).
            let ratio = rtt.p50_seconds / reference;
            assert!(
                (0.7..=1.3).contains(&ratio),
                "p50 {} vs ss srtt {reference}",
                rtt.p50_seconds
            );
        }
    }
}
