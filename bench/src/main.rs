//! Tally against rotel (a Rust OpenTelemetry collector) on the same OTLP
//! traffic, in one run on one machine. Run it with `bench/run`, which installs
//! what it needs (rotel from PyPI included) and keeps the output in
//! `bench/results/`.
//!
//! ```text
//! tally-bench-peer [--runs 3] [--seconds 10] [--rotel PATH]
//! ```
//!
//! Two paths, each system measured the same way, runs interleaved so drift on a
//! noisy machine hits both alike:
//! - agent path: load generator → forwarder → a counting OTLP sink in this
//!   process. Tally's agent (WAL synced before every answer) against rotel with
//!   its OTLP exporter (no WAL), with gzip and uncompressed, plus Tally's
//!   default (zstd). Spans/s is what reached the sink over the load and the
//!   drain; every accepted span must reach it.
//! - ingest ceiling: load generator → receiver. Tally's collector (metering,
//!   its spool, ClickHouse 18.16; checked exactly against ClickHouse every run)
//!   against rotel's blackhole exporter.
//!
//! For each: spans/s at saturation, the process's CPU-seconds per million spans
//! and its peak RSS, medians of the runs, and Tally ÷ rotel. Then the machine's
//! ceiling for the same bytes: prost's decode alone, one core.

mod ceiling;
mod perf;
mod sink;
mod systems;

use metering::store::Store;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use metering::clickhouse::ClickHouse;
use metering::store::migrate::migrate;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use rust_decimal::prelude::ToPrimitive;
use testkit::bench::{cpu_seconds, load_average, median, peak_rss_kib, thousands};
use testkit::clickhouse::ClickHouseServer;
use testkit::loadgen::{self, Config, Pool};

use perf::Perf;
use sink::Sink;
use systems::Running;

const USAGE: &str = "usage: tally-bench-peer [--runs N] [--seconds S] [--rotel PATH] [--profile DIR] [--only TEXT]";

struct Args {
    runs: usize,
    seconds: f64,
    rotel: Option<PathBuf>,
    /// Where the first run writes a `perf` profile of each system under load.
    profile: Option<PathBuf>,
    /// Only the set-ups whose label contains this (for a quick look at one; no ratios then).
    only: Option<String>,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut out = Self { runs: 3, seconds: 10.0, rotel: None, profile: None, only: None };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            match a.as_str() {
                "--runs" => out.runs = it.next().context(USAGE)?.parse()?,
                "--seconds" => out.seconds = it.next().context(USAGE)?.parse()?,
                "--rotel" => out.rotel = Some(it.next().context(USAGE)?.into()),
                "--profile" => out.profile = Some(it.next().context(USAGE)?.into()),
                "--only" => out.only = Some(it.next().context(USAGE)?),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        ensure!(out.runs > 0 && out.seconds > 0.0, "--runs and --seconds must be positive");
        Ok(out)
    }
}

/// One system on one path.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    TallyAgent(&'static str),
    RotelForward(&'static str),
    TallyCollector,
    RotelBlackhole,
}

impl Setup {
    /// For file names.
    fn slug(self) -> String {
        self.label()
            .to_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join("-")
    }

    fn label(self) -> String {
        match self {
            Setup::TallyAgent(c) => format!("Tally agent, {c}"),
            Setup::RotelForward(c) => format!("rotel, {c}"),
            Setup::TallyCollector => "Tally collector (meters, spool, ClickHouse)".into(),
            Setup::RotelBlackhole => "rotel, blackhole exporter".into(),
        }
    }
}

/// What one run of one set-up measured.
struct Sample {
    spans_per_second: f64,
    cpu_per_million: f64,
    peak_rss_mib: f64,
    /// Spans the load generator got acknowledged, and spans that reached the sink (or ClickHouse).
    accepted: u64,
    delivered: u64,
    /// Spans the sink received again in a batch it already had (resends).
    resent: u64,
}

struct Bench {
    args: Args,
    rotel: PathBuf,
    load: Config,
    pool: Pool,
    clickhouse: ClickHouseServer,
    ch: ClickHouse,
    dir: tempfile::TempDir,
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    let rotel = systems::find_rotel(args.rotel.clone())?;
    let version = std::process::Command::new(&rotel).arg("--version").output().context("running rotel --version")?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let load = Config {
        tenants: 5,
        services_per_tenant: 2,
        spans_per_request: 500,
        attributes_per_span: 13,
        concurrency: 8,
        seconds: args.seconds,
        ..Config::default()
    };
    let pool = Pool::build(&load);
    let clickhouse = ClickHouseServer::start()?;
    let ch = ClickHouse::new(&clickhouse.http_url(), Duration::from_secs(120))?;
    let dir = tempfile::Builder::new().prefix("tally-bench-peer-").tempdir()?;
    let bench = Bench { args, rotel, load, pool, clickhouse, ch, dir };
    let load_before = load_average();
    let agent_path = [
        Setup::TallyAgent("gzip"),
        Setup::RotelForward("gzip"),
        Setup::TallyAgent("none"),
        Setup::RotelForward("none"),
        Setup::TallyAgent("zstd"),
    ];
    let ingest = [Setup::TallyCollector, Setup::RotelBlackhole];
    let mut samples: Vec<(Setup, Vec<Sample>)> = agent_path.iter().chain(&ingest).map(|s| (*s, Vec::new())).collect();
    if let Some(only) = &bench.args.only {
        samples.retain(|(setup, _)| setup.label().contains(only.as_str()));
        ensure!(!samples.is_empty(), "no set-up's label contains {only:?}");
    }
    for run in 1..=bench.args.runs {
        for (setup, done) in samples.iter_mut() {
            let s = rt.block_on(bench.measure(*setup, run))?;
            eprintln!(
                "run {run}, {}: {} spans/s, {:.2} CPU-s/M spans, {:.0} MiB peak RSS, {} accepted, {} delivered, {} resent",
                setup.label(),
                thousands(s.spans_per_second),
                s.cpu_per_million,
                s.peak_rss_mib,
                s.accepted,
                s.delivered,
                s.resent
            );
            done.push(s);
        }
    }
    // The tables and ratios need every set-up.
    if bench.args.only.is_some() {
        return Ok(());
    }
    let decode = ceiling::measure_all(&bench.pool, bench.args.runs, bench.args.seconds.min(3.0));

    let bytes_per_span = bench.pool.requests.iter().map(|r| r.message_len as f64).sum::<f64>()
        / bench.pool.requests.iter().map(|r| r.spans as f64).sum::<f64>();
    println!(
        "\n{} UTC; {}; nproc {}; load {load_before} → {}; peer: {}.\nTraffic: OTLP/gRPC from tally-loadgen, {} spans/request, {} attributes and ~{bytes_per_span:.0} bytes per span, {} tenants × {} services, {} requests in flight; {} runs of {} s each, medians.\n",
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
        cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        load_average(),
        String::from_utf8_lossy(&version.stdout).trim(),
        bench.load.spans_per_request,
        bench.load.attributes_per_span,
        bench.load.tenants,
        bench.load.services_per_tenant,
        bench.load.concurrency,
        bench.args.runs,
        bench.args.seconds,
    );
    println!("Agent path: OTLP in → forward to the same OTLP sink. Spans/s = spans that reached the sink ÷ (load + drain).\n");
    table(
        &samples[..agent_path.len()],
        &[
            ("gzip", Setup::TallyAgent("gzip"), Setup::RotelForward("gzip")),
            ("none", Setup::TallyAgent("none"), Setup::RotelForward("none")),
        ],
    );
    println!("\nIngest ceiling: OTLP in → Tally's collector metering into ClickHouse vs rotel discarding. Spans/s = acknowledged ÷ load time; CPU over the load and the spool's drain.\n");
    table(&samples[agent_path.len()..], &[("", Setup::TallyCollector, Setup::RotelBlackhole)]);
    let collector_cpu = median(
        samples
            .iter()
            .filter(|(s, _)| *s == Setup::TallyCollector)
            .flat_map(|(_, v)| v.iter().map(|s| s.cpu_per_million)),
    );
    println!("\nThe machine's ceiling for the same bytes, one core (no network):\n");
    println!("| stage | spans/s | CPU-s / M spans |\n|---|--:|--:|");
    for (name, rate) in &decode {
        println!("| {name} | {} | {:.2} |", thousands(*rate), 1e6 / rate);
    }
    let prost_cpu = 1e6 / decode[0].1;
    println!(
        "\nTally's collector end to end costs {:.2}× prost's decode alone per span (aim: within 2×).",
        collector_cpu / prost_cpu
    );
    Ok(())
}

fn table(samples: &[(Setup, Vec<Sample>)], pairs: &[(&str, Setup, Setup)]) {
    let med = |setup: Setup, f: fn(&Sample) -> f64| {
        median(samples.iter().filter(|(s, _)| *s == setup).flat_map(|(_, v)| v.iter().map(f)))
    };
    println!(
        "| system | spans/s | CPU-s / M spans | peak RSS | accepted → delivered (all runs) |\n|---|--:|--:|--:|--:|"
    );
    for (setup, v) in samples {
        let accepted: u64 = v.iter().map(|s| s.accepted).sum();
        let delivered: u64 = v.iter().map(|s| s.delivered).sum();
        let resent: u64 = v.iter().map(|s| s.resent).sum();
        let resent = if resent > 0 { format!(" (+{resent} resent, counted once)") } else { String::new() };
        println!(
            "| {} | {} | {:.2} | {:.0} MiB | {accepted} → {delivered}{resent} |",
            setup.label(),
            thousands(med(*setup, |s| s.spans_per_second)),
            med(*setup, |s| s.cpu_per_million),
            med(*setup, |s| s.peak_rss_mib),
        );
    }
    for (name, tally, rotel) in pairs {
        let ratio = |f: fn(&Sample) -> f64| med(*tally, f) / med(*rotel, f);
        let label =
            if name.is_empty() { "**Tally ÷ rotel**".to_owned() } else { format!("**Tally ÷ rotel, {name}**") };
        println!(
            "| {label} | {:.2}× | {:.2}× | {:.2}× | |",
            ratio(|s| s.spans_per_second),
            ratio(|s| s.cpu_per_million),
            ratio(|s| s.peak_rss_mib)
        );
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

impl Bench {
    async fn measure(&self, setup: Setup, run: usize) -> Result<Sample> {
        // The first run of each set-up is profiled when asked: the same load, under `perf`.
        let profile = self
            .args
            .profile
            .as_ref()
            .filter(|_| run == 1)
            .map(|dir| dir.join(format!("profile-{}.txt", setup.slug())));
        let profile = profile.as_deref();
        match setup {
            Setup::TallyAgent(_) | Setup::RotelForward(_) => self.forward(setup, profile).await,
            Setup::TallyCollector => self.collector(run, profile).await,
            Setup::RotelBlackhole => self.blackhole(profile).await,
        }
        .with_context(|| format!("{}, run {run}", setup.label()))
    }

    /// The agent path: load → forwarder → sink, until the sink has every accepted span.
    async fn forward(&self, setup: Setup, profile: Option<&Path>) -> Result<Sample> {
        let sink = Sink::start().await?;
        let wal = tempfile::Builder::new().prefix("agent-").tempdir_in(self.dir.path())?;
        let (process, url) = match setup {
            Setup::TallyAgent(compression) => {
                systems::tally_agent(&sink.url, wal.path(), &["--compression", compression]).await?
            }
            Setup::RotelForward(compression) => {
                let args = [
                    "--exporter",
                    "otlp",
                    "--otlp-exporter-endpoint",
                    &sink.url,
                    "--otlp-exporter-compression",
                    compression,
                ];
                systems::rotel(&self.rotel, &args).await?
            }
            _ => unreachable!("not a forwarder"),
        };
        let pid = process.pid()?;
        let perf = profile.map(|out| Perf::record(pid, out)).transpose()?;
        let (cpu0, started) = (cpu_seconds(pid)?, Instant::now());
        let report = loadgen::run(&Config { url, ..self.load.clone() }, &self.pool).await?;
        let waited = sink.wait_for(report.accepted_spans, Duration::from_secs(180)).await;
        let (elapsed, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds(pid)? - cpu0);
        if let Some(perf) = perf {
            perf.finish(&setup.label())?;
        }
        let peak_rss_mib = peak_rss_kib(pid)? as f64 / 1024.0;
        process.stop()?;
        let (received, unique) = sink.counts.get();
        sink.stop().await?;
        // A forwarder that loses acknowledged spans is reported as such (delivered < accepted);
        // for Tally's agent it is a failure.
        if let (Err(e), Setup::TallyAgent(_)) = (waited, setup) {
            return Err(e);
        }
        Ok(Sample {
            spans_per_second: unique as f64 / elapsed,
            cpu_per_million: cpu / (report.accepted_spans as f64 / 1e6),
            peak_rss_mib,
            accepted: report.accepted_spans,
            delivered: unique,
            resent: received - unique,
        })
    }

    /// The ingest ceiling for Tally: load → collector → ClickHouse, checked exactly.
    async fn collector(&self, run: usize, profile: Option<&Path>) -> Result<Sample> {
        let db = self.clickhouse.database(&format!("peer_run{run}"))?;
        migrate(&Store::new(self.ch.clone(), &db)).await?;
        let spool = tempfile::Builder::new().prefix("collector-").tempdir_in(self.dir.path())?;
        let (process, url) = systems::tally_collector(&self.clickhouse.http_url(), &db, spool.path()).await?;
        self.ingest(Setup::TallyCollector, process, url, profile, |accepted| stored_spans(&self.ch, &db, accepted))
            .await
    }

    /// The ingest ceiling for rotel: load → blackhole.
    async fn blackhole(&self, profile: Option<&Path>) -> Result<Sample> {
        let (process, url) = systems::rotel(&self.rotel, &["--exporter", "blackhole"]).await?;
        self.ingest(Setup::RotelBlackhole, process, url, profile, |accepted| async move {
            // What rotel still does with the last batches (its batch timeout is 200 ms).
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(accepted)
        })
        .await
    }

    /// Drives a receiver at saturation; `settle` waits for what it still does with the
    /// accepted spans (its CPU meanwhile counts) and returns how many were delivered.
    async fn ingest<F: std::future::Future<Output = Result<u64>>>(
        &self,
        setup: Setup,
        process: Running,
        url: String,
        profile: Option<&Path>,
        settle: impl FnOnce(u64) -> F,
    ) -> Result<Sample> {
        let pid = process.pid()?;
        let perf = profile.map(|out| Perf::record(pid, out)).transpose()?;
        let cpu0 = cpu_seconds(pid)?;
        let report = loadgen::run(&Config { url, ..self.load.clone() }, &self.pool).await?;
        ensure!(report.all_accepted(), "{} refused {:?}", setup.label(), report.refused);
        let delivered = settle(report.accepted_spans).await?;
        let cpu = cpu_seconds(pid)? - cpu0;
        if let Some(perf) = perf {
            perf.finish(&setup.label())?;
        }
        let peak_rss_mib = peak_rss_kib(pid)? as f64 / 1024.0;
        process.stop()?;
        Ok(Sample {
            spans_per_second: report.accepted_spans_per_second,
            cpu_per_million: cpu / (report.accepted_spans as f64 / 1e6),
            peak_rss_mib,
            accepted: report.accepted_spans,
            delivered,
            resent: 0,
        })
    }
}

/// Waits (at most 120 s) until ClickHouse holds `want` spans; fails on more (counted twice).
async fn stored_spans(ch: &ClickHouse, db: &str, want: u64) -> Result<u64> {
    let store = Store::new(ch.clone(), db);
    let today = time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
    let mut q = UsageQuery::new(today - time::Duration::days(1), today + time::Duration::days(2));
    q.granularity = Granularity::Month;
    q.meter = Some("spans".into());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stored: u64 = query_usage(&store, &q).await?.iter().map(|p| p.value.to_u64().unwrap_or(u64::MAX)).sum();
        ensure!(stored <= want, "ClickHouse holds {stored} spans, more than the {want} acknowledged");
        if stored == want {
            return Ok(stored);
        }
        ensure!(Instant::now() < deadline, "ClickHouse holds {stored} of {want} acknowledged spans after 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
