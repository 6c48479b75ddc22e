//! Decoding OTLP export requests from protobuf or OTLP/JSON.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use prost::Message;

pub use metering::signal::Signal;

/// How a request is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`
    Protobuf,
    /// `application/json` (OTLP/JSON: hex ids, lowerCamelCase keys, integer enums)
    Json,
}

impl Encoding {
    /// The encoding of a Content-Type, parsed as a media type (`application/json; charset=utf-8` is JSON).
    ///
    /// ```
    /// use otlp::Encoding;
    /// assert_eq!(Encoding::from_content_type("Application/JSON; charset=utf-8"), Some(Encoding::Json));
    /// assert_eq!(Encoding::from_content_type("application/x-protobuf"), Some(Encoding::Protobuf));
    /// assert_eq!(Encoding::from_content_type("text/plain"), None);
    /// ```
    pub fn from_content_type(value: &str) -> Option<Self> {
        let media = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match media.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    /// The Content-Type a response in this encoding carries.
    pub const fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// A decoded export request.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Spans.
    Traces(ExportTraceServiceRequest),
    /// Metric data points.
    Metrics(ExportMetricsServiceRequest),
    /// Log records.
    Logs(ExportLogsServiceRequest),
}

impl Payload {
    /// The payload's signal.
    pub const fn signal(&self) -> Signal {
        match self {
            Payload::Traces(_) => Signal::Traces,
            Payload::Metrics(_) => Signal::Metrics,
            Payload::Logs(_) => Signal::Logs,
        }
    }

    /// The number of items: spans, data points (a histogram point counts 1) or log records.
    pub fn items(&self) -> u64 {
        match self {
            Payload::Traces(r) => {
                r.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum()
            }
            Payload::Metrics(r) => r.resource_metrics.iter().map(metric_points).sum(),
            Payload::Logs(r) => {
                r.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len() as u64).sum()
            }
        }
    }
}

/// The data points of one resource's metrics (a histogram point counts 1).
pub fn metric_points(rm: &ResourceMetrics) -> u64 {
    rm.scope_metrics.iter().flat_map(|s| &s.metrics).map(|m| data_points(m.data.as_ref())).sum()
}

pub(crate) fn data_points(data: Option<&Data>) -> u64 {
    match data {
        None => 0,
        Some(Data::Gauge(g)) => g.data_points.len() as u64,
        Some(Data::Sum(s)) => s.data_points.len() as u64,
        Some(Data::Histogram(h)) => h.data_points.len() as u64,
        Some(Data::ExponentialHistogram(h)) => h.data_points.len() as u64,
        Some(Data::Summary(s)) => s.data_points.len() as u64,
    }
}

/// A body that is not a valid request of its signal.
#[derive(Debug, thiserror::Error)]
#[error("malformed OTLP {encoding} {signal} request: {reason}", encoding = match .encoding { Encoding::Protobuf => "protobuf", Encoding::Json => "JSON" }, signal = .signal.name())]
pub struct DecodeError {
    /// The signal.
    pub signal: Signal,
    /// The encoding.
    pub encoding: Encoding,
    /// What the decoder said.
    pub reason: String,
}

/// Decodes `body` as an export request of `signal`.
pub fn decode(signal: Signal, encoding: Encoding, body: &[u8]) -> Result<Payload, DecodeError> {
    let fail = |reason: String| DecodeError { signal, encoding, reason };
    match encoding {
        Encoding::Protobuf => match signal {
            Signal::Traces => ExportTraceServiceRequest::decode(body).map(Payload::Traces),
            Signal::Metrics => ExportMetricsServiceRequest::decode(body).map(Payload::Metrics),
            Signal::Logs => ExportLogsServiceRequest::decode(body).map(Payload::Logs),
        }
        .map_err(|e| fail(e.to_string())),
        Encoding::Json => {
            let payload = match signal {
                Signal::Traces => crate::json::from_slice(body).map(Payload::Traces),
                Signal::Metrics => crate::json::from_slice(body).map(Payload::Metrics),
                Signal::Logs => crate::json::from_slice(body).map(Payload::Logs),
            }
            .map_err(|e| fail(e.to_string()))?;
            if let Payload::Metrics(request) = &payload {
                check_json_metrics(request).map_err(fail)?;
            }
            Ok(payload)
        }
    }
}

/// opentelemetry-proto's JSON decoding of metrics succeeds while dropping what
/// it does not understand (an enum name for the data kind leaves `data` empty;
/// an out-of-range `asInt` leaves a point without value). A meter must not lose
/// data silently, so such a request is refused, naming the metric.
fn check_json_metrics(request: &ExportMetricsServiceRequest) -> Result<(), String> {
    use opentelemetry_proto::tonic::metrics::v1::NumberDataPoint;
    let valueless = |points: &[NumberDataPoint]| points.iter().position(|p| p.value.is_none());
    for metric in request.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics) {
        let name = &metric.name;
        let point = match &metric.data {
            None => {
                return Err(format!(
                    "metric {name:?} has no gauge, sum, histogram, exponentialHistogram or summary that could be read"
                ))
            }
            Some(Data::Gauge(g)) => valueless(&g.data_points),
            Some(Data::Sum(s)) => valueless(&s.data_points),
            Some(_) => None,
        };
        if let Some(i) = point {
            return Err(format!("metric {name:?} data point {i} has no readable asInt or asDouble value"));
        }
    }
    Ok(())
}
