//! Hand-computed invoices (the arithmetic is written out beside each figure,
//! not derived from the code) and the plans file's refusals.

use std::path::Path;

use rust_decimal::Decimal;
use time::macros::date;

use super::credit::Availability;
use super::invoice::{compute, windows, Inputs, Invoice, LineKind, Usage, Window};
use super::plan::Period;
use super::plan_file::parse;
use super::BillingMonth;
use crate::meter::{definition, Catalog};

pub(crate) const PLANS: &str = include_str!("../../tests/fixtures/plans.yaml");
const METERS: &str = include_str!("../../tests/fixtures/meters.yaml");

fn catalog() -> Catalog {
    Catalog::with_custom(&definition::parse(METERS, Path::new("meters.yaml")).unwrap())
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn texts(v: &[Decimal]) -> Vec<String> {
    v.iter().map(|d| d.to_string()).collect()
}

fn nov() -> BillingMonth {
    BillingMonth::parse("2026-11").unwrap()
}

fn acme(availability: Availability) -> Invoice {
    let catalog = catalog();
    let book = parse(PLANS, Path::new("plans.yaml"), &catalog).unwrap();
    let mut usage = Usage::new();
    // starter is in effect 2026-11-01..21, growth 2026-11-21..12-01.
    usage.set("spans", date!(2026 - 11 - 01), date!(2026 - 11 - 21), 7_345_678.into());
    usage.set("requests", date!(2026 - 11 - 01), date!(2026 - 11 - 21), 123_457.into());
    usage.set("spans", date!(2026 - 11 - 21), date!(2026 - 12 - 01), 9_809_662.into());
    // growth does not price requests: not charged.
    usage.set("requests", date!(2026 - 11 - 21), date!(2026 - 12 - 01), 50_000.into());
    compute(&book, "acme", nov(), Inputs { usage: &usage, availability, catalog: &catalog }).unwrap()
}

/// 2026-11 for acme: a plan change on the 21st (graduated starter → volume growth),
/// prorated allowances and base fees, USD prices invoiced in EUR at the rate of
/// 2026-11-30 (0.8634; the 2026-12-01 rate is not used), SLA credits from 99.85 %
/// availability, 19 % tax.
#[test]
fn hand_computed_invoice_with_plan_change_conversion_credit_and_tax() {
    // 200,000 requests, 300 errors: 99.85 %.
    let inv = acme(Availability { requests: 200_000, errors: 300 });
    assert_eq!((inv.currency.code(), inv.region.as_str(), inv.tax_percent), ("EUR", "de", d("19")));
    assert_eq!(inv.plans.len(), 2);
    assert_eq!(
        (inv.plans[0].plan.as_str(), inv.plans[0].days, inv.plans[1].plan.as_str(), inv.plans[1].days),
        ("starter", 20, "growth", 10)
    );
    let rate = inv.plans[0].conversion.as_ref().unwrap();
    assert_eq!((rate.rate, rate.date), (d("0.8634"), date!(2026 - 11 - 30)));
    assert_eq!(inv.lines.len(), 5);

    // starter, requests: no allowance, 0.07 USD per 1,000.
    // 123,457 × 0.07 / 1,000 = 8.64199 USD × 0.8634 = 7.461494166 → 7.46 EUR.
    let req = &inv.lines[0];
    assert_eq!(
        (req.plan.as_str(), req.meter.as_deref(), req.usage, req.free, req.billable),
        ("starter", Some("requests"), Some(d("123457")), Some(d("0")), Some(d("123457")))
    );
    assert_eq!(req.amount.to_string(), "7.46");

    // starter, spans: allowance 1,500,000 × 20/30 = 1,000,000; billable 6,345,678, graduated per 1M:
    //   2,000,000 × 5.00 = 10.00 USD × 0.8634 = 8.634 → 8.63
    //   4,345,678 × 4.00 = 17.382712 USD × 0.8634 = 15.0082335408 → 15.01
    //   0 × 2.50 → 0.00;  line 8.63 + 15.01 = 23.64
    let spans = &inv.lines[1];
    assert_eq!(
        (spans.meter.as_deref(), spans.period, spans.usage, spans.allowance),
        (Some("spans"), Some(Period::Month), Some(d("7345678")), Some(d("1000000")))
    );
    assert_eq!((spans.free, spans.billable), (Some(d("1000000")), Some(d("6345678"))));
    assert_eq!(spans.tiers.iter().map(|t| t.quantity.to_string()).collect::<Vec<_>>(), ["2000000", "4345678", "0"]);
    assert_eq!(texts(&spans.tiers.iter().map(|t| t.amount).collect::<Vec<_>>()), ["8.63", "15.01", "0.00"]);
    assert_eq!(spans.amount.to_string(), "23.64");

    // starter base fee: 30 USD × 20/30 = 20.00 USD × 0.8634 = 17.268 → 17.27.
    let fee = &inv.lines[2];
    assert_eq!(
        (fee.kind, fee.plan.as_str(), fee.fee, fee.amount.to_string()),
        (LineKind::BaseFee, "starter", Some(d("30")), "17.27".into())
    );

    // growth, spans: allowance 6,000,000 × 10/30 = 2,000,000; billable 7,809,662, volume:
    // above 5,000,000 and up to 50,000,000, so all of it at 3.50 per 1M:
    //   7.809662 × 3.50 = 27.333817 USD × 0.8634 = 23.6000175978 → 23.60
    let g = &inv.lines[3];
    assert_eq!((g.plan.as_str(), g.allowance, g.billable), ("growth", Some(d("2000000")), Some(d("7809662"))));
    assert_eq!(g.tiers.iter().map(|t| t.quantity.to_string()).collect::<Vec<_>>(), ["0", "7809662", "0"]);
    assert_eq!(g.amount.to_string(), "23.60");
    // growth base fee: 90 USD × 10/30 = 30 USD × 0.8634 = 25.902 → 25.90.
    assert_eq!((inv.lines[4].plan.as_str(), inv.lines[4].amount.to_string()), ("growth", "25.90".into()));

    // Credits, per plan on its own charges, 99.85 % availability:
    //   starter (below 99.9 → 10 %): 7.46 + 23.64 + 17.27 = 48.37 × 10 % = 4.837 → 4.84
    //   growth (below 99.95 → 15 %): 23.60 + 25.90 = 49.50 × 15 % = 7.425 → 7.43 (half away from zero; half-even would give 7.42)
    assert_eq!(inv.sla.availability_percent, Some(d("99.85")));
    let credits: Vec<_> =
        inv.credits.iter().map(|c| (c.plan.as_str(), c.percent, c.charges.to_string(), c.amount.to_string())).collect();
    assert_eq!(
        credits,
        [("starter", d("10"), "48.37".into(), "4.84".into()), ("growth", d("15"), "49.50".into(), "7.43".into())]
    );

    // charges 48.37 + 49.50 = 97.87; credit 4.84 + 7.43 = 12.27; subtotal 85.60;
    // tax 85.60 × 19 % = 16.264 → 16.26; total 101.86.
    assert_eq!(
        texts(&[inv.charges, inv.sla_credit, inv.subtotal, inv.tax, inv.total]),
        ["97.87", "12.27", "85.60", "16.26", "101.86"]
    );
}

#[test]
fn availability_meeting_every_target_earns_no_credit() {
    // 99.95 % exactly meets growth's 99.95 target and starter's 99.9.
    let inv = acme(Availability { requests: 20_000, errors: 10 });
    assert!(inv.credits.is_empty());
    // 97.87 × 19 % = 18.5953 → 18.60; total 116.47.
    assert_eq!(
        texts(&[inv.charges, inv.sla_credit, inv.subtotal, inv.tax, inv.total]),
        ["97.87", "0.00", "97.87", "18.60", "116.47"]
    );
}

/// The product's reference plan (metric points per day, CNY), invoiced in JPY
/// (0 decimals) at 21.37, 6 % tax. Allowances apply to each day on its own.
#[test]
fn hand_computed_invoice_with_daily_allowances_in_jpy() {
    let catalog = catalog();
    let book = parse(PLANS, Path::new("plans.yaml"), &catalog).unwrap();
    let month = nov();
    assert_eq!(
        windows(&book, "lotus", month).unwrap(),
        [
            Window { from: date!(2026 - 11 - 01), until: date!(2026 - 12 - 01), by: Period::Month },
            Window { from: date!(2026 - 11 - 01), until: date!(2026 - 12 - 01), by: Period::Day }
        ]
    );
    let mut usage = Usage::new();
    let mut day = |day: time::Date, counters: u64, histograms: u64, gauges: u64| {
        let next = day.next_day().unwrap();
        usage.set("counter_points", day, next, counters.into());
        usage.set("histogram_points", day, next, histograms.into());
        usage.set("gauge_points", day, next, gauges.into());
    };
    day(date!(2026 - 11 - 03), 1_234_567, 50_000, 200_000);
    day(date!(2026 - 11 - 04), 400_000, 350_000, 210_001);
    day(date!(2026 - 11 - 30), 500_001, 100_000, 0);
    let inv = compute(
        &book,
        "lotus",
        month,
        Inputs { usage: &usage, availability: Availability::default(), catalog: &catalog },
    )
    .unwrap();
    assert!(inv.plans[0].conversion.is_some() && inv.credits.is_empty() && inv.sla.availability_percent.is_none());
    let line = |meter: &str| inv.lines.iter().find(|l| l.meter.as_deref() == Some(meter)).unwrap();

    // counters, 500,000 free a day: billable 734,567 (3rd) + 0 (4th) + 1 (30th) = 734,568;
    // × 0.8 / 10,000 = 58.76544 CNY × 21.37 = 1,255.8174528 → 1,256 JPY.
    let c = line("counter_points");
    assert_eq!(
        (c.usage, c.allowance, c.free, c.billable),
        (Some(d("2134568")), Some(d("15000000")), Some(d("1400000")), Some(d("734568")))
    );
    assert_eq!(c.amount.to_string(), "1256");
    // histograms, 100,000 free a day: billable 0 + 250,000 + 0; × 2.5 / 10,000 = 62.5 CNY × 21.37 = 1,335.625 → 1,336.
    let h = line("histogram_points");
    assert_eq!((h.free, h.billable, h.amount.to_string()), (Some(d("250000")), Some(d("250000")), "1336".into()));
    // gauges, 200,000 free a day: billable 0 + 10,001 + 0; × 1.2 / 10,000 = 1.20012 CNY × 21.37 = 25.6465644 → 26.
    let g = line("gauge_points");
    assert_eq!((g.billable, g.amount.to_string()), (Some(d("10001")), "26".into()));
    // 1,256 + 1,336 + 26 = 2,618; tax 6 % = 157.08 → 157; total 2,775.
    assert_eq!(
        texts(&[inv.charges, inv.sla_credit, inv.subtotal, inv.tax, inv.total]),
        ["2618", "0", "2618", "157", "2775"]
    );
}

#[test]
fn invoices_refuse_unknown_tenants_months_without_plans_and_missing_rates() {
    let catalog = catalog();
    let book = parse(PLANS, Path::new("plans.yaml"), &catalog).unwrap();
    let usage = Usage::new();
    let inputs = Inputs { usage: &usage, availability: Availability::default(), catalog: &catalog };
    assert_eq!(
        compute(&book, "nobody", nov(), inputs).unwrap_err().to_string(),
        "tenant \"nobody\" is not in the plans file"
    );
    let oct = BillingMonth::parse("2026-10").unwrap();
    assert_eq!(
        compute(&book, "lotus", oct, inputs).unwrap_err().to_string(),
        "tenant \"lotus\" has no plan in effect in 2026-10"
    );
    // acme in 2026-09: starter, but the first USD→EUR rate is dated 2026-10-31.
    let sep = BillingMonth::parse("2026-09").unwrap();
    assert_eq!(
        compute(&book, "acme", sep, inputs).unwrap_err().to_string(),
        "no USD→EUR rate dated on or before 2026-09-30 in the plans file (plan \"starter\")"
    );
    // acme in 2026-10: starter all month with the 0.9 rate; no usage, so only the base fee:
    // 30 USD × 0.9 = 27.00 EUR; tax 19 % = 5.13.
    let inv = compute(&book, "acme", BillingMonth::parse("2026-10").unwrap(), inputs).unwrap();
    assert_eq!((inv.plans[0].days, inv.plans[0].month_days), (31, 31));
    assert_eq!(texts(&[inv.charges, inv.tax, inv.total]), ["27.00", "5.13", "32.13"]);
}

fn refusal(yaml: &str) -> String {
    parse(yaml, Path::new("p.yaml"), &catalog()).unwrap_err().to_string()
}

const BASE: &str = "plans:\n  basic:\n    currency: USD\n    meters:\n      spans:\n        tiers:\n          - {up_to: 100, price: 1}\n          - {price: 0.5}\nregions:\n  us: {tax_percent: 0}\n";

#[test]
fn plans_file_refusals_name_file_line_and_reason() {
    assert!(parse(BASE, Path::new("p.yaml"), &catalog()).is_ok());
    // Tiers out of order: the line of the offending tier.
    let yaml = BASE.replace("- {price: 0.5}", "- {up_to: 50, price: 0.5}\n          - {price: 0.2}");
    assert_eq!(refusal(&yaml), "plans file p.yaml line 8: plans.basic.meters.spans.tiers[1]: tier 1's `up_to` (50) must be above the previous tier's (100)");
    let yaml = BASE.replace("- {price: 0.5}", "- {up_to: 500, price: 0.5}");
    assert!(refusal(&yaml)
        .starts_with("plans file p.yaml line 8: plans.basic.meters.spans.tiers[1]: the last tier is bounded"));
    let yaml = BASE.replace("- {up_to: 100, price: 1}", "- {price: 1}");
    assert!(refusal(&yaml)
        .starts_with("plans file p.yaml line 7: plans.basic.meters.spans.tiers[0]: tier 0 has no `up_to`"));
    // Unknown meter: the line of its key.
    assert!(refusal(&BASE.replace("      spans:", "      spams:"))
        .starts_with("plans file p.yaml line 5: plans.basic.meters.spams: unknown meter \"spams\"; known meters: "));
    // Unknown currency, negative or non-numeric prices: serde's position.
    assert_eq!(refusal(&BASE.replace("USD", "XYZ")), format!("plans file p.yaml line 3: plans.basic.currency: unknown currency \"XYZ\"; supported: {} at line 3 column 15", super::money::Currency::supported()));
    assert!(
        refusal(&BASE.replace("price: 0.5", "price: -0.5")).contains("line 8")
            && refusal(&BASE.replace("price: 0.5", "price: -0.5")).contains("-0.5 must not be negative")
    );
    assert!(refusal(&BASE.replace("price: 0.5", "price: 1e3")).contains("\"1e3\" is not a decimal number"));
    assert!(refusal(&BASE.replace("currency: USD", "currency: USD\n    colour: red")).contains("line 4"));
    // Both or neither of price and tiers.
    assert!(refusal(&BASE.replace("      spans:\n", "      spans:\n        price: 1\n"))
        .starts_with("plans file p.yaml line 5: plans.basic.meters.spans: give either `price` or `tiers`"));
    let tenants = |body: &str| format!("{BASE}tenants:\n  acme:\n    region: us\n    plans:\n{body}");
    // Overlapping assignments: the later one's line.
    let yaml = tenants("      - {plan: basic, from: 2026-01-01}\n      - {plan: basic, from: 2026-06-01}\n");
    assert_eq!(
        refusal(&yaml),
        "plans file p.yaml line 16: tenants.acme.plans[1]: plan \"basic\" from 2026-06-01 overlaps assignment 0 (plan \"basic\" from 2026-01-01); give the earlier one an `until`"
    );
    assert!(parse(
        &tenants(
            "      - {plan: basic, from: 2026-01-01, until: 2026-06-01}\n      - {plan: basic, from: 2026-06-01}\n"
        ),
        Path::new("p.yaml"),
        &catalog()
    )
    .is_ok());
    assert!(refusal(&tenants("      - {plan: gold, from: 2026-01-01}\n")).starts_with(
        "plans file p.yaml line 15: tenants.acme.plans[0].plan: unknown plan \"gold\"; plans in this file: basic"
    ));
    assert!(refusal(&tenants("      - {plan: basic, from: 2026-01-01, until: 2026-01-01}\n"))
        .contains("line 15: tenants.acme.plans[0].until: `until` must be after `from` (2026-01-01)"));
    assert!(refusal(&tenants("      - {plan: basic, from: 2026-02-30}\n"))
        .contains("\"2026-02-30\" is not a date written YYYY-MM-DD"));
    assert!(refusal(&tenants("      - {plan: basic, from: 2026-01-01}\n").replace("region: us", "region: eu"))
        .starts_with("plans file p.yaml line 13: tenants.acme.region: unknown region \"eu\""));
    // Credit bands out of order, tax over 100 %.
    let credits = BASE.replace(
        "    meters:\n",
        "    credits:\n      - {below: 99, percent: 25}\n      - {below: 99.9, percent: 10}\n    meters:\n",
    );
    assert!(refusal(&credits).starts_with(
        "plans file p.yaml line 6: plans.basic.credits[1]: credit bands go from the highest `below` down"
    ));
    assert!(refusal(&BASE.replace("tax_percent: 0", "tax_percent: 120"))
        .starts_with("plans file p.yaml line 10: regions.us.tax_percent: 120 is not a percentage 0 to 100"));
    // Plans in two currencies need the tenant's invoice currency.
    let two = format!("{BASE}  eu:\n    currency: EUR\n    meters: {{spans: {{price: 1}}}}\n")
        .replace("regions:\n  us: {tax_percent: 0}\n", "")
        + "regions:\n  us: {tax_percent: 0}\n";
    let yaml = two + "tenants:\n  acme:\n    region: us\n    plans: [{plan: basic, from: 2026-01-01, until: 2026-02-01}, {plan: eu, from: 2026-02-01}]\n";
    assert!(refusal(&yaml).contains("tenants.acme: the tenant's plans are priced in EUR and USD; set `currency`"));
    let yaml = yaml.replace("region: us\n", "region: us\n    currency: USD\n");
    assert_eq!(
        refusal(&yaml),
        "plans file p.yaml line 17: tenants.acme.currency: plan \"eu\" is priced in EUR but the tenant is invoiced in USD, and `rates` has no EUR→USD rate"
    );
    assert!(parse(
        &(yaml + "rates: [{date: 2026-01-01, from: EUR, to: USD, rate: 1.1}]\n"),
        Path::new("p.yaml"),
        &catalog()
    )
    .is_ok());
}

#[test]
fn numbers_are_read_from_their_text() {
    // A float would read 0.1 + 0.2 style values inexactly; these stay exact.
    let yaml = "plans:\n  p:\n    currency: USD\n    base_fee: 0.1\n    meters:\n      spans: {price: 0.30000000000000004, per: 3}\n";
    let book = parse(yaml, Path::new("p.yaml"), &catalog()).unwrap();
    assert_eq!(book.plans["p"].base_fee, d("0.1"));
    assert_eq!(book.plans["p"].meters["spans"].tiers[0].price, d("0.30000000000000004"));
    assert_eq!(book.plans["p"].meters["spans"].per, d("3"));
}

/// The text layout of the acme invoice, figure for figure (also the example in docs/plans.md).
#[test]
fn text_layout_shows_every_figure() {
    let inv = acme(Availability { requests: 200_000, errors: 300 });
    let expected = "\
Invoice 2026-11 for tenant acme (EUR, region de)
  plan starter: 2026-11-01 to 2026-11-21 (exclusive), 20 of 30 days, prices in USD, converted at 1 USD = 0.8634 EUR (rate of 2026-11-30)
  plan growth: 2026-11-21 to 2026-12-01 (exclusive), 10 of 30 days, prices in USD, converted at 1 USD = 0.8634 EUR (rate of 2026-11-30)

  requests [starter]: graduated pricing, prices per 1000 count
    usage 123457, allowance 0 (per month, prorated to the plan's days): free 0, billable 123457
    tier 0–∞: 123457 × 0.07 USD / 1000                                   7.46 EUR
    requests [starter]                                                   7.46 EUR
  spans [starter]: graduated pricing, prices per 1000000 count
    usage 7345678, allowance 1000000 (per month, prorated to the plan's days): free 1000000, billable 6345678
    tier 0–2000000: 2000000 × 5 USD / 1000000                            8.63 EUR
    tier 2000000–10000000: 4345678 × 4 USD / 1000000                    15.01 EUR
    tier 10000000–∞: 0 × 2.5 USD / 1000000                               0.00 EUR
    spans [starter]                                                     23.64 EUR
  base fee [starter]: 30 USD × 20/30 days                               17.27 EUR
  spans [growth]: volume pricing, prices per 1000000 count
    usage 9809662, allowance 2000000 (per month, prorated to the plan's days): free 2000000, billable 7809662
    tier 0–5000000: 0 × 4.5 USD / 1000000                                0.00 EUR
    tier 5000000–50000000: 7809662 × 3.5 USD / 1000000                  23.60 EUR
    tier 50000000–∞: 0 × 2 USD / 1000000                                 0.00 EUR
    spans [growth]                                                      23.60 EUR
  base fee [growth]: 90 USD × 10/30 days                                25.90 EUR

  availability 99.85 % (200000 requests, 300 errors)
  SLA credit [starter]: below 99.9 % → 10 % of 48.37                     4.84 EUR
  SLA credit [growth]: below 99.95 % → 15 % of 49.50                     7.43 EUR

  charges                                                               97.87 EUR
  SLA credit                                                            12.27 EUR
  subtotal                                                              85.60 EUR
  tax 19 %                                                              16.26 EUR
  total                                                                101.86 EUR
";
    assert_eq!(super::text::render(&inv), expected);
}

/// A plan that returns within the month is two periods, each prorated on its own,
/// and its lines say which period they belong to.
#[test]
fn a_returning_plan_is_priced_per_period() {
    let catalog = catalog();
    let yaml = format!(
        "{PLANS}  beta:\n    region: de\n    currency: EUR\n    plans:\n      - {{plan: starter, from: 2026-11-01, until: 2026-11-11}}\n      \
         - {{plan: growth, from: 2026-11-11, until: 2026-11-21}}\n      - {{plan: starter, from: 2026-11-21}}\n"
    );
    let book = parse(&yaml, Path::new("plans.yaml"), &catalog).unwrap();
    let mut usage = Usage::new();
    usage.set("spans", date!(2026 - 11 - 01), date!(2026 - 11 - 11), 1_000_000.into());
    usage.set("spans", date!(2026 - 11 - 21), date!(2026 - 12 - 01), 600_000.into());
    let inv = compute(
        &book,
        "beta",
        nov(),
        Inputs { usage: &usage, availability: Availability::default(), catalog: &catalog },
    )
    .unwrap();
    let summary: Vec<_> = inv
        .lines
        .iter()
        .map(|l| (l.plan.as_str(), l.plan_from, l.meter.as_deref().unwrap_or("fee"), l.amount.to_string()))
        .collect();
    assert_eq!(
        summary,
        [
            // 10 of 30 days: allowance 1,500,000 × 10/30 = 500,000 in each starter period.
            ("starter", date!(2026 - 11 - 01), "requests", "0.00".to_owned()),
            // 500,000 billable × 5 / 1M = 2.50 USD × 0.8634 = 2.1585 → 2.16
            ("starter", date!(2026 - 11 - 01), "spans", "2.16".into()),
            // 30 × 10/30 = 10 USD × 0.8634 = 8.634 → 8.63
            ("starter", date!(2026 - 11 - 01), "fee", "8.63".into()),
            ("growth", date!(2026 - 11 - 11), "spans", "0.00".into()),
            // 90 × 10/30 = 30 USD × 0.8634 = 25.902 → 25.90
            ("growth", date!(2026 - 11 - 11), "fee", "25.90".into()),
            ("starter", date!(2026 - 11 - 21), "requests", "0.00".into()),
            // 100,000 billable × 5 / 1M = 0.50 USD × 0.8634 = 0.4317 → 0.43
            ("starter", date!(2026 - 11 - 21), "spans", "0.43".into()),
            ("starter", date!(2026 - 11 - 21), "fee", "8.63".into()),
        ]
    );
    // 2.16 + 8.63 + 25.90 + 0.43 + 8.63 = 45.75; no requests, no credit; tax 19 % = 8.6925 → 8.69.
    assert_eq!(
        texts(&[inv.charges, inv.sla_credit, inv.subtotal, inv.tax, inv.total]),
        ["45.75", "0.00", "45.75", "8.69", "54.44"]
    );
    assert!(super::text::render(&inv).contains("  base fee [starter]: 30 USD × 10/30 days"));
}

/// Daily periods restart the tiers each day; a prorated monthly allowance is
/// rounded half away from zero to a whole unit.
#[test]
fn daily_tiers_restart_and_prorated_allowances_round_to_whole_units() {
    let yaml = "plans:\n  d:\n    currency: USD\n    meters:\n      \
                spans: {allowance: 100, period: day, tiers: [{up_to: 50, price: 1}, {price: 0.5}]}\n      \
                requests: {allowance: 1_000_000, price: 1, per: 1_000_000}\n      \
                log_records: {allowance: 1_000_001, price: 1, per: 1_000_000}\n\
                regions: {x: {tax_percent: 0}}\ntenants:\n  t: {region: x, plans: [{plan: d, from: 2026-11-15}]}\n";
    let catalog = catalog();
    let book = parse(yaml, Path::new("p.yaml"), &catalog).unwrap();
    let mut usage = Usage::new();
    usage.set("spans", date!(2026 - 11 - 15), date!(2026 - 11 - 16), 200.into());
    usage.set("spans", date!(2026 - 11 - 30), date!(2026 - 12 - 01), 120.into());
    usage.set("requests", date!(2026 - 11 - 15), date!(2026 - 12 - 01), 2_000_000.into());
    usage.set("log_records", date!(2026 - 11 - 15), date!(2026 - 12 - 01), 2_000_000.into());
    let inv =
        compute(&book, "t", nov(), Inputs { usage: &usage, availability: Availability::default(), catalog: &catalog })
            .unwrap();
    let line = |meter: &str| inv.lines.iter().find(|l| l.meter.as_deref() == Some(meter)).unwrap();
    // 15th: 200 − 100 free = 100 billable → 50 × 1 + 50 × 0.5; 30th: 120 − 100 = 20 → 20 × 1.
    let spans = line("spans");
    assert_eq!((spans.allowance, spans.free, spans.billable), (Some(d("1600")), Some(d("200")), Some(d("120"))));
    let tiers: Vec<_> = spans.tiers.iter().map(|t| (t.quantity.to_string(), t.amount.to_string())).collect();
    assert_eq!(tiers, [("70".to_owned(), "70.00".to_owned()), ("50".into(), "25.00".into())]);
    assert_eq!(spans.amount.to_string(), "95.00");
    // 16 of 30 days: 1,000,000 × 16/30 = 533,333.33… → 533,333; 2,000,000 − 533,333 = 1,466,667 × 1 / 1M = 1.466667 → 1.47.
    let requests = line("requests");
    assert_eq!(
        (requests.allowance, requests.billable, requests.amount.to_string()),
        (Some(d("533333")), Some(d("1466667")), "1.47".into())
    );
    // 1,000,001 × 16/30 = 533,333.866… → 533,334; 1,466,666 / 1M = 1.466666 → 1.47.
    let logs = line("log_records");
    assert_eq!(
        (logs.allowance, logs.billable, logs.amount.to_string()),
        (Some(d("533334")), Some(d("1466666")), "1.47".into())
    );
    assert_eq!(texts(&[inv.charges, inv.tax, inv.total]), ["97.94", "0.00", "97.94"]);
}
