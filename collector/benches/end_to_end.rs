//! Bench (not a test): the real `tally-collector` binary between the load
//! generator and a private ClickHouse 18.16, at saturation.
//!
//! ```text
//! cargo bench -p tally-collector --bench end_to_end -- \
//!     [--runs 5] [--seconds 10] [--spans-per-request 1000] [--tenants 5] [--concurrency 8] [--collectors 1] [--gzip] [--no-batch] \
//!     [--baseline PATH]
//! ```
//!
//! With `--baseline PATH` (another build of `tally-collector`, e.g. the last release), every run
//! measures that binary first and then this one, on the same load, and the summary sets their
//! medians side by side: what a change costs, measured in one run of one machine.
//!
//! Each run gets a fresh database and fresh collector processes (so their peak
//! RSS is their own), a short warm-up, then `--seconds` of load from
//! `testkit::loadgen` in this process, as fast as the collectors answer; with
//! `--collectors N` the load generator's connections are spread over N
//! collectors, as a load balancer would. Per run and as medians it prints:
//! spans/s accepted, the collectors' CPU-seconds per million spans (utime +
//! stime from `/proc/<pid>/stat`, summed) and spans per collector CPU-second,
//! the largest collector peak RSS (`VmHWM`), ClickHouse server CPU per million
//! spans, `usage` rows and INSERTs (ClickHouse's `InsertQuery` event) per
//! million spans, INSERTs/s, and request latency.
//!
//! Correctness is checked after every run, and the bench fails loudly when it
//! does not hold: the `spans` meter stored in ClickHouse, summed over tenants
//! (and per tenant), equals exactly the spans the collector acknowledged, and
//! the `requests` meter equals the acknowledged SERVER spans. The check waits
//! (up to 60 s) for stored usage to reach the acknowledged count, so a collector
//! that acknowledges before it writes (a disk spool) is measured including the
//! drain; CPU is read after the drain. It checks again after the collector has
//! exited on SIGTERM, so a flush at shutdown cannot double count.
//!
//! Senders put a `tally-batch` identity on every request by default, as the
//! agent does (`--no-batch` sends none; the collector then uses its own).

use metering::store::Store;
use std::collections::BTreeMap;
use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use metering::clickhouse::ClickHouse;
use metering::store::migrate::migrate;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use rust_decimal::Decimal;
use testkit::bench::{cpu_seconds, filesystem_of, load_average, median, peak_rss_kib, thousands, wait_until_quiet};
use testkit::loadgen::{self, Config, Pool, Report};
use testkit::service::free_port;
use testkit::ClickHouseServer;

/// Extra arguments of every collector started here, besides the listen
/// addresses and the ClickHouse URL and database, which the bench picks.
/// `{run_dir}` is replaced by a fresh, empty directory per run (e.g. for
/// `--data-dir {run_dir}/spool`).
const COLLECTOR_ARGS: &[&str] = &["--allow-anonymous", "--clickhouse-timeout-secs", "30", "--data-dir", "{run_dir}"];

const USAGE: &str = "usage: cargo bench -p tally-collector --bench end_to_end -- [--runs N] [--seconds S] \
    [--spans-per-request N] [--tenants N] [--concurrency N] [--collectors N] [--gzip] [--no-batch] [--baseline PATH]";

/// How long stored usage may take to reach what was acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let server = ClickHouseServer::start()?;
    let server_pid = server.pid().context("ClickHouse is not running")?;
    let version = server.query("SELECT version()")?.trim().to_owned();
    let load_before = load_average();
    let load = Config {
        tenants: args.tenants,
        spans_per_request: args.spans_per_request,
        concurrency: args.concurrency,
        gzip: args.gzip,
        seconds: args.seconds,
        ..Config::default()
    };
    let pool = Pool::build(&load);
    let message_bytes: usize = pool.requests.iter().map(|r| r.message_len).sum();
    eprintln!(
        "ClickHouse {version} (pid {server_pid}, data on {}); {} distinct requests of {} spans ({} bytes/span, {} attributes), \
         {} tenants × {} services, {} in flight{}{}",
        filesystem_of(server.dir()),
        pool.requests.len(),
        load.spans_per_request,
        message_bytes as u64 / (pool.requests.len() as u64 * load.spans_per_request.max(1)),
        load.attributes_per_span,
        load.tenants,
        load.services_per_tenant,
        load.concurrency,
        if load.gzip { ", gzip" } else { "" },
        if args.batch { ", tally-batch on every request" } else { "" },
    );
    let current = std::path::PathBuf::from(env!("CARGO_BIN_EXE_tally-collector"));
    let (mut samples, mut baseline) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        if let Some(bin) = &args.baseline {
            let sample = rt.block_on(measure(&server, server_pid, &load, &pool, &args, run, bin))?;
            eprintln!("run {run}/{} baseline  {}", args.runs, sample.describe());
            baseline.push(sample);
        }
        let sample = rt.block_on(measure(&server, server_pid, &load, &pool, &args, run, &current))?;
        eprintln!("run {run}/{}  {}", args.runs, sample.describe());
        samples.push(sample);
    }
    println!();
    print_table(&args, &load, &version, &filesystem_of(server.dir()), &load_before, &samples);
    if let Some(bin) = &args.baseline {
        let cpu = |s: &[Sample]| median(s.iter().map(Sample::collector_cpu_per_m));
        let rate = |s: &[Sample]| median(s.iter().map(|x| x.report.accepted_spans_per_second));
        let (b, c) = (cpu(&baseline), cpu(&samples));
        println!();
        println!("| collector | spans/s accepted | collector CPU-s / M spans |");
        println!("|---|--:|--:|");
        println!("| baseline ({}) | {} | {b:.2} |", bin.display(), thousands(rate(&baseline)));
        println!("| this build | {} | {c:.2} |", thousands(rate(&samples)));
        println!(
            "\nthis build ÷ baseline, CPU-s per M spans (medians of {} runs each, interleaved): {:.3}",
            args.runs,
            c / b
        );
    }
    Ok(())
}

/// Command-line options, parsed by hand (`cargo bench` also passes `--bench`).
struct Args {
    runs: usize,
    seconds: f64,
    spans_per_request: u64,
    tenants: usize,
    concurrency: usize,
    collectors: usize,
    gzip: bool,
    batch: bool,
    baseline: Option<std::path::PathBuf>,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let mut p = Self {
            runs: 5,
            seconds: 10.0,
            spans_per_request: 1000,
            tenants: 5,
            concurrency: 8,
            collectors: 1,
            gzip: false,
            batch: true,
            baseline: None,
        };
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next().with_context(|| format!("{arg} needs a value\n{USAGE}")).map(|v| v.replace(['_', ','], ""))
            };
            match arg.as_str() {
                "--bench" => {}
                "--gzip" => p.gzip = true,
                "--no-batch" => p.batch = false,
                "--runs" => p.runs = value()?.parse()?,
                "--seconds" => p.seconds = value()?.parse()?,
                "--spans-per-request" => p.spans_per_request = value()?.parse()?,
                "--tenants" => p.tenants = value()?.parse()?,
                "--concurrency" => p.concurrency = value()?.parse()?,
                "--collectors" => p.collectors = value()?.parse()?,
                "--baseline" => p.baseline = Some(value()?.into()),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        ensure!(
            p.runs > 0
                && p.seconds > 0.0
                && p.spans_per_request > 0
                && p.tenants > 0
                && p.concurrency > 0
                && p.collectors > 0,
            "every option must be positive\n{USAGE}"
        );
        Ok(p)
    }
}

/// One run's measurements.
struct Sample {
    report: Report,
    collector_cpu: f64,
    collector_peak_rss_kib: u64,
    server_cpu: f64,
    /// CPU of this process (the load generator) during the load.
    loadgen_cpu: f64,
    rows: u64,
    inserts: u64,
    /// From the end of the load until the store held everything acknowledged.
    drain: Duration,
    /// Compressed and uncompressed bytes per `usage` row once merged (what a month of rows
    /// costs on disk: this load's values repeat, so real data compresses less; uncompressed
    /// bounds it).
    bytes_per_row: (f64, f64),
}

impl Sample {
    fn millions(&self) -> f64 {
        self.report.accepted_spans as f64 / 1e6
    }
    fn collector_cpu_per_m(&self) -> f64 {
        self.collector_cpu / self.millions()
    }
    fn spans_per_collector_cpu_second(&self) -> f64 {
        self.report.accepted_spans as f64 / self.collector_cpu
    }
    fn server_cpu_per_m(&self) -> f64 {
        self.server_cpu / self.millions()
    }
    fn loadgen_cpu_per_m(&self) -> f64 {
        self.loadgen_cpu / self.millions()
    }
    fn rows_per_m(&self) -> f64 {
        self.rows as f64 / self.millions()
    }
    fn inserts_per_s(&self) -> f64 {
        self.inserts as f64 / (self.report.seconds + self.drain.as_secs_f64())
    }
    fn refused(&self) -> u64 {
        self.report.refused.values().map(|r| r.spans).sum::<u64>() + self.report.rejected_spans
    }
    fn describe(&self) -> String {
        let r = &self.report;
        format!(
            "{:>9} spans/s accepted ({} spans, {} refused)  collector {:.2} CPU-s/M, peak RSS {:.1} MiB  \
             {} spans per collector CPU-s  ClickHouse {:.2} CPU-s/M  loadgen {:.2} CPU-s/M  {:.0} rows/M  {:.1} INSERTs/s  p50 {:.1} ms p99 {:.1} ms  drain {:.2} s",
            thousands(r.accepted_spans_per_second),
            thousands(r.accepted_spans as f64),
            thousands(self.refused() as f64),
            self.collector_cpu_per_m(),
            self.collector_peak_rss_kib as f64 / 1024.0,
            thousands(self.spans_per_collector_cpu_second()),
            self.server_cpu_per_m(),
            self.loadgen_cpu_per_m(),
            self.rows_per_m(),
            self.inserts_per_s(),
            r.latency_ms.p50,
            r.latency_ms.p99,
            self.drain.as_secs_f64(),
        )
    }
}

/// One run: fresh database and collector, warm-up, timed load, drain, checks.
async fn measure(
    server: &ClickHouseServer,
    server_pid: u32,
    load: &Config,
    pool: &Pool,
    args: &Args,
    run: usize,
    bin: &std::path::Path,
) -> Result<Sample> {
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(120))?;
    let db = server.database("bench_e2e")?;
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await?;
    wait_until_quiet(server_pid)?;
    let mut collectors = Vec::new();
    for _ in 0..args.collectors {
        collectors.push(Collector::start(server, &db, bin).await?);
    }
    let urls = collectors.iter().map(|c| c.grpc_url.as_str()).collect::<Vec<_>>().join(",");
    let collectors_cpu = || collectors.iter().map(|c| cpu_seconds(c.pid())).sum::<Result<f64>>();
    let batch = |phase: &str| args.batch.then(|| format!("bench-{}-run{run}-{phase}", std::process::id()));

    // One round of requests, so connections, allocator and ClickHouse caches are warm.
    let warm = Config {
        seconds: 0.0,
        total_spans: load.spans_per_request * load.concurrency as u64,
        batch_source: batch("warm"),
        url: urls.clone(),
        ..load.clone()
    };
    let warm = loadgen::run(&warm, pool).await?;
    ensure!(warm.all_accepted(), "warm-up refused: {:?}", warm.refused);

    let (rows0, inserts0) = (count_rows(server, &db)?, insert_queries(server)?);
    let (collector0, server0, me0) = (collectors_cpu()?, cpu_seconds(server_pid)?, cpu_seconds(std::process::id())?);
    let main = Config { batch_source: batch("load"), url: urls.clone(), ..load.clone() };
    let report = loadgen::run(&main, pool).await?;
    let loadgen_cpu = cpu_seconds(std::process::id())? - me0;
    if !report.refused.is_empty() || report.rejected_spans > 0 {
        eprintln!(
            "run {run}: NOT ACCEPTED: {} spans partially rejected; refused {:?}",
            report.rejected_spans, report.refused
        );
    }

    let want = Expected::of(&[&warm, &report]);
    let drained = Instant::now();
    let mut stored = stored_usage(&ch, &db).await?;
    while stored.spans() != want.spans && drained.elapsed() < DRAIN_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stored = stored_usage(&ch, &db).await?;
    }
    let drain = drained.elapsed();
    let sample = Sample {
        collector_cpu: collectors_cpu()? - collector0,
        collector_peak_rss_kib: collectors
            .iter()
            .map(|c| peak_rss_kib(c.pid()))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .max()
            .unwrap_or(0),
        server_cpu: cpu_seconds(server_pid)? - server0,
        loadgen_cpu,
        rows: count_rows(server, &db)? - rows0,
        inserts: insert_queries(server)? - inserts0,
        drain,
        report,
        bytes_per_row: (0.0, 0.0),
    };
    want.check(&stored, run, "while the collectors run", &collectors)?;
    for c in &mut collectors {
        c.stop()?;
    }
    want.check(&stored_usage(&ch, &db).await?, run, "after the collectors exited on SIGTERM", &collectors)?;
    Ok(Sample { bytes_per_row: bytes_per_row(server, &db)?, ..sample })
}

/// What the acknowledgements say ClickHouse must hold.
struct Expected {
    spans: u64,
    requests: u64,
    by_tenant: BTreeMap<String, u64>,
}

impl Expected {
    fn of(reports: &[&Report]) -> Self {
        let mut e = Self { spans: 0, requests: 0, by_tenant: BTreeMap::new() };
        for r in reports {
            e.spans += r.accepted_spans;
            e.requests += r.accepted_server_spans;
            for (tenant, n) in &r.accepted_by_tenant {
                *e.by_tenant.entry(tenant.clone()).or_default() += n;
            }
        }
        e.by_tenant.retain(|_, n| *n > 0);
        e
    }

    fn check(&self, stored: &Stored, run: usize, when: &str, collectors: &[Collector]) -> Result<()> {
        // Per tenant holds only when no request was partially rejected (the generator cannot attribute those).
        let whole = self.by_tenant.values().sum::<u64>() == self.spans;
        let ok = stored.spans() == self.spans
            && (!whole || (stored.spans == self.by_tenant && stored.requests == self.requests));
        if !ok {
            bail!(
                "run {run}, {when}: ClickHouse does not hold what the collector acknowledged!\n\
                 acknowledged: {} spans, {} requests, per tenant {:?}\n\
                 stored:       {} spans, {} requests, per tenant {:?}\n{}",
                self.spans,
                self.requests,
                self.by_tenant,
                stored.spans(),
                stored.requests,
                stored.spans,
                collectors.iter().map(Collector::log_tail).collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

/// The `spans` meter per tenant and the `requests` meter summed, as billing reads them.
struct Stored {
    spans: BTreeMap<String, u64>,
    requests: u64,
}

impl Stored {
    fn spans(&self) -> u64 {
        self.spans.values().sum()
    }
}

async fn stored_usage(ch: &ClickHouse, db: &str) -> Result<Stored> {
    let store = Store::new(ch.clone(), db);
    let today = time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
    let mut q = UsageQuery::new(today - time::Duration::days(1), today + time::Duration::days(2));
    q.granularity = Granularity::Month;
    let mut stored = Stored { spans: BTreeMap::new(), requests: 0 };
    let whole = |v: Decimal| u64::try_from(v.trunc().mantissa()).unwrap_or(u64::MAX);
    for p in query_usage(&store, &q).await? {
        match p.meter.as_str() {
            "spans" => *stored.spans.entry(p.tenant).or_default() += whole(p.value),
            "requests" => stored.requests += whole(p.value),
            _ => {}
        }
    }
    Ok(stored)
}

/// The `tally-collector` binary on free loopback ports; killed on drop.
struct Collector {
    child: Option<Child>,
    pid: u32,
    grpc_url: String,
    dir: tempfile::TempDir,
}

impl Collector {
    async fn start(server: &ClickHouseServer, db: &str, bin: &std::path::Path) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("tally-bench-e2e-").tempdir()?;
        let run_dir = dir.path().join("run");
        fs::create_dir(&run_dir)?;
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let extra = COLLECTOR_ARGS.iter().map(|a| a.replace("{run_dir}", &run_dir.to_string_lossy()));
        let child = Command::new(bin)
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}"), "--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}"), "--clickhouse-url", &server.http_url()])
            .args(["--clickhouse-database", db])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("collector.log"))?)
            .spawn()
            .context("starting tally-collector")?;
        let pid = child.id();
        let mut collector = Self { child: Some(child), pid, grpc_url: format!("http://127.0.0.1:{grpc}"), dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = collector.child.as_mut().and_then(|c| c.try_wait().transpose()).transpose()? {
                bail!("tally-collector exited with {status} at start\n{}", collector.log_tail());
            }
            let ready = reqwest::get(format!("http://127.0.0.1:{admin}/readyz")).await.is_ok_and(|r| r.status() == 200);
            if ready {
                return Ok(collector);
            }
            ensure!(Instant::now() < deadline, "tally-collector not ready within 30 s\n{}", collector.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGTERM, then waits (at most 30 s) for a clean exit.
    fn stop(&mut self) -> Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status()?;
        ensure!(status.success(), "kill -TERM {} failed", self.pid);
        let deadline = Instant::now() + Duration::from_secs(30);
        let child = self.child.as_mut().context("tally-collector already stopped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(status.success(), "tally-collector exited with {status} on SIGTERM\n{}", self.log_tail());
                self.child = None;
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "tally-collector did not exit within 30 s of SIGTERM\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("collector.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- tail of the collector's log ---\n{}", lines[lines.len().saturating_sub(20)..].join("\n"))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `SELECT count() FROM db.usage`.
fn count_rows(server: &ClickHouseServer, db: &str) -> Result<u64> {
    Ok(server.query(&format!("SELECT count() FROM {db}.usage"))?.trim().parse()?)
}

/// Compressed and uncompressed bytes per row of `db.usage` after merging its parts into one per partition.
fn bytes_per_row(server: &ClickHouseServer, db: &str) -> Result<(f64, f64)> {
    server.query(&format!("OPTIMIZE TABLE {db}.usage FINAL"))?;
    let text = server.query(&format!(
        "SELECT sum(data_compressed_bytes), sum(data_uncompressed_bytes), sum(rows) FROM system.parts \
         WHERE database = '{db}' AND table = 'usage' AND active"
    ))?;
    let sums: Vec<f64> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    ensure!(sums.len() == 3, "system.parts answered {text:?}");
    Ok((sums[0] / sums[2].max(1.0), sums[1] / sums[2].max(1.0)))
}

/// INSERT statements the server has run since it started (all databases).
fn insert_queries(server: &ClickHouseServer) -> Result<u64> {
    let text = server.query("SELECT sum(value) FROM system.events WHERE event = 'InsertQuery'")?;
    Ok(text.trim().parse().unwrap_or(0))
}

/// The Markdown table for docs/benchmarks.md: one row per run, then the medians.
fn print_table(args: &Args, load: &Config, version: &str, data_fs: &str, load_before: &str, samples: &[Sample]) {
    println!(
        "{} (UTC), nproc {}, load {} → {}, ClickHouse {version} (data on {data_fs}); {} spans/request, {} attributes/span, \
         {} tenants, {} in flight, {} collector(s){}{}, {} runs of {} s:",
        time::OffsetDateTime::now_utc().date(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        load_average(),
        thousands(load.spans_per_request as f64),
        load.attributes_per_span,
        load.tenants,
        load.concurrency,
        args.collectors,
        if args.gzip { ", gzip" } else { "" },
        if args.batch { ", tally-batch" } else { "" },
        args.runs,
        args.seconds,
    );
    println!();
    println!("| run | spans/s accepted | collector CPU-s / M spans | spans per collector CPU-s | collector peak RSS MiB | ClickHouse CPU-s / M spans | loadgen CPU-s / M spans | usage rows / M spans | bytes / row on disk (compressed / raw) | INSERTs/s | p50 / p99 ms | refused spans |");
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    let line = |label: &str, s: &[&Sample]| {
        let m = |f: &dyn Fn(&Sample) -> f64| median(s.iter().map(|x| f(x)));
        println!(
            "| {label} | {} | {:.2} | {} | {:.1} | {:.2} | {:.2} | {:.0} | {:.1} / {:.0} | {:.1} | {:.1} / {:.1} | {} |",
            thousands(m(&|x| x.report.accepted_spans_per_second)),
            m(&|x| x.collector_cpu_per_m()),
            thousands(m(&|x| x.spans_per_collector_cpu_second())),
            m(&|x| x.collector_peak_rss_kib as f64 / 1024.0),
            m(&|x| x.server_cpu_per_m()),
            m(&|x| x.loadgen_cpu_per_m()),
            m(&|x| x.rows_per_m()),
            m(&|x| x.bytes_per_row.0),
            m(&|x| x.bytes_per_row.1),
            m(&|x| x.inserts_per_s()),
            m(&|x| x.report.latency_ms.p50),
            m(&|x| x.report.latency_ms.p99),
            thousands(s.iter().map(|x| x.refused() as f64).sum()),
        );
    };
    for (i, s) in samples.iter().enumerate() {
        line(&(i + 1).to_string(), &[s]);
    }
    let all: Vec<&Sample> = samples.iter().collect();
    line("**median**", &all);
    println!();
    println!(
        "Every run checked: the `spans` meter in ClickHouse (per tenant and in total) equals the spans the collector \
         acknowledged, and `requests` the acknowledged SERVER spans. CPU from /proc/<pid>/stat over the load and the drain; \
         the refused column is a sum, not a median."
    );
}
