//! The HTTP API, described by `docs/openapi.yaml`:
//! - `GET /metrics`: Prometheus text, or protobuf with native histograms to a scraper
//!   that asks for it (each rendered at most once per window);
//! - `GET /api/v1/containers`: pods and containers of the latest window;
//!   `GET /api/v1/containers/{id}`: one, by container id, pod UID or cgroup id;
//! - `GET /api/v1/host`: the host, the probes, the window;
//! - `GET /api/v1/snapshot`: the whole `cgscope.snapshot/v1` window;
//! - `GET /healthz` (windows keep coming: fails when none ended for three window
//!   lengths), `GET /readyz` (probes attached and the first window complete).

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRef, Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Serialize;
use tokio::sync::watch;

use super::prometheus::{self, Encoding, Exposition, Format};
use crate::snapshot::{CgroupKind, CgroupSample, Host, ProbeStatus, Snapshot};

/// One window, as every endpoint serves it.
#[derive(Debug)]
pub struct Published {
    pub snapshot: Snapshot,
    /// The whole snapshot as JSON, serialised on the window's first request for it
    /// (megabytes on a dense node: not made while nobody asks); later requests
    /// share it.
    json: OnceLock<Result<bytes::Bytes, String>>,
    /// When the window ended.
    pub at: Instant,
}

impl Published {
    /// The window that just ended.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            snapshot,
            json: OnceLock::new(),
            at: Instant::now(),
        }
    }

    /// The whole snapshot as JSON (blocking: call off the async runtime).
    pub fn json(&self) -> Result<bytes::Bytes, String> {
        self.json
            .get_or_init(|| {
                serde_json::to_vec(&self.snapshot)
                    .map(Into::into)
                    .map_err(|e| format!("cannot serialise the snapshot: {e}"))
            })
            .clone()
    }
}

/// The latest window; `None` until the first one ends.
pub type Latest = watch::Receiver<Option<Arc<Published>>>;

#[derive(Clone)]
pub struct ApiState {
    pub latest: Latest,
    pub exposition: Arc<Exposition>,
    /// The window length, and when the agent started: for `/healthz`.
    pub interval: Duration,
    pub started: Instant,
}

impl FromRef<ApiState> for Latest {
    fn from_ref(state: &ApiState) -> Self {
        state.latest.clone()
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/host", get(host))
        .route("/api/v1/containers", get(containers))
        .route("/api/v1/containers/{id}", get(container))
        .with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn not_ready() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the first window has not ended yet",
    )
}

/// How long the sampler may go without ending a window before `/healthz` fails:
/// three windows (a slow scan under load is not a dead agent), at least 30 s.
fn stall_limit(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(30))
}

async fn healthz(State(state): State<ApiState>) -> Response {
    let (last, over_budget) = state
        .latest
        .borrow()
        .as_ref()
        .map_or((state.started, None), |p| {
            (p.at, p.snapshot.cost.over_budget_message())
        });
    let since = last.elapsed();
    if since > stall_limit(state.interval) {
        let message = format!(
            "no window has ended for {}s (window {:?}): the sampler is stuck or gone",
            since.as_secs(),
            state.interval
        );
        return error(StatusCode::SERVICE_UNAVAILABLE, &message);
    }
    // Healthy still (a restart would not make it cheaper), but said.
    match over_budget {
        Some(message) => format!("ok; cgscope is {message}\n").into_response(),
        None => "ok\n".into_response(),
    }
}

#[derive(Serialize)]
struct Readiness<'a> {
    ready: bool,
    probes: &'a [ProbeStatus],
}

async fn readyz(State(latest): State<Latest>) -> Response {
    let Some(p) = latest.borrow().clone() else {
        return not_ready();
    };
    // Ready: every probe's attach was tried (a failed or disabled one is reported,
    // not waited for: it will not attach later) and a window is complete.
    Json(Readiness {
        ready: true,
        probes: &p.snapshot.probes,
    })
    .into_response()
}

async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if state.latest.borrow().is_none() {
        return not_ready();
    }
    let encoding = Encoding {
        format: prometheus::negotiate(
            headers
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        ),
        gzip: accepts_gzip(&headers),
    };
    // Rendering (and compressing) takes milliseconds per thousand series: off the
    // async workers.
    let exposition = state.exposition.clone();
    let body = tokio::task::spawn_blocking(move || exposition.rendering(encoding));
    match body.await {
        Ok(body) => {
            let content_type = match encoding.format {
                Format::Text => prometheus::TEXT_CONTENT_TYPE,
                Format::Protobuf => prometheus::PROTOBUF_CONTENT_TYPE,
            };
            let mut response = (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::VARY, "accept, accept-encoding"),
                ],
                body,
            )
                .into_response();
            if encoding.gzip {
                response.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    header::HeaderValue::from_static("gzip"),
                );
            }
            response
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("rendering failed: {e}"),
        ),
    }
}

/// Whether the client's `Accept-Encoding` lists gzip (or `*`) with a non-zero
/// weight.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

async fn snapshot(State(latest): State<Latest>) -> Response {
    let Some(published) = latest.borrow().clone() else {
        return not_ready();
    };
    match tokio::task::spawn_blocking(move || published.json()).await {
        Ok(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(Err(e)) => {
            log::error!("{e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, &e)
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("serialising the snapshot failed: {e}"),
        ),
    }
}

#[derive(Serialize)]
struct HostView<'a> {
    schema: &'static str,
    timestamp_seconds: f64,
    window_seconds: f64,
    host: &'a Host,
    probes: &'a [ProbeStatus],
    /// The root cgroup's window (everything on the node).
    root: Option<&'a CgroupSample>,
}

async fn host(State(latest): State<Latest>) -> Response {
    let Some(p) = latest.borrow().clone() else {
        return not_ready();
    };
    let s = &p.snapshot;
    Json(HostView {
        schema: s.schema,
        timestamp_seconds: s.timestamp_seconds,
        window_seconds: s.window_seconds,
        host: &s.host,
        probes: &s.probes,
        root: s.cgroups.iter().find(|c| c.kind == CgroupKind::Root),
    })
    .into_response()
}

#[derive(Serialize)]
struct ContainersView<'a> {
    schema: &'static str,
    timestamp_seconds: f64,
    window_seconds: f64,
    containers: Vec<&'a CgroupSample>,
}

#[derive(Serialize)]
struct ContainerView<'a> {
    schema: &'static str,
    timestamp_seconds: f64,
    window_seconds: f64,
    container: &'a CgroupSample,
}

fn is_container(c: &CgroupSample) -> bool {
    matches!(c.kind, CgroupKind::Pod | CgroupKind::Container)
}

async fn containers(State(latest): State<Latest>) -> Response {
    let Some(p) = latest.borrow().clone() else {
        return not_ready();
    };
    let s = &p.snapshot;
    Json(ContainersView {
        schema: s.schema,
        timestamp_seconds: s.timestamp_seconds,
        window_seconds: s.window_seconds,
        containers: s.cgroups.iter().filter(|c| is_container(c)).collect(),
    })
    .into_response()
}

/// Matches a container id (or a unique prefix of at least 12 digits, as `docker ps`
/// shows it), a pod UID, or a cgroup id.
fn matches(c: &CgroupSample, id: &str) -> bool {
    let m = c.container.as_ref();
    m.is_some_and(|m| m.id_matches(id))
        || (c.kind == CgroupKind::Pod && m.and_then(|m| m.pod_uid.as_deref()) == Some(id))
        || id.parse::<u64>().is_ok_and(|n| n == c.id)
}

async fn container(State(latest): State<Latest>, Path(id): Path<String>) -> Response {
    let Some(p) = latest.borrow().clone() else {
        return not_ready();
    };
    let found: Vec<&CgroupSample> = p
        .snapshot
        .cgroups
        .iter()
        .filter(|c| is_container(c) && matches(c, &id))
        .collect();
    match found.as_slice() {
        [one] => Json(ContainerView {
            schema: p.snapshot.schema,
            timestamp_seconds: p.snapshot.timestamp_seconds,
            window_seconds: p.snapshot.window_seconds,
            container: one,
        })
        .into_response(),
        [] => error(
            StatusCode::NOT_FOUND,
            &format!("no container or pod {id:?} in the latest window"),
        ),
        _ => error(
            StatusCode::BAD_REQUEST,
            &format!(
                "{id:?} matches {} containers; give more digits",
                found.len()
            ),
        ),
    }
}

/// Binds `addr`; the error names the address. Any address but loopback is
/// announced with a warning: the API has no authentication.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    if !addr.ip().is_loopback() {
        log::warn!("the HTTP API listens on {addr}, beyond this host: it has no authentication");
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::resource::AgentResource;
    use tower::ServiceExt;

    /// `/healthz` of an agent that started `ago` and has ended no window since.
    async fn health(ago: Duration) -> StatusCode {
        let (_latest, latest) = watch::channel(None);
        let state = ApiState {
            latest,
            exposition: Arc::new(Exposition::new(AgentResource::from_env(|_| None))),
            interval: Duration::from_secs(10),
            started: Instant::now() - ago,
        };
        let request = axum::http::Request::get("/healthz")
            .body(axum::body::Body::empty())
            .unwrap();
        router(state).oneshot(request).await.unwrap().status()
    }

    #[test]
    fn gzip_is_served_to_clients_that_accept_it() {
        let accepts = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::ACCEPT_ENCODING, v.parse().unwrap());
            }
            accepts_gzip(&headers)
        };
        assert!(accepts(&["gzip"]));
        // Prometheus' own header.
        assert!(accepts(&["gzip, deflate"]));
        assert!(accepts(&["identity", "br;q=0.9, GZIP;q=0.5"]));
        assert!(accepts(&["*"]));
        assert!(!accepts(&[]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["deflate, br"]));
        assert!(!accepts(&["x-gzip2"]));
    }

    #[tokio::test]
    async fn healthz_fails_once_no_window_ended_for_three_windows() {
        assert_eq!(health(Duration::from_secs(5)).await, StatusCode::OK);
        assert_eq!(health(Duration::from_secs(29)).await, StatusCode::OK);
        assert_eq!(
            health(Duration::from_secs(31)).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
