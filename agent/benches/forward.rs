//! Bench (not a test): the real `tally-agent` between the load generator and a
//! real `tally-collector` + ClickHouse 18.16, receive → WAL → forward.
//!
//! ```text
//! cargo bench -p tally-agent --bench forward -- [--runs 3] [--seconds 10] [--baseline PATH]
//! ```
//!
//! With `--baseline PATH` (another build of `tally-agent`), only the default set-up is measured,
//! for that binary and this one in turn, run after run, and the medians are set side by side.
//!
//! For five set-ups — the default (WAL synced before every answer, batches
//! compressed with zstd), batches gzipped instead (`--compression gzip`), the
//! WAL synced every second (`--wal-fsync-ms 1000`), the WAL on tmpfs
//! (`/dev/shm`, where a sync costs nothing), and batches sent uncompressed
//! (`--compression none`) — it measures, per run with a fresh agent: spans/s the
//! the agent takes all the way to the collector at saturation (accepted spans
//! over the load and the drain; pushed-back requests are the agent working) and
//! its CPU-seconds per million spans, its CPU at a steady 10,000 spans/s (as a share of one core), and
//! its peak RSS at 100,000 spans/s. The differences between the set-ups are
//! what the WAL's syncing and the compression cost. After every run it checks that ClickHouse holds
//! exactly the spans the agent acknowledged (all runs so far), and that the
//! agent exits cleanly on SIGTERM.

use metering::store::Store;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use metering::clickhouse::ClickHouse;
use metering::store::migrate::migrate;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use rust_decimal::prelude::ToPrimitive;
use testkit::bench::{cpu_seconds, filesystem_of, load_average, median, peak_rss_kib, thousands};
use testkit::loadgen::{self, Config, Pool, Report};
use testkit::service::{binary, free_port, Service};
use testkit::ClickHouseServer;

const USAGE: &str = "usage: cargo bench -p tally-agent --bench forward -- [--runs N] [--seconds S] [--baseline PATH]";

struct Args {
    runs: usize,
    seconds: f64,
    baseline: Option<PathBuf>,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut out = Self { runs: 3, seconds: 10.0, baseline: None };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            match a.as_str() {
                "--runs" => out.runs = it.next().context(USAGE)?.parse()?,
                "--seconds" => out.seconds = it.next().context(USAGE)?.parse()?,
                "--baseline" => out.baseline = Some(it.next().context(USAGE)?.into()),
                // cargo bench passes --bench to harness-less benches.
                "--bench" => {}
                other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(out)
    }
}

#[derive(Clone, Copy)]
enum Setup {
    Synced,
    Gzip,
    EverySecond,
    Tmpfs,
    Uncompressed,
}

impl Setup {
    const ALL: [Setup; 5] = [Setup::Synced, Setup::Gzip, Setup::EverySecond, Setup::Tmpfs, Setup::Uncompressed];

    fn label(self) -> &'static str {
        match self {
            Setup::Synced => "default: WAL synced before each answer, zstd",
            Setup::Gzip => "--compression gzip",
            Setup::EverySecond => "WAL synced every second",
            Setup::Tmpfs => "WAL on tmpfs",
            Setup::Uncompressed => "--compression none",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Setup::Gzip => &["--compression", "gzip"],
            Setup::EverySecond => &["--wal-fsync-ms", "1000"],
            Setup::Uncompressed => &["--compression", "none"],
            _ => &[],
        }
    }

    fn base_dir(self, disk: &Path) -> PathBuf {
        match self {
            Setup::Tmpfs => PathBuf::from("/dev/shm"),
            _ => disk.to_owned(),
        }
    }
}

struct Sample {
    saturation: Report,
    /// Spans per second through the agent (accepted, over the load and the drain).
    through: f64,
    cpu_per_m: f64,
    steady_cpu_share: f64,
    rss_100k_kib: u64,
    /// Spans the agent acknowledged in this run, all phases.
    acknowledged: u64,
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(bench(args))
}

async fn bench(args: Args) -> Result<()> {
    let server = ClickHouseServer::start()?;
    let db = server.database("bench_agent")?;
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(120))?;
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await?;
    let dir = tempfile::Builder::new().prefix("tally-bench-agent-").tempdir()?;
    let (_collector, collector_url) = start_collector(&server, &db, dir.path()).await?;
    let load =
        Config { tenants: 5, spans_per_request: 500, concurrency: 8, seconds: args.seconds, ..Config::default() };
    let pool = Pool::build(&load);
    let load_before = load_average();
    let mut acknowledged = 0u64;
    let mut results = Vec::new();
    let current = PathBuf::from(env!("CARGO_BIN_EXE_tally-agent"));
    if let Some(baseline) = &args.baseline {
        let (mut before, mut now) = (Vec::new(), Vec::new());
        for run in 1..=args.runs {
            for (bin, into) in [(baseline, &mut before), (&current, &mut now)] {
                let s = measure((Setup::Synced, bin), run, dir.path(), &collector_url, &load, &pool, &args).await?;
                acknowledged += s.acknowledged;
                check_stored(&ch, &db, acknowledged).await?;
                eprintln!(
                    "{} run {run}: {:.2} CPU-s/M spans, {} spans/s through",
                    bin.display(),
                    s.cpu_per_m,
                    thousands(s.through)
                );
                into.push(s);
            }
        }
        println!("\n| agent (default set-up) | spans/s through at saturation | CPU-s / M spans | CPU at 10k spans/s (% of a core) |");
        println!("|---|--:|--:|--:|");
        for (label, samples) in [(baseline.display().to_string(), &before), ("this build".to_owned(), &now)] {
            println!(
                "| {label} | {} | {:.2} | {:.2}% |",
                thousands(median(samples.iter().map(|s| s.through))),
                median(samples.iter().map(|s| s.cpu_per_m)),
                100.0 * median(samples.iter().map(|s| s.steady_cpu_share)),
            );
        }
        let cpu = |v: &Vec<Sample>| median(v.iter().map(|s| s.cpu_per_m));
        println!("\nthis build ÷ baseline, CPU-s per M spans (medians of {} runs each, interleaved, load {load_before} → {}): {:.3}", args.runs, load_average(), cpu(&now) / cpu(&before));
        return Ok(());
    }
    for setup in Setup::ALL {
        let mut samples = Vec::new();
        for run in 1..=args.runs {
            let s = measure((setup, &current), run, dir.path(), &collector_url, &load, &pool, &args).await?;
            acknowledged += s.acknowledged;
            check_stored(&ch, &db, acknowledged).await?;
            eprintln!(
                "{} run {run}: {} spans/s through ({} accepted/s, {} pushed back), {:.2} CPU-s/M spans, {:.2}% of a core at 10k spans/s, {:.1} MiB peak RSS at 100k spans/s",
                setup.label(),
                thousands(s.through),
                thousands(s.saturation.accepted_spans_per_second),
                thousands((s.saturation.sent_spans - s.saturation.accepted_spans) as f64),
                s.cpu_per_m,
                100.0 * s.steady_cpu_share,
                s.rss_100k_kib as f64 / 1024.0
            );
            samples.push(s);
        }
        results.push((setup, samples));
    }
    println!(
        "\n{} (UTC), nproc {}, load {load_before} → {}, disk {}; {} spans/request, {} attributes/span, {} tenants, {} in flight, {} runs of {} s:\n",
        time::OffsetDateTime::now_utc().date(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        filesystem_of(dir.path()),
        load.spans_per_request,
        load.attributes_per_span,
        load.tenants,
        load.concurrency,
        args.runs,
        args.seconds,
    );
    println!("| agent | spans/s through at saturation | CPU-s / M spans | CPU at 10k spans/s (% of a core) | peak RSS at 100k spans/s |");
    println!("|---|--:|--:|--:|--:|");
    for (setup, samples) in &results {
        println!(
            "| {} | {} | {:.2} | {:.2}% | {:.1} MiB |",
            setup.label(),
            thousands(median(samples.iter().map(|s| s.through))),
            median(samples.iter().map(|s| s.cpu_per_m)),
            100.0 * median(samples.iter().map(|s| s.steady_cpu_share)),
            median(samples.iter().map(|s| s.rss_100k_kib as f64 / 1024.0)),
        );
    }
    println!("\nMedians. Every run checked: ClickHouse holds exactly the spans the agent acknowledged.");
    Ok(())
}

async fn start_collector(server: &ClickHouseServer, db: &str, dir: &Path) -> Result<(Service, String)> {
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let args: Vec<String> = [
        "--grpc-listen",
        &format!("127.0.0.1:{grpc}"),
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--clickhouse-url",
        &server.http_url(),
        "--clickhouse-database",
        db,
        "--data-dir",
        &dir.join("collector").to_string_lossy(),
        "--allow-anonymous",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut collector = Service::new(binary("tally-collector"), args, format!("http://127.0.0.1:{admin}"));
    collector.start(&[]).await?;
    Ok((collector, format!("http://127.0.0.1:{grpc}")))
}

async fn start_agent(bin: &Path, collector_url: &str, data_dir: &Path, extra: &[&str]) -> Result<(Service, String)> {
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let args: Vec<String> = [
        "--otlp-grpc-listen",
        &format!("127.0.0.1:{grpc}"),
        "--otlp-http-listen",
        &format!("127.0.0.1:{http}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--collector",
        collector_url,
        "--data-dir",
        &data_dir.to_string_lossy(),
        "--no-ebpf",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = Service::new(bin.to_owned(), args, format!("http://127.0.0.1:{admin}"));
    agent.start(extra).await?;
    Ok((agent, format!("http://127.0.0.1:{grpc}")))
}

/// Waits until the agent's WAL holds nothing a collector has not acknowledged.
async fn drained(agent: &Service) -> Result<()> {
    agent.wait_for_line("tally_agent_wal_bytes 0", Duration::from_secs(120)).await
}

/// One run of `bin` (an agent binary) in `setup`.
async fn measure(
    (setup, bin): (Setup, &Path),
    run: usize,
    disk: &Path,
    collector_url: &str,
    load: &Config,
    pool: &Pool,
    args: &Args,
) -> Result<Sample> {
    let data_dir = tempfile::Builder::new().prefix("tally-bench-agent-wal-").tempdir_in(setup.base_dir(disk))?;
    let label = setup.label();
    let (mut agent, url) = start_agent(bin, collector_url, data_dir.path(), setup.args()).await?;
    let pid = agent.pid().context("agent not running")?;

    // Saturation: as fast as the agent answers. Intake can outrun forwarding (the WAL grows, and
    // when it is full apps are pushed back: refusals here are the agent working), so the rate is
    // what went all the way through: accepted spans over the load and the drain after it.
    let cpu0 = cpu_seconds(pid)?;
    let started = Instant::now();
    let saturation = loadgen::run(&Config { url: url.clone(), ..load.clone() }, pool).await?;
    drained(&agent).await?;
    let through = saturation.accepted_spans as f64 / started.elapsed().as_secs_f64();
    let cpu_per_m = (cpu_seconds(pid)? - cpu0) / (saturation.accepted_spans as f64 / 1e6);

    // A steady 10k spans/s: the agent's share of one core.
    let cpu0 = cpu_seconds(pid)?;
    let started = Instant::now();
    let steady = loadgen::run(&Config { url: url.clone(), rate: 10_000, ..load.clone() }, pool).await?;
    ensure!(steady.all_accepted(), "{label} run {run}: refused at 10k/s {:?}", steady.refused);
    let steady_cpu_share = (cpu_seconds(pid)? - cpu0) / started.elapsed().as_secs_f64();
    drained(&agent).await?;
    let status = agent.terminate()?;
    ensure!(status.success(), "the agent exited with {status} on SIGTERM");

    // 100k spans/s for the peak RSS, on a fresh agent so the saturation run's peak does not count.
    let (mut agent, url) = start_agent(bin, collector_url, data_dir.path(), setup.args()).await?;
    let pid = agent.pid().context("agent not running")?;
    let fast =
        loadgen::run(&Config { url, rate: 100_000, seconds: args.seconds.min(5.0), ..load.clone() }, pool).await?;
    ensure!(fast.all_accepted(), "{label} run {run}: refused at 100k/s {:?}", fast.refused);
    drained(&agent).await?;
    let rss_100k_kib = peak_rss_kib(pid)?;
    let status = agent.terminate()?;
    ensure!(status.success(), "the agent exited with {status} on SIGTERM");
    let acknowledged = saturation.accepted_spans + steady.accepted_spans + fast.accepted_spans;
    Ok(Sample { saturation, through, cpu_per_m, steady_cpu_share, rss_100k_kib, acknowledged })
}

/// Waits (at most 120 s) until ClickHouse holds `want` spans over all tenants; fails on more.
async fn check_stored(ch: &ClickHouse, db: &str, want: u64) -> Result<()> {
    let store = Store::new(ch.clone(), db);
    let now = time::OffsetDateTime::now_utc();
    let from = now.replace_time(time::Time::MIDNIGHT) - time::Duration::days(1);
    let mut q = UsageQuery::new(from, from + time::Duration::days(3));
    q.granularity = Granularity::Month;
    q.meter = Some("spans".into());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stored: u64 = query_usage(&store, &q).await?.iter().map(|p| p.value.to_u64().unwrap_or(u64::MAX)).sum();
        if stored == want {
            return Ok(());
        }
        ensure!(
            stored < want,
            "ClickHouse holds {stored} spans, more than the {want} the agent acknowledged: counted twice"
        );
        ensure!(
            Instant::now() < deadline,
            "ClickHouse holds {stored} spans after 120 s; the agent acknowledged {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
