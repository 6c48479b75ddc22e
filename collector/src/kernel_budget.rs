//! An agent key's kernel usage over time.
//!
//! A usage report alone is bounded by what one host could use in the interval it states
//! ([`measure::reported`]). That does not bound a key: it could send plausible reports one after
//! another, each claiming 512 cores for 8 days, and bill the tenants it names without limit. So
//! each key has, per kernel meter, a token bucket of what its hosts could use: it refills at the
//! key's `hosts:` times the meter's rate ([`Bounds::rate`]) per second of wall-clock time, holds at
//! most a backlog [`window`] of it, and starts full. Over any T seconds the reports one collector
//! accepts from a key claim at most hosts × rate × (T + window).
//!
//! An honest agent never meets it: what it reports in T seconds it used in those T seconds or in
//! the backlog before them (the interval of a report, and what a WAL that waited out an outage
//! delivers at once, within the batch window).
//!
//! A batch resent after a timeout (the same identity and the same usage) collapses with its first
//! copy in the store, so it is charged once: the batches charged lately are remembered by a
//! fingerprint of their identity and kernel usage, with those of their points that were refused.
//! A "resend" with other usage is another batch and is charged as one. A charge is taken before
//! the spool write and given back if the write fails or the request is throttled (the sender
//! sends it again).
//!
//! Requests without kernel usage (every ordinary span, log and metric) never take the lock.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use measure::reported::{kernel_units, Bounds, Rate, MAX_INTERVAL};
use metering::meter::names;
use metering::record::UsageRecord;

/// Batches remembered per host that shares a key: with an agent's report every 10 s, about three
/// hours of them, far longer than a resend takes. An evicted batch resent is charged again.
const REMEMBERED_PER_HOST: usize = 1024;

/// Bucket contents are in nano-units (a meter's reported units × 1e9), so that refilling at a
/// rate in units per second for a number of nanoseconds is exact.
const NANO: u128 = 1_000_000_000;

/// The backlog a key's buckets hold: the longest interval of one report, or the batch window and
/// a day (a WAL that waited out an outage, its oldest report's interval, clocks a little apart),
/// whichever is longer. With the default window of 168 h, 8 days.
pub fn window(batch_max_age: Duration) -> Duration {
    MAX_INTERVAL.max(batch_max_age.saturating_add(Duration::from_secs(86_400)))
}

/// A key: its digest, or `None` for anonymous senders (one budget for all of them).
type KeyId = Option<[u8; 32]>;

/// The kernel usage budgets of every key that reported some.
pub struct KernelBudgets {
    /// One host's rate of each meter in [`names::KERNEL`], in that order.
    rates: [Rate; 4],
    window: Duration,
    keys: Mutex<HashMap<KeyId, KeyBudget>>,
    /// Two keyed hashes make a batch's 128-bit fingerprint; a sender cannot aim a collision at
    /// keys it does not know.
    hashers: [RandomState; 2],
}

struct KeyBudget {
    /// Nano-units left of each meter, as of `at`.
    tokens: [u128; 4],
    at: Instant,
    /// Batches charged, by fingerprint: the indexes of their kernel points that were refused.
    remembered: HashMap<u128, Box<[u32]>>,
    /// The same fingerprints, oldest first.
    order: VecDeque<u128>,
}

/// What [`KernelBudgets::charge`] decided for a request.
#[derive(Debug, Default)]
pub struct Charged {
    /// Kernel points refused, by meter of [`names::KERNEL`].
    pub refused: [u64; 4],
    /// Why, when any was.
    pub reason: String,
    taken: Option<Taken>,
}

/// What a request took from its key's budget, to keep or give back.
#[derive(Debug)]
struct Taken {
    key: KeyId,
    hosts: NonZeroU32,
    tokens: [u128; 4],
    /// The batch's fingerprint and the indexes of its kernel points refused.
    batch: Option<(u128, Box<[u32]>)>,
}

impl KernelBudgets {
    /// Budgets of hosts of `bounds`, holding a backlog of `window` (see [`window`]).
    pub fn new(bounds: Bounds, window: Duration) -> Self {
        let rates = names::KERNEL.map(|m| bounds.rate(m).expect("every kernel meter has a rate"));
        Self { rates, window, keys: Mutex::new(HashMap::new()), hashers: [RandomState::new(), RandomState::new()] }
    }

    /// Charges the kernel usage in `records` (a request's usage reports, after its key's scope) to
    /// the budget of `key`, shared by `hosts` hosts, and takes out of `records` the points that do
    /// not fit. `batch` is the request's batch identity (namespaced by the key), if it has one: a
    /// resend of a batch charged before is not charged again. Call [`Self::keep`] once the rest is
    /// spooled, or [`Self::refund`] if it is not.
    pub fn charge(
        &self,
        key: Option<&str>,
        hosts: NonZeroU32,
        batch: Option<(&str, u64)>,
        records: &mut Vec<UsageRecord>,
    ) -> Charged {
        self.charge_at(key, hosts, batch, records, Instant::now())
    }

    fn charge_at(
        &self,
        key: Option<&str>,
        hosts: NonZeroU32,
        batch: Option<(&str, u64)>,
        records: &mut Vec<UsageRecord>,
        now: Instant,
    ) -> Charged {
        let kernel: Vec<usize> = (0..records.len()).filter(|&i| slot(&records[i].meter).is_some()).collect();
        if kernel.is_empty() {
            return Charged::default();
        }
        let fingerprint = batch.map(|b| self.fingerprint(b, records, &kernel));
        let key = key.map(runtime::auth::digest);
        let mut out = Charged::default();
        let mut taken = [0u128; 4];
        let mut refused_points = Vec::new();
        let mut refused = vec![false; records.len()];
        // The last point refused (meter, units): the answer names one, as for other refusals.
        let mut last = None;
        {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            let budget = keys.entry(key).or_insert_with(|| KeyBudget {
                tokens: self.capacity(hosts),
                at: now,
                remembered: HashMap::new(),
                order: VecDeque::new(),
            });
            self.refill(budget, hosts, now);
            let before = fingerprint.and_then(|f| budget.remembered.get(&f));
            for (n, &i) in kernel.iter().enumerate() {
                let n = n as u32;
                // Accepted with the batch's first copy, whose rows this one's collapse with.
                if before.is_some_and(|refused| !refused.contains(&n)) {
                    continue;
                }
                let m = slot(&records[i].meter).expect("a kernel meter");
                let units = kernel_units(&records[i]).unwrap_or(u128::MAX);
                let need = units.saturating_mul(NANO);
                if budget.tokens[m] >= need {
                    budget.tokens[m] -= need;
                    taken[m] += need;
                } else {
                    out.refused[m] += 1;
                    refused_points.push(n);
                    refused[i] = true;
                    last = Some((m, units));
                }
            }
        }
        if let Some((m, units)) = last {
            let rate = self.rates[m];
            out.reason = format!(
                "usage report {:?}: {} would take this key over its bound of {} (the collector's {}, times the key's \
                 hosts: {hosts}) sustained, beyond a backlog of {} s",
                names::KERNEL[m],
                rate.amount(units),
                rate.bound(hosts.get()),
                rate.flag(),
                self.window.as_secs()
            );
            let mut i = 0;
            records.retain(|_| {
                i += 1;
                !refused[i - 1]
            });
        }
        out.taken = Some(Taken { key, hosts, tokens: taken, batch: fingerprint.map(|f| (f, refused_points.into())) });
        out
    }

    /// Keeps what `charged` took: its request's usage is spooled. Its batch is remembered, so a
    /// resend is not charged again.
    pub fn keep(&self, charged: Charged) {
        let Some(Taken { key, hosts, batch: Some((fingerprint, refused)), .. }) = charged.taken else { return };
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let Some(budget) = keys.get_mut(&key) else { return };
        if budget.remembered.insert(fingerprint, refused).is_none() {
            budget.order.push_back(fingerprint);
            if budget.order.len() > REMEMBERED_PER_HOST.saturating_mul(hosts.get() as usize) {
                let oldest = budget.order.pop_front().expect("not empty");
                budget.remembered.remove(&oldest);
            }
        }
    }

    /// Gives back what `charged` took: its request was not spooled, and its sender will send it
    /// again.
    pub fn refund(&self, charged: Charged) {
        self.refund_at(charged, Instant::now())
    }

    fn refund_at(&self, charged: Charged, now: Instant) {
        let Some(Taken { key, hosts, tokens, .. }) = charged.taken else { return };
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let Some(budget) = keys.get_mut(&key) else { return };
        self.refill(budget, hosts, now);
        self.fill(budget, hosts, tokens);
    }

    /// What `hosts` hosts use of each meter in the backlog window, in nano-units.
    fn capacity(&self, hosts: NonZeroU32) -> [u128; 4] {
        let window = self.window.as_nanos();
        self.rates.map(|r| r.per_second.saturating_mul(u128::from(hosts.get())).saturating_mul(window))
    }

    fn refill(&self, budget: &mut KeyBudget, hosts: NonZeroU32, now: Instant) {
        let elapsed = now.saturating_duration_since(budget.at).as_nanos();
        // Units per second times nanoseconds: nano-units, exactly.
        let earned = self.rates.map(|r| r.per_second.saturating_mul(u128::from(hosts.get())).saturating_mul(elapsed));
        self.fill(budget, hosts, earned);
        budget.at = budget.at.max(now);
    }

    /// Adds `amounts` to the buckets, up to what they hold.
    fn fill(&self, budget: &mut KeyBudget, hosts: NonZeroU32, amounts: [u128; 4]) {
        for ((tokens, add), most) in budget.tokens.iter_mut().zip(amounts).zip(self.capacity(hosts)) {
            *tokens = tokens.saturating_add(add).min(most);
        }
    }

    /// A batch's identity and kernel usage (the `kernel` of `records`): what its rows in the store
    /// are keyed by and hold.
    fn fingerprint(&self, (source, seq): (&str, u64), records: &[UsageRecord], kernel: &[usize]) -> u128 {
        let hash = |state: &RandomState| {
            let mut h = state.build_hasher();
            (source, seq).hash(&mut h);
            for r in kernel.iter().map(|&i| &records[i]) {
                (&r.tenant, &r.meter, r.time.unix_timestamp_nanos(), &r.service, &r.route).hash(&mut h);
                (&r.dimensions, r.value, &r.unique).hash(&mut h);
            }
            h.finish()
        };
        (u128::from(hash(&self.hashers[0])) << 64) | u128::from(hash(&self.hashers[1]))
    }
}

/// The position of a kernel meter in [`names::KERNEL`].
fn slot(meter: &str) -> Option<usize> {
    names::KERNEL.iter().position(|m| *m == meter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    /// Hosts of 4 cores, 800 bits/s (100 bytes a second each way) and 3 connections a second,
    /// with a backlog of 10 s: 40 CPU-seconds, 1,000 bytes each way, 30 connections.
    fn budgets() -> KernelBudgets {
        let bounds = Bounds { max_cores: 4, max_link_bits_per_second: 800, max_connections_per_second: 3 };
        KernelBudgets::new(bounds, Duration::from_secs(10))
    }

    fn record(meter: &str, value: Decimal) -> UsageRecord {
        UsageRecord::new("acme", meter, time::macros::datetime!(2026-12-07 00:00 UTC), value)
    }

    /// `n` nanoseconds of CPU, as a report's record holds them.
    fn cpu_ns(n: i64) -> UsageRecord {
        record("cpu_seconds", Decimal::new(n, 9))
    }

    fn cpu(seconds: i64) -> UsageRecord {
        cpu_ns(seconds * 1_000_000_000)
    }

    const ONE: NonZeroU32 = NonZeroU32::MIN;
    const OVER: &str = "usage report \"cpu_seconds\": 10 CPU-seconds would take this key over its bound of 4 cores \
                        (the collector's --max-report-cores, times the key's hosts: 1) sustained, beyond a backlog \
                        of 10 s";

    /// Charges `records` to `key` at `at` and keeps the charge; returns the values left and why the
    /// rest were refused.
    fn send(
        b: &KernelBudgets,
        key: Option<&str>,
        hosts: NonZeroU32,
        batch: Option<(&str, u64)>,
        mut records: Vec<UsageRecord>,
        at: Instant,
    ) -> (Vec<String>, String) {
        let charged = b.charge_at(key, hosts, batch, &mut records, at);
        let reason = charged.reason.clone();
        assert_eq!(charged.refused.iter().sum::<u64>() > 0, !reason.is_empty());
        b.keep(charged);
        (records.iter().map(|r| r.value.normalize().to_string()).collect(), reason)
    }

    fn accepted(values: &[&str]) -> (Vec<String>, String) {
        (values.iter().map(|v| (*v).to_owned()).collect(), String::new())
    }

    #[test]
    fn a_key_gets_what_its_hosts_could_use_and_no_more_refilled_with_time() {
        let b = budgets();
        let t0 = Instant::now();
        let send = |n: i64, at: Instant| send(&b, Some("agent-key"), ONE, None, vec![cpu(n)], at);
        // A full bucket: 4 cores for 10 s.
        for _ in 0..4 {
            assert_eq!(send(10, t0), accepted(&["10"]));
        }
        assert_eq!(send(10, t0), (vec![], OVER.to_owned()));
        // 4 cores refill 10 CPU-seconds in 2.5 s, to the nanosecond.
        assert_eq!(send(10, t0 + Duration::from_nanos(2_499_999_999)), (vec![], OVER.to_owned()));
        assert_eq!(send(10, t0 + Duration::from_millis(2_500)), accepted(&["10"]));
        assert_eq!(send(10, t0 + Duration::from_millis(2_500)), (vec![], OVER.to_owned()));
        // An hour later the bucket holds its backlog of 10 s, not an hour's worth.
        let later = t0 + Duration::from_secs(3_600);
        for _ in 0..4 {
            assert_eq!(send(10, later), accepted(&["10"]));
        }
        assert_eq!(send(10, later), (vec![], OVER.to_owned()));
        // Other keys, and anonymous senders, have their own.
        assert_eq!(self::send(&b, Some("other-key"), ONE, None, vec![cpu(40)], t0), accepted(&["40"]));
        assert_eq!(self::send(&b, None, ONE, None, vec![cpu(40)], t0), accepted(&["40"]));
    }

    #[test]
    fn an_honest_agent_reporting_all_its_cores_every_interval_is_never_refused() {
        let b = budgets();
        let t0 = Instant::now();
        // 4 cores busy, reported a little after each second for an hour (360 backlogs' worth);
        // then 10 s held back in the WAL by an outage, at once; then every second again.
        for s in 1..=3_600 {
            let at = t0 + Duration::from_secs(s) + Duration::from_millis(3);
            assert_eq!(send(&b, Some("agent-key"), ONE, None, vec![cpu(4)], at), accepted(&["4"]), "second {s}");
        }
        let back = t0 + Duration::from_secs(3_610);
        assert_eq!(send(&b, Some("agent-key"), ONE, None, vec![cpu(4); 10], back).1, "");
        for s in 3_611..3_620 {
            let at = t0 + Duration::from_secs(s);
            assert_eq!(send(&b, Some("agent-key"), ONE, None, vec![cpu(4)], at), accepted(&["4"]), "second {s}");
        }
    }

    #[test]
    fn a_key_shared_by_hosts_gets_each_hosts_worth() {
        let b = budgets();
        let t0 = Instant::now();
        let two = NonZeroU32::new(2).unwrap();
        for _ in 0..8 {
            assert_eq!(send(&b, Some("fleet-key"), two, None, vec![cpu(10)], t0), accepted(&["10"]));
        }
        assert_eq!(
            send(&b, Some("fleet-key"), two, None, vec![cpu(10)], t0).1,
            "usage report \"cpu_seconds\": 10 CPU-seconds would take this key over its bound of 8 cores (the \
             collector's --max-report-cores, times the key's hosts: 2) sustained, beyond a backlog of 10 s"
        );
    }

    #[test]
    fn network_bytes_each_way_and_connections_have_buckets_of_their_own() {
        let b = budgets();
        let t0 = Instant::now();
        let n = |meter: &str, v: i64| record(meter, Decimal::from(v));
        let report = vec![
            n("net_rx_bytes", 1_000),
            n("net_tx_bytes", 1_000),
            n("tcp_connections", 30),
            cpu(40),
            n("dropped_spans", 1 << 40),
        ];
        let all = ["1000", "1000", "30", "40", "1099511627776"];
        assert_eq!(send(&b, Some("k"), ONE, None, report, t0), accepted(&all));
        let over = |meter: &str, what: &str, flag: &str| {
            format!(
                "usage report \"{meter}\": 1 {what} would take this key over its bound of {flag} sustained, beyond \
                 a backlog of 10 s"
            )
        };
        let link = "800 bits/s (the collector's --max-report-link-bits-per-second, times the key's hosts: 1)";
        assert_eq!(
            send(&b, Some("k"), ONE, None, vec![n("net_rx_bytes", 1)], t0).1,
            over("net_rx_bytes", "bytes", link)
        );
        assert_eq!(
            send(&b, Some("k"), ONE, None, vec![n("net_tx_bytes", 1)], t0).1,
            over("net_tx_bytes", "bytes", link)
        );
        assert_eq!(
            send(&b, Some("k"), ONE, None, vec![n("tcp_connections", 1)], t0).1,
            over(
                "tcp_connections",
                "connections",
                "3 connections/s (the collector's --max-report-connections-per-second, times the key's hosts: 1)"
            )
        );
        // The agent's books are not kernel usage: never charged.
        assert_eq!(send(&b, Some("k"), ONE, None, vec![n("agent_accepted_spans", 5)], t0), accepted(&["5"]));
        // A point over the bound is refused whole, the others in the request stand.
        let (kept, why) = send(&b, Some("k"), ONE, None, vec![n("dropped_spans", 2), cpu_ns(1)], t0);
        assert_eq!(kept, ["2"]);
        assert!(why.starts_with("usage report \"cpu_seconds\": 0.000000001 CPU-seconds would take"), "{why}");
    }

    #[test]
    fn a_resent_batch_is_charged_once_and_answered_alike() {
        let b = budgets();
        let t0 = Instant::now();
        let batch = |seq| Some(("0a1b2c/agent:a1:boot1", seq));
        let send = |seq, records, at| send(&b, Some("agent-key"), ONE, batch(seq), records, at);
        assert_eq!(send(1, vec![cpu(40)], t0), accepted(&["40"]));
        // The bucket is empty, and the resend passes: its rows collapse with the first copy's.
        assert_eq!(send(1, vec![cpu(40)], t0), accepted(&["40"]));
        assert_eq!(send(2, vec![cpu(10)], t0), (vec![], OVER.to_owned()));
        // The same identity with other usage is another batch: charged.
        assert_eq!(send(1, vec![cpu(10)], t0), (vec![], OVER.to_owned()));
        // A batch partly refused: its resend gets the same answer while the bucket is short, and
        // the refused point once the bucket holds it (charged then, as it is stored then).
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(send(3, vec![cpu(30), cpu(20)], t1).0, ["30"]);
        assert_eq!(send(3, vec![cpu(30), cpu(20)], t1).0, ["30"]);
        let t2 = t1 + Duration::from_millis(2_500);
        assert_eq!(send(3, vec![cpu(30), cpu(20)], t2), accepted(&["30", "20"]));
        assert_eq!(send(3, vec![cpu(30), cpu(20)], t2), accepted(&["30", "20"]));
        assert_eq!(send(4, vec![cpu_ns(1)], t2).0, Vec::<String>::new(), "nothing left");
    }

    #[test]
    fn a_charge_not_spooled_is_given_back() {
        let b = budgets();
        let t0 = Instant::now();
        let mut records = vec![cpu(40)];
        let charged = b.charge_at(Some("agent-key"), ONE, Some(("s", 1)), &mut records, t0);
        assert_eq!(records.len(), 1);
        b.refund_at(charged, t0);
        // The sender sends it again: not remembered, charged again, and it fits.
        assert_eq!(send(&b, Some("agent-key"), ONE, Some(("s", 1)), vec![cpu(40)], t0), accepted(&["40"]));
        assert_eq!(send(&b, Some("agent-key"), ONE, Some(("s", 2)), vec![cpu_ns(1)], t0).0, Vec::<String>::new());
    }

    #[test]
    fn batches_are_remembered_up_to_a_bound_per_host() {
        let b = budgets();
        let t0 = Instant::now();
        let send = |seq, records| send(&b, Some("agent-key"), ONE, Some(("s", seq)), records, t0);
        for seq in 0..=REMEMBERED_PER_HOST as u64 {
            assert_eq!(send(seq, vec![cpu_ns(1)]).1, "");
        }
        let rest = vec![cpu_ns(40_000_000_000 - 1_025)];
        assert_eq!(self::send(&b, Some("agent-key"), ONE, None, rest, t0).1, "", "the bucket emptied");
        assert_eq!(send(1, vec![cpu_ns(1)]).1, "", "remembered: not charged");
        assert!(!send(0, vec![cpu_ns(1)]).1.is_empty(), "the oldest was forgotten: charged, and refused");
    }

    #[test]
    fn the_backlog_is_the_longest_report_or_the_batch_window_and_a_day() {
        let day = Duration::from_secs(86_400);
        assert_eq!(window(Duration::from_secs(168 * 3_600)), 8 * day);
        assert_eq!(window(Duration::from_secs(3_600)), 8 * day);
        assert_eq!(window(30 * day), 31 * day);
        assert_eq!(window(Duration::MAX), Duration::MAX);
    }
}
