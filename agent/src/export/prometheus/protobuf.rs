//! The protobuf exposition format: varint-length-delimited `io.prometheus.client`
//! `MetricFamily` messages, which Prometheus asks for when native histograms are on.
//! Every sample of the text format is here with the same name, labels and value
//! (classic buckets included); each latency histogram is also a native histogram of
//! schema 3, whose buckets are the kernel's: base 2^(1/8), Prometheus bucket `i`
//! covering (2^((i-1)/8), 2^(i/8)] seconds, that is OTLP bucket `i - 1`. The zero
//! bucket is the kernel's, [0, 2^-22 s].
//!
//! No crate publishes these messages, so the few this format needs are declared here
//! (proto2, from `prometheus/client_model`'s `metrics.proto`; field numbers are the
//! wire contract) and encoded with prost.

use cgscope_common::histogram::OTLP_OFFSET;
use prost::Message as _;

use super::{families, labels, name, target_labels, text::classic_buckets, CHUNK};
use crate::export::{
    catalogue::Instrument,
    resource::AgentResource,
    store::{HistogramCounts, Store, Value},
};

pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Prometheus bucket index of `buckets[0]` at schema 3: one above the OTLP index.
const NATIVE_OFFSET: i32 = OTLP_OFFSET + 1;

/// Empty buckets bridged inside one span rather than starting a new one: a span costs
/// two small varints, an empty bucket one byte (a delta).
const MAX_GAP: usize = 2;

/// The exposition formats `/metrics` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Protobuf,
}

/// The format an `Accept` header asks for: protobuf when it names delimited
/// `MetricFamily` messages with a weight above 0 and at least that of any media
/// range text satisfies (`text/plain`, `text/*`, `*/*`, OpenMetrics' text, which this
/// server answers with 0.0.4); text otherwise, and without a header.
pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
    let (mut protobuf, mut text) = (0.0f64, 0.0f64);
    for range in accept.into_iter().flat_map(|v| v.split(',')) {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or("").to_ascii_lowercase();
        let (mut q, mut proto, mut delimited) = (1.0, false, false);
        for param in params {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "q" => q = value.parse::<f64>().unwrap_or(0.0).clamp(0.0, 1.0),
                "proto" => proto = value == "io.prometheus.client.MetricFamily",
                "encoding" => delimited = value == "delimited",
                _ => {}
            }
        }
        match media.as_str() {
            "application/vnd.google.protobuf" if proto && delimited => protobuf = protobuf.max(q),
            "text/plain" | "text/*" | "*/*" | "application/openmetrics-text" => text = text.max(q),
            _ => {}
        }
    }
    if protobuf > 0.0 && protobuf >= text {
        Format::Protobuf
    } else {
        Format::Text
    }
}

/// The whole exposition: `target_info`, then one message per family, each handed to
/// `sink` once it is about [`CHUNK`] bytes or complete.
pub(super) fn render_into(store: &Store, agent: &AgentResource, sink: &mut dyn FnMut(&[u8])) {
    let mut out = Vec::with_capacity(CHUNK + 4096);
    let target_info = MetricFamily {
        name: Some("target_info".into()),
        help: Some("Target metadata".into()),
        r#type: Some(MetricType::Gauge as i32),
        metric: vec![Metric {
            label: target_labels(agent).map(label).collect(),
            gauge: Some(Sample { value: Some(1.0) }),
            ..Metric::default()
        }],
    };
    put(&target_info, &mut out);
    families(store, |metric, series| {
        let mut family = MetricFamily {
            name: Some(name(metric)),
            help: Some(metric.description.into()),
            r#type: Some(match metric.instrument {
                Instrument::Counter => MetricType::Counter,
                Instrument::Gauge => MetricType::Gauge,
                Instrument::Histogram => MetricType::Histogram,
            } as i32),
            metric: Vec::with_capacity(series.len()),
        };
        for (resource, s) in series {
            let mut m = Metric {
                label: labels(resource, s).map(label).collect(),
                ..Metric::default()
            };
            match (&s.total, metric.instrument) {
                (Value::Histogram(h), _) => m.histogram = Some(histogram(h)),
                (value, Instrument::Counter) => m.counter = Some(sample(value)),
                (value, _) => m.gauge = Some(sample(value)),
            }
            family.metric.push(m);
        }
        put(&family, &mut out);
        if out.len() >= CHUNK {
            sink(&out);
            out.clear();
        }
    });
    sink(&out);
}

/// `message` length-delimited onto `out` (a Vec grows: encoding cannot fail).
fn put(message: &MetricFamily, out: &mut Vec<u8>) {
    let _ = message.encode_length_delimited(out);
}

fn label((name, value): (String, &str)) -> LabelPair {
    LabelPair {
        name: Some(name),
        value: Some(value.to_owned()),
    }
}

fn sample(value: &Value) -> Sample {
    Sample {
        value: Some(value.as_f64()),
    }
}

/// Classic buckets (as text scrapers see them) and the native histogram.
fn histogram(h: &HistogramCounts) -> Histogram {
    let (positive_span, positive_delta) = native_buckets(&h.buckets[..]);
    Histogram {
        sample_count: Some(h.count),
        sample_sum: Some(h.sum_seconds),
        bucket: classic_buckets(h)
            .map(|(upper_bound, cumulative_count)| Bucket {
                cumulative_count: Some(cumulative_count),
                upper_bound: Some(upper_bound),
            })
            .collect(),
        schema: Some(cgscope_common::histogram::SCALE),
        zero_threshold: Some(h.zero_threshold_seconds),
        zero_count: Some(h.zero_count),
        positive_span,
        positive_delta,
    }
}

/// The kernel's buckets as native spans and deltas: runs of buckets (empty runs of at
/// most [`MAX_GAP`] bridged), each span's offset from the end of the one before (the
/// first's from index 0), each count as its difference from the bucket before it,
/// across spans.
pub(super) fn native_buckets(counts: &[u64]) -> (Vec<BucketSpan>, Vec<i64>) {
    let (mut spans, mut deltas) = (Vec::<BucketSpan>::new(), Vec::new());
    // The last non-empty bucket's count, the index after it, the empty buckets since.
    let (mut previous, mut end, mut gap) = (0i64, NATIVE_OFFSET, 0usize);
    for (i, &n) in counts.iter().enumerate() {
        if n == 0 {
            gap += 1;
            continue;
        }
        let index = NATIVE_OFFSET + i as i32;
        match spans.last_mut() {
            Some(span) if gap <= MAX_GAP => {
                for _ in 0..gap {
                    deltas.push(-previous);
                    previous = 0;
                }
                span.length += gap as u32 + 1;
            }
            _ => spans.push(BucketSpan {
                offset: Some(if spans.is_empty() { index } else { index - end }),
                length: 1,
            }),
        }
        let n = n.min(i64::MAX as u64) as i64;
        deltas.push(n - previous);
        (previous, end, gap) = (n, index + 1, 0);
    }
    (spans, deltas)
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricFamily {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub help: Option<String>,
    #[prost(enumeration = "MetricType", optional, tag = "3")]
    pub r#type: Option<i32>,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Sample>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Sample>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// `Gauge` and `Counter`: both are `optional double value = 1`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(sint32, optional, tag = "5")]
    pub schema: Option<i32>,
    #[prost(double, optional, tag = "6")]
    pub zero_threshold: Option<f64>,
    #[prost(uint64, optional, tag = "7")]
    pub zero_count: Option<u64>,
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, packed = "false", tag = "13")]
    pub positive_delta: Vec<i64>,
}

impl Histogram {
    /// The native buckets as (Prometheus index, count), spans and deltas undone,
    /// the empty buckets inside spans included; `None` if the deltas do not match the
    /// spans' lengths or a count goes below zero.
    pub fn positive_buckets(&self) -> Option<Vec<(i32, u64)>> {
        let (mut index, mut count, mut deltas) = (0i32, 0i64, self.positive_delta.iter());
        let mut buckets = Vec::with_capacity(self.positive_delta.len());
        for span in &self.positive_span {
            index += span.offset();
            for _ in 0..span.length {
                count += deltas.next()?;
                buckets.push((index, u64::try_from(count).ok()?));
                index += 1;
            }
        }
        deltas.next().is_none().then_some(buckets)
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Bucket {
    #[prost(uint64, optional, tag = "1")]
    pub cumulative_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub upper_bound: Option<f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BucketSpan {
    #[prost(sint32, optional, tag = "1")]
    pub offset: Option<i32>,
    #[prost(uint32, required, tag = "2")]
    pub length: u32,
}
