//! Names from the container runtimes. All runtime I/O happens on a background
//! thread that fills a cache, asking every runtime at once (a slow one, such as a
//! socket-activated Docker still starting, delays no other's names); the sampler
//! only reads the cache and asks for a refresh when it meets a container id it does
//! not know, so a slow or hung runtime never stalls a scan (names then appear from
//! the next window on). Every string a runtime returns is untrusted: control
//! characters are stripped, lengths capped, and nothing is ever used to build a
//! filesystem path.

pub mod cri;
pub mod docker;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::snapshot::{CgroupKind, CgroupSample, Runtime};

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("container runtime at {socket}: {what}")]
    Runtime { socket: String, what: String },
}

/// What a runtime says about one container (strings sanitised).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerMeta {
    pub id: String,
    pub name: Option<String>,
    pub image: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub runtime: Runtime,
    pub labels: BTreeMap<String, String>,
    /// When the runtime created the container, Unix seconds.
    pub created_seconds: Option<f64>,
}

/// Longest string kept from a runtime (a Kubernetes label value is at most 63,
/// a DNS subdomain 253; image references can be longer).
const MAX_LEN: usize = 512;

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            docker_sockets: DEFAULT_DOCKER_SOCKETS.iter().map(PathBuf::from).collect(),
            cri_sockets: DEFAULT_CRI_SOCKETS.iter().map(PathBuf::from).collect(),
            timeout: Duration::from_secs(2),
            refresh: Duration::from_secs(60),
        }
    }
}

/// Drops control characters (terminal escapes, newlines) and caps the length.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_LEN)
        .collect()
}

/// Where Docker and Podman serve the Docker Engine API by default.
pub const DEFAULT_DOCKER_SOCKETS: [&str; 2] = ["/run/docker.sock", "/run/podman/podman.sock"];
/// Where containerd and CRI-O serve the CRI by default.
pub const DEFAULT_CRI_SOCKETS: [&str; 2] =
    ["/run/containerd/containerd.sock", "/run/crio/crio.sock"];

#[derive(Debug, Clone)]
pub struct MetadataConfig {
    /// Docker Engine API sockets (Docker, Podman); absent ones are skipped.
    pub docker_sockets: Vec<PathBuf>,
    /// CRI sockets (containerd, CRI-O); absent ones are skipped.
    pub cri_sockets: Vec<PathBuf>,
    /// Bound on one exchange with a runtime.
    pub timeout: Duration,
    /// Refresh at least this often, even without unknown containers.
    pub refresh: Duration,
}

#[derive(Default)]
struct Cache {
    containers: HashMap<String, Arc<ContainerMeta>>,
    /// Pod UID → (pod name, namespace), from any of its containers.
    pods: HashMap<String, (Option<String>, Option<String>)>,
    /// Refreshes completed: every runtime answered or failed.
    refreshes: u64,
}

/// The cache and the signal of each completed refresh.
#[derive(Default)]
struct Shared {
    cache: Mutex<Cache>,
    refreshed: Condvar,
}

/// The cache and its refresh thread; dropping it stops the thread.
pub struct Metadata {
    cache: Arc<Shared>,
    /// The bound on one exchange: a refresh ends within it.
    timeout: Duration,
    wake: Option<mpsc::SyncSender<()>>,
    worker: Option<JoinHandle<()>>,
}

impl Metadata {
    pub fn start(config: MetadataConfig) -> Self {
        let cache = Arc::new(Shared::default());
        let timeout = config.timeout;
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let shared = Arc::clone(&cache);
        let worker = std::thread::Builder::new()
            .name("metadata".into())
            .spawn(move || refresh_loop(&config, &shared, &woken))
            .map_err(|e| log::warn!("no container names: cannot start the metadata thread: {e}"))
            .ok();
        Self {
            cache,
            timeout,
            wake: Some(wake),
            worker,
        }
    }

    /// Waits until every runtime has answered (or failed) once, at most a refresh's
    /// bound and a second: for commands that report one window, whose names must
    /// not depend on which runtime happened to answer first.
    pub fn wait_first_refresh(&self) {
        let timeout = self.timeout + Duration::from_secs(1);
        let Ok(cache) = self.cache.cache.lock() else {
            return;
        };
        let _ = self
            .cache
            .refreshed
            .wait_timeout_while(cache, timeout, |c| c.refreshes == 0);
    }

    /// Fills names into pods and containers from the cache; asks for a refresh if
    /// a container is unknown. Never blocks on a runtime.
    pub fn annotate(&self, samples: &mut [CgroupSample]) {
        let Ok(cache) = self.cache.cache.lock() else {
            return;
        };
        let mut unknown = false;
        for sample in samples.iter_mut() {
            let Some(c) = sample.container.as_mut() else {
                continue;
            };
            match sample.kind {
                CgroupKind::Container => {
                    match c.id.as_ref().and_then(|id| cache.containers.get(id)) {
                        Some(meta) => {
                            c.name = meta.name.clone();
                            c.image = meta.image.clone();
                            c.pod = meta.pod.clone();
                            c.namespace = meta.namespace.clone();
                            c.runtime = c.runtime.or(Some(meta.runtime));
                            c.labels = meta.labels.clone();
                            c.created_seconds = meta.created_seconds;
                        }
                        None => unknown = true,
                    }
                }
                CgroupKind::Pod => {
                    if let Some((name, namespace)) =
                        c.pod_uid.as_ref().and_then(|u| cache.pods.get(u))
                    {
                        c.name = name.clone();
                        c.pod = name.clone();
                        c.namespace = namespace.clone();
                    }
                }
                _ => {}
            }
        }
        drop(cache);
        if unknown {
            if let Some(wake) = &self.wake {
                let _ = wake.try_send(()); // a refresh is already queued if full
            }
        }
    }
}

impl Drop for Metadata {
    fn drop(&mut self) {
        self.wake.take(); // disconnects: the thread ends after its current exchange
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// One runtime's answer: its containers, or why not.
fn ask(
    socket: &Path,
    is_cri: bool,
    runtime: Option<Runtime>,
    timeout: Duration,
) -> Result<(Option<Runtime>, Vec<ContainerMeta>), MetadataError> {
    if is_cri {
        return Ok((None, cri::list(socket, timeout)?));
    }
    let runtime = match runtime {
        Some(r) => r,
        None => docker::runtime(socket, timeout)?,
    };
    Ok((Some(runtime), docker::list(socket, runtime, timeout)?))
}

/// Waits for a wake-up or the refresh period, then asks every runtime, each on a
/// thread of its own. A runtime that fails keeps its previous answers: names are
/// not lost to a hiccup.
fn refresh_loop(config: &MetadataConfig, shared: &Shared, woken: &mpsc::Receiver<()>) {
    /// A burst of unknown containers triggers one refresh, not one each.
    const MIN_GAP: Duration = Duration::from_secs(1);
    let mut runtimes: HashMap<PathBuf, Runtime> = HashMap::new();
    let mut last_error: HashMap<PathBuf, String> = HashMap::new();
    let mut by_socket: HashMap<PathBuf, Vec<ContainerMeta>> = HashMap::new();
    // `None` before the first refresh (no `now - MIN_GAP`: it underflows within a
    // second of boot).
    let mut last: Option<Instant> = None;
    loop {
        if let Some(last) = last {
            std::thread::sleep(MIN_GAP.saturating_sub(last.elapsed()));
        }
        last = Some(Instant::now());
        let docker = config.docker_sockets.iter().map(|s| (s, false));
        let cri = config.cri_sockets.iter().map(|s| (s, true));
        let present: Vec<(&PathBuf, bool)> =
            docker.chain(cri).filter(|(s, _)| s.exists()).collect();
        let answers: Vec<_> = std::thread::scope(|scope| {
            let asking: Vec<_> = present
                .iter()
                .map(|&(socket, is_cri)| {
                    let runtime = runtimes.get(socket).copied();
                    let thread = std::thread::Builder::new()
                        .name("metadata-ask".into())
                        .spawn_scoped(scope, move || ask(socket, is_cri, runtime, config.timeout));
                    (socket, thread)
                })
                .collect();
            asking
                .into_iter()
                .map(|(socket, thread)| {
                    let answer = match thread {
                        Ok(t) => t.join().unwrap_or_else(|_| {
                            Err(MetadataError::Runtime {
                                socket: socket.display().to_string(),
                                what: "the exchange panicked".into(),
                            })
                        }),
                        Err(e) => Err(MetadataError::Runtime {
                            socket: socket.display().to_string(),
                            what: format!("cannot start a thread: {e}"),
                        }),
                    };
                    (socket, answer)
                })
                .collect()
        });
        for (socket, answer) in answers {
            match answer {
                Ok((runtime, list)) => {
                    if last_error.remove(socket).is_some() {
                        log::info!("container runtime at {} answers again", socket.display());
                    }
                    if let Some(r) = runtime {
                        runtimes.insert(socket.clone(), r);
                    }
                    by_socket.insert(socket.clone(), list);
                }
                Err(e) => {
                    // Log a failure once, not every refresh.
                    if last_error.insert(socket.clone(), e.to_string()).is_none() {
                        log::warn!("{e}");
                    }
                }
            }
        }
        let mut fresh = Cache::default();
        for meta in by_socket.values().flatten() {
            if let Some(uid) = &meta.pod_uid {
                fresh
                    .pods
                    .insert(uid.clone(), (meta.pod.clone(), meta.namespace.clone()));
            }
            fresh
                .containers
                .insert(meta.id.clone(), Arc::new(meta.clone()));
        }
        if let Ok(mut cache) = shared.cache.lock() {
            fresh.refreshes = cache.refreshes + 1;
            *cache = fresh;
            shared.refreshed.notify_all();
        }
        match woken.recv_timeout(config.refresh) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn runtime_strings_lose_control_characters() {
        assert_eq!(sanitize("web\u{1b}[31m-1\n"), "web[31m-1");
        assert_eq!(sanitize(&"x".repeat(2000)).len(), 512);
        assert_eq!(
            sanitize("../../etc/passwd"),
            "../../etc/passwd",
            "kept as text, never a path"
        );
    }
}
