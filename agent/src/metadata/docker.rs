//! The Docker Engine API over its unix socket (also served by Podman):
//! `GET /containers/json?all=1` and `GET /version`, as HTTP/1.0 so that the reply
//! is not chunked and ends when the server closes the connection.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use serde::Deserialize;

use super::{sanitize, ContainerMeta, MetadataError};
use crate::snapshot::Runtime;

/// Replies larger than this are refused (a node lists at most a few thousand).
const MAX_REPLY: u64 = 64 << 20;

#[derive(Deserialize)]
struct Container {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Names", default)]
    names: Vec<String>,
    /// Unix seconds.
    #[serde(rename = "Created", default)]
    created: i64,
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct Version {
    #[serde(rename = "Components", default)]
    components: Vec<Component>,
}

#[derive(Deserialize)]
struct Component {
    #[serde(rename = "Name", default)]
    name: String,
}

/// One GET; the whole exchange is bounded by `timeout`.
fn get(socket: &Path, path: &str, timeout: Duration) -> Result<Vec<u8>, MetadataError> {
    let err = |what: String| MetadataError::Runtime {
        socket: socket.display().to_string(),
        what,
    };
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(socket).map_err(|e| err(format!("connect: {e}")))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| err(e.to_string()))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n")
        .map_err(|e| err(format!("send: {e}")))?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(err(format!("no complete reply within {timeout:?}")));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| err(e.to_string()))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The socket's read timeout: the deadline has passed.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(err(format!("no complete reply within {timeout:?}")))
            }
            Err(e) => return Err(err(format!("read: {e}"))),
        }
        if reply.len() as u64 > MAX_REPLY {
            return Err(err("reply too large".into()));
        }
    }
    body(&reply).map(<[u8]>::to_vec).map_err(err)
}

/// The body of an HTTP/1.x reply with status 200.
pub fn body(reply: &[u8]) -> Result<&[u8], String> {
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header")?;
    let head = String::from_utf8_lossy(&reply[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(format!("HTTP status {status}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err("chunked reply to an HTTP/1.0 request".into());
    }
    Ok(&reply[split + 4..])
}

/// Which engine serves the socket: Podman says so in `/version`.
pub fn runtime(socket: &Path, timeout: Duration) -> Result<Runtime, MetadataError> {
    let reply = get(socket, "/version", timeout)?;
    parse_version(&reply).map_err(|e| MetadataError::Runtime {
        socket: socket.display().to_string(),
        what: format!("/version: {e}"),
    })
}

/// The engine named by the body of a `/version` reply (`{"Components": [{"Name":
/// "Podman Engine", ...}], ...}`): Podman if a component says so, else Docker.
pub fn parse_version(body: &[u8]) -> Result<Runtime, serde_json::Error> {
    let version: Version = serde_json::from_slice(body)?;
    let podman = version
        .components
        .iter()
        .any(|c| c.name.to_ascii_lowercase().contains("podman"));
    Ok(if podman {
        Runtime::Podman
    } else {
        Runtime::Docker
    })
}

/// Every container the engine knows (running or not).
pub fn list(
    socket: &Path,
    runtime: Runtime,
    timeout: Duration,
) -> Result<Vec<ContainerMeta>, MetadataError> {
    let reply = get(socket, "/containers/json?all=1", timeout)?;
    parse_containers(&reply, runtime).map_err(|e| MetadataError::Runtime {
        socket: socket.display().to_string(),
        what: format!("/containers/json: {e}"),
    })
}

/// The containers in the body of a `/containers/json` reply (`[{"Id": ..., "Names":
/// ["/web"], "Image": ..., "Created": 1700000000, "Labels": {...}}, ...]`), every
/// string sanitised.
pub fn parse_containers(
    body: &[u8],
    runtime: Runtime,
) -> Result<Vec<ContainerMeta>, serde_json::Error> {
    let containers: Vec<Container> = serde_json::from_slice(body)?;
    Ok(containers
        .into_iter()
        .map(|c| {
            let labels: BTreeMap<String, String> = c
                .labels
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| (sanitize(k), sanitize(v)))
                .collect();
            let label = |k: &str| labels.get(k).cloned();
            // Kubernetes through cri-dockerd labels its containers.
            let name = label("io.kubernetes.container.name")
                .or_else(|| c.names.first().map(|n| sanitize(n.trim_start_matches('/'))));
            ContainerMeta {
                id: sanitize(&c.id),
                name,
                image: Some(sanitize(&c.image)).filter(|i| !i.is_empty()),
                pod: label("io.kubernetes.pod.name"),
                namespace: label("io.kubernetes.pod.namespace"),
                pod_uid: label("io.kubernetes.pod.uid"),
                runtime,
                labels,
                created_seconds: (c.created > 0).then_some(c.created as f64),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bodies() {
        assert_eq!(
            body(b"HTTP/1.0 200 OK\r\nContent-Type: x\r\n\r\n[1]").unwrap(),
            b"[1]"
        );
        assert!(body(b"HTTP/1.0 404 Not Found\r\n\r\n{}")
            .unwrap_err()
            .contains("404"));
        assert!(body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]").is_err());
        assert!(body(b"garbage").is_err());
    }

    #[test]
    fn a_hung_engine_times_out() {
        let dir = std::env::temp_dir().join(format!("cgscope-hung-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("hung.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        // Accepts and then says nothing.
        let server = std::thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                std::thread::sleep(Duration::from_secs(2));
                drop(stream);
            }
        });
        let started = Instant::now();
        let result = list(&socket, Runtime::Docker, Duration::from_millis(300));
        assert!(
            result.unwrap_err().to_string().contains("within"),
            "times out"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        let _ = server.join();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
