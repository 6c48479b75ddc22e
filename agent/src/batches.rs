//! Batches to forward, cut from one sealed WAL segment.
//!
//! A batch's identity must be the same however often it is sent, across agent
//! restarts too: the collector stores a batch's usage under that identity, so a
//! resend counts once. So batches are a pure function of the segment's bytes
//! (which never change once sealed): records of one signal are packed in order
//! up to a size, and the n-th batch of segment s is sequence `s << 24 | n`.
//!
//! The body of a batch is its requests' protobuf bytes laid end to end: for an
//! `Export*ServiceRequest`, whose only field is a repeated message, concatenated
//! encodings are the encoding of the merged request. Nothing is decoded again.

use std::collections::BTreeMap;

use otlp::Signal;

use crate::record::Record;

/// Batches per segment are numbered below this.
pub const PER_SEGMENT: u64 = 1 << 24;

/// One export to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its signal.
    pub signal: Signal,
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
    /// Its items per tenant.
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

/// Cuts `records` of segment `segment_id` into batches of at most `max_bytes`
/// (a single larger request is a batch of its own).
pub fn cut(segment_id: u64, records: &[Vec<u8>], max_bytes: usize) -> Cut {
    let mut out = Cut::default();
    // One batch open per signal, closed when the next request would not fit.
    let mut open: [Option<(Batch, Vec<u8>)>; 3] = [None, None, None];
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
        let i = slot(r.signal);
        let fits =
            open[i].as_ref().is_some_and(|(b, body)| b.boot == r.boot && body.len() + r.request.len() <= max_bytes);
        if !fits {
            if let Some(b) = open[i].take() {
                close(b, &mut out);
            }
            let batch = Batch {
                signal: r.signal,
                boot: r.boot,
                seq: 0,
                accepted_millis: r.accepted_millis,
                body: bytes::Bytes::new(),
                requests: 0,
                items: BTreeMap::new(),
            };
            open[i] = Some((batch, Vec::new()));
        }
        let (b, body) = open[i].as_mut().expect("opened above");
        body.extend_from_slice(r.request);
        b.requests += 1;
        for (tenant, n) in r.items {
            *b.items.entry(tenant).or_default() += n;
        }
    }
    for b in open.into_iter().flatten() {
        close(b, &mut out);
    }
    out.batches.sort_by_key(|b| b.seq);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
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
}
