//! The Container Runtime Interface (k8s.io/cri-api, package `runtime.v1`) over a unix
//! socket, as containerd and CRI-O serve it: `Version`, `ListPodSandbox` and
//! `ListContainers`. Only the fields cgscope reads are declared, with the official
//! field numbers; unknown fields are skipped by the decoder.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    time::Duration,
};

use hyper_util::rt::TokioIo;
use tonic::{
    codec::ProstCodec,
    codegen::http::uri::PathAndQuery,
    transport::{Channel, Endpoint, Uri},
};

use super::{sanitize, ContainerMeta, MetadataError};
use crate::snapshot::Runtime;

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {
    #[prost(string, tag = "1")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    #[prost(string, tag = "3")]
    pub runtime_version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandbox {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(map = "string, string", tag = "5")]
    pub labels: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxResponse {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<PodSandbox>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub pod_sandbox_id: String,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(message, optional, tag = "4")]
    pub image: Option<ImageSpec>,
    #[prost(string, tag = "5")]
    pub image_ref: String,
    /// Unix nanoseconds.
    #[prost(int64, tag = "7")]
    pub created_at: i64,
    #[prost(map = "string, string", tag = "8")]
    pub labels: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersResponse {
    #[prost(message, repeated, tag = "1")]
    pub containers: Vec<Container>,
}

/// gRPC method paths of `runtime.v1.RuntimeService`.
pub const VERSION: &str = "/runtime.v1.RuntimeService/Version";
pub const LIST_POD_SANDBOX: &str = "/runtime.v1.RuntimeService/ListPodSandbox";
pub const LIST_CONTAINERS: &str = "/runtime.v1.RuntimeService/ListContainers";

async fn unary<Req, Resp>(
    channel: &Channel,
    path: &'static str,
    request: Req,
) -> Result<Resp, String>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| format!("{path}: {e}"))?;
    let codec = ProstCodec::<Req, Resp>::default();
    grpc.unary(
        tonic::Request::new(request),
        PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(tonic::Response::into_inner)
    .map_err(|status| format!("{path}: {}", status.message()))
}

async fn list_async(socket: &Path) -> Result<Vec<ContainerMeta>, String> {
    let path = socket.to_path_buf();
    // The URI is a placeholder: the connector always dials the socket.
    let channel = Endpoint::from_static("http://cri.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let version: VersionResponse = unary(
        &channel,
        VERSION,
        VersionRequest {
            version: "v1".into(),
        },
    )
    .await?;
    let pods: ListPodSandboxResponse =
        unary(&channel, LIST_POD_SANDBOX, ListPodSandboxRequest {}).await?;
    let containers: ListContainersResponse =
        unary(&channel, LIST_CONTAINERS, ListContainersRequest {}).await?;
    Ok(containers_of(&version, &pods, &containers))
}

/// What the runtime's three replies say: one entry per container, named after its
/// pod, and one per pod sandbox; every string sanitised. A container's labels are its
/// pod's (kubelet puts the pod's labels, `app=web`, on the sandbox only) and its own
/// (`io.kubernetes.container.name`), its own winning.
pub fn containers_of(
    version: &VersionResponse,
    pods: &ListPodSandboxResponse,
    containers: &ListContainersResponse,
) -> Vec<ContainerMeta> {
    let runtime = if version.runtime_name.to_ascii_lowercase().contains("cri-o") {
        Runtime::CriO
    } else {
        Runtime::Containerd
    };
    let sandboxes: HashMap<&str, &PodSandbox> =
        pods.items.iter().map(|p| (p.id.as_str(), p)).collect();
    let labels =
        |l: &HashMap<String, String>| l.iter().map(|(k, v)| (sanitize(k), sanitize(v))).collect();
    let pod_fields = |meta: Option<&&PodSandboxMetadata>| {
        (
            meta.map(|m| sanitize(&m.name)),
            meta.map(|m| sanitize(&m.namespace)),
            meta.map(|m| sanitize(&m.uid)),
        )
    };
    let mut out: Vec<ContainerMeta> = containers
        .containers
        .iter()
        .map(|c| {
            let sandbox = sandboxes.get(c.pod_sandbox_id.as_str());
            let (pod, namespace, pod_uid) =
                pod_fields(sandbox.and_then(|p| p.metadata.as_ref()).as_ref());
            let mut all_labels: BTreeMap<String, String> =
                sandbox.map(|p| labels(&p.labels)).unwrap_or_default();
            all_labels.extend(labels(&c.labels));
            let image = c
                .image
                .as_ref()
                .map(|i| i.image.as_str())
                .filter(|i| !i.is_empty())
                .unwrap_or(&c.image_ref);
            ContainerMeta {
                id: sanitize(&c.id),
                name: c.metadata.as_ref().map(|m| sanitize(&m.name)),
                image: Some(sanitize(image)).filter(|i| !i.is_empty()),
                pod,
                namespace,
                pod_uid,
                runtime,
                labels: all_labels,
                created_seconds: (c.created_at > 0).then_some(c.created_at as f64 * 1e-9),
            }
        })
        .collect();
    // The sandbox (pause) container has a cgroup in the pod too: name its pod.
    out.extend(pods.items.iter().map(|p| {
        let (pod, namespace, pod_uid) = pod_fields(p.metadata.as_ref().as_ref());
        ContainerMeta {
            id: sanitize(&p.id),
            name: None,
            image: None,
            pod,
            namespace,
            pod_uid,
            runtime,
            labels: labels(&p.labels),
            created_seconds: None,
        }
    }));
    out
}

/// Every pod sandbox and container the runtime knows, within `timeout`.
pub fn list(socket: &Path, timeout: Duration) -> Result<Vec<ContainerMeta>, MetadataError> {
    let err = |what: String| MetadataError::Runtime {
        socket: socket.display().to_string(),
        what,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("async runtime: {e}")))?;
    runtime
        .block_on(async { tokio::time::timeout(timeout, list_async(socket)).await })
        .map_err(|_| err(format!("no complete reply within {timeout:?}")))?
        .map_err(err)
}
