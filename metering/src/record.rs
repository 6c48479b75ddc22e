//! The usage record: one meter's value for one tenant, minute and set of dimensions,
//! and the batch identity that makes writing it idempotent.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use time::OffsetDateTime;

pub use crate::limits::{MAX_DIMENSION_LEN, MAX_TENANT_LEN, VALUE_SCALE};
use crate::meter::{Aggregation, Catalog};

/// Why a tenant id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// The id is empty.
    #[error("tenant id is empty")]
    Empty,
    /// The id is longer than [`MAX_TENANT_LEN`].
    #[error("tenant id is {len} bytes long; the limit is {MAX_TENANT_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The id contains a character outside `A-Z a-z 0-9 . _ : @ -`.
    #[error("tenant id {tenant:?} contains {ch:?}; allowed are letters, digits and . _ : @ -")]
    BadChar {
        /// The id as given.
        tenant: String,
        /// The first character that is not allowed.
        ch: char,
    },
}

/// Checks that `tenant` is a valid tenant id: 1 to 128 characters from
/// `A-Z a-z 0-9 . _ : @ -`. Ids are shown in invoices, URLs and file names, so
/// quotes, spaces and control characters are refused rather than escaped.
///
/// ```
/// use metering::record::validate_tenant;
/// assert!(validate_tenant("acme-prod").is_ok());
/// assert!(validate_tenant("x' OR 1=1 --").is_err());
/// ```
pub fn validate_tenant(tenant: &str) -> Result<(), TenantError> {
    if tenant.is_empty() {
        return Err(TenantError::Empty);
    }
    if tenant.len() > MAX_TENANT_LEN {
        return Err(TenantError::TooLong { len: tenant.len() });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-');
    match tenant.chars().find(|&c| !allowed(c)) {
        Some(ch) => Err(TenantError::BadChar { tenant: tenant.to_owned(), ch }),
        None => Ok(()),
    }
}

/// One measured quantity. Records with the same tenant, meter, minute and
/// dimensions in one batch are summed before they are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// The tenant billed for it.
    pub tenant: String,
    /// A meter from the [`Catalog`].
    pub meter: String,
    /// When it was used; stored in the UTC minute that contains it.
    pub time: OffsetDateTime,
    /// `service.name` of the producer, or empty.
    pub service: String,
    /// `http.route`, or empty.
    pub route: String,
    /// Further dimensions (custom meters' group-by attributes).
    pub dimensions: BTreeMap<String, String>,
    /// The quantity, in the meter's unit; never negative, at most 9 decimals.
    /// For a `unique_count` meter, 1.
    pub value: Decimal,
    /// The distinct value a `unique_count` meter counts (non-empty); empty for every other meter.
    pub unique: String,
}

impl UsageRecord {
    /// A record with no service, route or dimensions.
    pub fn new(tenant: &str, meter: &str, time: OffsetDateTime, value: Decimal) -> Self {
        Self {
            tenant: tenant.to_owned(),
            meter: meter.to_owned(),
            time,
            service: String::new(),
            route: String::new(),
            dimensions: BTreeMap::new(),
            value,
            unique: String::new(),
        }
    }

    /// Sets the distinct value a `unique_count` meter counts (and the value to 1).
    ///
    /// ```
    /// use metering::record::UsageRecord;
    /// let r = UsageRecord::new("acme", "active_users", time::OffsetDateTime::UNIX_EPOCH, 0.into()).with_unique("u-17");
    /// assert_eq!((r.unique.as_str(), r.value), ("u-17", 1.into()));
    /// ```
    pub fn with_unique(mut self, value: &str) -> Self {
        self.unique = value.to_owned();
        self.value = Decimal::ONE;
        self
    }

    /// Sets the service.
    pub fn with_service(mut self, service: &str) -> Self {
        self.service = service.to_owned();
        self
    }

    /// Sets the route.
    pub fn with_route(mut self, route: &str) -> Self {
        self.route = route.to_owned();
        self
    }
}

/// A batch of records from one source. `(source_id, seq)` is the batch's
/// identity: writing the same batch again (a retry after a timeout, a resend by
/// an agent) stores nothing new.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageBatch {
    /// Who produced the batch, stable across its retries (e.g. `agent:<id>:<boot>`).
    pub source_id: String,
    /// The batch's sequence number within its source.
    pub seq: u64,
    /// What the batch measured.
    pub records: Vec<UsageRecord>,
}

/// Why a record was refused; names the batch and the record's position in it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("batch {source_id}#{seq}, record {index}: {reason}")]
pub struct RecordError {
    /// The batch's source.
    pub source_id: String,
    /// The batch's sequence number.
    pub seq: u64,
    /// Index of the refused record in the batch.
    pub index: usize,
    /// What is wrong with it.
    pub reason: RecordProblem,
}

/// What is wrong with a record or batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordProblem {
    /// Bad tenant id.
    #[error(transparent)]
    Tenant(#[from] TenantError),
    /// The meter is not in the catalog.
    #[error("unknown meter {meter:?}; known meters: {known}")]
    UnknownMeter {
        /// The meter as given.
        meter: String,
        /// The catalog's meters.
        known: String,
    },
    /// Usage is never negative.
    #[error("value {0} is negative")]
    NegativeValue(Decimal),
    /// More fractional digits than the store keeps.
    #[error("value {0} has more than {VALUE_SCALE} decimal places")]
    TooPrecise(Decimal),
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
    /// The sum of the batch's records for one key overflows.
    #[error("the batch's values for one key sum past the largest storable value")]
    Overflow,
    /// A `unique_count` record without its distinct value, or another meter's record with one.
    #[error("meter {meter:?}: {reason}")]
    Unique {
        /// The record's meter.
        meter: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The batch has no source id.
    #[error("batch source id is empty")]
    EmptySource,
}

/// Checks one record against the catalog and the store's limits.
pub(crate) fn check_record(record: &UsageRecord, catalog: &Catalog) -> Result<(), RecordProblem> {
    validate_tenant(&record.tenant)?;
    let Some(meter) = catalog.get(&record.meter) else {
        return Err(RecordProblem::UnknownMeter { meter: record.meter.clone(), known: catalog.names() });
    };
    let unique = |reason| Err(RecordProblem::Unique { meter: record.meter.clone(), reason });
    match (meter.aggregation == Aggregation::UniqueCount, record.unique.is_empty()) {
        (true, true) => return unique("a unique_count record needs the value it counts"),
        (false, false) => return unique("only unique_count records carry a distinct value"),
        _ => {}
    }
    if record.value.is_sign_negative() && !record.value.is_zero() {
        return Err(RecordProblem::NegativeValue(record.value));
    }
    if record.value.normalize().scale() > VALUE_SCALE {
        return Err(RecordProblem::TooPrecise(record.value));
    }
    let secs = record.time.unix_timestamp();
    if !(0..=i64::from(u32::MAX)).contains(&secs) {
        return Err(RecordProblem::TimeOutOfRange(record.time));
    }
    let strings = [("service", &record.service), ("route", &record.route), ("unique value", &record.unique)];
    let dims = record.dimensions.iter().flat_map(|(k, v)| [("dimension key", k), ("dimension value", v)]);
    for (field, s) in strings.into_iter().chain(dims) {
        if s.len() > MAX_DIMENSION_LEN {
            return Err(RecordProblem::TooLong { field, len: s.len() });
        }
    }
    Ok(())
}

/// The start of the UTC minute containing `time`, in Unix seconds.
///
/// ```
/// use time::macros::datetime;
/// let t = datetime!(2026-01-31 23:59:59.999 UTC);
/// assert_eq!(metering::record::minute_of(t), datetime!(2026-01-31 23:59 UTC).unix_timestamp() as u32);
/// ```
pub fn minute_of(time: OffsetDateTime) -> u32 {
    // Checked by check_record: the time fits a u32 of seconds.
    (time.unix_timestamp().div_euclid(60) * 60) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn tenant_rules() {
        assert_eq!(validate_tenant(""), Err(TenantError::Empty));
        assert_eq!(validate_tenant(&"a".repeat(129)), Err(TenantError::TooLong { len: 129 }));
        assert!(validate_tenant(&"a".repeat(128)).is_ok());
        assert_eq!(
            validate_tenant("acme'; DROP TABLE usage"),
            Err(TenantError::BadChar { tenant: "acme'; DROP TABLE usage".into(), ch: '\'' })
        );
        assert!(validate_tenant("org:acme@eu-1_prod.x").is_ok());
    }

    #[test]
    fn record_checks() {
        let c = Catalog::builtin();
        let t = datetime!(2026-03-01 00:00 UTC);
        let ok = UsageRecord::new("t1", "spans", t, Decimal::from(3));
        assert_eq!(check_record(&ok, &c), Ok(()));
        let bad_meter = UsageRecord { meter: "spanz".into(), ..ok.clone() };
        assert!(matches!(check_record(&bad_meter, &c), Err(RecordProblem::UnknownMeter { .. })));
        let neg = UsageRecord { value: Decimal::from(-1), ..ok.clone() };
        assert_eq!(check_record(&neg, &c), Err(RecordProblem::NegativeValue(Decimal::from(-1))));
        let fine = UsageRecord { value: "0.000000001".parse().unwrap(), ..ok.clone() };
        assert_eq!(check_record(&fine, &c), Ok(()));
        let too_fine: Decimal = "0.0000000001".parse().unwrap();
        let precise = UsageRecord { value: too_fine, ..ok.clone() };
        assert_eq!(check_record(&precise, &c), Err(RecordProblem::TooPrecise(too_fine)));
        let old = UsageRecord { time: datetime!(1969-12-31 23:59 UTC), ..ok.clone() };
        assert!(matches!(check_record(&old, &c), Err(RecordProblem::TimeOutOfRange(_))));
        let long = ok.clone().with_service(&"s".repeat(1025));
        assert_eq!(check_record(&long, &c), Err(RecordProblem::TooLong { field: "service", len: 1025 }));
    }

    #[test]
    fn minutes_floor_in_utc() {
        assert_eq!(minute_of(datetime!(2026-02-28 23:59:59.999999999 UTC)), 1772323140);
        assert_eq!(minute_of(datetime!(2026-03-01 01:00:00 +01:00)), 1772323200);
    }
}
