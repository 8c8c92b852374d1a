//! The text exposition format 0.0.4, which every scraper reads. Exponential
//! histograms become classic histograms with buckets at powers of 2 seconds: eight
//! kernel buckets (scale 3) make one (scale 0) exactly, nothing is interpolated.

use std::fmt::Write as _;

use cgscope_common::histogram::{BUCKETS, OTLP_OFFSET, SUB_BUCKETS};

use super::{families, labels, name, target_labels, CHUNK};
use crate::export::{
    catalogue::Instrument,
    resource::AgentResource,
    store::{HistogramCounts, Store, Value},
};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The classic buckets of a histogram: (upper bound in seconds, cumulative count),
/// one per power of two from the kernel's lowest to its highest; `+Inf` (the count)
/// is not among them.
pub(super) fn classic_buckets(h: &HistogramCounts) -> impl Iterator<Item = (f64, u64)> + '_ {
    let first_octave = OTLP_OFFSET.div_euclid(SUB_BUCKETS as i32);
    h.buckets
        .chunks(SUB_BUCKETS)
        .take(BUCKETS / SUB_BUCKETS)
        .enumerate()
        .scan(h.zero_count, move |cumulative, (i, octave)| {
            *cumulative += octave.iter().sum::<u64>();
            // OTLP bucket i at scale 3 ends at 2^((i+1)/8): octave k of eight ends
            // at 2^(k+1).
            Some((2f64.powi(first_octave + i as i32 + 1), *cumulative))
        })
}

/// The whole exposition as one string.
pub fn render(store: &Store, agent: &AgentResource) -> String {
    let mut text = Vec::new();
    render_into(store, agent, &mut |chunk| text.extend_from_slice(chunk));
    // Only strings were written.
    String::from_utf8(text).unwrap_or_default()
}

/// The whole exposition, handed to `sink` in pieces of about [`CHUNK`] bytes.
pub(super) fn render_into(store: &Store, agent: &AgentResource, sink: &mut dyn FnMut(&[u8])) {
    let mut out = String::with_capacity(CHUNK + 4096);
    out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info");
    write_labels(target_labels(agent), &mut out);
    out.push_str(" 1\n");

    families(store, |metric, series| {
        let name = name(metric);
        let kind = match metric.instrument {
            Instrument::Counter => "counter",
            Instrument::Gauge => "gauge",
            Instrument::Histogram => "histogram",
        };
        // Text format 0.0.4: the family of a counter is its full name.
        let _ = writeln!(out, "# HELP {name} {}", metric.description);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (resource, s) in series {
            if out.len() >= CHUNK {
                sink(out.as_bytes());
                out.clear();
            }
            let line = |out: &mut String, suffix: &str, le: Option<&str>| {
                out.push_str(&name);
                out.push_str(suffix);
                write_labels(labels(resource, s).chain(le.map(|v| ("le".into(), v))), out);
            };
            match &s.total {
                Value::Int(v) => {
                    line(&mut out, "", None);
                    let _ = writeln!(out, " {v}");
                }
                Value::Double(v) => {
                    line(&mut out, "", None);
                    let _ = writeln!(out, " {v}");
                }
                Value::Histogram(h) => {
                    for (bound, cumulative) in classic_buckets(h) {
                        line(&mut out, "_bucket", Some(&bound.to_string()));
                        let _ = writeln!(out, " {cumulative}");
                    }
                    line(&mut out, "_bucket", Some("+Inf"));
                    let _ = writeln!(out, " {}", h.count);
                    line(&mut out, "_sum", None);
                    let _ = writeln!(out, " {}", h.sum_seconds);
                    line(&mut out, "_count", None);
                    let _ = writeln!(out, " {}", h.count);
                }
            }
        }
    });
    sink(out.as_bytes());
}

/// `{k="v",...}`, or nothing without labels.
fn write_labels<'a>(labels: impl Iterator<Item = (String, &'a str)>, out: &mut String) {
    let mut first = true;
    for (k, v) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(&k);
        out.push_str("=\"");
        escape(v, out);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_what_the_format_requires_and_nothing_else() {
        let mut out = String::new();
        escape("a\\b\"c\nd\x1b]0;t\x07\u{202e}", &mut out);
        // Text format 0.0.4: backslash, double quote and line feed; any other UTF-8
        // is a valid label value, kept exact.
        assert_eq!(out, "a\\\\b\\\"c\\nd\x1b]0;t\x07\u{202e}");
    }

    #[test]
    fn classic_buckets_end_at_powers_of_two_and_add_up() {
        let (store, agent) = super::super::example(1);
        let text = render(&store, &agent);
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("container_cpu_runq_latency_seconds_bucket"))
            .collect();
        // The kernel's 27 octaves, 2^-21 s to 32 s, then +Inf.
        assert_eq!(buckets.len(), BUCKETS / SUB_BUCKETS + 1);
        assert!(
            buckets[0].contains("le=\"0.000000476837158203125\""),
            "{}",
            buckets[0]
        );
        // 1 µs waits end in (2^-20, 2^-19], 2 ms ones in (2^-9, 2^-8].
        let count = |le: &str| {
            let line = buckets.iter().find(|l| l.contains(&format!("le=\"{le}\"")));
            line.and_then(|l| l.rsplit(' ').next())
                .unwrap_or("?")
                .to_owned()
        };
        assert_eq!(count("0.00000095367431640625"), "0");
        assert_eq!(count("0.0000019073486328125"), "1");
        assert_eq!(count("0.001953125"), "1");
        assert_eq!(count("0.00390625"), "2");
        assert_eq!(count("32"), "2");
        assert_eq!(count("+Inf"), "2");
    }
}
