//! Reads a month's reports from ClickHouse: the usage roll-ups by day and by
//! month, the SLA reads by month, day and hour (per service), and for credits the
//! tenant's invoice, all through the same queries the billing API serves (so they
//! run on ClickHouse 18.16 and current servers alike).

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::sla::{self, Credits, Objective, Pricing, SlaReport, WORST_HOURS};
use super::usage::{self, UsageReport};
use crate::meter::Catalog;

use crate::pricing::invoice::InvoiceError;
use crate::pricing::plan::PriceBook;
use crate::pricing::store::{availabilities, price_from, read_usage, Basis};
use crate::pricing::BillingMonth;
use crate::seal::rollup::Sealed;
use crate::seal::rollup::Snapshot;
use crate::seal::Period;
use crate::settle::Settled;
use crate::sla::{query_sla, SlaGrouping, SlaPoint, SlaQuery};
use crate::store::rollup::{one_read_for_all, query_usage_all, Granularity, UsagePoint, UsageQuery};
use crate::store::Store;
use crate::store::StoreError;

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The usage store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A tenant's credits could not be priced (e.g. a missing conversion rate).
    #[error("pricing the credits of tenant {tenant:?}: {source}")]
    Pricing {
        /// The tenant.
        tenant: String,
        /// Why.
        source: InvoiceError,
    },
}

fn midnight(day: time::Date) -> OffsetDateTime {
    day.midnight().assume_utc()
}

/// The roll-up of `month`'s usage per tenant and meter at `granularity`.
pub fn usage_query(month: BillingMonth, tenant: Option<&str>, granularity: Granularity) -> UsageQuery {
    let mut q = UsageQuery::new(midnight(month.first_day()), midnight(month.end()));
    q.tenant = tenant.map(str::to_owned);
    q.granularity = granularity;
    q
}

/// The SLA read of `month` per tenant and service at `granularity`.
pub fn sla_query(month: BillingMonth, tenant: Option<&str>, granularity: Granularity) -> SlaQuery {
    SlaQuery {
        tenant: tenant.map(str::to_owned),
        service: None,
        from: midnight(month.first_day()),
        to: midnight(month.end()),
        granularity,
        grouping: SlaGrouping::Service,
        sealed: None,
        worst: None,
        settled: Settled::Latest,
    }
}

/// The tenant each of a report's reads is for: `tenant`; else every tenant at once when that is
/// cheap ([`one_read_for_all`]: a seal's roll-ups, or settled live rows — a few hundred thousand
/// rows for 1,000 tenants); else every tenant with rows in `table` (their snapshots when
/// `sealed`) in `month`, one at a time.
///
/// Otherwise reads go one tenant at a time: a read of all tenants' raw rows keeps one entry per
/// stored row in ClickHouse's memory until it ends (8.7 GB for 50 tenants' minute usage, past
/// the server's default 10 GB limit well before 1,000 tenants), and each 10,000-point page of it
/// re-reads the whole month.
async fn reads(
    store: &Store,
    table: Snapshot,
    month: BillingMonth,
    tenant: Option<&str>,
    sealed: Option<&Sealed>,
    settled: Settled,
) -> Result<Vec<Option<String>>, StoreError> {
    if let Some(t) = tenant {
        return Ok(vec![Some(t.to_owned())]);
    }
    if one_read_for_all(sealed, settled) {
        return Ok(vec![None]);
    }
    let sql = crate::seal::schema::tenants(
        store.db(),
        table,
        sealed.map(|s| s.seal_id.as_str()),
        midnight(month.first_day()),
        midnight(month.end()),
    )?;
    Ok(store.ch().query_column(&sql).await?.into_iter().map(Some).collect())
}

/// The month's seal, if it is sealed, and else the watermark its live reads share.
async fn basis(store: &Store, month: BillingMonth) -> Result<(Option<Period>, Settled), StoreError> {
    match crate::seal::period(store, month).await? {
        Some(seal) => Ok((Some(seal), Settled::Latest)),
        None => Ok((None, Settled::read(store).await?)),
    }
}

/// The usage report of `month` for one tenant or all: from the month's seal when
/// it is sealed (as its invoices are), else from live usage.
pub async fn read_usage_report(
    store: &Store,
    month: BillingMonth,
    tenant: Option<&str>,
) -> Result<UsageReport, StoreError> {
    let (seal, settled) = basis(store, month).await?;
    let sealed = seal.as_ref().map(Period::sealed);
    let (mut days, mut totals): (Vec<UsagePoint>, Vec<UsagePoint>) = Default::default();
    for t in reads(store, Snapshot::Usage, month, tenant, sealed.as_ref(), settled).await? {
        let query = |g| {
            let mut q = usage_query(month, t.as_deref(), g);
            q.sealed = sealed.clone();
            q.settled = settled;
            q
        };
        days.extend(query_usage_all(store, &query(Granularity::Day)).await?);
        totals.extend(query_usage_all(store, &query(Granularity::Month)).await?);
    }
    let mut report = usage::build(month, &days, &totals);
    report.sealed_digest = seal.map(|s| s.digest);
    Ok(report)
}

/// The SLA reads of `month` (month, day, and the worst hours) for one tenant or all, from its seal `seal`
/// when it is sealed, else live as of `settled`.
pub async fn read_sla_points(
    store: &Store,
    month: BillingMonth,
    tenant: Option<&str>,
    seal: Option<&Period>,
    settled: Settled,
) -> Result<[Vec<SlaPoint>; 3], StoreError> {
    let sealed = seal.map(Period::sealed);
    let mut out: [Vec<SlaPoint>; 3] = Default::default();
    for t in reads(store, Snapshot::Sla, month, tenant, sealed.as_ref(), settled).await? {
        for (slot, g) in out.iter_mut().zip([Granularity::Month, Granularity::Day, Granularity::Hour]) {
            let mut q = sla_query(month, t.as_deref(), g);
            q.sealed = sealed.clone();
            q.settled = settled;
            if g == Granularity::Hour {
                // The report shows only the worst hours: read those (with as many again, which
                // ties in the server's ordering could put first), not 720 per tenant and service.
                q.worst = Some(2 * WORST_HOURS as u32);
            }
            slot.extend(query_sla(store, &q).await?);
        }
    }
    Ok(out)
}

/// The objective of `tenant`'s plan in effect at the end of `month` (the last one
/// that month), if it has one.
pub fn objective(book: &PriceBook, tenant: &str, month: BillingMonth) -> Option<Objective> {
    let billing = book.tenants.get(tenant)?;
    let segments = book.segments(billing, month);
    let plan = segments.last()?.plan;
    Some(Objective { plan: plan.name.clone(), availability_percent: plan.slo_availability, p99_ms: plan.slo_p99_ms })
}

/// Each of `tenants`' objective and credits: the credits of its invoice for `month` (read as
/// `basis` says), whose availability the caller has read (`months`: the month's SLA points).
/// Their usage is read once for all where that is cheap ([`read_usage`]). A tenant without a
/// plan that month has neither.
async fn pricing(
    store: &Store,
    (book, catalog): (&PriceBook, &Catalog),
    tenants: &[&str],
    month: BillingMonth,
    basis: Basis<'_>,
    months: &[SlaPoint],
    mut progress: impl FnMut(usize, usize),
) -> Result<BTreeMap<String, Pricing>, ReportError> {
    let usage = read_usage(store, book, tenants, month, basis).await?;
    // The month's points are the invoices' availability read: only their usage is read again.
    let availability = availabilities(months);
    let mut priced = BTreeMap::new();
    for t in tenants {
        let availability = availability.get(*t).copied().unwrap_or_default();
        let pricing = match price_from(book, catalog, t, month, basis.sealed, &usage[*t], availability) {
            Ok(inv) => Pricing {
                slo: objective(book, t, month),
                credits: Some(Credits {
                    currency: inv.currency.code().to_owned(),
                    credits: inv.credits,
                    total: inv.sla_credit,
                }),
            },
            Err(e) if e.unplanned() => Pricing::default(),
            Err(source) => return Err(ReportError::Pricing { tenant: (*t).to_owned(), source }),
        };
        priced.insert((*t).to_owned(), pricing);
        progress(priced.len(), tenants.len());
    }
    Ok(priced)
}

/// The SLA report of `month` for one tenant or all; with `plans`, each tenant's
/// objective and credits (`progress` is called after each tenant is priced, with
/// the number done and the number of tenants).
pub async fn read_sla_report(
    store: &Store,
    month: BillingMonth,
    tenant: Option<&str>,
    plans: Option<(&PriceBook, &Catalog)>,
    progress: impl FnMut(usize, usize),
) -> Result<SlaReport, ReportError> {
    let (seal, settled) = basis(store, month).await?;
    let [months, days, hours] = read_sla_points(store, month, tenant, seal.as_ref(), settled).await?;
    let mut tenants: Vec<&str> = months.iter().map(|p| p.tenant.as_str()).collect();
    tenants.dedup();
    let priced = match plans {
        Some(plans) => {
            let sealed = seal.as_ref().map(Period::sealed);
            let basis = Basis { sealed: sealed.as_ref(), settled };
            pricing(store, plans, &tenants, month, basis, &months, progress).await?
        }
        None => BTreeMap::new(),
    };
    let mut report = sla::build(month, &months, &days, &hours, &priced);
    report.sealed_digest = seal.map(|s| s.digest);
    Ok(report)
}
