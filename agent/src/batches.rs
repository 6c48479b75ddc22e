//! Batches to forward, cut from one sealed WAL segment.
//!
//! A batch's identity must be the same however often it is sent, across agent
//! restarts too: the collector stores a batch's usage under that identity, so a
//! resend counts once. So batches are a pure function of the segment's bytes
//! (which never change once sealed): records of one signal and one tenant are
//! packed in order up to a size, and the n-th batch of segment s is sequence
//! `s << 24 | n`.
//!
//! One tenant per batch, so that a collector's refusal or throttle of a batch
//! (one tenant over its rate limit, say) holds up or drops that tenant's items
//! only. A request naming several tenants is split by resource, copying each
//! resource's bytes (nothing is decoded or encoded).
//!
//! The body of a batch is its requests' protobuf bytes laid end to end: for an
//! `Export*ServiceRequest`, whose only field is a repeated message, concatenated
//! encodings are the encoding of the merged request. Nothing is decoded again.

use std::borrow::Cow;
use std::collections::BTreeMap;

use otlp::view::Attributes;
use otlp::Signal;

use crate::record::Record;

/// Batches per segment are numbered below this.
pub const PER_SEGMENT: u64 = 1 << 24;

/// One export to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its signal.
    pub signal: Signal,
    /// The one tenant of its items (empty for the agent's own usage reports, which name many).
    pub tenant: String,
    /// The process that accepted its data (part of its identity).
    pub boot: u64,
    /// Its number: segment id and position.
    pub seq: u64,
    /// When its first request was accepted, in Unix milliseconds.
    pub accepted_millis: u64,
    /// The merged `Export*ServiceRequest` (shared, so a resend copies nothing).
    pub body: bytes::Bytes,
    /// How many requests it merges.
    pub requests: usize,
    /// Its items per tenant (its one tenant's, or none).
    pub items: BTreeMap<String, u64>,
}

/// What a segment's records make, and which did not parse.
#[derive(Debug, Default)]
pub struct Cut {
    /// The batches, in order.
    pub batches: Vec<Batch>,
    /// Records that do not parse, with why: skipped and counted.
    pub unreadable: Vec<String>,
}

/// One tenant's part of a record: its tenant, its request bytes, its items.
type Part<'a> = (String, Cow<'a, [u8]>, u64);

/// Cuts `records` of segment `segment_id` into batches of one signal and one tenant, of at most
/// `max_bytes` (a single larger request is a batch of its own).
pub fn cut(segment_id: u64, records: &[Vec<u8>], max_bytes: usize) -> Cut {
    let mut out = Cut::default();
    // One batch open per signal and tenant, closed when the next request would not fit.
    let mut open: BTreeMap<(u8, String), (Batch, Vec<u8>)> = BTreeMap::new();
    let slot = |s: Signal| match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    };
    let mut next = 0u64;
    let mut close = |(b, body): (Batch, Vec<u8>), out: &mut Cut| {
        out.batches.push(Batch { seq: segment_id * PER_SEGMENT + next, body: body.into(), ..b });
        next += 1;
    };
    for bytes in records {
        let r = match Record::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                out.unreadable.push(e);
                continue;
            }
        };
        for (tenant, request, items) in parts(&r) {
            let key = (slot(r.signal), tenant);
            let fits =
                open.get(&key).is_some_and(|(b, body)| b.boot == r.boot && body.len() + request.len() <= max_bytes);
            if !fits {
                if let Some(b) = open.remove(&key) {
                    close(b, &mut out);
                }
                let batch = Batch {
                    signal: r.signal,
                    tenant: key.1.clone(),
                    boot: r.boot,
                    seq: 0,
                    accepted_millis: r.accepted_millis,
                    body: bytes::Bytes::new(),
                    requests: 0,
                    items: BTreeMap::new(),
                };
                open.insert(key.clone(), (batch, Vec::new()));
            }
            let (b, body) = open.get_mut(&key).expect("opened above");
            body.extend_from_slice(&request);
            b.requests += 1;
            if !key.1.is_empty() {
                *b.items.entry(key.1).or_default() += items;
            }
        }
    }
    // Still open: closed by signal, then tenant.
    for b in open.into_values() {
        close(b, &mut out);
    }
    out.batches.sort_by_key(|b| b.seq);
    out
}

/// A record's parts, one per tenant: the record itself when it names one tenant (or none: the
/// agent's own usage report), else its request split by resource.
fn parts<'a>(r: &Record<'a>) -> Vec<Part<'a>> {
    match r.items.as_slice() {
        [] => vec![(String::new(), Cow::Borrowed(r.request), 0)],
        [(tenant, n)] => vec![(tenant.clone(), Cow::Borrowed(r.request), *n)],
        many => match split(r.signal, r.request) {
            Ok(split) => split
                .into_iter()
                .map(|(tenant, bytes)| {
                    let n = many.iter().find(|(t, _)| *t == tenant).map_or(0, |(_, n)| *n);
                    (tenant, Cow::Owned(bytes), n)
                })
                .collect(),
            Err(e) => {
                // The intake decoded this request already: this is not expected. Sent whole under
                // its first tenant, it is still counted by the collectors per resource.
                tracing::error!(error = %e, "a WAL record naming several tenants does not decode; sent whole");
                vec![(many[0].0.clone(), Cow::Borrowed(r.request), many.iter().map(|(_, n)| n).sum())]
            }
        },
    }
}

/// `request` (an `Export*ServiceRequest` of `signal`) as one request per tenant, by the tenant
/// rule the collectors meter by, in the order of each tenant's first resource: its resources'
/// bytes copied, nothing decoded.
fn split(signal: Signal, request: &[u8]) -> Result<Vec<(String, Vec<u8>)>, otlp::DecodeError> {
    // A tenant the collectors refuse was taken out at intake; none is left to place.
    otlp::view::split_by_resource(signal, request, |resource| {
        measure::resource_tenant(resource.string(measure::TENANT_ATTRIBUTE)).ok().map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn traces(n: usize) -> Vec<u8> {
        let spans = (0..n).map(|i| Span { name: format!("s{i}"), ..Default::default() }).collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn record(signal: Signal, boot: u64, millis: u64, request: &[u8]) -> Vec<u8> {
        Record { signal, boot, accepted_millis: millis, items: vec![("t".into(), 1)], request }.encode()
    }

    #[test]
    fn same_segment_same_batches_and_bodies_merge_as_protobuf() {
        let (a, b, c) = (traces(2), traces(3), traces(1));
        let records = vec![
            record(Signal::Traces, 7, 1000, &a),
            record(Signal::Logs, 7, 1001, b"\x0a\x00"),
            record(Signal::Traces, 7, 1002, &b),
            record(Signal::Traces, 7, 1003, &c),
            b"junk".to_vec(),
        ];
        // Room for a and b together, not c as well.
        let max = a.len() + b.len();
        let first = cut(5, &records, max);
        assert_eq!(first.unreadable, vec!["a WAL record of 4 bytes is shorter than its header".to_owned()]);
        let shape: Vec<_> =
            first.batches.iter().map(|b| (b.signal, b.seq - 5 * PER_SEGMENT, b.requests, b.accepted_millis)).collect();
        assert_eq!(shape, vec![(Signal::Traces, 0, 2, 1000), (Signal::Traces, 1, 1, 1003), (Signal::Logs, 2, 1, 1001)]);
        assert_eq!(first.batches[0].items, BTreeMap::from([("t".to_owned(), 2)]));
        let merged = ExportTraceServiceRequest::decode(&first.batches[0].body[..]).unwrap();
        assert_eq!(merged.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum::<usize>(), 5);
        assert_eq!(cut(5, &records, max).batches, first.batches, "a resend cuts the same batches");
    }

    #[test]
    fn a_request_larger_than_a_batch_goes_alone_and_boots_never_mix() {
        let big = traces(50);
        let records = vec![
            record(Signal::Traces, 1, 1, &big),
            record(Signal::Traces, 1, 2, &traces(1)),
            record(Signal::Traces, 2, 3, &traces(1)),
        ];
        let c = cut(1, &records, 10);
        assert_eq!(c.batches.iter().map(|b| (b.boot, b.requests)).collect::<Vec<_>>(), vec![(1, 1), (1, 1), (2, 1)]);
        assert_eq!(c.batches[0].body, big);
    }

    fn of_tenant(tenant: &str, n: usize) -> ResourceSpans {
        let tenant_id = KeyValue {
            key: "tenant.id".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(tenant.into())) }),
            ..Default::default()
        };
        ResourceSpans {
            resource: Some(Resource { attributes: vec![tenant_id], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans: vec![Span::default(); n], ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn every_batch_holds_one_tenant_and_a_request_of_several_is_split_by_resource() {
        let mixed =
            ExportTraceServiceRequest { resource_spans: vec![of_tenant("a", 2), of_tenant("b", 3), of_tenant("a", 1)] }
                .encode_to_vec();
        let only_b = ExportTraceServiceRequest { resource_spans: vec![of_tenant("b", 4)] }.encode_to_vec();
        let records = vec![
            Record {
                signal: Signal::Traces,
                boot: 1,
                accepted_millis: 5,
                items: vec![("a".into(), 3), ("b".into(), 3)],
                request: &mixed,
            }
            .encode(),
            Record {
                signal: Signal::Traces,
                boot: 1,
                accepted_millis: 6,
                items: vec![("b".into(), 4)],
                request: &only_b,
            }
            .encode(),
        ];
        let c = cut(2, &records, 1 << 20);
        let spans = |b: &Batch| -> Vec<usize> {
            let r = ExportTraceServiceRequest::decode(&b.body[..]).unwrap();
            r.resource_spans.iter().map(|rs| rs.scope_spans[0].spans.len()).collect()
        };
        let got: Vec<_> =
            c.batches.iter().map(|b| (b.tenant.as_str(), b.requests, b.items.clone(), spans(b))).collect();
        assert_eq!(
            got,
            vec![
                ("a", 1, BTreeMap::from([("a".to_owned(), 3)]), vec![2, 1]),
                ("b", 2, BTreeMap::from([("b".to_owned(), 7)]), vec![3, 4]),
            ]
        );
        assert_eq!(cut(2, &records, 1 << 20).batches, c.batches, "a resend cuts the same bytes");
    }
}
