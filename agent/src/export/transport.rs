//! The two OTLP transports, sending an already encoded export request: gRPC (tonic,
//! the `MetricsService/Export` unary call with a pass-through codec) and
//! http/protobuf (reqwest, `POST` to the metrics URL). Both take the same settings
//! (headers, timeout, gzip, CA and client certificates) and classify failures the
//! way the OTLP specification does: retryable (with the server's delay, if it gave
//! one) or not.

use std::time::{Duration, SystemTime};

use bytes::{Buf as _, BufMut as _, Bytes};
use tonic::{
    codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::{MetadataKey, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
    Code, Status,
};

use super::settings::{OtlpSettings, Protocol};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// Short, fixed cause (`unavailable`, `http_503`, `timeout`, ...): the
    /// `error.type` attribute of `cgscope.export.failures`.
    pub kind: String,
    pub detail: String,
    pub retryable: bool,
    /// The server's `Retry-After` (HTTP) or `RetryInfo` (gRPC).
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

pub enum Transport {
    Grpc {
        channel: Channel,
        headers: Vec<(
            MetadataKey<tonic::metadata::Ascii>,
            MetadataValue<tonic::metadata::Ascii>,
        )>,
        timeout: Duration,
        gzip: bool,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
        gzip: bool,
    },
}

fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

impl Transport {
    /// Builds the client; connects lazily, so a collector that is down at start is a
    /// failed export later, not a failed start. Errors name the bad setting.
    pub fn new(s: &OtlpSettings) -> Result<Self, String> {
        let ca = s
            .certificate
            .as_deref()
            .map(|p| read_pem("OTEL_EXPORTER_OTLP_CERTIFICATE", p))
            .transpose()?;
        let identity = match (&s.client_certificate, &s.client_key) {
            (Some(c), Some(k)) => Some((
                read_pem("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", c)?,
                read_pem("OTEL_EXPORTER_OTLP_CLIENT_KEY", k)?,
            )),
            (None, None) => None,
            _ => return Err("mTLS needs both OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY".into()),
        };
        match s.protocol {
            Protocol::Grpc => {
                let mut endpoint = Channel::from_shared(s.endpoint.clone())
                    .map_err(|e| format!("OTLP endpoint {:?}: {e}", s.endpoint))?
                    .connect_timeout(s.timeout)
                    .timeout(s.timeout);
                if s.endpoint.starts_with("https://") {
                    let mut tls = ClientTlsConfig::new().with_native_roots();
                    if let Some(ca) = ca {
                        tls = tls.ca_certificate(Certificate::from_pem(ca));
                    }
                    if let Some((cert, key)) = identity {
                        tls = tls.identity(Identity::from_pem(cert, key));
                    }
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|e| format!("OTLP TLS: {e}"))?;
                }
                let mut headers = Vec::new();
                for (k, v) in &s.headers {
                    let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(
                        |_| format!("OTLP header name {k:?} is not valid in gRPC metadata"),
                    )?;
                    let value = MetadataValue::try_from(v.as_str())
                        .map_err(|_| format!("OTLP header {k:?}: value is not printable ASCII"))?;
                    headers.push((key, value));
                }
                Ok(Self::Grpc {
                    channel: endpoint.connect_lazy(),
                    headers,
                    timeout: s.timeout,
                    gzip: s.gzip,
                })
            }
            Protocol::HttpProtobuf => {
                let mut builder = reqwest::Client::builder()
                    .timeout(s.timeout)
                    .connect_timeout(s.timeout)
                    .use_rustls_tls();
                if let Some(ca) = ca {
                    let cert = reqwest::Certificate::from_pem(&ca)
                        .map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE: {e}"))?;
                    builder = builder.add_root_certificate(cert);
                }
                if let Some((mut cert, key)) = identity {
                    cert.extend_from_slice(&key);
                    let id = reqwest::Identity::from_pem(&cert)
                        .map_err(|e| format!("OTLP client certificate and key: {e}"))?;
                    builder = builder.identity(id);
                }
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &s.headers {
                    let name =
                        reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                            format!("OTLP header name {k:?} is not a valid HTTP header name")
                        })?;
                    let value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                        format!("OTLP header {k:?}: value is not a valid HTTP header value")
                    })?;
                    headers.insert(name, value);
                }
                Ok(Self::Http {
                    client: builder
                        .build()
                        .map_err(|e| format!("OTLP HTTP client: {e}"))?,
                    url: s.endpoint.clone(),
                    headers,
                    gzip: s.gzip,
                })
            }
        }
    }

    /// Sends one encoded `ExportMetricsServiceRequest`; `Ok` carries the encoded
    /// response (it may report a partial success).
    pub async fn send(&self, body: Bytes) -> Result<Bytes, SendError> {
        match self {
            Self::Grpc {
                channel,
                headers,
                timeout,
                gzip,
            } => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                if *gzip {
                    grpc = grpc.send_compressed(CompressionEncoding::Gzip);
                }
                grpc = grpc.accept_compressed(CompressionEncoding::Gzip);
                grpc.ready().await.map_err(|e| SendError {
                    kind: "unavailable".into(),
                    detail: e.to_string(),
                    retryable: true,
                    retry_after: None,
                })?;
                let mut request = tonic::Request::new(body);
                request.set_timeout(*timeout);
                for (k, v) in headers {
                    request.metadata_mut().insert(k.clone(), v.clone());
                }
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                );
                match grpc.unary(request, path, Raw).await {
                    Ok(response) => Ok(response.into_inner()),
                    Err(status) => Err(grpc_error(&status)),
                }
            }
            Self::Http {
                client,
                url,
                headers,
                gzip,
            } => {
                let mut request = client
                    .post(url)
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
                request = if *gzip {
                    request
                        .header(reqwest::header::CONTENT_ENCODING, "gzip")
                        .body(gzip_bytes(&body))
                } else {
                    request.body(body)
                };
                let response = request.send().await.map_err(|e| SendError {
                    kind: if e.is_timeout() { "timeout" } else { "connect" }.into(),
                    detail: e.to_string(),
                    retryable: true,
                    retry_after: None,
                })?;
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let bytes = response.bytes().await.unwrap_or_default();
                if status.is_success() {
                    return Ok(bytes);
                }
                let code = status.as_u16();
                Err(SendError {
                    kind: format!("http_{code}"),
                    detail: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                    // The OTLP/HTTP retryable codes.
                    retryable: matches!(code, 429 | 502 | 503 | 504),
                    retry_after,
                })
            }
        }
    }
}

/// gzip, as the `Content-Encoding: gzip` body.
pub fn gzip_bytes(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(v.trim()).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The OTLP/gRPC retryable codes; `RetryInfo` in the status details gives the delay.
fn grpc_error(status: &Status) -> SendError {
    let code = status.code();
    let retryable = matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    );
    SendError {
        kind: format!("grpc_{}", format!("{code:?}").to_ascii_lowercase()),
        detail: status.message().to_owned(),
        retryable,
        retry_after: retry_info(status.details()),
    }
}

mod rpc {
    //! `google.rpc.Status` and `google.rpc.RetryInfo`, the two messages the retry
    //! delay of a gRPC error travels in.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<Duration>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

fn retry_info(details: &[u8]) -> Option<Duration> {
    use prost::Message as _;
    let status = rpc::Status::decode(details).ok()?;
    let any = status
        .details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))?;
    let delay = rpc::RetryInfo::decode(any.value.as_slice())
        .ok()?
        .retry_delay?;
    Some(Duration::new(
        delay.seconds.max(0) as u64,
        delay.nanos.max(0) as u32,
    ))
}

/// A codec that passes encoded protobuf through: the request is encoded once, before
/// it is queued.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Self::Encoder {
        Raw
    }

    fn decoder(&mut self) -> Self::Decoder {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        // 2015-10-21 07:28:00 UTC + 30 s
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn grpc_retry_info_is_read_from_the_status_details() {
        use prost::Message as _;
        let info = rpc::RetryInfo {
            retry_delay: Some(rpc::Duration {
                seconds: 7,
                nanos: 0,
            }),
        };
        let details = rpc::Status {
            code: Code::ResourceExhausted as i32,
            message: "slow down".into(),
            details: vec![rpc::Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: info.encode_to_vec(),
            }],
        };
        let status = Status::with_details(
            Code::ResourceExhausted,
            "slow down",
            details.encode_to_vec().into(),
        );
        let e = grpc_error(&status);
        assert!(e.retryable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert!(!grpc_error(&Status::invalid_argument("bad")).retryable);
    }
}
