//! The agent's OTLP consumer: what apps send is admitted as the collectors would
//! ([`crate::admission`]), written to the WAL and acknowledged once it is there.
//! When the WAL is full, apps are told to retry, or the oldest waiting data is
//! dropped (and counted) to make room, per `--wal-full`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use otlp::{Consumer, Delivery, Grant, Outcome};
use wal::{AppendError, Wal};

use crate::admission::{Admission, Admitted};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::record::Record;
use crate::ship::Backlog;

/// How long apps are told to wait when the WAL is full.
pub const FULL_RETRY_AFTER: Duration = Duration::from_secs(2);

/// What a full WAL does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhenFull {
    /// Apps are told to retry (gRPC UNAVAILABLE, HTTP 503): nothing is lost, apps buffer.
    Backpressure,
    /// The oldest data waiting in the WAL is dropped to make room, counted as `dropped_*` usage.
    DropOldest,
}

/// Takes requests from apps into the WAL.
pub struct Intake {
    wal: Wal,
    boot: u64,
    admission: Admission,
    when_full: WhenFull,
    backlog: Arc<Backlog>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
}

impl Intake {
    /// An intake appending to `wal` for the process `boot` what `admission` admits.
    pub fn new(
        wal: Wal,
        boot: u64,
        admission: Admission,
        when_full: WhenFull,
        backlog: Arc<Backlog>,
        ledger: Arc<Ledger>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { wal, boot, admission, when_full, backlog, ledger, metrics }
    }

    async fn take(&self, delivery: Delivery) -> Outcome {
        let signal = delivery.request.signal();
        let now = time::OffsetDateTime::now_utc();
        let (request, admitted) = match self.admission.admit(delivery.request, now) {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
        let Admitted { items, rejected, reason: message, .. } = admitted;
        let millis = now.unix_timestamp_nanos() / 1_000_000;
        let record = Record {
            signal,
            boot: self.boot,
            accepted_millis: millis as u64,
            items: items.clone().into_iter().collect(),
            request: &request,
        }
        .encode();
        let total: u64 = items.values().sum();
        if total == 0 {
            // Nothing to meter or forward (an empty export, or only the reserved scope).
            return Outcome::Accepted { rejected, message };
        }
        let mut record = Some(record);
        loop {
            // Only drop-oldest appends again after a refusal; it alone needs a copy.
            let attempt = match self.when_full {
                WhenFull::DropOldest => record.clone(),
                WhenFull::Backpressure => record.take(),
            };
            match self.wal.append(attempt.expect("appended once, or kept for drop-oldest")).await {
                Ok(()) => {
                    self.metrics.count_items(signal.name(), "accepted", total);
                    self.ledger.accepted(signal, &items);
                    return Outcome::Accepted { rejected, message };
                }
                Err(e) if e.is_full() && self.when_full == WhenFull::DropOldest => {
                    let Some(dropped) = self.backlog.drop_oldest(&self.wal) else {
                        return self.refuse(
                            signal,
                            total,
                            AppendError::Full { pending: self.wal.pending_bytes(), max: 0 },
                        );
                    };
                    for (sig, by_tenant) in dropped {
                        self.metrics.count_items(sig.name(), "dropped", by_tenant.values().sum());
                        self.ledger.dropped(sig, "wal full", &by_tenant);
                    }
                    tracing::warn!("WAL full: dropped its oldest waiting segment to take new data");
                }
                Err(e) => return self.refuse(signal, total, e),
            }
        }
    }

    fn refuse(&self, signal: otlp::Signal, items: u64, e: AppendError) -> Outcome {
        self.metrics.count_items(signal.name(), "refused", items);
        if !e.is_full() {
            tracing::error!(error = %e, "writing the WAL failed; apps are told to retry");
        }
        Outcome::Unavailable { retry_after: FULL_RETRY_AFTER, message: format!("the agent cannot take data now: {e}") }
    }
}

impl Consumer for Intake {
    /// Apps on the host send without keys; the agent names its own batches, so an app's
    /// `tally-batch` is refused.
    fn authenticate(&self, _key: Option<&str>) -> Result<Grant, String> {
        Ok(Grant::default())
    }

    fn consume(&self, delivery: Delivery) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(self.take(delivery))
    }
}
