//! A synchronous CRI client that drives containerd's CRI the way kubelet does: run a
//! pod sandbox, create, start, stop and remove its containers, read their status.
//! The messages are in [`api`].
//!
//! Calls that set things up panic with the call, the id and the runtime's message,
//! as a test's `expect` would; the teardown calls (`stop_*`, `remove_*`) return a
//! `Result` so that a guard's `Drop` can run them while a failed test unwinds.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use cgscope::metadata::cri::{VersionRequest, VersionResponse, VERSION};
use hyper_util::rt::TokioIo;
use tonic::{
    codec::ProstCodec,
    codegen::http::uri::PathAndQuery,
    transport::{Channel, Endpoint, Uri},
};

/// How long one call may take: kubelet's default `--runtime-request-timeout`
/// (2 min). Under TCG emulation RunPodSandbox (pause container and CNI) takes seconds.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `version` may take: it only answers whether the CRI is being served, and
/// callers poll it while containerd starts.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

mod api;
pub use api::*;

// ---------------------------------------------------------------------------------
// The client.

const RUN_POD_SANDBOX: &str = "/runtime.v1.RuntimeService/RunPodSandbox";
const STOP_POD_SANDBOX: &str = "/runtime.v1.RuntimeService/StopPodSandbox";
const REMOVE_POD_SANDBOX: &str = "/runtime.v1.RuntimeService/RemovePodSandbox";
const POD_SANDBOX_STATUS: &str = "/runtime.v1.RuntimeService/PodSandboxStatus";
const CREATE_CONTAINER: &str = "/runtime.v1.RuntimeService/CreateContainer";
const START_CONTAINER: &str = "/runtime.v1.RuntimeService/StartContainer";
const STOP_CONTAINER: &str = "/runtime.v1.RuntimeService/StopContainer";
const REMOVE_CONTAINER: &str = "/runtime.v1.RuntimeService/RemoveContainer";
const CONTAINER_STATUS: &str = "/runtime.v1.RuntimeService/ContainerStatus";
const IMAGE_STATUS: &str = "/runtime.v1.ImageService/ImageStatus";

/// A CRI connection (containerd serves both services on its one socket) and the
/// runtime its calls block on.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    channel: Channel,
}

impl Cri {
    /// A client for the CRI on `socket`. The socket must exist; it is dialled on the
    /// first call and again after a failed one, so [`Cri::version`] can be polled
    /// while containerd starts.
    pub fn connect(socket: &Path) -> anyhow::Result<Self> {
        if !socket.exists() {
            bail!("no CRI socket at {}", socket.display());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("async runtime")?;
        let path = socket.to_path_buf();
        // The channel's worker task is spawned on `rt`, and runs while calls block on it.
        let entered = rt.enter();
        // The URI is a placeholder: the connector always dials the socket.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(10))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map(TokioIo::new)
                }
            }));
        drop(entered);
        Ok(Self { rt, channel })
    }

    /// One unary call with a deadline, which is also sent to the runtime
    /// (`grpc-timeout`) so that containerd gives up when the test does.
    fn call<Req, Resp>(
        &self,
        path: &'static str,
        request: Req,
        timeout: Duration,
    ) -> anyhow::Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut request = tonic::Request::new(request);
        request.set_timeout(timeout);
        let reply = async {
            let mut grpc = tonic::client::Grpc::new(self.channel.clone());
            grpc.ready().await.map_err(|e| anyhow!("{path}: {e}"))?;
            let reply = grpc
                .unary(
                    request,
                    PathAndQuery::from_static(path),
                    ProstCodec::<Req, Resp>::default(),
                )
                .await
                .map_err(|status| anyhow!("{path}: {:?}: {}", status.code(), status.message()))?;
            anyhow::Ok(reply.into_inner())
        };
        self.rt
            .block_on(async { tokio::time::timeout(timeout, reply).await })
            .map_err(|_| anyhow!("{path}: no reply within {timeout:?}"))?
    }

    /// The runtime's name and version; an error until the CRI plugin serves
    /// `runtime.v1` on the socket.
    pub fn version(&self) -> anyhow::Result<VersionResponse> {
        self.call(
            VERSION,
            VersionRequest {
                version: "v1".into(),
            },
            VERSION_TIMEOUT,
        )
    }

    /// Creates and starts a pod sandbox, as kubelet does first for every pod (after
    /// creating the pod's cgroup, `config.linux.cgroup_parent`): containerd starts the
    /// pause container from its `sandbox_image` in that cgroup, and CNI gives it a
    /// network namespace. Returns the sandbox id.
    pub fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> String {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let reply: RunPodSandboxResponse = self
            .call(RUN_POD_SANDBOX, request, CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("RunPodSandbox {:?}: {e:#}", config.metadata));
        reply.pod_sandbox_id
    }

    /// Stops the sandbox: kills its containers and the pause container and tears down
    /// its network (kubelet's first step when a pod is deleted). Idempotent.
    pub fn stop_pod_sandbox(&self, id: &str) -> anyhow::Result<()> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        let _: StopPodSandboxResponse = self
            .call(STOP_POD_SANDBOX, request, CALL_TIMEOUT)
            .with_context(|| format!("StopPodSandbox {id}"))?;
        Ok(())
    }

    /// Removes the sandbox and every container in it; containerd 1.6 stops it first
    /// if need be. An unknown id is not an error.
    pub fn remove_pod_sandbox(&self, id: &str) -> anyhow::Result<()> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        let _: RemovePodSandboxResponse = self
            .call(REMOVE_POD_SANDBOX, request, CALL_TIMEOUT)
            .with_context(|| format!("RemovePodSandbox {id}"))?;
        Ok(())
    }

    /// The sandbox's status with containerd's verbose `info`.
    pub fn pod_sandbox_status(&self, id: &str) -> PodSandboxStatusResponse {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        };
        self.call(POD_SANDBOX_STATUS, request, CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e:#}"))
    }

    /// The network namespace the pod's containers share, as a bind mount under
    /// `/var/run/netns/` (`cni-<uuid>`); `None` for a sandbox on the node's network.
    pub fn pod_network_namespace(&self, id: &str) -> Option<PathBuf> {
        let status = self.pod_sandbox_status(id);
        let info = status
            .info
            .get("info")
            .unwrap_or_else(|| panic!("PodSandboxStatus {id}: no verbose \"info\""));
        network_namespace_in(info)
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: \"info\" is not JSON: {e}"))
    }

    /// Creates a container in the sandbox `pod_id`, which was run with `sandbox`
    /// (kubelet sends the pod's sandbox config again; containerd takes the cgroup
    /// parent and namespaces from it). Returns the container id.
    pub fn create_container(
        &self,
        pod_id: &str,
        config: &ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> String {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox.clone()),
        };
        let reply: CreateContainerResponse = self
            .call(CREATE_CONTAINER, request, CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("CreateContainer {:?} in {pod_id}: {e:#}", config.metadata));
        reply.container_id
    }

    /// Starts a created container: from here its cgroup has its processes.
    pub fn start_container(&self, id: &str) {
        let request = StartContainerRequest {
            container_id: id.into(),
        };
        let _: StartContainerResponse = self
            .call(START_CONTAINER, request, CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("StartContainer {id}: {e:#}"));
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout_s` seconds
    /// (kubelet's grace period). The call may take that long on top of its own
    /// deadline, as kubelet allows. Stopping an exited container is not an error.
    pub fn stop_container(&self, id: &str, timeout_s: i64) -> anyhow::Result<()> {
        let request = StopContainerRequest {
            container_id: id.into(),
            timeout: timeout_s,
        };
        let deadline = CALL_TIMEOUT + Duration::from_secs(timeout_s.max(0) as u64);
        let _: StopContainerResponse = self
            .call(STOP_CONTAINER, request, deadline)
            .with_context(|| format!("StopContainer {id}"))?;
        Ok(())
    }

    /// Removes a container, killing it first if it still runs. An unknown id is not
    /// an error.
    pub fn remove_container(&self, id: &str) -> anyhow::Result<()> {
        let request = RemoveContainerRequest {
            container_id: id.into(),
        };
        let _: RemoveContainerResponse = self
            .call(REMOVE_CONTAINER, request, CALL_TIMEOUT)
            .with_context(|| format!("RemoveContainer {id}"))?;
        Ok(())
    }

    /// The container's state, exit code and reason.
    pub fn container_status(&self, id: &str) -> ContainerStatus {
        let request = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let reply: ContainerStatusResponse = self
            .call(CONTAINER_STATUS, request, CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e:#}"));
        reply
            .status
            .unwrap_or_else(|| panic!("ContainerStatus {id}: a reply without a status"))
    }

    /// Polls the container's status every 200 ms until `done` holds, for at most
    /// `within`; returns the last status either way. An OOM kill needs `done` to wait
    /// for the reason too (`reason == "OOMKilled"`): containerd can report the exit
    /// before the OOM event, as `Error`.
    pub fn wait_container(
        &self,
        id: &str,
        within: Duration,
        done: impl Fn(&ContainerStatus) -> bool,
    ) -> ContainerStatus {
        let started = Instant::now();
        loop {
            let status = self.container_status(id);
            if done(&status) || started.elapsed() >= within {
                return status;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether the CRI sees the image `name` (normalised as by docker: `busybox` is
    /// `docker.io/library/busybox:latest`). Images imported with `ctr` are visible
    /// only in the `k8s.io` namespace.
    pub fn image_present(&self, name: &str) -> bool {
        let request = ImageStatusRequest {
            image: Some(ImageSpec { image: name.into() }),
            verbose: false,
        };
        let reply: ImageStatusResponse = self
            .call(IMAGE_STATUS, request, CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("ImageStatus {name}: {e:#}"));
        reply.image.is_some()
    }
}

/// The network namespace path in containerd's verbose sandbox info (the JSON under
/// the key `info`): the entry of type `network` in the pause container's OCI spec,
///
/// ```text
/// {"pid":1234,"processStatus":"running",...,
///  "runtimeSpec":{"ociVersion":"1.0.2-dev",...,
///   "linux":{...,"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},
///    {"type":"mount"},{"type":"network","path":"/var/run/netns/cni-6c1f..."}]}},
///  "cniResult":{...}}
/// ```
///
/// `None` when there is no such entry or it has no path: containerd leaves the
/// network namespace out of the spec for a sandbox on the node's network.
pub fn network_namespace_in(info: &str) -> Result<Option<PathBuf>, serde_json::Error> {
    let info: serde_json::Value = serde_json::from_str(info)?;
    Ok(info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|ns| ns["type"] == "network")
        .and_then(|ns| ns["path"].as_str())
        .filter(|path| !path.is_empty())
        .map(PathBuf::from))
}

#[test]
fn network_namespace_from_containerd_sandbox_info() {
    let pod = r#"{"pid":4242,"processStatus":"running","netNamespaceClosed":false,
        "runtimeSpec":{"ociVersion":"1.0.2-dev","linux":{"cgroupsPath":
        "kubepods-besteffort-pod1.slice:cri-containerd:abc","namespaces":[{"type":"pid"},
        {"type":"ipc"},{"type":"uts"},{"type":"mount"},
        {"type":"network","path":"/var/run/netns/cni-6c1f2e3d-0000-1111-2222-333344445555"}]}}}"#;
    assert_eq!(
        network_namespace_in(pod).unwrap(),
        Some(PathBuf::from(
            "/var/run/netns/cni-6c1f2e3d-0000-1111-2222-333344445555"
        ))
    );
    let host_network = r#"{"pid":4242,"runtimeSpec":{"linux":{"namespaces":
        [{"type":"pid"},{"type":"ipc"},{"type":"mount"}]}}}"#;
    assert_eq!(network_namespace_in(host_network).unwrap(), None);
    assert!(network_namespace_in("not json").is_err());
}
