//! The collector's consumer: authenticate, measure, store. A request is
//! acknowledged only after its usage is in ClickHouse, so nothing acknowledged
//! can be lost by a crash; while ClickHouse is down senders are told to retry
//! (UNAVAILABLE / 503) and keep the data themselves.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metering::record::UsageBatch;
use metering::store::writer::UsageWriter;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::keys::Keys;
use crate::measure::{measure, Tenancy};
use crate::metrics::Metrics;
use crate::otlp::Payload;
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
}

fn signal_name(payload: &Payload) -> &'static str {
    match payload {
        Payload::Traces(_) => "traces",
        Payload::Metrics(_) => "metrics",
        Payload::Logs(_) => "logs",
    }
}

impl Pipeline {
    /// A pipeline writing through `writer`. `source_id` names this collector
    /// process in the batch identity of what it writes.
    pub fn new(keys: Keys, allow_anonymous: bool, writer: UsageWriter, source_id: String, metrics: Arc<Metrics>) -> Self {
        Self { keys, allow_anonymous, writer: Mutex::new(writer), source_id, seq: AtomicU64::new(0), metrics }
    }

    fn tenancy(&self, key: Option<&str>) -> Result<Tenancy, String> {
        match key {
            Some(k) => self.keys.lookup(k).cloned().ok_or_else(|| "unknown key".to_owned()),
            None if self.allow_anonymous => Ok(Tenancy::FromResource),
            None => Err("missing key: send `Authorization: Bearer <key>`".to_owned()),
        }
    }

    async fn handle(&self, delivery: Delivery) -> Outcome {
        let (signal, items) = (signal_name(&delivery.payload), delivery.payload.items());
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
        let measured = measure(&delivery.payload, &tenancy, OffsetDateTime::now_utc());
        self.metrics.tenant_mismatch_items.inc_by(measured.mismatched);
        let accepted = Outcome::Accepted { rejected: measured.rejected, message: measured.reason.clone() };
        if measured.records.is_empty() {
            return accepted;
        }
        let batch = UsageBatch {
            source_id: self.source_id.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            records: measured.records,
        };
        let mut writer = self.writer.lock().await;
        if let Err(e) = writer.push(&batch) {
            // Records are built here from validated parts; a refusal is our bug, told as such.
            tracing::error!(error = %e, "measured usage refused by the writer");
            return Outcome::Unavailable { retry_after: STORE_RETRY_AFTER, message: format!("internal error: {e}") };
        }
        let started = Instant::now();
        let result = writer.flush().await;
        self.metrics.clickhouse_write_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => accepted,
            Err(e) => {
                self.metrics.clickhouse_write_errors.inc();
                // The sender resends; keeping these rows as well would count them twice.
                writer.discard();
                tracing::warn!(error = %e, "usage store unavailable; sender told to retry");
                Outcome::Unavailable { retry_after: STORE_RETRY_AFTER, message: format!("usage store unavailable: {e}") }
            }
        }
    }
}

impl Consumer for Pipeline {
    fn consume(&self, delivery: Delivery) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(self.handle(delivery))
    }
}
