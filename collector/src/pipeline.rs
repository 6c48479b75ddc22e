//! The collector's consumer: authenticate, measure, store. A request is
//! acknowledged only after its usage is in ClickHouse, so nothing acknowledged
//! can be lost by a crash; while ClickHouse is down senders are told to retry
//! (UNAVAILABLE / 503) and keep the data themselves.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metering::meter::MeterDefinition;
use metering::record::{UsageBatch, UsageRecord};
use metering::store::writer::UsageWriter;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::keys::Keys;
use crate::limits::{Limits, Throttle};
use crate::measure::{measure_with, Tenancy};
use crate::metrics::Metrics;
use crate::otlp::{Consumer, Delivery, Outcome};

/// How long senders are told to wait while the store is unreachable.
pub const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Authenticates, measures and stores usage.
pub struct Pipeline {
    keys: Keys,
    allow_anonymous: bool,
    writer: Mutex<UsageWriter>,
    source_id: String,
    seq: AtomicU64,
    metrics: Arc<Metrics>,
    limits: Limits,
    meters: Arc<[MeterDefinition]>,
}

impl Pipeline {
    /// A pipeline writing through `writer`. `source_id` names this collector
    /// process in the batch identity of what it writes. `meters` are the custom
    /// meters; `writer`'s catalog must know them.
    pub fn new(
        keys: Keys,
        allow_anonymous: bool,
        writer: UsageWriter,
        source_id: String,
        metrics: Arc<Metrics>,
        limits: Limits,
        meters: Arc<[MeterDefinition]>,
    ) -> Self {
        Self { keys, allow_anonymous, writer: Mutex::new(writer), source_id, seq: AtomicU64::new(0), metrics, limits, meters }
    }

    /// Checks every tenant of the request against its limit. Over the limit, the
    /// request is refused whole (the sender resends it whole) and what each
    /// throttled tenant sent is metered as `throttled_<items>`.
    fn throttle(&self, records: &[UsageRecord]) -> Option<(Throttle, Vec<UsageRecord>)> {
        let mut worst: Option<Throttle> = None;
        let mut throttled = Vec::new();
        for r in records.iter().filter(|r| ITEM_METERS.contains(&r.meter.as_str())) {
            let items = u64::try_from(r.value.trunc().mantissa()).unwrap_or(u64::MAX);
            if let Err(t) = self.limits.check(&r.tenant, items) {
                throttled.push(UsageRecord { meter: format!("throttled_{}", r.meter), ..r.clone() });
                if worst.as_ref().is_none_or(|w| t.retry_after > w.retry_after) {
                    worst = Some(t);
                }
            }
        }
        worst.map(|t| (t, throttled))
    }

    fn own_identity(&self) -> (String, u64) {
        (self.source_id.clone(), self.seq.fetch_add(1, Ordering::Relaxed))
    }

    async fn write(&self, (source_id, seq): (String, u64), records: Vec<UsageRecord>) -> Result<(), String> {
        let batch = UsageBatch { source_id, seq, records };
        let mut writer = self.writer.lock().await;
        if let Err(e) = writer.push(&batch) {
            // Records are built here from validated parts; a refusal is our bug, told as such.
            tracing::error!(error = %e, "measured usage refused by the writer");
            return Err(format!("internal error: {e}"));
        }
        let started = Instant::now();
        let result = writer.flush().await;
        self.metrics.clickhouse_write_seconds.observe(started.elapsed().as_secs_f64());
        result.map(drop).map_err(|e| {
            // The sender resends; keeping these rows as well would count them twice.
            writer.discard();
            self.metrics.clickhouse_write_errors.inc();
            tracing::warn!(error = %e, "usage store unavailable; sender told to retry");
            format!("usage store unavailable: {e}")
        })
    }

    fn tenancy(&self, key: Option<&str>) -> Result<Tenancy, String> {
        match key {
            Some(k) => self.keys.lookup(k).cloned().ok_or_else(|| "unknown key".to_owned()),
            None if self.allow_anonymous => Ok(Tenancy::FromResource),
            None => Err("missing key: send `Authorization: Bearer <key>`".to_owned()),
        }
    }

    async fn handle(&self, delivery: Delivery) -> Outcome {
        let (signal, items) = (delivery.payload.signal().name(), delivery.payload.items());
        let outcome = self.store(delivery).await;
        let m = &self.metrics;
        match &outcome {
            Outcome::Accepted { rejected, .. } => {
                m.count_items(signal, "accepted", items - rejected);
                m.count_items(signal, "rejected", *rejected);
            }
            Outcome::Unauthenticated(_) => m.count_items(signal, "unauthenticated", items),
            Outcome::Throttled { .. } => m.count_items(signal, "throttled", items),
            Outcome::Unavailable { .. } => m.count_items(signal, "unavailable", items),
        }
        outcome
    }

    async fn store(&self, delivery: Delivery) -> Outcome {
        let tenancy = match self.tenancy(delivery.key.as_deref()) {
            Ok(t) => t,
            Err(message) => return Outcome::Unauthenticated(message),
        };
        // A sender's batch identity (and its time) makes a resend reproduce the same rows.
        let when = delivery.batch.as_ref().map_or_else(OffsetDateTime::now_utc, |b| b.time);
        let measured = measure_with(&delivery.payload, &tenancy, when, &self.meters);
        self.metrics.tenant_mismatch_items.inc_by(measured.mismatched);
        let accepted = Outcome::Accepted { rejected: measured.rejected, message: measured.reason.clone() };
        if measured.records.is_empty() {
            return accepted;
        }
        if let Some((throttle, throttled)) = self.throttle(&measured.records) {
            // Each refusal is its own event: it gets the collector's identity, not the sender's.
            // The refusal stands even if its metering fails: the data is the sender's to resend.
            let _ = self.write(self.own_identity(), throttled).await;
            return Outcome::Throttled { retry_after: throttle.retry_after, message: throttle.message };
        }
        let identity = match &delivery.batch {
            // Namespaced by the sender's key, so one sender's identities never collide with another's.
            Some(b) => (format!("{}/{}", key_namespace(delivery.key.as_deref()), b.source), b.seq),
            None => self.own_identity(),
        };
        match self.write(identity, measured.records).await {
            Ok(()) => accepted,
            Err(message) => Outcome::Unavailable { retry_after: STORE_RETRY_AFTER, message },
        }
    }
}

/// A short, stable, non-secret name for the key a sender used.
fn key_namespace(key: Option<&str>) -> String {
    match key {
        Some(k) => metering::api::auth::digest(k)[..6].iter().map(|b| format!("{b:02x}")).collect(),
        None => "anonymous".to_owned(),
    }
}

/// The meters that count OTLP items, which rate limits apply to.
const ITEM_METERS: [&str; 3] = ["spans", "metric_points", "log_records"];

impl Consumer for Pipeline {
    fn consume(&self, delivery: Delivery) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(self.handle(delivery))
    }
}
