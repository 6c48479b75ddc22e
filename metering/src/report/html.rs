//! Reports as one self-contained HTML page: inline CSS and SVG charts, no
//! scripts, no external assets (it can be mailed or opened offline). Every figure
//! in a chart is also in a table or a tooltip, written from the exact decimals.

use std::fmt::Write;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use super::sla::{Figures, SlaReport, TenantSla};
use super::svg::{bars, esc, lines, zero_based, Series};
use super::usage::UsageReport;
use crate::pricing::ymd;

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2933;background:#f5f7fa;margin:0;padding:24px}\
main{max-width:840px;margin:0 auto}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0 0 12px}h3{font-size:15px;margin:18px 0 6px}\
.sub{color:#616e7c;margin:0 0 20px}\
section{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:18px 20px;margin:0 0 20px}\
.kpis{display:flex;flex-wrap:wrap;gap:10px;margin:0 0 8px}\
.kpi{border:1px solid #e4e7eb;border-radius:6px;padding:8px 12px;min-width:110px}\
.kpi b{display:block;font-size:18px}.kpi span{color:#616e7c;font-size:12px}\
.kpi.bad b{color:#c0392b}.kpi.good b{color:#1e8449}\
table{border-collapse:collapse;width:100%;margin:6px 0 0;font-variant-numeric:tabular-nums}\
th,td{text-align:right;padding:4px 8px;border-bottom:1px solid #e4e7eb}th{color:#616e7c;font-weight:600}\
th:first-child,td:first-child{text-align:left}code{font-size:12px}\
td.hour{white-space:nowrap}td.traces{text-align:left;font-size:12px}.trace{display:block;white-space:nowrap}.trace code{font-size:10.5px}\
.chart{display:block;max-width:100%;height:auto}\
.grid{stroke:#e4e7eb;stroke-width:1}.tick{fill:#7b8794;font-size:11px}\
.bar{fill:#3f7fbf}.bar:hover{fill:#2c5f94}\
.series{fill:none;stroke-width:2}.target{stroke:#c0392b;stroke-width:1.5;stroke-dasharray:5 4}\
.s-availability{stroke:#1e8449}.dot.s-availability{fill:#1e8449}\
.s-p50{stroke:#3f7fbf}.dot.s-p50{fill:#3f7fbf}.s-p95{stroke:#e67e22}.dot.s-p95{fill:#e67e22}.s-p99{stroke:#8e44ad}.dot.s-p99{fill:#8e44ad}\
circle.dot{stroke:none}\
.legend{font-size:12px;color:#616e7c;margin:2px 0 0}.legend i{display:inline-block;width:14px;height:3px;margin:0 4px 3px 10px;vertical-align:middle}\
.none{color:#7b8794}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n",
        esc(title)
    )
}

fn draw(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// Groups digits of an exact decimal for reading: `1234567.5` → `1,234,567.5`.
fn grouped(d: Decimal) -> String {
    let s = d.to_string();
    let (sign, s) = s.strip_prefix('-').map_or(("", s.as_str()), |r| ("-", r));
    let (int, frac) = s.split_once('.').map_or((s, None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

fn opt(d: Option<Decimal>, suffix: &str) -> String {
    d.map_or_else(|| "—".to_owned(), |d| format!("{}{suffix}", grouped(d)))
}

/// The usage report: per tenant, per meter its month total and a bar per day.
pub fn usage(report: &UsageReport) -> String {
    let mut body = format!(
        "<h1>Usage report {}</h1><p class=\"sub\">Per tenant and meter: the month's total and each UTC day.",
        esc(&report.month)
    );
    if let Some(digest) = &report.sealed_digest {
        let _ =
            write!(body, " The month is sealed: these are its sealed figures (digest <code>{}</code>).", esc(digest));
    }
    body.push_str("</p>");
    if report.tenants.is_empty() {
        body.push_str("<section><p class=\"none\">No usage this month.</p></section>");
    }
    for t in &report.tenants {
        let _ = write!(
            body,
            "<section class=\"tenant\"><h2>{}</h2><table><tr><th>meter</th><th>unit</th><th>month total</th></tr>",
            esc(&t.tenant)
        );
        for m in &t.meters {
            let _ = write!(
                body,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&m.meter),
                esc(&m.unit),
                grouped(m.total)
            );
        }
        body.push_str("</table>");
        for m in &t.meters {
            let days: Vec<_> =
                m.daily.iter().map(|d| (d.day, draw(d.value), format!("{} {}", grouped(d.value), m.unit))).collect();
            let _ = write!(
                body,
                "<h3><code>{}</code> per day ({}), total {}</h3>",
                esc(&m.meter),
                esc(&m.unit),
                grouped(m.total)
            );
            body.push_str(&bars(&format!("{} per day of {}", m.meter, report.month), &days));
        }
        body.push_str("</section>");
    }
    page(&format!("Usage report {}", report.month), &body)
}

/// `99.5` → `99.5 %`: an axis label with no more decimals than it needs.
fn percent_label(v: f64) -> String {
    let s = format!("{v:.4}");
    format!("{} %", s.trim_end_matches('0').trim_end_matches('.'))
}

fn kpi(out: &mut String, class: &str, value: &str, label: &str) {
    let _ = write!(out, "<div class=\"kpi {class}\"><b>{}</b><span>{}</span></div>", esc(value), esc(label));
}

fn figures_row(out: &mut String, name: &str, f: &Figures) {
    let _ = write!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(name),
        grouped(f.requests.into()),
        grouped(f.errors.into()),
        opt(f.availability_percent, " %"),
        opt(f.p50_ms, " ms"),
        opt(f.p95_ms, " ms"),
        opt(f.p99_ms, " ms")
    );
}

fn tenant_sla(body: &mut String, month: &str, t: &TenantSla) {
    let _ = write!(body, "<section class=\"tenant\"><h2>{}</h2><div class=\"kpis\">", esc(&t.tenant));
    let target = t.slo.as_ref().and_then(|s| s.availability_percent);
    let met = match (t.figures.availability_percent, target) {
        (Some(_), Some(_)) => {
            // The exact comparison pricing uses, not the rounded percentage.
            let a = crate::pricing::credit::Availability { requests: t.figures.requests, errors: t.figures.errors };
            if target.is_some_and(|t| a.is_below(t)) {
                "bad"
            } else {
                "good"
            }
        }
        _ => "",
    };
    kpi(body, met, &opt(t.figures.availability_percent, " %"), &format!("availability (target {})", opt(target, " %")));
    kpi(body, "", &grouped(t.figures.requests.into()), "requests");
    kpi(body, "", &grouped(t.figures.errors.into()), "errors");
    let p99_class = match t.p99_met {
        Some(true) => "good",
        Some(false) => "bad",
        None => "",
    };
    let p99_target = t.slo.as_ref().and_then(|s| s.p99_ms).map_or_else(|| "—".to_owned(), |ms| format!("{ms} ms"));
    kpi(body, p99_class, &opt(t.figures.p99_ms, " ms"), &format!("p99 (target {p99_target})"));
    kpi(body, "", &format!("{} / {}", opt(t.figures.p50_ms, ""), opt(t.figures.p95_ms, " ms")), "p50 / p95");
    let budget_class = match t.error_budget_used_percent {
        Some(b) if b > Decimal::ONE_HUNDRED => "bad",
        Some(_) => "good",
        None => "",
    };
    kpi(body, budget_class, &opt(t.error_budget_used_percent, " %"), "error budget used");
    match &t.credits {
        Some(c) => kpi(
            body,
            if c.total.is_zero() { "" } else { "bad" },
            &format!("{} {}", c.total, c.currency),
            "SLA credit owed",
        ),
        None => kpi(body, "", "—", "SLA credit (no plan)"),
    }
    body.push_str("</div>");

    let days: Vec<_> = t.daily.iter().map(|d| d.day).collect();
    // Availability: from a little under the lowest day (or the target) up to 100 %.
    let avail: Vec<Option<(f64, String)>> =
        t.daily.iter().map(|d| d.figures.availability_percent.map(|a| (draw(a), format!("{a} %")))).collect();
    // The axis spans a round distance (1, 2 or 5 × 10ⁿ points) below 100 % that
    // holds the lowest day and the target with some room.
    let low = avail.iter().flatten().map(|v| v.0).chain(target.map(draw)).fold(100.0, f64::min);
    let span = super::svg::nice_ceiling(((100.0 - low) * 1.25).max(0.1)).min(100.0);
    let lo = 100.0 - span;
    let ticks: Vec<(f64, String)> = [lo, 100.0 - span / 2.0, 100.0].iter().map(|v| (*v, percent_label(*v))).collect();
    let _ = write!(body, "<h3>Availability per day</h3>");
    let target_line = target.map(|t| (draw(t), format!("target {t} %")));
    body.push_str(&lines(
        &format!("availability per day of {month}"),
        &days,
        &[Series { name: "availability", values: avail }],
        (lo, 100.0),
        target_line,
        &ticks,
    ));
    body.push_str("<p class=\"legend\"><i style=\"background:#1e8449\"></i>availability");
    if target.is_some() {
        body.push_str("<i style=\"background:#c0392b\"></i>target");
    }
    body.push_str("</p>");

    let pick = |f: fn(&Figures) -> Option<Decimal>| -> Vec<Option<(f64, String)>> {
        t.daily.iter().map(|d| f(&d.figures).map(|v| (draw(v), format!("{v} ms")))).collect()
    };
    let series = [
        Series { name: "p50", values: pick(|f| f.p50_ms) },
        Series { name: "p95", values: pick(|f| f.p95_ms) },
        Series { name: "p99", values: pick(|f| f.p99_ms) },
    ];
    let p99_goal = t.slo.as_ref().and_then(|s| s.p99_ms);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().map(|v| v.0))
        .chain(p99_goal.map(|v| v as f64))
        .fold(0.0, f64::max);
    let (range, ticks) = zero_based(max, |v| format!("{v} ms"));
    let _ = write!(body, "<h3>Latency per day</h3>");
    let goal_line = p99_goal.map(|ms| (ms as f64, format!("p99 target {ms} ms")));
    body.push_str(&lines(&format!("latency percentiles per day of {month}"), &days, &series, range, goal_line, &ticks));
    body.push_str("<p class=\"legend\"><i style=\"background:#3f7fbf\"></i>p50<i style=\"background:#e67e22\"></i>p95<i style=\"background:#8e44ad\"></i>p99");
    if p99_goal.is_some() {
        body.push_str("<i style=\"background:#c0392b\"></i>p99 target");
    }
    body.push_str("</p>");

    body.push_str("<h3>Services</h3><table><tr><th>service</th><th>requests</th><th>errors</th><th>availability</th><th>p50</th><th>p95</th><th>p99</th></tr>");
    for s in &t.services {
        figures_row(body, if s.service.is_empty() { "(none)" } else { &s.service }, &s.figures);
    }
    figures_row(body, "all services", &t.figures);
    body.push_str("</table>");

    body.push_str("<h3>Worst hours</h3>");
    if t.worst_hours.is_empty() {
        body.push_str("<p class=\"none\">No failed requests this month.</p>");
    } else {
        body.push_str("<table class=\"worst\"><tr><th>hour (UTC)</th><th>service</th><th>requests</th><th>errors</th><th>availability</th><th style=\"text-align:left\">exemplar traces</th></tr>");
        for h in &t.worst_hours {
            let start = format!("{} {:02}:00", ymd(h.start.date()), h.start.hour());
            let traces: Vec<String> = h
                .exemplars
                .iter()
                .map(|e| {
                    format!(
                        "<span class=\"trace\"><code>{}</code> {} ms{}</span>",
                        esc(&e.trace_id),
                        e.latency_ms,
                        if e.error { " failed" } else { "" }
                    )
                })
                .collect();
            let _ = write!(
                body,
                "<tr><td class=\"hour\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"traces\">{}</td></tr>",
                esc(&start),
                esc(&h.service),
                grouped(h.requests.into()),
                grouped(h.errors.into()),
                opt(h.availability_percent, " %"),
                traces.join("")
            );
        }
        body.push_str("</table>");
    }
    if let Some(c) = &t.credits {
        if !c.credits.is_empty() {
            body.push_str("<h3>Credits owed</h3><table><tr><th>plan</th><th>from</th><th>below</th><th>percent</th><th>of charges</th><th>credit</th></tr>");
            for cr in &c.credits {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{} %</td><td>{} %</td><td>{} {}</td><td>{} {}</td></tr>",
                    esc(&cr.plan),
                    ymd(cr.plan_from),
                    cr.below,
                    cr.percent,
                    cr.charges,
                    esc(&c.currency),
                    cr.amount,
                    esc(&c.currency)
                );
            }
            body.push_str("</table>");
        }
    }
    body.push_str("</section>");
}

/// The SLA report: per tenant its figures, daily availability and latency charts,
/// services, worst hours and credits.
pub fn sla(report: &SlaReport) -> String {
    let mut body = format!(
        "<h1>SLA report {}</h1><p class=\"sub\">Availability is (requests − errors) / requests; percentiles are within 0.39 % of the exact value.",
        esc(&report.month)
    );
    if let Some(digest) = &report.sealed_digest {
        let _ =
            write!(body, " The month is sealed: these are its sealed figures (digest <code>{}</code>).", esc(digest));
    }
    body.push_str("</p>");
    if report.tenants.is_empty() {
        body.push_str("<section><p class=\"none\">No requests this month.</p></section>");
    }
    for t in &report.tenants {
        tenant_sla(&mut body, &report.month, t);
    }
    page(&format!("SLA report {}", report.month), &body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn digits_are_grouped_exactly() {
        let g = |s: &str| super::grouped(s.parse().unwrap());
        assert_eq!(
            [g("0"), g("999"), g("1000"), g("1234567.891"), g("-12345")],
            ["0", "999", "1,000", "1,234,567.891", "-12,345"]
        );
    }
}
