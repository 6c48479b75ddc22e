//! The agent's books, per tenant: items accepted from apps, items collectors
//! acknowledged, items dropped with the reason, and the usage the agent
//! measures itself (eBPF). Reported to the collectors as usage (see
//! [`crate::report`]), so `/v1/reconciliation` can show where accepted and
//! stored units part ways.

use std::collections::BTreeMap;
use std::sync::Mutex;

use otlp::Signal;

/// What is counted: `(tenant, meter, dropped reason or "")` → amount; the meter
/// is a signal's items (`spans`, …) or, for measured usage, the meter itself.
pub type Counts = BTreeMap<(String, &'static str, String), u64>;

/// Counts since the last report.
#[derive(Debug, Default)]
pub struct Ledger {
    accepted: Mutex<Counts>,
    acked: Mutex<Counts>,
    dropped: Mutex<Counts>,
    measured: Mutex<Counts>,
    /// Since when the counts run, in Unix nanoseconds: the ledger's start, then the last report
    /// taken. A report states it, so collectors can bound what it claims per second.
    since: Mutex<u64>,
}

/// One report's worth of counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Entries {
    /// Accepted from apps.
    pub accepted: Counts,
    /// Acknowledged by a collector.
    pub acked: Counts,
    /// Dropped, by reason.
    pub dropped: Counts,
    /// Usage the agent measured (`cpu_seconds` in nanoseconds, `net_rx_bytes`, …).
    pub measured: Counts,
    /// The start of the interval they cover, in Unix nanoseconds.
    pub since: u64,
}

impl Entries {
    /// Nothing to report.
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty() && self.acked.is_empty() && self.dropped.is_empty() && self.measured.is_empty()
    }
}

fn add<'a>(book: &Mutex<Counts>, signal: Signal, reason: &str, items: impl IntoIterator<Item = (&'a String, &'a u64)>) {
    let mut book = book.lock().unwrap_or_else(|e| e.into_inner());
    for (tenant, n) in items {
        if *n > 0 {
            *book.entry((tenant.clone(), signal.items_meter(), reason.to_owned())).or_default() += n;
        }
    }
}

/// Now, in Unix nanoseconds.
pub fn now_unix_nano() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos().try_into().unwrap_or(0)
}

impl Ledger {
    /// An empty ledger whose counts run from now.
    pub fn new() -> Self {
        Self { since: Mutex::new(now_unix_nano()), ..Default::default() }
    }

    /// Items of `signal` accepted into the WAL.
    pub fn accepted<'a>(&self, signal: Signal, items: impl IntoIterator<Item = (&'a String, &'a u64)>) {
        add(&self.accepted, signal, "", items);
    }

    /// Items of `signal` a collector acknowledged.
    pub fn acked<'a>(&self, signal: Signal, items: impl IntoIterator<Item = (&'a String, &'a u64)>) {
        add(&self.acked, signal, "", items);
    }

    /// Items of `signal` dropped for `reason`.
    pub fn dropped<'a>(&self, signal: Signal, reason: &str, items: impl IntoIterator<Item = (&'a String, &'a u64)>) {
        add(&self.dropped, signal, reason, items);
    }

    /// `amount` of `meter` that `tenant` used, as the agent measured it.
    pub fn measured(&self, tenant: &str, meter: &'static str, amount: u64) {
        if amount > 0 {
            let mut book = self.measured.lock().unwrap_or_else(|e| e.into_inner());
            let n = book.entry((tenant.to_owned(), meter, String::new())).or_default();
            *n = n.saturating_add(amount);
        }
    }

    /// Takes the counts since the last call.
    pub fn take(&self) -> Entries {
        let take = |m: &Mutex<Counts>| std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()));
        let since = std::mem::replace(&mut *self.since.lock().unwrap_or_else(|e| e.into_inner()), now_unix_nano());
        Entries {
            accepted: take(&self.accepted),
            acked: take(&self.acked),
            dropped: take(&self.dropped),
            measured: take(&self.measured),
            since,
        }
    }

    pub fn restore(&self, entries: Entries) {
        let merge = |m: &Mutex<Counts>, counts: Counts| {
            let mut book = m.lock().unwrap_or_else(|e| e.into_inner());
            for (k, n) in counts {
                *book.entry(k).or_default() += n;
            }
        };
        merge(&self.accepted, entries.accepted);
        merge(&self.acked, entries.acked);
        merge(&self.dropped, entries.dropped);
        merge(&self.measured, entries.measured);
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        *since = (*since).min(entries.since);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_come_back_when_a_report_fails() {
        let ledger = Ledger::new();
        let acme = ("acme".to_owned(), 5u64);
        ledger.accepted(Signal::Traces, [(&acme.0, &acme.1)]);
        ledger.accepted(Signal::Traces, [(&acme.0, &2)]);
        ledger.dropped(Signal::Logs, "wal full", [(&acme.0, &3)]);
        let taken = ledger.take();
        assert_eq!(taken.accepted, Counts::from([(("acme".into(), "spans", String::new()), 7)]));
        assert_eq!(taken.dropped, Counts::from([(("acme".into(), "log_records", "wal full".into()), 3)]));
        assert!(ledger.take().is_empty());
        ledger.accepted(Signal::Traces, [(&acme.0, &1)]);
        ledger.restore(taken);
        assert_eq!(ledger.take().accepted[&("acme".into(), "spans", String::new())], 8);
    }
}
