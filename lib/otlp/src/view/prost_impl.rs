//! The metering traits over the prost types, for OTLP/JSON (decoded by serde)
//! and for [`Payload`]s built in code.

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use super::{AnyValue, Attributes, DataKind, LogView, MetricView, PointValue, RequestView, SpanView};
use crate::{Payload, Signal};

impl Attributes for [KeyValue] {
    fn get(&self, key: &str) -> Option<AnyValue<'_>> {
        let kv = self.iter().rev().find(|kv| kv.key == key)?;
        Some(match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => AnyValue::Str(s),
            any_value::Value::BoolValue(b) => AnyValue::Bool(*b),
            any_value::Value::IntValue(i) => AnyValue::Int(*i),
            any_value::Value::DoubleValue(d) => AnyValue::Double(*d),
            any_value::Value::BytesValue(b) => AnyValue::Bytes(b),
            any_value::Value::ArrayValue(_)
            | any_value::Value::KvlistValue(_)
            | any_value::Value::StringValueStrindex(_) => AnyValue::Other,
        })
    }
}

impl SpanView for Span {
    type Attributes = [KeyValue];
    fn kind(&self) -> i32 {
        self.kind
    }
    fn status_code(&self) -> i32 {
        self.status.as_ref().map_or(0, |s| s.code)
    }
    fn start_time_unix_nano(&self) -> u64 {
        self.start_time_unix_nano
    }
    fn end_time_unix_nano(&self) -> u64 {
        self.end_time_unix_nano
    }
    fn trace_id(&self) -> &[u8] {
        &self.trace_id
    }
    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
    fn encoded_bytes(&self) -> u64 {
        Message::encoded_len(self) as u64
    }
}

impl LogView for LogRecord {
    type Attributes = [KeyValue];
    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
    fn encoded_bytes(&self) -> u64 {
        Message::encoded_len(self) as u64
    }
}

impl MetricView for Metric {
    type Attributes = [KeyValue];
    fn name(&self) -> &str {
        &self.name
    }
    fn data_kind(&self) -> Option<DataKind> {
        Some(match self.data.as_ref()? {
            Data::Gauge(_) => DataKind::Gauge,
            Data::Sum(_) => DataKind::Sum,
            Data::Histogram(_) => DataKind::Histogram,
            Data::ExponentialHistogram(_) => DataKind::ExponentialHistogram,
            Data::Summary(_) => DataKind::Summary,
        })
    }
    fn data_points(&self) -> u64 {
        crate::decode::data_points(self.data.as_ref())
    }
    fn for_each_point(&self, mut f: impl FnMut(&[KeyValue], Option<PointValue>)) {
        match &self.data {
            None => {}
            Some(Data::Gauge(g)) => g.data_points.iter().for_each(|p| f(&p.attributes, p.value)),
            Some(Data::Sum(s)) => s.data_points.iter().for_each(|p| f(&p.attributes, p.value)),
            Some(Data::Histogram(h)) => h.data_points.iter().for_each(|p| f(&p.attributes, None)),
            Some(Data::ExponentialHistogram(h)) => h.data_points.iter().for_each(|p| f(&p.attributes, None)),
            Some(Data::Summary(s)) => s.data_points.iter().for_each(|p| f(&p.attributes, None)),
        }
    }
}

fn attrs(resource: Option<&Resource>) -> &[KeyValue] {
    resource.map(|r| r.attributes.as_slice()).unwrap_or_default()
}

impl RequestView for Payload {
    type Resource = [KeyValue];
    type Span = Span;
    type Log = LogRecord;
    type Metric = Metric;

    fn signal(&self) -> Signal {
        Payload::signal(self)
    }

    fn for_each_resource_spans(&self, mut f: impl FnMut(&[KeyValue], &[&Span])) {
        if let Payload::Traces(req) = self {
            for rs in &req.resource_spans {
                let spans: Vec<&Span> = rs.scope_spans.iter().flat_map(|s| &s.spans).collect();
                f(attrs(rs.resource.as_ref()), &spans);
            }
        }
    }

    fn for_each_resource_logs(&self, mut f: impl FnMut(&[KeyValue], &[&LogRecord])) {
        if let Payload::Logs(req) = self {
            for rl in &req.resource_logs {
                let logs: Vec<&LogRecord> = rl.scope_logs.iter().flat_map(|s| &s.log_records).collect();
                f(attrs(rl.resource.as_ref()), &logs);
            }
        }
    }

    fn for_each_resource_metrics(&self, mut f: impl FnMut(&[KeyValue], &[&Metric])) {
        if let Payload::Metrics(req) = self {
            for rm in &req.resource_metrics {
                let metrics: Vec<&Metric> = rm.scope_metrics.iter().flat_map(|s| &s.metrics).collect();
                f(attrs(rm.resource.as_ref()), &metrics);
            }
        }
    }
}
