//! `deploy/grafana/cgscope.json` judged against a real Prometheus that scraped
//! cgscope: every panel's PromQL and every variable's query parses and returns
//! series, or the panel is named with the metrics cgscope exported no series of.
//! Shared by the export tests (a host's test cgroups) and the node's (real pods).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{common::http_get, peers};

/// The node name the scrape adds to every series, as service discovery would.
pub const NODE: &str = "test-node";

/// The dashboard as Grafana imports it.
fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/cgscope.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect(path)).expect("dashboard JSON")
}

/// Counters whose series appear only once they count something (docs/metrics.md),
/// with where the snapshot has their window's value for each cgroup. An empty panel
/// of one is "nothing counted" (not "no source") only if the agent's last snapshot
/// has that value for some cgroup and it is zero for all: the source is there and no
/// event happened (a node without an OOM kill or a lost segment in the run).
const COUNTED_ON_DATA: [(&str, &str); 2] = [
    (
        "container_memory_oom_kills_total",
        "/memory/oom_kills/count",
    ),
    (
        "container_network_tcp_retransmits_total",
        "/network/tcp_retransmits",
    ),
];

/// Whether `metric` is one of [`COUNTED_ON_DATA`] that counted nothing in the
/// agent's last window while its source was there.
fn counted_nothing(metric: &str, snapshot: &Value) -> bool {
    let Some((_, pointer)) = COUNTED_ON_DATA.iter().find(|(m, _)| *m == metric) else {
        return false;
    };
    let values: Vec<u64> = snapshot["cgroups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.pointer(pointer)?.as_u64())
        .collect();
    !values.is_empty() && values.iter().all(|&n| n == 0)
}

/// A panel's query as Grafana sends it with the node picked and "All" elsewhere.
fn expand(expr: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$node", NODE)
        .replace("$namespace", ".*")
        .replace("$pod", ".*")
        .replace("$container", ".*")
}

/// The metric names an expression reads: the identifiers right before a `{`.
pub fn metrics_in(expr: &str) -> Vec<String> {
    expr.split('{')
        .filter_map(|before| {
            let name = before
                .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()?;
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

/// Waits up to `timeout` until each histogram the dashboard draws has a rate for
/// the container `container_id`: a histogram is judged only once it has one.
pub fn wait_for_histograms(prometheus: u16, container_id: &str, timeout: Duration) {
    let ready = [
        "container_cpu_runq_latency_seconds_bucket",
        "container_disk_latency_seconds_bucket",
        "container_network_tcp_rtt_seconds_bucket",
    ];
    let started = Instant::now();
    for metric in ready {
        let query = format!("sum(rate({metric}{{container_id=\"{container_id}\"}}[10s])) > 0");
        while peers::instant_query(prometheus, &query).1.is_empty() {
            assert!(
                started.elapsed() < timeout,
                "no {metric} of {container_id} in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Runs every panel's query and every variable's on Prometheus at `prometheus`,
/// which scrapes the agent at `listen`. A query Prometheus refuses, a metric
/// cgscope does not define, and a panel without series although cgscope exports
/// every metric it reads all fail; returns the panels without series because
/// cgscope exported none of a metric (`"<title> (<metrics>)"`), but for counters
/// that have counted nothing while their source is there ([`counted_nothing`]),
/// which are printed.
pub fn judge(prometheus: u16, listen: &str) -> Vec<String> {
    let (_, exposition) = http_get(listen, "/metrics").expect("/metrics");
    let (_, snapshot) = http_get(listen, "/api/v1/snapshot").expect("/api/v1/snapshot");
    let snapshot: Value = serde_json::from_str(&snapshot).expect("snapshot JSON");
    // Every metric a panel reads is one cgscope defines (a typo is not "no source").
    let known: Vec<String> = cgscope::export::catalogue::all()
        .map(cgscope::export::prometheus::name)
        .collect();
    let defined = |m: &str| {
        known.iter().any(|k| {
            m == k
                || m.strip_prefix(k.as_str())
                    .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
        })
    };
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut no_source = Vec::new();
    let mut answered = 0;
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = expand(target["expr"].as_str().expect("expr"));
            for m in metrics_in(&expr) {
                assert!(defined(&m), "{m}: not a metric cgscope exports");
            }
            let (status, mut result) = peers::instant_query(prometheus, &expr);
            assert_eq!(status, 200, "panel {title:?}: Prometheus refused {expr}");
            let missing: Vec<String> = metrics_in(&expr)
                .into_iter()
                .filter(|m| !exposition.contains(&format!("\n{m}")))
                .collect();
            // Every series exported: a rate over 10 s needs two scrapes in it, and on
            // a slow TCG node one may come late (two panels failed so, one each run).
            let asked = std::time::Instant::now();
            while result.is_empty()
                && missing.is_empty()
                && asked.elapsed() < std::time::Duration::from_secs(20)
            {
                std::thread::sleep(std::time::Duration::from_secs(1));
                result = peers::instant_query(prometheus, &expr).1;
            }
            if !result.is_empty() {
                answered += 1;
                continue;
            }
            // Empty: only acceptable when cgscope exported no series of a metric it
            // reads (e.g. memory.* and cpu.max without v2 controllers, hybrid host).
            assert!(
                !missing.is_empty(),
                "panel {title:?} returned no series: {expr}"
            );
            if missing.iter().all(|m| counted_nothing(m, &snapshot)) {
                eprintln!("panel {title:?}: {missing:?} counted nothing in this run");
                continue;
            }
            no_source.push(format!("{title} ({})", missing.join(", ")));
        }
    }
    eprintln!("{answered} panel queries returned series; no source here: {no_source:?}");

    // The variables: label_values(metric{selector}, label) is the series API.
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue; // the data source picker
        };
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .expect("label_values(...)");
        let (selector, label) = inner.rsplit_once(", ").expect("metric, label");
        let path = format!(
            "/api/v1/label/{}/values?match[]={}",
            label.trim(),
            peers::url_encode(&expand(selector))
        );
        let (status, values) = peers::prometheus_api(prometheus, &path);
        assert_eq!(status, 200, "variable {query}");
        if label.trim() == "k8s_node_name" {
            assert_eq!(values, serde_json::json!([NODE]), "variable {query}");
        }
    }
    no_source
}
