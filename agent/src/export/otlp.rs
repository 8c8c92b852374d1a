//! OTLP metrics messages, built with the protocol's own types (opentelemetry-proto);
//! the only file that imports opentelemetry.
//!
//! Why not the SDK's meter API: the kernel has already aggregated the histograms,
//! and the SDK only takes individual measurements (re-recording bucket midpoints
//! would re-sample them, and its instruments cannot take a cumulative start time we
//! chose). So the store's series are written as OTLP messages directly: kernel
//! buckets become exponential histogram buckets unchanged (scale 3), counters carry
//! the start time of their series. The message is encoded once, here, and the
//! transports send the same bytes over gRPC or HTTP.

use opentelemetry_proto::tonic::{
    collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    metrics::v1::{
        exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
        AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
        Metric as OtlpMetric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};
use prost::Message as _;

use super::{
    catalogue::Instrument,
    resource::AgentResource,
    store::{HistogramCounts, Series, Store, Value},
};

/// Aggregation temporality of counters and histograms
/// (`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    Cumulative,
    Delta,
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

/// The export request for the store's current state, encoded.
pub fn encode(store: &Store, agent: &AgentResource, temporality: Temporality) -> Vec<u8> {
    request(store, agent, temporality).encode_to_vec()
}

/// The export request: one `ResourceMetrics` per resource, metrics in catalogue
/// order within it.
pub fn request(
    store: &Store,
    agent: &AgentResource,
    temporality: Temporality,
) -> ExportMetricsServiceRequest {
    let scope = InstrumentationScope {
        name: "cgscope".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    };
    let now = store.window_end_unix_nano;
    let mut resource_metrics = Vec::with_capacity(store.resources.len());
    for resource in store.resources.values() {
        if resource.series.is_empty() {
            continue;
        }
        let mut attributes: Vec<KeyValue> = agent.0.iter().map(|(k, v)| kv(k, v)).collect();
        attributes.extend(resource.attributes.iter().map(|(k, v)| kv(k, v)));
        let mut metrics: Vec<OtlpMetric> = Vec::new();
        for series in resource.series.values() {
            let Some(point) = data(series, temporality, store.window_start_unix_nano, now) else {
                continue;
            };
            // Series of one metric are adjacent (the map is ordered by name).
            match metrics.last_mut() {
                Some(m) if m.name == series.metric.name => append(m, point),
                _ => metrics.push(OtlpMetric {
                    name: series.metric.name.to_owned(),
                    description: series.metric.description.to_owned(),
                    unit: series.metric.unit.to_owned(),
                    data: Some(point),
                    ..Default::default()
                }),
            }
        }
        resource_metrics.push(ResourceMetrics {
            resource: Some(Resource {
                attributes,
                dropped_attributes_count: 0,
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope.clone()),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
    }
    ExportMetricsServiceRequest { resource_metrics }
}

/// One data point of `series`, wrapped in its metric's data kind.
fn data(series: &Series, temporality: Temporality, window_start: u64, now: u64) -> Option<Data> {
    let attributes: Vec<KeyValue> = series.attributes.iter().map(|(k, v)| kv(k, v)).collect();
    let (value, start) = match (series.metric.instrument, temporality) {
        (Instrument::Gauge, _) => (&series.total, 0),
        (_, Temporality::Cumulative) => (&series.total, series.start_unix_nano),
        (_, Temporality::Delta) => (&series.window, window_start),
    };
    let aggregation_temporality = match temporality {
        Temporality::Cumulative => AggregationTemporality::Cumulative,
        Temporality::Delta => AggregationTemporality::Delta,
    } as i32;
    let number = |value: &Value| {
        let v = match value {
            Value::Int(n) => number_data_point::Value::AsInt(i64::try_from(*n).unwrap_or(i64::MAX)),
            Value::Double(x) => number_data_point::Value::AsDouble(*x),
            Value::Histogram(_) => return None,
        };
        Some(NumberDataPoint {
            attributes: attributes.clone(),
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(v),
            ..Default::default()
        })
    };
    Some(match (series.metric.instrument, value) {
        (Instrument::Gauge, v) => Data::Gauge(Gauge {
            data_points: vec![number(v)?],
        }),
        (Instrument::Counter, v) => Data::Sum(Sum {
            data_points: vec![number(v)?],
            aggregation_temporality,
            is_monotonic: true,
        }),
        (Instrument::Histogram, Value::Histogram(h)) => {
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![histogram_point(h, attributes, start, now)],
                aggregation_temporality,
            })
        }
        (Instrument::Histogram, _) => return None,
    })
}

fn histogram_point(
    h: &HistogramCounts,
    attributes: Vec<KeyValue>,
    start: u64,
    now: u64,
) -> ExponentialHistogramDataPoint {
    let (offset, counts) = h.dense();
    ExponentialHistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: h.count,
        sum: Some(h.sum_seconds),
        scale: cgscope_common::histogram::SCALE,
        zero_count: h.zero_count,
        zero_threshold: h.zero_threshold_seconds,
        positive: Some(Buckets {
            offset,
            bucket_counts: counts.to_vec(),
        }),
        negative: None,
        ..Default::default()
    }
}

fn append(metric: &mut OtlpMetric, point: Data) {
    match (&mut metric.data, point) {
        (Some(Data::Gauge(a)), Data::Gauge(b)) => a.data_points.extend(b.data_points),
        (Some(Data::Sum(a)), Data::Sum(b)) => a.data_points.extend(b.data_points),
        (Some(Data::ExponentialHistogram(a)), Data::ExponentialHistogram(b)) => {
            a.data_points.extend(b.data_points)
        }
        _ => {}
    }
}

/// Points the collector rejected, from an export response (OTLP partial success).
pub fn rejected(response: &[u8]) -> Option<(i64, String)> {
    let r = ExportMetricsServiceResponse::decode(response).ok()?;
    let p = r.partial_success?;
    (p.rejected_data_points > 0 || !p.error_message.is_empty())
        .then_some((p.rejected_data_points, p.error_message))
}
