//! The thin part that reads ClickHouse: a month's usage windows through the
//! usage roll-ups (`store::rollup`) and its availability through the SLA reads
//! (`sla::query`), then [`compute`]. The same SQL the billing API's usage and SLA
//! reads run, so it runs on ClickHouse 18.16 and on current servers alike.

use time::{Date, OffsetDateTime};

use super::credit::Availability;
use super::invoice::{compute, windows, Inputs, Invoice, InvoiceError, Usage};
use super::plan::{Period, PriceBook};
use super::BillingMonth;
use crate::clickhouse::ClickHouse;
use crate::meter::Catalog;
use crate::sla::{query_sla, SlaGrouping, SlaQuery};
use crate::store::rollup::{query_usage, Granularity, UsageQuery, MAX_LIMIT};
use crate::store::StoreError;

/// Why an invoice could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum InvoiceFailure {
    /// The plans do not allow it.
    #[error(transparent)]
    Invoice(#[from] InvoiceError),
    /// The usage store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn midnight(day: Date) -> OffsetDateTime {
    day.midnight().assume_utc()
}

/// Reads `tenant`'s usage and availability for `month` from `db` and prices it.
pub async fn invoice(
    ch: &ClickHouse,
    db: &str,
    book: &PriceBook,
    catalog: &Catalog,
    tenant: &str,
    month: BillingMonth,
) -> Result<Invoice, InvoiceFailure> {
    let mut usage = Usage::new();
    for window in windows(book, tenant, month)? {
        let mut query = UsageQuery::new(midnight(window.from), midnight(window.until));
        query.tenant = Some(tenant.to_owned());
        query.granularity = match window.by {
            Period::Month => Granularity::Month,
            Period::Day => Granularity::Day,
        };
        query.limit = MAX_LIMIT;
        loop {
            let points = query_usage(ch, db, &query).await?;
            for p in &points {
                match window.by {
                    Period::Month => usage.set(&p.meter, window.from, window.until, p.value),
                    Period::Day => {
                        let day = p.start.date();
                        let next = day.next_day().unwrap_or(day);
                        usage.set(&p.meter, day, next, p.value);
                    }
                }
            }
            match points.last() {
                Some(last) if points.len() == MAX_LIMIT as usize => query.after = Some(last.key.clone()),
                _ => break,
            }
        }
    }
    let sla = SlaQuery {
        tenant: Some(tenant.to_owned()),
        service: None,
        from: midnight(month.first_day()),
        to: midnight(month.end()),
        granularity: Granularity::Month,
        grouping: SlaGrouping::Service,
    };
    let mut availability = Availability::default();
    for p in query_sla(ch, db, &sla).await? {
        availability.requests += p.requests;
        availability.errors += p.errors;
    }
    tracing::debug!(tenant, %month, requests = availability.requests, errors = availability.errors, "pricing month");
    Ok(compute(book, tenant, month, Inputs { usage: &usage, availability, catalog })?)
}
