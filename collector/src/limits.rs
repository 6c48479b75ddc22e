//! Per-tenant rate limits on OTLP items (spans, data points, log records),
//! token buckets from `governor`: a sustained rate and a burst per tenant.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

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
}

/// The limiters, one per tenant that has a limit.
pub struct Limits {
    configured: HashMap<String, Limit>,
    default: Option<Limit>,
    limiters: Mutex<HashMap<String, std::sync::Arc<DefaultDirectRateLimiter>>>,
}

impl Limits {
    /// Limits for the listed tenants, and `default` for every other tenant (none: unlimited).
    pub fn new(tenants: &[TenantLimit], default: Option<Limit>) -> Self {
        let configured = tenants.iter().map(|t| (t.tenant.clone(), t.limit)).collect();
        Self { configured, default, limiters: Mutex::new(HashMap::new()) }
    }

    fn limit_of(&self, tenant: &str) -> Option<Limit> {
        self.configured.get(tenant).copied().or(self.default)
    }

    /// Takes `items` from `tenant`'s bucket, or says when to come back.
    pub fn check(&self, tenant: &str, items: u64) -> Result<(), Throttle> {
        let Some(limit) = self.limit_of(tenant) else { return Ok(()) };
        let Some(n) = NonZeroU32::new(items.min(u64::from(u32::MAX)) as u32) else { return Ok(()) };
        let limiter = {
            let mut limiters = self.limiters.lock().expect("limiter map");
            limiters
                .entry(tenant.to_owned())
                .or_insert_with(|| {
                    std::sync::Arc::new(RateLimiter::direct(
                        Quota::per_second(limit.per_second).allow_burst(limit.burst),
                    ))
                })
                .clone()
        };
        let over = |retry_after: Duration| Throttle {
            retry_after,
            message: format!(
                "tenant {tenant} is over its limit of {} items/s (burst {}); retry after {} ms",
                limit.per_second,
                limit.burst,
                retry_after.as_millis()
            ),
        };
        match limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(over(not_until.wait_time_from(DefaultClock::default().now()))),
            // More than a whole burst at once: it will never fit as one request.
            Err(_) => Err(Throttle {
                retry_after: Duration::from_secs(1),
                message: format!(
                    "tenant {tenant}: {items} items in one request exceed its burst of {}; send smaller batches",
                    limit.burst
                ),
            }),
        }
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

    #[test]
    fn buckets_per_tenant() {
        let limits = Limits::new(&["acme=10/100".parse().unwrap()], Some("1000".parse().unwrap()));
        assert_eq!(limits.check("acme", 100), Ok(()));
        let t = limits.check("acme", 10).unwrap_err();
        assert!(t.retry_after > Duration::from_millis(500) && t.retry_after <= Duration::from_secs(1), "{t:?}");
        assert!(t.message.starts_with("tenant acme is over its limit of 10 items/s (burst 100)"), "{}", t.message);
        // Other tenants have their own buckets.
        assert_eq!(limits.check("globex", 1000), Ok(()));
        assert!(limits.check("acme", 101).unwrap_err().message.contains("exceed its burst of 100"));
        assert_eq!(Limits::new(&[], None).check("anyone", 1 << 40), Ok(()));
    }
}
