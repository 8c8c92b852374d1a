//! Pods and containers as kubelet asks the CRI for them: its labels, its cgroup
//! parent for the node's cgroup driver, its namespaces, the container's resources
//! from the pod spec's limits (`LinuxContainerResources`).

use std::collections::HashMap;

use super::{
    cri::{
        ContainerConfig, ContainerMetadata, Cri, ImageSpec, LinuxContainerConfig,
        LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
        LinuxSandboxSecurityContext, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    },
    runtimes::{sh, Driver},
};

/// The CFS period kubelet uses for every container (`cpu.cfs_period_us` 100 ms).
pub const CPU_PERIOD_US: i64 = 100_000;

/// A pod sandbox as kubelet configures it (`generatePodSandboxConfig`).
pub struct PodSpec {
    pub config: PodSandboxConfig,
    driver: Driver,
}

impl PodSpec {
    /// A Burstable pod (requests below its limits) `namespace/name` with label
    /// `app=<name without its last -suffix>`: kubelet's labels (the pod's, and
    /// `io.kubernetes.pod.*`), its cgroup parent under `driver`, and the pod's own
    /// network (CNI) and IPC namespaces.
    pub fn burstable(name: &str, namespace: &str, uid: &str, driver: Driver) -> Self {
        let app = name.rsplit_once('-').map_or(name, |(a, _)| a);
        let labels: HashMap<String, String> = [
            ("app", app),
            ("io.kubernetes.pod.name", name),
            ("io.kubernetes.pod.namespace", namespace),
            ("io.kubernetes.pod.uid", uid),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        // kubelet's pod cgroup (`pkg/kubelet/cm`): systemd's name encodes the
        // hierarchy (`-` separates levels, so the UID's dashes become `_`), and
        // kubelet passes the whole path, of which containerd keeps the last slice.
        let cgroup_parent = match driver {
            Driver::Systemd => {
                let uid = uid.replace('-', "_");
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice"
                )
            }
            Driver::Cgroupfs => format!("/kubepods/burstable/pod{uid}"),
        };
        Self {
            config: PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: name.to_owned(),
                    uid: uid.to_owned(),
                    namespace: namespace.to_owned(),
                    attempt: 0,
                }),
                hostname: name.to_owned(),
                log_directory: format!("/var/log/pods/{namespace}_{name}_{uid}"),
                labels,
                linux: Some(LinuxPodSandboxConfig {
                    cgroup_parent,
                    security_context: Some(LinuxSandboxSecurityContext {
                        namespace_options: Some(NamespaceOption::kubelet()),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            },
            driver,
        }
    }

    fn name(&self) -> &str {
        self.config
            .metadata
            .as_ref()
            .map_or("", |m| m.name.as_str())
    }

    /// The pod's cgroup, relative to the v2 root: the parent kubelet asked for.
    pub fn cgroup_path(&self) -> &str {
        self.config
            .linux
            .as_ref()
            .map_or("", |l| l.cgroup_parent.as_str())
    }

    /// The pod's cgroup directory on this node.
    pub fn cgroup_dir(&self) -> std::path::PathBuf {
        cgroup_dir(self.cgroup_path())
    }

    /// The cgroup directory of container `id` of this pod.
    pub fn container_dir(&self, id: &str) -> std::path::PathBuf {
        cgroup_dir(&self.container_path(id))
    }

    /// Where containerd puts container `id` of this pod (the sandbox too): a scope
    /// of the pod's slice under the systemd driver, a directory of the pod's
    /// cgroup under cgroupfs.
    pub fn container_path(&self, id: &str) -> String {
        match self.driver {
            Driver::Systemd => format!("{}/cri-containerd-{id}.scope", self.cgroup_path()),
            Driver::Cgroupfs => format!("{}/{id}", self.cgroup_path()),
        }
    }
}

/// The directory of the cgroup at `path` (relative to the v2 root, as cgscope
/// reports it) on this node.
fn cgroup_dir(path: &str) -> std::path::PathBuf {
    std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))
}

/// A container of a pod spec, as kubelet configures it (`generateContainerConfig`).
pub struct ContainerSpec {
    pub config: ContainerConfig,
}

impl ContainerSpec {
    /// Container `name` running `sh -c script` in `image`.
    pub fn shell(name: &str, image: &str, script: &str) -> Self {
        Self {
            config: ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.to_owned(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.to_owned(),
                }),
                command: vec!["/bin/sh".into(), "-c".into(), script.to_owned()],
                labels: [("io.kubernetes.container.name".to_owned(), name.to_owned())].into(),
                linux: Some(LinuxContainerConfig {
                    resources: Some(LinuxContainerResources {
                        cpu_period: CPU_PERIOD_US,
                        // A 100m request, kubelet's shares for it.
                        cpu_shares: 102,
                        ..Default::default()
                    }),
                    security_context: Some(LinuxContainerSecurityContext {
                        namespace_options: Some(NamespaceOption::kubelet()),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            },
        }
    }

    /// Container `name` that only sleeps.
    pub fn sleeper(name: &str, image: &str) -> Self {
        Self::shell(name, image, "exec sleep 3600")
    }

    fn resources(&mut self) -> &mut LinuxContainerResources {
        self.config
            .linux
            .get_or_insert_with(Default::default)
            .resources
            .get_or_insert_with(Default::default)
    }

    /// A CPU limit of `millicores` (kubelet: quota = limit × period).
    pub fn cpu_limit(mut self, millicores: i64) -> Self {
        self.resources().cpu_quota = millicores * CPU_PERIOD_US / 1000;
        self
    }

    /// Only CPU `cpu` (`cpuset.cpus`), as kubelet's static CPU manager pins a
    /// Guaranteed container.
    pub fn cpus(mut self, cpu: usize) -> Self {
        self.resources().cpuset_cpus = cpu.to_string();
        self
    }

    /// A CPU request of `millicores`: kubelet's `cpu_shares` for it (×1024/1000),
    /// which the runtime turns into `cpu.weight`.
    pub fn cpu_request(mut self, millicores: i64) -> Self {
        self.resources().cpu_shares = (millicores * 1024 / 1000).max(2);
        self
    }

    /// A memory limit of `bytes`.
    pub fn memory_limit(mut self, bytes: i64) -> Self {
        self.resources().memory_limit_in_bytes = bytes;
        self
    }
}

impl Cri {
    /// RunPodSandbox, as kubelet's first step for a new pod: the pause container in
    /// the pod's cgroup and network namespace. Returns the sandbox id.
    pub fn run_pod(&self, pod: &PodSpec) -> String {
        // kubelet makes the pod's log directory first; containers log into it.
        std::fs::create_dir_all(&pod.config.log_directory).expect("the pod's log directory");
        let id = self.run_pod_sandbox(&pod.config);
        eprintln!("node: pod {} is sandbox {id}", pod.name());
        id
    }

    /// CreateContainer then StartContainer, as kubelet starts each container of a
    /// pod. Returns the container id.
    pub fn start(&self, pod_id: &str, pod: &PodSpec, container: &ContainerSpec) -> String {
        let id = self.create_container(pod_id, &container.config, &pod.config);
        self.start_container(&id);
        id
    }

    /// StopPodSandbox then RemovePodSandbox, as kubelet deletes a pod (containerd
    /// removes the pod's containers with it), then the pod's cgroup, as kubelet's
    /// pod cleanup destroys it (the runtime never made it its own): through
    /// systemd under its driver, `rmdir` under cgroupfs.
    pub fn remove_pod(&self, pod_id: &str, pod: &PodSpec) {
        self.stop_pod_sandbox(pod_id)
            .unwrap_or_else(|e| panic!("StopPodSandbox {pod_id}: {e:#}"));
        self.remove_pod_sandbox(pod_id)
            .unwrap_or_else(|e| panic!("RemovePodSandbox {pod_id}: {e:#}"));
        let path = pod.cgroup_path();
        match pod.driver {
            Driver::Systemd => {
                let slice = path.rsplit('/').next().unwrap_or(path);
                sh(&format!("systemctl stop {slice}"));
            }
            Driver::Cgroupfs => {
                let dir = pod.cgroup_dir();
                std::fs::remove_dir(&dir)
                    .unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
            }
        }
    }
}
