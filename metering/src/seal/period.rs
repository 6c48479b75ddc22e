//! A sealed month as `periods` records it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::rollup::Sealed;

/// A sealed month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// `YYYY-MM`.
    pub month: String,
    /// The snapshot's id in `sealed_usage`.
    pub seal_id: String,
    /// Collapsed usage rows in the snapshot.
    pub rows: u64,
    /// Collapsed SLA rows in the snapshot.
    pub sla_rows: u64,
    /// SHA-256 of the canonical text of the rows and `previous_digest`.
    pub digest: String,
    /// The digest of the previous sealed month (64 zeros for the first).
    pub previous_digest: String,
    /// When it was sealed.
    #[serde(with = "time::serde::rfc3339")]
    pub sealed_at: OffsetDateTime,
    /// Written with its daily usage and hourly SLA roll-ups (every seal since migration 5).
    pub rollups: bool,
}

impl Period {
    /// What a read of this month takes instead of live rows.
    pub fn sealed(&self) -> Sealed {
        Sealed { seal_id: self.seal_id.clone(), rollups: self.rollups }
    }
}
