//! The real peers: the rotel collector (PyPI `rotel`, its `rotel-agent` binary) with
//! a parser for its debug output, and Prometheus.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::common::Peer;

/// rotel-agent: `$CGSCOPE_ROTEL_AGENT` where it is set (the VMs, which have no
/// Python), else the one in the `rotel` wheel (`cargo xtask setup` installs it).
pub fn rotel_agent() -> PathBuf {
    if let Some(path) = std::env::var_os("CGSCOPE_ROTEL_AGENT") {
        return PathBuf::from(path);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .expect("python3");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.exists(),
        "rotel is not installed (run cargo xtask setup): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// A running rotel collector printing every metric it receives to a file.
pub struct Rotel {
    _process: Peer,
    /// Its OTLP/gRPC port.
    pub grpc: u16,
    log: tempfile_path::TempPath,
}

mod tempfile_path {
    /// A file under the temp dir, removed on drop.
    pub struct TempPath(pub std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Starts rotel on loopback `grpc` and `http` ports and waits until both listen.
pub fn rotel(grpc: u16, http: u16) -> Rotel {
    let log = tempfile_path::TempPath(
        std::env::temp_dir().join(format!("cgscope-rotel-{}-{grpc}.log", std::process::id())),
    );
    let file = std::fs::File::create(&log.0).expect("rotel log");
    let process = Peer(
        Command::new(rotel_agent())
            .args(["start", "--otlp-grpc-endpoint"])
            .arg(format!("127.0.0.1:{grpc}"))
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{http}"))
            .args([
                "--exporter",
                "blackhole",
                "--debug-log",
                "metrics",
                "--debug-log-verbosity",
                "detailed",
            ])
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start rotel-agent"),
    );
    wait_listening(&[grpc, http]);
    Rotel {
        _process: process,
        grpc,
        log,
    }
}

/// Waits (at most 20 s) until something listens on each loopback port.
pub fn wait_listening(ports: &[u16]) {
    let started = Instant::now();
    while ports
        .iter()
        .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing listens on {ports:?} after 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Rotel {
    /// Everything rotel printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log.0).unwrap_or_default()
    }
}

#[derive(Debug, Default)]
pub struct Metric {
    pub unit: String,
}

#[derive(Debug, Default)]
pub struct Resource {
    pub attributes: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, Metric>,
    /// Exponential histogram points by metric name, in arrival order.
    pub histograms: Vec<(String, HistogramPoint)>,
    /// Number points: (metric, attributes as `k=v` joined by `,`, value).
    pub numbers: Vec<(String, String, f64)>,
}

#[derive(Debug, Default, Clone)]
pub struct HistogramPoint {
    pub start_unix_nano: u64,
    pub time_unix_nano: u64,
    pub count: u64,
    /// `(OTLP bucket index at scale 3, count)` of the non-empty buckets.
    pub buckets: Vec<(i32, u64)>,
}

impl HistogramPoint {
    /// Bucket-wise `self - before` (non-empty results only).
    pub fn minus(&self, before: &Self) -> Vec<(i32, u64)> {
        let mut counts: BTreeMap<i32, i64> = BTreeMap::new();
        for (i, n) in &self.buckets {
            *counts.entry(*i).or_default() += *n as i64;
        }
        for (i, n) in &before.buckets {
            *counts.entry(*i).or_default() -= *n as i64;
        }
        counts
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|(i, n)| (i, u64::try_from(n).expect("a cumulative bucket went down")))
            .collect()
    }
}

/// rotel's debug output (the collector's debug exporter format), as far as the tests
/// read it.
#[derive(Debug, Default)]
pub struct RotelOutput {
    pub resources: Vec<Resource>,
}

fn value_of(line: &str, key: &str) -> Option<String> {
    line.trim().strip_prefix(key).map(|v| v.trim().to_owned())
}

impl RotelOutput {
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        let mut metric = String::new();
        let mut in_point_attributes = false;
        let mut point_attributes: Vec<String> = Vec::new();
        let mut in_resource_attributes = false;
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with("ResourceMetrics #") {
                out.resources.push(Resource::default());
                continue;
            }
            let Some(r) = out.resources.last_mut() else {
                continue;
            };
            if t == "Resource attributes:" {
                in_resource_attributes = true;
                continue;
            }
            if t == "Data point attributes:" {
                in_point_attributes = true;
                point_attributes.clear();
                continue;
            }
            if let Some(kv) = t.strip_prefix("-> ") {
                let (k, v) = kv.split_once(": ").unwrap_or((kv, ""));
                let v = v
                    .strip_prefix("Str(")
                    .and_then(|v| v.strip_suffix(')'))
                    .unwrap_or(v);
                if in_resource_attributes {
                    r.attributes.insert(k.to_owned(), v.to_owned());
                } else if in_point_attributes {
                    point_attributes.push(format!("{k}={v}"));
                } else if k == "Name" {
                    metric = v.to_owned();
                    r.metrics.entry(metric.clone()).or_default();
                } else if k == "Unit" {
                    r.metrics.entry(metric.clone()).or_default().unit = v.to_owned();
                }
                continue;
            }
            in_resource_attributes = false;
            in_point_attributes = false;
            if t.starts_with("ExponentialHistogramDataPoints #") {
                r.histograms
                    .push((metric.clone(), HistogramPoint::default()));
            } else if t.starts_with("NumberDataPoints #") {
                point_attributes.clear();
            } else if let Some(v) = value_of(t, "StartTimestamp:") {
                if let Some((_, p)) = r.histograms.last_mut().filter(|(m, _)| *m == metric) {
                    p.start_unix_nano = v.parse().unwrap_or(0);
                }
            } else if let Some(v) = value_of(t, "Timestamp:") {
                if let Some((_, p)) = r.histograms.last_mut().filter(|(m, _)| *m == metric) {
                    p.time_unix_nano = v.parse().unwrap_or(0);
                }
            } else if let Some(v) = value_of(t, "Value:") {
                let v = v.parse().unwrap_or(f64::NAN);
                r.numbers
                    .push((metric.clone(), point_attributes.join(","), v));
            } else if let Some(rest) = t.strip_prefix("Bucket (") {
                // "Bucket (lo, hi], Count: n": the index follows from the upper bound.
                let (bounds, count) = rest.split_once("], Count: ").unwrap_or(("", "0"));
                let hi: f64 = bounds
                    .split(", ")
                    .nth(1)
                    .and_then(|h| h.parse().ok())
                    .unwrap_or(0.0);
                let n: u64 = count.trim().parse().unwrap_or(0);
                if let Some((_, p)) = r.histograms.last_mut() {
                    if n > 0 {
                        let index = (hi.log2() * 8.0).round() as i32 - 1;
                        p.buckets.push((index, n));
                    }
                }
            } else if let Some(v) = value_of(t, "Count:") {
                if let Some((_, p)) = r.histograms.last_mut().filter(|(m, _)| *m == metric) {
                    p.count = v.parse().unwrap_or(0);
                }
            }
        }
        out
    }

    /// The histogram points of `metric` on the resource with `container.id`, in
    /// arrival order.
    pub fn histogram_points(&self, container_id: &str, metric: &str) -> Vec<HistogramPoint> {
        self.resources
            .iter()
            .filter(|r| r.attributes.get("container.id").map(String::as_str) == Some(container_id))
            .flat_map(|r| &r.histograms)
            .filter(|(m, _)| m == metric)
            .map(|(_, p)| p.clone())
            .collect()
    }
}

/// Prometheus scraping `target` every second, its API on `port`, data in a temp dir.
pub struct Prometheus {
    _process: Peer,
    dir: PathBuf,
    pub port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// GET on Prometheus' API at `port`: the HTTP status (0 while it does not listen yet)
/// and the answer's `data`.
pub fn prometheus_api(port: u16, path: &str) -> (u16, serde_json::Value) {
    let (status, body) =
        crate::common::http_get(&format!("127.0.0.1:{port}"), path).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    (status, v["data"].clone())
}

/// A PromQL instant query: the HTTP status and the result vector (empty when
/// Prometheus refused the query or does not listen yet).
pub fn instant_query(port: u16, query: &str) -> (u16, Vec<serde_json::Value>) {
    let (status, data) =
        prometheus_api(port, &format!("/api/v1/query?query={}", url_encode(query)));
    (
        status,
        data["result"].as_array().cloned().unwrap_or_default(),
    )
}

/// `s` percent-encoded for a URL's query string.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn prometheus(target: &str, port: u16) -> Prometheus {
    start_prometheus(target, port, "{}", &[])
}

/// Prometheus scraping `target` every second, adding `labels` (a YAML map, e.g.
/// `{k8s_node_name: n1}`) to every series, as service discovery relabelling would.
pub fn prometheus_labelled(target: &str, port: u16, labels: &str) -> Prometheus {
    start_prometheus(target, port, labels, &[])
}

/// Prometheus with native histograms on: it asks `target` for the protobuf format.
pub fn prometheus_native(target: &str, port: u16) -> Prometheus {
    start_prometheus(target, port, "{}", &["native-histograms"])
}

fn start_prometheus(target: &str, port: u16, labels: &str, features: &[&str]) -> Prometheus {
    let dir =
        std::env::temp_dir().join(format!("cgscope-prometheus-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: cgscope\n    static_configs:\n      - targets: ['{target}']\n        labels: {labels}\n"
        ),
    )
    .expect("prometheus.yml");
    let process = Peer(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(features.iter().map(|f| format!("--enable-feature={f}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (run cargo xtask setup)"),
    );
    Prometheus {
        _process: process,
        dir,
        port,
    }
}
