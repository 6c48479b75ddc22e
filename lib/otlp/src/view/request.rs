//! The zero-copy view of a protobuf export request: the metering traits over
//! the request's bytes.
//!
//! A malformed field met while metering cannot be returned through the
//! traits (they are infallible, as the prost types are), so the view records
//! the first error in its context and reads on as if the data ended there;
//! [`Protobuf::with_view`] then discards whatever was computed and returns the
//! error. Nothing read from a malformed request is ever used.
//!
//! Protobuf semantics kept: a scalar field that repeats takes its last value;
//! a message field that repeats is the merge of its occurrences (so the
//! attributes of repeated `resource` fields add up, and the last `code` of
//! repeated `status` fields wins); a oneof takes its last member.

use std::cell::Cell;

use bytes::Bytes;
use prost::Message;

use super::wire::{self, Field, Fields, Schema, ViewError};
use super::{AnyValue, Attributes, DataKind, LogView, MetricView, PointValue, RequestView, SpanView};
use crate::{DecodeError, Encoding, Payload, Signal};

/// Where the view reads: the request's bytes, and the first error met.
struct Ctx<'a> {
    base: &'a [u8],
    error: Cell<Option<ViewError>>,
}

impl<'a> Ctx<'a> {
    /// The offset of `part` (a slice of the request) in the request.
    fn offset(&self, part: &[u8]) -> usize {
        (part.as_ptr() as usize).wrapping_sub(self.base.as_ptr() as usize)
    }

    fn fields(&self, part: &'a [u8], schema: &'static Schema) -> Fields<'a> {
        Fields::new(part, self.offset(part), schema)
    }

    /// Keeps the first error: later ones are consequences.
    fn fail(&self, e: ViewError) {
        if self.error.get().is_none() {
            self.error.set(Some(e));
        }
    }

    fn ok<T: Default>(&self, r: Result<T, ViewError>) -> T {
        r.unwrap_or_else(|e| {
            self.fail(e);
            T::default()
        })
    }
}

/// The request-level messages of one signal.
struct Shape {
    request: &'static Schema,
    resource: &'static Schema,
    scope: &'static Schema,
}

const TRACES: Shape =
    Shape { request: &wire::TRACES_REQUEST, resource: &wire::RESOURCE_SPANS, scope: &wire::SCOPE_SPANS };
const METRICS: Shape =
    Shape { request: &wire::METRICS_REQUEST, resource: &wire::RESOURCE_METRICS, scope: &wire::SCOPE_METRICS };
const LOGS: Shape = Shape { request: &wire::LOGS_REQUEST, resource: &wire::RESOURCE_LOGS, scope: &wire::SCOPE_LOGS };

const fn shape(signal: Signal) -> &'static Shape {
    match signal {
        Signal::Traces => &TRACES,
        Signal::Metrics => &METRICS,
        Signal::Logs => &LOGS,
    }
}

/// Calls `f` with each resource-level message of the request (field 1 of the request).
fn for_each_resource<'a>(
    ctx: &Ctx<'a>,
    shape: &Shape,
    mut f: impl FnMut(&'a [u8]) -> Result<(), ViewError>,
) -> Result<(), ViewError> {
    for field in ctx.fields(ctx.base, shape.request) {
        let field = field?;
        if field.number == 1 {
            f(field.bytes())?;
        }
    }
    Ok(())
}

/// The items (spans, metrics, log records: field 2 of each scope) of one resource-level message.
fn for_each_item<'a>(
    ctx: &Ctx<'a>,
    shape: &Shape,
    resource: &'a [u8],
    mut f: impl FnMut(&'a [u8]) -> Result<(), ViewError>,
) -> Result<(), ViewError> {
    for field in ctx.fields(resource, shape.resource) {
        let field = field?;
        if field.number == 2 {
            for item in ctx.fields(field.bytes(), shape.scope) {
                let item = item?;
                if item.number == 2 {
                    f(item.bytes())?;
                }
            }
        }
    }
    Ok(())
}

/// The part of `message` from the first to the last occurrence of the fields
/// `numbers`: walking it visits them all, and few others.
struct Region {
    start: usize,
    end: usize,
}

impl Region {
    const EMPTY: Region = Region { start: 0, end: 0 };

    fn add(&mut self, field: &Field<'_>) {
        if self.end == 0 {
            self.start = field.start;
        }
        self.end = field.end;
    }

    fn of<'a>(&self, message: &'a [u8]) -> &'a [u8] {
        &message[self.start..self.end]
    }
}

/// Attributes read in place: the KeyValues in field `field` of the messages in
/// `region` (of type `schema`), or, with `inner`, in field 1 of the inner
/// messages found there (a resource's attributes inside `ResourceSpans.resource`).
#[derive(Clone, Copy)]
pub struct WireAttributes<'a> {
    ctx: &'a Ctx<'a>,
    region: &'a [u8],
    schema: &'static Schema,
    field: u32,
    inner: Option<&'static Schema>,
}

impl<'a> WireAttributes<'a> {
    fn for_each_kv(&self, mut f: impl FnMut(&'a [u8]) -> Result<(), ViewError>) -> Result<(), ViewError> {
        for field in self.ctx.fields(self.region, self.schema) {
            let field = field?;
            if field.number != self.field {
                continue;
            }
            match self.inner {
                None => f(field.bytes())?,
                Some(inner) => {
                    for kv in self.ctx.fields(field.bytes(), inner) {
                        let kv = kv?;
                        if kv.number == 1 {
                            f(kv.bytes())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn lookup(&self, key: &str) -> Result<Option<AnyValue<'a>>, ViewError> {
        let ctx = self.ctx;
        let mut last = None;
        self.for_each_kv(|kv| {
            let mut k: &[u8] = &[];
            for field in ctx.fields(kv, &wire::KEY_VALUE) {
                let field = field?;
                if field.number == 1 {
                    k = field.bytes();
                }
            }
            if k == key.as_bytes() {
                last = Some(kv);
            }
            Ok(())
        })?;
        let Some(kv) = last else { return Ok(None) };
        // The value is the merge of the `value` fields: the last oneof member set wins.
        let mut value = None;
        for field in ctx.fields(kv, &wire::KEY_VALUE) {
            let field = field?;
            if field.number != 2 {
                continue;
            }
            for member in ctx.fields(field.bytes(), &wire::ANY_VALUE) {
                let member = member?;
                value = Some(match member.number {
                    1 => AnyValue::Str(wire::utf8(member.bytes(), &wire::ANY_VALUE, 1, ctx.offset(member.bytes()))?),
                    2 => AnyValue::Bool(member.u64() != 0),
                    3 => AnyValue::Int(member.u64() as i64),
                    4 => AnyValue::Double(f64::from_bits(member.u64())),
                    7 => AnyValue::Bytes(member.bytes()),
                    5 | 6 | 8 => AnyValue::Other,
                    _ => continue,
                });
            }
        }
        Ok(value)
    }
}

impl Attributes for WireAttributes<'_> {
    fn get(&self, key: &str) -> Option<AnyValue<'_>> {
        self.ctx.ok(self.lookup(key))
    }
}

/// A span read in place.
pub struct WireSpan<'a> {
    kind: i32,
    status_code: i32,
    start: u64,
    end: u64,
    trace_id: &'a [u8],
    attributes: WireAttributes<'a>,
    len: u64,
}

impl<'a> WireSpan<'a> {
    fn read(ctx: &'a Ctx<'a>, bytes: &'a [u8]) -> Result<Self, ViewError> {
        let (mut kind, mut status_code, mut start, mut end, mut trace_id) = (0, 0, 0, 0, &[][..]);
        let mut attrs = Region::EMPTY;
        for field in ctx.fields(bytes, &wire::SPAN) {
            let field = field?;
            match field.number {
                1 => trace_id = field.bytes(),
                6 => kind = field.u64() as i32,
                7 => start = field.u64(),
                8 => end = field.u64(),
                9 => attrs.add(&field),
                15 => {
                    for s in ctx.fields(field.bytes(), &wire::STATUS) {
                        let s = s?;
                        if s.number == 3 {
                            status_code = s.u64() as i32;
                        }
                    }
                }
                _ => {}
            }
        }
        let attributes = WireAttributes { ctx, region: attrs.of(bytes), schema: &wire::SPAN, field: 9, inner: None };
        Ok(Self { kind, status_code, start, end, trace_id, attributes, len: bytes.len() as u64 })
    }
}

impl<'a> SpanView for WireSpan<'a> {
    type Attributes = WireAttributes<'a>;
    fn kind(&self) -> i32 {
        self.kind
    }
    fn status_code(&self) -> i32 {
        self.status_code
    }
    fn start_time_unix_nano(&self) -> u64 {
        self.start
    }
    fn end_time_unix_nano(&self) -> u64 {
        self.end
    }
    fn trace_id(&self) -> &[u8] {
        self.trace_id
    }
    fn attributes(&self) -> &WireAttributes<'a> {
        &self.attributes
    }
    fn encoded_bytes(&self) -> u64 {
        self.len
    }
}

/// A log record read in place.
pub struct WireLog<'a> {
    attributes: WireAttributes<'a>,
    len: u64,
}

impl<'a> WireLog<'a> {
    fn read(ctx: &'a Ctx<'a>, bytes: &'a [u8]) -> Result<Self, ViewError> {
        let mut attrs = Region::EMPTY;
        for field in ctx.fields(bytes, &wire::LOG_RECORD) {
            let field = field?;
            if field.number == 6 {
                attrs.add(&field);
            }
        }
        let attributes =
            WireAttributes { ctx, region: attrs.of(bytes), schema: &wire::LOG_RECORD, field: 6, inner: None };
        Ok(Self { attributes, len: bytes.len() as u64 })
    }
}

impl<'a> LogView for WireLog<'a> {
    type Attributes = WireAttributes<'a>;
    fn attributes(&self) -> &WireAttributes<'a> {
        &self.attributes
    }
    fn encoded_bytes(&self) -> u64 {
        self.len
    }
}

/// The data messages of each kind: (Metric field, kind, data schema, point schema, point attributes field).
const DATA: [(u32, DataKind, &Schema, &Schema, u32); 5] = [
    (5, DataKind::Gauge, &wire::GAUGE, &wire::NUMBER_DATA_POINT, 7),
    (7, DataKind::Sum, &wire::SUM, &wire::NUMBER_DATA_POINT, 7),
    (9, DataKind::Histogram, &wire::HISTOGRAM, &wire::HISTOGRAM_DATA_POINT, 9),
    (10, DataKind::ExponentialHistogram, &wire::EXPONENTIAL_HISTOGRAM, &wire::EXPONENTIAL_HISTOGRAM_DATA_POINT, 1),
    (11, DataKind::Summary, &wire::SUMMARY, &wire::SUMMARY_DATA_POINT, 7),
];

/// A metric read in place.
pub struct WireMetric<'a> {
    ctx: &'a Ctx<'a>,
    name: &'a [u8],
    /// The index in [`DATA`] of the data's kind, and the region of the
    /// metric holding its occurrences (a repeated data field merges, another
    /// kind replaces it).
    data: Option<(usize, &'a [u8])>,
    points: u64,
}

impl<'a> WireMetric<'a> {
    fn read(ctx: &'a Ctx<'a>, bytes: &'a [u8]) -> Result<Self, ViewError> {
        let mut name: &[u8] = &[];
        let mut data: Option<(usize, Region)> = None;
        for field in ctx.fields(bytes, &wire::METRIC) {
            let field = field?;
            if field.number == 1 {
                name = field.bytes();
            } else if let Some(i) = DATA.iter().position(|d| d.0 == field.number) {
                match &mut data {
                    Some((kind, region)) if *kind == i => region.add(&field),
                    _ => data = Some((i, Region { start: field.start, end: field.end })),
                }
            }
        }
        let mut metric = Self { ctx, name, data: data.map(|(i, r)| (i, r.of(bytes))), points: 0 };
        let mut points = 0;
        metric.for_each_data_point(|_| {
            points += 1;
            Ok(())
        })?;
        metric.points = points;
        Ok(metric)
    }

    fn for_each_data_point(&self, mut f: impl FnMut(&'a [u8]) -> Result<(), ViewError>) -> Result<(), ViewError> {
        let Some((i, region)) = self.data else { return Ok(()) };
        let (number, _, schema, _, _) = DATA[i];
        for field in self.ctx.fields(region, &wire::METRIC) {
            let field = field?;
            if field.number != number {
                continue;
            }
            for point in self.ctx.fields(field.bytes(), schema) {
                let point = point?;
                if point.number == 1 {
                    f(point.bytes())?;
                }
            }
        }
        Ok(())
    }
}

impl<'a> MetricView for WireMetric<'a> {
    type Attributes = WireAttributes<'a>;

    fn name(&self) -> &str {
        self.ctx.ok(wire::utf8(self.name, &wire::METRIC, 1, self.ctx.offset(self.name)))
    }

    fn data_kind(&self) -> Option<DataKind> {
        self.data.map(|(i, _)| DATA[i].1)
    }

    fn data_points(&self) -> u64 {
        self.points
    }

    fn for_each_point(&self, mut f: impl FnMut(&WireAttributes<'a>, Option<PointValue>)) {
        let Some((i, _)) = self.data else { return };
        let (_, kind, _, schema, attrs_field) = DATA[i];
        let ctx = self.ctx;
        let r = self.for_each_data_point(|point| {
            let mut attrs = Region::EMPTY;
            let mut value = None;
            for field in ctx.fields(point, schema) {
                let field = field?;
                match (kind, field.number) {
                    (_, n) if n == attrs_field => attrs.add(&field),
                    (DataKind::Gauge | DataKind::Sum, 4) => {
                        value = Some(PointValue::AsDouble(f64::from_bits(field.u64())))
                    }
                    (DataKind::Gauge | DataKind::Sum, 6) => value = Some(PointValue::AsInt(field.u64() as i64)),
                    _ => {}
                }
            }
            let attributes = WireAttributes { ctx, region: attrs.of(point), schema, field: attrs_field, inner: None };
            f(&attributes, value);
            Ok(())
        });
        ctx.ok(r)
    }
}

/// A protobuf export request, read in place. Made by [`Protobuf::with_view`].
pub struct WireRequest<'a> {
    signal: Signal,
    ctx: &'a Ctx<'a>,
}

impl<'a> WireRequest<'a> {
    /// Calls `f` with each resource's attributes and its items, read by `read`.
    fn for_each<T: 'a>(
        &self,
        signal: Signal,
        read: fn(&'a Ctx<'a>, &'a [u8]) -> Result<T, ViewError>,
        mut f: impl FnMut(&WireAttributes<'a>, &[&T]),
    ) {
        if self.signal != signal {
            return;
        }
        let (ctx, shape) = (self.ctx, shape(signal));
        let mut items = Vec::new();
        let r = for_each_resource(ctx, shape, |resource| {
            let mut region = Region::EMPTY;
            for field in ctx.fields(resource, shape.resource) {
                let field = field?;
                if field.number == 1 {
                    region.add(&field);
                }
            }
            items.clear();
            for_each_item(ctx, shape, resource, |item| {
                items.push(read(ctx, item)?);
                Ok(())
            })?;
            let attributes = WireAttributes {
                ctx,
                region: region.of(resource),
                schema: shape.resource,
                field: 1,
                inner: Some(&wire::RESOURCE),
            };
            let refs: Vec<&T> = items.iter().collect();
            f(&attributes, &refs);
            Ok(())
        });
        ctx.ok(r)
    }
}

impl<'a> RequestView for WireRequest<'a> {
    type Resource = WireAttributes<'a>;
    type Span = WireSpan<'a>;
    type Log = WireLog<'a>;
    type Metric = WireMetric<'a>;

    fn signal(&self) -> Signal {
        self.signal
    }

    fn for_each_resource_spans(&self, f: impl FnMut(&WireAttributes<'a>, &[&WireSpan<'a>])) {
        self.for_each(Signal::Traces, WireSpan::read, f);
    }

    fn for_each_resource_logs(&self, f: impl FnMut(&WireAttributes<'a>, &[&WireLog<'a>])) {
        self.for_each(Signal::Logs, WireLog::read, f);
    }

    fn for_each_resource_metrics(&self, f: impl FnMut(&WireAttributes<'a>, &[&WireMetric<'a>])) {
        self.for_each(Signal::Metrics, WireMetric::read, f);
    }
}

/// `request` (an export request of `signal`, protobuf) as one request per key: its resource-level
/// entries (`resource_spans`, …) grouped by `key` of each one's resource attributes (`None`: the
/// entry is left out), each group made by copying its entries' bytes — nothing is decoded or
/// encoded. Groups come in the order of their first entry; other top-level fields are dropped.
pub fn split_by_resource<K: PartialEq>(
    signal: Signal,
    request: &[u8],
    key: impl Fn(&WireAttributes<'_>) -> Option<K>,
) -> Result<Vec<(K, Vec<u8>)>, DecodeError> {
    let ctx = Ctx { base: request, error: Cell::new(None) };
    let shape = shape(signal);
    let mut groups: Vec<(K, Vec<u8>)> = Vec::new();
    let mut split = || -> Result<(), ViewError> {
        for field in ctx.fields(ctx.base, shape.request) {
            let field = field?;
            if field.number != 1 {
                continue;
            }
            let resource = field.bytes();
            let mut region = Region::EMPTY;
            for f in ctx.fields(resource, shape.resource) {
                let f = f?;
                if f.number == 1 {
                    region.add(&f);
                }
            }
            let attributes = WireAttributes {
                ctx: &ctx,
                region: region.of(resource),
                schema: shape.resource,
                field: 1,
                inner: Some(&wire::RESOURCE),
            };
            let Some(k) = key(&attributes) else { continue };
            let entry = &ctx.base[field.start..field.end];
            match groups.iter_mut().find(|(g, _)| *g == k) {
                Some((_, bytes)) => bytes.extend_from_slice(entry),
                None => groups.push((k, entry.to_vec())),
            }
        }
        Ok(())
    };
    if let Err(e) = split() {
        ctx.fail(e);
    }
    match ctx.error.get() {
        None => Ok(groups),
        Some(e) => Err(DecodeError { signal, encoding: Encoding::Protobuf, reason: e.to_string() }),
    }
}

/// A protobuf export request as received: its bytes, checked down to the
/// items (each span, metric with its data points, and log record is where its
/// framing says), so that a garbled body is refused by the receiver before any
/// consumer sees it. Metering reads it with [`Protobuf::with_view`]; what
/// needs the prost types (the agent, which edits and re-encodes requests)
/// calls [`Protobuf::decode`].
///
/// ```
/// use bytes::Bytes;
/// use otlp::{view::Protobuf, Signal};
/// // One ResourceSpans holding one ScopeSpans holding one empty span.
/// let body = Bytes::from_static(&[0x0a, 0x04, 0x12, 0x02, 0x12, 0x00]);
/// let request = Protobuf::new(Signal::Traces, body).unwrap();
/// assert_eq!(request.items(), 1);
/// // A length running past the end is refused before anything is metered.
/// assert!(Protobuf::new(Signal::Traces, Bytes::from_static(&[0x0a, 0x09])).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Protobuf {
    signal: Signal,
    bytes: Bytes,
    items: u64,
}

impl Protobuf {
    /// Checks the framing of `bytes`, a request of `signal`, and counts its items.
    pub fn new(signal: Signal, bytes: Bytes) -> Result<Self, DecodeError> {
        let ctx = Ctx { base: &bytes, error: Cell::new(None) };
        let mut items = 0;
        let shape = shape(signal);
        let counted = for_each_resource(&ctx, shape, |resource| {
            for_each_item(&ctx, shape, resource, |item| {
                items += match signal {
                    Signal::Metrics => WireMetric::read(&ctx, item)?.points,
                    Signal::Traces | Signal::Logs => 1,
                };
                Ok(())
            })
        });
        match counted {
            Ok(()) => Ok(Self { signal, bytes, items }),
            Err(e) => Err(DecodeError { signal, encoding: Encoding::Protobuf, reason: e.to_string() }),
        }
    }

    /// The request's signal.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The request's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Its items: spans, data points (a histogram point counts 1) or log records.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Runs `f` (metering) over the zero-copy view of the request. A malformed
    /// field that `f` read is the error, and what `f` returned is dropped.
    pub fn with_view<T>(&self, f: impl FnOnce(&WireRequest<'_>) -> T) -> Result<T, DecodeError> {
        let ctx = Ctx { base: &self.bytes, error: Cell::new(None) };
        let out = f(&WireRequest { signal: self.signal, ctx: &ctx });
        match ctx.error.get() {
            None => Ok(out),
            Some(e) => Err(DecodeError { signal: self.signal, encoding: Encoding::Protobuf, reason: e.to_string() }),
        }
    }

    /// The request decoded by prost into its generated types (every field, every string).
    pub fn decode(&self) -> Result<Payload, DecodeError> {
        let fail = |e: prost::DecodeError| DecodeError {
            signal: self.signal,
            encoding: Encoding::Protobuf,
            reason: e.to_string(),
        };
        use opentelemetry_proto::tonic::collector::{logs::v1 as logs, metrics::v1 as metrics, trace::v1 as trace};
        match self.signal {
            Signal::Traces => trace::ExportTraceServiceRequest::decode(&self.bytes[..]).map(Payload::Traces),
            Signal::Metrics => metrics::ExportMetricsServiceRequest::decode(&self.bytes[..]).map(Payload::Metrics),
            Signal::Logs => logs::ExportLogsServiceRequest::decode(&self.bytes[..]).map(Payload::Logs),
        }
        .map_err(fail)
    }
}
