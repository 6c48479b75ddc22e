//! The thin part that reads ClickHouse: a month's usage windows through the
//! usage roll-ups (`store::rollup`) and its availability through the SLA reads
//! (`sla::query`), then [`compute`]. They are the same queries the billing API's
//! usage and SLA reads run, so they run on ClickHouse 18.16 and on current servers
//! alike; the steps are public so tests can run them on chDB too.

use std::collections::{BTreeMap, BTreeSet};

use time::{Date, OffsetDateTime};

use super::credit::Availability;
use super::invoice::{add_adjustments, adjustments, compute, windows, Inputs, Invoice, InvoiceError, Usage, Window};
use super::plan::{Period, PriceBook};
use super::BillingMonth;
use crate::meter::Catalog;
use crate::seal::rollup::Sealed;
use crate::settle::Settled;
use crate::sla::{query_sla, SlaGrouping, SlaPoint, SlaQuery};
use crate::store::rollup::{one_read_for_all, query_usage_all, Granularity, UsagePoint, UsageQuery, MAX_LIMIT};
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

/// The roll-up that fills `window` for `tenant` (or every tenant): one total per meter over the
/// window, or one per meter and day. Pages of [`MAX_LIMIT`] points.
pub fn usage_query(tenant: Option<&str>, window: &Window) -> UsageQuery {
    let mut query = UsageQuery::new(midnight(window.from), midnight(window.until));
    query.tenant = tenant.map(str::to_owned);
    query.granularity = match window.by {
        Period::Month => Granularity::Month,
        Period::Day => Granularity::Day,
    };
    query.limit = MAX_LIMIT;
    query
}

/// Records the points of [`usage_query`]`(window)` in `usage`.
pub fn record_usage<'a>(usage: &mut Usage, window: &Window, points: impl IntoIterator<Item = &'a UsagePoint>) {
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
        settled: Settled::Latest,
    }
}

/// The month's availability from the points of [`sla_query`]: every service's requests and errors.
pub fn availability<'a>(points: impl IntoIterator<Item = &'a SlaPoint>) -> Availability {
    points.into_iter().fold(Availability::default(), |a, p| Availability {
        requests: a.requests.saturating_add(p.requests),
        errors: a.errors.saturating_add(p.errors),
    })
}

/// Prices `tenant`'s `month` from live usage and SLA rows as of `settled`, or from the snapshot
/// of seal `sealed`.
async fn price(
    store: &Store,
    book: &PriceBook,
    catalog: &Catalog,
    tenant: &str,
    month: BillingMonth,
    sealed: Option<&Sealed>,
    settled: Settled,
) -> Result<Invoice, InvoiceFailure> {
    let mut sla = sla_query(tenant, month);
    sla.sealed = sealed.cloned();
    sla.settled = settled;
    let read = async { Ok(availability(&query_sla(store, &sla).await?)) };
    let tenants = [tenant];
    let usage = read_usage(store, book, &tenants, month, sealed, settled);
    // Two reads at once: an invoice waits for the slower, not for both in turn.
    let (mut usage, availability) = tokio::try_join!(usage, read)?;
    let usage = usage.remove(tenant).unwrap_or_default();
    price_from(book, catalog, tenant, month, sealed, &usage, availability)
}

/// Prices `tenant`'s `month` from its `usage` (from [`read_usage`]) and `availability` (an SLA
/// report has read it already): the month's charges and credits, without adjustments.
pub fn price_from(
    book: &PriceBook,
    catalog: &Catalog,
    tenant: &str,
    month: BillingMonth,
    sealed: Option<&Sealed>,
    usage: &Usage,
    availability: Availability,
) -> Result<Invoice, InvoiceFailure> {
    let sealed = sealed.map(|s| s.seal_id.as_str());
    tracing::debug!(tenant, %month, sealed, requests = availability.requests, errors = availability.errors, "pricing month");
    Ok(compute(book, tenant, month, Inputs { usage, availability, catalog })?)
}

/// The usage windows of `month` that `tenants`' invoices need (live as of `settled`, or from
/// seal `sealed`), per tenant. A window many of them share (a month on one plan) is read once
/// for all tenants when such reads are cheap ([`one_read_for_all`]); the rest tenant by tenant.
pub async fn read_usage(
    store: &Store,
    book: &PriceBook,
    tenants: &[&str],
    month: BillingMonth,
    sealed: Option<&Sealed>,
    settled: Settled,
) -> Result<BTreeMap<String, Usage>, InvoiceFailure> {
    let mut shared: BTreeMap<Window, BTreeSet<&str>> = BTreeMap::new();
    for tenant in tenants {
        for w in windows(book, tenant, month)? {
            shared.entry(w).or_default().insert(tenant);
        }
    }
    let all_at_once = one_read_for_all(sealed, settled);
    let mut out: BTreeMap<String, Usage> = tenants.iter().map(|t| ((*t).to_owned(), Usage::new())).collect();
    for (window, readers) in shared {
        // A window an eighth of the tenants or more share is read once for every tenant (the
        // others' rows are read and dropped); a rarer one (a plan changed mid-month), per tenant.
        let reads: Vec<Option<&str>> = if all_at_once && readers.len() > 1 && readers.len() * 8 >= tenants.len() {
            vec![None]
        } else {
            readers.iter().map(|t| Some(*t)).collect()
        };
        for tenant in reads {
            let mut query = usage_query(tenant, &window);
            query.sealed = sealed.cloned();
            query.settled = settled;
            // Points come in tenant order: one run of them per tenant.
            for points in query_usage_all(store, &query).await?.chunk_by(|a, b| a.tenant == b.tenant) {
                let t = points[0].tenant.as_str();
                if let Some(usage) = out.get_mut(t).filter(|_| readers.contains(t)) {
                    record_usage(usage, &window, points);
                }
            }
        }
    }
    Ok(out)
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
    // One read of the seals serves this month and the previous one, one of the watermark every
    // live read of the invoice.
    let (seals, settled) = tokio::try_join!(crate::seal::store::seals(store), Settled::read(store))?;
    let seal_of = |m: BillingMonth| seals.iter().find(|p| p.month == m.to_string());
    let seal = seal_of(month);
    let sealed = seal.map(crate::seal::Period::sealed);
    let mut invoice = price(store, book, catalog, tenant, month, sealed.as_ref(), settled).await?;
    invoice.sealed_digest = seal.map(|s| s.digest.clone());
    let previous = month.previous();
    let Some(prev_seal) = seal_of(previous) else { return Ok(invoice) };
    let sealed = price(store, book, catalog, tenant, previous, Some(&prev_seal.sealed()), settled).await;
    let live = price(store, book, catalog, tenant, previous, None, settled).await;
    match (sealed, live) {
        (Ok(sealed), Ok(live)) => Ok(add_adjustments(invoice, adjustments(&sealed, &live))?),
        // No plan last month: nothing of it is billed, late or not.
        (Err(InvoiceFailure::Invoice(InvoiceError::UnknownTenant(_) | InvoiceError::NoPlan { .. })), _) => Ok(invoice),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}
