//! The HTTP API: `GET /healthz` and `GET /api/v1/snapshot` (the latest window as
//! `cgscope.snapshot/v1` JSON). The JSON is serialised once per window, not per request.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use tokio::sync::watch;

/// The latest snapshot, already serialised; `None` until the first window ends.
pub type Latest = watch::Receiver<Option<Arc<str>>>;

pub fn router(latest: Latest) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/snapshot", get(snapshot))
        .with_state(latest)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn snapshot(State(latest): State<Latest>) -> impl IntoResponse {
    match latest.borrow().clone() {
        Some(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json.to_string(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"the first window has not ended yet"}"#.to_owned(),
        ),
    }
}

/// Binds `addr`; the error names the address.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}
