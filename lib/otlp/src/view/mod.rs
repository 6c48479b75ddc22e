//! What metering reads of an OTLP export request, over two representations:
//! the prost types (OTLP/JSON is decoded into them, and the agent edits them)
//! and a zero-copy view of protobuf bytes ([`WireRequest`]), which reads only
//! the fields metering needs, borrowing strings from the request.
//!
//! The meters (crate `measure`: built-in, SLA and custom) are written once,
//! against the traits here, so both representations are metered by the same
//! code. Attribute lookups follow one rule everywhere: the last of repeated
//! keys wins, and a key whose value is empty counts as absent.
//!
//! Decoding protobuf with prost materializes every string of every span; the
//! view walks the wire format instead and validates what it reads (varints,
//! lengths, wire types of known fields, UTF-8 of the strings metering reads).
//! It does not validate what metering never reads (the UTF-8 of span names,
//! say, or events and links), which prost would have refused: such a request
//! is metered rather than refused whole.

mod prost_impl;
mod request;
pub mod wire;

use opentelemetry_proto::tonic::metrics::v1::number_data_point;

pub use request::{split_by_resource, Protobuf, WireAttributes, WireLog, WireMetric, WireRequest, WireSpan};
pub use wire::{Problem, ViewError};

use super::Signal;

/// An attribute's value as metering reads it: scalars, and bytes; arrays and
/// key-value lists are `Other` (no meter reads inside them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnyValue<'a> {
    /// `string_value`
    Str(&'a str),
    /// `bool_value`
    Bool(bool),
    /// `int_value`
    Int(i64),
    /// `double_value`
    Double(f64),
    /// `bytes_value`
    Bytes(&'a [u8]),
    /// An array, a key-value list or a string-table index.
    Other,
}

/// A list of attributes, looked up by key.
pub trait Attributes {
    /// The value of the last attribute named `key`; `None` when there is none
    /// or its value is empty (an earlier attribute of the same key does not
    /// stand in: the tenant comes from attributes, so one rule must hold).
    fn get(&self, key: &str) -> Option<AnyValue<'_>>;

    /// [`Attributes::get`] when the value is a string.
    fn string(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            AnyValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// What metering reads of a span.
pub trait SpanView {
    /// The span's attributes.
    type Attributes: Attributes + ?Sized;
    /// `Span.kind` (SERVER is 2, CONSUMER 5).
    fn kind(&self) -> i32;
    /// `Span.status.code`, 0 without a status (ERROR is 2).
    fn status_code(&self) -> i32;
    /// `Span.start_time_unix_nano`.
    fn start_time_unix_nano(&self) -> u64;
    /// `Span.end_time_unix_nano`.
    fn end_time_unix_nano(&self) -> u64;
    /// `Span.trace_id`, as sent (16 bytes when valid).
    fn trace_id(&self) -> &[u8];
    /// The span's attributes.
    fn attributes(&self) -> &Self::Attributes;
    /// Bytes of encoded OTLP the span stands for, for `span_bytes`: its length
    /// on the wire when read from protobuf, its encoded length when decoded.
    fn encoded_bytes(&self) -> u64;
}

/// What metering reads of a log record.
pub trait LogView {
    /// The record's attributes.
    type Attributes: Attributes + ?Sized;
    /// The record's attributes.
    fn attributes(&self) -> &Self::Attributes;
    /// Bytes of encoded OTLP, as [`SpanView::encoded_bytes`], for `log_bytes`.
    fn encoded_bytes(&self) -> u64;
}

/// The kind of a metric's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// `gauge`
    Gauge,
    /// `sum`
    Sum,
    /// `histogram`
    Histogram,
    /// `exponential_histogram`
    ExponentialHistogram,
    /// `summary`
    Summary,
}

/// A gauge or sum point's value (histogram and summary points have none).
pub type PointValue = number_data_point::Value;

/// What metering reads of a metric.
pub trait MetricView {
    /// A data point's attributes.
    type Attributes: Attributes + ?Sized;
    /// `Metric.name` (custom meters read it as `metric.name`).
    fn name(&self) -> &str;
    /// The kind of its data, `None` when it has none.
    fn data_kind(&self) -> Option<DataKind>;
    /// The number of data points (a histogram point counts 1).
    fn data_points(&self) -> u64;
    /// Calls `f` with each data point's attributes and value, in order.
    fn for_each_point(&self, f: impl FnMut(&Self::Attributes, Option<PointValue>));
}

/// An export request, walked resource by resource.
pub trait RequestView {
    /// A resource's attributes.
    type Resource: Attributes + ?Sized;
    /// A span.
    type Span: SpanView;
    /// A log record.
    type Log: LogView;
    /// A metric.
    type Metric: MetricView;
    /// The request's signal.
    fn signal(&self) -> Signal;
    /// Calls `f` with each resource's attributes and all its spans (of all
    /// its scopes), in order; nothing for other signals.
    fn for_each_resource_spans(&self, f: impl FnMut(&Self::Resource, &[&Self::Span]));
    /// As [`RequestView::for_each_resource_spans`], for log records.
    fn for_each_resource_logs(&self, f: impl FnMut(&Self::Resource, &[&Self::Log]));
    /// As [`RequestView::for_each_resource_spans`], for metrics.
    fn for_each_resource_metrics(&self, f: impl FnMut(&Self::Resource, &[&Self::Metric]));
}
