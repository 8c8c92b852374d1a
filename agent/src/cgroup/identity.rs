//! What a cgroup is, from its path alone: a Kubernetes pod or container, a Docker or
//! Podman container, a systemd service or slice, or something else. Names (pod,
//! namespace, image) come later from the runtimes; this only parses path layouts:
//!
//! ```text
//! kubelet, systemd driver   kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/<rt>-<id>.scope
//!   guaranteed              kubepods.slice/kubepods-pod<uid_>.slice/<rt>-<id>.scope
//! kubelet, cgroupfs driver  kubepods/<qos>/pod<uid>/<id>      (guaranteed: kubepods/pod<uid>/<id>)
//! runtimes                  cri-containerd-<id>  crio-<id> (not crio-conmon-)  docker-<id>.scope  /docker/<id>
//!                           libpod-<id> (not libpod-conmon-)  /libpod_parent/libpod-<id>
//! ```
//! The systemd driver writes the pod UID with `_` for `-`; it is reported with `-`.

use crate::snapshot::{CgroupKind, Qos, Runtime};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub kind: Option<CgroupKind>,
    /// 64 hex digits, for containers.
    pub container_id: Option<String>,
    /// Runtime, when the path says (`cri-containerd-`, `crio-`, `docker`, `libpod`).
    pub runtime: Option<Runtime>,
    /// For pods and the containers in them.
    pub pod_uid: Option<String>,
    pub qos: Option<Qos>,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pod UID: 8-4-4-4-12 hex digits with `-` or `_` between; returned with `-`.
fn pod_uid(s: &str) -> Option<String> {
    let uid = s.replace('_', "-");
    let groups: Vec<&str> = uid.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then_some(uid)
}

/// The pod segment of a path component, if it is one (either driver).
fn pod_segment(component: &str) -> Option<(String, Qos)> {
    if let Some(name) = component.strip_suffix(".slice") {
        // kubepods-burstable-pod<uid>.slice, kubepods-pod<uid>.slice (also nested
        // under kubelet.slice as kubelet-kubepods-...).
        let (prefix, uid) = name.rsplit_once("-pod")?;
        if !prefix.ends_with("kubepods") && !prefix.contains("kubepods-") {
            return None;
        }
        let qos = if prefix.ends_with("-burstable") {
            Qos::Burstable
        } else if prefix.ends_with("-besteffort") {
            Qos::Besteffort
        } else {
            Qos::Guaranteed
        };
        return pod_uid(uid).map(|u| (u, qos));
    }
    pod_uid(component.strip_prefix("pod")?).map(|u| (u, Qos::Guaranteed))
}

/// The container id and runtime named by a path component, if it names one.
fn container_segment(component: &str, parent: Option<&str>) -> Option<(String, Option<Runtime>)> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    if name.starts_with("crio-conmon-") || name.starts_with("libpod-conmon-") {
        return None;
    }
    let (id, runtime) = if let Some(id) = name.strip_prefix("cri-containerd-") {
        (id, Some(Runtime::Containerd))
    } else if let Some(id) = name.strip_prefix("crio-") {
        (id, Some(Runtime::CriO))
    } else if let Some(id) = name.strip_prefix("docker-") {
        (id, Some(Runtime::Docker))
    } else if let Some(id) = name.strip_prefix("libpod-") {
        (id, Some(Runtime::Podman))
    } else if parent == Some("docker") {
        (name, Some(Runtime::Docker))
    } else {
        // A bare id (cgroupfs driver): the runtime is known only from its API.
        (name, None)
    };
    is_container_id(id).then(|| (id.to_owned(), runtime))
}

/// Classifies a cgroup by its path relative to the v2 root (`/` is the root).
pub fn classify(path: &str) -> Identity {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let Some((&last, ancestors)) = components.split_last() else {
        return Identity {
            kind: Some(CgroupKind::Root),
            ..Identity::default()
        };
    };
    let mut id = Identity::default();
    let mut in_kubepods = false;
    for (i, c) in components.iter().enumerate() {
        in_kubepods |= c.starts_with("kubepods") || c.contains("-kubepods");
        if let Some((uid, qos)) = pod_segment(c).filter(|_| in_kubepods) {
            // cgroupfs driver: the QoS is the parent directory's name.
            let qos = match (
                c.ends_with(".slice"),
                i.checked_sub(1).map(|p| components[p]),
            ) {
                (false, Some("burstable")) => Qos::Burstable,
                (false, Some("besteffort")) => Qos::Besteffort,
                _ => qos,
            };
            id.pod_uid = Some(uid);
            id.qos = Some(qos);
            if i + 1 == components.len() {
                id.kind = Some(CgroupKind::Pod);
                return id;
            }
        }
    }
    let bare_id_allowed = id.pod_uid.is_some() || ancestors.last() == Some(&"docker");
    if let Some((cid, runtime)) = container_segment(last, ancestors.last().copied()) {
        if runtime.is_some() || bare_id_allowed {
            id.kind = Some(CgroupKind::Container);
            id.container_id = Some(cid);
            id.runtime = runtime;
            return id;
        }
    }
    id.kind = Some(if last.ends_with(".service") {
        CgroupKind::Service
    } else if last.ends_with(".slice") {
        CgroupKind::Slice
    } else {
        CgroupKind::Other
    });
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dash(v: Option<&str>) -> &str {
        v.unwrap_or("-")
    }

    #[test]
    fn fixture_trees_from_real_layouts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trees");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                if line.starts_with('#') || line.trim().is_empty() {
                    continue;
                }
                let cols: Vec<&str> = line.split('\t').collect();
                let id = classify(cols[0]);
                let kind = serde_json::to_value(id.kind).unwrap();
                let got = [
                    kind.as_str().unwrap_or("-"),
                    id.runtime.map_or("-", Runtime::as_str),
                    dash(id.pod_uid.as_deref()),
                    dash(id.container_id.as_deref()),
                    id.qos.map_or("-", |q| match q {
                        Qos::Guaranteed => "guaranteed",
                        Qos::Burstable => "burstable",
                        Qos::Besteffort => "besteffort",
                    }),
                ];
                assert_eq!(got[..], cols[1..6], "{}: {}", path.display(), cols[0]);
                checked += 1;
            }
        }
        assert!(checked >= 30, "only {checked} paths checked");
    }

    #[test]
    fn near_misses_are_not_containers() {
        assert_eq!(
            classify("/kubepods/burstable/podnot-a-uid").kind,
            Some(CgroupKind::Other)
        );
        assert_eq!(
            classify("/somewhere/pod11111111-2222-3333-4444-555555555555").kind,
            Some(CgroupKind::Other)
        );
        let short = format!("/system.slice/docker-{}.scope", "a".repeat(63));
        assert_eq!(classify(&short).kind, Some(CgroupKind::Other));
        let upper = format!("/docker/{}", "A".repeat(64));
        assert_eq!(classify(&upper).kind, Some(CgroupKind::Other));
        assert_eq!(classify("/").kind, Some(CgroupKind::Root));
    }
}
