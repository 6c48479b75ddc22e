//! The usage report: per tenant and meter, the value of each UTC day of the month
//! and the month's total.
//!
//! The total is the meter's roll-up over the month, not the sum of its days: for
//! `max` and `unique_count` meters the two differ (a user active on two days is one
//! unique user of the month). For `count` and `sum` meters it equals the sum of the
//! days. The agents' own books (`agent_*` meters) are left out: they are for
//! reconciliation, not usage; dropped and throttled volumes are shown.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;
use time::Date;

use super::{date_text, decimal_text};
use crate::pricing::BillingMonth;
use crate::store::rollup::UsagePoint;

/// One day's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayValue {
    /// The UTC day.
    #[serde(serialize_with = "date_text")]
    pub day: Date,
    /// Its usage (0 on a day without any).
    #[serde(serialize_with = "decimal_text")]
    pub value: Decimal,
}

/// One meter of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeterUsage {
    /// The meter.
    pub meter: String,
    /// Its unit.
    pub unit: String,
    /// The month's roll-up.
    #[serde(serialize_with = "decimal_text")]
    pub total: Decimal,
    /// Every day of the month, in order.
    pub daily: Vec<DayValue>,
}

/// One tenant's month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantUsage {
    /// The tenant.
    pub tenant: String,
    /// Its meters with any usage, by name.
    pub meters: Vec<MeterUsage>,
}

/// The usage report of a month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// `YYYY-MM`.
    pub month: String,
    /// The month's seal digest when it is sealed: the report reads its snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed_digest: Option<String>,
    /// Tenants with usage, by name.
    pub tenants: Vec<TenantUsage>,
}

/// Whether a meter belongs in a usage report.
pub fn reported(meter: &str) -> bool {
    !meter.starts_with("agent_")
}

/// The report from the month's day roll-up (`days`) and month roll-up (`totals`)
/// of the same usage, per tenant and meter (not grouped by service).
///
/// ```
/// use metering::pricing::BillingMonth;
/// use metering::report::usage::build;
/// let report = build(BillingMonth::parse("2026-02").unwrap(), &[], &[]);
/// assert_eq!((report.month.as_str(), report.tenants.len()), ("2026-02", 0));
/// ```
pub fn build(month: BillingMonth, days: &[UsagePoint], totals: &[UsagePoint]) -> UsageReport {
    let mut tenants: BTreeMap<&str, BTreeMap<&str, MeterUsage>> = BTreeMap::new();
    let all_days: Vec<Date> =
        std::iter::successors(Some(month.first_day()), |d| d.next_day()).take_while(|d| *d < month.end()).collect();
    for p in totals.iter().filter(|p| reported(&p.meter)) {
        let daily = all_days.iter().map(|&day| DayValue { day, value: Decimal::ZERO }).collect();
        let meter = MeterUsage { meter: p.meter.clone(), unit: p.unit.clone(), total: p.value, daily };
        tenants.entry(&p.tenant).or_default().insert(&p.meter, meter);
    }
    for p in days.iter().filter(|p| reported(&p.meter)) {
        // A day with usage has a month total too; both reads see the same rows.
        if let Some(m) = tenants.get_mut(p.tenant.as_str()).and_then(|t| t.get_mut(p.meter.as_str())) {
            if let Some(slot) = m.daily.iter_mut().find(|d| d.day == p.start.date()) {
                slot.value = p.value;
            }
        }
    }
    UsageReport {
        month: month.to_string(),
        sealed_digest: None,
        tenants: tenants
            .into_iter()
            .map(|(tenant, meters)| TenantUsage { tenant: tenant.to_owned(), meters: meters.into_values().collect() })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rollup::UsageKey;
    use time::macros::datetime;

    fn point(meter: &str, start: time::OffsetDateTime, end: time::OffsetDateTime, value: u64) -> UsagePoint {
        UsagePoint {
            tenant: "acme".into(),
            meter: meter.into(),
            service: None,
            dimensions: None,
            start,
            end,
            value: value.into(),
            unit: "count".into(),
            key: UsageKey {
                tenant: "acme".into(),
                meter: meter.into(),
                bucket: start.unix_timestamp() as u32,
                service: String::new(),
                dimensions: String::new(),
            },
        }
    }

    #[test]
    fn month_totals_are_the_month_roll_up_not_the_sum_of_days() {
        let (nov, dec) = (datetime!(2026-11-01 00:00 UTC), datetime!(2026-12-01 00:00 UTC));
        let day = |d: u8| datetime!(2026-11-01 00:00 UTC).replace_day(d).unwrap();
        // 3 unique users on the 2nd and 4 on the 3rd, 5 over the month (some came back).
        let days = [
            point("active_users", day(2), day(3), 3),
            point("active_users", day(3), day(4), 4),
            point("agent_accepted_spans", day(2), day(3), 9),
        ];
        let totals = [point("active_users", nov, dec, 5), point("agent_accepted_spans", nov, dec, 9)];
        let report = build(BillingMonth::parse("2026-11").unwrap(), &days, &totals);
        let m = &report.tenants[0].meters;
        assert_eq!(m.len(), 1, "the agents' books are left out");
        assert_eq!((m[0].total, m[0].daily.len()), (5.into(), 30));
        let nonzero: Vec<(u8, Decimal)> =
            m[0].daily.iter().filter(|d| !d.value.is_zero()).map(|d| (d.day.day(), d.value)).collect();
        assert_eq!(nonzero, [(2, 3.into()), (3, 4.into())]);
    }
}
