//! SLA credits: the share of a month's fee a tenant gets back when the achieved
//! availability falls below a band of the plan's credit table.
//!
//! Availability is `(requests − errors) / requests` over the month, from the `sla`
//! table; a month without requests has nothing to fall short of and earns no
//! credit. Comparisons are exact (integer cross-multiplication), never on a
//! rounded percentage: 99.9 % of 1,000,000 requests is met by exactly 999,000
//! good ones.

use rust_decimal::Decimal;

/// One band of the credit table: below `below` percent availability, `percent` of the fee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditBand {
    /// Availability (percent) under which the band applies; the band does not apply at exactly this value.
    pub below: Decimal,
    /// Share of the month's fee credited, in percent.
    pub percent: Decimal,
}

/// A month's requests and failed requests for one tenant (every service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Availability {
    /// Requests served.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
}

impl Availability {
    /// Whether availability is strictly below `percent`. No requests: never below.
    ///
    /// ```
    /// use metering::pricing::credit::Availability;
    /// let a = Availability { requests: 1_000_000, errors: 1_000 };
    /// assert!(!a.is_below("99.9".parse().unwrap()));
    /// assert!(a.is_below("99.95".parse().unwrap()));
    /// ```
    pub fn is_below(&self, percent: Decimal) -> bool {
        if self.requests == 0 {
            return false;
        }
        let good = Decimal::from(self.requests.saturating_sub(self.errors));
        // good / requests < percent / 100  ⇔  good × 100 < percent × requests (requests > 0).
        match (good.checked_mul(Decimal::ONE_HUNDRED), percent.checked_mul(Decimal::from(self.requests))) {
            (Some(lhs), Some(rhs)) => lhs < rhs,
            _ => false,
        }
    }

    /// Availability in percent rounded half away from zero to 4 decimals, without
    /// trailing zeros (99.8, not 99.80), for display only (credits never use it);
    /// `None` without requests.
    pub fn percent(&self) -> Option<Decimal> {
        if self.requests == 0 {
            return None;
        }
        let good = Decimal::from(self.requests.saturating_sub(self.errors)) * Decimal::ONE_HUNDRED;
        Some(
            (good / Decimal::from(self.requests))
                .round_dp_with_strategy(4, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
                .normalize(),
        )
    }
}

/// The band that applies: the one with the lowest `below` that availability is
/// under (bands are listed from the highest `below` down, with rising percents, so
/// it is the last matching one). `None`: no credit.
///
/// ```
/// use metering::pricing::credit::{credit_band, Availability, CreditBand};
/// let table = [
///     CreditBand { below: "99.9".parse().unwrap(), percent: 10.into() },
///     CreditBand { below: 99.into(), percent: 25.into() },
/// ];
/// let month = Availability { requests: 1000, errors: 5 }; // 99.5 %
/// assert_eq!(credit_band(&table, &month).map(|b| b.percent), Some(10.into()));
/// ```
pub fn credit_band<'t>(table: &'t [CreditBand], availability: &Availability) -> Option<&'t CreditBand> {
    table.iter().filter(|b| availability.is_below(b.below)).min_by(|a, b| a.below.cmp(&b.below))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<CreditBand> {
        vec![
            CreditBand { below: "99.9".parse().unwrap(), percent: 10.into() },
            CreditBand { below: 99.into(), percent: 25.into() },
            CreditBand { below: 95.into(), percent: 100.into() },
        ]
    }

    fn percent(requests: u64, errors: u64) -> Option<Decimal> {
        credit_band(&table(), &Availability { requests, errors }).map(|b| b.percent)
    }

    #[test]
    fn bands_apply_strictly_below_their_bound() {
        assert_eq!(percent(0, 0), None);
        assert_eq!(percent(1000, 0), None);
        assert_eq!(percent(1000, 1), None); // 99.9 exactly meets the target
        assert_eq!(percent(10_000, 11), Some(10.into())); // 99.89
        assert_eq!(percent(100, 1), Some(10.into())); // 99.0 exactly: not below 99
        assert_eq!(percent(1000, 11), Some(25.into())); // 98.9
        assert_eq!(percent(100, 5), Some(25.into())); // 95.0 exactly
        assert_eq!(percent(1000, 51), Some(100.into())); // 94.9
        assert_eq!(percent(3, 3), Some(100.into()));
        // More errors than requests cannot happen; if it did, availability is 0, not negative.
        assert_eq!(percent(3, 7), Some(100.into()));
    }

    #[test]
    fn display_percent_is_rounded_but_comparison_is_exact() {
        let a = Availability { requests: 3, errors: 1 };
        assert_eq!(a.percent(), Some("66.6667".parse().unwrap()));
        assert!(a.is_below("66.66667".parse().unwrap()));
        assert!(!a.is_below("66.66666".parse().unwrap()));
        assert_eq!(Availability::default().percent(), None);
        assert_eq!(Availability { requests: 1000, errors: 2 }.percent().map(|p| p.to_string()), Some("99.8".into()));
    }
}
