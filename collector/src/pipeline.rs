//! The collector's consumer: authenticate, measure, spool. A request is
//! acknowledged only after its usage rows are synced in the spool (see
//! [`crate::sink`]), so nothing acknowledged can be lost by a crash; when the
//! spool is full or unwritable senders are told to retry (UNAVAILABLE / 503)
//! and keep the data themselves.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metering::meter::{names, Catalog, MeterDefinition};
use metering::record::{UsageBatch, UsageRecord};
use metering::sla::encode::encode_sla_batch;
use metering::sla::SlaRecord;
use metering::store::writer::encode_batch;
use time::OffsetDateTime;

use crate::kernel_budget::{self, KernelBudgets};
use crate::keys::{Scope, Sender, Trust};
use crate::limits::{Limits, Throttle};
use crate::metrics::Metrics;
use crate::sink::entry::{self, Section, Table};
use measure::reported::{self, Reported};
use measure::{measure_request, Measured, Tenancy};
use otlp::{Consumer, Delivery, Grant, Outcome, Payload, Request, Signal};
use wal::Wal;

/// How long senders are told to wait while the spool cannot take more.
pub const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Authenticates, measures and stores usage.
pub struct Pipeline {
    trust: Trust,
    catalog: Catalog,
    spool: Wal,
    source_id: String,
    seq: AtomicU64,
    metrics: Arc<Metrics>,
    limits: Limits,
    meters: Arc<[MeterDefinition]>,
    kernel_budgets: KernelBudgets,
}

impl Pipeline {
    /// A pipeline spooling rows of the built-in and the custom `meters` to
    /// `spool`. `source_id` names this collector process in the batch identity
    /// of what it writes.
    pub fn new(
        trust: Trust,
        spool: Wal,
        source_id: String,
        metrics: Arc<Metrics>,
        limits: Limits,
        meters: Arc<[MeterDefinition]>,
    ) -> Self {
        let catalog = Catalog::with_custom(&meters);
        let kernel_budgets = KernelBudgets::new(trust.report_bounds, kernel_budget::window(trust.batch_max_age));
        Self { trust, catalog, spool, source_id, seq: AtomicU64::new(0), metrics, limits, meters, kernel_budgets }
    }

    /// Checks every tenant of the request against its limit, all or none. Over the limit, the
    /// request is refused whole (the sender resends it whole, and none of its tenants is
    /// charged for it), and what each throttled tenant sent is metered as `throttled_<items>`.
    fn throttle(&self, records: &[UsageRecord]) -> Option<(Throttle, Vec<UsageRecord>)> {
        if !self.limits.any() {
            return None;
        }
        let items = records.iter().filter(|r| names::ITEMS.contains(&r.meter.as_str()));
        let mut per_tenant: BTreeMap<&str, u64> = BTreeMap::new();
        for r in items.clone() {
            *per_tenant.entry(&r.tenant).or_default() += u64::try_from(r.value.trunc().mantissa()).unwrap_or(u64::MAX);
        }
        let throttle = self.limits.take(&per_tenant).err()?;
        let throttled = items
            .filter(|r| throttle.tenants.contains(&r.tenant))
            .map(|r| UsageRecord { meter: format!("{}{}", names::THROTTLED, r.meter), ..r.clone() })
            .collect();
        Some((throttle, throttled))
    }

    fn own_identity(&self) -> (String, u64) {
        (self.source_id.clone(), self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Encodes the batch's rows and spools them. Records the store would refuse
    /// (a bug of ours: they are built from validated parts) cannot be billed; they
    /// are replaced by `dropped_*` usage with the reason, never lost silently.
    /// `Ok(dropped)` is the number of items that were dropped.
    async fn write(
        &self,
        (source_id, seq): (String, u64),
        records: Vec<UsageRecord>,
        sla: &[SlaRecord],
    ) -> Result<u64, String> {
        let mut batch = UsageBatch { source_id, seq, records };
        let mut rows = Vec::new();
        let mut dropped = 0;
        let count = match encode_batch(&batch, &self.catalog, &mut rows) {
            Ok(count) => count,
            Err(e) => {
                tracing::error!(error = %e, "measured usage refused by the store's checks; metered as dropped");
                (batch.records, dropped) = dropped_records(&batch.records, &e.to_string());
                encode_batch(&batch, &self.catalog, &mut rows).map_err(|e| format!("internal error: {e}"))?
            }
        };
        let mut sla_rows = Vec::new();
        let sla_count = encode_sla_batch(&batch.source_id, batch.seq, sla, &mut sla_rows).unwrap_or_else(|e| {
            // Built from validated spans: a refusal is our bug. The usage still counts.
            tracing::error!(error = %e, "SLA aggregates refused by the store's checks; not stored");
            sla_rows.clear();
            0
        });
        let record = entry::encode(&[
            Section { table: Table::Usage, rows: count as u32, data: &rows },
            Section { table: Table::Sla, rows: sla_count as u32, data: &sla_rows },
        ]);
        self.spool.append(record).await.map(|()| dropped).map_err(|e| {
            tracing::warn!(error = %e, "spooling usage failed; sender told to retry");
            format!("usage spool unavailable: {e}")
        })
    }

    async fn handle(&self, delivery: Delivery) -> Outcome {
        let (signal, items) = (delivery.request.signal().name(), delivery.request.items());
        let outcome = self.store(delivery).await;
        let m = &self.metrics;
        match &outcome {
            Outcome::Accepted { rejected, .. } => {
                // Rejections come from several checks; a miscount must not panic the receiver.
                m.count_items(signal, "accepted", items.saturating_sub(*rejected));
                m.count_items(signal, "rejected", (*rejected).min(items));
            }
            // Malformed beyond its framing: refused whole, for good.
            Outcome::Invalid(_) => m.count_items(signal, "rejected", items),
            // The receiver refuses unknown keys before decoding (see `authenticate`).
            Outcome::Unauthenticated(_) => {}
            Outcome::Throttled { .. } => m.count_items(signal, "throttled", items),
            Outcome::Unavailable { .. } => m.count_items(signal, "unavailable", items),
        }
        outcome
    }

    async fn store(&self, delivery: Delivery) -> Outcome {
        let Sender { tenancy, scope, hosts } = match self.trust.sender(delivery.key.as_deref()) {
            Ok(s) => s,
            Err(message) => return Outcome::Unauthenticated(message),
        };
        let now = OffsetDateTime::now_utc();
        if let Some(Err(message)) = delivery.batch.as_ref().map(|b| self.trust.check_batch_time(b, now)) {
            return Outcome::Invalid(message);
        }
        // A sender's batch identity (and its time) makes a resend reproduce the same rows.
        let when = delivery.batch.as_ref().map_or(now, |b| b.time);
        let mut request = delivery.request;
        // Agents' own usage reports are usage, not metric points; only senders trusted
        // to name tenants may report it. Metrics from them are decoded to take the
        // reports out (metrics are a small share of the volume; spans stay zero-copy).
        let mut reported = Reported::default();
        if tenancy == Tenancy::FromResource && request.signal() == Signal::Metrics {
            let mut payload = match request.into_payload() {
                Ok(p) => p,
                Err(e) => return Outcome::Invalid(e.to_string()),
            };
            if let Payload::Metrics(metrics) = &mut payload {
                reported = reported::extract(metrics, &self.catalog, when, self.trust.report_bounds);
            }
            request = Request::Decoded(payload);
        }
        let mut measured = match measure_request(&request, &tenancy, when, &self.meters) {
            Ok(m) => m,
            Err(e) => return Outcome::Invalid(e.to_string()),
        };
        // A scoped agent key names only its tenants, and reports kernel usage only if it may.
        let (refused, why) = out_of_scope(&scope, &mut measured, &mut reported);
        // Namespaced by the sender's key, so one sender's identities never collide with another's.
        let named = delivery
            .batch
            .as_ref()
            .map(|b| (format!("{}/{}", key_namespace(delivery.key.as_deref()), b.source), b.seq));
        // And its kernel usage adds up to no more than its hosts could use (only reports have any).
        let charged = self.kernel_budgets.charge(
            delivery.key.as_deref(),
            hosts,
            named.as_ref().map(|(source, seq)| (source.as_str(), *seq)),
            &mut reported.records,
        );
        for (meter, n) in names::KERNEL.into_iter().zip(charged.refused) {
            self.metrics.count_report_bound_refused(meter, n);
        }
        if charged.refused.iter().any(|n| *n > 0) {
            reported.rejected += charged.refused.iter().sum::<u64>();
            reported.reason = charged.reason.clone();
        }
        measured.records.extend(reported.records);
        if reported.rejected > 0 {
            measured.rejected += reported.rejected;
            measured.reason = reported.reason;
        }
        if refused > 0 {
            measured.rejected += refused;
            measured.reason = why;
        }
        self.metrics.tenant_mismatch_items.inc_by(measured.mismatched);
        let accepted = Outcome::Accepted { rejected: measured.rejected, message: measured.reason.clone() };
        if measured.records.is_empty() {
            return accepted;
        }
        if let Some((throttle, throttled)) = self.throttle(&measured.records) {
            self.kernel_budgets.refund(charged);
            // A named batch refused again and again is one refusal: its throttled rows get an
            // identity of their own, derived from the batch's, so its resends collapse with them.
            // A request without a name is a new event each time. The refusal stands even if its
            // metering fails: the data is the sender's to resend.
            let identity = match &named {
                Some((source, seq)) => (format!("{source}/throttled"), *seq),
                None => self.own_identity(),
            };
            let _ = self.write(identity, throttled, &[]).await;
            return Outcome::Throttled { retry_after: throttle.retry_after, message: throttle.message };
        }
        let identity = named.unwrap_or_else(|| self.own_identity());
        let written = self.write(identity, measured.records, &measured.sla).await;
        match &written {
            Ok(_) => self.kernel_budgets.keep(charged),
            Err(_) => self.kernel_budgets.refund(charged),
        }
        match written {
            Ok(0) => accepted,
            Ok(dropped) => {
                self.metrics.dropped_items.inc_by(dropped);
                Outcome::Accepted {
                    rejected: measured.rejected + dropped,
                    message: "internal error: the usage of these items could not be metered (counted as dropped)"
                        .to_owned(),
                }
            }
            Err(message) => Outcome::Unavailable { retry_after: STORE_RETRY_AFTER, message },
        }
    }
}

/// Takes out of `measured` and `reported` what `scope` may not say: the usage, SLA aggregates and
/// reports of tenants it may not name, and kernel usage when it may not report it. Returns the
/// items and report data points refused, and why.
fn out_of_scope(scope: &Scope, measured: &mut Measured, reported: &mut Reported) -> (u64, String) {
    if *scope == Scope::ANY {
        return (0, String::new());
    }
    let mut refused = 0;
    let mut why = String::new();
    let mut keep = |tenant: &str, items: u64| {
        if scope.allows(tenant) {
            return true;
        }
        refused += items;
        why = format!("this key may not name tenant {tenant}");
        false
    };
    measured.records.retain(|r| {
        let items = match names::ITEMS.contains(&r.meter.as_str()) {
            true => u64::try_from(r.value.trunc().mantissa()).unwrap_or(u64::MAX),
            false => 0,
        };
        keep(&r.tenant, items)
    });
    reported.records.retain(|r| keep(&r.tenant, 1));
    measured.sla.retain(|r| scope.allows(&r.tenant));
    if !scope.kernel_usage {
        let before = reported.records.len();
        reported.records.retain(|r| !names::KERNEL.contains(&r.meter.as_str()));
        if reported.records.len() < before {
            refused += (before - reported.records.len()) as u64;
            why = format!("this key may not report kernel usage ({})", names::KERNEL.join(", "));
        }
    }
    (refused, why)
}

/// The `dropped_*` records standing for `records` that could not be stored,
/// with the reason as a dimension, and the number of items they count.
fn dropped_records(records: &[UsageRecord], reason: &str) -> (Vec<UsageRecord>, u64) {
    let reason = measure::truncate(reason, metering::record::MAX_DIMENSION_LEN);
    let mut items = 0;
    let dropped = records
        .iter()
        .filter(|r| names::ITEMS.contains(&r.meter.as_str()))
        .map(|r| {
            items += u64::try_from(r.value.trunc().mantissa()).unwrap_or(0);
            let tenant = if metering::record::validate_tenant(&r.tenant).is_ok() {
                r.tenant.as_str()
            } else {
                measure::UNKNOWN_TENANT
            };
            let mut d = UsageRecord::new(tenant, &format!("{}{}", names::DROPPED, r.meter), r.time, r.value.trunc());
            d.dimensions.insert("reason".to_owned(), reason.to_owned());
            d
        })
        .collect();
    (dropped, items)
}

/// A short, stable, non-secret name for the key a sender used.
fn key_namespace(key: Option<&str>) -> String {
    match key {
        Some(k) => runtime::auth::digest(k)[..6].iter().map(|b| format!("{b:02x}")).collect(),
        None => "anonymous".to_owned(),
    }
}

impl Consumer for Pipeline {
    fn authenticate(&self, key: Option<&str>) -> Result<Grant, String> {
        self.trust.grant(key)
    }

    fn consume(&self, delivery: Delivery) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(self.handle(delivery))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn unstorable_usage_becomes_dropped_items_with_the_reason() {
        let t = OffsetDateTime::now_utc();
        let records = vec![
            UsageRecord::new("acme", "spans", t, Decimal::from(7)).with_service("api"),
            UsageRecord::new("acme", "span_bytes", t, Decimal::from(900)),
            UsageRecord::new("bad tenant", "log_records", t, Decimal::from(2)),
        ];
        let (dropped, items) = dropped_records(&records, "record 0: service is 2000 bytes long");
        assert_eq!(items, 9);
        let got: Vec<_> = dropped
            .iter()
            .map(|r| (r.tenant.as_str(), r.meter.as_str(), r.value, r.dimensions["reason"].as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("acme", "dropped_spans", Decimal::from(7), "record 0: service is 2000 bytes long"),
                ("unknown", "dropped_log_records", Decimal::from(2), "record 0: service is 2000 bytes long"),
            ]
        );
        // What they become is storable.
        let batch = UsageBatch { source_id: "s".into(), seq: 1, records: dropped };
        assert_eq!(encode_batch(&batch, &Catalog::builtin(), &mut Vec::new()), Ok(2));
    }
}
