//! SLA aggregates: per tenant × service × route × UTC minute, the requests, the
//! errors, a mergeable latency distribution ([`LatencySketch`], within 1/256
//! relative error) and exemplar traces of the slowest and failed requests.
//! Monthly SLA reports read availability and p50/p90/p95/p99 from them.
//!
//! ```
//! use metering::sla::SlaRecord;
//! let mut r = SlaRecord::new("acme", "checkout", "/pay", time::OffsetDateTime::UNIX_EPOCH);
//! for ms in 1..=1000u64 {
//!     r.observe(ms * 1_000_000, ms % 100 == 0, "");
//! }
//! assert_eq!((r.requests, r.errors), (1000, 10));
//! let p50 = r.latency.quantile(0.5).unwrap();
//! assert!(p50.abs_diff(500_000_000) * 256 <= 500_000_000);
//! ```

pub mod encode;
pub mod query;
pub mod record;
pub mod schema;
pub mod sketch;

pub use encode::encode_sla_batch;
pub use query::{query_sla, SlaGrouping, SlaPoint, SlaQuery};
pub use record::{Exemplar, SlaError, SlaProblem, SlaRecord};
pub use schema::{insert_sla, SLA_ROW};
pub use sketch::LatencySketch;
