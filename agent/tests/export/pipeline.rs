//! The deployed path, kernel to gateway, with the deploy/ files as they are: cgscope
//! configured by the DaemonSet's OTLP variables sends to a rotel started from
//! `deploy/otel-collector/rotel-agent.env`, which forwards to a second rotel (the
//! gateway's place) that prints what arrives. Only addresses are moved to loopback.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    agent, busy_container, common,
    common::{free_port, Peer},
    peers::{self, RotelOutput},
    require_root_and_cgroup_v2, serial, CONTAINER_ID,
};

/// `KEY=VALUE` lines of an env file (comments and blank lines skipped).
fn env_file(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The port at the end of `host:port` or `scheme://host:port`.
fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address}"))
}

#[test]
fn the_daemonsets_otlp_settings_reach_the_gateway_through_rotel_agent_env() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let deploy = common::deploy();

    // What the DaemonSet tells cgscope, and where rotel-agent.env listens.
    let daemonset = common::yaml(&deploy.join("kubernetes/daemonset.yaml"));
    let env = common::agent_container(&daemonset)["env"]
        .as_array()
        .expect("env")
        .clone();
    let var = |name: &str| -> String {
        env.iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("DaemonSet sets no {name}"))
            .to_owned()
    };
    let (endpoint, protocol) = (
        var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        var("OTEL_EXPORTER_OTLP_PROTOCOL"),
    );
    let rotel_env = env_file(&deploy.join("otel-collector/rotel-agent.env"));
    let setting = |key: &str| {
        rotel_env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {key}"))
    };
    let listening = match protocol.as_str() {
        "grpc" => setting("ROTEL_OTLP_GRPC_ENDPOINT"),
        _ => setting("ROTEL_OTLP_HTTP_ENDPOINT"),
    };
    assert_eq!(
        port_of(&endpoint),
        port_of(&listening),
        "the DaemonSet sends {protocol} to {endpoint}; the agent collector takes {protocol} on {listening}"
    );

    let gateway = peers::rotel(free_port(), free_port());
    let (grpc, http) = (free_port(), free_port());
    let mut relay = Command::new(peers::rotel_agent());
    relay
        .arg("start")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &rotel_env {
        relay.env(k, v);
    }
    relay
        .env("ROTEL_OTLP_GRPC_ENDPOINT", format!("127.0.0.1:{grpc}"))
        .env("ROTEL_OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{http}"))
        .env(
            "ROTEL_OTLP_EXPORTER_ENDPOINT",
            format!("http://127.0.0.1:{}", gateway.grpc),
        );
    let _relay = Peer(
        relay
            .spawn()
            .expect("start rotel-agent from rotel-agent.env"),
    );
    peers::wait_listening(&[grpc, http]);

    let (tree, _path) = busy_container("pipeline");
    let local_port = if protocol == "grpc" { grpc } else { http };
    let endpoint = endpoint.replace("$(HOST_IP)", "127.0.0.1").replace(
        &format!(":{}", port_of(&endpoint)),
        &format!(":{local_port}"),
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let _agent = agent(
        &listen,
        &tree.top.path,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", &protocol),
        ],
    );

    // rotel-agent.env batches for up to 5 s.
    let started = Instant::now();
    loop {
        let out = RotelOutput::parse(&gateway.output());
        let arrived = out.resources.iter().any(|r| {
            r.attributes.get("container.id").map(String::as_str) == Some(CONTAINER_ID)
                && r.metrics.contains_key("container.cpu.runq.latency")
        });
        if arrived {
            eprintln!(
                "the container's run-queue histogram reached the gateway in {:?}",
                started.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing reached the gateway in 30 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(tree);
}
