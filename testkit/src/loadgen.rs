//! An OTLP/gRPC trace load generator: realistic spans for many tenants, sent
//! at a target rate (or as fast as the server takes them), with every answer
//! checked and counted.
//!
//! Requests are encoded into a [`Pool`] before the clock starts, so the cost of
//! generating them does not count against the server being measured; the
//! generator then only writes pre-framed bytes to HTTP/2 streams. Each
//! response's gRPC status (from the headers of a trailers-only response, or
//! from the trailers) is counted: a non-OK answer is never ignored, and a
//! partial success's `rejected_spans` is subtracted from what was accepted.
//!
//! ```no_run
//! use testkit::loadgen::{self, Config, Pool};
//! # async fn demo() -> anyhow::Result<()> {
//! let config = Config { url: "http://127.0.0.1:4417".into(), tenants: 5, seconds: 10.0, ..Config::default() };
//! let pool = Pool::build(&config);
//! let report = loadgen::run(&config, &pool).await?;
//! println!("{}", serde_json::to_string(&report)?);
//! assert!(report.all_accepted(), "{:?}", report.refused);
//! # Ok(()) }
//! ```

mod client;
mod pool;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use http::{HeaderMap, HeaderValue};
use serde::Serialize;

pub use client::{status_name, Answer, TRACES_PATH};
pub use pool::{Encoded, Pool};

use client::{Connection, Target};

/// What to send, where, how fast and for how long. Also the `tally-loadgen` command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "tally-loadgen", about = "OTLP/gRPC trace load generator; prints one JSON report line")]
pub struct Config {
    /// The OTLP/gRPC endpoint, `http://host:port` (h2c); several, comma-separated, spread the
    /// connections over them round-robin, as a load balancer in front of collectors would.
    #[arg(long, default_value = "http://127.0.0.1:4417")]
    pub url: String,
    /// Tenants (`tenant.id` = tenant-0 … tenant-N-1, a resource attribute).
    #[arg(long, default_value_t = 5)]
    pub tenants: usize,
    /// Services (`service.name` = svc-0 …) per tenant.
    #[arg(long, default_value_t = 2)]
    pub services_per_tenant: usize,
    /// Spans per Export request, dealt round-robin over every (tenant, service).
    #[arg(long, default_value_t = 1000)]
    pub spans_per_request: u64,
    /// Attributes per span: http.request.method, http.route, url.path,
    /// http.response.status_code, … then app.attr_N.
    #[arg(long, default_value_t = 13)]
    pub attributes_per_span: usize,
    /// Percent of spans of kind SERVER (the `requests` meter); the rest are CLIENT or INTERNAL.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub server_percent: u8,
    /// Target rate in spans/s; 0 sends as fast as the server answers.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// HTTP/2 connections the in-flight requests share (at least one per endpoint).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Stop starting requests after this many seconds (0: no time limit).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Stop after this many spans, rounded up to whole requests (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub total_spans: u64,
    /// Send `Authorization: Bearer <KEY>`.
    #[arg(long, env = "TALLY_LOADGEN_KEY")]
    pub key: Option<String>,
    /// Send `tally-batch: <SOURCE> <seq> <unix-millis>` with a fresh seq (from 1) per request,
    /// so the collector stores each request under that identity.
    #[arg(long)]
    pub batch_source: Option<String>,
    /// Compress requests with gzip (`grpc-encoding: gzip`).
    #[arg(long)]
    pub gzip: bool,
    /// Distinct requests to pre-encode; they are sent round-robin.
    #[arg(long, default_value_t = 16)]
    pub pool: usize,
    /// Give up on one request after this many seconds (counted as DEADLINE_EXCEEDED).
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
}

impl Default for Config {
    fn default() -> Self {
        <Self as clap::Parser>::parse_from(["tally-loadgen"])
    }
}

/// Requests and spans refused with one gRPC status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// Requests answered with this status.
    pub requests: u64,
    /// Spans in those requests.
    pub spans: u64,
    /// The first message the server gave with it.
    pub first_message: String,
}

/// Latency of answered requests, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// What a run sent and what the server said; printed as one JSON line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Requests sent (answered or not).
    pub requests: u64,
    /// Spans in those requests.
    pub sent_spans: u64,
    /// Spans acknowledged with gRPC OK, minus any partial success's `rejected_spans`.
    pub accepted_spans: u64,
    /// SERVER spans in fully accepted requests (what the `requests` meter should count).
    pub accepted_server_spans: u64,
    /// Spans in fully accepted requests, per tenant name.
    pub accepted_by_tenant: BTreeMap<String, u64>,
    /// Spans an OK answer refused through `partial_success.rejected_spans`.
    pub rejected_spans: u64,
    /// Non-OK answers per gRPC status name (e.g. `UNAVAILABLE`); `TRANSPORT` for
    /// calls that failed below gRPC (connection refused, reset, HTTP/2 error).
    pub refused: BTreeMap<String, Refusal>,
    /// From the first request to the last answer.
    pub seconds: f64,
    /// `accepted_spans / seconds`.
    pub accepted_spans_per_second: f64,
    /// `sent_spans / seconds`.
    pub sent_spans_per_second: f64,
    /// Bytes of gRPC frames sent (compressed when gzip is on).
    pub sent_bytes: u64,
    /// Per answered request.
    pub latency_ms: Latency,
}

impl Report {
    /// Every span sent was accepted: no refusal, no transport error, no partial rejection.
    pub fn all_accepted(&self) -> bool {
        self.refused.is_empty() && self.rejected_spans == 0 && self.accepted_spans == self.sent_spans
    }
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    requests: u64,
    sent_spans: u64,
    sent_bytes: u64,
    accepted_spans: u64,
    accepted_server_spans: u64,
    accepted_by_tenant: Vec<u64>,
    rejected_spans: u64,
    refused: BTreeMap<String, Refusal>,
    latencies_us: Vec<u64>,
}

impl Tally {
    fn refuse(&mut self, status: String, spans: u64, message: String) {
        let r = self.refused.entry(status).or_default();
        if r.requests == 0 {
            r.first_message = message;
        }
        r.requests += 1;
        r.spans += spans;
    }
}

/// Shared by the workers: which request comes next, when to stop, the headers.
struct Plan {
    next: AtomicU64,
    seq: AtomicU64,
    max_requests: u64,
    start: Instant,
    deadline: Option<Instant>,
    headers: HeaderMap,
}

/// Sends `pool`'s requests as `config` says and reports what the server answered.
///
/// Fails only when the configuration is unusable; every failure of a request
/// (a gRPC status, a broken connection, a timeout) is counted in the report.
pub async fn run(config: &Config, pool: &Pool) -> Result<Report> {
    ensure!(!pool.requests.is_empty(), "the request pool is empty");
    ensure!(config.concurrency > 0 && config.connections > 0, "concurrency and connections must be at least 1");
    ensure!(
        config.seconds > 0.0 || config.total_spans > 0,
        "give a duration (--seconds) or a span count (--total-spans)"
    );
    let targets: Vec<Target> = config.url.split(',').map(Target::parse).collect::<Result<_>>()?;
    let mut headers = HeaderMap::new();
    if let Some(key) = &config.key {
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).context("the key is not a valid header value")?,
        );
    }
    if pool.gzip {
        headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
    }
    let spr = config.spans_per_request.max(1);
    let start = Instant::now();
    let plan = Arc::new(Plan {
        next: AtomicU64::new(0),
        seq: AtomicU64::new(1),
        max_requests: if config.total_spans > 0 { config.total_spans.div_ceil(spr) } else { u64::MAX },
        start,
        deadline: (config.seconds > 0.0).then(|| start + Duration::from_secs_f64(config.seconds)),
        headers,
    });
    let connections: Vec<Arc<Connection>> = (0..config.connections.max(targets.len()))
        .map(|i| Arc::new(Connection::new(targets[i % targets.len()].clone())))
        .collect();
    let pool = Arc::new(pool.clone());
    let workers: Vec<_> = (0..config.concurrency)
        .map(|w| {
            let (plan, pool, config) = (plan.clone(), pool.clone(), config.clone());
            let connection = connections[w % connections.len()].clone();
            tokio::spawn(async move { worker(&plan, &pool, &config, &connection).await })
        })
        .collect();
    let mut tallies = Vec::new();
    for w in workers {
        tallies.push(w.await.context("a load generator worker panicked")?);
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(report(tallies, seconds, config.tenants.max(1)))
}

async fn worker(plan: &Plan, pool: &Pool, config: &Config, connection: &Connection) -> Tally {
    let mut tally = Tally { accepted_by_tenant: vec![0; config.tenants.max(1)], ..Tally::default() };
    let timeout = Duration::from_secs_f64(config.timeout);
    loop {
        let index = plan.next.fetch_add(1, Ordering::Relaxed);
        if index >= plan.max_requests || plan.deadline.is_some_and(|d| Instant::now() >= d) {
            return tally;
        }
        if config.rate > 0 {
            // Request `index` is due when the rate has made room for its spans.
            let due = plan.start
                + Duration::from_secs_f64(index as f64 * config.spans_per_request as f64 / config.rate as f64);
            if plan.deadline.is_some_and(|d| due >= d) {
                return tally;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        let request = &pool.requests[index as usize % pool.requests.len()];
        let mut headers = plan.headers.clone();
        if let Some(source) = &config.batch_source {
            let seq = plan.seq.fetch_add(1, Ordering::Relaxed);
            let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
            if let Ok(value) = HeaderValue::from_str(&format!("{source} {seq} {millis}")) {
                headers.insert("tally-batch", value);
            }
        }
        tally.requests += 1;
        tally.sent_spans += request.spans;
        tally.sent_bytes += request.frame.len() as u64;
        let sent = Instant::now();
        let answer = tokio::time::timeout(timeout, connection.export(request.frame.clone(), &headers)).await;
        match answer {
            Ok(Ok(Answer::Ok { rejected })) => {
                tally.latencies_us.push(sent.elapsed().as_micros() as u64);
                let rejected = rejected.min(request.spans);
                tally.accepted_spans += request.spans - rejected;
                tally.rejected_spans += rejected;
                if rejected == 0 {
                    tally.accepted_server_spans += request.server_spans;
                    for (t, n) in request.spans_by_tenant.iter().enumerate() {
                        tally.accepted_by_tenant[t] += n;
                    }
                }
            }
            Ok(Ok(Answer::Status { code, message })) => {
                tally.latencies_us.push(sent.elapsed().as_micros() as u64);
                tally.refuse(status_name(code), request.spans, message);
            }
            Ok(Err(e)) => {
                tally.refuse("TRANSPORT".into(), request.spans, format!("{e:#}"));
                connection.reset().await;
                // Do not spin on a dead server.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => {
                let message = format!("no answer within {timeout:?}");
                tally.refuse(status_name(4), request.spans, message);
            }
        }
    }
}

fn report(tallies: Vec<Tally>, seconds: f64, tenants: usize) -> Report {
    let mut r = Report { seconds, ..Report::default() };
    let mut by_tenant = vec![0u64; tenants];
    let mut latencies = Vec::new();
    for t in tallies {
        r.requests += t.requests;
        r.sent_spans += t.sent_spans;
        r.sent_bytes += t.sent_bytes;
        r.accepted_spans += t.accepted_spans;
        r.accepted_server_spans += t.accepted_server_spans;
        r.rejected_spans += t.rejected_spans;
        for (i, n) in t.accepted_by_tenant.iter().enumerate() {
            by_tenant[i] += n;
        }
        for (status, refusal) in t.refused {
            let into = r.refused.entry(status).or_default();
            if into.requests == 0 {
                into.first_message = refusal.first_message;
            }
            into.requests += refusal.requests;
            into.spans += refusal.spans;
        }
        latencies.extend(t.latencies_us);
    }
    r.accepted_by_tenant = by_tenant.into_iter().enumerate().map(|(i, n)| (Pool::tenant_name(i), n)).collect();
    r.accepted_spans_per_second = r.accepted_spans as f64 / seconds.max(1e-9);
    r.sent_spans_per_second = r.sent_spans as f64 / seconds.max(1e-9);
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |&us| us as f64 / 1000.0)
    };
    r.latency_ms = Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: latencies.last().map_or(0.0, |&us| us as f64 / 1000.0),
    };
    r
}
