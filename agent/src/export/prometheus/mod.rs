//! `GET /metrics`: the store in one of Prometheus' two exposition formats, named by the
//! OpenTelemetry → Prometheus rules: `.` becomes `_`, the unit is a suffix (`s` →
//! `_seconds`, `By` → `_bytes`, `%` → `_percent`, `1` → `_ratio`; `{…}` annotations
//! are dropped), counters end in `_total`. The cgroup's identity attributes are labels
//! on every series; the agent's resource attributes are on `target_info`.
//!
//! - [Text](text) (0.0.4), for every scraper: exponential histograms become classic
//!   histograms with buckets at powers of 2 seconds (eight kernel buckets make one
//!   exactly, nothing is interpolated).
//! - [Protobuf](protobuf) (delimited `MetricFamily`), for a scraper that asks for it
//!   (Prometheus with native histograms on): every latency histogram is also a native
//!   histogram of schema 3, whose buckets are the kernel's, one for one.

pub mod protobuf;
#[cfg(test)]
mod protobuf_tests;
mod text;

use std::sync::{Mutex, MutexGuard};

pub use self::protobuf::{negotiate, Format, CONTENT_TYPE as PROTOBUF_CONTENT_TYPE};
pub use self::text::{render, CONTENT_TYPE as TEXT_CONTENT_TYPE};

use super::{
    catalogue::{self, Instrument, Metric},
    resource::AgentResource,
    store::{Resource, Series, Store},
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
pub struct Encoding {
    pub format: Format,
    /// Gzip'd (Prometheus asks for it; the text of a dense node compresses about
    /// twentyfold). Rendered straight into the compressor: the exposition of
    /// thousands of containers (tens of MB) is never held whole uncompressed.
    pub gzip: bool,
}

impl Encoding {
    fn slot(self) -> usize {
        usize::from(self.format == Format::Protobuf) * 2 + usize::from(self.gzip)
    }
}

/// The latest window's renderings, each made on the first scrape that asks for it
/// (indexed by [`Encoding::slot`]).
#[derive(Default)]
struct Rendered {
    window_end: u64,
    slots: [Option<bytes::Bytes>; 4],
}

/// Bytes handed to the sink at a time while rendering.
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
        cache.slots[encoding.slot()]
            .get_or_insert_with(|| encode(&store, &self.agent, encoding).into())
            .clone()
    }
}

/// The whole exposition in `encoding`. Gzip at level 1: a scrape of thousands of
/// containers must not wait for the compressor, and higher levels gain little on
/// output this repetitive.
fn encode(store: &Store, agent: &AgentResource, encoding: Encoding) -> Vec<u8> {
    let mut sink = if encoding.gzip {
        Sink::Gzip(flate2::write::GzEncoder::new(
            Vec::with_capacity(CHUNK),
            flate2::Compression::fast(),
        ))
    } else {
        Sink::Plain(Vec::with_capacity(CHUNK))
    };
    let mut write = |chunk: &[u8]| sink.write(chunk);
    match encoding.format {
        Format::Text => text::render_into(store, agent, &mut write),
        Format::Protobuf => protobuf::render_into(store, agent, &mut write),
    }
    sink.finish()
}

/// Where a rendering goes, chunk by chunk.
enum Sink {
    Plain(Vec<u8>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

impl Sink {
    fn write(&mut self, chunk: &[u8]) {
        match self {
            Self::Plain(out) => out.extend_from_slice(chunk),
            // Writing to a Vec cannot fail.
            Self::Gzip(encoder) => {
                let _ = std::io::Write::write_all(encoder, chunk);
            }
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Plain(out) => out,
            Self::Gzip(encoder) => encoder.finish().unwrap_or_default(),
        }
    }
}

/// The store's series grouped by metric, in catalogue order, each group handed to
/// `family` (metrics without a series are left out).
fn families<'a>(store: &'a Store, mut family: impl FnMut(&Metric, &[(&'a Resource, &'a Series)])) {
    let mut series: Vec<(&Resource, &Series)> = store.series().map(|(_, r, s)| (r, s)).collect();
    series.sort_by_key(|(_, s)| s.metric.name);
    for metric in catalogue::all() {
        let start = series.partition_point(|(_, s)| s.metric.name < metric.name);
        let end = series.partition_point(|(_, s)| s.metric.name <= metric.name);
        if start < end {
            family(metric, &series[start..end]);
        }
    }
}

/// A series' labels, names sanitized: the resource's attributes, then the series'.
fn labels<'a>(
    resource: &'a Resource,
    series: &'a Series,
) -> impl Iterator<Item = (String, &'a str)> + 'a {
    resource
        .attributes
        .iter()
        .chain(&series.attributes)
        .map(|(k, v)| (sanitize(k), v.as_str()))
}

/// The agent's resource attributes as `target_info`'s labels.
fn target_labels(agent: &AgentResource) -> impl Iterator<Item = (String, &str)> {
    agent.0.iter().map(|(k, v)| (sanitize(k), v.as_str()))
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

/// A store of `cgroups` services, each with CPU time and a run-queue histogram of
/// two waits (1 µs and 2 ms), and the agent's resource.
#[cfg(test)]
fn example(cgroups: u64) -> (Store, AgentResource) {
    use crate::export::{
        filter::Filter,
        points::AgentSample,
        store::tests::{cgroup, snapshot},
    };
    let cgroups = (1..=cgroups)
        .map(|i| cgroup(i, 1.0, &[1_000, 2_000_000]))
        .collect();
    let mut store = Store::default();
    store.update(
        &snapshot(10.0, cgroups),
        &AgentSample::default(),
        &Filter::default(),
    );
    let agent = AgentResource(vec![("service.name".to_owned(), "cgscope".to_owned())]);
    (store, agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_has_its_own_rendering_and_gzip_is_the_plain_one() {
        let (store, agent) = example(300);
        for format in [Format::Text, Format::Protobuf] {
            let plain = encode(
                &store,
                &agent,
                Encoding {
                    format,
                    gzip: false,
                },
            );
            // Several chunks.
            assert!(plain.len() > 2 * CHUNK, "{format:?}: {} bytes", plain.len());
            let gzip = encode(&store, &agent, Encoding { format, gzip: true });
            assert!(
                gzip.len() * 10 < plain.len(),
                "{} bytes of gzip",
                gzip.len()
            );
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut back)
                .expect("gunzip");
            assert_eq!(back, plain, "{format:?}");
        }
        let slots: Vec<usize> = [Format::Text, Format::Protobuf]
            .into_iter()
            .flat_map(|format| [false, true].map(|gzip| Encoding { format, gzip }.slot()))
            .collect();
        assert_eq!(slots, [0, 1, 2, 3]);
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
    }
}
