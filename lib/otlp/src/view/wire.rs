//! The protobuf wire format, read in place: fields of one message as borrowed
//! slices, checked against the message's schema so that a malformed request is
//! an error naming the field, never a panic or a silent misread.

use std::fmt;

/// How a field is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Varint,
    I64,
    Len,
    I32,
    /// A repeated scalar of this wire type, packed (LEN) or not: both are valid.
    Packed(&'static Wire),
}

/// The fields of one message type that the view knows: (number, name, wire type).
pub(crate) struct Schema {
    pub(crate) name: &'static str,
    pub(crate) fields: &'static [(u32, &'static str, Wire)],
}

impl Schema {
    fn field(&self, number: u32) -> Option<&'static (u32, &'static str, Wire)> {
        self.fields.iter().find(|f| f.0 == number)
    }
}

/// What went wrong, where: the message and field, and the byte offset in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewError {
    /// The message type being read.
    pub message: &'static str,
    /// The field's name, or `None` for an unknown field or a bad tag.
    pub field: Option<&'static str>,
    /// The field number, when the tag could be read.
    pub number: u32,
    /// The byte offset of the problem in the request.
    pub offset: usize,
    /// The problem.
    pub problem: Problem,
}

/// The kinds of malformed wire data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A varint longer than 10 bytes or past the end of the message.
    BadVarint,
    /// A tag with field number 0, or one that does not fit 32 bits.
    BadTag,
    /// Wire type 6 or 7, or a group (proto2 groups are not part of OTLP).
    BadWireType(u8),
    /// A known field with another wire type than its schema's.
    WrongWireType(u8),
    /// A length or fixed-size value running past the end of its message.
    PastEnd,
    /// A string field that is not UTF-8.
    NotUtf8,
}

impl fmt::Display for ViewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(name) => write!(f, "{}.{name} (field {})", self.message, self.number)?,
            None if self.number > 0 => write!(f, "{} field {}", self.message, self.number)?,
            None => write!(f, "{}", self.message)?,
        }
        let what = match self.problem {
            Problem::BadVarint => "invalid varint".to_owned(),
            Problem::BadTag => "invalid tag".to_owned(),
            Problem::BadWireType(w) => format!("unsupported wire type {w}"),
            Problem::WrongWireType(w) => format!("wrong wire type {w}"),
            Problem::PastEnd => "runs past the end of its message".to_owned(),
            Problem::NotUtf8 => "is not valid UTF-8".to_owned(),
        };
        write!(f, ": {what} at byte {}", self.offset)
    }
}

impl std::error::Error for ViewError {}

/// One field's value as it sits on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    I64(u64),
    Len(&'a [u8]),
    I32(u32),
}

/// One field of a message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub(crate) number: u32,
    pub(crate) value: Value<'a>,
    /// Where the field (its tag) starts and ends within the message's bytes.
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl<'a> Field<'a> {
    /// The bytes of a LEN field (the schema guarantees known LEN fields are LEN).
    pub(crate) fn bytes(&self) -> &'a [u8] {
        match self.value {
            Value::Len(b) => b,
            _ => &[],
        }
    }

    /// The value of a VARINT or I64 field as 64 bits.
    pub(crate) fn u64(&self) -> u64 {
        match self.value {
            Value::Varint(v) | Value::I64(v) => v,
            Value::I32(v) => u64::from(v),
            Value::Len(_) => 0,
        }
    }
}

/// The fields of one message, in wire order. Yields an error once, then ends.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The offset of `buf` in the whole request, for error messages.
    base: usize,
    schema: &'static Schema,
}

impl<'a> Fields<'a> {
    /// The fields of `buf`, a message of type `schema` starting at byte `base` of the request.
    pub(crate) fn new(buf: &'a [u8], base: usize, schema: &'static Schema) -> Self {
        Self { buf, pos: 0, base, schema }
    }

    fn error(&mut self, at: usize, number: u32, problem: Problem) -> ViewError {
        self.pos = self.buf.len();
        let field = self.schema.field(number).map(|f| f.1);
        ViewError { message: self.schema.name, field, number, offset: self.base + at, problem }
    }

    fn varint(&self, at: usize) -> Option<(u64, usize)> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(at + i)?;
            if i == 9 && b > 1 {
                return None; // more than 64 bits
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some((value, at + i + 1));
            }
        }
        None
    }

    fn next_field(&mut self) -> Result<Field<'a>, ViewError> {
        let start = self.pos;
        let Some((tag, at)) = self.varint(start) else { return Err(self.error(start, 0, Problem::BadVarint)) };
        let number = tag >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(self.error(start, 0, Problem::BadTag));
        }
        let number = number as u32;
        let wire = (tag & 7) as u8;
        let (value, end) = match wire {
            0 => match self.varint(at) {
                Some((v, end)) => (Value::Varint(v), end),
                None => return Err(self.error(at, number, Problem::BadVarint)),
            },
            1 => match self.buf.get(at..at + 8) {
                Some(b) => (Value::I64(u64::from_le_bytes(b.try_into().expect("8 bytes"))), at + 8),
                None => return Err(self.error(at, number, Problem::PastEnd)),
            },
            2 => {
                let Some((len, from)) = self.varint(at) else { return Err(self.error(at, number, Problem::BadVarint)) };
                let end = usize::try_from(len).ok().and_then(|l| from.checked_add(l)).filter(|&e| e <= self.buf.len());
                match end {
                    Some(end) => (Value::Len(&self.buf[from..end]), end),
                    None => return Err(self.error(at, number, Problem::PastEnd)),
                }
            }
            5 => match self.buf.get(at..at + 4) {
                Some(b) => (Value::I32(u32::from_le_bytes(b.try_into().expect("4 bytes"))), at + 4),
                None => return Err(self.error(at, number, Problem::PastEnd)),
            },
            other => return Err(self.error(start, number, Problem::BadWireType(other))),
        };
        if let Some(&(_, _, expected)) = self.schema.field(number) {
            let ok = match (expected, value) {
                (Wire::Varint, Value::Varint(_))
                | (Wire::I64, Value::I64(_))
                | (Wire::Len, Value::Len(_))
                | (Wire::I32, Value::I32(_)) => true,
                (Wire::Packed(_), Value::Len(_)) => true,
                (Wire::Packed(w), v) => matches!(
                    (w, v),
                    (Wire::Varint, Value::Varint(_)) | (Wire::I64, Value::I64(_)) | (Wire::I32, Value::I32(_))
                ),
                _ => false,
            };
            if !ok {
                return Err(self.error(start, number, Problem::WrongWireType(wire)));
            }
        }
        self.pos = end;
        Ok(Field { number, value, start, end })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        (self.pos < self.buf.len()).then(|| self.next_field())
    }
}

/// `bytes` as UTF-8, or the error naming `field` of `schema` at `offset`.
pub(crate) fn utf8<'a>(
    bytes: &'a [u8],
    schema: &'static Schema,
    number: u32,
    offset: usize,
) -> Result<&'a str, ViewError> {
    std::str::from_utf8(bytes).map_err(|e| ViewError {
        message: schema.name,
        field: schema.field(number).map(|f| f.1),
        number,
        offset: offset + e.valid_up_to(),
        problem: Problem::NotUtf8,
    })
}

const LEN: Wire = Wire::Len;
const VARINT: Wire = Wire::Varint;
const I64: Wire = Wire::I64;
const I32: Wire = Wire::I32;

macro_rules! schema {
    ($id:ident, $name:literal, [$(($n:literal, $f:literal, $w:expr)),* $(,)?]) => {
        pub(crate) static $id: Schema = Schema { name: $name, fields: &[$(($n, $f, $w)),*] };
    };
}

schema!(TRACES_REQUEST, "ExportTraceServiceRequest", [(1, "resource_spans", LEN)]);
schema!(METRICS_REQUEST, "ExportMetricsServiceRequest", [(1, "resource_metrics", LEN)]);
schema!(LOGS_REQUEST, "ExportLogsServiceRequest", [(1, "resource_logs", LEN)]);
schema!(RESOURCE_SPANS, "ResourceSpans", [(1, "resource", LEN), (2, "scope_spans", LEN), (3, "schema_url", LEN)]);
schema!(RESOURCE_METRICS, "ResourceMetrics", [(1, "resource", LEN), (2, "scope_metrics", LEN), (3, "schema_url", LEN)]);
schema!(RESOURCE_LOGS, "ResourceLogs", [(1, "resource", LEN), (2, "scope_logs", LEN), (3, "schema_url", LEN)]);
schema!(SCOPE_SPANS, "ScopeSpans", [(1, "scope", LEN), (2, "spans", LEN), (3, "schema_url", LEN)]);
schema!(SCOPE_METRICS, "ScopeMetrics", [(1, "scope", LEN), (2, "metrics", LEN), (3, "schema_url", LEN)]);
schema!(SCOPE_LOGS, "ScopeLogs", [(1, "scope", LEN), (2, "log_records", LEN), (3, "schema_url", LEN)]);
schema!(
    RESOURCE,
    "Resource",
    [(1, "attributes", LEN), (2, "dropped_attributes_count", VARINT), (3, "entity_refs", LEN)]
);
schema!(KEY_VALUE, "KeyValue", [(1, "key", LEN), (2, "value", LEN), (3, "key_strindex", VARINT)]);
schema!(
    ANY_VALUE,
    "AnyValue",
    [
        (1, "string_value", LEN),
        (2, "bool_value", VARINT),
        (3, "int_value", VARINT),
        (4, "double_value", I64),
        (5, "array_value", LEN),
        (6, "kvlist_value", LEN),
        (7, "bytes_value", LEN),
        (8, "string_value_strindex", VARINT),
    ]
);
schema!(
    SPAN,
    "Span",
    [
        (1, "trace_id", LEN),
        (2, "span_id", LEN),
        (3, "trace_state", LEN),
        (4, "parent_span_id", LEN),
        (5, "name", LEN),
        (6, "kind", VARINT),
        (7, "start_time_unix_nano", I64),
        (8, "end_time_unix_nano", I64),
        (9, "attributes", LEN),
        (10, "dropped_attributes_count", VARINT),
        (11, "events", LEN),
        (12, "dropped_events_count", VARINT),
        (13, "links", LEN),
        (14, "dropped_links_count", VARINT),
        (15, "status", LEN),
        (16, "flags", I32),
    ]
);
schema!(STATUS, "Status", [(2, "message", LEN), (3, "code", VARINT)]);
schema!(
    LOG_RECORD,
    "LogRecord",
    [
        (1, "time_unix_nano", I64),
        (2, "severity_number", VARINT),
        (3, "severity_text", LEN),
        (5, "body", LEN),
        (6, "attributes", LEN),
        (7, "dropped_attributes_count", VARINT),
        (8, "flags", I32),
        (9, "trace_id", LEN),
        (10, "span_id", LEN),
        (11, "observed_time_unix_nano", I64),
        (12, "event_name", LEN),
    ]
);
schema!(
    METRIC,
    "Metric",
    [
        (1, "name", LEN),
        (2, "description", LEN),
        (3, "unit", LEN),
        (5, "gauge", LEN),
        (7, "sum", LEN),
        (9, "histogram", LEN),
        (10, "exponential_histogram", LEN),
        (11, "summary", LEN),
        (12, "metadata", LEN),
    ]
);
schema!(GAUGE, "Gauge", [(1, "data_points", LEN)]);
schema!(SUM, "Sum", [(1, "data_points", LEN), (2, "aggregation_temporality", VARINT), (3, "is_monotonic", VARINT)]);
schema!(HISTOGRAM, "Histogram", [(1, "data_points", LEN), (2, "aggregation_temporality", VARINT)]);
schema!(
    EXPONENTIAL_HISTOGRAM,
    "ExponentialHistogram",
    [(1, "data_points", LEN), (2, "aggregation_temporality", VARINT)]
);
schema!(SUMMARY, "Summary", [(1, "data_points", LEN)]);
schema!(
    NUMBER_DATA_POINT,
    "NumberDataPoint",
    [
        (2, "start_time_unix_nano", I64),
        (3, "time_unix_nano", I64),
        (4, "as_double", I64),
        (5, "exemplars", LEN),
        (6, "as_int", I64),
        (7, "attributes", LEN),
        (8, "flags", VARINT),
    ]
);
schema!(
    HISTOGRAM_DATA_POINT,
    "HistogramDataPoint",
    [
        (2, "start_time_unix_nano", I64),
        (3, "time_unix_nano", I64),
        (4, "count", I64),
        (5, "sum", I64),
        (6, "bucket_counts", Wire::Packed(&I64)),
        (7, "explicit_bounds", Wire::Packed(&I64)),
        (8, "exemplars", LEN),
        (9, "attributes", LEN),
        (10, "flags", VARINT),
        (11, "min", I64),
        (12, "max", I64),
    ]
);
schema!(
    EXPONENTIAL_HISTOGRAM_DATA_POINT,
    "ExponentialHistogramDataPoint",
    [
        (1, "attributes", LEN),
        (2, "start_time_unix_nano", I64),
        (3, "time_unix_nano", I64),
        (4, "count", I64),
        (5, "sum", I64),
        (6, "scale", VARINT),
        (7, "zero_count", I64),
        (8, "positive", LEN),
        (9, "negative", LEN),
        (10, "flags", VARINT),
        (11, "exemplars", LEN),
        (12, "min", I64),
        (13, "max", I64),
        (14, "zero_threshold", I64),
    ]
);
schema!(
    SUMMARY_DATA_POINT,
    "SummaryDataPoint",
    [
        (2, "start_time_unix_nano", I64),
        (3, "time_unix_nano", I64),
        (4, "count", I64),
        (5, "sum", I64),
        (6, "quantile_values", LEN),
        (7, "attributes", LEN),
        (8, "flags", VARINT),
    ]
);

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(buf: &[u8]) -> Vec<Result<(u32, u64), ViewError>> {
        Fields::new(buf, 0, &SPAN).map(|f| f.map(|f| (f.number, f.u64()))).collect()
    }

    #[test]
    fn varints_tags_and_wire_types() {
        // kind = 2, then an unknown varint field 99 = 300, then start time.
        let mut buf = vec![0x30, 0x02, 0x98, 0x06, 0xac, 0x02, 0x39];
        buf.extend_from_slice(&7u64.to_le_bytes());
        assert_eq!(fields(&buf), [Ok((6, 2)), Ok((99, 300)), Ok((7, 7))]);
        let err = |buf: &[u8]| fields(buf).into_iter().find_map(Result::err).unwrap();
        assert_eq!(err(&[0x30]).problem, Problem::BadVarint);
        assert_eq!(
            err(&[0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).problem,
            Problem::BadVarint
        );
        assert_eq!(err(&[0x00, 0x00]).problem, Problem::BadTag);
        assert_eq!(err(&[0x33]).problem, Problem::BadWireType(3));
        let e = err(&[0x32, 0x00]); // kind as LEN
        assert_eq!(
            (e.problem, e.field, e.to_string().as_str()),
            (Problem::WrongWireType(2), Some("kind"), "Span.kind (field 6): wrong wire type 2 at byte 0")
        );
        assert_eq!(err(&[0x4a, 0x05, 0x00]).problem, Problem::PastEnd);
        assert_eq!(err(&[0x39, 0x00]).problem, Problem::PastEnd);
        // The error ends the iteration.
        assert_eq!(fields(&[0x00, 0x30, 0x01]).len(), 1);
    }
}
