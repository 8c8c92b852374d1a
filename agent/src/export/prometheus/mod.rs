//! `GET /metrics`: the store in the Prometheus text format, named by the
//! OpenTelemetry → Prometheus rules: `.` becomes `_`, the unit is a suffix (`s` →
//! `_seconds`, `By` → `_bytes`, `%` → `_percent`, `1` → `_ratio`; `{…}` annotations
//! are dropped), counters end in `_total`. Exponential histograms become classic
//! histograms with buckets at powers of 2 seconds: eight kernel buckets (scale 3) make
//! one (scale 0) exactly, nothing is interpolated. The cgroup's identity attributes
//! are labels on every series; the agent's resource attributes are on `target_info`.

use std::{
    fmt::Write as _,
    sync::{Mutex, MutexGuard},
};

use cgscope_common::histogram::{BUCKETS, OTLP_OFFSET, SUB_BUCKETS};

use super::{
    catalogue::{self, Instrument, Metric},
    resource::AgentResource,
    store::{Resource, Series, Store, Value},
};

/// The store, shared by the sampler (which updates it) and `/metrics` (which renders
/// it on scrape, at most once per window and encoding: nothing is rendered while
/// nobody scrapes).
pub struct Exposition {
    store: Mutex<Store>,
    agent: AgentResource,
    cache: Mutex<Rendered>,
}

/// How a scraper asked for the exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Text,
    /// Gzip'd text (Prometheus asks for it; the text of a dense node compresses about
    /// twentyfold). Rendered straight into the compressor: the text of thousands of
    /// containers (tens of MB) is never held whole.
    Gzip,
}

/// The latest window's renderings, each made on the first scrape that asks for it.
#[derive(Default)]
struct Rendered {
    window_end: u64,
    text: Option<bytes::Bytes>,
    gzip: Option<bytes::Bytes>,
}

/// Text handed to the sink at a time while rendering.
const CHUNK: usize = 64 * 1024;

impl Exposition {
    pub fn new(agent: AgentResource) -> Self {
        Self {
            store: Mutex::new(Store::default()),
            agent,
            cache: Mutex::new(Rendered::default()),
        }
    }

    pub fn agent(&self) -> &AgentResource {
        &self.agent
    }

    /// The store, for the sampler's update.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        // The store is consistent after a panic elsewhere: updates replace it whole.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The exposition of the latest window in `encoding` (blocking: call off the
    /// async runtime).
    pub fn rendering(&self, encoding: Encoding) -> bytes::Bytes {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let store = self.store();
        if cache.window_end != store.window_end_unix_nano {
            *cache = Rendered {
                window_end: store.window_end_unix_nano,
                ..Rendered::default()
            };
        }
        let slot = match encoding {
            Encoding::Text => &mut cache.text,
            Encoding::Gzip => &mut cache.gzip,
        };
        slot.get_or_insert_with(|| match encoding {
            Encoding::Text => render(&store, &self.agent).into(),
            Encoding::Gzip => gzip_rendering(&store, &self.agent).into(),
        })
        .clone()
    }
}

/// The exposition rendered into gzip (level 1: a scrape of thousands of containers
/// must not wait for the compressor, and higher levels gain little on text this
/// repetitive).
fn gzip_rendering(store: &Store, agent: &AgentResource) -> Vec<u8> {
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(CHUNK), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    render_into(store, agent, &mut |chunk| {
        let _ = std::io::Write::write_all(&mut encoder, chunk.as_bytes());
    });
    encoder.finish().unwrap_or_default()
}

/// Prometheus name of a metric.
pub fn name(m: &Metric) -> String {
    let mut out = sanitize(m.name);
    let unit = match m.unit {
        "s" => Some("seconds"),
        "By" => Some("bytes"),
        "%" => Some("percent"),
        "1" if m.instrument == Instrument::Gauge => Some("ratio"),
        _ => None,
    };
    if let Some(unit) = unit {
        if !out.ends_with(unit) {
            out.push('_');
            out.push_str(unit);
        }
    }
    if m.instrument == Instrument::Counter {
        out.push_str("_total");
    }
    out
}

/// Label (and metric) names: anything but `[a-zA-Z0-9_]` becomes `_`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `{k="v",...}` from the resource's and the series' attributes, plus `extra`.
fn labels(resource: &Resource, series: &Series, extra: Option<(&str, &str)>, out: &mut String) {
    let mut first = true;
    let all = resource
        .attributes
        .iter()
        .chain(&series.attributes)
        .map(|(k, v)| (*k, v.as_str()))
        .chain(extra);
    for (k, v) in all {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(&sanitize(k));
        out.push_str("=\"");
        escape(v, out);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
}

/// Upper bound in seconds of classic bucket `k`: 2^(k+1).
fn le(k: i32) -> String {
    format!("{}", 2f64.powi(k + 1))
}

/// The whole exposition.
pub fn render(store: &Store, agent: &AgentResource) -> String {
    let mut text = String::new();
    render_into(store, agent, &mut |chunk| text.push_str(chunk));
    text
}

/// The whole exposition, handed to `sink` in pieces of about [`CHUNK`] bytes.
fn render_into(store: &Store, agent: &AgentResource, sink: &mut dyn FnMut(&str)) {
    let mut out = String::with_capacity(CHUNK + 4096);
    out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info");
    let mut first = true;
    for (k, v) in &agent.0 {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{}=\"", sanitize(k));
        escape(v, &mut out);
        out.push('"');
    }
    out.push_str(if first { " 1\n" } else { "} 1\n" });

    // Grouped by metric, in catalogue order.
    let mut series: Vec<(&Resource, &Series)> = store.series().map(|(_, r, s)| (r, s)).collect();
    series.sort_by_key(|(_, s)| s.metric.name);
    for metric in catalogue::all() {
        let start = series.partition_point(|(_, s)| s.metric.name < metric.name);
        let end = series.partition_point(|(_, s)| s.metric.name <= metric.name);
        if start == end {
            continue;
        }
        let name = name(metric);
        let kind = match metric.instrument {
            Instrument::Counter => "counter",
            Instrument::Gauge => "gauge",
            Instrument::Histogram => "histogram",
        };
        // Text format 0.0.4: the family of a counter is its full name.
        let _ = writeln!(out, "# HELP {name} {}", metric.description);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (resource, s) in &series[start..end] {
            if out.len() >= CHUNK {
                sink(&out);
                out.clear();
            }
            match &s.total {
                Value::Int(_) | Value::Double(_) => {
                    out.push_str(&name);
                    labels(resource, s, None, &mut out);
                    let _ = match &s.total {
                        Value::Int(v) => writeln!(out, " {v}"),
                        _ => writeln!(out, " {}", s.total.as_f64()),
                    };
                }
                Value::Histogram(h) => {
                    let mut cumulative = h.zero_count;
                    let octaves = BUCKETS / SUB_BUCKETS;
                    let first_octave = OTLP_OFFSET.div_euclid(SUB_BUCKETS as i32);
                    for (i, octave) in h.buckets.chunks(SUB_BUCKETS).take(octaves).enumerate() {
                        cumulative += octave.iter().sum::<u64>();
                        let bound = le(first_octave + i as i32);
                        let _ = write!(out, "{name}_bucket");
                        labels(resource, s, Some(("le", &bound)), &mut out);
                        let _ = writeln!(out, " {cumulative}");
                    }
                    let _ = write!(out, "{name}_bucket");
                    labels(resource, s, Some(("le", "+Inf")), &mut out);
                    let _ = writeln!(out, " {}", h.count);
                    let _ = write!(out, "{name}_sum");
                    labels(resource, s, None, &mut out);
                    let _ = writeln!(out, " {}", h.sum_seconds);
                    let _ = write!(out, "{name}_count");
                    labels(resource, s, None, &mut out);
                    let _ = writeln!(out, " {}", h.count);
                }
            }
        }
    }
    sink(&out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gzip_rendering_is_the_text_rendering() {
        use crate::export::{
            filter::Filter,
            points::AgentSample,
            store::tests::{cgroup, snapshot},
        };
        let cgroups = (1..=300)
            .map(|i| cgroup(i, 1.0, &[1_000, 2_000_000]))
            .collect();
        let mut store = Store::default();
        store.update(
            &snapshot(10.0, cgroups),
            &AgentSample::default(),
            &Filter::default(),
        );
        let agent = AgentResource(vec![("service.name".to_owned(), "cgscope".to_owned())]);
        let text = render(&store, &agent);
        assert!(
            text.len() > 4 * CHUNK,
            "{} bytes: several chunks",
            text.len()
        );
        let gzip = gzip_rendering(&store, &agent);
        assert!(gzip.len() * 10 < text.len(), "{} bytes of gzip", gzip.len());
        let mut back = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut back)
            .expect("gunzip");
        assert_eq!(back, text);
    }

    #[test]
    fn label_values_escape_what_the_format_requires_and_nothing_else() {
        let mut out = String::new();
        escape("a\\b\"c\nd\x1b]0;t\x07\u{202e}", &mut out);
        // Text format 0.0.4: backslash, double quote and line feed; any other UTF-8
        // is a valid label value, kept exact.
        assert_eq!(out, "a\\\\b\\\"c\\nd\x1b]0;t\x07\u{202e}");
    }

    #[test]
    fn names_follow_the_otel_rules() {
        assert_eq!(
            name(&catalogue::CPU_TIME),
            "container_cpu_time_seconds_total"
        );
        assert_eq!(
            name(&catalogue::MEMORY_USAGE),
            "container_memory_usage_bytes"
        );
        assert_eq!(
            name(&catalogue::CPU_THROTTLED_PERIODS),
            "container_cpu_throttling_data_throttled_periods_total"
        );
        assert_eq!(
            name(&catalogue::CPU_RUNQ_LATENCY),
            "container_cpu_runq_latency_seconds"
        );
        assert_eq!(
            name(&catalogue::PRESSURE_AVG10),
            "container_linux_pressure_avg10_percent"
        );
        assert_eq!(
            name(&catalogue::SELF_PROBE_ATTACHED),
            "cgscope_probe_attached_ratio"
        );
        // OTLP bucket i at scale 3 ends at 2^((i+1)/8): octave k of eight ends at 2^(k+1).
        assert_eq!(OTLP_OFFSET.rem_euclid(SUB_BUCKETS as i32), 0);
        assert_eq!(le(-1), "1");
        assert_eq!(le(-3), "0.25");
    }
}
