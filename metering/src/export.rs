//! Exports of a month's usage for billing systems, from the usage report (so a
//! sealed month exports its sealed figures): one record per tenant, meter and UTC
//! day with usage.
//!
//! - `cloudevents`: CloudEvents 1.0 in structured JSON mode, one per line (JSON Lines).
//!   `id` is `<tenant>/<meter>/<day>` (with `source` unique per event), so a consumer
//!   can take the latest of an unsealed month exported again.
//! - `stripe`: the parameters of Stripe's `POST /v1/billing/meter_events`, one JSON per
//!   line: `event_name` is the meter, `payload.stripe_customer_id` the tenant's Stripe
//!   customer (`--stripe-customer acme=cus_…`), `payload.value` the day's value,
//!   `timestamp` the day's first second, `identifier` unique per tenant, meter and day.
//!   Stripe takes whole numbers: a fractional value is refused, never rounded.
//! - `csv`: the usage report's CSV.
//!
//! Values are the meter's roll-up per day: for `max` and `unique_count` meters, days
//! do not add up to the month (configure the Stripe meter to match).

use std::collections::BTreeMap;
use std::fmt::Write;

use rust_decimal::Decimal;
use serde_json::json;

use crate::pricing::ymd;
use crate::report::usage::UsageReport;

/// How `tally export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// CloudEvents 1.0, JSON Lines.
    Cloudevents,
    /// Stripe meter events, JSON Lines.
    Stripe,
    /// The usage report's CSV.
    Csv,
}

/// Why an export cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// A tenant with usage has no Stripe customer.
    #[error("no Stripe customer for tenant(s) {0}: pass --stripe-customer TENANT=cus_…")]
    NoCustomer(String),
    /// Stripe meter events take whole numbers.
    #[error("{tenant}'s {meter} on {day} is {value}, and Stripe meter events take whole numbers; leave the meter out (--meter) or meter it in a smaller unit")]
    Fractional {
        /// Tenant.
        tenant: String,
        /// Meter.
        meter: String,
        /// Day.
        day: String,
        /// Value.
        value: Decimal,
    },
}

/// Each (tenant, meter, unit, day, value) with usage, in report order.
fn days<'r>(
    report: &'r UsageReport,
    meters: &'r [String],
) -> impl Iterator<Item = (&'r str, &'r str, &'r str, time::Date, Decimal)> + 'r {
    report.tenants.iter().flat_map(move |t| {
        t.meters.iter().filter(move |m| meters.is_empty() || meters.contains(&m.meter)).flat_map(move |m| {
            m.daily
                .iter()
                .filter(|d| !d.value.is_zero())
                .map(move |d| (t.tenant.as_str(), m.meter.as_str(), m.unit.as_str(), d.day, d.value))
        })
    })
}

fn rfc3339(day: time::Date) -> String {
    format!("{}T00:00:00Z", ymd(day))
}

/// CloudEvents 1.0 (structured JSON), one per line, for `meters` (all when empty).
///
/// ```
/// use metering::export::cloudevents;
/// use metering::report::usage::UsageReport;
/// let empty = UsageReport { month: "2026-11".into(), sealed_digest: None, tenants: vec![] };
/// assert_eq!(cloudevents(&empty, &[], "tally/prod"), "");
/// ```
pub fn cloudevents(report: &UsageReport, meters: &[String], source: &str) -> String {
    let mut out = String::new();
    for (tenant, meter, unit, day, value) in days(report, meters) {
        let next = day.next_day().unwrap_or(day);
        let mut data = json!({"tenant": tenant, "meter": meter, "unit": unit, "start": rfc3339(day), "end": rfc3339(next), "value": value.to_string()});
        if let Some(d) = &report.sealed_digest {
            data["sealed_digest"] = json!(d);
        }
        let event = json!({
            "specversion": "1.0",
            "id": format!("{tenant}/{meter}/{}", ymd(day)),
            "source": source,
            "type": "dev.tally.usage.daily",
            "subject": tenant,
            "time": rfc3339(day),
            "datacontenttype": "application/json",
            "data": data,
        });
        let _ = writeln!(out, "{event}");
    }
    out
}

/// Stripe meter events, one per line, for `meters` (all when empty), with each
/// tenant's Stripe customer from `customers`.
pub fn stripe(
    report: &UsageReport,
    meters: &[String],
    customers: &BTreeMap<String, String>,
) -> Result<String, ExportError> {
    let missing: Vec<&str> = days(report, meters)
        .map(|d| d.0)
        .filter(|t| !customers.contains_key(*t))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        return Err(ExportError::NoCustomer(missing.join(", ")));
    }
    let mut out = String::new();
    for (tenant, meter, _, day, value) in days(report, meters) {
        if !value.fract().is_zero() {
            return Err(ExportError::Fractional { tenant: tenant.into(), meter: meter.into(), day: ymd(day), value });
        }
        let event = json!({
            "event_name": meter,
            "identifier": format!("tally-{tenant}-{meter}-{}", ymd(day)),
            "timestamp": day.midnight().assume_utc().unix_timestamp(),
            "payload": {"stripe_customer_id": customers[tenant], "value": value.normalize().to_string()},
        });
        let _ = writeln!(out, "{event}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::usage::{DayValue, MeterUsage, TenantUsage};
    use time::macros::date;

    fn report() -> UsageReport {
        let meter = |name: &str, unit: &str, days: &[(time::Date, &str)]| MeterUsage {
            meter: name.into(),
            unit: unit.into(),
            total: days.iter().map(|d| d.1.parse::<Decimal>().unwrap()).sum(),
            daily: days.iter().map(|(day, v)| DayValue { day: *day, value: v.parse().unwrap() }).collect(),
        };
        UsageReport {
            month: "2026-11".into(),
            sealed_digest: None,
            tenants: vec![TenantUsage {
                tenant: "acme".into(),
                meters: vec![
                    meter("cpu_seconds", "seconds", &[(date!(2026 - 11 - 01), "1.25")]),
                    meter(
                        "spans",
                        "count",
                        &[
                            (date!(2026 - 11 - 01), "1500"),
                            (date!(2026 - 11 - 02), "0"),
                            (date!(2026 - 11 - 30), "250"),
                        ],
                    ),
                ],
            }],
        }
    }

    #[test]
    fn cloudevents_one_per_day_with_usage() {
        let out = cloudevents(&report(), &["spans".into()], "tally/prod");
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            json!({"specversion": "1.0", "id": "acme/spans/2026-11-01", "source": "tally/prod", "type": "dev.tally.usage.daily", "subject": "acme",
                   "time": "2026-11-01T00:00:00Z", "datacontenttype": "application/json",
                   "data": {"tenant": "acme", "meter": "spans", "unit": "count", "start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z", "value": "1500"}})
        );
        assert_eq!(lines[1]["data"]["value"], "250");
        assert_eq!(cloudevents(&report(), &[], "s").lines().count(), 3);
    }

    #[test]
    fn stripe_needs_customers_and_whole_numbers() {
        let customers: BTreeMap<String, String> = [("acme".to_owned(), "cus_123".to_owned())].into();
        let out = stripe(&report(), &["spans".into()], &customers).unwrap();
        let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(
            first,
            json!({"event_name": "spans", "identifier": "tally-acme-spans-2026-11-01", "timestamp": 1_793_491_200, "payload": {"stripe_customer_id": "cus_123", "value": "1500"}})
        );
        assert_eq!(out.lines().count(), 2);
        assert_eq!(stripe(&report(), &[], &BTreeMap::new()), Err(ExportError::NoCustomer("acme".into())));
        let err = stripe(&report(), &[], &customers).unwrap_err();
        assert_eq!(err.to_string(), "acme's cpu_seconds on 2026-11-01 is 1.25, and Stripe meter events take whole numbers; leave the meter out (--meter) or meter it in a smaller unit");
    }
}
