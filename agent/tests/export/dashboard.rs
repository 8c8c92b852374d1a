//! `deploy/grafana/cgscope.json` against a real Prometheus that scraped cgscope while
//! a container ran CPU contention, block IO and TCP traffic: every panel's PromQL
//! and every variable's query parses and returns series, except where this host
//! has no source for a metric at all (then it is named).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::Duration,
};

use crate::{
    agent, common,
    common::{command_in, free_port, LoopDevice, TestNetns, TestTree},
    panels, peers, require_network_namespaces, require_root_and_cgroup_v2, serial, CONTAINER_ID,
    POD_UID,
};

/// One connection echoing 100-byte messages every 10 ms (RTT samples), a new one
/// every second (connect latency), inside the caller's network namespace.
fn tcp_chatter() -> ! {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|_| std::process::exit(1));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| std::process::exit(1));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 100];
                while stream.read_exact(&mut buf).is_ok() && stream.write_all(&buf).is_ok() {}
            });
        }
    });
    loop {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let mut buf = [7u8; 100];
            for _ in 0..100 {
                if stream.write_all(&buf).is_err() || stream.read_exact(&mut buf).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[test]
fn every_panel_and_variable_of_the_dashboard_returns_series() {
    require_root_and_cgroup_v2!();
    require_network_namespaces!();
    let _serial = serial();
    let mut tree = TestTree::create("dashboard");
    let pod = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        POD_UID.replace('-', "_")
    );
    let container = format!("{pod}/cri-containerd-{CONTAINER_ID}.scope");
    tree.mkdir_delegated(&container);
    let netns = TestNetns::create();
    for _ in 0..2 {
        let pid = tree.spawn(&container, netns.enter(), common::spin);
        common::pin(pid, 0);
    }
    tree.spawn(&container, netns.enter(), tcp_chatter);
    let disk = LoopDevice::create().expect("a loop device");
    let mut reads = command_in(&tree.top.dir.join(&container), "sh");
    reads.args([
        "-c",
        &format!(
            "while :; do dd if={} of=/dev/null bs=4k count=4000 iflag=direct 2>/dev/null; sleep 0.2; done",
            disk.dev
        ),
    ]);
    tree.start(reads);

    let listen = format!("127.0.0.1:{}", free_port());
    let _agent = agent(&listen, &tree.top.path, &[]);
    let prom = peers::prometheus_labelled(
        &listen,
        free_port(),
        &format!("{{k8s_node_name: {}}}", panels::NODE),
    );

    panels::wait_for_histograms(prom.port, CONTAINER_ID, Duration::from_secs(60));
    let no_source = panels::judge(prom.port, &listen);
    for must in [
        "Run-queue latency",
        "IO latency",
        "TCP RTT",
        "Network throughput",
        "IOPS",
    ] {
        assert!(
            !no_source
                .iter()
                .any(|n| n.starts_with(&format!("{must} ("))),
            "{must} must have data here"
        );
    }
}

#[test]
fn metric_names_are_read_from_expressions() {
    assert_eq!(
        panels::metrics_in("sum(rate(a_b{x=\"1\"}[1m])) / c{k8s_container_name=~\"$c\"}"),
        ["a_b", "c"]
    );
}
