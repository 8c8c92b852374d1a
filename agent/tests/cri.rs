//! Kubernetes names over the CRI. No containerd or CRI-O can run pods here (that
//! would create cgroup v1 groups on this host), so the server is built from the
//! official protocol definitions (`runtime.v1.RuntimeService`, k8s.io/cri-api field
//! numbers) with tonic, and serves one pod over a unix socket; the cgroups are real.

mod common;

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use cgscope::{
    metadata::{cri::*, MetadataConfig},
    sampler::{Sampler, SamplerConfig},
    snapshot::{CgroupKind, Runtime},
};
use common::TestTree;
use tonic::{
    body::BoxBody,
    codec::ProstCodec,
    codegen::http,
    server::{Grpc, NamedService, UnaryService},
};

const POD_UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const SANDBOX: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const APP: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// Answers one unary method with a fixed message.
#[derive(Clone)]
struct Reply<T>(T);

impl<Req: Send + 'static, T: Clone + Send + 'static> UnaryService<Req> for Reply<T> {
    type Response = T;
    type Future = std::future::Ready<Result<tonic::Response<T>, tonic::Status>>;
    fn call(&mut self, _: tonic::Request<Req>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(self.0.clone())))
    }
}

/// `runtime.v1.RuntimeService` with the three methods cgscope calls.
#[derive(Clone)]
struct FakeRuntime;

impl NamedService for FakeRuntime {
    const NAME: &'static str = "runtime.v1.RuntimeService";
}

fn pods() -> ListPodSandboxResponse {
    ListPodSandboxResponse {
        items: vec![PodSandbox {
            id: SANDBOX.into(),
            metadata: Some(PodSandboxMetadata {
                name: "checkout-7d9f".into(),
                uid: POD_UID.into(),
                namespace: "shop".into(),
            }),
            labels: [("app".to_owned(), "checkout".to_owned())].into(),
        }],
    }
}

fn containers() -> ListContainersResponse {
    ListContainersResponse {
        containers: vec![Container {
            id: APP.into(),
            pod_sandbox_id: SANDBOX.into(),
            metadata: Some(ContainerMetadata {
                name: "api\u{7}".into(),
            }),
            image: Some(ImageSpec {
                image: "registry.example/shop/api:1.4".into(),
            }),
            image_ref: "sha256:abc".into(),
            created_at: 1_700_000_000_123_000_000,
            labels: [("io.kubernetes.container.name".to_owned(), "api".to_owned())].into(),
        }],
    }
}

impl tower::Service<http::Request<BoxBody>> for FakeRuntime {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<BoxBody>) -> Self::Future {
        let path = req.uri().path().to_owned();
        Box::pin(async move {
            Ok(match path.as_str() {
                VERSION => {
                    let version = VersionResponse {
                        version: "0.1.0".into(),
                        runtime_name: "containerd".into(),
                        runtime_version: "1.7".into(),
                    };
                    Grpc::new(ProstCodec::<VersionResponse, VersionRequest>::default())
                        .unary(Reply(version), req)
                        .await
                }
                LIST_POD_SANDBOX => {
                    Grpc::new(
                        ProstCodec::<ListPodSandboxResponse, ListPodSandboxRequest>::default(),
                    )
                    .unary(Reply(pods()), req)
                    .await
                }
                LIST_CONTAINERS => {
                    Grpc::new(
                        ProstCodec::<ListContainersResponse, ListContainersRequest>::default(),
                    )
                    .unary(Reply(containers()), req)
                    .await
                }
                _ => tonic::Status::unimplemented(path).into_http(),
            })
        })
    }
}

/// Serves the fake runtime on `socket` from its own thread until the process ends.
fn serve(socket: std::path::PathBuf) {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::UnixListener::bind(&socket).expect("bind CRI socket");
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            tonic::transport::Server::builder()
                .add_service(FakeRuntime)
                .serve_with_incoming(incoming)
                .await
                .expect("serve");
        });
    });
}

#[test]
fn kubernetes_names_over_the_cri() {
    require_root_and_cgroup_v2!();
    let mut tree = TestTree::create("cri");
    let pod_rel = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice";
    let pod = tree.mkdir(pod_rel);
    let app = tree.mkdir(&format!("{pod_rel}/cri-containerd-{APP}.scope"));
    let sandbox = tree.mkdir(&format!("{pod_rel}/cri-containerd-{SANDBOX}.scope"));

    let socket = std::env::temp_dir().join(format!("cgscope-test-{}-cri.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    serve(socket.clone());
    let config = SamplerConfig {
        metadata: MetadataConfig {
            docker_sockets: Vec::new(),
            cri_sockets: vec![socket.clone()],
            ..MetadataConfig::default()
        },
        ..SamplerConfig::default()
    };
    let mut sampler = Sampler::start(&config).expect("sampler");
    let deadline = Instant::now() + Duration::from_secs(10);
    let snapshot = loop {
        let snapshot = sampler.sample(Some(&tree.top.path));
        let named = snapshot
            .cgroups
            .iter()
            .any(|c| c.path == app && c.container.as_ref().is_some_and(|k| k.name.is_some()));
        if named || Instant::now() > deadline {
            break snapshot;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = std::fs::remove_file(&socket);
    let get = |path: &str| {
        let c = snapshot
            .cgroups
            .iter()
            .find(|c| c.path == path)
            .expect("cgroup in snapshot");
        (c.kind, c.container.clone().expect("container object"))
    };

    let (kind, c) = get(&app);
    assert_eq!(kind, CgroupKind::Container);
    assert_eq!(
        c.name.as_deref(),
        Some("api"),
        "name, control character stripped"
    );
    assert_eq!(
        (c.pod.as_deref(), c.namespace.as_deref()),
        (Some("checkout-7d9f"), Some("shop"))
    );
    assert_eq!(c.image.as_deref(), Some("registry.example/shop/api:1.4"));
    // The pod's labels (on the sandbox, as kubelet puts them) and the container's own.
    assert_eq!(
        (
            c.labels.get("app").map(String::as_str),
            c.labels
                .get("io.kubernetes.container.name")
                .map(String::as_str)
        ),
        (Some("checkout"), Some("api")),
        "{:?}",
        c.labels
    );
    let created = c.created_seconds.expect("created_at from the CRI");
    assert!(
        (created - 1_700_000_000.123).abs() < 1e-6,
        "created {created}"
    );
    assert_eq!(
        (c.runtime, c.pod_uid.as_deref()),
        (Some(Runtime::Containerd), Some(POD_UID))
    );

    let (_, s) = get(&sandbox);
    assert_eq!(
        (s.name, s.pod.as_deref()),
        (None, Some("checkout-7d9f")),
        "the sandbox names its pod"
    );

    let (kind, p) = get(&pod);
    assert_eq!(kind, CgroupKind::Pod);
    assert_eq!(
        (p.name.as_deref(), p.namespace.as_deref()),
        (Some("checkout-7d9f"), Some("shop"))
    );
}

/// A real containerd (Debian's), state in a temporary directory, answers the same
/// three calls. It runs no pods, so it creates no cgroups: the lists are empty, but
/// the protocol, the method paths and the decoding meet the real server.
#[test]
fn a_real_containerd_answers() {
    require_root_and_cgroup_v2!();
    if let Some(why) = common::runtime_skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    if std::process::Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no containerd");
        return;
    }
    let dir = std::env::temp_dir().join(format!("cgscope-test-{}-containerd", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let socket = dir.join("containerd.sock");
    let config = dir.join("config.toml");
    let toml = format!(
        "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n",
        dir.display(),
        socket.display()
    );
    std::fs::write(&config, toml).expect("config");
    let mut containerd = std::process::Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start containerd");
    let started = Instant::now();
    while !socket.exists() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = cgscope::metadata::cri::list(&socket, Duration::from_secs(5));
    let pid = nix::unistd::Pid::from_raw(containerd.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = containerd.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let listed = answer.expect("containerd answers Version, ListPodSandbox, ListContainers");
    assert!(
        listed.is_empty(),
        "a fresh containerd has no pods: {listed:?}"
    );
}
