//! Bench (not a test): a month of invoices and reports for many tenants.
//!
//! ```text
//! cargo bench -p tally-metering --bench month -- [--tenants 1000] [--days 30] [--runs 3] [--live]
//!     [--settle] [--traffic 1] [--no-seal]
//! ```
//!
//! Starts a private ClickHouse 18.16, migrates it, and generates November 2026
//! server-side (`INSERT ... SELECT FROM numbers(N)`): for every tenant, 10 meters
//! × one `usage` row per minute, and 2 services × one `sla` row per minute, as the
//! collector writes them (one batch identity per source and minute). `--days`
//! fills only the month's first days, for quick runs; invoices and reports still
//! cover the whole month. `--traffic N` writes each tenant-minute's usage as N batches
//! instead of one (N rows per key, distinct batch identities, values that add up to the
//! same totals). Each usage and SLA row is stamped (`inserted_at`) as a collector writing the
//! month as it happened would have stamped it: its batch's minute end plus a second per
//! batch (never later than now), so folds see a month of inserts, not a few minutes of them.
//! Generating is set-up: timed and reported, not measured.
//!
//! Then, `--runs` times, it measures the production paths the CLI runs:
//!
//! * every tenant's invoice (`pricing::store::month_invoices`, as `tally invoice --all` and
//!   `GET /v1/invoices/{month}`), as JSON;
//! * the usage report of all tenants (`report::read_usage_report`), as JSON;
//! * the SLA report of all tenants with credits (`report::read_sla_report`), as JSON;
//!
//! With `--live` (or `--settle`) it first reads the month live, before it is sealed: the three,
//! and for 100 tenants one at a time their `/v1/usage`-shaped reads (`query_usage`, the month by
//! day) and their invoices (`pricing::store::invoice`, as `GET /v1/tenants/{t}/invoices/{month}`),
//! latencies p50/p99. With `--settle` it then settles the month (`settle::fold` until caught up,
//! grace 0, then `settle::roll` until caught up, as `tally settle`), and reads it live again,
//! `--runs` times, now settled: the same reads must give byte-identical invoices, reports and
//! points.
//!
//! Then (unless `--no-seal`) it seals the month and verifies the seal once (`seal::seal`,
//! `seal::verify`, as `tally seal|verify`), and measures the three again, `--runs` times, now
//! from the seal (as billing reads a closed month). Every phase gets wall time, CPU and peak
//! resident memory of this process and of the server (peaks reset through
//! `/proc/<pid>/clear_refs` before each), and the medians are printed as a Markdown table.
//!
//! Values are a closed-form function of tenant, meter and minute, so the bench
//! checks exactness: every tenant's invoice lines and usage report totals, some
//! tenants' request counts, and each `/v1/usage` read's daily points must equal the
//! totals computed here, or it aborts; live reads before and after settling must
//! produce the same bytes; a catch-up must fold every batch exactly once.

use metering::store::Store;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use metering::clickhouse::ClickHouse;
use metering::meter::{Catalog, Unit, BUILTIN};
use metering::pricing::invoice::{Invoice, LineKind};
use metering::pricing::plan::PriceBook;
use metering::pricing::plan_file;
use metering::pricing::{self, BillingMonth};
use metering::report;
use metering::settle::{self, Fold, FoldOptions};
use metering::sla::schema::SLA_ROW;
use metering::sla::sketch::bucket_of;
use metering::store::migrate::migrate;
use metering::store::rollup::{query_usage, Granularity, UsagePoint, UsageQuery};
use metering::store::schema::USAGE_ROW;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use testkit::bench::{cpu_times, filesystem_of, load_average, median, peak_rss_kib, thousands, wait_until_quiet};
use testkit::ClickHouseServer;

const USAGE: &str =
    "usage: cargo bench -p tally-metering --bench month -- [--tenants N] [--days D] [--runs R] [--live] \
     [--settle] [--traffic N] [--no-seal]\n\
     --live      also reads the month live (before it is sealed) R times: minutes of ClickHouse work per tenant\n\
     --settle    --live, then settles the month (folds until caught up, timed once) and reads it live again R times, \
     settled\n\
     --traffic N writes each tenant-minute's usage as N batches with the same totals (default 1)\n\
     --no-seal   skips sealing, verifying and reading from the seal";

const MONTH: &str = "2026-11";
/// The meters every tenant uses: the first ten built-ins, all reported (no agents' books).
const METERS: usize = 10;
const SERVICES: [&str; 2] = ["api", "web"];
/// Tenants whose requests and errors are checked against the closed forms: first, middle, last.
const CHECKED: usize = 3;
/// Folds run, at most, after the catch-up, waiting for `fold` to return `None`.
const FOLDS_AGAIN: usize = 5;
/// Tenants read one at a time as `GET /v1/usage` reads them.
const API_READS: u64 = 100;
/// Tenants per generating INSERT: one INSERT of the whole month would outrun
/// 18.16's merges (it refuses inserts into a partition of 300 parts).
const TENANTS_PER_INSERT: u64 = 20;

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let month = BillingMonth::parse(MONTH)?;
    let minutes = args.days * 1440;
    ensure!(args.days <= u64::from(month.days()), "--days must be at most {} ({MONTH})", month.days());
    ensure!(args.tenants < 10_000, "--tenants must be under 10,000 (tenant names have 4 digits)");
    ensure!(args.traffic <= 60, "--traffic must be at most 60 (one batch per second of a minute)");
    let meters = &BUILTIN[..METERS];
    ensure!(meters.iter().all(|m| !m.name.starts_with("agent_")), "a generated meter is one of the agents' books");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let server = ClickHouseServer::start()?;
    let server_pid = server.pid().context("server not running")?;
    let db = server.database("bench_month")?;
    rt.block_on(migrate(&Store::new(client(&server)?, &db))).context("migrating")?;
    let load_before = load_average();
    let shape = Shape { tenants: args.tenants, minutes, traffic: args.traffic, start: month_start(month) };
    eprintln!(
        "ClickHouse {} (data on {} in {}); {} tenants × {METERS} meters × {} minutes × {} batches = {} usage rows, {} SLA rows",
        server.query("SELECT version()")?.trim(),
        filesystem_of(server.dir()),
        server.dir().display(),
        args.tenants,
        thousands(minutes as f64),
        args.traffic,
        thousands(shape.usage_rows() as f64),
        thousands(shape.sla_rows() as f64),
    );

    let generated = generate(&server, &db, &shape)?;
    let disk = server.query(&format!(
        "SELECT formatReadableSize(sum(bytes_on_disk)) FROM system.parts WHERE active AND database = '{db}'"
    ))?;
    eprintln!(
        "generated in {:.1} s ({} rows/s), {} on disk",
        generated.as_secs_f64(),
        thousands(shape.usage_rows() as f64 / generated.as_secs_f64()),
        disk.trim()
    );

    let catalog = Catalog::builtin();
    let plans = tempfile::Builder::new().prefix("tally-bench-plans-").suffix(".yaml").tempfile()?;
    std::fs::write(plans.path(), plans_yaml(&shape))?;
    let book = plan_file::load(plans.path(), &catalog).context("loading the generated plans file")?;

    // With --live (or --settle), the live month `--runs` times; with --settle, it is then settled
    // once and read live again `--runs` times; then (unless --no-seal) it is sealed and verified
    // once and read `--runs` times from its seal, as billing reads a closed month.
    let mut steps: Vec<(usize, Phase, Read)> = Vec::new();
    if args.live || args.settle {
        steps.extend((0..args.runs).flat_map(|run| Phase::LIVE.map(|p| (run, p, Read::Live))));
    }
    if args.settle {
        steps.extend(Phase::SETTLE.map(|p| (0, p, Read::Once)));
        steps.extend((0..args.runs).flat_map(|run| Phase::LIVE.map(|p| (run, p, Read::Settled))));
    }
    if args.seal {
        steps.extend(Phase::ONCE.map(|p| (0, p, Read::Once)));
        steps.extend((0..args.runs).flat_map(|run| Phase::ALL.map(|p| (run, p, Read::Sealed))));
    }
    let mut rows: Vec<Row> = Vec::new();
    // The first live output of each phase: every later live read, settled or not, must equal it.
    let mut reference: Vec<(Phase, String)> = Vec::new();
    let mut settled = None;
    let mut settle_until = 0;
    for (run, phase, read) in steps {
        wait_until_quiet(server_pid)?;
        if phase == Phase::Settle {
            settle_until = wait_for_clock(&server, &db)?;
        }
        // A client per phase, as each CLI run has.
        let ch = client(&server)?;
        let ctx = Ctx { ch: &ch, db: &db, book: &book, catalog: &catalog, month, shape: &shape, settle_until };
        let sample = measure(server_pid, || rt.block_on(ctx.run(phase)))?;
        let label = read.label(phase);
        eprintln!("run {}/{}  {label:<58} {}", run + 1, args.runs, sample.describe());
        if matches!(read, Read::Live | Read::Settled) {
            let digest = sample.output.digest.clone();
            match reference.iter().find(|r| r.0 == phase) {
                None => reference.push((phase, digest)),
                Some((_, first)) => ensure!(
                    *first == digest,
                    "{label}: the output differs from the first live read's (digest {digest}, was {first})"
                ),
            }
        }
        if phase == Phase::FoldAgain {
            wait_until_quiet(server_pid)?;
            settled = Some(settled_figures(&server, &db, &shape)?);
        }
        match rows.iter_mut().find(|r| r.label == label) {
            Some(row) => row.samples.push(sample),
            None => rows.push(Row { label, phase, read, samples: vec![sample] }),
        }
    }

    println!();
    println!(
        "{} (UTC), nproc {}, load {load_before} → {}, ClickHouse {} (data on {}), {} tenants × {METERS} meters × {} \
         minutes × {} batches = {} usage rows and {} SLA rows ({} services × minute), median of {} runs; generated in \
         {:.0} s, {} on disk:",
        time::OffsetDateTime::now_utc().date(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        server.query("SELECT version()")?.trim(),
        filesystem_of(server.dir()),
        thousands(args.tenants as f64),
        thousands(minutes as f64),
        args.traffic,
        thousands(shape.usage_rows() as f64),
        thousands(shape.sla_rows() as f64),
        SERVICES.len(),
        args.runs,
        generated.as_secs_f64(),
        disk.trim(),
    );
    println!();
    println!(
        "| phase | wall s (median) | wall s (min – max) | our CPU s | our peak RSS | ClickHouse CPU s | ClickHouse peak RSS \
         | output | load (1 min, end) |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for row in &rows {
        let s = &row.samples;
        let wall: Vec<f64> = s.iter().map(|s| s.wall.as_secs_f64()).collect();
        println!(
            "| {} | {:.2} | {:.2} – {:.2} | {:.2} | {} | {:.2} | {} | {} | {} |",
            row.label,
            median(wall.iter().copied()),
            wall.iter().copied().fold(f64::INFINITY, f64::min),
            wall.iter().copied().fold(0.0, f64::max),
            median(s.iter().map(|s| s.cpu)),
            mib(median(s.iter().map(|s| s.peak_kib as f64))),
            median(s.iter().map(|s| s.server_cpu)),
            mib(median(s.iter().map(|s| s.server_peak_kib as f64))),
            mib(median(s.iter().map(|s| s.output.bytes as f64 / 1024.0))),
            s.iter().map(|s| s.load.as_str()).collect::<Vec<_>>().join(", "),
        );
    }
    for read in [Read::Live, Read::Settled, Read::Sealed] {
        let all: Vec<&Row> = rows.iter().filter(|r| r.read == read && Phase::ALL.contains(&r.phase)).collect();
        if !all.is_empty() {
            println!(
                "| **all three, {}** | **{:.2}** | | | | | | | |",
                read.name(),
                all.iter().map(|r| r.wall()).sum::<f64>()
            );
        }
    }
    println!();
    println!(
        "Peak RSS: `VmHWM`, reset before each phase (`/proc/<pid>/clear_refs`). ClickHouse's CPU includes any \
         background merges that ran meanwhile. Output: the JSON the CLI would print."
    );
    if args.live || args.settle {
        print_api_reads(&rows);
    }
    if let Some(figures) = settled {
        print_settlement(&rows, &figures, &shape);
    }
    Ok(())
}

/// One phase's samples, one per run.
struct Row {
    label: String,
    phase: Phase,
    read: Read,
    samples: Vec<Sample>,
}

impl Row {
    /// The median wall time, seconds.
    fn wall(&self) -> f64 {
        median(self.samples.iter().map(|s| s.wall.as_secs_f64()))
    }

    fn server_cpu(&self) -> f64 {
        median(self.samples.iter().map(|s| s.server_cpu))
    }
}

/// The one-tenant reads (`/v1/usage`-shaped, and invoices), raw and settled: latencies of every
/// run together.
fn print_api_reads(rows: &[Row]) {
    let quantiles = |row: &Row| {
        let mut l: Vec<f64> = row.samples.iter().flat_map(|s| s.output.latencies.iter().copied()).collect();
        l.sort_by(f64::total_cmp);
        let q = |p: f64| l[((p * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1] * 1000.0;
        (q(0.5), q(0.99), l.len())
    };
    for (phase, what) in [
        (Phase::UsageApi, "`/v1/usage`-shaped reads (`query_usage`, one tenant's month by day, all meters"),
        (
            Phase::InvoiceApi,
            "One tenant's invoice (`pricing::store::invoice`, as `GET /v1/tenants/{t}/invoices/{month}`",
        ),
    ] {
        let of = |read: Read| rows.iter().find(|r| r.phase == phase && r.read == read);
        println!();
        println!("{what}; every run's reads together):");
        println!();
        println!("| reads | count | p50 ms | p99 ms |");
        println!("|---|--:|--:|--:|");
        let mut p = Vec::new();
        for read in [Read::Live, Read::Settled] {
            if let Some(row) = of(read) {
                let (p50, p99, n) = quantiles(row);
                println!("| {} | {n} | {p50:.1} | {p99:.1} |", read.name());
                p.push((p50, p99));
            }
        }
        if let [(raw50, raw99), (set50, set99)] = p[..] {
            println!("| raw ÷ settled | | {:.1}× | {:.1}× |", raw50 / set50, raw99 / set99);
        }
    }
}

/// What settling cost and stored, and the live reads before and after it.
fn print_settlement(rows: &[Row], figures: &Settled, shape: &Shape) {
    let row = |phase: Phase, read: Read| rows.iter().find(|r| r.phase == phase && r.read == read);
    println!();
    println!("Live reads, raw (before folding) and settled (after), medians:");
    println!();
    println!("| phase | raw wall s | settled wall s | raw ÷ settled | raw ClickHouse CPU s | settled ClickHouse CPU s | raw ÷ settled |");
    println!("|---|--:|--:|--:|--:|--:|--:|");
    let (mut raw_total, mut settled_total) = (0.0, 0.0);
    for phase in Phase::LIVE {
        let (Some(raw), Some(settled)) = (row(phase, Read::Live), row(phase, Read::Settled)) else { continue };
        println!(
            "| {} | {:.2} | {:.2} | {:.1}× | {:.2} | {:.2} | {:.1}× |",
            phase.label(),
            raw.wall(),
            settled.wall(),
            raw.wall() / settled.wall(),
            raw.server_cpu(),
            settled.server_cpu(),
            raw.server_cpu() / settled.server_cpu(),
        );
        if Phase::ALL.contains(&phase) {
            raw_total += raw.wall();
            settled_total += settled.wall();
        }
    }
    println!(
        "| **all three** | **{raw_total:.2}** | **{settled_total:.2}** | **{:.1}×** | | | |",
        raw_total / settled_total
    );
    if let Some(catch_up) = row(Phase::Settle, Read::Once) {
        let s = &catch_up.samples[0];
        let folds = &s.output.folds;
        let taken: Vec<&(Fold, f64)> = folds.iter().filter(|f| f.0.batches > 0).collect();
        let slowest = folds.iter().map(|f| f.1).fold(0.0, f64::max);
        let empty: Vec<f64> = folds.iter().filter(|f| f.0.batches == 0).map(|f| f.1).collect();
        println!();
        println!(
            "Settling (`settle::fold`, grace 0, margin 1 h, max span 1 day, until a fold reaches the server's clock at \
             the start): {} folds ({} with rows, {} empty) in {:.2} s, our CPU {:.2} s, ClickHouse CPU {:.2} s, \
             ClickHouse peak RSS {}; slowest fold {:.2} s, empty folds {:.2} s median; {} batches, {} settled usage rows \
             written ({} raw rows folded per second).",
            folds.len(),
            taken.len(),
            empty.len(),
            s.wall.as_secs_f64(),
            s.cpu,
            s.server_cpu,
            mib(s.server_peak_kib as f64),
            slowest,
            median(empty.iter().copied()),
            thousands(folds.iter().map(|f| f.0.batches as f64).sum()),
            thousands(folds.iter().map(|f| f.0.rows as f64).sum()),
            thousands(shape.usage_rows() as f64 / s.wall.as_secs_f64()),
        );
    }
    if let Some(again) = row(Phase::FoldAgain, Read::Once) {
        let s = &again.samples[0];
        let folds = &s.output.folds;
        let what = if folds.len() < FOLDS_AGAIN {
            format!("{} more folds (nothing new to take), then `None`", folds.len())
        } else {
            format!(
                "{} more folds (nothing new to take) and still no `None`: each fold took longer than a second, so \
                 the clock had always moved past its end",
                folds.len()
            )
        };
        println!();
        println!(
            "Folding on, caught up, until `fold` returns `None` (at most {FOLDS_AGAIN} folds): {what}; {:.2} s, \
             ClickHouse CPU {:.2} s; folds of {} s.",
            s.wall.as_secs_f64(),
            s.server_cpu,
            if folds.is_empty() {
                "–".to_owned()
            } else {
                folds.iter().map(|f| format!("{:.2}", f.1)).collect::<Vec<_>>().join(", ")
            },
        );
    }
    if let Some(rolled) = row(Phase::Rollup, Read::Once) {
        let s = &rolled.samples[0];
        let rollups = &s.output.rollups;
        let days: u32 = rollups.iter().map(|r| (r.0.days.to - r.0.days.from) / 86_400).sum();
        println!();
        println!(
            "Rolling up (`settle::roll` until `None`, as `tally settle` does after its folds): {} roll-ups of {days} \
             days in {:.2} s, ClickHouse CPU {:.2} s, ClickHouse peak RSS {}; {} rows written (usage by day, SLA by hour).",
            rollups.len(),
            s.wall.as_secs_f64(),
            s.server_cpu,
            mib(s.server_peak_kib as f64),
            thousands(rollups.iter().map(|r| r.0.rows as f64).sum()),
        );
    }
    println!();
    println!("Stored (active parts, after the catch-up and its merges):");
    println!();
    println!("| table | rows | rows per generated key | bytes on disk | bytes per row |");
    println!("|---|--:|--:|--:|--:|");
    let keys = (shape.tenants * METERS as u64 * shape.minutes) as f64;
    for (what, rows, bytes) in [
        ("`usage` (raw)", figures.usage_rows, Some(figures.usage_bytes)),
        ("`usage_settled`, usage rows (`meter != ''`)", figures.settled_usage_rows, None),
        ("`usage_settled`, identity rows (`meter = ''`)", figures.settled_identity_rows, None),
        (
            "`usage_settled`, all",
            figures.settled_usage_rows + figures.settled_identity_rows,
            Some(figures.settled_bytes),
        ),
    ] {
        println!(
            "| {what} | {} | {:.2} | {} | {} |",
            thousands(rows as f64),
            rows as f64 / keys,
            bytes.map_or_else(String::new, |b| mib(b as f64 / 1024.0)),
            bytes.map_or_else(String::new, |b| format!("{:.1}", b as f64 / rows as f64)),
        );
    }
    println!();
    println!(
        "`settle_folds`: {} rows (a fold settles `usage` and `sla` rows; the table above counts `usage`'s).",
        figures.folds
    );
}

/// Rows and bytes of the raw and settled tables.
struct Settled {
    usage_rows: u64,
    usage_bytes: u64,
    settled_usage_rows: u64,
    settled_identity_rows: u64,
    settled_bytes: u64,
    folds: u64,
}

/// Reads [`Settled`] and checks that every generated batch was folded exactly once.
fn settled_figures(server: &ClickHouseServer, db: &str, shape: &Shape) -> Result<Settled> {
    let numbers = |sql: &str| -> Result<Vec<u64>> {
        let out = server.query(sql)?;
        out.split_whitespace().map(|v| v.parse().with_context(|| format!("{sql}: {out:?}"))).collect()
    };
    let parts = |table: &str| {
        numbers(&format!(
            "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts WHERE active AND database = '{db}' AND table = '{table}'"
        ))
    };
    let (usage, settled) = (parts("usage")?, parts("usage_settled")?);
    let kinds = numbers(&format!(
        "SELECT countIf(meter != ''), countIf(meter = ''), \
         (SELECT count() FROM (SELECT DISTINCT tenant, source_id, batch_seq FROM {db}.usage_settled WHERE meter = '')), \
         (SELECT count() FROM {db}.settle_folds) FROM {db}.usage_settled"
    ))?;
    let [usage_rows, usage_bytes] = usage[..] else { bail!("system.parts of usage: {usage:?}") };
    let [_, settled_bytes] = settled[..] else { bail!("system.parts of usage_settled: {settled:?}") };
    let [settled_usage_rows, settled_identity_rows, distinct_identities, folds] = kinds[..] else {
        bail!("usage_settled counts: {kinds:?}")
    };
    let batches = shape.batches();
    ensure!(
        settled_identity_rows == batches && distinct_identities == batches,
        "settled {settled_identity_rows} identity rows, {distinct_identities} distinct; generated {batches} batches \
         (every batch must be folded exactly once)"
    );
    ensure!(usage_rows == shape.usage_rows(), "usage holds {usage_rows} rows, generated {}", shape.usage_rows());
    Ok(Settled { usage_rows, usage_bytes, settled_usage_rows, settled_identity_rows, settled_bytes, folds })
}

/// Waits until the server's clock is past the second of the latest `usage` row, so a fold with
/// no grace can take every row; returns the server's clock then (Unix seconds).
fn wait_for_clock(server: &ClickHouseServer, db: &str) -> Result<u32> {
    let last: u32 = server.query(&format!("SELECT toUInt32(max(inserted_at)) FROM {db}.usage"))?.trim().parse()?;
    loop {
        let now: u32 = server.query("SELECT toUInt32(now())")?.trim().parse()?;
        if now > last {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Command-line options, parsed by hand (`cargo bench` also passes `--bench`).
struct Args {
    tenants: u64,
    days: u64,
    runs: usize,
    live: bool,
    settle: bool,
    traffic: u64,
    seal: bool,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let mut parsed = Self { tenants: 1000, days: 30, runs: 3, live: false, settle: false, traffic: 1, seal: true };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--bench" => continue,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                "--live" => parsed.live = true,
                "--settle" => parsed.settle = true,
                "--no-seal" => parsed.seal = false,
                _ => {
                    let value = args.next().with_context(|| format!("{arg} needs a value\n{USAGE}"))?;
                    // Accept 1_000 and 1,000 as well as 1000.
                    let n: u64 =
                        value.replace(['_', ','], "").parse().with_context(|| format!("{arg} {value:?}\n{USAGE}"))?;
                    ensure!(n > 0, "{arg} must be positive");
                    match arg.as_str() {
                        "--tenants" => parsed.tenants = n,
                        "--days" => parsed.days = n,
                        "--runs" => parsed.runs = n as usize,
                        "--traffic" => parsed.traffic = n,
                        other => bail!("unknown argument {other:?}\n{USAGE}"),
                    }
                }
            }
        }
        Ok(parsed)
    }
}

/// What is generated: tenants `0..tenants`, minutes `0..minutes` from `start` (Unix seconds),
/// each tenant-minute's usage in `traffic` batches.
struct Shape {
    tenants: u64,
    minutes: u64,
    traffic: u64,
    start: u64,
}

impl Shape {
    fn usage_rows(&self) -> u64 {
        self.tenants * METERS as u64 * self.minutes * self.traffic
    }

    fn sla_rows(&self) -> u64 {
        self.tenants * SERVICES.len() as u64 * self.minutes
    }

    /// Batch identities (per tenant and minute).
    fn batches(&self) -> u64 {
        self.tenants * self.minutes * self.traffic
    }
}

fn month_start(month: BillingMonth) -> u64 {
    month.first_day().midnight().assume_utc().unix_timestamp() as u64
}

/// A client for the bench's server. A month at full scale takes minutes per query on a small
/// machine; the CLI's 30 s default timeout would cut it off.
fn client(server: &ClickHouseServer) -> Result<ClickHouse> {
    Ok(ClickHouse::new(&server.http_url(), Duration::from_secs(3600))?)
}

/// Tenant names sort as their numbers do, so "first, middle, last" are what they say.
fn tenant_name(t: u64) -> String {
    format!("tenant-{t:04}")
}

/// The same name in SQL, for `t` < 10,000 (18.16 has no `leftPad`).
const TENANT_SQL: &str = "concat('tenant-', substring(toString(10000 + t), 2))";

// The closed forms. Each `*_sql` and its Rust twin must agree; the checks prove they do.

/// Usage of tenant `t`, meter `m`, minute `k` in units of 0.001 for seconds meters, else units:
/// `(t % 97 + 1) × (m + 1) × 1000 + k % 60`.
const USAGE_VALUE_SQL: &str = "((t % 97 + 1) * (m + 1) * 1000 + k % 60)";

/// The month's usage of tenant `t`, meter `m` over `minutes` (a multiple of 60), in the meter's unit.
fn expected_usage(t: u64, m: usize, minutes: u64) -> Decimal {
    let base = Decimal::from((t % 97 + 1) * (m as u64 + 1) * 1000 * minutes);
    let ramp = Decimal::from(minutes / 60 * (0..60).sum::<u64>());
    let total = base + ramp;
    if BUILTIN[m].unit == Unit::Seconds {
        total / Decimal::from(1000)
    } else {
        total
    }
}

/// Requests of tenant `t`, service `s`, minute `k`, and its errors (some on every 30th minute).
const REQUESTS_SQL: &str = "(100 + (t % 13) * 10 + s * 50 + k % 10)";
const ERRORS_SQL: &str = "if(k % 30 = 0, t % 7, 0)";

/// The month's (requests, errors) of tenant `t`, all services, over `minutes` (a multiple of 30).
fn expected_requests(t: u64, minutes: u64) -> (u64, u64) {
    let services = SERVICES.len() as u64;
    let per_service = |s: u64| minutes * (100 + (t % 13) * 10 + s * 50) + minutes / 10 * (0..10).sum::<u64>();
    let requests = (0..services).map(per_service).sum();
    (requests, services * minutes / 30 * (t % 7))
}

/// Generates the month, about `TENANTS_PER_INSERT` tenants' single-batch rows per INSERT (fewer
/// tenants with `traffic`), each chunk in key order. Batch `j` of `traffic` of tenant `t`'s minute
/// `k` is `(agent:node-<t % 50>:boot-1, k × traffic + j + 1)`, holds the value's `j`-th share (the
/// integer split of the value in its smallest unit: the shares add up to it exactly), and is
/// stamped `inserted_at` = the minute's end + `j` seconds, or now if that is later; an SLA row, the
/// minute's end + 1 second.
fn generate(server: &ClickHouseServer, db: &str, shape: &Shape) -> Result<Duration> {
    let names = BUILTIN[..METERS].iter().map(|m| format!("'{}'", m.name)).collect::<Vec<_>>().join(", ");
    let units = BUILTIN[..METERS].iter().map(|m| format!("'{}'", m.unit.as_str())).collect::<Vec<_>>().join(", ");
    let divisors = BUILTIN[..METERS]
        .iter()
        .map(|m| if m.unit == Unit::Seconds { "1000" } else { "1" })
        .collect::<Vec<_>>()
        .join(", ");
    let services = SERVICES.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
    // Three latency buckets (20, 80 and 400 ms) and exemplars, as the collector's encoder writes them.
    let buckets = [20_000_000, 80_000_000, 400_000_000].map(|ns| bucket_of(ns).to_string()).join(", ");
    let start = Instant::now();
    let mut first = 0;
    while first < shape.tenants {
        let tenants = TENANTS_PER_INSERT.div_ceil(shape.traffic).min(shape.tenants - first);
        let (m, n, b) = (shape.minutes, METERS as u64, shape.traffic);
        let usage = format!(
            "INSERT INTO {db}.usage {usage_columns} \
             SELECT {TENANT_SQL}, [{names}][m + 1], toDateTime({start} + k * 60, 'UTC'), [{services}][k % 2 + 1], '', '', '', \
             toDecimal128(intDiv(v, {b}) + if(j < v % {b}, 1, 0), 9) / [{divisors}][m + 1], [{units}][m + 1], 'sum', \
             concat('agent:node-', toString(t % 50), ':boot-1'), k * {b} + j + 1, \
             toDateTime(least({start} + (k + 1) * 60 + j, toUInt32(now())), 'UTC') \
             FROM (SELECT {first} + intDiv(number, {m} * {n} * {b}) AS t, intDiv(number, {m} * {b}) % {n} AS m, \
             intDiv(number, {b}) % {m} AS k, number % {b} AS j, {USAGE_VALUE_SQL} AS v FROM numbers({rows}))",
            start = shape.start,
            rows = tenants * n * m * b,
            usage_columns = USAGE_ROW.columns().replacen(')', ", inserted_at)", 1),
        );
        let sla = format!(
            "INSERT INTO {db}.sla {sla_columns} \
             SELECT {TENANT_SQL}, [{services}][s + 1], '/', toDateTime({start} + k * 60, 'UTC'), req, err, \
             [{buckets}], [req - 6, 5, 1], \
             if(err > 0, [slow, failed], [slow]), if(err > 0, [400000000 + k, 300000000 + k], [400000000 + k]), \
             if(err > 0, [0, 1], [0]), concat('collector-', toString(t % 4)), k + 1, \
             toDateTime(least({start} + (k + 1) * 60 + 1, toUInt32(now())), 'UTC') \
             FROM (SELECT {first} + intDiv(number, {m} * 2) AS t, intDiv(number, {m}) % 2 AS s, number % {m} AS k, \
             {REQUESTS_SQL} AS req, {ERRORS_SQL} AS err, \
             lower(hex(MD5(concat(toString(t), '/', toString(s), '/', toString(k))))) AS slow, \
             lower(hex(MD5(concat(toString(t), '/', toString(s), '/', toString(k), '/e')))) AS failed \
             FROM numbers({rows}))",
            start = shape.start,
            rows = tenants * SERVICES.len() as u64 * m,
            sla_columns = SLA_ROW.columns().replacen(')', ", inserted_at)", 1),
        );
        server.query(&usage).context("generating usage")?;
        server.query(&sla).context("generating SLA rows")?;
        first += tenants;
        wait_for_merges(server, db)?;
        eprint!("\rgenerated {first}/{} tenants in {:.0} s", shape.tenants, start.elapsed().as_secs_f64());
    }
    eprintln!();
    let counts = server.query(&format!("SELECT (SELECT count() FROM {db}.usage), (SELECT count() FROM {db}.sla)"))?;
    let expected = format!("{}\t{}", shape.usage_rows(), shape.sla_rows());
    ensure!(counts.trim() == expected, "generated {counts:?} rows (usage, sla), expected {expected:?}");
    Ok(start.elapsed())
}

/// Waits while any partition has many parts, so the next INSERT is not refused.
fn wait_for_merges(server: &ClickHouseServer, db: &str) -> Result<()> {
    let sql = format!(
        "SELECT max(c) FROM (SELECT count() AS c FROM system.parts WHERE active AND database = '{db}' GROUP BY table, partition)"
    );
    while server.query(&sql)?.trim().parse::<u64>().context("parts per partition")? > 100 {
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// One plan pricing all ten meters (tiers, allowances, a base fee, an SLO and
/// credits). Even tenants are invoiced in USD, odd ones in EUR (a conversion).
fn plans_yaml(shape: &Shape) -> String {
    let mut y = String::from(
        "plans:\n  metered:\n    currency: USD\n    base_fee: 49\n    meters:\n\
         \x20     spans: {allowance: 10_000_000, per: 1_000_000, tiers: [{up_to: 100_000_000, price: 5}, {up_to: 1_000_000_000, price: 4}, {price: 2.5}]}\n\
         \x20     span_bytes: {allowance: 1_000_000_000, price: 0.02, per: 1_000_000_000}\n\
         \x20     requests: {price: 0.07, per: 1000}\n\
         \x20     metric_points: {allowance: 5_000_000, pricing: volume, per: 10_000, tiers: [{up_to: 500_000_000, price: 1.2}, {price: 0.8}]}\n\
         \x20     log_records: {price: 0.5, per: 1_000_000}\n\
         \x20     log_bytes: {price: 0.25, per: 1_000_000_000}\n\
         \x20     cpu_seconds: {allowance: 3600, price: 0.00002}\n\
         \x20     net_rx_bytes: {price: 0.01, per: 1_000_000_000}\n\
         \x20     net_tx_bytes: {price: 0.09, per: 1_000_000_000}\n\
         \x20     tcp_connections: {price: 0.1, per: 1_000_000}\n\
         \x20   slo: {availability: 99.95, p99_ms: 500}\n\
         \x20   credits:\n      - {below: 99.99, percent: 5}\n      - {below: 99.95, percent: 10}\n\
         regions:\n  de: {tax_percent: 19}\n  us: {tax_percent: 7}\n\
         rates:\n  - {date: 2026-11-30, from: USD, to: EUR, rate: 0.8634}\n\
         tenants:\n",
    );
    for t in 0..shape.tenants {
        let (region, currency) = if t % 2 == 0 { ("us", "USD") } else { ("de", "EUR") };
        let _ = writeln!(
            y,
            "  {}: {{region: {region}, currency: {currency}, plans: [{{plan: metered, from: 2026-01-01}}]}}",
            tenant_name(t)
        );
    }
    y
}

/// The measured phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Invoices,
    UsageReport,
    SlaReport,
    UsageApi,
    InvoiceApi,
    Settle,
    FoldAgain,
    Rollup,
    Seal,
    Verify,
}

impl Phase {
    /// What billing reads: measured `--runs` times, live and from the seal.
    const ALL: [Phase; 3] = [Phase::Invoices, Phase::UsageReport, Phase::SlaReport];
    /// Measured `--runs` times on the live month, raw and settled.
    const LIVE: [Phase; 5] =
        [Phase::Invoices, Phase::UsageReport, Phase::SlaReport, Phase::UsageApi, Phase::InvoiceApi];
    /// Measured once, between the raw and the settled reads (`--settle`).
    const SETTLE: [Phase; 3] = [Phase::Settle, Phase::FoldAgain, Phase::Rollup];
    /// Measured once, after them (a month is sealed once).
    const ONCE: [Phase; 2] = [Phase::Seal, Phase::Verify];

    fn label(self) -> &'static str {
        match self {
            Phase::Invoices => "every tenant's invoice (`GET /v1/invoices/{month}`)",
            Phase::UsageReport => "usage report, all tenants",
            Phase::SlaReport => "SLA report, all tenants, credits",
            Phase::UsageApi => "/v1/usage-shaped reads, 100 tenants",
            Phase::InvoiceApi => "one tenant's invoice (`GET /v1/tenants/{t}/invoices/{month}`), 100 tenants",
            Phase::Settle => "settle the month (folds until caught up, once)",
            Phase::FoldAgain => "fold on until `fold` returns None (once)",
            Phase::Rollup => "roll up the settled days until `roll` returns None (once)",
            Phase::Seal => "seal the month (once)",
            Phase::Verify => "verify the seal (once)",
        }
    }
}

/// Which rows a phase reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// The live month before any fold: raw `usage` rows, collapsed by key and batch.
    Live,
    /// The live month after the folds: settled rows and the (empty) tail.
    Settled,
    /// The sealed month's snapshot and roll-ups.
    Sealed,
    /// A phase run once (settling, sealing).
    Once,
}

impl Read {
    fn name(self) -> &'static str {
        match self {
            Read::Live => "live",
            Read::Settled => "live settled",
            Read::Sealed => "from the seal",
            Read::Once => "",
        }
    }

    fn label(self, phase: Phase) -> String {
        match self {
            Read::Once => phase.label().to_owned(),
            read => format!("{}, {}", phase.label(), read.name()),
        }
    }
}

/// Everything a phase reads.
struct Ctx<'a> {
    ch: &'a ClickHouse,
    db: &'a str,
    book: &'a PriceBook,
    catalog: &'a Catalog,
    month: BillingMonth,
    shape: &'a Shape,
    /// The server's clock when settling starts (Unix seconds): the catch-up folds up to it.
    settle_until: u32,
}

/// What a phase produced.
#[derive(Debug, Default)]
struct Output {
    /// Bytes of JSON the CLI would print.
    bytes: usize,
    /// SHA-256 of what it read (the JSON, or the points), to compare reads.
    digest: String,
    /// Latencies of its single reads, seconds (`/v1/usage`-shaped reads).
    latencies: Vec<f64>,
    /// The folds it ran, with their wall times in seconds.
    folds: Vec<(Fold, f64)>,
    /// The roll-ups it ran, with their wall times in seconds.
    rollups: Vec<(settle::Rollup, f64)>,
}

impl Output {
    fn of(hasher: Sha256, bytes: usize) -> Self {
        let digest = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Self { bytes, digest, ..Self::default() }
    }
}

impl Ctx<'_> {
    /// Runs `phase` as the CLI would, checks its figures, and returns what it produced.
    async fn run(&self, phase: Phase) -> Result<Output> {
        let (ch, db, month) = (self.ch, self.db, self.month);
        let store = Store::new(ch.clone(), db);
        match phase {
            Phase::Invoices => {
                let names: Vec<String> = (0..self.shape.tenants).map(tenant_name).collect();
                let tenants: Vec<&str> = names.iter().map(String::as_str).collect();
                let all = pricing::store::month_invoices(&store, self.book, self.catalog, &tenants, month)
                    .await
                    .context("invoicing every tenant")?;
                self.check_tenants("invoices", all.invoices.len())?;
                let (mut bytes, mut hasher) = (0, Sha256::new());
                for invoice in &all.invoices {
                    let json = serde_json::to_vec_pretty(invoice)?;
                    bytes += json.len();
                    hasher.update(&json);
                    self.check_invoice(invoice)?;
                }
                Ok(Output::of(hasher, bytes))
            }
            Phase::UsageReport => {
                let r = report::read_usage_report(&store, month, None).await.context("usage report")?;
                let json = serde_json::to_vec_pretty(&r)?;
                self.check_tenants("usage report", r.tenants.len())?;
                for (t, tenant) in r.tenants.iter().enumerate() {
                    let t = t as u64;
                    ensure!(tenant.tenant == tenant_name(t), "usage report: tenant {} at {t}", tenant.tenant);
                    for (m, meter) in BUILTIN[..METERS].iter().enumerate() {
                        let got = tenant.meters.iter().find(|u| u.meter == meter.name).map(|u| u.total);
                        self.check(
                            &tenant.tenant,
                            &meter.name,
                            "usage report total",
                            got,
                            expected_usage(t, m, self.shape.minutes),
                        )?;
                    }
                }
                Ok(Output::of(Sha256::new_with_prefix(&json), json.len()))
            }
            Phase::SlaReport => {
                let plans = Some((self.book, self.catalog));
                let r = report::read_sla_report(&store, month, None, plans, |_, _| {}).await.context("SLA report")?;
                let json = serde_json::to_vec_pretty(&r)?;
                self.check_tenants("SLA report", r.tenants.len())?;
                for t in self.checked() {
                    let tenant = &r.tenants[t as usize];
                    let got = (tenant.figures.requests, tenant.figures.errors);
                    let expected = expected_requests(t, self.shape.minutes);
                    ensure!(
                        got == expected,
                        "SLA report of {}: (requests, errors) {got:?}, expected {expected:?}",
                        tenant.tenant
                    );
                    ensure!(tenant.credits.is_some(), "SLA report of {}: no credits priced", tenant.tenant);
                }
                Ok(Output::of(Sha256::new_with_prefix(&json), json.len()))
            }
            Phase::InvoiceApi => {
                let (mut hasher, mut latencies) = (Sha256::new(), Vec::new());
                for t in self.api_tenants() {
                    let tenant = tenant_name(t);
                    let start = Instant::now();
                    let invoice = pricing::store::invoice(&store, self.book, self.catalog, &tenant, month)
                        .await
                        .with_context(|| format!("invoicing {tenant}"))?;
                    latencies.push(start.elapsed().as_secs_f64());
                    hasher.update(serde_json::to_vec_pretty(&invoice)?);
                    self.check_invoice(&invoice)?;
                }
                Ok(Output { latencies, ..Output::of(hasher, 0) })
            }
            Phase::UsageApi => {
                let (mut hasher, mut latencies) = (Sha256::new(), Vec::new());
                for t in self.api_tenants() {
                    // As `GET /v1/usage?tenant=T&from=<month>&to=<next month>&granularity=day` reads its
                    // first page of 1,000 points (and one more, to know whether there is a next page).
                    let mut query = UsageQuery::new(
                        self.month.first_day().midnight().assume_utc(),
                        self.month.end().midnight().assume_utc(),
                    );
                    query.tenant = Some(tenant_name(t));
                    query.granularity = Granularity::Day;
                    query.limit += 1;
                    query.validate(self.catalog)?;
                    let start = Instant::now();
                    let points = query_usage(&store, &query).await.with_context(|| format!("usage of {t}"))?;
                    latencies.push(start.elapsed().as_secs_f64());
                    self.check_days(t, &points)?;
                    for p in &points {
                        hasher.update(format!("{} {} {} {} {}\n", p.tenant, p.meter, p.start, p.value, p.unit));
                    }
                }
                Ok(Output { latencies, ..Output::of(hasher, 0) })
            }
            Phase::Settle => {
                let options = FoldOptions { grace: Duration::ZERO, ..Default::default() };
                let mut folds = Vec::new();
                loop {
                    let start = Instant::now();
                    let Some(fold) = settle::fold(&store, options).await.context("folding")? else { break };
                    let wall = start.elapsed().as_secs_f64();
                    eprintln!(
                        "  fold {} [{}, {}): {} batches, {} rows in {wall:.2} s",
                        folds.len() + 1,
                        fold.from,
                        fold.to,
                        fold.batches,
                        fold.rows
                    );
                    let to = fold.to;
                    folds.push((fold, wall));
                    // Caught up with the clock as it was when settling started: `fold` would return
                    // `None` only once a whole fold takes under a second (see `FoldAgain`).
                    if to >= self.settle_until {
                        break;
                    }
                }
                Ok(Output { folds, ..Output::default() })
            }
            Phase::FoldAgain => {
                // `tally settle` folds until `fold` returns `None`: that needs a whole fold to end
                // within the second its range ended in. Here: until it does, at most `FOLDS_AGAIN` times.
                let options = FoldOptions { grace: Duration::ZERO, ..Default::default() };
                let mut folds = Vec::new();
                while folds.len() < FOLDS_AGAIN {
                    let start = Instant::now();
                    let Some(fold) = settle::fold(&store, options).await.context("folding")? else { break };
                    let wall = start.elapsed().as_secs_f64();
                    eprintln!(
                        "  fold again [{}, {}): {} batches, {} rows in {wall:.2} s",
                        fold.from, fold.to, fold.batches, fold.rows
                    );
                    folds.push((fold, wall));
                }
                Ok(Output { folds, ..Output::default() })
            }
            Phase::Rollup => {
                let mut rollups = Vec::new();
                loop {
                    let start = Instant::now();
                    let Some(r) = settle::roll(&store).await.context("rolling up")? else { break };
                    let wall = start.elapsed().as_secs_f64();
                    eprintln!("  roll-up [{}, {}): {} rows in {wall:.2} s", r.days.from, r.days.to, r.rows);
                    rollups.push((r, wall));
                }
                Ok(Output { rollups, ..Output::default() })
            }
            Phase::Seal => {
                let now = time::OffsetDateTime::now_utc();
                let p = metering::seal::seal(&store, month, now).await.context("sealing")?;
                ensure!(
                    p.rows == self.shape.usage_rows(),
                    "sealed {} usage rows, generated {}",
                    p.rows,
                    self.shape.usage_rows()
                );
                ensure!(
                    p.sla_rows == self.shape.sla_rows(),
                    "sealed {} SLA rows, generated {}",
                    p.sla_rows,
                    self.shape.sla_rows()
                );
                let json = serde_json::to_vec_pretty(&p)?;
                Ok(Output::of(Sha256::new_with_prefix(&json), json.len()))
            }
            Phase::Verify => {
                let v = metering::seal::verify(&store, month)
                    .await
                    .context("verifying")?
                    .context("the month is not sealed")?;
                ensure!(v.verified && v.recomputed_rows == self.shape.usage_rows(), "the seal does not verify: {v:?}");
                let json = serde_json::to_vec_pretty(&v)?;
                Ok(Output::of(Sha256::new_with_prefix(&json), json.len()))
            }
        }
    }

    fn check_tenants(&self, what: &str, got: usize) -> Result<()> {
        let expected = self.shape.tenants;
        ensure!(got as u64 == expected, "{what}: {got} tenants, expected {expected}");
        Ok(())
    }

    fn checked(&self) -> [u64; CHECKED] {
        [0, self.shape.tenants / 2, self.shape.tenants - 1]
    }

    /// The tenants of the `/v1/usage`-shaped reads: 100 spread over all (all when fewer).
    fn api_tenants(&self) -> Vec<u64> {
        let n = self.shape.tenants;
        if n <= API_READS {
            (0..n).collect()
        } else {
            (0..API_READS).map(|i| i * n / API_READS).collect()
        }
    }

    /// A `/v1/usage`-shaped read of tenant `t`: one point per meter and generated day, adding up
    /// to the month's closed form.
    fn check_days(&self, t: u64, points: &[UsagePoint]) -> Result<()> {
        let days = self.shape.minutes / 1440;
        ensure!(
            points.len() as u64 == METERS as u64 * days,
            "usage of {}: {} points, expected {METERS} meters × {days} days",
            tenant_name(t),
            points.len()
        );
        for (m, meter) in BUILTIN[..METERS].iter().enumerate() {
            let sum = points.iter().filter(|p| p.meter == meter.name).map(|p| p.value).sum::<Decimal>();
            self.check(
                &tenant_name(t),
                &meter.name,
                "sum of daily usage",
                Some(sum),
                expected_usage(t, m, self.shape.minutes),
            )?;
        }
        Ok(())
    }

    fn check_invoice(&self, invoice: &Invoice) -> Result<()> {
        let t: u64 = invoice.tenant.trim_start_matches("tenant-").parse()?;
        for (m, meter) in BUILTIN[..METERS].iter().enumerate() {
            let line =
                invoice.lines.iter().find(|l| l.kind == LineKind::Usage && l.meter.as_deref() == Some(&*meter.name));
            self.check(
                &invoice.tenant,
                &meter.name,
                "invoice line usage",
                line.and_then(|l| l.usage),
                expected_usage(t, m, self.shape.minutes),
            )?;
        }
        let got = (invoice.sla.requests, invoice.sla.errors);
        let expected = expected_requests(t, self.shape.minutes);
        ensure!(got == expected, "invoice of {}: (requests, errors) {got:?}, expected {expected:?}", invoice.tenant);
        Ok(())
    }

    fn check(&self, tenant: &str, meter: &str, what: &str, got: Option<Decimal>, expected: Decimal) -> Result<()> {
        ensure!(
            got.map(|g| g.normalize()) == Some(expected.normalize()),
            "{what} of {tenant}, {meter}: {got:?}, expected {expected} (the generated rows' closed form)"
        );
        Ok(())
    }
}

/// One measured phase.
#[derive(Debug)]
struct Sample {
    wall: Duration,
    cpu: f64,
    peak_kib: u64,
    server_cpu: f64,
    server_peak_kib: u64,
    /// The 1-minute load average when it ended.
    load: String,
    output: Output,
}

impl Sample {
    fn describe(&self) -> String {
        format!(
            "{:>8.2} s  CPU {:.2} s, peak {}  ClickHouse CPU {:.2} s, peak {}  load {}",
            self.wall.as_secs_f64(),
            self.cpu,
            mib(self.peak_kib as f64),
            self.server_cpu,
            mib(self.server_peak_kib as f64),
            self.load,
        )
    }
}

/// Times `phase`, with CPU and peak memory of this process and the server.
fn measure(server_pid: u32, phase: impl FnOnce() -> Result<Output>) -> Result<Sample> {
    let me = std::process::id();
    reset_peak(me)?;
    reset_peak(server_pid)?;
    let (cpu, server_cpu) = (cpu_times(me)?.0, cpu_times(server_pid)?.0);
    let start = Instant::now();
    let output = phase()?;
    let wall = start.elapsed();
    Ok(Sample {
        wall,
        cpu: cpu_times(me)?.0 - cpu,
        peak_kib: peak_rss_kib(me)?,
        server_cpu: cpu_times(server_pid)?.0 - server_cpu,
        server_peak_kib: peak_rss_kib(server_pid)?,
        load: load_average(),
        output,
    })
}

/// Resets a process's `VmHWM` to its current RSS, so the next read is this phase's peak.
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").with_context(|| format!("resetting the peak RSS of {pid}"))
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}
