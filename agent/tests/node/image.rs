//! cgscope as its own image, confined as the DaemonSet says: built on the node from
//! `deploy/container/Containerfile` (podman, no registry: the build stage replaced
//! by the binary these tests run, the base made from the node's own glibc), then
//! run through the CRI with the container fields of
//! `deploy/kubernetes/daemonset.yaml`, read from the manifest here, so that a change
//! to the manifest is what is tested.

use std::{path::Path, time::Duration};

use serde_json::Value;

use super::{
    common::{self, agent_container, http_get},
    cri::{
        container_state, namespace_mode, profile_type, Capability, ContainerConfig,
        ContainerMetadata, ImageSpec, Int64Value, KeyValue, LinuxContainerConfig,
        LinuxContainerResources, LinuxContainerSecurityContext, Mount, NamespaceOption,
        SecurityProfile,
    },
    log_lines,
    pods::{ContainerSpec, PodSpec},
    runtimes::{self, sh, Driver, BUSYBOX, GATEWAY},
    BIN,
};

/// The image the DaemonSet's pod runs here.
const IMAGE: &str = "cgscope.local/cgscope:test";
/// What `gcr.io/distroless/cc-debian12` is to the published image: glibc and libgcc.
const BASE: &str = "cgscope.local/cc-debian12:test";

/// Builds the image once with podman from the Containerfile and loads it into
/// containerd's `k8s.io` namespace.
fn build_image() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let repo = repo.display();
    // The base: the libraries the binary links, from this node (Debian 12).
    sh(&format!(
        "set -e
         rm -rf /tmp/cc-root && mkdir -p /tmp/cc-root
         for lib in $(ldd {BIN} | grep -o '/[^ ]*'); do
           cp --parents -L \"$lib\" /tmp/cc-root/
         done
         tar -C /tmp/cc-root -cf /tmp/cc-root.tar .
         podman import /tmp/cc-root.tar {BASE}"
    ));
    // The build stage replaced by a context holding what it would have built.
    sh(&format!(
        "set -e
         rm -rf /tmp/cgscope-build && mkdir -p /tmp/cgscope-build/src/target/release
         cp {BIN} /tmp/cgscope-build/src/target/release/cgscope
         podman build --pull=never --network=none \
           --build-context build=/tmp/cgscope-build --build-arg BASE_IMAGE={BASE} \
           -f {repo}/deploy/container/Containerfile -t {IMAGE} {repo}
         podman save --format docker-archive -o /tmp/cgscope-image.tar {IMAGE}
         ctr -n k8s.io images import /tmp/cgscope-image.tar"
    ));
}

/// A quantity of bytes as Kubernetes writes it (`256Mi`, `1Gi`, `1000`).
fn bytes(quantity: &str) -> i64 {
    let (number, unit) = quantity.split_at(
        quantity
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(quantity.len()),
    );
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        other => panic!("quantity unit {other:?}"),
    };
    number.parse::<i64>().expect("a quantity") << shift
}

/// The DaemonSet's container as kubelet hands it to the CRI: args, env (the
/// downward API's values for this node), mounts of its hostPath volumes, memory
/// limit and security context; `hostPID` as the PID namespace mode.
fn daemonset_container(node_ip: &str) -> (ContainerConfig, i32) {
    let ds = common::yaml(&common::deploy().join("kubernetes/daemonset.yaml"));
    let pod = &ds["spec"]["template"]["spec"];
    let c = agent_container(&ds);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let downward = [("NODE_NAME", "cgscope-node"), ("HOST_IP", node_ip)];
    let envs = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let key = e["name"].as_str().expect("env name").to_owned();
            let value = match e["value"].as_str() {
                // kubelet expands $(VAR) of the variables defined before.
                Some(v) => downward
                    .iter()
                    .fold(v.to_owned(), |v, (k, x)| v.replace(&format!("$({k})"), x)),
                None => downward
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| (*v).to_owned())
                    .unwrap_or_else(|| panic!("no downward value for {key}")),
            };
            KeyValue { key, value }
        })
        .collect();
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mounts = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            let volume = volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .expect("the mount's volume");
            Mount {
                container_path: m["mountPath"].as_str().expect("mountPath").to_owned(),
                host_path: volume["hostPath"]["path"]
                    .as_str()
                    .expect("a hostPath volume")
                    .to_owned(),
                readonly: m["readOnly"].as_bool().unwrap_or(false),
                ..Default::default()
            }
        })
        .collect();
    let sc = &c["securityContext"];
    let profile = |p: &Value| match p["type"].as_str() {
        Some("RuntimeDefault") => profile_type::RUNTIME_DEFAULT,
        Some("Unconfined") => profile_type::UNCONFINED,
        other => panic!("profile type {other:?}"),
    };
    let pid = if pod["hostPID"] == true {
        namespace_mode::NODE
    } else {
        namespace_mode::CONTAINER
    };
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: c["name"].as_str().expect("name").to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.to_owned(),
        }),
        args: strings(&c["args"]),
        envs,
        mounts,
        log_path: "cgscope.log".to_owned(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: bytes(
                    c["resources"]["limits"]["memory"]
                        .as_str()
                        .expect("a memory limit"),
                ),
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: strings(&sc["capabilities"]["add"]),
                    drop_capabilities: strings(&sc["capabilities"]["drop"]),
                }),
                privileged: sc["privileged"] == true,
                namespace_options: Some(NamespaceOption {
                    pid,
                    ..NamespaceOption::kubelet()
                }),
                run_as_user: sc["runAsUser"].as_i64().map(|value| Int64Value { value }),
                readonly_rootfs: sc["readOnlyRootFilesystem"] == true,
                no_new_privs: sc["allowPrivilegeEscalation"] == false,
                seccomp: Some(SecurityProfile {
                    profile_type: profile(&sc["seccompProfile"]),
                    ..Default::default()
                }),
                apparmor: Some(SecurityProfile {
                    profile_type: profile(&sc["appArmorProfile"]),
                    ..Default::default()
                }),
            }),
        }),
        ..Default::default()
    };
    (config, pid)
}

#[test]
#[ignore = "needs the real node: cargo xtask node"]
fn the_image_under_the_daemonsets_confinement_attaches_every_probe_and_names_pods() {
    require_node!();
    let cri = runtimes::containerd(Driver::Systemd);
    build_image();

    // A workload to be named: a pod of its own.
    let web = PodSpec::burstable("web-3", "shop", &runtimes::uid(), Driver::Systemd);
    let web_pod = cri.run_pod(&web);
    let web_id = cri.start(&web_pod, &web, &ContainerSpec::sleeper("web", BUSYBOX));

    // The agent's pod, as the DaemonSet's: the host's PID namespace.
    let mut agent = PodSpec::burstable(
        "cgscope-x7k2p",
        "cgscope",
        &runtimes::uid(),
        Driver::Systemd,
    );
    let (mut config, pid) = daemonset_container(GATEWAY);
    if let Some(sandbox) = agent.config.linux.as_mut() {
        let options = sandbox
            .security_context
            .get_or_insert_with(Default::default)
            .namespace_options
            .get_or_insert_with(NamespaceOption::kubelet);
        options.pid = pid;
    }
    let log_dir = Path::new(&agent.config.log_directory).to_path_buf();
    let agent_pod = cri.run_pod(&agent);

    // `cgscope check` first: every probe attaches under this confinement.
    let mut check = config.clone();
    check.args = vec!["check".into()];
    check.log_path = "check.log".into();
    if let Some(m) = check.metadata.as_mut() {
        m.name = "cgscope-check".into();
    }
    let check_id = cri.create_container(&agent_pod, &check, &agent.config);
    cri.start_container(&check_id);
    let status = cri.wait_container(&check_id, Duration::from_secs(120), |s| {
        s.state == container_state::EXITED
    });
    let lines = log_lines(&log_dir.join("check.log"));
    eprintln!("node: cgscope check in its image:\n{}", lines.join("\n"));
    for probe in ["runq", "blockio", "oom", "tcp"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("probe {probe}")) && l.ends_with("attached")),
            "probe {probe} not attached under the DaemonSet's confinement: {lines:#?}"
        );
    }
    assert_eq!(status.exit_code, 0, "check: {status:?}");

    // Then the agent itself: it names the workload through the mounted sockets.
    config.log_path = "run.log".into();
    let run_id = cri.create_container(&agent_pod, &config, &agent.config);
    cri.start_container(&run_id);
    let ip = cri
        .pod_sandbox_status(&agent_pod)
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .expect("the agent pod's IP");
    let listen = format!("{ip}:9464");
    let mut named = None;
    runtimes::wait_until("the agent's snapshot", Duration::from_secs(180), || {
        let Ok((200, body)) = http_get(&listen, "/api/v1/snapshot") else {
            return false;
        };
        let snapshot: Value = serde_json::from_str(&body).unwrap_or_default();
        named = snapshot["cgroups"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["container"]["id"] == web_id.as_str())
            .cloned();
        named
            .as_ref()
            .is_some_and(|c| c["container"]["name"] == "web")
    });
    let c = named.expect("the workload");
    assert_eq!(c["container"]["pod"], "web-3", "{c:#}");
    assert_eq!(c["container"]["namespace"], "shop", "{c:#}");
    eprintln!(
        "node: the agent's own log:\n{}",
        log_lines(&log_dir.join("run.log")).join("\n")
    );
    cri.remove_pod(&agent_pod, &agent);
    cri.remove_pod(&web_pod, &web);
}
