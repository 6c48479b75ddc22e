//! What one API read may cost: ClickHouse limits sent with each of its queries, a deadline
//! after which its queries are killed, a cap on the buckets a usage request spans, and how many
//! reads one tenant may run at once. Without them one tenant's year of minutes could take
//! ClickHouse's memory, and every other caller with it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metering::clickhouse::ClickHouse;
use metering::store::rollup::{Granularity, UsageQuery};
use metering::store::Store;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::Principal;
use super::error::ApiError;

/// `tally serve`'s limits on each read.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadLimits {
    /// Longest one ClickHouse query of an API read may run, in seconds (sent as
    /// max_execution_time); the API gives up 1 s later, kills the read's queries and answers 504
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub query_max_execution_secs: u64,
    /// Most memory one ClickHouse query of an API read may use, in bytes (sent as
    /// max_memory_usage); over it the read gets 422 query_too_large
    #[arg(long, default_value_t = 1 << 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub query_max_memory_bytes: u64,
    /// Most buckets ((to − from) ÷ granularity) one /v1/usage request may span: 44,640 is 31
    /// days of minutes
    #[arg(long, default_value_t = 44_640, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_buckets: u64,
    /// Most reads a tenant's keys may run at once; more get 429 with Retry-After (billing keys
    /// are not limited)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_max_concurrent_reads: u32,
    /// Most reads all tenants' keys together may run at once, so that ClickHouse holds at most
    /// this many × --query-max-memory-bytes for them; more get 429 with Retry-After (billing keys
    /// are not counted)
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub tenants_max_concurrent_reads: u32,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            query_max_execution_secs: 20,
            query_max_memory_bytes: 1 << 30,
            max_buckets: 44_640,
            tenant_max_concurrent_reads: 2,
            tenants_max_concurrent_reads: 8,
        }
    }
}

impl ReadLimits {
    /// How long the API waits for a read before killing it: ClickHouse's own limit first, so
    /// that its precise error usually arrives, then a second of grace.
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.query_max_execution_secs + 1)
    }

    /// Refuses a usage request spanning more than [`max_buckets`](Self::max_buckets) buckets,
    /// naming the longest range its granularity allows.
    pub fn check_buckets(&self, query: &UsageQuery) -> Result<(), ApiError> {
        let span = buckets(query.granularity, query.from.unix_timestamp(), query.to.unix_timestamp());
        if span <= self.max_buckets {
            return Ok(());
        }
        let g = query.granularity.as_str();
        Err(ApiError::bad_request(
            "range_too_large",
            format!(
                "from..to spans {span} {g} buckets; at most {} are served per request, so granularity={g} \
                 allows at most {}: split the range or use a coarser granularity",
                self.max_buckets,
                largest_range(query.granularity, self.max_buckets)
            ),
        ))
    }
}

/// `(to − from) ÷ granularity`, rounded up; calendar months touched for `month`.
fn buckets(g: Granularity, from: i64, to: i64) -> u64 {
    let span = (to - from).max(0) as u64;
    match g {
        Granularity::Minute => span.div_ceil(60),
        Granularity::Hour => span.div_ceil(3600),
        Granularity::Day => span.div_ceil(86_400),
        Granularity::Month => {
            let month = |t: i64| {
                let d = time::OffsetDateTime::from_unix_timestamp(t).map(|t| t.date()).unwrap_or(time::Date::MIN);
                i64::from(d.year()) * 12 + i64::from(u8::from(d.month()))
            };
            (month(to - 1) - month(from) + 1).max(0) as u64
        }
    }
}

/// The longest range `max` buckets of `g` cover, in words.
fn largest_range(g: Granularity, max: u64) -> String {
    let plural = |n: u64, unit: &str| if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") };
    match g {
        Granularity::Minute if max.is_multiple_of(1440) => plural(max / 1440, "day"),
        Granularity::Minute if max.is_multiple_of(60) => plural(max / 60, "hour"),
        Granularity::Minute => plural(max, "minute"),
        Granularity::Hour if max.is_multiple_of(24) => plural(max / 24, "day"),
        Granularity::Hour => plural(max, "hour"),
        Granularity::Day => plural(max, "day"),
        Granularity::Month => plural(max, "month"),
    }
}

/// The reads in flight: each tenant's permits and all tenants' together, and the ids that tag
/// their queries.
#[derive(Debug)]
pub struct Reads {
    limits: ReadLimits,
    /// ClickHouse with the limits on every call; a read's queries are tagged from it.
    limited: ClickHouse,
    /// Tells this process's query ids from another replica's against the same server.
    instance: String,
    next: AtomicU64,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Permits of all tenants' reads together.
    all: Arc<Semaphore>,
}

impl Reads {
    /// Reads of `store` under `limits`.
    pub fn new(store: &Store, limits: ReadLimits) -> Self {
        let limited = store
            .ch()
            .clone()
            .with_setting("max_execution_time", &limits.query_max_execution_secs.to_string())
            .with_setting("max_memory_usage", &limits.query_max_memory_bytes.to_string());
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
        let instance = format!("{:x}", now ^ u64::from(std::process::id()));
        let all = Arc::new(Semaphore::new(limits.tenants_max_concurrent_reads as usize));
        Self { limits, limited, instance, next: AtomicU64::new(0), tenants: Mutex::new(HashMap::new()), all }
    }

    /// The limits.
    pub fn limits(&self) -> &ReadLimits {
        &self.limits
    }

    /// `store` with the limits on every call, for work shared by many reads (no deadline, no
    /// permit, not killed when one caller goes away).
    pub fn store(&self, store: &Store) -> Store {
        store.with_ch(self.limited.clone())
    }

    /// Starts a read of `store` for `principal`: 429 when the tenant runs as many as it may.
    pub fn begin(&self, store: &Store, principal: &Principal) -> Result<Read, ApiError> {
        let permit = match principal {
            Principal::Billing => None,
            Principal::Tenant(tenant) => Some(self.permit(tenant)?),
        };
        let prefix = format!("tally-api-{}-{}", self.instance, self.next.fetch_add(1, Ordering::Relaxed));
        let ch = self.limited.clone().with_query_id_prefix(&prefix).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(Read {
            store: store.with_ch(ch),
            deadline: self.limits.deadline(),
            kill: Some(Kill { ch: store.ch().clone(), prefix }),
            _permits: permit,
        })
    }

    /// The tenant's permit, then one of all tenants' (so a refused read holds neither).
    fn permit(&self, tenant: &str) -> Result<[OwnedSemaphorePermit; 2], ApiError> {
        let max = self.limits.tenant_max_concurrent_reads;
        let semaphore = {
            let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
            tenants.entry(tenant.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(max as usize))).clone()
        };
        let own = semaphore.try_acquire_owned().map_err(|_| ApiError::too_many_reads(max))?;
        let shared = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::too_many_tenant_reads(self.limits.tenants_max_concurrent_reads))?;
        Ok([own, shared])
    }
}

/// One read: its store (limits and query ids on every call), its deadline, and its tenant's
/// permits. Dropped before it finished (the caller went away, or the deadline passed), it kills
/// its queries: ClickHouse would otherwise run them to the end for nobody.
#[derive(Debug)]
pub struct Read {
    store: Store,
    deadline: Duration,
    kill: Option<Kill>,
    _permits: Option<[OwnedSemaphorePermit; 2]>,
}

impl Read {
    /// Runs `work` on the read's store within the deadline (504 `query_timeout` past it).
    pub async fn run<T, F, Fut>(mut self, work: F) -> Result<T, ApiError>
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = T>,
    {
        match tokio::time::timeout(self.deadline, work(self.store.clone())).await {
            Ok(out) => {
                self.kill = None;
                Ok(out)
            }
            Err(_) => {
                tracing::warn!(deadline_secs = self.deadline.as_secs(), "read timed out; killing its queries");
                Err(ApiError::query_timeout(&format!("no answer within {} s", self.deadline.as_secs())))
            }
        }
    }
}

#[derive(Debug)]
struct Kill {
    ch: ClickHouse,
    prefix: String,
}

impl Drop for Read {
    fn drop(&mut self) {
        let Some(Kill { ch, prefix }) = self.kill.take() else { return };
        // Drop cannot wait; a runtime is there, since reads only run in handlers.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            match ch.kill_queries(&prefix).await {
                Ok(()) => tracing::info!(query_id_prefix = %prefix, "abandoned read's queries killed"),
                Err(e) => {
                    tracing::warn!(query_id_prefix = %prefix, error = %e, "could not kill an abandoned read's queries")
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn query(g: Granularity, from: time::OffsetDateTime, to: time::OffsetDateTime) -> UsageQuery {
        let mut q = UsageQuery::new(from, to);
        q.granularity = g;
        q
    }

    #[test]
    fn bucket_cap_names_the_largest_range() {
        let limits = ReadLimits::default();
        let jan = datetime!(2026-01-01 00:00 UTC);
        assert_eq!(limits.check_buckets(&query(Granularity::Minute, jan, datetime!(2026-02-01 00:00 UTC))), Ok(()));
        let err = limits.check_buckets(&query(Granularity::Minute, jan, datetime!(2026-02-01 00:01 UTC))).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (400, "range_too_large"));
        assert_eq!(
            err.message,
            "from..to spans 44641 minute buckets; at most 44640 are served per request, so granularity=minute \
             allows at most 31 days: split the range or use a coarser granularity"
        );
        let year = query(Granularity::Hour, jan, datetime!(2036-01-01 00:00 UTC));
        assert!(limits
            .check_buckets(&year)
            .unwrap_err()
            .message
            .ends_with("allows at most 1860 days: split the range or use a coarser granularity"));
        assert_eq!(
            buckets(Granularity::Month, jan.unix_timestamp(), datetime!(2026-03-01 00:01 UTC).unix_timestamp()),
            3
        );
        assert_eq!(
            buckets(Granularity::Month, jan.unix_timestamp(), datetime!(2026-02-01 00:00 UTC).unix_timestamp()),
            1
        );
        assert_eq!(buckets(Granularity::Day, jan.unix_timestamp(), jan.unix_timestamp() + 90), 1);
    }
}
