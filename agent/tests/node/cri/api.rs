//! `runtime.v1` messages of k8s.io/cri-api (`pkg/apis/runtime/v1/api.proto`) that the
//! node tests send or read, declared by hand as `agent/src/metadata/cri.rs` declares
//! the ones cgscope reads: only those fields, with the official field numbers
//! (checked against cri-api v0.25.0, the version containerd 1.6.20 vendors); the
//! decoder skips the rest. Enums are `i32` fields with their values as constants in a
//! module named after the enum; every enum's zero is a real choice, not "unset" (see
//! [`namespace_mode`] and [`profile_type`]).

#![allow(dead_code)]

use std::collections::HashMap;
// ---------------------------------------------------------------------------------
// Enums.

/// `runtime.v1.NamespaceMode`: whose namespace a sandbox or container joins.
pub mod namespace_mode {
    /// The pod's own, shared by its containers (the sandbox creates it).
    pub const POD: i32 = 0;
    /// The container's own.
    pub const CONTAINER: i32 = 1;
    /// The node's (hostNetwork, hostPID, hostIPC).
    pub const NODE: i32 = 2;
    /// Another container's, named by `NamespaceOption::target_id` (ephemeral
    /// containers; not declared here).
    pub const TARGET: i32 = 3;
}

/// `runtime.v1.MountPropagation`.
pub mod mount_propagation {
    /// No propagation (`rprivate`): kubelet's default (`mountPropagation: None`).
    pub const PRIVATE: i32 = 0;
    /// Host mounts appear in the container (`rslave`; `HostToContainer`).
    pub const HOST_TO_CONTAINER: i32 = 1;
    /// Both ways (`rshared`; `Bidirectional`, privileged containers only).
    pub const BIDIRECTIONAL: i32 = 2;
}

/// `runtime.v1.SecurityProfile.ProfileType`.
pub mod profile_type {
    /// The runtime's default profile. It is the zero value: `SecurityProfile::default()`
    /// asks for it, whereas an absent profile (`None`) gets no seccomp at all from
    /// containerd 1.6 (and its default AppArmor profile).
    pub const RUNTIME_DEFAULT: i32 = 0;
    /// No profile: what kubelet sends for seccomp unless the pod names one or
    /// `seccompDefault` is on.
    pub const UNCONFINED: i32 = 1;
    /// A profile on the node, named by `localhost_ref`.
    pub const LOCALHOST: i32 = 2;
}

/// `runtime.v1.PodSandboxState`.
pub mod pod_sandbox_state {
    pub const READY: i32 = 0;
    pub const NOTREADY: i32 = 1;
}

/// `runtime.v1.ContainerState`.
pub mod container_state {
    pub const CREATED: i32 = 0;
    pub const RUNNING: i32 = 1;
    pub const EXITED: i32 = 2;
    pub const UNKNOWN: i32 = 3;
}

// ---------------------------------------------------------------------------------
// Shared messages.

/// `runtime.v1.Int64Value`: an int64 that can be absent (as a `None` field).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Int64Value {
    #[prost(int64, tag = "1")]
    pub value: i64,
}

/// `runtime.v1.KeyValue`: one environment variable. (`value` is `bytes` in
/// cri-api releases after v0.25; the wire format is the same.)
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `runtime.v1.NamespaceOption`. All zeros is `POD` for everything, which is not
/// what kubelet sends: see [`NamespaceOption::kubelet`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceOption {
    /// A [`namespace_mode`]: `POD`, or `NODE` for hostNetwork.
    #[prost(int32, tag = "1")]
    pub network: i32,
    /// A [`namespace_mode`]: `CONTAINER`, `POD` for shareProcessNamespace, `NODE`
    /// for hostPID.
    #[prost(int32, tag = "2")]
    pub pid: i32,
    /// A [`namespace_mode`]: `POD`, or `NODE` for hostIPC.
    #[prost(int32, tag = "3")]
    pub ipc: i32,
}

impl NamespaceOption {
    /// What kubelet sends for a pod with no host namespaces and no
    /// shareProcessNamespace (`namespacesForPod`): the pod's network and IPC
    /// namespaces, and a PID namespace per container ("PID does not default to the
    /// zero value"). Kubelet sends the same option for the sandbox and for each
    /// container.
    pub fn kubelet() -> Self {
        Self {
            network: namespace_mode::POD,
            pid: namespace_mode::CONTAINER,
            ipc: namespace_mode::POD,
        }
    }
}

/// `runtime.v1.SecurityProfile`: a seccomp or AppArmor profile.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecurityProfile {
    /// A [`profile_type`].
    #[prost(int32, tag = "1")]
    pub profile_type: i32,
    /// The profile's name or path, with `profile_type` `LOCALHOST` only (containerd
    /// refuses it otherwise).
    #[prost(string, tag = "2")]
    pub localhost_ref: String,
}

/// `runtime.v1.ImageSpec`: an image by name (normalised by containerd: `busybox`
/// is `docker.io/library/busybox:latest`) or by id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

// ---------------------------------------------------------------------------------
// Pod sandboxes.

/// `runtime.v1.PodSandboxMetadata`: the pod as the API server knows it. containerd
/// names the sandbox `<name>_<namespace>_<uid>_<attempt>` and refuses a second
/// sandbox with the same four.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    /// Kubelet counts up when it recreates a pod's sandbox.
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// `runtime.v1.LinuxSandboxSecurityContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxSandboxSecurityContext {
    #[prost(message, optional, tag = "1")]
    pub namespace_options: Option<NamespaceOption>,
    /// Set by kubelet when any container of the pod is privileged.
    #[prost(bool, tag = "6")]
    pub privileged: bool,
}

/// `runtime.v1.LinuxPodSandboxConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandboxConfig {
    /// The pod's cgroup, which kubelet creates before RunPodSandbox. Under the
    /// systemd driver kubelet sends the expanded slice path,
    /// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`
    /// (the uid's `-` written `_`), and containerd (`SystemdCgroup = true`) keeps only its last element:
    /// runc gets `<pod slice>:cri-containerd:<id>`, so every container of the pod is
    /// `cri-containerd-<id>.scope` in that slice. Under cgroupfs it is the directory,
    /// `/kubepods/burstable/pod<uid>`, and each container is `<that>/<id>`.
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxSandboxSecurityContext>,
}

/// `runtime.v1.PodSandboxConfig`: what kubelet sends to RunPodSandbox, and again with
/// each CreateContainer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    /// Kubelet's `/var/log/pods/<namespace>_<name>_<uid>`; containers' `log_path`
    /// is relative to it. Empty: no container logs.
    #[prost(string, tag = "3")]
    pub log_directory: String,
    /// Kubelet's: the pod's labels plus `io.kubernetes.pod.name`,
    /// `io.kubernetes.pod.namespace` and `io.kubernetes.pod.uid`, which is where
    /// ListPodSandbox readers (cgscope among them) find the pod's names too.
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "7")]
    pub annotations: HashMap<String, String>,
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    pub config: Option<PodSandboxConfig>,
    /// The RuntimeClass handler; empty is containerd's `default_runtime_name`.
    #[prost(string, tag = "2")]
    pub runtime_handler: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StopPodSandboxRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StopPodSandboxResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RemovePodSandboxRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RemovePodSandboxResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    /// Asks for `info` in the response.
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `runtime.v1.PodSandboxNetworkStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxNetworkStatus {
    /// The pod's IP from CNI; empty with the node's network.
    #[prost(string, tag = "1")]
    pub ip: String,
}

/// `runtime.v1.Namespace` (its only field is number 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Namespace {
    #[prost(message, optional, tag = "2")]
    pub options: Option<NamespaceOption>,
}

/// `runtime.v1.LinuxPodSandboxStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandboxStatus {
    #[prost(message, optional, tag = "1")]
    pub namespaces: Option<Namespace>,
}

/// `runtime.v1.PodSandboxStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// A [`pod_sandbox_state`].
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(message, optional, tag = "5")]
    pub network: Option<PodSandboxNetworkStatus>,
    #[prost(message, optional, tag = "6")]
    pub linux: Option<LinuxPodSandboxStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<PodSandboxStatus>,
    /// With `verbose`: containerd puts one JSON document under `info` (its
    /// `SandboxInfo`: `pid`, `processStatus`, `config`, `runtimeSpec`, `cniResult`...).
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

// ---------------------------------------------------------------------------------
// Containers.

/// `runtime.v1.ContainerMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    /// The container's name in the pod spec.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Kubelet's restart count for this container.
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

/// `runtime.v1.Mount`: a volume as kubelet hands it over, already on the host.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    #[prost(string, tag = "1")]
    pub container_path: String,
    #[prost(string, tag = "2")]
    pub host_path: String,
    #[prost(bool, tag = "3")]
    pub readonly: bool,
    #[prost(bool, tag = "4")]
    pub selinux_relabel: bool,
    /// A [`mount_propagation`].
    #[prost(int32, tag = "5")]
    pub propagation: i32,
}

/// `runtime.v1.LinuxContainerResources`: the container's limits as kubelet derives
/// them from the pod spec; zero means "not set". runc writes them to the
/// container's cgroup (on cgroup v2, shares become `cpu.weight`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerResources {
    /// CFS period in µs: 100000 when the container has a CPU limit.
    #[prost(int64, tag = "1")]
    pub cpu_period: i64,
    /// CFS quota in µs per period: limit in millicores × period / 1000 (`cpu.max`).
    #[prost(int64, tag = "2")]
    pub cpu_quota: i64,
    /// Request in millicores × 1024 / 1000, at least 2 (BestEffort gets 2).
    #[prost(int64, tag = "3")]
    pub cpu_shares: i64,
    /// The memory limit (`memory.max`); the container is OOM-killed past it.
    #[prost(int64, tag = "4")]
    pub memory_limit_in_bytes: i64,
    /// From the QoS class: Guaranteed -997, BestEffort 1000, Burstable in between
    /// by memory request.
    #[prost(int64, tag = "5")]
    pub oom_score_adj: i64,
    /// The CPUs the container may run on (`cpuset.cpus`), e.g. `"1"`: the static CPU
    /// manager's exclusive CPUs.
    #[prost(string, tag = "6")]
    pub cpuset_cpus: String,
}

/// `runtime.v1.Capability`: names without the `CAP_` prefix (containerd adds it),
/// or `ALL`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Capability {
    #[prost(string, repeated, tag = "1")]
    pub add_capabilities: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub drop_capabilities: Vec<String>,
}

/// `runtime.v1.LinuxContainerSecurityContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerSecurityContext {
    #[prost(message, optional, tag = "1")]
    pub capabilities: Option<Capability>,
    #[prost(bool, tag = "2")]
    pub privileged: bool,
    /// Kubelet sends the pod's (see [`NamespaceOption::kubelet`]).
    #[prost(message, optional, tag = "3")]
    pub namespace_options: Option<NamespaceOption>,
    /// `None`: the image's user.
    #[prost(message, optional, tag = "5")]
    pub run_as_user: Option<Int64Value>,
    #[prost(bool, tag = "7")]
    pub readonly_rootfs: bool,
    /// `allowPrivilegeEscalation: false`.
    #[prost(bool, tag = "11")]
    pub no_new_privs: bool,
    /// `None`: no seccomp filter from containerd 1.6 (unless its
    /// `unset_seccomp_profile` says otherwise); kubelet sends `UNCONFINED` or
    /// `RUNTIME_DEFAULT`.
    #[prost(message, optional, tag = "15")]
    pub seccomp: Option<SecurityProfile>,
    /// `None`: containerd's `cri-containerd.apparmor.d` when the host has AppArmor
    /// (and `apparmor_parser`), nothing otherwise.
    #[prost(message, optional, tag = "16")]
    pub apparmor: Option<SecurityProfile>,
}

/// `runtime.v1.LinuxContainerConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerConfig {
    #[prost(message, optional, tag = "1")]
    pub resources: Option<LinuxContainerResources>,
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxContainerSecurityContext>,
}

/// `runtime.v1.ContainerConfig`: what kubelet sends to CreateContainer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ContainerMetadata>,
    /// Must already be in containerd's `k8s.io` namespace (nothing is pulled here).
    #[prost(message, optional, tag = "2")]
    pub image: Option<ImageSpec>,
    /// Replaces the image's entrypoint (`command:` in the pod spec).
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    /// Replaces the image's cmd (`args:`).
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    #[prost(string, tag = "5")]
    pub working_dir: String,
    #[prost(message, repeated, tag = "6")]
    pub envs: Vec<KeyValue>,
    #[prost(message, repeated, tag = "7")]
    pub mounts: Vec<Mount>,
    /// Kubelet's: `io.kubernetes.container.name`, `io.kubernetes.pod.name`,
    /// `io.kubernetes.pod.namespace` and `io.kubernetes.pod.uid`.
    #[prost(map = "string, string", tag = "9")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "10")]
    pub annotations: HashMap<String, String>,
    /// Relative to the sandbox's `log_directory`: kubelet's `<name>/<attempt>.log`.
    #[prost(string, tag = "11")]
    pub log_path: String,
    #[prost(message, optional, tag = "15")]
    pub linux: Option<LinuxContainerConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    #[prost(message, optional, tag = "2")]
    pub config: Option<ContainerConfig>,
    #[prost(message, optional, tag = "3")]
    pub sandbox_config: Option<PodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerResponse {
    #[prost(string, tag = "1")]
    pub container_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StartContainerRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StartContainerResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StopContainerRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Seconds between SIGTERM (or the image's stop signal) and SIGKILL.
    #[prost(int64, tag = "2")]
    pub timeout: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StopContainerResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveContainerRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveContainerResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatusRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `runtime.v1.ContainerStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<ContainerMetadata>,
    /// A [`container_state`].
    #[prost(int32, tag = "3")]
    pub state: i32,
    /// Unix nanoseconds.
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    /// Unix nanoseconds; 0 before the start.
    #[prost(int64, tag = "5")]
    pub started_at: i64,
    /// Unix nanoseconds; 0 before the exit.
    #[prost(int64, tag = "6")]
    pub finished_at: i64,
    #[prost(int32, tag = "7")]
    pub exit_code: i32,
    /// Once exited, containerd 1.6 says `OOMKilled` after an OOM kill in the
    /// container (set by the TaskOOM event, which can arrive after the exit), else
    /// `Completed` (exit code 0) or `Error`.
    #[prost(string, tag = "10")]
    pub reason: String,
    #[prost(string, tag = "11")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<ContainerStatus>,
}

// ---------------------------------------------------------------------------------
// Images.

/// `runtime.v1.Image`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Image {
    /// `sha256:<config digest>`.
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, repeated, tag = "2")]
    pub repo_tags: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusRequest {
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusResponse {
    /// `None` when the CRI does not have the image (not an error).
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
}
