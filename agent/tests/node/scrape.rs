//! Debian's Prometheus on the node scrapes `cgscope run` while a real pod works (at
//! its CPU quota, under a memory limit, reading its volume with direct IO, making
//! HTTP requests from its CNI namespace): every query of the Grafana dashboard
//! returns series here. A pure cgroup v2 node has a source for every panel (memory,
//! throttling and io.stat included), so none may be empty.

use std::{process::Stdio, time::Duration};

use super::{
    common::{self, free_port, Peer},
    panels, peers,
    pods::{ContainerSpec, PodSpec},
    runtimes::{self, Driver, BUSYBOX, GATEWAY},
    traffic, BIN, RUNTIME_TIMEOUT,
};

#[test]
#[ignore = "needs the real node: cargo xtask node"]
fn every_dashboard_query_returns_series_on_the_node() {
    require_node!();
    let cri = runtimes::containerd(Driver::Systemd);
    let (port, _accepted) = traffic::serve();
    let pod = PodSpec::burstable("web-4", "shop", &runtimes::uid(), Driver::Systemd);
    let pod_id = cri.run_pod(&pod);
    let script = format!(
        "while :; do :; done &
         while :; do
           dd if=/data/file of=/dev/null bs=4096 count=100 iflag=direct 2>/dev/null
           wget -q -O /dev/null http://{GATEWAY}:{port}/
           sleep 0.2
         done"
    );
    let mut web = ContainerSpec::shell("web", BUSYBOX, &script)
        .cpu_limit(300)
        .memory_limit(64 << 20);
    web.config.mounts = vec![traffic::volume(100)];
    let id = cri.start(&pod_id, &pod, &web);

    let listen = format!("127.0.0.1:{}", free_port());
    let _agent = Peer(
        std::process::Command::new(BIN)
            .args(["run", "--interval", "2s", "--listen", &listen])
            .args(["--runtime-timeout", RUNTIME_TIMEOUT])
            .env("NODE_NAME", panels::NODE)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cgscope run"),
    );
    let prometheus = peers::prometheus_labelled(
        &listen,
        free_port(),
        &format!("{{k8s_node_name: {}}}", panels::NODE),
    );
    panels::wait_for_histograms(prometheus.port, &id, Duration::from_secs(180));
    let no_source = panels::judge(prometheus.port, &listen);
    assert!(
        no_source.is_empty(),
        "panels without a source on a pure cgroup v2 node: {no_source:?}"
    );
    // The node's snapshot, a named pod and its container in it: each key and type
    // as docs/snapshot.schema.json says, and no key it does not list.
    let (status, snapshot) = common::http_get(&listen, "/api/v1/snapshot").expect("GET");
    assert_eq!(status, 200, "{snapshot}");
    common::snapshot_schema_check(&snapshot);
    cri.remove_pod(&pod_id, &pod);
}
