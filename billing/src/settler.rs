//! `tally settle` on a schedule: folds until caught up every `--every-secs`, counted on
//! `/metrics` of its admin port (`--admin-listen`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metering::settle::{fold, roll, FoldOptions};
use metering::store::{Store, StoreError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The settler's metrics, and whether its last round succeeded (its readiness).
pub struct SettleMetrics {
    registry: Registry,
    folds: Counter,
    batches: Counter,
    rows: Counter,
    failures: Counter,
    watermark: Gauge,
    rollups: Counter,
    rolled: Gauge,
    healthy: AtomicBool,
}

impl Default for SettleMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tally_settle");
        let (folds, batches, rows, failures) =
            (Counter::default(), Counter::default(), Counter::default(), Counter::default());
        let (watermark, rollups, rolled) = (Gauge::default(), Counter::default(), Gauge::default());
        registry.register("folds", "Folds committed", folds.clone());
        registry.register("batches", "Batch identities folded (per tenant and minute, usage and SLA)", batches.clone());
        registry.register("rows", "Settled rows written (usage and SLA)", rows.clone());
        registry.register("failures", "Rounds that failed (tried again at the next)", failures.clone());
        registry.register(
            "watermark_seconds",
            "Unix time up to which stored rows are folded (the latest committed fold's end)",
            watermark.clone(),
        );
        registry.register("rollups", "Roll-ups of settled days committed", rollups.clone());
        registry.register(
            "rolled_seconds",
            "Unix time up to which settled days are rolled up (the latest roll-up's end)",
            rolled.clone(),
        );
        Self { registry, folds, batches, rows, failures, watermark, rollups, rolled, healthy: AtomicBool::new(true) }
    }
}

impl SettleMetrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Whether the last round succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// The `query_id` prefix of every settler's queries on `db` (ASCII letters, digits and `-`).
pub fn query_id_prefix(db: &str) -> String {
    let db: String = db.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    format!("tally-settle-{db}")
}

/// Folds until caught up, then rolls up the days that are ready, counting what it does.
///
/// First it stops, and waits out, every query a settler of this database left running: a
/// settler killed (or a round timed out) after sending a fold's commit leaves it running on the
/// server, and a fold planned before it lands would take that fold's batches again — both
/// committed, counted twice. `store`'s queries carry [`query_id_prefix`].
pub async fn round(store: &Store, options: FoldOptions, metrics: &SettleMetrics) -> Result<(), StoreError> {
    let outcome = async {
        store.ch().kill_queries_and_wait(&query_id_prefix(store.db())).await?;
        while let Some(f) = fold(store, options).await? {
            tracing::info!(fold = %f.id, from = f.from, to = f.to, batches = f.batches, rows = f.rows, "folded");
            metrics.folds.inc();
            metrics.batches.inc_by(f.batches);
            metrics.rows.inc_by(f.rows);
            metrics.watermark.set(i64::from(f.to));
        }
        while let Some(r) = roll(store).await? {
            tracing::info!(rollup = %r.id, from = r.days.from, to = r.days.to, rows = r.rows, "rolled up");
            metrics.rollups.inc();
            metrics.rolled.set(i64::from(r.days.to));
        }
        Ok(())
    }
    .await;
    metrics.healthy.store(outcome.is_ok(), Ordering::Relaxed);
    if outcome.is_err() {
        metrics.failures.inc();
    }
    outcome
}

/// Rounds every `every` until `stop`; a failed round is logged and the next tries again
/// (ClickHouse down must not crash-loop the settler: a fold that failed counts nothing).
pub async fn scheduled(
    store: &Store,
    options: FoldOptions,
    every: Duration,
    metrics: &SettleMetrics,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            outcome = round(store, options, metrics) => if let Err(e) = outcome {
                tracing::warn!(error = %e, retry_secs = every.as_secs(), "settling failed; trying again");
            },
            () = &mut stop => return,
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = &mut stop => return,
        }
    }
}
