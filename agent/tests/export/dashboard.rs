//! `deploy/grafana/cgscope.json` against a real Prometheus that scraped cgscope while
//! a container ran CPU contention, block IO and TCP traffic: every panel's PromQL
//! and every variable's query parses and returns series, except where this host
//! has no source for a metric at all (then it is named).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    agent, common,
    common::{command_in, free_port, http_get, LoopDevice, TestNetns, TestTree},
    peers, require_network_namespaces, require_root_and_cgroup_v2, serial, CONTAINER_ID, POD_UID,
};

const NODE: &str = "test-node";

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/cgscope.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect(path)).expect("dashboard JSON")
}

/// A panel's query as Grafana sends it with the node picked and "All" elsewhere.
fn expand(expr: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$node", NODE)
        .replace("$namespace", ".*")
        .replace("$pod", ".*")
        .replace("$container", ".*")
}

/// The metric names an expression reads: the identifiers right before a `{`.
fn metrics_in(expr: &str) -> Vec<String> {
    expr.split('{')
        .filter_map(|before| {
            let name = before
                .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()?;
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

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
    let prom =
        peers::prometheus_labelled(&listen, free_port(), &format!("{{k8s_node_name: {NODE}}}"));

    // Each histogram the dashboard draws has to have a rate before it is judged.
    let ready = [
        "container_cpu_runq_latency_seconds_bucket",
        "container_disk_latency_seconds_bucket",
        "container_network_tcp_rtt_seconds_bucket",
    ];
    let started = Instant::now();
    for metric in ready {
        let query = format!("sum(rate({metric}{{container_id=\"{CONTAINER_ID}\"}}[10s])) > 0");
        while peers::instant_query(prom.port, &query).1.is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no {metric} in 60 s"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let (_, exposition) = http_get(&listen, "/metrics").expect("/metrics");
    assert_eq!(
        metrics_in("sum(rate(a_b{x=\"1\"}[1m])) / c{k8s_container_name=~\"$c\"}"),
        ["a_b", "c"]
    );

    // Every metric a panel reads is one cgscope defines (a typo is not "no source").
    let known: Vec<String> = cgscope::export::catalogue::all()
        .map(cgscope::export::prometheus::name)
        .collect();
    let defined = |m: &str| {
        known.iter().any(|k| {
            m == k
                || m.strip_prefix(k.as_str())
                    .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
        })
    };
    let dashboard = dashboard();
    for target in dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
    {
        for m in metrics_in(target["expr"].as_str().unwrap_or_default()) {
            assert!(defined(&m), "{m}: not a metric cgscope exports");
        }
    }
    let mut no_source = Vec::new();
    let mut answered = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = expand(target["expr"].as_str().expect("expr"));
            let (status, result) = peers::instant_query(prom.port, &expr);
            assert_eq!(status, 200, "panel {title:?}: Prometheus refused {expr}");
            if !result.is_empty() {
                answered += 1;
                continue;
            }
            // Empty: only acceptable when cgscope exported no series of a metric it
            // reads (e.g. memory.* and cpu.max without v2 controllers, hybrid host).
            let missing: Vec<String> = metrics_in(&expr)
                .into_iter()
                .filter(|m| !exposition.contains(&format!("\n{m}")))
                .collect();
            assert!(
                !missing.is_empty(),
                "panel {title:?} returned no series: {expr}"
            );
            no_source.push(format!("{title} ({})", missing.join(", ")));
        }
    }
    eprintln!("{answered} panel queries returned series; no source on this host: {no_source:?}");
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

    // The variables: label_values(metric{selector}, label) is the series API.
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue; // the data source picker
        };
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .expect("label_values(...)");
        let (selector, label) = inner.rsplit_once(", ").expect("metric, label");
        let path = format!(
            "/api/v1/label/{}/values?match[]={}",
            label.trim(),
            peers::url_encode(&expand(selector))
        );
        let (status, values) = peers::prometheus_api(prom.port, &path);
        assert_eq!(status, 200, "variable {query}");
        if label.trim() == "k8s_node_name" {
            assert_eq!(values, serde_json::json!([NODE]), "variable {query}");
        }
    }
}
