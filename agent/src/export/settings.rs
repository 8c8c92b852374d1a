//! The OTLP exporter's settings from the standard `OTEL_*` variables, per the
//! OpenTelemetry specification: the per-signal form (`OTEL_EXPORTER_OTLP_METRICS_*`)
//! wins over the generic one; an invalid value is reported and the default used.

use std::{path::PathBuf, time::Duration};

use super::otlp::Temporality;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// gRPC: `scheme://host:port`; HTTP: the full URL of the metrics path.
    pub endpoint: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub gzip: bool,
    /// CA bundle that verifies the collector (PEM).
    pub certificate: Option<PathBuf>,
    /// Client certificate and key for mTLS (PEM).
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub temporality: Temporality,
    /// `OTEL_METRIC_EXPORT_INTERVAL`, if set: the window length when `--interval` is
    /// not given (one export per window).
    pub interval: Option<Duration>,
}

/// Splits `k1=v1,k2=v2` (W3C baggage style, values percent-decoded); members without
/// `=` are returned as errors, for the caller to report.
pub fn parse_pairs(s: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut pairs = Vec::new();
    let mut bad = Vec::new();
    for member in s.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        match member.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                pairs.push((k.trim().to_owned(), percent_decode(v.trim())))
            }
            _ => bad.push(member.to_owned()),
        }
    }
    (pairs, bad)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl OtlpSettings {
    /// `None` when OTLP export is off: no endpoint variable set (or
    /// `OTEL_METRICS_EXPORTER=none`); `OTEL_METRICS_EXPORTER=otlp` turns it on with
    /// the default endpoint. Problems are appended to `warnings`.
    pub fn from_env(
        env: impl Fn(&str) -> Option<String>,
        warnings: &mut Vec<String>,
    ) -> Option<Self> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        // The per-signal variable, else the generic one.
        let pick = |suffix: &str| {
            var(&format!("OTEL_EXPORTER_OTLP_METRICS_{suffix}"))
                .or_else(|| var(&format!("OTEL_EXPORTER_OTLP_{suffix}")))
        };
        let exporter = var("OTEL_METRICS_EXPORTER");
        let signal_endpoint = var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        let generic_endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        match exporter.as_deref() {
            Some("none") => return None,
            Some("otlp") => {}
            Some(other) => warnings.push(format!(
                "OTEL_METRICS_EXPORTER={other}: only otlp and none are supported; using otlp"
            )),
            None if signal_endpoint.is_none() && generic_endpoint.is_none() => return None,
            None => {}
        }

        let protocol = match pick("PROTOCOL").as_deref() {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                warnings.push(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other}: use grpc or http/protobuf; using http/protobuf"
                ));
                Protocol::HttpProtobuf
            }
        };
        let endpoint = match (signal_endpoint, generic_endpoint, protocol) {
            // The per-signal endpoint is used as is.
            (Some(e), _, _) => e,
            (None, Some(e), Protocol::HttpProtobuf) => {
                format!("{}/v1/metrics", e.trim_end_matches('/'))
            }
            (None, Some(e), Protocol::Grpc) => e,
            (None, None, Protocol::HttpProtobuf) => "http://localhost:4318/v1/metrics".to_owned(),
            (None, None, Protocol::Grpc) => "http://localhost:4317".to_owned(),
        };
        let (headers, bad) = pick("HEADERS")
            .as_deref()
            .map(parse_pairs)
            .unwrap_or_default();
        for member in bad {
            warnings.push(format!(
                "OTEL_EXPORTER_OTLP_HEADERS: ignoring {member:?} (not key=value)"
            ));
        }
        let millis = |name: &str,
                      value: Option<String>,
                      default: Option<u64>,
                      warnings: &mut Vec<String>| {
            match value.map(|v| v.parse::<u64>().map_err(|_| v)) {
                None => default.map(Duration::from_millis),
                Some(Ok(ms)) if ms > 0 => Some(Duration::from_millis(ms)),
                Some(Ok(_)) | Some(Err(_)) => {
                    warnings.push(format!(
                        "{name}: expected a positive number of milliseconds; using the default"
                    ));
                    default.map(Duration::from_millis)
                }
            }
        };
        let timeout = millis(
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            pick("TIMEOUT"),
            Some(10_000),
            warnings,
        )
        .unwrap_or(Duration::from_secs(10));
        let interval = millis(
            "OTEL_METRIC_EXPORT_INTERVAL",
            var("OTEL_METRIC_EXPORT_INTERVAL"),
            None,
            warnings,
        );
        let gzip = match pick("COMPRESSION").as_deref() {
            None | Some("none") => false,
            Some("gzip") => true,
            Some(other) => {
                warnings.push(format!(
                    "OTEL_EXPORTER_OTLP_COMPRESSION={other}: use gzip or none; using none"
                ));
                false
            }
        };
        let temporality = match var("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("cumulative") => Temporality::Cumulative,
            // cgscope's counters and histograms are all of the kinds that lowmemory
            // sends as deltas.
            Some("delta") | Some("lowmemory") => Temporality::Delta,
            Some(other) => {
                warnings.push(format!(
                    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE={other}: use cumulative, delta or lowmemory; using cumulative"
                ));
                Temporality::Cumulative
            }
        };
        Some(Self {
            endpoint,
            protocol,
            headers,
            timeout,
            gzip,
            certificate: pick("CERTIFICATE").map(PathBuf::from),
            client_certificate: pick("CLIENT_CERTIFICATE").map(PathBuf::from),
            client_key: pick("CLIENT_KEY").map(PathBuf::from),
            temporality,
            interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> (Option<OtlpSettings>, Vec<String>) {
        let mut warnings = Vec::new();
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        (OtlpSettings::from_env(env, &mut warnings), warnings)
    }

    #[test]
    fn off_unless_asked() {
        assert_eq!(settings(&[]).0, None);
        let (s, _) = settings(&[("OTEL_METRICS_EXPORTER", "otlp")]);
        assert_eq!(
            s.map(|s| s.endpoint).as_deref(),
            Some("http://localhost:4318/v1/metrics")
        );
        let (s, _) = settings(&[
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ]);
        assert_eq!(s, None);
    }

    #[test]
    fn per_signal_variables_win_and_paths_follow_the_protocol() {
        let (s, w) = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,bad"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "api-key=s%3Dcret"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "15000"),
        ]);
        let s = s.expect("on");
        assert_eq!(s.endpoint, "http://collector:4318/v1/metrics");
        assert_eq!(s.headers, vec![("api-key".to_owned(), "s=cret".to_owned())]);
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert!(s.gzip);
        assert_eq!(s.temporality, Temporality::Delta);
        assert_eq!(s.interval, Some(Duration::from_secs(15)));
        assert!(w.is_empty(), "{w:?}");

        let (s, _) = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert_eq!(
            s.map(|s| (s.endpoint, s.protocol)),
            Some(("http://collector:4317".to_owned(), Protocol::Grpc))
        );
        let (s, _) = settings(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://x/custom")]);
        assert_eq!(s.map(|s| s.endpoint).as_deref(), Some("https://x/custom"));
    }

    #[test]
    fn bad_values_warn_and_fall_back() {
        let (s, w) = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
        ]);
        let s = s.expect("on");
        assert_eq!(
            (s.protocol, s.timeout, s.gzip),
            (Protocol::HttpProtobuf, Duration::from_secs(10), false)
        );
        assert_eq!(w.len(), 3, "{w:?}");
    }
}
