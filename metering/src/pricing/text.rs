//! An invoice as plain text, for `tally invoice --format text`: every figure
//! the JSON has, laid out so each amount can be checked against the ones above it.

use std::fmt::Write;

use super::invoice::{Invoice, LineKind};
use super::month::ymd;

/// Renders `invoice` as text.
pub fn render(invoice: &Invoice) -> String {
    let mut out = String::new();
    let cur = invoice.currency.code();
    let _ = writeln!(out, "Invoice {} for tenant {} ({cur}, region {})", invoice.month, invoice.tenant, invoice.region);
    for p in &invoice.plans {
        let _ = write!(out, "  plan {}: {} to {} (exclusive), {} of {} days, prices in {}", p.plan, ymd(p.from), ymd(p.until), p.days, p.month_days, p.price_currency.code());
        if let Some(c) = &p.conversion {
            let _ = write!(out, ", converted at 1 {} = {} {} (rate of {})", c.from.code(), c.rate, c.to.code(), ymd(c.date));
        }
        out.push('\n');
    }
    out.push('\n');
    for line in &invoice.lines {
        match line.kind {
            LineKind::Usage => {
                let opt = |v: Option<rust_decimal::Decimal>| v.map(|d| d.to_string()).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {} [{}] usage {} {}, allowance {} per {} → free {}, billable {} ({}, price per {})",
                    line.meter.as_deref().unwrap_or_default(),
                    line.plan,
                    opt(line.usage),
                    line.unit.as_deref().unwrap_or_default(),
                    opt(line.allowance),
                    line.period.map(|p| p.as_str()).unwrap_or_default(),
                    opt(line.free),
                    opt(line.billable),
                    line.pricing.map(|m| m.as_str()).unwrap_or_default(),
                    opt(line.per),
                );
                for t in &line.tiers {
                    let upper = t.up_to.map_or_else(|| "∞".to_owned(), |u| u.to_string());
                    let _ = writeln!(out, "      tier {}–{}: {} × {} → {:>14} {cur}", t.from, upper, t.quantity, t.unit_price, t.amount.to_string());
                }
                let _ = writeln!(out, "    {:<56} {:>14} {cur}", "line", line.amount.to_string());
            }
            LineKind::BaseFee => {
                let fee = line.fee.map(|f| f.to_string()).unwrap_or_default();
                let label = format!("base fee [{}] {fee} per month, prorated", line.plan);
                let _ = writeln!(out, "  {label:<58} {:>14} {cur}", line.amount.to_string());
            }
        }
    }
    out.push('\n');
    let availability = invoice.sla.availability_percent.map_or_else(|| "no requests".to_owned(), |p| format!("{p} %"));
    let _ = writeln!(out, "  availability {availability} ({} requests, {} errors)", invoice.sla.requests, invoice.sla.errors);
    for c in &invoice.credits {
        let _ = writeln!(out, "  SLA credit [{}]: below {} % → {} % of {} = {} {cur}", c.plan, c.below, c.percent, c.charges, c.amount);
    }
    let row = |out: &mut String, label: &str, v: &rust_decimal::Decimal| {
        let _ = writeln!(out, "  {label:<58} {:>14} {cur}", v.to_string());
    };
    row(&mut out, "charges", &invoice.charges);
    row(&mut out, "SLA credit", &invoice.sla_credit);
    row(&mut out, "subtotal", &invoice.subtotal);
    row(&mut out, &format!("tax {} %", invoice.tax_percent), &invoice.tax);
    row(&mut out, "total", &invoice.total);
    out
}
