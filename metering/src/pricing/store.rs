//! The thin part that reads ClickHouse: a month's usage windows through the
//! usage roll-ups (`store::rollup`) and its availability through the SLA reads
//! (`sla::query`), then [`compute`]. They are the same queries the billing API's
//! usage and SLA reads run, so they run on ClickHouse 18.16 and on current servers
//! alike; the steps are public so tests can run them on chDB too.

use std::future::Future;

use time::{Date, OffsetDateTime};

use super::credit::Availability;
use super::invoice::{add_adjustments, adjustments, compute, windows, Inputs, Invoice, InvoiceError, Usage, Window};
use super::plan::{Period, PriceBook};
use super::BillingMonth;
use crate::meter::Catalog;
use crate::seal::rollup::Sealed;
use crate::sla::{query_sla, SlaGrouping, SlaPoint, SlaQuery};
use crate::store::rollup::{query_usage_all, Granularity, UsagePoint, UsageQuery, MAX_LIMIT};
use crate::store::Store;
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

/// The roll-up that fills `window` for `tenant`: one total per meter over the
/// window, or one per meter and day. Pages of [`MAX_LIMIT`] points.
pub fn usage_query(tenant: &str, window: &Window) -> UsageQuery {
    let mut query = UsageQuery::new(midnight(window.from), midnight(window.until));
    query.tenant = Some(tenant.to_owned());
    query.granularity = match window.by {
        Period::Month => Granularity::Month,
        Period::Day => Granularity::Day,
    };
    query.limit = MAX_LIMIT;
    query
}

/// Records the points of [`usage_query`]`(window)` in `usage`.
pub fn record_usage(usage: &mut Usage, window: &Window, points: &[UsagePoint]) {
    for p in points {
        match window.by {
            // A window lies within one month, so its month bucket is the whole window.
            Period::Month => usage.set(&p.meter, window.from, window.until, p.value),
            Period::Day => {
                let day = p.start.date();
                let next = day.next_day().unwrap_or(day);
                usage.set(&p.meter, day, next, p.value);
            }
        }
    }
}

/// The SLA read of `tenant`'s month: one point per service.
pub fn sla_query(tenant: &str, month: BillingMonth) -> SlaQuery {
    SlaQuery {
        tenant: Some(tenant.to_owned()),
        service: None,
        from: midnight(month.first_day()),
        to: midnight(month.end()),
        granularity: Granularity::Month,
        grouping: SlaGrouping::Service,
        sealed: None,
        settled: None,
    }
}

/// The month's availability from the points of [`sla_query`]: every service's requests and errors.
pub fn availability<'a>(points: impl IntoIterator<Item = &'a SlaPoint>) -> Availability {
    points.into_iter().fold(Availability::default(), |a, p| Availability {
        requests: a.requests.saturating_add(p.requests),
        errors: a.errors.saturating_add(p.errors),
    })
}

/// Prices `tenant`'s `month` from live usage and SLA rows, or from the snapshot of seal `sealed`.
async fn price(
    store: &Store,
    book: &PriceBook,
    catalog: &Catalog,
    tenant: &str,
    month: BillingMonth,
    sealed: Option<&Sealed>,
) -> Result<Invoice, InvoiceFailure> {
    let mut sla = sla_query(tenant, month);
    sla.sealed = sealed.cloned();
    let read = async { Ok(availability(&query_sla(store, &sla).await?)) };
    price_with(store, book, catalog, tenant, month, sealed, read).await
}

/// [`price`] with the month's availability from `availability` (an SLA report has read it
/// already), read while the usage is: the month's charges and credits, without adjustments.
pub async fn price_with(
    store: &Store,
    book: &PriceBook,
    catalog: &Catalog,
    tenant: &str,
    month: BillingMonth,
    sealed: Option<&Sealed>,
    availability: impl Future<Output = Result<Availability, StoreError>>,
) -> Result<Invoice, InvoiceFailure> {
    let usage = async {
        let mut usage = Usage::new();
        for window in windows(book, tenant, month)? {
            let mut query = usage_query(tenant, &window);
            query.sealed = sealed.cloned();
            let points = query_usage_all(store, &query).await?;
            record_usage(&mut usage, &window, &points);
        }
        Ok::<_, InvoiceFailure>(usage)
    };
    // Two reads at once: an invoice waits for the slower, not for both in turn.
    let (usage, availability) = tokio::try_join!(usage, async { Ok(availability.await?) })?;
    let sealed = sealed.map(|s| s.seal_id.as_str());
    tracing::debug!(tenant, %month, sealed, requests = availability.requests, errors = availability.errors, "pricing month");
    Ok(compute(book, tenant, month, Inputs { usage: &usage, availability, catalog })?)
}

/// Reads `tenant`'s usage and availability for `month` from `db` and prices it. A
/// sealed month is priced from its snapshot; when the previous month is sealed,
/// its late usage is charged here as adjustments.
pub async fn invoice(
    store: &Store,
    book: &PriceBook,
    catalog: &Catalog,
    tenant: &str,
    month: BillingMonth,
) -> Result<Invoice, InvoiceFailure> {
    // One read of the seals serves this month and the previous one.
    let seals = crate::seal::store::seals(store).await?;
    let seal_of = |m: BillingMonth| seals.iter().find(|p| p.month == m.to_string());
    let seal = seal_of(month);
    let mut invoice =
        price(store, book, catalog, tenant, month, seal.map(crate::seal::Period::sealed).as_ref()).await?;
    invoice.sealed_digest = seal.map(|s| s.digest.clone());
    let previous = month.previous();
    let Some(prev_seal) = seal_of(previous) else { return Ok(invoice) };
    let sealed = price(store, book, catalog, tenant, previous, Some(&prev_seal.sealed())).await;
    let live = price(store, book, catalog, tenant, previous, None).await;
    match (sealed, live) {
        (Ok(sealed), Ok(live)) => Ok(add_adjustments(invoice, adjustments(&sealed, &live))?),
        // No plan last month: nothing of it is billed, late or not.
        (Err(InvoiceFailure::Invoice(InvoiceError::UnknownTenant(_) | InvoiceError::NoPlan { .. })), _) => Ok(invoice),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}
