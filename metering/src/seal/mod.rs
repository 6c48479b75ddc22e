//! Sealed months: a month's usage frozen into a snapshot and digested into a hash
//! chain, so that billed usage can be verified later and late data never changes
//! a billed month silently.
//!
//! Sealing month M copies M's *collapsed* usage and SLA rows (one per row key,
//! batch identity included: what every read keeps) into `sealed_usage` and
//! `sealed_sla` under a new seal id, reads the snapshot back and digests it
//! ([`digest`]: a canonical text of the rows and the previous seal's digest,
//! SHA-256), then records the seal in `periods`. Verifying recomputes the digest
//! from the snapshot and checks the chain link. Invoices and reports of a sealed
//! month read the snapshot (usage, and the availability its credits follow); usage
//! that arrives for it later (rows whose key is not in the snapshot) is priced as
//! an adjustment on the next month's invoice.
//!
//! ```
//! use metering::seal::digest::{digest, SealedRow, GENESIS};
//! let row = SealedRow { tenant: "acme".into(), meter: "spans".into(), window_start: 1_793_491_200,
//!     value: "12.5".parse().unwrap(), unit: "count".into(), source_id: "agent-a:1".into(), batch_seq: 7, ..Default::default() };
//! let d = digest("2026-11", GENESIS, &[row.clone()], &[]);
//! assert_eq!(d.len(), 64);
//! assert_ne!(d, digest("2026-11", GENESIS, &[], &[]));
//! assert_eq!(d, digest("2026-11", GENESIS, &[row], &[]));
//! ```

pub mod digest;
pub mod period;
pub mod rollup;
pub mod schema;
pub mod store;
pub mod verified;

pub use store::{period, seal, verify, Period, SealError, TenantRows, Verification};
