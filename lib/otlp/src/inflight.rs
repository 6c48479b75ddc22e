//! A receiver's budget of request bytes in memory at once.
//!
//! Each request is bounded by `max_request_bytes` (before and after inflating), but without a
//! bound on how many are read, inflated and decoded at once, a hundred concurrent 64 MiB uploads
//! hold 6.4 GB. Every request reserves what it holds from one budget shared by both transports:
//! the body as it is read (its `Content-Length` up front when it gives one), then the inflated
//! buffer as it grows, capacity included. The compressed bytes are given back once inflated. A
//! request the budget cannot take is refused at once with the retryable status (UNAVAILABLE with
//! RetryInfo, 503 with `Retry-After`): nothing waits for room, so nothing blocks unboundedly and
//! the sender keeps its data.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Default budget, 256 MiB: four requests of the default 64 MiB limit, or two compressed ones
/// while they inflate (each holds its compressed and its inflated bytes then); an SDK's export is
/// well under 1 MiB and an agent's batch 4 MiB, so hundreds of ordinary requests fit at once.
/// What a request costs beyond its bytes (decoded OTLP/JSON, the consumer's own work) is not
/// counted: the budget bounds the receiver's buffers, not the process.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 256 << 20;

/// How long a sender refused for want of budget is told to wait: requests in flight finish
/// within moments, and waiting longer would only delay data the receiver could take.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why limits cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A single request of the largest size could never be taken, and being refused with a
    /// retryable status it would be retried for ever.
    #[error(
        "the in-flight budget ({max_inflight_bytes} bytes) must be at least twice the request limit \
         ({max_request_bytes} bytes): a compressed request of the largest size holds both its compressed and its \
         inflated bytes while it inflates"
    )]
    BudgetTooSmall {
        /// The budget.
        max_inflight_bytes: usize,
        /// The request limit.
        max_request_bytes: usize,
    },
}

/// What a receiver takes: the size of one request and the bytes of all in flight.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request, before and after decompression.
    pub max_request_bytes: usize,
    /// The budget of bytes in flight; clones share it.
    pub inflight: InFlight,
}

impl Limits {
    /// Limits of `max_request_bytes` per request and `max_inflight_bytes` in all.
    pub fn new(max_request_bytes: usize, max_inflight_bytes: usize) -> Result<Self, LimitsError> {
        if max_inflight_bytes / 2 < max_request_bytes {
            return Err(LimitsError::BudgetTooSmall { max_inflight_bytes, max_request_bytes });
        }
        Ok(Self { max_request_bytes, inflight: InFlight::new(max_inflight_bytes) })
    }

    /// `max_request_bytes` per request, with the default budget (raised to twice the request
    /// limit when that is larger).
    pub fn with_default_budget(max_request_bytes: usize) -> Self {
        let budget = DEFAULT_MAX_INFLIGHT_BYTES.max(max_request_bytes.saturating_mul(2));
        Self { max_request_bytes, inflight: InFlight::new(budget) }
    }
}

/// A budget of bytes in flight; clones share it.
#[derive(Debug, Clone)]
pub struct InFlight(Arc<Budget>);

#[derive(Debug)]
struct Budget {
    max: usize,
    used: AtomicUsize,
    refused: AtomicU64,
}

impl InFlight {
    /// A budget of `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self(Arc::new(Budget { max: max_bytes, used: AtomicUsize::new(0), refused: AtomicU64::new(0) }))
    }

    /// The budget.
    pub fn max_bytes(&self) -> usize {
        self.0.max
    }

    /// Bytes reserved by requests in flight now.
    pub fn bytes(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    /// Requests refused because the budget could not take them.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn count_refusal(&self) {
        self.0.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// An empty reservation for one request.
    pub(crate) fn reservation(&self) -> Reservation {
        Reservation { budget: self.clone(), bytes: 0 }
    }
}

/// On `/metrics`, read from the budget at each scrape: `<prefix>_inflight_bytes` and
/// `<prefix>_inflight_refused_total`. Both binaries register it as it is.
impl prometheus_client::collector::Collector for InFlight {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::{counter::ConstCounter, gauge::ConstGauge};
        let bytes = ConstGauge::new(i64::try_from(self.bytes()).unwrap_or(i64::MAX));
        bytes.encode(encoder.encode_descriptor(
            "inflight_bytes",
            "Bytes of requests the OTLP receivers hold now, read or inflated",
            None,
            bytes.metric_type(),
        )?)?;
        let refused = ConstCounter::new(self.refused());
        refused.encode(encoder.encode_descriptor(
            "inflight_refused",
            "Requests refused (UNAVAILABLE / 503) because the receivers' budget of bytes in flight was full",
            None,
            refused.metric_type(),
        )?)
    }
}

/// The bytes one request holds; given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: InFlight,
    bytes: usize,
}

impl Reservation {
    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes `n` more bytes, or nothing (`false`) when the budget cannot give them.
    pub(crate) fn grow(&mut self, n: usize) -> bool {
        let b = &self.budget.0;
        let taken = b.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(n).filter(|&after| after <= b.max)
        });
        if taken.is_ok() {
            self.bytes += n;
        }
        taken.is_ok()
    }

    /// Holds at least `n` bytes in all, growing if needed; `false` when the budget cannot give them.
    pub(crate) fn hold(&mut self, n: usize) -> bool {
        n <= self.bytes || self.grow(n - self.bytes)
    }

    /// Gives back `n` bytes (no more than held).
    pub(crate) fn shrink(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.budget.0.used.fetch_sub(n, Ordering::Relaxed);
        self.bytes -= n;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shrink(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = InFlight::new(100);
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        assert!(a.grow(60));
        assert!(!b.grow(41), "over the budget: nothing taken");
        assert_eq!((budget.bytes(), b.bytes()), (60, 0));
        assert!(b.hold(40));
        assert!(b.hold(30), "already held");
        a.shrink(10);
        assert_eq!(budget.bytes(), 90);
        drop(a);
        drop(b);
        assert_eq!(budget.bytes(), 0);
    }

    #[test]
    fn the_budget_must_take_one_compressed_request_of_the_largest_size() {
        assert!(Limits::new(64 << 20, 128 << 20).is_ok());
        assert_eq!(
            Limits::new(64 << 20, (128 << 20) - 1).unwrap_err(),
            LimitsError::BudgetTooSmall { max_inflight_bytes: (128 << 20) - 1, max_request_bytes: 64 << 20 }
        );
        assert_eq!(Limits::with_default_budget(512 << 20).inflight.max_bytes(), 1 << 30);
    }
}
