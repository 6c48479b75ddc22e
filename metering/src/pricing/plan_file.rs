//! The plans file as written (serde structs that read numbers, currencies and
//! dates from their text) and the checks that turn it into a [`PriceBook`],
//! each failing at a path of the document so the error can name its line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use time::Date;

use super::credit::CreditBand;
use super::money::Currency;
use super::plan::{Assignment, MeterPrice, Period, Plan, PriceBook, Rate, Region, TenantBilling};
use super::tiers::{Tier, TierMode};
use crate::meter::Catalog;
use crate::record::validate_tenant;
use runtime::settings::AtLine;
use runtime::yaml_line::{line_of, Step};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    plans: BTreeMap<String, RawPlan>,
    #[serde(default)]
    regions: BTreeMap<String, RawRegion>,
    #[serde(default)]
    rates: Vec<RawRate>,
    #[serde(default)]
    tenants: BTreeMap<String, RawTenant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    #[serde(deserialize_with = "currency")]
    currency: Currency,
    #[serde(default, deserialize_with = "some_amount")]
    base_fee: Option<Decimal>,
    #[serde(default)]
    meters: BTreeMap<String, RawMeterPrice>,
    #[serde(default)]
    slo: Option<RawSlo>,
    #[serde(default)]
    credits: Vec<RawBand>,
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeterPrice {
    #[serde(default, deserialize_with = "some_amount")]
    allowance: Option<Decimal>,
    #[serde(default)]
    period: Option<Period>,
    #[serde(default)]
    pricing: Option<TierMode>,
    #[serde(default, deserialize_with = "some_amount")]
    per: Option<Decimal>,
    #[serde(default, deserialize_with = "some_amount")]
    price: Option<Decimal>,
    #[serde(default)]
    tiers: Option<Vec<RawTier>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    #[serde(default, deserialize_with = "some_amount")]
    up_to: Option<Decimal>,
    #[serde(deserialize_with = "amount")]
    price: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    #[serde(default, deserialize_with = "some_amount")]
    availability: Option<Decimal>,
    #[serde(default)]
    p99_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBand {
    #[serde(deserialize_with = "amount")]
    below: Decimal,
    #[serde(deserialize_with = "amount")]
    percent: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    #[serde(deserialize_with = "amount")]
    tax_percent: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    #[serde(deserialize_with = "date")]
    date: Date,
    #[serde(deserialize_with = "currency")]
    from: Currency,
    #[serde(deserialize_with = "currency")]
    to: Currency,
    #[serde(deserialize_with = "amount")]
    rate: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    region: String,
    #[serde(default, deserialize_with = "some_currency")]
    currency: Option<Currency>,
    plans: Vec<RawAssignment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssignment {
    plan: String,
    #[serde(deserialize_with = "date")]
    from: Date,
    #[serde(default, deserialize_with = "some_date")]
    until: Option<Date>,
}

/// Reads a scalar as its text, so serde_yaml's float parsing never touches a number.
fn scalar_text<'de, D: Deserializer<'de>, T>(
    d: D,
    what: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct Text<T>(&'static str, fn(&str) -> Result<T, String>);
    impl<T> Visitor<'_> for Text<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.1)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Text(what, parse))
}

fn parse_amount(text: &str) -> Result<Decimal, String> {
    let digits: String = text.chars().filter(|&c| c != '_').collect();
    let value: Decimal = digits
        .parse()
        .ok()
        .filter(|_| digits.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-'))
        .ok_or_else(|| format!("{text:?} is not a decimal number such as 0.8 or 500_000"))?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(format!("{text} must not be negative"));
    }
    Ok(value.normalize())
}

fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    scalar_text(d, "a decimal number", parse_amount)
}

fn some_amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    amount(d).map(Some)
}

fn parse_currency(text: &str) -> Result<Currency, String> {
    Currency::parse(text).ok_or_else(|| format!("unknown currency {text:?}; supported: {}", Currency::supported()))
}

fn currency<'de, D: Deserializer<'de>>(d: D) -> Result<Currency, D::Error> {
    scalar_text(d, "an ISO 4217 currency code", parse_currency)
}

fn some_currency<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Currency>, D::Error> {
    currency(d).map(Some)
}

fn parse_date(text: &str) -> Result<Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, &format).map_err(|_| format!("{text:?} is not a date written YYYY-MM-DD"))
}

fn date<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
    scalar_text(d, "a date YYYY-MM-DD", parse_date)
}

fn some_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
    date(d).map(Some)
}

// ---- Checks ------------------------------------------------------------

/// A problem at a path of the document.
pub(super) struct Problem<'a> {
    pub(super) path: Vec<Step<'a>>,
    pub(super) message: String,
}

fn problem<'a>(path: &[Step<'a>], message: String) -> Problem<'a> {
    Problem { path: path.to_vec(), message }
}

pub(super) fn path_text(path: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn check_percent<'a>(path: &[Step<'a>], value: Decimal, allow_zero: bool) -> Result<(), Problem<'a>> {
    if value > Decimal::ONE_HUNDRED || (!allow_zero && value.is_zero()) {
        let low = if allow_zero { "0" } else { "above 0" };
        return Err(problem(path, format!("{value} is not a percentage {low} to 100")));
    }
    Ok(())
}

fn check_meter<'a>(path: &[Step<'a>], raw: &'a RawMeterPrice) -> Result<MeterPrice, Problem<'a>> {
    let per = raw.per.unwrap_or(Decimal::ONE);
    if per.is_zero() {
        return Err(problem(&[path, &[Step::Key("per")]].concat(), "`per` must be above 0".into()));
    }
    let tiers = match (&raw.price, &raw.tiers) {
        (Some(price), None) => vec![Tier { up_to: None, price: *price }],
        (None, Some(tiers)) => {
            let tiers_path = [path, &[Step::Key("tiers")]].concat();
            if tiers.is_empty() {
                return Err(problem(&tiers_path, "`tiers` must list at least one tier".into()));
            }
            let mut lower = Decimal::ZERO;
            for (i, t) in tiers.iter().enumerate() {
                let at = [&tiers_path[..], &[Step::Index(i)]].concat();
                let last = i + 1 == tiers.len();
                match (t.up_to, last) {
                    (None, false) => {
                        return Err(problem(&at, format!("tier {i} has no `up_to`: only the last tier may be unbounded")))
                    }
                    (Some(u), true) => {
                        return Err(problem(
                            &at,
                            format!("the last tier is bounded (`up_to: {u}`); leave its `up_to` out so every quantity has a price"),
                        ))
                    }
                    (Some(u), false) if u <= lower => {
                        return Err(problem(&at, format!("tier {i}'s `up_to` ({u}) must be above the previous tier's ({lower})")))
                    }
                    (Some(u), false) => lower = u,
                    (None, true) => {}
                }
            }
            tiers.iter().map(|t| Tier { up_to: t.up_to, price: t.price }).collect()
        }
        (Some(_), Some(_)) => return Err(problem(path, "give either `price` or `tiers`, not both".into())),
        (None, None) => return Err(problem(path, "needs a `price` (one price for all units) or `tiers`".into())),
    };
    Ok(MeterPrice {
        allowance: raw.allowance.unwrap_or(Decimal::ZERO),
        period: raw.period.unwrap_or(Period::Month),
        mode: raw.pricing.unwrap_or(TierMode::Graduated),
        per,
        tiers,
    })
}

fn check_plan<'a>(name: &'a str, raw: &'a RawPlan, catalog: &Catalog) -> Result<Plan, Problem<'a>> {
    let path = [Step::Key("plans"), Step::Key(name)];
    let mut meters = BTreeMap::new();
    for (meter, price) in &raw.meters {
        let at = [&path[..], &[Step::Key("meters"), Step::Key(meter)]].concat();
        if catalog.get(meter).is_none() {
            return Err(problem(&at, format!("unknown meter {meter:?}; known meters: {}", catalog.names())));
        }
        meters.insert(meter.clone(), check_meter(&at, price)?);
    }
    if let Some(a) = raw.slo.as_ref().and_then(|s| s.availability) {
        check_percent(&[&path[..], &[Step::Key("slo"), Step::Key("availability")]].concat(), a, false)?;
    }
    let mut credits: Vec<CreditBand> = Vec::new();
    for (i, band) in raw.credits.iter().enumerate() {
        let at = [&path[..], &[Step::Key("credits"), Step::Index(i)]].concat();
        check_percent(&at, band.below, false)?;
        check_percent(&at, band.percent, false)?;
        if let Some(prev) = credits.last() {
            if band.below >= prev.below || band.percent <= prev.percent {
                return Err(problem(
                    &at,
                    format!(
                        "credit bands go from the highest `below` down with rising `percent`: below {} → {}% follows below {} → {}%",
                        band.below, band.percent, prev.below, prev.percent
                    ),
                ));
            }
        }
        credits.push(CreditBand { below: band.below, percent: band.percent });
    }
    Ok(Plan {
        name: name.to_owned(),
        currency: raw.currency,
        base_fee: raw.base_fee.unwrap_or(Decimal::ZERO),
        meters,
        slo_availability: raw.slo.as_ref().and_then(|s| s.availability),
        slo_p99_ms: raw.slo.as_ref().and_then(|s| s.p99_ms),
        credits,
    })
}

fn check_tenant<'a>(id: &'a str, raw: &'a RawTenant, book: &PriceBook) -> Result<TenantBilling, Problem<'a>> {
    let path = [Step::Key("tenants"), Step::Key(id)];
    validate_tenant(id).map_err(|e| problem(&path, format!("tenant id: {e}")))?;
    if !book.regions.contains_key(&raw.region) {
        let known: Vec<&str> = book.regions.keys().map(String::as_str).collect();
        return Err(problem(
            &[&path[..], &[Step::Key("region")]].concat(),
            format!("unknown region {:?}; regions in this file: {}", raw.region, known.join(", ")),
        ));
    }
    if raw.plans.is_empty() {
        return Err(problem(
            &[&path[..], &[Step::Key("plans")]].concat(),
            "a tenant needs at least one plan assignment".into(),
        ));
    }
    let mut assignments: Vec<(usize, Assignment)> = Vec::new();
    for (i, a) in raw.plans.iter().enumerate() {
        let at = [&path[..], &[Step::Key("plans"), Step::Index(i)]].concat();
        if !book.plans.contains_key(&a.plan) {
            let known: Vec<&str> = book.plans.keys().map(String::as_str).collect();
            return Err(problem(
                &[&at[..], &[Step::Key("plan")]].concat(),
                format!("unknown plan {:?}; plans in this file: {}", a.plan, known.join(", ")),
            ));
        }
        if a.until.is_some_and(|u| u <= a.from) {
            return Err(problem(
                &[&at[..], &[Step::Key("until")]].concat(),
                format!("`until` must be after `from` ({})", a.from),
            ));
        }
        let overlaps = |b: &Assignment| a.from < b.until.unwrap_or(Date::MAX) && b.from < a.until.unwrap_or(Date::MAX);
        if let Some((j, b)) = assignments.iter().find(|(_, b)| overlaps(b)) {
            return Err(problem(
                &at,
                format!(
                    "plan {:?} from {} overlaps assignment {j} (plan {:?} from {}); give the earlier one an `until`",
                    a.plan, a.from, b.plan, b.from
                ),
            ));
        }
        assignments.push((i, Assignment { plan: a.plan.clone(), from: a.from, until: a.until }));
    }
    let mut assignments: Vec<Assignment> = assignments.into_iter().map(|(_, a)| a).collect();
    assignments.sort_by_key(|a| a.from);
    let currency = match raw.currency {
        Some(c) => c,
        None => {
            let mut currencies: Vec<Currency> = assignments.iter().map(|a| book.plans[&a.plan].currency).collect();
            currencies.dedup();
            currencies.sort();
            currencies.dedup();
            match currencies.as_slice() {
                [one] => *one,
                many => {
                    let codes: Vec<&str> = many.iter().map(|c| c.code()).collect();
                    return Err(problem(
                        &path,
                        format!(
                            "the tenant's plans are priced in {}; set `currency` to the one its invoices use",
                            codes.join(" and ")
                        ),
                    ));
                }
            }
        }
    };
    // Rates are dated, so only an invoice can tell whether one applies; a direction
    // with no rate at all can never be invoiced and is refused now.
    for a in &assignments {
        let from = book.plans[&a.plan].currency;
        if from != currency && !book.rates.iter().any(|r| r.from == from && r.to == currency) {
            return Err(problem(
                &[&path[..], &[Step::Key("currency")]].concat(),
                format!("plan {:?} is priced in {from} but the tenant is invoiced in {currency}, and `rates` has no {from}→{currency} rate", a.plan),
            ));
        }
    }
    Ok(TenantBilling { region: raw.region.clone(), currency, assignments })
}

pub(super) fn check<'a>(raw: &'a RawFile, catalog: &Catalog) -> Result<PriceBook, Problem<'a>> {
    let mut book = PriceBook::default();
    for (name, plan) in &raw.plans {
        book.plans.insert(name.clone(), check_plan(name, plan, catalog)?);
    }
    for (name, region) in &raw.regions {
        check_percent(&[Step::Key("regions"), Step::Key(name), Step::Key("tax_percent")], region.tax_percent, true)?;
        book.regions.insert(name.clone(), Region { tax_percent: region.tax_percent });
    }
    for (i, r) in raw.rates.iter().enumerate() {
        let at = [Step::Key("rates"), Step::Index(i)];
        if r.from == r.to {
            return Err(problem(&at, format!("a rate converts between two currencies, not {} to itself", r.from)));
        }
        if r.rate.is_zero() {
            return Err(problem(&at, "`rate` must be above 0".into()));
        }
        if book.rates.iter().any(|o| (o.from, o.to, o.date) == (r.from, r.to, r.date)) {
            return Err(problem(&at, format!("a second {}→{} rate dated {}", r.from, r.to, r.date)));
        }
        book.rates.push(Rate { date: r.date, from: r.from, to: r.to, rate: r.rate });
    }
    for (id, tenant) in &raw.tenants {
        let billing = check_tenant(id, tenant, &book)?;
        book.tenants.insert(id.clone(), billing);
    }
    Ok(book)
}

/// Why a plans file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The file could not be read.
    #[error("cannot read plans file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it reported.
        error: std::io::Error,
    },
    /// The file is malformed or a plan, rate or tenant in it is not usable.
    #[error("plans file {}{}: {message}", path.display(), AtLine(*line))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line (1-based) of the offending key, when known.
        line: Option<usize>,
        /// What is wrong, naming the key (e.g. `plans.basic.meters.spans.tiers[1]`).
        message: String,
    },
}

/// Parses and checks the text of a plans file against the meters of `catalog`;
/// `path` is only for messages.
///
/// ```
/// use metering::meter::Catalog;
/// use metering::pricing::plan_file::parse;
/// let yaml = "plans:\n  basic:\n    currency: USD\n    meters:\n      spans: {price: 0.1, per: 1000}\n      tokens: {price: 1}\n";
/// let err = parse(yaml, "plans.yaml".as_ref(), &Catalog::builtin()).unwrap_err();
/// assert!(err.to_string().starts_with("plans file plans.yaml line 6: plans.basic.meters.tokens: unknown meter \"tokens\""));
/// ```
pub fn parse(text: &str, path: &Path, catalog: &Catalog) -> Result<PriceBook, PlanError> {
    let raw: RawFile = serde_yaml::from_str(text).map_err(|e| PlanError::Invalid {
        path: path.to_owned(),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    })?;
    check(&raw, catalog).map_err(|p| PlanError::Invalid {
        path: path.to_owned(),
        line: line_of(text, &p.path),
        message: format!("{}: {}", path_text(&p.path), p.message),
    })
}

/// Reads, parses and checks the plans file at `path`.
pub fn load(path: &Path, catalog: &Catalog) -> Result<PriceBook, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|error| PlanError::Read { path: path.to_owned(), error })?;
    parse(&text, path, catalog)
}
