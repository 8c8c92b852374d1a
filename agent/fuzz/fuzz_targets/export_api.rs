//! The API's lookup of one container (agent/src/export/api.rs,
//! `GET /api/v1/containers/{id}`: a container id or a 12+ digit prefix, a pod UID or
//! a cgroup id), through the real router, and the playbooks' selectors
//! (agent/src/playbook/run.rs), on a window with two containers whose ids share 12
//! digits, their pod and a service. Any client may send any id.
#![no_main]

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use axum::{body::Body, http::Request, http::StatusCode, Router};
use cgscope::{
    export::{
        api::{router, ApiState, Published},
        prometheus::Exposition,
        resource::AgentResource,
    },
    measure::targets,
    snapshot::{CgroupKind, CgroupMode, CgroupSample, ContainerSample, Host, HostSample, SCHEMA, Snapshot},
};
use libfuzzer_sys::fuzz_target;
use tokio::sync::watch;
use tower::ServiceExt;

const POD_UID: &str = "11111111-2222-3333-4444-555555555555";
const ID_A: &str = "0123456789ab0000000000000000000000000000000000000000000000000000";
const ID_B: &str = "0123456789abffffffffffffffffffffffffffffffffffffffffffffffffffff";

struct Api {
    runtime: tokio::runtime::Runtime,
    router: Router,
    snapshot: Snapshot,
    _latest: watch::Sender<Option<Arc<Published>>>,
}

fn cgroup(path: &str, id: u64, kind: CgroupKind, container_id: &str) -> CgroupSample {
    let mut c = CgroupSample::bare(path, id, kind);
    c.container = Some(ContainerSample {
        kind,
        id: Some(container_id.to_owned()),
        pod_uid: Some(POD_UID.to_owned()),
        name: Some(format!("name-{id}")),
        pod: Some("web".to_owned()),
        namespace: Some("default".to_owned()),
        ..ContainerSample::default()
    });
    c
}

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let pod = "/kubepods.slice/kubepods-pod11111111_2222_3333_4444_555555555555.slice";
        let snapshot = Snapshot {
            schema: SCHEMA,
            timestamp_seconds: 1.0,
            window_seconds: 1.0,
            host: Host {
                kernel: "fuzz".to_owned(),
                cgroup_mode: CgroupMode::Unified,
                cgroup_root: "/sys/fs/cgroup".to_owned(),
                window: HostSample::default(),
            },
            probes: Vec::new(),
            scan_errors: Default::default(),
            cost: Default::default(),
            cgroups: vec![
                CgroupSample::bare("/", 1, CgroupKind::Root),
                CgroupSample::bare("/system.slice/a.service", 2, CgroupKind::Service),
                cgroup(pod, 10, CgroupKind::Pod, POD_UID),
                cgroup(
                    &format!("{pod}/cri-containerd-{ID_A}.scope"),
                    11,
                    CgroupKind::Container,
                    ID_A,
                ),
                cgroup(
                    &format!("{pod}/cri-containerd-{ID_B}.scope"),
                    12,
                    CgroupKind::Container,
                    ID_B,
                ),
            ],
        };
        let published = Published::new(snapshot.clone());
        let (sender, latest) = watch::channel(Some(Arc::new(published)));
        let state = ApiState {
            latest,
            exposition: Arc::new(Exposition::new(AgentResource::from_env(|_| None))),
            interval: Duration::from_secs(10),
            started: Instant::now(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime");
        Api {
            runtime,
            router: router(state),
            snapshot,
            _latest: sender,
        }
    })
}

/// `bytes` with every byte but the URI path's unreserved ones as `%XX`.
fn percent_encoded(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn get(api: &Api, uri: &str) -> Option<StatusCode> {
    let request = Request::get(uri).body(Body::empty()).ok()?;
    let response = api
        .runtime
        .block_on(api.router.clone().oneshot(request))
        .expect("the router is infallible");
    Some(response.status())
}

fuzz_target!(|data: &[u8]| {
    let api = api();
    // Every id, as a client would send it encoded: it reaches the lookup.
    let encoded = format!("/api/v1/containers/{}", percent_encoded(data));
    let status = get(api, &encoded).expect("an encoded path is a valid URI");
    let id = std::str::from_utf8(data).ok();
    let expected = match id {
        Some(ID_A) | Some(ID_B) | Some(POD_UID) | Some("10") | Some("11") | Some("12") => {
            StatusCode::OK
        }
        // A 12-digit prefix the two containers share, and the pod's UID as a prefix.
        Some(id) if id.len() >= 12 && (ID_A.starts_with(id) && ID_B.starts_with(id)) => {
            StatusCode::BAD_REQUEST
        }
        Some(id) if id.len() >= 12 && (ID_A.starts_with(id) || ID_B.starts_with(id)) => {
            StatusCode::OK
        }
        _ => status,
    };
    assert!(
        matches!(
            status,
            StatusCode::OK | StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST
        ),
        "{encoded}: {status}"
    );
    assert_eq!(status, expected, "{encoded}");
    // The same bytes raw, where they form a URI at all.
    if let Ok(raw) = std::str::from_utf8(data) {
        if let Some(status) = get(api, &format!("/api/v1/containers/{raw}")) {
            assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{raw:?}");
        }
        let _ = targets(&api.snapshot, Some(raw));
    }
});
