//! The plans file: plans (per-meter allowances, tiers and prices, a base fee,
//! SLO targets and the credit table), tax regions, dated conversion rates and
//! which tenant is on which plan when. Everything is checked at load; a bad file
//! is refused with its path, the line of the offending key and the reason.
//!
//! Numbers are read from their text (`0.8` is exactly 0.8, never a float); `_`
//! may group digits (`500_000`). Dates are `YYYY-MM-DD` (UTC days).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Deserialize;
use time::Date;

use super::credit::CreditBand;
use super::money::Currency;
use super::tiers::{Tier, TierMode};
use super::BillingMonth;

/// Over what a meter's allowance and tiers count usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// The month's usage (under the plan); the allowance is prorated when the
    /// plan covers part of the month.
    Month,
    /// Each UTC day's usage on its own: the allowance is per day and tiers restart daily.
    Day,
}

impl Period {
    /// `month` or `day`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Period::Month => "month",
            Period::Day => "day",
        }
    }
}

/// How one meter is priced under a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterPrice {
    /// Free units per period, taken before any tier.
    pub allowance: Decimal,
    /// What the allowance and tiers count over.
    pub period: Period,
    /// Graduated or volume.
    pub mode: TierMode,
    /// Tier prices are per this many units (`0.8` per `10000`): quantity × price / per.
    pub per: Decimal,
    /// At least one; all but the last bounded, bounds strictly increasing.
    pub tiers: Vec<Tier>,
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Its name in the file.
    pub name: String,
    /// The currency of its prices and fee.
    pub currency: Currency,
    /// Fixed fee per month, prorated by the days of the month the plan is in effect.
    pub base_fee: Decimal,
    /// Priced meters; usage of other meters is not charged under this plan.
    pub meters: BTreeMap<String, MeterPrice>,
    /// Target monthly availability, percent (reported; credits follow `credits`).
    pub slo_availability: Option<Decimal>,
    /// Target p99 latency in milliseconds (reported by SLA reports; earns no credit).
    pub slo_p99_ms: Option<u64>,
    /// Credit table, highest `below` first, percents rising.
    pub credits: Vec<CreditBand>,
}

/// A tax region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Tax in percent of the subtotal.
    pub tax_percent: Decimal,
}

/// One dated conversion rate: 1 `from` = `rate` `to`, from `date` on (until a later rate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// First day the rate applies.
    pub date: Date,
    /// The plan's currency.
    pub from: Currency,
    /// The invoice's currency.
    pub to: Currency,
    /// Units of `to` per unit of `from`.
    pub rate: Decimal,
}

/// One plan assignment: `plan` from `from` (inclusive) until `until` (exclusive, open when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The plan's name.
    pub plan: String,
    /// First day.
    pub from: Date,
    /// Day after the last, if it ends.
    pub until: Option<Date>,
}

/// A tenant's billing: region, invoice currency and plans over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantBilling {
    /// Key into [`PriceBook::regions`].
    pub region: String,
    /// The invoice currency: as set, else the currency of the tenant's plans.
    pub currency: Currency,
    /// Non-overlapping, in date order.
    pub assignments: Vec<Assignment>,
}

/// A plan in effect over whole days of a month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'b> {
    /// The plan.
    pub plan: &'b Plan,
    /// First day, inclusive.
    pub from: Date,
    /// Day after the last.
    pub until: Date,
}

impl Segment<'_> {
    /// Days covered.
    pub fn days(&self) -> u32 {
        (self.until - self.from).whole_days() as u32
    }
}

/// A checked plans file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceBook {
    /// Plans by name.
    pub plans: BTreeMap<String, Plan>,
    /// Tax regions by name.
    pub regions: BTreeMap<String, Region>,
    /// Conversion rates, by date within each currency pair.
    pub rates: Vec<Rate>,
    /// Tenants by id.
    pub tenants: BTreeMap<String, TenantBilling>,
}

impl PriceBook {
    /// The rate converting `from` into `to` on `day`: the latest one dated on or before it.
    pub fn rate(&self, from: Currency, to: Currency, day: Date) -> Option<&Rate> {
        self.rates.iter().filter(|r| r.from == from && r.to == to && r.date <= day).max_by_key(|r| r.date)
    }

    /// The plans in effect for `tenant` during `month`, clipped to it, in date order.
    pub fn segments(&self, tenant: &TenantBilling, month: BillingMonth) -> Vec<Segment<'_>> {
        let (start, end) = (month.first_day(), month.end());
        tenant
            .assignments
            .iter()
            .filter_map(|a| {
                let from = a.from.max(start);
                let until = a.until.map_or(end, |u| u.min(end));
                let plan = self.plans.get(&a.plan)?;
                (from < until).then_some(Segment { plan, from, until })
            })
            .collect()
    }
}
