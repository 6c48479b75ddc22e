//! The SLA record: requests, errors, a latency sketch and a few exemplar traces
//! for one tenant × service × route × UTC minute.

use std::cmp::{Ordering, Reverse};

use time::OffsetDateTime;

use super::sketch::LatencySketch;
use crate::record::{validate_tenant, TenantError, MAX_DIMENSION_LEN};

/// Slowest requests kept per record.
pub const MAX_SLOWEST: usize = 3;
/// Slowest failed requests kept per record (besides the slowest overall).
pub const MAX_FAILED: usize = 3;

/// One request worth showing in a report: a trace to open for a slow or failed window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Exemplar {
    /// The W3C trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// The request's latency.
    pub latency_ns: u64,
    /// Whether it failed.
    pub error: bool,
}

impl Exemplar {
    /// The order exemplars are kept and stored in: slowest first; among equal
    /// latencies the greater trace id, then the failed one, first. It is the
    /// descending order of the tuple `(latency, trace id, error)`, which is
    /// what ClickHouse's `arrayReverseSort` gives, so SQL and Rust agree on
    /// which exemplars survive a merge.
    fn rank(&self) -> Reverse<(u64, &str, bool)> {
        Reverse((self.latency_ns, self.trace_id.as_str(), self.error))
    }
}

impl Ord for Exemplar {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for Exemplar {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// True for 32 lowercase hex digits that are not all zero (the invalid trace id).
pub fn is_trace_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) && s.bytes().any(|b| b != b'0')
}

/// Brings `exemplars` to their canonical bounded form: the [`MAX_SLOWEST`]
/// slowest, plus the [`MAX_FAILED`] slowest failed ones, without duplicates, in
/// [`Exemplar`] order. Keeping the top-k of a union equals keeping the top-k of
/// the parts' top-k, so this is associative and commutative: any merge order
/// keeps the same exemplars.
pub fn bound_exemplars(exemplars: &mut Vec<Exemplar>) {
    exemplars.sort_unstable();
    exemplars.dedup();
    let mut failed = 0;
    let mut index = 0;
    exemplars.retain(|e| {
        let slowest = index < MAX_SLOWEST;
        index += 1;
        let keep_failed = e.error && failed < MAX_FAILED;
        if e.error {
            failed += 1;
        }
        slowest || keep_failed
    });
}

/// What one tenant's service and route did in one UTC minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaRecord {
    /// The tenant.
    pub tenant: String,
    /// `service.name`, or empty.
    pub service: String,
    /// `http.route`, or empty.
    pub route: String,
    /// When; stored in the UTC minute that contains it.
    pub time: OffsetDateTime,
    /// Requests served.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// One latency per request.
    pub latency: LatencySketch,
    /// See [`bound_exemplars`].
    pub exemplars: Vec<Exemplar>,
}

impl SlaRecord {
    /// A record of no requests.
    pub fn new(tenant: &str, service: &str, route: &str, time: OffsetDateTime) -> Self {
        Self {
            tenant: tenant.to_owned(),
            service: service.to_owned(),
            route: route.to_owned(),
            time,
            requests: 0,
            errors: 0,
            latency: LatencySketch::new(),
            exemplars: Vec::new(),
        }
    }

    /// Counts one request. A `trace_id` that is not 32 hex digits is not kept as
    /// an exemplar (the request still counts).
    ///
    /// ```
    /// use metering::sla::SlaRecord;
    /// let mut r = SlaRecord::new("acme", "api", "/users/{id}", time::OffsetDateTime::UNIX_EPOCH);
    /// r.observe(5_000_000, true, "0af7651916cd43dd8448eb211c80319c");
    /// r.observe(1_000_000, false, "");
    /// assert_eq!((r.requests, r.errors, r.latency.count(), r.exemplars.len()), (2, 1, 2, 1));
    /// ```
    pub fn observe(&mut self, latency_ns: u64, error: bool, trace_id: &str) {
        self.requests = self.requests.saturating_add(1);
        self.errors = self.errors.saturating_add(u64::from(error));
        self.latency.add(latency_ns);
        // Most requests are not among the slowest: decide before allocating the exemplar.
        if is_trace_id(trace_id) && self.would_keep(latency_ns, error, trace_id) {
            self.exemplars.push(Exemplar { trace_id: trace_id.to_owned(), latency_ns, error });
            bound_exemplars(&mut self.exemplars);
        }
    }

    /// Whether [`bound_exemplars`] would keep this exemplar among the present
    /// (bounded) ones: it ranks among the [`MAX_SLOWEST`] first, or it failed and
    /// ranks among the [`MAX_FAILED`] first failed ones.
    fn would_keep(&self, latency_ns: u64, error: bool, trace_id: &str) -> bool {
        let rank = Reverse((latency_ns, trace_id, error));
        let ahead = self.exemplars.iter().filter(|e| e.rank() < rank);
        let (mut all, mut failed) = (0, 0);
        for e in ahead {
            all += 1;
            failed += usize::from(e.error);
        }
        all < MAX_SLOWEST || (error && failed < MAX_FAILED)
    }

    /// Adds `other`'s counts, latencies and exemplars (keys are not compared).
    pub fn merge(&mut self, other: &SlaRecord) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.latency.merge(&other.latency);
        self.exemplars.extend(other.exemplars.iter().cloned());
        bound_exemplars(&mut self.exemplars);
    }

    /// Failed share of requests in parts per million (0 when there were none).
    pub fn error_ppm(&self) -> u64 {
        if self.requests == 0 {
            return 0;
        }
        (u128::from(self.errors) * 1_000_000 / u128::from(self.requests)) as u64
    }
}

/// Why an SLA record or batch was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SlaProblem {
    /// Bad tenant id.
    #[error(transparent)]
    Tenant(#[from] TenantError),
    /// Outside what a ClickHouse `DateTime` holds.
    #[error("time {0} is outside 1970-01-01..2106-02-07")]
    TimeOutOfRange(OffsetDateTime),
    /// A string field over [`MAX_DIMENSION_LEN`].
    #[error("{field} is {len} bytes long; the limit is {MAX_DIMENSION_LEN}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// More errors than requests.
    #[error("{errors} errors out of {requests} requests")]
    ErrorsExceedRequests {
        /// Errors.
        errors: u64,
        /// Requests.
        requests: u64,
    },
    /// The sketch does not hold one latency per request.
    #[error("{latencies} latencies recorded for {requests} requests")]
    LatencyCount {
        /// Latencies in the sketch.
        latencies: u64,
        /// Requests.
        requests: u64,
    },
    /// An exemplar's trace id is not 32 lowercase hex digits.
    #[error("exemplar trace id {0:?} is not 32 lowercase hex digits")]
    BadTraceId(String),
    /// The batch has no source id.
    #[error("batch source id is empty")]
    EmptySource,
}

/// Why a batch of SLA records was refused; names the batch and the record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("SLA batch {source_id}#{seq}, record {index}: {reason}")]
pub struct SlaError {
    /// The batch's source.
    pub source_id: String,
    /// The batch's sequence number.
    pub seq: u64,
    /// Index of the refused record.
    pub index: usize,
    /// What is wrong.
    pub reason: SlaProblem,
}

/// Checks one record against the store's limits and its own consistency.
pub fn check_sla_record(r: &SlaRecord) -> Result<(), SlaProblem> {
    validate_tenant(&r.tenant)?;
    if !(0..=i64::from(u32::MAX)).contains(&r.time.unix_timestamp()) {
        return Err(SlaProblem::TimeOutOfRange(r.time));
    }
    for (field, s) in [("service", &r.service), ("route", &r.route)] {
        if s.len() > MAX_DIMENSION_LEN {
            return Err(SlaProblem::TooLong { field, len: s.len() });
        }
    }
    if r.errors > r.requests {
        return Err(SlaProblem::ErrorsExceedRequests { errors: r.errors, requests: r.requests });
    }
    if r.latency.count() != r.requests {
        return Err(SlaProblem::LatencyCount { latencies: r.latency.count(), requests: r.requests });
    }
    if let Some(e) = r.exemplars.iter().find(|e| !is_trace_id(&e.trace_id)) {
        return Err(SlaProblem::BadTraceId(e.trace_id.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: u8, latency_ns: u64, error: bool) -> Exemplar {
        Exemplar { trace_id: format!("{n:032x}"), latency_ns, error }
    }

    #[test]
    fn observing_keeps_exactly_what_bounding_everything_keeps() {
        // Pseudo-random latencies with many ties, failures and repeated trace ids.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..50 {
            let mut record = SlaRecord::new("t", "", "", OffsetDateTime::UNIX_EPOCH);
            let mut everything = Vec::new();
            for _ in 0..200 {
                let e = ex(next(40) as u8 + 1, next(30) * 10, next(4) == 0);
                record.observe(e.latency_ns, e.error, &e.trace_id);
                everything.push(e);
            }
            bound_exemplars(&mut everything);
            assert_eq!(record.exemplars, everything);
        }
    }

    #[test]
    fn slowest_and_failed_survive_in_any_merge_order() {
        let all = vec![
            ex(1, 100, false),
            ex(2, 900, false),
            ex(3, 50, true),
            ex(4, 900, true),
            ex(5, 700, false),
            ex(6, 10, true),
            ex(7, 5, true),
            ex(8, 900, false),
        ];
        let mut want = all.clone();
        bound_exemplars(&mut want);
        // Slowest three (900 ×3, greater trace id first), then the failed beyond them: 50, 10.
        assert_eq!(
            want,
            vec![ex(8, 900, false), ex(4, 900, true), ex(2, 900, false), ex(3, 50, true), ex(6, 10, true)]
        );
        let t = OffsetDateTime::UNIX_EPOCH;
        for split in 0..all.len() {
            let (mut a, mut b) = (SlaRecord::new("t", "", "", t), SlaRecord::new("t", "", "", t));
            for (i, e) in all.iter().enumerate() {
                let r = if (i + split) % 3 == 0 { &mut a } else { &mut b };
                r.observe(e.latency_ns, e.error, &e.trace_id);
            }
            let mut ab = a.clone();
            ab.merge(&b);
            b.merge(&a);
            assert_eq!(ab, b);
            assert_eq!(ab.exemplars, want);
            assert_eq!((ab.requests, ab.errors), (8, 4));
        }
    }

    #[test]
    fn checks() {
        let t = OffsetDateTime::UNIX_EPOCH;
        let mut r = SlaRecord::new("acme", "api", "/", t);
        r.observe(1, true, &format!("{:032x}", 1));
        assert_eq!(check_sla_record(&r), Ok(()));
        assert!(!is_trace_id(&"0".repeat(32)) && !is_trace_id(&"A".repeat(32)));
        let bad = SlaRecord { errors: 2, ..r.clone() };
        assert_eq!(check_sla_record(&bad), Err(SlaProblem::ErrorsExceedRequests { errors: 2, requests: 1 }));
        let bad = SlaRecord { requests: 3, ..r.clone() };
        assert_eq!(check_sla_record(&bad), Err(SlaProblem::LatencyCount { latencies: 1, requests: 3 }));
        let bad = SlaRecord { route: "r".repeat(MAX_DIMENSION_LEN + 1), ..r.clone() };
        assert!(matches!(check_sla_record(&bad), Err(SlaProblem::TooLong { field: "route", .. })));
        let mut bad = r.clone();
        bad.exemplars[0].trace_id = "xyz".into();
        assert_eq!(check_sla_record(&bad), Err(SlaProblem::BadTraceId("xyz".into())));
        assert_eq!(r.error_ppm(), 1_000_000);
    }
}
