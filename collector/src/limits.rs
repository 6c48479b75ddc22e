//! Per-tenant rate limits on OTLP items (spans, data points, log records): a token bucket per
//! tenant, with a sustained rate and a burst.
//!
//! A request larger than the burst passes when the bucket is full and leaves it in debt: the
//! tenant's next items wait until the debt is repaid at its rate. So a batch of any size passes
//! eventually (an agent's batch is cut by bytes, not by a tenant's burst), and the long-run rate
//! still never exceeds the limit.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A limit: `RATE` items per second with a burst of `BURST` (default: one second's worth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Items per second.
    pub per_second: NonZeroU32,
    /// Items that may arrive at once.
    pub burst: NonZeroU32,
}

impl FromStr for Limit {
    type Err = String;

    /// `RATE` or `RATE/BURST`, e.g. `1000` or `1000/5000`.
    fn from_str(s: &str) -> Result<Self, String> {
        let number =
            |v: &str| v.trim().parse::<NonZeroU32>().map_err(|_| format!("{v:?} is not a positive whole number"));
        match s.split_once('/') {
            Some((rate, burst)) => Ok(Limit { per_second: number(rate)?, burst: number(burst)? }),
            None => {
                let rate = number(s)?;
                Ok(Limit { per_second: rate, burst: rate })
            }
        }
    }
}

/// `TENANT=LIMIT`, as `--tenant-limit` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantLimit {
    /// The tenant.
    pub tenant: String,
    /// Its limit.
    pub limit: Limit,
}

impl FromStr for TenantLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (tenant, limit) = s.split_once('=').ok_or_else(|| format!("{s:?} is not TENANT=RATE[/BURST]"))?;
        metering::record::validate_tenant(tenant).map_err(|e| e.to_string())?;
        Ok(TenantLimit { tenant: tenant.to_owned(), limit: limit.parse()? })
    }
}

/// Why a tenant's items were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// When the items would fit.
    pub retry_after: Duration,
    /// For the sender.
    pub message: String,
    /// The tenants over their limit.
    pub tenants: Vec<String>,
}

/// One tenant's bucket: tokens (items) that refill at the limit's rate up to its burst, and may
/// go below zero by one oversized take.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, limit: Limit, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * f64::from(limit.per_second.get());
        self.tokens = (self.tokens + earned).min(f64::from(limit.burst.get()));
        self.at = now;
    }

    /// How long until `items` may be taken: zero when they may now. A take needs the bucket to
    /// hold `items`, or to be full when `items` is more than the burst.
    fn wait(&self, limit: Limit, items: u64) -> Duration {
        let needed = (items as f64).min(f64::from(limit.burst.get()));
        let missing = needed - self.tokens;
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(missing / f64::from(limit.per_second.get()))
    }
}

/// The buckets, one per tenant that has a limit.
pub struct Limits {
    configured: HashMap<String, Limit>,
    default: Option<Limit>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limits {
    /// Limits for the listed tenants, and `default` for every other tenant (none: unlimited).
    pub fn new(tenants: &[TenantLimit], default: Option<Limit>) -> Self {
        let configured = tenants.iter().map(|t| (t.tenant.clone(), t.limit)).collect();
        Self { configured, default, buckets: Mutex::new(HashMap::new()) }
    }

    /// Whether any tenant has a limit.
    pub fn any(&self) -> bool {
        self.default.is_some() || !self.configured.is_empty()
    }

    fn limit_of(&self, tenant: &str) -> Option<Limit> {
        self.configured.get(tenant).copied().or(self.default)
    }

    /// Takes each tenant's items from its bucket, all or none: when any tenant is over its
    /// limit nothing is taken (the request is refused whole and its other tenants' items must
    /// not be charged for it), and the answer says when to come back.
    pub fn take(&self, items: &BTreeMap<&str, u64>) -> Result<(), Throttle> {
        self.take_at(items, Instant::now())
    }

    fn take_at(&self, items: &BTreeMap<&str, u64>, now: Instant) -> Result<(), Throttle> {
        let limited: Vec<(&str, u64, Limit)> =
            items.iter().filter(|(_, n)| **n > 0).filter_map(|(t, n)| self.limit_of(t).map(|l| (*t, *n, l))).collect();
        if limited.is_empty() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("limit buckets");
        let mut worst = Duration::ZERO;
        let mut over = Vec::new();
        for &(tenant, n, limit) in &limited {
            let bucket = buckets
                .entry(tenant.to_owned())
                .or_insert_with(|| Bucket { tokens: f64::from(limit.burst.get()), at: now });
            bucket.refill(limit, now);
            let wait = bucket.wait(limit, n);
            if wait > Duration::ZERO {
                worst = worst.max(wait);
                over.push((tenant, limit));
            }
        }
        if over.is_empty() {
            for (tenant, n, _) in limited {
                buckets.get_mut(tenant).expect("refilled above").tokens -= n as f64;
            }
            return Ok(());
        }
        let (tenant, limit) = over[0];
        Err(Throttle {
            retry_after: worst,
            message: format!(
                "tenant {tenant} is over its limit of {} items/s (burst {}); retry after {} ms",
                limit.per_second,
                limit.burst,
                worst.as_millis().max(1)
            ),
            tenants: over.iter().map(|(t, _)| (*t).to_owned()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(
            "10/20".parse::<Limit>().unwrap(),
            Limit { per_second: 10.try_into().unwrap(), burst: 20.try_into().unwrap() }
        );
        assert_eq!("5".parse::<Limit>().unwrap().burst.get(), 5);
        assert_eq!("0".parse::<Limit>().unwrap_err(), "\"0\" is not a positive whole number");
        assert_eq!("acme=7/9".parse::<TenantLimit>().unwrap().limit.burst.get(), 9);
        assert!("acme".parse::<TenantLimit>().unwrap_err().contains("TENANT=RATE[/BURST]"));
        assert!("a b=1".parse::<TenantLimit>().is_err());
    }

    fn one(tenant: &str, n: u64) -> BTreeMap<&str, u64> {
        BTreeMap::from([(tenant, n)])
    }

    #[test]
    fn buckets_per_tenant() {
        let limits = Limits::new(&["acme=10/100".parse().unwrap()], Some("1000".parse().unwrap()));
        let t0 = Instant::now();
        assert_eq!(limits.take_at(&one("acme", 100), t0), Ok(()));
        let t = limits.take_at(&one("acme", 10), t0).unwrap_err();
        assert_eq!(t.retry_after, Duration::from_secs(1));
        assert_eq!(t.message, "tenant acme is over its limit of 10 items/s (burst 100); retry after 1000 ms");
        assert_eq!(t.tenants, ["acme"]);
        // A second later the ten fit.
        assert_eq!(limits.take_at(&one("acme", 10), t0 + Duration::from_secs(1)), Ok(()));
        // Other tenants have their own buckets.
        assert_eq!(limits.take_at(&one("globex", 1000), t0), Ok(()));
        assert_eq!(Limits::new(&[], None).take_at(&one("anyone", 1 << 40), t0), Ok(()));
    }

    #[test]
    fn a_request_over_the_burst_passes_on_a_full_bucket_and_leaves_a_debt() {
        let limits = Limits::new(&["noisy=100/200".parse().unwrap()], None);
        let t0 = Instant::now();
        assert_eq!(limits.take_at(&one("noisy", 1000), t0), Ok(()), "a full bucket takes any request");
        // 800 in debt: one more item needs 8.01 s of refill.
        let t = limits.take_at(&one("noisy", 1), t0).unwrap_err();
        assert_eq!(t.retry_after, Duration::from_secs_f64(8.01));
        assert!(limits.take_at(&one("noisy", 1000), t0 + Duration::from_secs(9)).is_err(), "not full yet");
        assert_eq!(limits.take_at(&one("noisy", 1000), t0 + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn a_refused_request_charges_none_of_its_tenants() {
        let limits = Limits::new(&["a=10/10".parse().unwrap(), "b=10/10".parse().unwrap()], None);
        let t0 = Instant::now();
        assert_eq!(limits.take_at(&one("a", 10), t0), Ok(()));
        let both = BTreeMap::from([("a", 5), ("b", 10)]);
        assert_eq!(limits.take_at(&both, t0).unwrap_err().tenants, ["a"]);
        // b was not charged for the refused request: its whole burst is still there.
        assert_eq!(limits.take_at(&one("b", 10), t0), Ok(()));
    }
}
