//! RowBinary encoding of SLA batches for the `sla` table.

use std::collections::BTreeMap;

use super::record::{check_sla_record, SlaError, SlaProblem, SlaRecord};
use crate::clickhouse::rowbinary::{put_str, put_u16, put_u64, put_u8, Row};
use crate::record::minute_of;

/// Encodes one batch's records as RowBinary rows of `sla`
/// ([`super::schema::SLA_ROW`]) into `out`; returns the number of rows.
///
/// Records sharing tenant, service, route and minute are merged first, so each
/// key appears once per batch (the store keeps one row per key and batch; two
/// would lose one). Rows come out in key order with canonical sketches and
/// exemplars, so the same records give the same bytes on any collector, in any
/// input order: that is what makes a retried batch collapse exactly. A bad
/// record rejects the whole batch and leaves `out` untouched.
///
/// ```
/// use metering::sla::{encode_sla_batch, SlaRecord};
/// let t = time::macros::datetime!(2026-05-01 10:00:05 UTC);
/// let (mut a, mut b) = (SlaRecord::new("acme", "api", "/", t), SlaRecord::new("acme", "api", "/", t + time::Duration::seconds(30)));
/// a.observe(1_000, false, "");
/// b.observe(2_000, true, "");
/// let mut out = Vec::new();
/// assert_eq!(encode_sla_batch("collector-1", 7, &[a, b], &mut out), Ok(1));
/// ```
pub fn encode_sla_batch(
    source_id: &str,
    seq: u64,
    records: &[SlaRecord],
    out: &mut Vec<u8>,
) -> Result<usize, SlaError> {
    let reject = |index, reason| SlaError { source_id: source_id.to_owned(), seq, index, reason };
    if source_id.is_empty() {
        return Err(reject(0, SlaProblem::EmptySource));
    }
    let mut rows: BTreeMap<(&str, &str, &str, u32), SlaRecord> = BTreeMap::new();
    for (index, r) in records.iter().enumerate() {
        check_sla_record(r).map_err(|reason| reject(index, reason))?;
        let key = (r.tenant.as_str(), r.service.as_str(), r.route.as_str(), minute_of(r.time));
        rows.entry(key).or_insert_with(|| SlaRecord::new(&r.tenant, &r.service, &r.route, r.time)).merge(r);
    }
    for ((tenant, service, route, minute), r) in &rows {
        Row::new(super::schema::SLA_ROW, out)
            .str("tenant", tenant)
            .str("service", service)
            .str("route", route)
            .datetime("window_start", *minute)
            .u64("requests", r.requests)
            .u64("errors", r.errors)
            .array("latency_buckets", r.latency.buckets().map(|b| b.0), put_u16)
            .array("latency_counts", r.latency.buckets().map(|b| b.1), put_u64)
            .array("exemplar_trace_ids", r.exemplars.iter().map(|e| e.trace_id.as_str()), put_str)
            .array("exemplar_latencies_ns", r.exemplars.iter().map(|e| e.latency_ns), put_u64)
            .array("exemplar_errors", r.exemplars.iter().map(|e| u8::from(e.error)), put_u8)
            .str("source_id", source_id)
            .u64("batch_seq", seq)
            .finish();
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn record(route: &str, secs: i64, latencies: &[(u64, bool, u8)]) -> SlaRecord {
        let mut r =
            SlaRecord::new("acme", "api", route, datetime!(2026-05-01 10:00 UTC) + time::Duration::seconds(secs));
        for &(ns, err, id) in latencies {
            r.observe(ns, err, &format!("{id:032x}"));
        }
        r
    }

    #[test]
    fn same_records_same_bytes_in_any_order() {
        let records = vec![
            record("/a", 1, &[(5, false, 1), (900, true, 2)]),
            record("/b", 2, &[(7, false, 3)]),
            record("/a", 59, &[(1_000_000, false, 4), (3, true, 5)]),
            record("/a", 60, &[(8, false, 6)]),
        ];
        let mut one = Vec::new();
        assert_eq!(encode_sla_batch("c1", 3, &records, &mut one), Ok(3));
        let mut reversed = records.clone();
        reversed.reverse();
        let mut two = Vec::new();
        encode_sla_batch("c1", 3, &reversed, &mut two).unwrap();
        assert_eq!(one, two);
    }

    #[test]
    fn a_bad_record_names_its_batch_and_leaves_out_untouched() {
        let mut bad = record("/a", 1, &[(5, false, 1)]);
        bad.tenant = "no spaces".into();
        let mut out = vec![9];
        let err = encode_sla_batch("c1", 4, &[record("/b", 1, &[]), bad], &mut out).unwrap_err();
        assert_eq!((err.index, err.seq, out), (1, 4, vec![9]));
        assert!(err.to_string().starts_with("SLA batch c1#4, record 1: tenant id"), "{err}");
        assert_eq!(encode_sla_batch("", 1, &[], &mut Vec::new()).unwrap_err().reason, SlaProblem::EmptySource);
    }
}
