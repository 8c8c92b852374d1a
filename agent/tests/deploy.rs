//! `deploy/`: the manifests and the unit pass the real validators (yamllint,
//! kubernetes-validate, systemd-analyze) and grant exactly the capabilities cgscope
//! names (`privilege::NEEDS`). Host only: the validators are Python and systemd
//! programs; `capabilities.rs` runs cgscope with that set, also in the VMs.

mod common;

use std::{path::PathBuf, process::Command};

use serde_json::Value;

use common::{agent_container, daemonset_capabilities, deploy, yaml};

const BIN: &str = env!("CARGO_BIN_EXE_cgscope");

/// What cgscope says it needs, as Linux spells it (`CAP_BPF`), sorted.
fn needed() -> Vec<String> {
    let mut names: Vec<String> = cgscope::privilege::NEEDS
        .iter()
        .map(|n| n.capability.to_string())
        .collect();
    names.sort();
    names
}

/// A systemd directive's words (the last assignment wins, as in systemd).
fn unit_directive(unit: &str, key: &str) -> Vec<String> {
    let mut words: Vec<String> = unit
        .lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    words.sort();
    words
}

#[test]
fn every_deployment_grants_exactly_what_cgscope_needs_and_nothing_more() {
    assert_eq!(daemonset_capabilities(), needed(), "DaemonSet");
    let unit = std::fs::read_to_string(deploy().join("systemd/cgscope.service")).unwrap();
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        assert_eq!(unit_directive(&unit, key), needed(), "systemd {key}");
    }
    for (key, want) in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict")] {
        assert_eq!(unit_directive(&unit, key), [want], "systemd {key}");
    }

    let daemonset = yaml(&deploy().join("kubernetes/daemonset.yaml"));
    let container = agent_container(&daemonset);
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    for mount in container["volumeMounts"].as_array().expect("mounts") {
        assert_eq!(mount["readOnly"], true, "{mount}");
    }
    // Each capability and each mount says why, in a comment right above it.
    let text = std::fs::read_to_string(deploy().join("kubernetes/daemonset.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let item = line.trim_start();
        let justified = || lines[i - 1].trim_start().starts_with('#');
        if needed().iter().any(|c| item == format!("- {}", &c[4..])) {
            assert!(justified(), "no comment above capability {item}");
        }
        if item.starts_with("- name:") && lines[i + 1].trim_start().starts_with("mountPath:") {
            assert!(justified(), "no comment above mount {item}");
        }
    }
    // The downward API gives the node's name, the health endpoints are probed.
    let env = container["env"].as_array().expect("env");
    assert!(env
        .iter()
        .any(|e| e["name"] == "NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
}

/// Applies an RFC 6902 patch (the `add` and `replace` operations the overlays use).
fn apply_json_patch(doc: &mut Value, patch: &Value) {
    for op in patch.as_array().expect("a JSON patch is a list") {
        let path = op["path"].as_str().expect("path");
        let value = op["value"].clone();
        match op["op"].as_str() {
            Some("replace") => *doc.pointer_mut(path).expect(path) = value,
            Some("add") => {
                let (parent, key) = path.rsplit_once('/').expect(path);
                let parent = doc.pointer_mut(parent).expect(path);
                match parent {
                    Value::Array(items) if key == "-" => items.push(value),
                    Value::Object(fields) => {
                        fields.insert(key.to_owned(), value);
                    }
                    _ => panic!("cannot add at {path}"),
                }
            }
            other => panic!("patch op {other:?} not supported here"),
        }
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (cargo xtask setup installs it)"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn manifests_pass_yamllint_and_kubernetes_validate_also_rendered_privileged() {
    run_ok(
        Command::new("python3")
            .args(["-m", "yamllint", "--strict", "-c"])
            .arg(deploy().join(".yamllint"))
            .arg(deploy()),
    );

    let base = deploy().join("kubernetes");
    let kustomization = yaml(&base.join("kustomization.yaml"));
    let mut files: Vec<PathBuf> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| base.join(r.as_str().expect("a file")))
        .collect();

    // The privileged overlay, rendered as kustomize would: its patch on the base.
    let overlay = base.join("overlays/privileged");
    let overlay_kustomization = yaml(&overlay.join("kustomization.yaml"));
    assert_eq!(
        overlay_kustomization["resources"],
        serde_json::json!(["../.."])
    );
    let patch_file = overlay_kustomization["patches"][0]["path"]
        .as_str()
        .expect("patch");
    let mut daemonset = yaml(&base.join("daemonset.yaml"));
    apply_json_patch(&mut daemonset, &yaml(&overlay.join(patch_file)));
    let security = &agent_container(&daemonset)["securityContext"];
    assert_eq!(security["privileged"], true);
    let rendered =
        std::env::temp_dir().join(format!("cgscope-privileged-{}.json", std::process::id()));
    std::fs::write(&rendered, daemonset.to_string()).unwrap();
    files.push(rendered.clone());

    // The oldest Kubernetes with every field used (appArmorProfile: 1.30) and the
    // validator's newest.
    for version in ["1.30.0", "1.37.0"] {
        let out = run_ok(
            Command::new("python3")
                .args(["-m", "kubernetes_validate", "--strict", "-k", version])
                .args(&files),
        );
        eprint!("{out}");
        assert_eq!(
            out.matches("passed for resource").count(),
            files.len(),
            "{out}"
        );
    }
    let _ = std::fs::remove_file(rendered);
}

#[test]
fn systemd_unit_verifies() {
    // verify also checks that ExecStart exists: point it at the binary just built.
    let unit = std::fs::read_to_string(deploy().join("systemd/cgscope.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/cgscope run"));
    let dir = std::env::temp_dir().join(format!("cgscope-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("cgscope.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/cgscope", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (cargo xtask setup installs systemd)");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

#[test]
fn collector_pipelines_use_only_defined_components_memory_limiter_first() {
    for (file, exporters) in [
        ("agent.yaml", &["otlp"][..]),
        (
            "gateway.yaml",
            &["prometheusremotewrite", "clickhouse", "debug"][..],
        ),
    ] {
        let config = yaml(&deploy().join("otel-collector").join(file));
        let pipeline = &config["service"]["pipelines"]["metrics"];
        let names = |kind: &str| -> Vec<String> {
            pipeline[kind]
                .as_array()
                .unwrap_or_else(|| panic!("{file}: no {kind} in the metrics pipeline"))
                .iter()
                .map(|n| n.as_str().expect("a name").to_owned())
                .collect()
        };
        for kind in ["receivers", "processors", "exporters"] {
            let used = names(kind);
            let defined: Vec<&String> = config[kind].as_object().expect(kind).keys().collect();
            for name in &used {
                assert!(
                    defined.contains(&name),
                    "{file}: {kind} {name} used, not defined"
                );
            }
            for name in defined {
                assert!(
                    used.contains(name),
                    "{file}: {kind} {name} defined, not used"
                );
            }
        }
        assert_eq!(names("receivers"), ["otlp"], "{file}");
        // The collector's advice: the memory limiter first, batching last.
        assert_eq!(names("processors"), ["memory_limiter", "batch"], "{file}");
        assert_eq!(names("exporters"), exporters, "{file}");
    }
}
