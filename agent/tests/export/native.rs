//! Prometheus with native histograms on scrapes the protobuf exposition: its
//! histogram of a container's run-queue latency is cgscope's, bucket for bucket.

use std::time::{Duration, Instant};

use cgscope::{
    export::prometheus::{protobuf::MetricFamily, PROTOBUF_CONTENT_TYPE},
    snapshot::ExponentialHistogram,
};
use prost::Message as _;
use serde_json::Value;

use crate::{
    agent, busy_container,
    common::{self, free_port, http_get, http_get_bytes},
    frozen_after, peers, require_root_and_cgroup_v2, serial,
};

const RUNQ: &str = "container_cpu_runq_latency_seconds";
const CPU: &str = "container_cpu_time_seconds_total";

/// What the agent's protobuf exposition says of the container at `path`: its
/// run-queue histogram (OTLP indices) and CPU time.
#[derive(Debug, Clone, PartialEq)]
struct Own {
    histogram: ExponentialHistogram,
    cpu_seconds: f64,
}

fn exposed(listen: &str, path: &str) -> Option<Own> {
    let (status, body) =
        http_get_bytes(listen, "/metrics", &[("Accept", PROTOBUF_CONTENT_TYPE)]).ok()?;
    assert_eq!(status, 200);
    let mut bytes = &body[..];
    let (mut histogram, mut cpu_seconds) = (None, None);
    while !bytes.is_empty() {
        let family = MetricFamily::decode_length_delimited(&mut bytes).expect("a family");
        let ours = family.metric.iter().find(|m| {
            m.label
                .iter()
                .any(|l| l.name() == "cgscope_cgroup_path" && l.value() == path)
        });
        match (family.name(), ours) {
            (RUNQ, Some(m)) => {
                let h = m.histogram.as_ref().expect("a histogram");
                assert_eq!(h.schema(), 3);
                let buckets = h.positive_buckets().expect("spans and deltas that agree");
                // Prometheus index i = OTLP i - 1; dense from the first bucket (the
                // gaps between spans are empty).
                let offset = buckets.first().map_or(0, |b| b.0 - 1);
                let mut bucket_counts = Vec::new();
                for (index, count) in buckets {
                    bucket_counts.resize((index - 1 - offset) as usize, 0);
                    bucket_counts.push(count);
                }
                histogram = Some(ExponentialHistogram {
                    scale: 3,
                    count: h.sample_count(),
                    sum_seconds: h.sample_sum(),
                    zero_count: h.zero_count(),
                    zero_threshold_seconds: h.zero_threshold(),
                    offset,
                    bucket_counts,
                });
            }
            (CPU, Some(m)) => cpu_seconds = m.counter.as_ref().map(|c| c.value()),
            _ => {}
        }
    }
    Some(Own {
        histogram: histogram?,
        cpu_seconds: cpu_seconds?,
    })
}

/// A native histogram from Prometheus' query API as (OTLP index, count) of its
/// non-empty buckets, its zero bucket's count, count and sum.
fn scraped(h: &Value) -> (Vec<(i32, u64)>, u64, u64, f64) {
    let number = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    let (mut buckets, mut zero) = (Vec::new(), 0);
    for b in h["buckets"].as_array().into_iter().flatten() {
        let (lower, upper, n) = (number(&b[1]), number(&b[2]), number(&b[3]) as u64);
        if lower < 0.0 {
            zero += n;
            continue;
        }
        // (2^(k/8), 2^((k+1)/8)] is OTLP bucket k.
        let k = (upper.log2() * 8.0).round() as i32 - 1;
        let exact = 2f64.powf(f64::from(k + 1) / 8.0);
        assert!(
            ((upper - exact) / exact).abs() < 1e-12,
            "bound {upper} vs {exact}"
        );
        buckets.push((k, n));
    }
    (buckets, zero, number(&h["count"]) as u64, number(&h["sum"]))
}

fn non_empty(h: &ExponentialHistogram) -> Vec<(i32, u64)> {
    (h.offset..)
        .zip(h.bucket_counts.iter().copied())
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn prometheus_native_histograms_are_the_kernel_buckets() {
    require_root_and_cgroup_v2!();
    if !common::have("prometheus") {
        eprintln!("skipped: no prometheus (cargo xtask setup installs it)");
        return;
    }
    let _serial = serial();
    let (tree, path) = busy_container("native");
    let listen = format!("127.0.0.1:{}", free_port());
    let _agent = agent(&listen, &tree.top.path, &[]);
    let prom = peers::prometheus_native(&listen, free_port());

    let own = frozen_after(&path, Duration::from_secs(4), || exposed(&listen, &path));
    assert!(own.histogram.count > 50, "{} waits", own.histogram.count);

    // Prometheus' latest scrape holds the same numbers.
    let selector = format!("{{cgscope_cgroup_path=\"{path}\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (native, cpu) = loop {
        let runq = peers::instant_query(prom.port, &format!("{RUNQ}{selector}")).1;
        let cpu = peers::instant_query(prom.port, &format!("{CPU}{selector}")).1;
        let native = runq.first().map(|s| scraped(&s["histogram"][1]));
        let cpu = cpu
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok());
        let h = &own.histogram;
        let want = (non_empty(h), h.zero_count, h.count);
        if native
            .as_ref()
            .is_some_and(|n| (n.0.clone(), n.1, n.2) == want)
            && cpu == Some(own.cpu_seconds)
        {
            break (native.expect("a native histogram"), cpu);
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has {native:?} and CPU {cpu:?}, cgscope {want:?} and {}",
            own.cpu_seconds
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let sum = native.3;
    assert!(
        (sum - own.histogram.sum_seconds).abs() <= 1e-9 * sum.max(1.0),
        "sum {sum} vs {}",
        own.histogram.sum_seconds
    );
    assert_eq!(cpu, Some(own.cpu_seconds));

    // The text exposition's classic buckets are the same counts, eight to an octave.
    let (_, text) = http_get(&listen, "/metrics").expect("GET /metrics");
    let octaves = own.histogram.octaves();
    let mut cumulative = 0;
    for (upper, n) in octaves
        .iter()
        .skip(usize::from(own.histogram.zero_count > 0))
    {
        cumulative += n;
        let line = format!("{RUNQ}_bucket{{");
        let le = format!("le=\"{upper}\"}} ");
        let found = text
            .lines()
            .find(|l| l.starts_with(&line) && l.contains(&path) && l.contains(&le))
            .unwrap_or_else(|| panic!("no classic bucket le={upper}"));
        let count: u64 = found
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a count");
        assert_eq!(count, cumulative + own.histogram.zero_count, "{found}");
    }

    // histogram_quantile on the scraped native histogram: the agent's own p99
    // (the snapshot's quantile), within one bucket (a factor of 2^(1/8)).
    let query = format!("histogram_quantile(0.99, {RUNQ}{selector})");
    let p99 = peers::instant_query(prom.port, &query)
        .1
        .first()
        .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        .expect("a quantile");
    let ours = own.histogram.quantile(0.99);
    let bucket = 2f64.powf(1.0 / 8.0);
    eprintln!(
        "{} waits in {} buckets, p99 {p99:.6} s (Prometheus) vs {ours:.6} s (cgscope)",
        own.histogram.count,
        native.0.len()
    );
    assert!(
        (ours / bucket..=ours * bucket).contains(&p99),
        "p99 {p99} vs {ours}"
    );
    drop(prom);
    drop(tree);
}
