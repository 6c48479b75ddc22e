//! Reports as CSV (RFC 4180: comma-separated, CRLF line ends, fields quoted when
//! they hold a comma, quote or line break). Decimals are written exactly; an absent
//! figure is an empty field.

use rust_decimal::Decimal;

use super::sla::{Figures, SlaReport};
use super::usage::UsageReport;
use crate::pricing::ymd;

fn field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, f);
    }
    out.push_str("\r\n");
}

fn opt(d: Option<Decimal>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

/// One row per tenant, meter and day, then one per tenant and meter for the month
/// (`period` is `YYYY-MM-DD` or `YYYY-MM`).
///
/// ```
/// use metering::report::{csv, usage::UsageReport};
/// let empty = UsageReport { month: "2026-11".into(), sealed_digest: None, tenants: vec![] };
/// assert_eq!(csv::usage(&empty), "tenant,meter,unit,period,value\r\n");
/// ```
pub fn usage(report: &UsageReport) -> String {
    let mut out = String::new();
    row(&mut out, &["tenant", "meter", "unit", "period", "value"]);
    for t in &report.tenants {
        for m in &t.meters {
            for d in &m.daily {
                row(&mut out, &[&t.tenant, &m.meter, &m.unit, &ymd(d.day), &d.value.to_string()]);
            }
            row(&mut out, &[&t.tenant, &m.meter, &m.unit, &report.month, &m.total.to_string()]);
        }
    }
    out
}

fn figures(f: &Figures) -> [String; 6] {
    [
        f.requests.to_string(),
        f.errors.to_string(),
        opt(f.availability_percent),
        opt(f.p50_ms),
        opt(f.p95_ms),
        opt(f.p99_ms),
    ]
}

/// One row per tenant (service empty: all services, with the objective, error
/// budget and credits) followed by one per service.
pub fn sla(report: &SlaReport) -> String {
    let mut out = String::new();
    row(
        &mut out,
        &[
            "month",
            "tenant",
            "service",
            "requests",
            "errors",
            "availability_percent",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "slo_availability_percent",
            "slo_p99_ms",
            "error_budget_used_percent",
            "credit",
            "currency",
        ],
    );
    for t in &report.tenants {
        let slo = t.slo.as_ref();
        let target = opt(slo.and_then(|s| s.availability_percent));
        let p99 = slo.and_then(|s| s.p99_ms).map(|v| v.to_string()).unwrap_or_default();
        let budget = opt(t.error_budget_used_percent);
        let credit = t.credits.as_ref().map(|c| c.total.to_string()).unwrap_or_default();
        let currency = t.credits.as_ref().map(|c| c.currency.clone()).unwrap_or_default();
        let f = figures(&t.figures);
        let mut fields: Vec<&str> = vec![&report.month, &t.tenant, ""];
        fields.extend(f.iter().map(String::as_str));
        fields.extend([target.as_str(), p99.as_str(), budget.as_str(), credit.as_str(), currency.as_str()]);
        row(&mut out, &fields);
        for s in &t.services {
            let f = figures(&s.figures);
            let mut fields: Vec<&str> = vec![&report.month, &t.tenant, &s.service];
            fields.extend(f.iter().map(String::as_str));
            fields.extend(["", "", "", "", ""]);
            row(&mut out, &fields);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_are_quoted_when_they_must_be() {
        let mut out = String::new();
        super::row(&mut out, &["a", "b,c", "say \"hi\"", "x\ny"]);
        assert_eq!(out, "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\"\r\n");
    }
}
