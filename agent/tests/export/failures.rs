//! A collector that goes away for two minutes, one that refuses (503, 429 with
//! `Retry-After`) and one that hangs: the agent keeps sampling and serving, retries,
//! counts what it drops, bounds its memory, and resumes with continuous counters.

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    agent, busy_container,
    common::{self, free_port, http_get},
    peers::rotel,
    peers::RotelOutput,
    serial, CONTAINER_ID,
};
use crate::require_root_and_cgroup_v2;

/// The value of one series in a Prometheus exposition (exact label set match).
fn prom_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

pub(crate) fn metrics(listen: &str) -> String {
    http_get(listen, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

/// `/metrics` as soon as `ready` holds for it, or as it is after `within` (the
/// caller's assertions then say what is missing). A counter shows in the window
/// after the event: how soon depends on probe attach and the machine's load.
pub(crate) fn metrics_when(listen: &str, within: Duration, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = metrics(listen);
        if ready(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn collector_down_for_two_minutes_then_back() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let (grpc, http) = (free_port(), free_port());
    let (tree, _) = busy_container("otlp-outage");
    let listen = format!("127.0.0.1:{}", free_port());
    let endpoint = format!("http://127.0.0.1:{grpc}");
    let agent = agent(
        &listen,
        &tree.top.path,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ],
    );
    let pid = agent.0.id();

    let collector = rotel(grpc, http);
    std::thread::sleep(Duration::from_secs(5));
    let before = RotelOutput::parse(&collector.output());
    drop(collector);

    // Two minutes without a collector: the agent samples, serves, queues, drops.
    let mut rss = Vec::new();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(120) {
        rss.push(common::rss_kib(pid));
        assert!(!metrics(&listen).is_empty(), "/metrics stopped answering");
        std::thread::sleep(Duration::from_secs(10));
    }
    // Back: within the maximum backoff (5 s, jittered), then the queued batches
    // oldest first: wait until the present (120 s past the last export before the
    // outage) has arrived.
    let last_before_ns = before
        .histogram_points(CONTAINER_ID, "container.cpu.runq.latency")
        .last()
        .map_or(0, |p| p.time_unix_nano);
    let collector = rotel(grpc, http);
    let back = Instant::now();
    let after = loop {
        let out = RotelOutput::parse(&collector.output());
        let newest = out
            .histogram_points(CONTAINER_ID, "container.cpu.runq.latency")
            .last()
            .map_or(0, |p| p.time_unix_nano);
        if newest > last_before_ns + 120_000_000_000 || back.elapsed() > Duration::from_secs(30) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let text = metrics(&listen);
    drop(agent);
    drop(collector);

    let (low, high) = (
        rss.iter().min().copied().unwrap_or(0),
        rss.iter().max().copied().unwrap_or(0),
    );
    assert!(
        high > 0 && high - low < 16 * 1024,
        "RSS grew from {low} to {high} KiB while the collector was down"
    );
    let dropped = prom_value(
        &text,
        r#"cgscope_export_dropped_total{cgscope_reason="queue_full"}"#,
    )
    .unwrap_or(0.0);
    assert!(
        dropped > 0.0,
        "120 windows with a 60-batch queue dropped nothing:\n{text}"
    );
    let failures: f64 = text
        .lines()
        .filter(|l| l.starts_with("cgscope_export_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failures > 0.0, "no failed attempts counted");

    // Continuity: the same series (same start time) with counts that only grew.
    let old = before.histogram_points(CONTAINER_ID, "container.cpu.runq.latency");
    let new = after.histogram_points(CONTAINER_ID, "container.cpu.runq.latency");
    let (Some(last_before), Some(first_after)) = (old.last(), new.first()) else {
        panic!(
            "no exports before ({}) or after ({}) the outage",
            old.len(),
            new.len()
        );
    };
    assert_eq!(
        first_after.start_unix_nano, last_before.start_unix_nano,
        "the cumulative series restarted"
    );
    assert!(first_after.count >= last_before.count);
    // The queue kept the newest 60 windows: what arrives first after the outage is
    // about a minute after the last before it; the newest is the present.
    let gap_seconds = (first_after.time_unix_nano - last_before.time_unix_nano) as f64 * 1e-9;
    assert!(
        (30.0..100.0).contains(&gap_seconds),
        "first batch after the outage is {gap_seconds} s after the last before"
    );
    let newest = new.last().map_or(0, |p| p.time_unix_nano);
    assert!(newest > last_before.time_unix_nano + 120_000_000_000);
    let _ = first_after.minus(last_before); // panics if a bucket went down
    drop(tree);
}

/// A fake collector on loopback answering `responses` in turn (the last one
/// forever); records when each request arrived. `None` means: read the request,
/// never answer.
fn misbehaving_collector(responses: Vec<Option<&'static str>>) -> (u16, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Instant::now());
            read_request(&mut stream);
            match responses.get(i).or(responses.last()).copied().flatten() {
                Some(head) => {
                    let _ = write!(
                        stream,
                        "{head}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
                None => held.push(stream), // hang: keep the connection open, silent
            }
        }
    });
    (port, arrivals)
}

/// Reads one HTTP request, body included (an unread body would make the close a
/// reset, which the client sees instead of the answer).
fn read_request(stream: &mut std::net::TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut data = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if data.len() >= end + 4 + length {
            return;
        }
    }
}

/// CPU seconds the test container used so far, from `/metrics`.
fn container_cpu_seconds(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("container_cpu_time_seconds_total{") && l.contains(CONTAINER_ID))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn collector_refusing_with_503_and_429_then_accepting() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let (port, arrivals) = misbehaving_collector(vec![
        Some("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2"),
        Some("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2"),
        Some("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2"),
        Some("HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf"),
    ]);
    let (tree, _) = busy_container("otlp-refused");
    let listen = format!("127.0.0.1:{}", free_port());
    let endpoint = format!("http://127.0.0.1:{port}");
    let agent = agent(
        &listen,
        &tree.top.path,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    );
    // Three refusals, each waited out for at least its Retry-After and at most the
    // jittered backoff (up to 1.5 × 4 s for the third): allow up to 30 s for the
    // batches to get through.
    let text = metrics_when(&listen, Duration::from_secs(30), |t| {
        prom_value(t, "cgscope_export_sent_total").unwrap_or(0.0) >= 3.0
    });
    drop(agent);
    drop(tree);

    let value = |s: &str| prom_value(&text, s).unwrap_or(0.0);
    assert_eq!(
        value(r#"cgscope_export_failures_total{error_type="http_503"}"#),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(r#"cgscope_export_failures_total{error_type="http_429"}"#),
        1.0
    );
    assert!(value("cgscope_export_sent_total") >= 3.0, "{text}");
    assert_eq!(
        value(r#"cgscope_export_dropped_total{cgscope_reason="rejected"}"#),
        0.0
    );
    // Retry-After: 2 was honoured (jittered backoff alone would retry after ~1 s).
    let at = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for pair in at.windows(2).take(3) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(1900),
            "retried after {gap:?}, before Retry-After"
        );
    }
}

#[test]
fn collector_that_hangs_times_out_and_sampling_goes_on() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let (port, arrivals) = misbehaving_collector(vec![None]);
    let (tree, _) = busy_container("otlp-hang");
    let listen = format!("127.0.0.1:{}", free_port());
    let endpoint = format!("http://127.0.0.1:{port}");
    let agent = agent(
        &listen,
        &tree.top.path,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ],
    );
    std::thread::sleep(Duration::from_secs(4));
    let started = Instant::now();
    let first = metrics(&listen);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/metrics waited on the collector"
    );
    std::thread::sleep(Duration::from_secs(3));
    let second = metrics_when(&listen, Duration::from_secs(20), |t| {
        prom_value(t, r#"cgscope_export_failures_total{error_type="timeout"}"#).is_some()
    });
    drop(agent);
    drop(tree);

    assert!(
        prom_value(
            &second,
            r#"cgscope_export_failures_total{error_type="timeout"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{second}"
    );
    assert_eq!(prom_value(&second, "cgscope_export_sent_total"), Some(0.0));
    // Windows kept coming while the exporter waited: the busy container's CPU time
    // (one CPU's worth) grew by about the 3 s or more between the two reads.
    let grew = container_cpu_seconds(&second) - container_cpu_seconds(&first);
    assert!(grew > 1.5, "CPU time grew by {grew} s in at least 3 s");
    assert!(
        arrivals.lock().map(|a| a.len()).unwrap_or(0) >= 2,
        "no retry after the timeout"
    );
}
