//! The canonical text of a sealed month and its SHA-256 digest.
//!
//! ```text
//! tally-seal-v1\n
//! <month YYYY-MM>\n
//! <previous seal's digest, 64 hex digits; 64 zeros for the first seal>\n
//! <usage row count>\n
//! then one line per usage row, sorted by its fields in this order (numbers as
//! numbers, the rest as bytes; value as its text below):
//! tenant \t meter \t window_start (Unix seconds) \t service \t route \t dimensions \t
//! unique_value \t value (decimal, no trailing zeros) \t unit \t aggregation \t source_id \t batch_seq \n
//! sla <SLA row count>\n
//! then one line per SLA row, sorted likewise:
//! tenant \t service \t route \t window_start \t requests \t errors \t
//! latency (bucket:count,…) \t exemplars (trace_id:latency_ns:0|1,…) \t source_id \t batch_seq \n
//! ```
//!
//! Text fields escape `\` as `\\`, tab as `\t` and newline as `\n`, so fields and
//! lines cannot run into each other. The digest is the lowercase hex SHA-256 of
//! these bytes: anyone with the rows can recompute it (`sha256sum`).

use std::fmt::Write;

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

/// The previous digest of the first seal.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One collapsed usage row of a sealed month.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SealedRow {
    /// Tenant.
    pub tenant: String,
    /// Meter.
    pub meter: String,
    /// The minute, Unix seconds.
    pub window_start: u32,
    /// Service.
    pub service: String,
    /// Route.
    pub route: String,
    /// Dimensions as stored (JSON text).
    pub dimensions: String,
    /// The distinct value of a `unique_count` row.
    pub unique_value: String,
    /// The value.
    pub value: Decimal,
    /// Unit.
    pub unit: String,
    /// How the meter rolls up.
    pub aggregation: String,
    /// The batch's source.
    pub source_id: String,
    /// The batch's sequence number.
    pub batch_seq: u64,
}

/// One collapsed SLA row of a sealed month (one tenant × service × route × minute of one batch).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SealedSlaRow {
    /// Tenant.
    pub tenant: String,
    /// Service.
    pub service: String,
    /// Route.
    pub route: String,
    /// The minute, Unix seconds.
    pub window_start: u32,
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Latency sketch as `bucket:count` pairs, comma-separated, as stored.
    pub latency: String,
    /// Exemplars as `trace_id:latency_ns:error` triples, comma-separated, as stored.
    pub exemplars: String,
    /// The batch's source.
    pub source_id: String,
    /// The batch's sequence number.
    pub batch_seq: u64,
}

fn field(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\t');
}

/// The canonical text of `rows` and `sla` (in any order) for `month` chained to `previous`.
pub fn canonical(month: &str, previous: &str, rows: &[SealedRow], sla: &[SealedSlaRow]) -> String {
    let mut sorted: Vec<&SealedRow> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        let key = |r: &SealedRow| (r.tenant.clone(), r.meter.clone(), r.window_start, r.service.clone(), r.route.clone(), r.dimensions.clone(), r.unique_value.clone(), r.value.normalize().to_string(), r.unit.clone(), r.aggregation.clone(), r.source_id.clone(), r.batch_seq);
        key(a).cmp(&key(b))
    });
    let mut out = format!("tally-seal-v1\n{month}\n{previous}\n{}\n", rows.len());
    for r in sorted {
        field(&mut out, &r.tenant);
        field(&mut out, &r.meter);
        let _ = write!(out, "{}\t", r.window_start);
        field(&mut out, &r.service);
        field(&mut out, &r.route);
        field(&mut out, &r.dimensions);
        field(&mut out, &r.unique_value);
        let _ = write!(out, "{}\t", r.value.normalize());
        field(&mut out, &r.unit);
        field(&mut out, &r.aggregation);
        field(&mut out, &r.source_id);
        let _ = writeln!(out, "{}", r.batch_seq);
    }
    // The derived order is the field order above: the canonical order.
    let mut sla: Vec<&SealedSlaRow> = sla.iter().collect();
    sla.sort();
    let _ = writeln!(out, "sla {}", sla.len());
    for r in sla {
        field(&mut out, &r.tenant);
        field(&mut out, &r.service);
        field(&mut out, &r.route);
        let _ = write!(out, "{}\t{}\t{}\t", r.window_start, r.requests, r.errors);
        field(&mut out, &r.latency);
        field(&mut out, &r.exemplars);
        field(&mut out, &r.source_id);
        let _ = writeln!(out, "{}", r.batch_seq);
    }
    out
}

/// The lowercase hex SHA-256 of [`canonical`].
pub fn digest(month: &str, previous: &str, rows: &[SealedRow], sla: &[SealedSlaRow]) -> String {
    Sha256::digest(canonical(month, previous, rows, sla).as_bytes()).iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tenant: &str, value: &str) -> SealedRow {
        SealedRow { tenant: tenant.into(), meter: "spans".into(), window_start: 60, value: value.parse().unwrap(), unit: "count".into(), source_id: "s".into(), batch_seq: 1, ..Default::default() }
    }

    #[test]
    fn canonical_text_is_ordered_escaped_and_normalized() {
        let mut tricky = row("acme", "1.500000000");
        tricky.service = "a\tb\\c\nd".into();
        let sla = SealedSlaRow { tenant: "acme".into(), service: "api".into(), window_start: 120, requests: 10, errors: 1, latency: "300:9,301:1".into(),
            exemplars: "0af7651916cd43dd8448eb211c80319c:5000000:1".into(), source_id: "c".into(), batch_seq: 2, ..Default::default() };
        let text = canonical("2026-11", GENESIS, &[row("globex", "2"), tricky], &[sla]);
        assert_eq!(
            text,
            format!("tally-seal-v1\n2026-11\n{GENESIS}\n2\nacme\tspans\t60\ta\\tb\\\\c\\nd\t\t\t\t1.5\tcount\t\ts\t1\nglobex\tspans\t60\t\t\t\t\t2\tcount\t\ts\t1\n\
                     sla 1\nacme\tapi\t\t120\t10\t1\t300:9,301:1\t0af7651916cd43dd8448eb211c80319c:5000000:1\tc\t2\n")
        );
        // Order and the decimal's scale do not matter; content and the chain do.
        assert_eq!(digest("2026-11", GENESIS, &[row("a", "1"), row("b", "2.0")], &[]), digest("2026-11", GENESIS, &[row("b", "2"), row("a", "1.000")], &[]));
        assert_ne!(digest("2026-11", GENESIS, &[row("a", "1")], &[]), digest("2026-11", GENESIS, &[row("a", "1.000000001")], &[]));
        assert_ne!(digest("2026-11", GENESIS, &[], &[]), digest("2026-11", &"1".repeat(64), &[], &[]));
        // The empty month's digest, as `printf 'tally-seal-v1\n2026-11\n0…0\n0\nsla 0\n' | sha256sum` gives it.
        assert_eq!(digest("2026-11", GENESIS, &[], &[]), "525b6142dcbeb5bd6e100ba002390fb13286f2bb7b12c89c3ed673965f49b6c3");
    }
}
