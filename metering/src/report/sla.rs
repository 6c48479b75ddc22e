//! The SLA report: per tenant and service, the month's requests, errors,
//! availability and latency percentiles; per tenant the SLO of its plan, the error
//! budget used, the worst hours (lowest availability, with their counts and
//! exemplar traces), a daily series, and the credits owed.
//!
//! Availability is `(requests − errors) / requests`, shown in percent rounded to 4
//! decimals; credits are pricing's (the invoice's `credits`, compared exactly).
//! Percentiles come from the mergeable latency sketch: within 1/256 of the exact
//! value, shown in milliseconds to 3 decimals.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;
use time::{Date, OffsetDateTime};

use super::{date_text, ns_to_ms, opt_decimal_text, shown};
use crate::pricing::credit::Availability;
use crate::pricing::invoice::Credit;
use crate::pricing::BillingMonth;
use crate::sla::{Exemplar, LatencySketch, SlaPoint};

/// How many worst hours a tenant's report lists.
pub const WORST_HOURS: usize = 5;

/// Requests, errors and latency of some traffic, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Figures {
    /// Requests served.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Percent, 4 decimals; `null` without requests.
    #[serde(serialize_with = "opt_decimal_text")]
    pub availability_percent: Option<Decimal>,
    /// Median latency, ms.
    #[serde(serialize_with = "opt_decimal_text")]
    pub p50_ms: Option<Decimal>,
    /// 95th percentile, ms.
    #[serde(serialize_with = "opt_decimal_text")]
    pub p95_ms: Option<Decimal>,
    /// 99th percentile, ms.
    #[serde(serialize_with = "opt_decimal_text")]
    pub p99_ms: Option<Decimal>,
}

impl Figures {
    fn of(requests: u64, errors: u64, latency: &LatencySketch) -> Self {
        let q = |ppm| latency.quantile_ppm(ppm).map(ns_to_ms);
        Self {
            requests,
            errors,
            availability_percent: availability(requests, errors),
            p50_ms: q(500_000),
            p95_ms: q(950_000),
            p99_ms: q(990_000),
        }
    }
}

/// One service's month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSla {
    /// The service.
    pub service: String,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// One day of a tenant (all services).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaySla {
    /// The UTC day.
    #[serde(serialize_with = "date_text")]
    pub day: Date,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// One of the worst hours: a service's UTC hour with the lowest availability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorstHour {
    /// The service.
    pub service: String,
    /// Start of the hour.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// Requests in it.
    pub requests: u64,
    /// Failed requests in it.
    pub errors: u64,
    /// Percent, 4 decimals.
    #[serde(serialize_with = "opt_decimal_text")]
    pub availability_percent: Option<Decimal>,
    /// Traces to open: the hour's slowest and slowest failed requests.
    pub exemplars: Vec<ExemplarOut>,
}

/// An exemplar as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExemplarOut {
    /// W3C trace id.
    pub trace_id: String,
    /// Latency, ms (3 decimals).
    #[serde(serialize_with = "super::decimal_text")]
    pub latency_ms: Decimal,
    /// Whether the request failed.
    pub error: bool,
}

impl From<&Exemplar> for ExemplarOut {
    fn from(e: &Exemplar) -> Self {
        Self { trace_id: e.trace_id.clone(), latency_ms: ns_to_ms(e.latency_ns), error: e.error }
    }
}

/// The objective of the tenant's plan (the plan in effect at the month's end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Objective {
    /// The plan.
    pub plan: String,
    /// Availability target, percent.
    #[serde(serialize_with = "opt_decimal_text")]
    pub availability_percent: Option<Decimal>,
    /// p99 latency target, ms.
    pub p99_ms: Option<u64>,
}

/// Credits owed, from the tenant's invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credits {
    /// Invoice currency.
    pub currency: String,
    /// Per plan whose credit table applied.
    pub credits: Vec<Credit>,
    /// Their sum.
    #[serde(serialize_with = "super::decimal_text")]
    pub total: Decimal,
}

/// One tenant's month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantSla {
    /// The tenant.
    pub tenant: String,
    /// All services together.
    #[serde(flatten)]
    pub figures: Figures,
    /// The plan's objective; `null` without a plan (or plans file).
    pub slo: Option<Objective>,
    /// Errors as a percent of the errors the availability target allows over the
    /// month's requests, 2 decimals (over 100: the target was missed); `null`
    /// without a target, a target of 100 %, or requests.
    #[serde(serialize_with = "opt_decimal_text")]
    pub error_budget_used_percent: Option<Decimal>,
    /// Whether p99 is within the plan's p99 target (the sketch's p99, within 1/256).
    pub p99_met: Option<bool>,
    /// Credits owed; `null` without a plan.
    pub credits: Option<Credits>,
    /// Per service, by name.
    pub services: Vec<ServiceSla>,
    /// The hours with the lowest availability (only hours with errors), worst first.
    pub worst_hours: Vec<WorstHour>,
    /// Every day of the month, in order (no figures on a day without requests).
    pub daily: Vec<DaySla>,
}

/// The SLA report of a month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlaReport {
    /// `YYYY-MM`.
    pub month: String,
    /// The month's seal digest when it is sealed: the report reads its snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed_digest: Option<String>,
    /// Tenants with requests, by name.
    pub tenants: Vec<TenantSla>,
}

/// What pricing says about a tenant's month: its objective and its credits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pricing {
    /// The plan's objective.
    pub slo: Option<Objective>,
    /// The credits.
    pub credits: Option<Credits>,
}

/// Availability in percent as pricing shows it (4 decimals).
fn availability(requests: u64, errors: u64) -> Option<Decimal> {
    Availability { requests, errors }.percent()
}

/// `errors / (requests × (100 − target) / 100)` in percent, 2 decimals.
///
/// ```
/// use metering::report::sla::error_budget_used;
/// // 99.9 % of 200,000 requests allows 200 errors; 300 is 150 % of that.
/// assert_eq!(error_budget_used(200_000, 300, "99.9".parse().unwrap()), Some(150.into()));
/// assert_eq!(error_budget_used(0, 0, "99.9".parse().unwrap()), None);
/// ```
pub fn error_budget_used(requests: u64, errors: u64, target: Decimal) -> Option<Decimal> {
    let allowed = Decimal::from(requests).checked_mul(Decimal::ONE_HUNDRED - target)?;
    if allowed <= Decimal::ZERO {
        return None;
    }
    Some(shown(Decimal::from(errors).checked_mul(Decimal::from(10_000))?.checked_div(allowed)?, 2))
}

/// Orders hours worst first: lower availability (`errors / requests` higher,
/// compared exactly), then more errors, then earlier, then by service.
fn worse(a: &SlaPoint, b: &SlaPoint) -> Ordering {
    let lhs = u128::from(b.errors) * u128::from(a.requests);
    let rhs = u128::from(a.errors) * u128::from(b.requests);
    lhs.cmp(&rhs).then(b.errors.cmp(&a.errors)).then(a.start.cmp(&b.start)).then(a.service.cmp(&b.service))
}

/// The report from the month's SLA reads per tenant and service at month, day and
/// hour granularity, and each tenant's pricing (absent: no plan).
pub fn build(
    month: BillingMonth,
    months: &[SlaPoint],
    days: &[SlaPoint],
    hours: &[SlaPoint],
    pricing: &BTreeMap<String, Pricing>,
) -> SlaReport {
    let mut tenants = Vec::new();
    let all_days: Vec<Date> =
        std::iter::successors(Some(month.first_day()), |d| d.next_day()).take_while(|d| *d < month.end()).collect();
    // Each tenant's points found once: filtering all tenants' points per tenant was quadratic
    // (1.4 M hours for 1,000 tenants, scanned 1,000 times).
    let (mut days_of, mut hours_of) = (by_tenant(days), by_tenant(hours));
    for (tenant, points) in by_tenant(months) {
        let (days, hours) = (days_of.remove(tenant).unwrap_or_default(), hours_of.remove(tenant).unwrap_or_default());
        let (mut requests, mut errors, mut latency) = (0u64, 0u64, LatencySketch::new());
        let mut services = Vec::new();
        for p in &points {
            requests = requests.saturating_add(p.requests);
            errors = errors.saturating_add(p.errors);
            latency.merge(&p.latency);
            services.push(ServiceSla {
                service: p.service.clone(),
                figures: Figures::of(p.requests, p.errors, &p.latency),
            });
        }
        let figures = Figures::of(requests, errors, &latency);
        let daily = all_days
            .iter()
            .map(|&day| {
                let (mut r, mut e, mut l) = (0u64, 0u64, LatencySketch::new());
                for p in days.iter().filter(|p| p.start.date() == day) {
                    r = r.saturating_add(p.requests);
                    e = e.saturating_add(p.errors);
                    l.merge(&p.latency);
                }
                DaySla { day, figures: Figures::of(r, e, &l) }
            })
            .collect();
        let mut worst: Vec<&SlaPoint> = hours.into_iter().filter(|p| p.errors > 0).collect();
        worst.sort_by(|a, b| worse(a, b));
        let worst_hours = worst
            .into_iter()
            .take(WORST_HOURS)
            .map(|p| WorstHour {
                service: p.service.clone(),
                start: p.start,
                requests: p.requests,
                errors: p.errors,
                availability_percent: availability(p.requests, p.errors),
                exemplars: p.exemplars.iter().map(ExemplarOut::from).collect(),
            })
            .collect();
        let pricing = pricing.get(tenant).cloned().unwrap_or_default();
        let target = pricing.slo.as_ref().and_then(|s| s.availability_percent);
        let p99_target = pricing.slo.as_ref().and_then(|s| s.p99_ms);
        tenants.push(TenantSla {
            tenant: tenant.to_owned(),
            error_budget_used_percent: target.and_then(|t| error_budget_used(requests, errors, t)),
            p99_met: p99_target.zip(latency.quantile_ppm(990_000)).map(|(ms, p99)| p99 <= ms.saturating_mul(1_000_000)),
            figures,
            slo: pricing.slo,
            credits: pricing.credits,
            services,
            worst_hours,
            daily,
        });
    }
    SlaReport { month: month.to_string(), sealed_digest: None, tenants }
}

fn by_tenant(points: &[SlaPoint]) -> BTreeMap<&str, Vec<&SlaPoint>> {
    let mut out: BTreeMap<&str, Vec<&SlaPoint>> = BTreeMap::new();
    for p in points {
        out.entry(&p.tenant).or_default().push(p);
    }
    out
}
