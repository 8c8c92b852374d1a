//! Serving the API within bounds: a flood of clients, idle or slow, must neither
//! take the descriptors the sampler and the exporter need nor hold the server. At
//! most [`ServeLimits::max_connections`] connections are open at once, fewer when
//! the descriptor limit leaves less room: [`ServeLimits::reserve`] descriptors above
//! those open when serving began stay free for the rest of the agent (the limit is
//! read again at each accept). More clients wait in the kernel's accept queue. A
//! client has [`ServeLimits::header_timeout`] to send a request's headers; a
//! connection lives at most [`ServeLimits::lifetime`], however it is used
//! (keep-alive, a reader that never reads).

use std::{future::Future, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};

/// What API clients can hold.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub max_connections: usize,
    /// Descriptors kept free for the sampler (a directory and a file at a time, the
    /// namespaces it reads), the OTLP connection and the runtimes' sockets.
    pub reserve: u64,
    pub header_timeout: Duration,
    pub lifetime: Duration,
}

impl Default for ServeLimits {
    /// 64 connections (a node has a scraper or two, a collector, an operator), 16
    /// descriptors kept free, 5 s for headers, 60 s per connection.
    fn default() -> Self {
        Self {
            max_connections: 64,
            reserve: 16,
            header_timeout: Duration::from_secs(5),
            lifetime: Duration::from_secs(60),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then closes every
/// connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let in_use = open_descriptors();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // Accept failures (EMFILE...) are logged once per run of them.
    let mut failing = false;
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
        };
        // Within the room the descriptor limit leaves (at least one connection).
        let open = limits.max_connections - permits.available_permits() - 1;
        if open as u64 >= room(in_use, limits.reserve) {
            drop(permit);
            while connections.try_join_next().is_some() {}
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(Duration::from_millis(50)) => continue,
            }
        }
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if !failing {
                        log::warn!("the API cannot accept connections: {e}; retrying");
                    }
                    failing = true;
                    // Out of descriptors: give the sampler's reads the room first.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if std::mem::take(&mut failing) {
            log::info!("the API accepts connections again");
        }
        let service = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            // Errors are the client's (reset, timeout): nothing to report.
            let _ = tokio::time::timeout(limits.lifetime, connection).await;
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

/// Descriptors this process has open.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// How many connections the descriptor limit has room for, with `in_use`
/// descriptors taken before serving and `reserve` kept free; at least one.
fn room(in_use: u64, reserve: u64) -> u64 {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(u64::MAX, |(soft, _)| soft);
    limit.saturating_sub(in_use + reserve).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn idle_clients_at_the_cap_are_timed_out_and_others_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/x", axum::routing::get(|| async { "ok" }));
        let limits = ServeLimits {
            max_connections: 4,
            reserve: 0,
            header_timeout: Duration::from_millis(300),
            lifetime: Duration::from_secs(2),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, limits, async {
            let _ = stopped.await;
        }));
        // Four clients that connect and send nothing take every slot.
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let started = std::time::Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(5), get(addr))
            .await
            .expect("served once the idle clients timed out")
            .unwrap();
        assert!(reply.ends_with("ok"), "{reply}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "served at once ({waited:?}): the cap did not hold"
        );
        // The idle clients were closed by the server.
        for mut s in idle {
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
            assert!(
                matches!(n, Ok(Ok(_)) | Ok(Err(_))),
                "idle client still open"
            );
        }
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("server stops")
            .unwrap();
    }
}
