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
    /// One of many tenants' invoices could not be priced (e.g. a missing conversion rate).
    #[error("pricing tenant {tenant:?}: {source}")]
    Tenant {
        /// The tenant.
        tenant: String,
        /// Why.
        source: InvoiceError,
    },
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

/// The SLA read of `tenant`'s (or every tenant's) month: one point per tenant and service.
pub fn sla_query(tenant: Option<&str>, month: BillingMonth) -> SlaQuery {
    SlaQuery {
        tenant: tenant.map(str::to_owned),
        service: None,
        from: midnight(month.first_day()),
        to: midnight(month.end()),
        granularity: Granularity::Month,
        grouping: SlaGrouping::Service,
        sealed: None,
        worst: None,
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

/// Each tenant's availability from a month's SLA points of many tenants (in tenant order, as
/// reads return them).
pub fn availabilities(points: &[SlaPoint]) -> BTreeMap<String, Availability> {
    points.chunk_by(|a, b| a.tenant == b.tenant).map(|of| (of[0].tenant.clone(), availability(of))).collect()
}

/// Where a month's reads come from: the snapshot of a seal, or live rows as of a watermark.
#[derive(Debug, Clone, Copy)]
pub struct Basis<'a> {
    /// The seal whose snapshot is read, if the month is sealed.
    pub sealed: Option<&'a Sealed>,
    /// The watermark live reads share.
    pub settled: Settled,
}

/// Each of `tenants`' invoices for `month` (without adjustments): their usage and availability
/// read at once, each read shared by all of them where that is cheap ([`read_usage`],
/// [`read_availability`]). A tenant that cannot be invoiced (no plan that month, a missing rate)
/// has its error in its place.
async fn price_all(
    store: &Store,
    book: &PriceBook,
    catalog: &Catalog,
    tenants: &[&str],
    month: BillingMonth,
    basis: Basis<'_>,
) -> Result<BTreeMap<String, Result<Invoice, InvoiceError>>, StoreError> {
    // Two reads at once: the invoices wait for the slower, not for both in turn.
    let (usage, availability) = tokio::try_join!(
        read_usage(store, book, tenants, month, basis),
        read_availability(store, tenants, month, basis)
    )?;
    Ok(tenants
        .iter()
        .map(|t| {
            let a = availability.get(*t).copied().unwrap_or_default();
            ((*t).to_owned(), price_from(book, catalog, t, month, basis.sealed, &usage[*t], a))
        })
        .collect())
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
) -> Result<Invoice, InvoiceError> {
    let sealed = sealed.map(|s| s.seal_id.as_str());
    tracing::debug!(tenant, %month, sealed, requests = availability.requests, errors = availability.errors, "pricing month");
    compute(book, tenant, month, Inputs { usage, availability, catalog })
}

/// The usage windows of `month` that `tenants`' invoices need, per tenant (a tenant without a
/// plan that month needs none). A window many of them share (a month on one plan) is read once
/// for all tenants when such reads are cheap ([`one_read_for_all`]); the rest tenant by tenant.
pub async fn read_usage(
    store: &Store,
    book: &PriceBook,
    tenants: &[&str],
    month: BillingMonth,
    basis: Basis<'_>,
) -> Result<BTreeMap<String, Usage>, StoreError> {
    let mut shared: BTreeMap<Window, BTreeSet<&str>> = BTreeMap::new();
    for tenant in tenants {
        for w in windows(book, tenant, month).unwrap_or_default() {
            shared.entry(w).or_default().insert(tenant);
        }
    }
    let all_at_once = one_read_for_all(basis.sealed, basis.settled);
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
            query.sealed = basis.sealed.cloned();
            query.settled = basis.settled;
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

/// `tenants`' availability in `month`: one SLA read of every tenant when that is cheap
/// ([`one_read_for_all`]) and there are several, else one per tenant.
pub async fn read_availability(
    store: &Store,
    tenants: &[&str],
    month: BillingMonth,
    basis: Basis<'_>,
) -> Result<BTreeMap<String, Availability>, StoreError> {
    let reads: Vec<Option<&str>> = if tenants.len() > 1 && one_read_for_all(basis.sealed, basis.settled) {
        vec![None]
    } else {
        tenants.iter().map(|t| Some(*t)).collect()
    };
    let mut out = BTreeMap::new();
    for tenant in reads {
        let mut sla = sla_query(tenant, month);
        sla.sealed = basis.sealed.cloned();
        sla.settled = basis.settled;
        out.extend(availabilities(&query_sla(store, &sla).await?));
    }
    Ok(out)
}

/// `tenant`'s invoice for `month`: [`invoices`] of one tenant.
pub async fn invoice(
    store: &Store,
    book: &PriceBook,
    catalog: &Catalog,
    tenant: &str,
    month: BillingMonth,
) -> Result<Invoice, InvoiceFailure> {
    let mut all = invoices(store, book, catalog, &[tenant], month).await?;
    Ok(all.remove(tenant).expect("an invoice or error per tenant asked for")?)
}

/// `tenants`' invoices for `month`, priced from reads they share: a sealed month from its
/// snapshot; when the previous month is sealed, its late usage is charged here as adjustments.
/// A tenant that cannot be invoiced has its error in its place; a failing store fails them all.
pub async fn invoices(
    store: &Store,
    book: &PriceBook,
    catalog: &Catalog,
    tenants: &[&str],
    month: BillingMonth,
) -> Result<BTreeMap<String, Result<Invoice, InvoiceError>>, StoreError> {
    // One read of the seals serves this month and the previous one, one of the watermark every
    // live read of the invoices.
    let (seals, settled) = tokio::try_join!(crate::seal::store::seals(store), Settled::read(store))?;
    let seal_of = |m: BillingMonth| seals.iter().find(|p| p.month == m.to_string());
    let seal = seal_of(month);
    let sealed = seal.map(crate::seal::Period::sealed);
    let mut priced =
        price_all(store, book, catalog, tenants, month, Basis { sealed: sealed.as_ref(), settled }).await?;
    for invoice in priced.values_mut().flatten() {
        invoice.sealed_digest = seal.map(|s| s.digest.clone());
    }
    let previous = month.previous();
    let Some(prev_seal) = seal_of(previous) else { return Ok(priced) };
    let prev_sealed = prev_seal.sealed();
    let (mut then, mut now) = tokio::try_join!(
        price_all(store, book, catalog, tenants, previous, Basis { sealed: Some(&prev_sealed), settled }),
        price_all(store, book, catalog, tenants, previous, Basis { sealed: None, settled })
    )?;
    for (tenant, priced) in priced.iter_mut() {
        let Ok(invoice) = priced else { continue };
        let (Some(sealed), Some(live)) = (then.remove(tenant), now.remove(tenant)) else { continue };
        *priced = match (sealed, live) {
            (Ok(sealed), Ok(live)) => add_adjustments(invoice.clone(), adjustments(&sealed, &live)),
            // No plan last month: nothing of it is billed, late or not.
            (Err(e), _) if e.unplanned() => continue,
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    Ok(priced)
}

/// Every invoice of a month.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MonthInvoices {
    /// The month, YYYY-MM.
    pub month: String,
    /// One per tenant with a plan in effect that month, by tenant.
    pub invoices: Vec<Invoice>,
}

/// The invoices of those of `tenants` with a plan in effect in `month` ([`invoices`]); a tenant
/// that cannot be priced fails them all, named.
pub async fn month_invoices(
    store: &Store,
    book: &PriceBook,
    catalog: &Catalog,
    tenants: &[&str],
    month: BillingMonth,
) -> Result<MonthInvoices, InvoiceFailure> {
    let mut out = Vec::with_capacity(tenants.len());
    for (tenant, priced) in invoices(store, book, catalog, tenants, month).await? {
        match priced {
            Ok(invoice) => out.push(invoice),
            Err(e) if e.unplanned() => {}
            Err(source) => return Err(InvoiceFailure::Tenant { tenant, source }),
        }
    }
    Ok(MonthInvoices { month: month.to_string(), invoices: out })
}
