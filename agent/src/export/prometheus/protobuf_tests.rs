//! The protobuf exposition: negotiated as Prometheus asks, the same samples as the
//! text, and native buckets that are the kernel's, one for one.

use prost::Message as _;

use super::{
    example,
    protobuf::{self, negotiate, BucketSpan, Format, Histogram, MetricFamily, MetricType},
    text,
};

/// What Prometheus 2.42 sends with and without `--enable-feature=native-histograms`.
const PROMETHEUS_NATIVE: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const PROMETHEUS_CLASSIC: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[test]
fn protobuf_only_for_those_who_ask_for_it_at_least_as_much_as_text() {
    let cases: &[(&[&str], Format)] = &[
        (&[], Format::Text),
        (&[PROMETHEUS_NATIVE], Format::Protobuf),
        (&[PROMETHEUS_CLASSIC], Format::Text),
        (&["*/*"], Format::Text),
        (&["text/plain", PROMETHEUS_NATIVE], Format::Protobuf),
        (
            &["application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"],
            Format::Protobuf,
        ),
        (
            &["application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0"],
            Format::Text,
        ),
        (
            &["application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"],
            Format::Text,
        ),
        (
            &["application/vnd.google.protobuf;proto=other.Message;encoding=delimited"],
            Format::Text,
        ),
        (
            &["application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.4,text/plain;q=0.9"],
            Format::Text,
        ),
        (
            &["text/plain;q=0.4,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.4"],
            Format::Protobuf,
        ),
        (
            &["application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=bad"],
            Format::Text,
        ),
    ];
    for (accept, expected) in cases {
        assert_eq!(negotiate(accept.iter().copied()), *expected, "{accept:?}");
    }
}

/// A sample: name, labels in order, value.
type Sample = (String, Vec<(String, String)>, f64);

/// The delimited messages of a protobuf exposition.
fn decode(mut bytes: &[u8]) -> Vec<MetricFamily> {
    let mut families = Vec::new();
    while !bytes.is_empty() {
        families.push(MetricFamily::decode_length_delimited(&mut bytes).expect("a family"));
    }
    families
}

/// The samples of a text exposition (label values unescaped).
fn text_samples(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().expect("a number"),
        };
        let (name, mut rest) = series.split_once('{').unwrap_or((series, "}"));
        let mut labels = Vec::new();
        while let Some((key, after)) = rest.split_once("=\"") {
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().expect("a closing quote") {
                    (_, '\\') => match chars.next().expect("an escape").1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.trim_start_matches(',').to_owned(), value));
            rest = &after[end + 1..];
        }
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

/// The samples the text format would show for a protobuf exposition.
fn protobuf_samples(families: &[MetricFamily]) -> Vec<Sample> {
    let mut samples = Vec::new();
    for family in families {
        let name = family.name().to_owned();
        for m in &family.metric {
            let labels: Vec<(String, String)> = m
                .label
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect();
            let with = |extra: Option<(&str, String)>| {
                let mut all = labels.clone();
                all.extend(extra.map(|(k, v)| (k.to_owned(), v)));
                all
            };
            if let Some(h) = &m.histogram {
                for b in &h.bucket {
                    let le = Some(("le", b.upper_bound().to_string()));
                    samples.push((
                        format!("{name}_bucket"),
                        with(le),
                        b.cumulative_count() as f64,
                    ));
                }
                let inf = Some(("le", "+Inf".to_owned()));
                samples.push((format!("{name}_bucket"), with(inf), h.sample_count() as f64));
                samples.push((format!("{name}_sum"), with(None), h.sample_sum()));
                samples.push((format!("{name}_count"), with(None), h.sample_count() as f64));
            } else {
                let value = m.counter.as_ref().or(m.gauge.as_ref()).expect("a value");
                samples.push((name.clone(), with(None), value.value()));
            }
        }
    }
    samples
}

#[test]
fn every_text_sample_is_the_protobufs() {
    let (store, agent) = example(20);
    let text = text::render(&store, &agent);
    let mut bytes = Vec::new();
    protobuf::render_into(&store, &agent, &mut |chunk| bytes.extend_from_slice(chunk));
    let families = decode(&bytes);

    let kinds: Vec<(&str, MetricType)> = families.iter().map(|f| (f.name(), f.r#type())).collect();
    assert!(
        kinds.contains(&("target_info", MetricType::Gauge)),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("container_cpu_time_seconds_total", MetricType::Counter)));
    assert!(kinds.contains(&("container_cpu_runq_latency_seconds", MetricType::Histogram)));
    let expected = text_samples(&text);
    assert!(expected.len() > 20 * 30, "{} samples", expected.len());
    assert_eq!(protobuf_samples(&families), expected);

    // Every family's HELP and TYPE are the text's.
    for f in &families {
        let kind = format!("{:?}", f.r#type()).to_lowercase();
        assert!(text.contains(&format!("# HELP {} {}\n", f.name(), f.help())));
        assert!(text.contains(&format!("# TYPE {} {kind}\n", f.name())));
    }
}

/// (index, count) of every non-empty native bucket, from spans and deltas.
fn expand(spans: &[BucketSpan], deltas: &[i64]) -> Vec<(i32, u64)> {
    let h = Histogram {
        positive_span: spans.to_vec(),
        positive_delta: deltas.to_vec(),
        ..Histogram::default()
    };
    let buckets = h
        .positive_buckets()
        .expect("a delta per bucket, counts >= 0");
    buckets.into_iter().filter(|&(_, n)| n > 0).collect()
}

#[test]
fn native_buckets_are_the_kernels_one_for_one() {
    // Schema 3, index i: (2^((i-1)/8), 2^(i/8)]. The kernel's first bucket (OTLP
    // -176) is (2^-22, 2^(-22+1/8)]: Prometheus index -175.
    let first = -175;
    let mut counts = [0u64; cgscope_common::histogram::BUCKETS];
    counts[2..10].copy_from_slice(&[5, 3, 0, 2, 0, 0, 0, 7]);
    let (spans, deltas) = protobuf::native_buckets(&counts);
    // One empty bucket is bridged, three start a new span 3 after the last one.
    assert_eq!(
        spans
            .iter()
            .map(|s| (s.offset(), s.length))
            .collect::<Vec<_>>(),
        [(first + 2, 4), (3, 1)]
    );
    assert_eq!(deltas, [5, -2, -3, 2, 5]);

    // Any counts come back bucket for bucket.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        let counts: Vec<u64> = (0..counts.len())
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if seed.is_multiple_of(3) {
                    seed % 1_000_000
                } else {
                    0
                }
            })
            .collect();
        let (spans, deltas) = protobuf::native_buckets(&counts);
        let expected: Vec<(i32, u64)> = counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (first + i as i32, n))
            .collect();
        assert_eq!(expand(&spans, &deltas), expected);
    }
    let (spans, deltas) = protobuf::native_buckets(&[0; 8]);
    assert!(spans.is_empty() && deltas.is_empty());
}

#[test]
fn a_histogram_carries_both_its_classic_and_native_buckets() {
    let (store, agent) = example(1);
    let mut bytes = Vec::new();
    protobuf::render_into(&store, &agent, &mut |chunk| bytes.extend_from_slice(chunk));
    let families = decode(&bytes);
    let runq = families
        .iter()
        .find(|f| f.name() == "container_cpu_runq_latency_seconds")
        .expect("the run-queue family");
    let h = runq.metric[0].histogram.as_ref().expect("a histogram");
    assert_eq!((h.schema(), h.sample_count()), (3, 2));
    assert_eq!(h.zero_threshold(), 2f64.powi(-22));
    // 1 µs lies in (2^(-160/8), 2^(-159/8)], 2 ms in (2^(-72/8), 2^(-71/8)].
    assert_eq!(
        expand(&h.positive_span, &h.positive_delta),
        [(-159, 1), (-71, 1)]
    );
    assert_eq!(h.bucket.len(), 27);
}
