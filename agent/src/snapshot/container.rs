//! What a cgroup is: its kind, and for a pod or container the runtime's names.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

/// A pod or container. Names come from the container runtime's API and are `null`
/// until it answers (or where none runs).
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct ContainerSample {
    /// `pod` or `container`.
    pub kind: CgroupKind,
    /// Container id (64 hex digits); for a pod, its UID.
    pub id: Option<String>,
    pub pod_uid: Option<String>,
    /// Container name, or pod name for a pod.
    pub name: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub runtime: Option<Runtime>,
    pub image: Option<String>,
    pub qos: Option<Qos>,
    /// The runtime's labels (sanitised).
    pub labels: BTreeMap<String, String>,
    /// When the runtime created the container, Unix seconds (containers only).
    pub created_seconds: Option<f64>,
}

impl ContainerSample {
    /// Whether `id` is this container's id, or a prefix of it of at least 12 digits
    /// (as `docker ps` and `crictl ps` show it).
    pub fn id_matches(&self, id: &str) -> bool {
        self.id
            .as_deref()
            .is_some_and(|mine| mine == id || (id.len() >= 12 && mine.starts_with(id)))
    }
}

/// What a cgroup is, from its place in the tree (`crate::cgroup::identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CgroupKind {
    Root,
    Pod,
    Container,
    Service,
    Slice,
    #[default]
    Other,
}

impl CgroupKind {
    pub const ALL: [Self; 6] = [
        Self::Root,
        Self::Pod,
        Self::Container,
        Self::Service,
        Self::Slice,
        Self::Other,
    ];

    /// The name the snapshot and the exporters use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Pod => "pod",
            Self::Container => "container",
            Self::Service => "service",
            Self::Slice => "slice",
            Self::Other => "other",
        }
    }
}

/// The container runtime that made a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum Runtime {
    #[serde(rename = "containerd")]
    Containerd,
    #[serde(rename = "cri-o")]
    CriO,
    #[serde(rename = "docker")]
    Docker,
    #[serde(rename = "podman")]
    Podman,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }
}

/// Kubernetes QoS class, from the pod's place in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    Guaranteed,
    Burstable,
    Besteffort,
}

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only cgroup v2 (every modern distribution, every VM test kernel).
    Unified,
    /// v1 controllers plus a v2 hierarchy without them (systemd "hybrid").
    Hybrid,
    /// Only cgroup v1: cgscope cannot attribute anything.
    Legacy,
}

impl CgroupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unified => "unified",
            Self::Hybrid => "hybrid",
            Self::Legacy => "legacy",
        }
    }
}
