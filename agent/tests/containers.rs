//! Containers as the kernel sees them: a Kubernetes pod (kubelet systemd driver,
//! containerd) built from real cgroups, its processes in their own network namespace
//! behind a veth pair, and known traffic sent to it from the host.

mod common;

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use cgscope::{
    sampler::{Sampler, SamplerConfig},
    snapshot::{CgroupKind, Qos, Runtime},
};
use common::{find, schedstat, TestNetns, TestTree};

const POD_UID: &str = "8e1f3c2a-7b4d-4e5f-9a6b-1c2d3e4f5a6b";
const CONTAINER_ID: &str = "9b8f7e6d5c4b3a29180716253443526170819203a4b5c6d7e8f9a0b1c2d3e4f5";
const DATAGRAMS: u64 = 200;
const DATAGRAM_BYTES: usize = 1000;
const CONNECTS: u64 = 5;

#[test]
fn kubepods_container_identity_stats_and_network() {
    require_root_and_cgroup_v2!();
    require_network_namespaces!();
    let mut tree = TestTree::create("k8s");
    let pod_rel = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8e1f3c2a_7b4d_4e5f_9a6b_1c2d3e4f5a6b.slice";
    let pod = tree.mkdir(pod_rel);
    let container_rel = format!("{pod_rel}/cri-containerd-{CONTAINER_ID}.scope");
    let container = tree.mkdir(&container_rel);
    let netns = TestNetns::create();
    let spinner = tree.spawn(&container_rel, netns.enter(), common::spin);
    tree.spawn(&container_rel, netns.enter(), common::sleep_forever);

    // The truth: the spinner's CPU time from the scheduler, read on both sides of
    // the sampler's baseline and of its last read, so that whatever the machine's
    // load makes of the gaps, cgscope's window lies between the two readings.
    let config = SamplerConfig::default();
    let outer_start = schedstat(spinner).0;
    let mut sampler = Sampler::start(&config).expect("sampler");
    let inner_start = schedstat(spinner).0;

    let socket = UdpSocket::bind((netns.host_ip, 0)).expect("bind host end");
    for _ in 0..DATAGRAMS {
        socket
            .send_to(&[0x5a; DATAGRAM_BYTES], (netns.ns_ip, 9))
            .expect("send");
    }
    for _ in 0..CONNECTS {
        let refused =
            TcpStream::connect_timeout(&SocketAddr::from((netns.ns_ip, 1)), Duration::from_secs(2));
        assert!(refused.is_err(), "nothing listens on port 1");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let inner_end = schedstat(spinner).0;
    let snapshot = sampler.sample(Some(&tree.top.path));
    let outer_end = schedstat(spinner).0;
    let (low, high) = (
        (inner_end - inner_start) as f64 * 1e-9,
        (outer_end - outer_start) as f64 * 1e-9,
    );

    let p = find(&snapshot.cgroups, &pod);
    assert_eq!(p.kind, CgroupKind::Pod);
    let pc = p.container.as_ref().expect("pod container object");
    assert_eq!(
        (pc.pod_uid.as_deref(), pc.qos),
        (Some(POD_UID), Some(Qos::Burstable))
    );

    let c = find(&snapshot.cgroups, &container);
    assert_eq!(c.kind, CgroupKind::Container);
    let cc = c.container.as_ref().expect("container object");
    assert_eq!(cc.id.as_deref(), Some(CONTAINER_ID));
    assert_eq!(
        (cc.runtime, cc.pod_uid.as_deref()),
        (Some(Runtime::Containerd), Some(POD_UID))
    );

    // CPU: the container's usage from cpu.stat against the scheduler's cpu_time.
    let usage = c.cpu.usage_seconds.expect("usage");
    eprintln!("container cpu {usage:.3}s, schedstat {low:.3}-{high:.3}s");
    assert!(
        (low * 0.98..=high * 1.02).contains(&usage),
        "{usage} vs schedstat {low}-{high}"
    );
    // The scan reads a pod's cpu.stat before its container's, and the spinner runs
    // in between (milliseconds under emulation): allow that much.
    let pod_usage = p.cpu.usage_seconds.unwrap_or(0.0);
    eprintln!("pod cpu {pod_usage:.3}s");
    assert!(
        pod_usage >= usage * 0.95,
        "a pod's usage includes its containers: {pod_usage} vs {usage}"
    );
    assert!(c.pressure.cpu.is_some(), "PSI present");

    // Network: owned by the pod, read in the pod's namespace.
    assert!(
        c.network.as_ref().is_none_or(|n| n.netns.is_none()),
        "containers share their pod's network namespace"
    );
    let net = p.network.as_ref().expect("pod network");
    assert_eq!(net.netns, Some(netns.inode()));
    let veth = net
        .interfaces
        .iter()
        .find(|i| i.name == netns.ns_if)
        .expect("veth in the pod's netns");
    let wire = DATAGRAMS * (DATAGRAM_BYTES as u64 + 8 + 20 + 14); // UDP + IPv4 + Ethernet
    eprintln!(
        "veth rx {} packets {} bytes; expected ≥ {DATAGRAMS} / {wire}",
        veth.rx_packets, veth.rx_bytes
    );
    assert!(veth.rx_packets >= DATAGRAMS + CONNECTS && veth.rx_packets < DATAGRAMS + CONNECTS + 20);
    assert!(veth.rx_bytes >= wire && veth.rx_bytes < wire + 4096);
    assert_eq!(net.udp.as_ref().expect("udp").no_ports, Some(DATAGRAMS));
    let rsts = net.tcp.as_ref().expect("tcp").out_rsts.expect("OutRsts");
    assert!((CONNECTS..CONNECTS + 3).contains(&rsts), "OutRsts {rsts}");
}
