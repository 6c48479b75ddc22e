//! An invoice as plain text, for `tally invoice --format text`: every figure
//! the JSON has, laid out so each amount can be checked against the ones above it.

use std::fmt::Write;

use rust_decimal::Decimal;

use super::invoice::{Invoice, LineKind};
use super::month::ymd;

/// Width of the label column; amounts are right-aligned after it.
const LABEL: usize = 64;

/// Renders `invoice` as text.
pub fn render(invoice: &Invoice) -> String {
    let mut out = String::new();
    let cur = invoice.currency.code();
    let row = |out: &mut String, label: &str, amount: &Decimal| {
        let _ = writeln!(out, "{label:<LABEL$} {:>12} {cur}", amount.to_string());
    };
    let _ = writeln!(out, "Invoice {} for tenant {} ({cur}, region {})", invoice.month, invoice.tenant, invoice.region);
    for p in &invoice.plans {
        let _ = write!(
            out,
            "  plan {}: {} to {} (exclusive), {} of {} days, prices in {}",
            p.plan,
            ymd(p.from),
            ymd(p.until),
            p.days,
            p.month_days,
            p.price_currency
        );
        if let Some(c) = &p.conversion {
            let _ = write!(out, ", converted at 1 {} = {} {} (rate of {})", c.from, c.rate, c.to, ymd(c.date));
        }
        out.push('\n');
    }
    out.push('\n');
    for line in &invoice.lines {
        let plan = invoice.plans.iter().find(|p| p.plan == line.plan && p.from == line.plan_from);
        let price_currency = plan.map(|p| p.price_currency.code()).unwrap_or_default();
        let text = |v: Option<Decimal>| v.map(|d| d.to_string()).unwrap_or_default();
        match line.kind {
            LineKind::Usage => {
                let meter = line.meter.as_deref().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {meter} [{}]: {} pricing, prices per {} {}",
                    line.plan,
                    line.pricing.map(|m| m.as_str()).unwrap_or_default(),
                    text(line.per),
                    line.unit.as_deref().unwrap_or_default(),
                );
                let _ = writeln!(
                    out,
                    "    usage {}, allowance {} ({}): free {}, billable {}",
                    text(line.usage),
                    text(line.allowance),
                    match line.period {
                        Some(super::plan::Period::Day) => "per day, over the plan's days",
                        _ => "per month, prorated to the plan's days",
                    },
                    text(line.free),
                    text(line.billable),
                );
                for t in &line.tiers {
                    let upper = t.up_to.map_or_else(|| "∞".to_owned(), |u| u.to_string());
                    let label = format!(
                        "    tier {}–{upper}: {} × {} {price_currency} / {}",
                        t.from,
                        t.quantity,
                        t.unit_price,
                        text(line.per)
                    );
                    row(&mut out, &label, &t.amount);
                }
                row(&mut out, &format!("    {meter} [{}]", line.plan), &line.amount);
            }
            LineKind::BaseFee => {
                let days = plan.map(|p| format!(" × {}/{} days", p.days, p.month_days)).unwrap_or_default();
                let label = format!("  base fee [{}]: {} {price_currency}{days}", line.plan, text(line.fee));
                row(&mut out, &label, &line.amount);
            }
        }
    }
    for a in &invoice.adjustments {
        let label = format!(
            "  adjustment {} {} [{}]: late usage {} {}",
            a.month,
            a.meter,
            a.plan,
            a.late_usage,
            a.unit.as_deref().unwrap_or_default()
        );
        row(&mut out, &label, &a.amount);
    }
    if let Some(digest) = &invoice.sealed_digest {
        let _ = writeln!(out, "  usage as sealed (digest {digest})");
    }
    out.push('\n');
    let availability = invoice.sla.availability_percent.map_or_else(|| "no requests".to_owned(), |p| format!("{p} %"));
    let _ = writeln!(
        out,
        "  availability {availability} ({} requests, {} errors)",
        invoice.sla.requests, invoice.sla.errors
    );
    for c in &invoice.credits {
        let label = format!("  SLA credit [{}]: below {} % → {} % of {}", c.plan, c.below, c.percent, c.charges);
        row(&mut out, &label, &c.amount);
    }
    out.push('\n');
    row(&mut out, "  charges", &invoice.charges);
    row(&mut out, "  SLA credit", &invoice.sla_credit);
    row(&mut out, "  subtotal", &invoice.subtotal);
    row(&mut out, &format!("  tax {} %", invoice.tax_percent), &invoice.tax);
    row(&mut out, "  total", &invoice.total);
    out
}
