//! How cgroups map to OTLP resources: one resource per exported cgroup, carrying its
//! identity (path, kind, container and Kubernetes names); the agent's own attributes
//! (`service.*`, `host.name`, `k8s.node.name`, `OTEL_RESOURCE_ATTRIBUTES`) are added
//! to every resource at export. The list is in [`super::catalogue::RESOURCE_ATTRIBUTES`].

use super::{points::Attributes, settings::parse_pairs};
use crate::{snapshot::CgroupKind, snapshot::CgroupSample};

/// Identity attributes of one cgroup; absent names are left out, never empty.
pub fn cgroup_attributes(c: &CgroupSample) -> Attributes {
    let mut a: Attributes = vec![
        ("cgscope.cgroup.path", c.path.clone()),
        ("cgscope.cgroup.kind", c.kind.as_str().to_owned()),
    ];
    let Some(m) = &c.container else {
        return a;
    };
    let mut put = |key: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            a.push((key, v.clone()));
        }
    };
    if m.kind == CgroupKind::Container {
        put("container.id", &m.id);
        put("container.name", &m.name);
        put("container.image.name", &m.image);
        // A container in a pod: its name is the Kubernetes container name.
        if m.pod_uid.is_some() {
            put("k8s.container.name", &m.name);
        }
    }
    put("k8s.pod.uid", &m.pod_uid);
    put("k8s.pod.name", &m.pod);
    put("k8s.namespace.name", &m.namespace);
    if let Some(r) = m.runtime {
        a.push(("container.runtime.name", r.as_str().to_owned()));
    }
    a
}

/// The agent's resource attributes, in the order they are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentResource(pub Vec<(String, String)>);

impl AgentResource {
    /// `service.name` from `OTEL_SERVICE_NAME` (else `cgscope`), `service.version`,
    /// `service.instance.id` and `host.name` from the hostname, `k8s.node.name` from
    /// `NODE_NAME`, then `OTEL_RESOURCE_ATTRIBUTES` (which cannot override the first
    /// five: they identify the node).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Self {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let mut a = vec![
            (
                "service.name".to_owned(),
                env("OTEL_SERVICE_NAME")
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "cgscope".into()),
            ),
            (
                "service.version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
            ("service.instance.id".to_owned(), host.clone()),
            ("host.name".to_owned(), host),
        ];
        if let Some(node) = env("NODE_NAME").filter(|s| !s.is_empty()) {
            a.push(("k8s.node.name".to_owned(), node));
        }
        let (pairs, bad) = env("OTEL_RESOURCE_ATTRIBUTES")
            .as_deref()
            .map(parse_pairs)
            .unwrap_or_default();
        for member in bad {
            log::warn!("OTEL_RESOURCE_ATTRIBUTES: ignoring {member:?} (not key=value)");
        }
        for (k, v) in pairs {
            if !a.iter().any(|(have, _)| *have == k) {
                a.push((k, v));
            }
        }
        Self(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_attributes_from_the_environment() {
        let env = |k: &str| match k {
            "OTEL_SERVICE_NAME" => Some("node-agent".to_owned()),
            "NODE_NAME" => Some("worker-3".to_owned()),
            "OTEL_RESOURCE_ATTRIBUTES" => Some(
                "deployment.environment=prod%20eu, bad,service.name=nope,k8s.cluster.name=c1"
                    .to_owned(),
            ),
            _ => None,
        };
        let a = AgentResource::from_env(env).0;
        let get = |k: &str| {
            a.iter()
                .find(|(have, _)| have == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("service.name"), Some("node-agent"));
        assert_eq!(get("k8s.node.name"), Some("worker-3"));
        assert_eq!(get("deployment.environment"), Some("prod eu"));
        assert_eq!(get("k8s.cluster.name"), Some("c1"));
        assert_eq!(a.iter().filter(|(k, _)| k == "service.name").count(), 1);
    }
}
