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

/// A usage row's fields as the canonical text reads them, borrowed (from a [`SealedRow`], or
/// from the bytes a snapshot was read as: a month is hundreds of millions of rows, and owning
/// each field of each row cost more than hashing it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageLine<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Meter.
    pub meter: &'a str,
    /// The minute, Unix seconds.
    pub window_start: u32,
    /// Service.
    pub service: &'a str,
    /// Route.
    pub route: &'a str,
    /// Dimensions as stored (JSON text).
    pub dimensions: &'a str,
    /// The distinct value of a `unique_count` row.
    pub unique_value: &'a str,
    /// The value.
    pub value: Decimal,
    /// Unit.
    pub unit: &'a str,
    /// How the meter rolls up.
    pub aggregation: &'a str,
    /// The batch's source.
    pub source_id: &'a str,
    /// The batch's sequence number.
    pub batch_seq: u64,
}

impl SealedRow {
    /// Its fields, borrowed.
    pub fn line(&self) -> UsageLine<'_> {
        UsageLine {
            tenant: &self.tenant,
            meter: &self.meter,
            window_start: self.window_start,
            service: &self.service,
            route: &self.route,
            dimensions: &self.dimensions,
            unique_value: &self.unique_value,
            value: self.value,
            unit: &self.unit,
            aggregation: &self.aggregation,
            source_id: &self.source_id,
            batch_seq: self.batch_seq,
        }
    }
}

/// An SLA row's fields as the canonical text reads them, borrowed (see [`UsageLine`]); ordered
/// as the text sorts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlaLine<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Service.
    pub service: &'a str,
    /// Route.
    pub route: &'a str,
    /// The minute, Unix seconds.
    pub window_start: u32,
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Latency sketch as `bucket:count` pairs, comma-separated, as stored.
    pub latency: &'a str,
    /// Exemplars as `trace_id:latency_ns:error` triples, comma-separated, as stored.
    pub exemplars: &'a str,
    /// The batch's source.
    pub source_id: &'a str,
    /// The batch's sequence number.
    pub batch_seq: u64,
}

impl SealedSlaRow {
    /// Its fields, borrowed.
    pub fn line(&self) -> SlaLine<'_> {
        SlaLine {
            tenant: &self.tenant,
            service: &self.service,
            route: &self.route,
            window_start: self.window_start,
            requests: self.requests,
            errors: self.errors,
            latency: &self.latency,
            exemplars: &self.exemplars,
            source_id: &self.source_id,
            batch_seq: self.batch_seq,
        }
    }
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

/// The canonical text's first lines, before the usage rows.
fn header(out: &mut String, month: &str, previous: &str, usage_rows: u64) {
    let _ = write!(out, "tally-seal-v1\n{month}\n{previous}\n{usage_rows}\n");
}

/// The lines of `rows` (in any order), sorted.
fn usage_lines(out: &mut String, rows: &[UsageLine<'_>]) {
    // The value compares as its text; each text made once (a month is hundreds of millions of rows).
    let values: Vec<String> = rows.iter().map(|r| r.value.normalize().to_string()).collect();
    let key = |i: usize| {
        let r = &rows[i];
        (
            r.tenant,
            r.meter,
            r.window_start,
            r.service,
            r.route,
            r.dimensions,
            r.unique_value,
            &values[i],
            r.unit,
            r.aggregation,
            r.source_id,
            r.batch_seq,
        )
    };
    let mut order: Vec<usize> = (0..rows.len()).collect();
    // Unstable is exact here: rows with equal keys write equal lines.
    order.sort_unstable_by(|&a, &b| key(a).cmp(&key(b)));
    for i in order {
        let r = &rows[i];
        field(out, r.tenant);
        field(out, r.meter);
        let _ = write!(out, "{}\t", r.window_start);
        field(out, r.service);
        field(out, r.route);
        field(out, r.dimensions);
        field(out, r.unique_value);
        field(out, &values[i]);
        field(out, r.unit);
        field(out, r.aggregation);
        field(out, r.source_id);
        let _ = writeln!(out, "{}", r.batch_seq);
    }
}

/// The lines of `rows` (in any order), sorted: the derived order is the field order above.
fn sla_lines(out: &mut String, rows: &[SlaLine<'_>]) {
    let mut sorted: Vec<&SlaLine<'_>> = rows.iter().collect();
    sorted.sort_unstable();
    for r in sorted {
        field(out, r.tenant);
        field(out, r.service);
        field(out, r.route);
        let _ = write!(out, "{}\t{}\t{}\t", r.window_start, r.requests, r.errors);
        field(out, r.latency);
        field(out, r.exemplars);
        field(out, r.source_id);
        let _ = writeln!(out, "{}", r.batch_seq);
    }
}

/// The canonical text of `rows` and `sla` (in any order) for `month` chained to `previous`.
pub fn canonical(month: &str, previous: &str, rows: &[SealedRow], sla: &[SealedSlaRow]) -> String {
    let mut out = String::new();
    header(&mut out, month, previous, rows.len() as u64);
    usage_lines(&mut out, &rows.iter().map(SealedRow::line).collect::<Vec<_>>());
    let _ = writeln!(out, "sla {}", sla.len());
    sla_lines(&mut out, &sla.iter().map(SealedSlaRow::line).collect::<Vec<_>>());
    out
}

/// The lowercase hex SHA-256 of [`canonical`].
pub fn digest(month: &str, previous: &str, rows: &[SealedRow], sla: &[SealedSlaRow]) -> String {
    let mut d = Digester::new(month, previous, rows.len() as u64);
    d.usage(rows);
    d.sla_section(sla.len() as u64);
    d.sla(sla);
    d.finish()
}

/// [`digest`] fed a part at a time, so that a month of any size is digested without holding
/// it whole: the canonical order is tenant first, so a part is one or more whole tenants, after
/// every tenant fed before it (usage parts, then [`sla_section`](Self::sla_section), then SLA parts).
pub struct Digester {
    hasher: Sha256,
    text: String,
}

impl Digester {
    /// A digest of `month` chained to `previous`, of `usage_rows` usage rows in all.
    pub fn new(month: &str, previous: &str, usage_rows: u64) -> Self {
        let mut text = String::new();
        header(&mut text, month, previous, usage_rows);
        Self { hasher: Sha256::new(), text }
    }

    /// Adds whole tenants' usage rows, in any order within the part.
    pub fn usage(&mut self, rows: &[SealedRow]) {
        self.usage_lines(&rows.iter().map(SealedRow::line).collect::<Vec<_>>());
    }

    /// [`usage`](Self::usage) of borrowed rows.
    pub fn usage_lines(&mut self, rows: &[UsageLine<'_>]) {
        usage_lines(&mut self.text, rows);
        self.flush();
    }

    /// Ends the usage rows; `sla_rows` SLA rows follow.
    pub fn sla_section(&mut self, sla_rows: u64) {
        let _ = writeln!(self.text, "sla {sla_rows}");
    }

    /// Adds whole tenants' SLA rows, in any order within the part.
    pub fn sla(&mut self, rows: &[SealedSlaRow]) {
        self.sla_lines(&rows.iter().map(SealedSlaRow::line).collect::<Vec<_>>());
    }

    /// [`sla`](Self::sla) of borrowed rows.
    pub fn sla_lines(&mut self, rows: &[SlaLine<'_>]) {
        sla_lines(&mut self.text, rows);
        self.flush();
    }

    fn flush(&mut self) {
        self.hasher.update(self.text.as_bytes());
        self.text.clear();
    }

    /// The lowercase hex digest.
    pub fn finish(mut self) -> String {
        self.flush();
        self.hasher.finalize().iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tenant: &str, value: &str) -> SealedRow {
        SealedRow {
            tenant: tenant.into(),
            meter: "spans".into(),
            window_start: 60,
            value: value.parse().unwrap(),
            unit: "count".into(),
            source_id: "s".into(),
            batch_seq: 1,
            ..Default::default()
        }
    }

    #[test]
    fn canonical_text_is_ordered_escaped_and_normalized() {
        let mut tricky = row("acme", "1.500000000");
        tricky.service = "a\tb\\c\nd".into();
        let sla = SealedSlaRow {
            tenant: "acme".into(),
            service: "api".into(),
            window_start: 120,
            requests: 10,
            errors: 1,
            latency: "300:9,301:1".into(),
            exemplars: "0af7651916cd43dd8448eb211c80319c:5000000:1".into(),
            source_id: "c".into(),
            batch_seq: 2,
            ..Default::default()
        };
        let text = canonical("2026-11", GENESIS, &[row("globex", "2"), tricky], &[sla]);
        assert_eq!(
            text,
            format!("tally-seal-v1\n2026-11\n{GENESIS}\n2\nacme\tspans\t60\ta\\tb\\\\c\\nd\t\t\t\t1.5\tcount\t\ts\t1\nglobex\tspans\t60\t\t\t\t\t2\tcount\t\ts\t1\n\
                     sla 1\nacme\tapi\t\t120\t10\t1\t300:9,301:1\t0af7651916cd43dd8448eb211c80319c:5000000:1\tc\t2\n")
        );
        // Order and the decimal's scale do not matter; content and the chain do.
        assert_eq!(
            digest("2026-11", GENESIS, &[row("a", "1"), row("b", "2.0")], &[]),
            digest("2026-11", GENESIS, &[row("b", "2"), row("a", "1.000")], &[])
        );
        assert_ne!(
            digest("2026-11", GENESIS, &[row("a", "1")], &[]),
            digest("2026-11", GENESIS, &[row("a", "1.000000001")], &[])
        );
        assert_ne!(digest("2026-11", GENESIS, &[], &[]), digest("2026-11", &"1".repeat(64), &[], &[]));
        // The empty month's digest, as `printf 'tally-seal-v1\n2026-11\n0…0\n0\nsla 0\n' | sha256sum` gives it.
        assert_eq!(
            digest("2026-11", GENESIS, &[], &[]),
            "525b6142dcbeb5bd6e100ba002390fb13286f2bb7b12c89c3ed673965f49b6c3"
        );
    }

    #[test]
    fn a_digest_fed_a_tenant_at_a_time_is_the_digest_of_the_whole() {
        let sla = |tenant: &str, requests| SealedSlaRow { tenant: tenant.into(), requests, ..Default::default() };
        let rows = [row("globex", "3"), row("acme", "2"), row("acme", "1"), row("initech", "4")];
        let slas = [sla("initech", 5), sla("acme", 7), sla("acme", 6)];
        let whole = digest("2026-11", GENESIS, &rows, &slas);
        let mut d = Digester::new("2026-11", GENESIS, 4);
        // Tenants in order, rows within a tenant in any order.
        d.usage(&[row("acme", "1"), row("acme", "2")]);
        d.usage(&[row("globex", "3")]);
        d.usage(&[row("initech", "4")]);
        d.sla_section(3);
        d.sla(&[sla("acme", 6), sla("acme", 7)]);
        d.sla(&[sla("initech", 5)]);
        assert_eq!(d.finish(), whole);
    }
}
