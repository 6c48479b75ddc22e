//! Pricing a tenant's month: a pure function from the plans file, the month's
//! usage and its availability to an itemized invoice. Reading usage from
//! ClickHouse is [`super::store`]'s job.
//!
//! The rules (docs/plans.md):
//! - Usage is priced by the plan in effect on the UTC day it was metered; plan
//!   assignments change at midnight UTC.
//! - A monthly allowance and the base fee are prorated by the days of the month
//!   the plan is in effect (`days / days in month`; the allowance then rounded half
//!   away from zero to a whole unit). A daily allowance applies to each day in full.
//!   Tier bounds are not prorated.
//! - Each tier's amount is quantity × price / per in the plan's currency, converted
//!   at the plan's rate into the invoice's currency, then rounded (half away from
//!   zero, ISO 4217 minor units). Lines, charges and totals are sums of rounded
//!   amounts; the SLA credit (per plan, a percentage of that plan's charges) and the
//!   tax (a percentage of the subtotal) are rounded once each.
//! - subtotal = charges − SLA credit; total = subtotal + tax.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use time::Date;

use super::credit::{credit_band, Availability};
use super::money::{scale, Currency};
use super::month::ymd;
use super::plan::{MeterPrice, Period, PriceBook, Segment};
use super::tiers::{split, TierMode};
use super::BillingMonth;
use crate::meter::Catalog;

/// A month's usage of one tenant: per meter, per window of whole days (`from`
/// inclusive, `until` exclusive). Windows are what [`windows`] asks for: each
/// plan's whole span for monthly allowances, each day for daily ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    values: BTreeMap<(String, Date, Date), Decimal>,
}

impl Usage {
    /// No usage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the usage of `meter` over `[from, until)`.
    pub fn set(&mut self, meter: &str, from: Date, until: Date, value: Decimal) {
        self.values.insert((meter.to_owned(), from, until), value);
    }

    /// The usage of `meter` over `[from, until)`; zero when none was set.
    pub fn get(&self, meter: &str, from: Date, until: Date) -> Decimal {
        self.values.get(&(meter.to_owned(), from, until)).copied().unwrap_or_default()
    }
}

/// A window of usage an invoice needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window {
    /// First day.
    pub from: Date,
    /// Day after the last.
    pub until: Date,
    /// `Month`: one total over the window; `Day`: one value per day in it.
    pub by: Period,
}

/// Why a tenant's month cannot be invoiced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// The plans file has no such tenant.
    #[error("tenant {0:?} is not in the plans file")]
    UnknownTenant(String),
    /// No plan is in effect on any day of the month.
    #[error("tenant {tenant:?} has no plan in effect in {month}")]
    NoPlan {
        /// The tenant.
        tenant: String,
        /// The month.
        month: String,
    },
    /// A plan's currency differs from the invoice's and no rate applies.
    #[error("no {from}→{to} rate dated on or before {day} in the plans file (plan {plan:?})")]
    MissingRate {
        /// The plan's currency.
        from: Currency,
        /// The invoice's currency.
        to: Currency,
        /// The day the rate must apply on (the month's last).
        day: Date,
        /// The plan.
        plan: String,
    },
    /// An amount exceeds what a decimal holds.
    #[error("amount overflow pricing {0}")]
    Overflow(String),
}

impl InvoiceError {
    /// The tenant has no plan that month (none in the plans file, or none in effect): nothing
    /// to bill, where one tenant among many is read — not a failure.
    pub fn unplanned(&self) -> bool {
        matches!(self, Self::UnknownTenant(_) | Self::NoPlan { .. })
    }
}

/// What [`compute`] needs besides the plans: the usage and the month's availability.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Windows from [`windows`], filled.
    pub usage: &'a Usage,
    /// Requests and errors of the month, all services.
    pub availability: Availability,
    /// Meters, for their units.
    pub catalog: &'a Catalog,
}

/// The usage windows [`compute`] reads for `tenant` in `month`.
pub fn windows(book: &PriceBook, tenant: &str, month: BillingMonth) -> Result<Vec<Window>, InvoiceError> {
    let billing = book.tenants.get(tenant).ok_or_else(|| InvoiceError::UnknownTenant(tenant.to_owned()))?;
    let mut out = Vec::new();
    for s in book.segments(billing, month) {
        out.push(Window { from: s.from, until: s.until, by: Period::Month });
        if s.plan.meters.values().any(|m| m.period == Period::Day) {
            out.push(Window { from: s.from, until: s.until, by: Period::Day });
        }
    }
    Ok(out)
}

fn decimal_text<S: Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn opt_decimal_text<S: Serializer>(v: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

fn date_text<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ymd(*d))
}

fn currency_code<S: Serializer>(c: &Currency, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.code())
}

/// A conversion applied to a plan's amounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conversion {
    /// The plan's currency.
    #[serde(serialize_with = "currency_code")]
    pub from: Currency,
    /// The invoice's currency.
    #[serde(serialize_with = "currency_code")]
    pub to: Currency,
    /// 1 `from` = `rate` `to`.
    #[serde(serialize_with = "decimal_text")]
    pub rate: Decimal,
    /// The date of the rate used.
    #[serde(serialize_with = "date_text")]
    pub date: Date,
}

/// A plan in effect during part or all of the month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanPeriod {
    /// The plan.
    pub plan: String,
    /// First day.
    #[serde(serialize_with = "date_text")]
    pub from: Date,
    /// Day after the last.
    #[serde(serialize_with = "date_text")]
    pub until: Date,
    /// Days in effect.
    pub days: u32,
    /// Days in the month.
    pub month_days: u32,
    /// The currency the plan's prices are in.
    #[serde(serialize_with = "currency_code")]
    pub price_currency: Currency,
    /// How its amounts became the invoice's currency, if they did.
    pub conversion: Option<Conversion>,
}

/// One tier's share of a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierLine {
    /// Billable quantity above which the tier starts.
    #[serde(serialize_with = "decimal_text")]
    pub from: Decimal,
    /// Inclusive upper bound, `null` for the last tier.
    #[serde(serialize_with = "opt_decimal_text")]
    pub up_to: Option<Decimal>,
    /// Units priced by this tier.
    #[serde(serialize_with = "decimal_text")]
    pub quantity: Decimal,
    /// Price per `per` units, in the plan's currency.
    #[serde(serialize_with = "decimal_text")]
    pub unit_price: Decimal,
    /// Rounded, in the invoice's currency.
    #[serde(serialize_with = "decimal_text")]
    pub amount: Decimal,
}

/// What a line charges for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A meter's usage.
    Usage,
    /// The plan's fixed fee.
    BaseFee,
}

/// One line of the invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// The plan it is charged under.
    pub plan: String,
    /// The first day of that plan's period (a plan can return within a month).
    #[serde(serialize_with = "date_text")]
    pub plan_from: Date,
    /// Usage or base fee.
    pub kind: LineKind,
    /// The meter (usage lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter: Option<String>,
    /// The meter's unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Over what allowance and tiers count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// Metered usage under the plan.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_decimal_text")]
    pub usage: Option<Decimal>,
    /// Free units available (prorated monthly, or per day × days).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_decimal_text")]
    pub allowance: Option<Decimal>,
    /// Free units used.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_decimal_text")]
    pub free: Option<Decimal>,
    /// usage − free.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_decimal_text")]
    pub billable: Option<Decimal>,
    /// Graduated or volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pricing: Option<TierMode>,
    /// Tier prices are per this many units.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_decimal_text")]
    pub per: Option<Decimal>,
    /// Every tier, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierLine>,
    /// The monthly fee before proration, in the plan's currency (base fee lines).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_decimal_text")]
    pub fee: Option<Decimal>,
    /// Rounded, in the invoice's currency: the sum of the tiers' amounts, or the prorated fee.
    #[serde(serialize_with = "decimal_text")]
    pub amount: Decimal,
}

/// The month's availability, as the credits read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlaSummary {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Percent, rounded to 4 decimals for reading; `null` without requests.
    #[serde(serialize_with = "opt_decimal_text")]
    pub availability_percent: Option<Decimal>,
}

/// An SLA credit under one plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credit {
    /// The plan whose credit table applied.
    pub plan: String,
    /// The first day of that plan's period.
    #[serde(serialize_with = "date_text")]
    pub plan_from: Date,
    /// The plan's availability target, percent.
    #[serde(serialize_with = "opt_decimal_text")]
    pub target: Option<Decimal>,
    /// The band: availability was below this percent...
    #[serde(serialize_with = "decimal_text")]
    pub below: Decimal,
    /// ...so this percent of the plan's charges is credited.
    #[serde(serialize_with = "decimal_text")]
    pub percent: Decimal,
    /// The plan's charges this month.
    #[serde(serialize_with = "decimal_text")]
    pub charges: Decimal,
    /// Rounded.
    #[serde(serialize_with = "decimal_text")]
    pub amount: Decimal,
}

/// Usage of a sealed month that arrived after its seal, priced as that month's
/// plans price it and charged on a later invoice: the difference between the
/// sealed month's line with and without the late usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adjustment {
    /// The sealed month the usage belongs to, `YYYY-MM`.
    pub month: String,
    /// The plan that prices it.
    pub plan: String,
    /// The first day of that plan's period.
    #[serde(serialize_with = "date_text")]
    pub plan_from: Date,
    /// The meter.
    pub meter: String,
    /// Its unit.
    pub unit: Option<String>,
    /// The late usage: the month's usage now minus the sealed usage.
    #[serde(serialize_with = "decimal_text")]
    pub late_usage: Decimal,
    /// The month's line priced with the late usage minus the sealed line (rounded amounts, so exact).
    #[serde(serialize_with = "decimal_text")]
    pub amount: Decimal,
}

/// The adjustments between a sealed month's invoice and the same month priced from
/// live usage (the sealed usage and the late rows): one per usage line that changed.
pub fn adjustments(sealed: &Invoice, live: &Invoice) -> Vec<Adjustment> {
    live.lines
        .iter()
        .filter(|l| l.kind == LineKind::Usage)
        .filter_map(|l| {
            let before = sealed.lines.iter().find(|s| {
                s.kind == LineKind::Usage && s.plan == l.plan && s.plan_from == l.plan_from && s.meter == l.meter
            });
            let (usage, amount) =
                before.map_or((Decimal::ZERO, Decimal::ZERO), |s| (s.usage.unwrap_or_default(), s.amount));
            let late_usage = l.usage.unwrap_or_default() - usage;
            let delta = l.amount - amount;
            (!late_usage.is_zero() || !delta.is_zero()).then(|| Adjustment {
                month: live.month.clone(),
                plan: l.plan.clone(),
                plan_from: l.plan_from,
                meter: l.meter.clone().unwrap_or_default(),
                unit: l.unit.clone(),
                late_usage: late_usage.normalize(),
                amount: delta,
            })
        })
        .collect()
}

/// `invoice` with `adjustments` charged: `charges` = lines + adjustments, then
/// subtotal, tax (rounded once) and total follow as always.
pub fn add_adjustments(mut invoice: Invoice, adjustments: Vec<Adjustment>) -> Result<Invoice, InvoiceError> {
    if adjustments.is_empty() {
        return Ok(invoice);
    }
    let currency = invoice.currency;
    invoice.charges = currency.round(invoice.charges + adjustments.iter().map(|a| a.amount).sum::<Decimal>());
    invoice.subtotal = invoice.charges - invoice.sla_credit;
    invoice.tax = scale(invoice.subtotal, invoice.tax_percent, Decimal::ONE_HUNDRED)
        .map(|t| currency.round(t))
        .ok_or_else(|| InvoiceError::Overflow("tax".into()))?;
    invoice.total = invoice.subtotal + invoice.tax;
    invoice.adjustments = adjustments;
    Ok(invoice)
}

/// A priced month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    /// The tenant.
    pub tenant: String,
    /// `YYYY-MM`.
    pub month: String,
    /// The invoice's currency.
    #[serde(serialize_with = "currency_code")]
    pub currency: Currency,
    /// The tenant's tax region.
    pub region: String,
    /// Its tax, percent.
    #[serde(serialize_with = "decimal_text")]
    pub tax_percent: Decimal,
    /// The plans in effect, in date order.
    pub plans: Vec<PlanPeriod>,
    /// The charges.
    pub lines: Vec<Line>,
    /// The month's availability.
    pub sla: SlaSummary,
    /// SLA credits, one per plan whose table applied.
    pub credits: Vec<Credit>,
    /// The digest of the month's seal when it is sealed: its usage is the sealed snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed_digest: Option<String>,
    /// Late usage of the previous, sealed month (present only when there is some).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adjustments: Vec<Adjustment>,
    /// Sum of the lines' amounts (and of the adjustments').
    #[serde(serialize_with = "decimal_text")]
    pub charges: Decimal,
    /// Sum of the credits.
    #[serde(serialize_with = "decimal_text")]
    pub sla_credit: Decimal,
    /// charges − sla_credit.
    #[serde(serialize_with = "decimal_text")]
    pub subtotal: Decimal,
    /// subtotal × tax_percent / 100, rounded.
    #[serde(serialize_with = "decimal_text")]
    pub tax: Decimal,
    /// subtotal + tax.
    #[serde(serialize_with = "decimal_text")]
    pub total: Decimal,
}

/// Prices `tenant`'s `month`.
pub fn compute(
    book: &PriceBook,
    tenant: &str,
    month: BillingMonth,
    inputs: Inputs<'_>,
) -> Result<Invoice, InvoiceError> {
    let billing = book.tenants.get(tenant).ok_or_else(|| InvoiceError::UnknownTenant(tenant.to_owned()))?;
    let segments = book.segments(billing, month);
    if segments.is_empty() {
        return Err(InvoiceError::NoPlan { tenant: tenant.to_owned(), month: month.to_string() });
    }
    let currency = billing.currency;
    let tax_percent = book.regions[&billing.region].tax_percent;
    let month_days = Decimal::from(month.days());
    let overflow = |what: &str| InvoiceError::Overflow(what.to_owned());

    let (mut plans, mut lines, mut credits) = (Vec::new(), Vec::new(), Vec::new());
    for segment in &segments {
        let plan = segment.plan;
        let conversion = if plan.currency == currency {
            None
        } else {
            let day = month.last_day();
            let r = book.rate(plan.currency, currency, day).ok_or_else(|| InvoiceError::MissingRate {
                from: plan.currency,
                to: currency,
                day,
                plan: plan.name.clone(),
            })?;
            Some(Conversion { from: r.from, to: r.to, rate: r.rate, date: r.date })
        };
        let rate = conversion.as_ref().map_or(Decimal::ONE, |c| c.rate);
        let convert = |amount: Decimal, what: &str| {
            amount.checked_mul(rate).map(|a| currency.round(a)).ok_or_else(|| overflow(what))
        };
        let days = Decimal::from(segment.days());
        let first_line = lines.len();

        for (meter, price) in &plan.meters {
            let unit = inputs.catalog.get(meter).map(|m| m.unit.as_str().to_owned());
            let mut line =
                price_meter(meter, price, segment, inputs.usage, month_days).ok_or_else(|| overflow(meter))?;
            for tier in &mut line.tiers {
                tier.amount = convert(tier.amount, meter)?;
            }
            line.amount = line.tiers.iter().map(|t| t.amount).sum();
            line.plan = plan.name.clone();
            line.plan_from = segment.from;
            line.unit = unit;
            lines.push(line);
        }
        if !plan.base_fee.is_zero() {
            let prorated = scale(plan.base_fee, days, month_days).ok_or_else(|| overflow("base fee"))?;
            lines.push(Line {
                plan: plan.name.clone(),
                plan_from: segment.from,
                kind: LineKind::BaseFee,
                meter: None,
                unit: None,
                period: None,
                usage: None,
                allowance: None,
                free: None,
                billable: None,
                pricing: None,
                per: None,
                tiers: Vec::new(),
                fee: Some(plan.base_fee),
                amount: convert(prorated, "base fee")?,
            });
        }

        if let Some(band) = credit_band(&plan.credits, &inputs.availability) {
            let charges: Decimal = lines[first_line..].iter().map(|l| l.amount).sum();
            let amount = scale(charges, band.percent, Decimal::ONE_HUNDRED)
                .map(|a| currency.round(a))
                .ok_or_else(|| overflow("credit"))?;
            credits.push(Credit {
                plan: plan.name.clone(),
                plan_from: segment.from,
                target: plan.slo_availability,
                below: band.below,
                percent: band.percent,
                charges,
                amount,
            });
        }
        plans.push(PlanPeriod {
            plan: plan.name.clone(),
            from: segment.from,
            until: segment.until,
            days: segment.days(),
            month_days: month.days(),
            price_currency: plan.currency,
            conversion,
        });
    }

    let zero = currency.round(Decimal::ZERO);
    let charges = lines.iter().map(|l| l.amount).fold(zero, |a, b| a + b);
    let sla_credit = credits.iter().map(|c| c.amount).fold(zero, |a, b| a + b);
    let subtotal = charges - sla_credit;
    let tax =
        scale(subtotal, tax_percent, Decimal::ONE_HUNDRED).map(|t| currency.round(t)).ok_or_else(|| overflow("tax"))?;
    let a = inputs.availability;
    Ok(Invoice {
        tenant: tenant.to_owned(),
        month: month.to_string(),
        currency,
        region: billing.region.clone(),
        tax_percent,
        plans,
        lines,
        sla: SlaSummary { requests: a.requests, errors: a.errors, availability_percent: a.percent() },
        credits,
        sealed_digest: None,
        adjustments: Vec::new(),
        charges,
        sla_credit,
        subtotal,
        tax,
        total: subtotal + tax,
    })
}

/// A meter's line under one plan segment, with tier amounts exact in the plan's
/// currency (converted and rounded by the caller). `None` on overflow.
fn price_meter(
    meter: &str,
    price: &MeterPrice,
    segment: &Segment<'_>,
    usage: &Usage,
    month_days: Decimal,
) -> Option<Line> {
    // (usage, allowance, free, billable) and per tier (quantity, exact amount).
    let mut totals = [Decimal::ZERO; 4];
    let mut tiers = vec![(Decimal::ZERO, Decimal::ZERO); price.tiers.len()];
    let mut bill = |quantity: Decimal, allowance: Decimal| -> Option<()> {
        let free = quantity.min(allowance).max(Decimal::ZERO);
        let billable = quantity - free;
        for (slot, add) in totals.iter_mut().zip([quantity, allowance, free, billable]) {
            *slot = slot.checked_add(add)?;
        }
        for ((q, amount), (tier, part)) in
            tiers.iter_mut().zip(price.tiers.iter().zip(split(price.mode, &price.tiers, billable)))
        {
            *q = q.checked_add(part)?;
            *amount = amount.checked_add(scale(part, tier.price, price.per)?)?;
        }
        Some(())
    };
    match price.period {
        Period::Month => {
            let days = Decimal::from(segment.days());
            let allowance = if days == month_days {
                price.allowance
            } else {
                scale(price.allowance, days, month_days)?
                    .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            };
            bill(usage.get(meter, segment.from, segment.until), allowance)?;
        }
        Period::Day => {
            let mut day = segment.from;
            while day < segment.until {
                let next = day.next_day()?;
                bill(usage.get(meter, day, next), price.allowance)?;
                day = next;
            }
        }
    }
    let mut lower = Decimal::ZERO;
    let tier_lines = price
        .tiers
        .iter()
        .zip(tiers)
        .map(|(tier, (quantity, amount))| {
            let from = lower;
            lower = tier.up_to.unwrap_or(lower);
            TierLine { from, up_to: tier.up_to, quantity: quantity.normalize(), unit_price: tier.price, amount }
        })
        .collect();
    let [usage, allowance, free, billable] = totals.map(|d| d.normalize());
    Some(Line {
        plan: String::new(),
        plan_from: segment.from,
        kind: LineKind::Usage,
        meter: Some(meter.to_owned()),
        unit: None,
        period: Some(price.period),
        usage: Some(usage),
        allowance: Some(allowance),
        free: Some(free),
        billable: Some(billable),
        pricing: Some(price.mode),
        per: Some(price.per),
        tiers: tier_lines,
        fee: None,
        amount: Decimal::ZERO,
    })
}
