//! Bench (not a test): rows/s that Tally's `UsageWriter` inserts into a private
//! ClickHouse 18.16, against `clickhouse-client` inserting the same rows as TSV
//! in the same run, on the same server.
//!
//! ```text
//! cargo bench -p tally-metering --bench writer -- [--rows N] [--batch-rows M] [--runs R] [--source-batch K]
//! ```
//!
//! Three paths insert the same N rows into a fresh `usage` table each:
//!
//! * Tally: `UsageWriter::push` of every `UsageBatch` (K records each), `flush()`
//!   every M rows, so one HTTP RowBinary INSERT per M rows;
//! * `clickhouse-client`, one process per M-row TSV chunk (one INSERT each, as a
//!   user batching by hand would);
//! * `clickhouse-client`, one process fed the whole TSV file.
//!
//! Generating the records and rendering the TSV happen before the clock starts:
//! only inserting is timed. Every measurement is checked with `count()`,
//! `sum(value)` and a hash of the other columns, so a path that inserted nothing
//! (or other rows) fails instead of reporting a rate.
//!
//! CPU is read from `/proc/<pid>/stat`: this process for Tally, the waited-for
//! `clickhouse-client` children for the peer, and the server for both.
//!
//! The server keeps its data under `TMPDIR` (testkit's temp dir); the table's
//! header names that filesystem. `TMPDIR=/dev/shm` takes the disk out of the
//! comparison.

use metering::store::Store;
use std::cell::OnceCell;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use metering::clickhouse::ClickHouse;
use metering::meter::{Catalog, BUILTIN};
use metering::record::{minute_of, UsageBatch, UsageRecord};
use metering::store::migrate::migrate;
use metering::store::schema::USAGE_ROW;
use metering::store::writer::UsageWriter;
use rust_decimal::Decimal;
use testkit::bench::{cpu_times, filesystem_of, load_average, median, thousands, wait_until_quiet};
use testkit::ClickHouseServer;
use time::macros::{datetime, format_description};
use time::OffsetDateTime;

const USAGE: &str = "usage: cargo bench -p tally-metering --bench writer -- \
    [--rows N] [--batch-rows M] [--runs R] [--source-batch K]";

/// The TSV columns this bench renders, in order. Checked against the writer's
/// `USAGE_ROW` at start, so a schema change breaks the bench loudly
/// instead of feeding the peer misaligned columns.
const TSV_COLUMNS: [&str; 12] = [
    "tenant",
    "meter",
    "window_start",
    "service",
    "route",
    "dimensions",
    "unique_value",
    "value",
    "unit",
    "aggregation",
    "source_id",
    "batch_seq",
];

const TENANTS: [&str; 8] =
    ["acme", "globex", "initech", "umbrella", "hooli", "stark-industries", "wayne-enterprises", "org:cyberdyne@eu-1"];
const SERVICES: [&str; 7] = ["checkout", "cart", "search", "auth", "payments", "inventory", ""];
const ROUTES: [&str; 6] = ["/api/v1/cart/{id}", "/api/v1/search", "/login", "/health", "/api/v1/orders/{id}/items", ""];
const DROP_REASONS: [&str; 3] = ["queue_full", "too_large", "exporter_error"];

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let columns = format!("({})", TSV_COLUMNS.join(", "));
    let usage_columns = USAGE_ROW.columns();
    ensure!(columns == usage_columns, "TSV columns {columns} differ from the writer's {usage_columns}");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let server = ClickHouseServer::start()?;
    let server_pid = server.pid().context("server not running")?;
    let mut env = Environment::probe(&server)?;
    eprintln!(
        "ClickHouse {} on 127.0.0.1 (http {}, tcp {})",
        env.server_version,
        server.http_port(),
        server.tcp_port()
    );

    let data = Dataset::generate(&args);
    let tsv = TsvFiles::render(&data)?;
    eprintln!(
        "{} rows in {} UsageBatches, {} INSERTs of up to {} rows; TSV {:.1} MiB in {}",
        thousands(data.rows as f64),
        data.inserts.iter().map(Vec::len).sum::<usize>(),
        data.inserts.len(),
        thousands(args.batch_rows as f64),
        tsv.bytes as f64 / (1 << 20) as f64,
        tsv.dir.path().display(),
    );

    let bench = Bench { server: &server, server_pid, rt: &rt, data: &data, tsv: &tsv, fingerprint: OnceCell::new() };
    bench.warm_up()?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Inserter::ALL.len()];
    for run in 0..args.runs {
        // Alternate the order, so neither side always runs on a warmer (or busier) machine.
        let mut order = Inserter::ALL;
        if run % 2 == 1 {
            order.reverse();
        }
        for inserter in order {
            let sample = bench.measure(inserter)?;
            eprintln!("run {}/{}  {:<34} {}", run + 1, args.runs, inserter.label(), sample.describe(data.rows));
            samples[inserter as usize].push(sample);
        }
    }

    let summaries: Vec<Summary> =
        Inserter::ALL.iter().map(|&i| Summary::of(i, &samples[i as usize], data.rows)).collect();
    print_ratios(&summaries);
    println!();
    env.load_after = load_average();
    print_table(&args, &data, &env, &summaries);
    Ok(())
}

/// Command-line options, parsed by hand (`cargo bench` also passes `--bench`).
struct Args {
    rows: usize,
    batch_rows: usize,
    runs: usize,
    /// Records per `UsageBatch`, i.e. per `push` (an agent's batch).
    source_batch: usize,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let mut parsed = Self { rows: 1_000_000, batch_rows: 10_000, runs: 5, source_batch: 1_000 };
        while let Some(arg) = args.next() {
            let slot = match arg.as_str() {
                "--bench" => continue,
                "--rows" => &mut parsed.rows,
                "--batch-rows" => &mut parsed.batch_rows,
                "--runs" => &mut parsed.runs,
                "--source-batch" => &mut parsed.source_batch,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            };
            let value = args.next().with_context(|| format!("{arg} needs a value\n{USAGE}"))?;
            // Accept 1_000_000 and 1,000,000 as well as 1000000.
            *slot = value.replace(['_', ','], "").parse().with_context(|| format!("{arg} {value:?}\n{USAGE}"))?;
            ensure!(*slot > 0, "{arg} must be positive");
        }
        Ok(parsed)
    }
}

/// The generated rows, grouped as they are inserted: one `Vec<UsageBatch>` per INSERT.
struct Dataset {
    inserts: Vec<Vec<UsageBatch>>,
    rows: usize,
    /// `sum(value)` the table must hold afterwards.
    sum: Decimal,
}

impl Dataset {
    /// N records, deterministic. Record `i` has tenant `i % 8`, meter `(i / 8) % 16`
    /// and minute `i / 128`, so no two records anywhere share a key: the writer
    /// sums records with equal keys within a batch, and then it would insert
    /// fewer rows than the TSV holds.
    fn generate(args: &Args) -> Self {
        let mut rng = SplitMix64(0x7a11_be7c);
        let base = datetime!(2026-05-01 00:00 UTC);
        let per_minute = (TENANTS.len() * BUILTIN.len()) as i64;
        let mut sum = Decimal::ZERO;
        let mut inserts = Vec::new();
        let mut seq = 0u64;
        let mut i = 0usize;
        while i < args.rows {
            let insert_end = args.rows.min(i + args.batch_rows);
            let mut batches = Vec::new();
            while i < insert_end {
                let batch_end = insert_end.min(i + args.source_batch);
                let records: Vec<UsageRecord> = (i..batch_end)
                    .map(|i| {
                        let minute = base + time::Duration::minutes(i as i64 / per_minute);
                        record(&mut rng, TENANTS[i % TENANTS.len()], i / TENANTS.len() % BUILTIN.len(), minute)
                    })
                    .collect();
                sum += records.iter().map(|r| r.value).sum::<Decimal>();
                seq += 1;
                batches.push(UsageBatch { source_id: format!("agent:node-{}:boot-1", seq % 4), seq, records });
                i = batch_end;
            }
            inserts.push(batches);
        }
        Self { inserts, rows: args.rows, sum }
    }
}

/// One record of meter `BUILTIN[meter]` at a random instant within `minute`,
/// with a value typical of the meter's unit (fractional for seconds).
fn record(rng: &mut SplitMix64, tenant: &str, meter: usize, minute: OffsetDateTime) -> UsageRecord {
    use metering::meter::Unit;
    let meter = &BUILTIN[meter];
    let time = minute + time::Duration::milliseconds(rng.below(60_000) as i64);
    let value = match meter.unit {
        Unit::Count => Decimal::from(rng.below(10_000) + 1),
        Unit::Bytes => Decimal::from(rng.below(50_000_000)),
        // Up to 120 s, 9 decimals: the most precise value the store keeps.
        Unit::Seconds => Decimal::new(rng.below(120_000_000_000) as i64, 9),
    };
    let mut r = UsageRecord::new(tenant, &meter.name, time, value)
        .with_service(SERVICES[rng.below(SERVICES.len() as u64) as usize])
        .with_route(ROUTES[rng.below(ROUTES.len() as u64) as usize]);
    // Dropped volumes carry a reason, so the dimensions column is exercised too.
    if meter.name.starts_with("dropped_") {
        r.dimensions.insert("reason".into(), DROP_REASONS[rng.below(3) as usize].into());
    }
    r
}

/// A small deterministic generator: the same rows on every run and machine.
struct SplitMix64(u64);

impl SplitMix64 {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// The dataset as TabSeparated files: one chunk per INSERT, and all rows in one file.
struct TsvFiles {
    dir: tempfile::TempDir,
    chunks: Vec<PathBuf>,
    all: PathBuf,
    bytes: u64,
}

impl TsvFiles {
    fn render(data: &Dataset) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("tally-bench-writer-").tempdir()?;
        let all = dir.path().join("all.tsv");
        let mut all_file = BufWriter::new(File::create(&all)?);
        let mut chunks = Vec::new();
        let mut bytes = 0;
        let mut text = String::new();
        for (n, insert) in data.inserts.iter().enumerate() {
            text.clear();
            for batch in insert {
                for record in &batch.records {
                    tsv_row(&mut text, batch, record);
                }
            }
            let chunk = dir.path().join(format!("chunk-{n:06}.tsv"));
            fs::write(&chunk, &text)?;
            all_file.write_all(text.as_bytes())?;
            bytes += text.len() as u64;
            chunks.push(chunk);
        }
        all_file.flush()?;
        Ok(Self { dir, chunks, all, bytes })
    }
}

/// Appends the row the writer stores for `record` (see `encode_batch`), in
/// `TSV_COLUMNS` order: DateTime as `YYYY-MM-DD hh:mm:ss` UTC (the server runs in
/// UTC), Decimal as plain text, dimensions as the same canonical JSON.
fn tsv_row(out: &mut String, batch: &UsageBatch, r: &UsageRecord) {
    let window = OffsetDateTime::from_unix_timestamp(minute_of(r.time).into()).expect("minute in range");
    let window = window.format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).expect("formats");
    let dims = if r.dimensions.is_empty() { String::new() } else { serde_json::to_string(&r.dimensions).unwrap() };
    let catalog = Catalog::builtin();
    let meter = catalog.get(&r.meter).expect("built-in meter");
    let fields: [&str; 10] = [
        &r.tenant,
        &r.meter,
        &window,
        &r.service,
        &r.route,
        &dims,
        &r.unique,
        &r.value.to_string(),
        meter.unit.as_str(),
        meter.aggregation.as_str(),
    ];
    for field in fields {
        push_escaped(out, field);
        out.push('\t');
    }
    push_escaped(out, &batch.source_id);
    let _ = writeln!(out, "\t{}", batch.seq);
}

/// TabSeparated escaping: backslash, tab and newline would otherwise split fields or rows.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The ways of inserting the dataset; the discriminant indexes per-inserter results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inserter {
    Tally,
    ClientPerChunk,
    ClientWholeFile,
}

impl Inserter {
    const ALL: [Inserter; 3] = [Inserter::Tally, Inserter::ClientPerChunk, Inserter::ClientWholeFile];

    fn label(self) -> &'static str {
        match self {
            Inserter::Tally => "Tally UsageWriter (HTTP RowBinary)",
            Inserter::ClientPerChunk => "clickhouse-client, process/INSERT",
            Inserter::ClientWholeFile => "clickhouse-client, one process",
        }
    }
}

/// One timed insert of the whole dataset.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    /// CPU seconds of the inserting side: this process for Tally, the
    /// `clickhouse-client` children for the peer.
    client_cpu: f64,
    /// CPU seconds of the server over the same interval (parsing, sorting,
    /// writing parts, and any merges that ran meanwhile).
    server_cpu: f64,
}

impl Sample {
    fn rate(&self, rows: usize) -> f64 {
        rows as f64 / self.wall.as_secs_f64()
    }

    fn describe(&self, rows: usize) -> String {
        format!(
            "{:>7.2} s {:>11} rows/s  client CPU {:.2} s  server CPU {:.2} s",
            self.wall.as_secs_f64(),
            thousands(self.rate(rows)),
            self.client_cpu,
            self.server_cpu
        )
    }
}

/// Everything a measurement needs.
struct Bench<'a> {
    server: &'a ClickHouseServer,
    server_pid: u32,
    rt: &'a tokio::runtime::Runtime,
    data: &'a Dataset,
    tsv: &'a TsvFiles,
    /// Hash of the rows the first verified measurement stored.
    fingerprint: OnceCell<String>,
}

impl Bench<'_> {
    /// One untimed INSERT through each path, so the first timed run does not pay
    /// for loading the (large) `clickhouse-client` binary or the first connection.
    fn warm_up(&self) -> Result<()> {
        let db = self.fresh_database("bench_warmup")?;
        let first = &self.data.inserts[..1];
        self.rt.block_on(insert_with_writer(self.http_client()?, &db, first))?;
        self.client_insert(&db, &self.tsv.chunks[0])?;
        Ok(())
    }

    /// Inserts the dataset through `inserter` into a fresh table and checks the table.
    ///
    /// The table is kept until the server goes away at exit: dropping it would
    /// delete thousands of part files, and on ext4 without a journal (this VM's
    /// disk) every file created in the next minutes then scans past those
    /// recently deleted inodes, which made each run slower than the one before.
    fn measure(&self, inserter: Inserter) -> Result<Sample> {
        let db = self.fresh_database(match inserter {
            Inserter::Tally => "bench_tally",
            Inserter::ClientPerChunk | Inserter::ClientWholeFile => "bench_client",
        })?;
        let ch = self.http_client()?;
        wait_until_quiet(self.server_pid)?;
        let (me, server) = (cpu_times(std::process::id())?, cpu_times(self.server_pid)?);
        let start = Instant::now();
        match inserter {
            Inserter::Tally => {
                let rows = self.rt.block_on(insert_with_writer(ch, &db, &self.data.inserts))?;
                ensure!(rows == self.data.rows, "the writer inserted {rows} rows, not {}", self.data.rows);
            }
            Inserter::ClientPerChunk => {
                for chunk in &self.tsv.chunks {
                    self.client_insert(&db, chunk)?;
                }
            }
            Inserter::ClientWholeFile => self.client_insert(&db, &self.tsv.all)?,
        }
        let wall = start.elapsed();
        let (me_after, server_after) = (cpu_times(std::process::id())?, cpu_times(self.server_pid)?);
        // (own, reaped children): the client runs as child processes.
        let client_cpu = match inserter {
            Inserter::Tally => me_after.0 - me.0,
            Inserter::ClientPerChunk | Inserter::ClientWholeFile => me_after.1 - me.1,
        };
        self.verify(&db, inserter)?;
        Ok(Sample { wall, client_cpu, server_cpu: server_after.0 - server.0 })
    }

    /// A new database with the migrated `usage` table.
    fn fresh_database(&self, prefix: &str) -> Result<String> {
        let db = self.server.database(prefix)?;
        self.rt.block_on(migrate(&Store::new(self.http_client()?, &db)))?;
        Ok(db)
    }

    /// A new client, hence a new connection: each Tally measurement starts cold.
    fn http_client(&self) -> Result<ClickHouse> {
        Ok(ClickHouse::new(&self.server.http_url(), Duration::from_secs(120))?)
    }

    /// `clickhouse-client ... --query "INSERT ... FORMAT TabSeparated" < file`.
    fn client_insert(&self, db: &str, file: &Path) -> Result<()> {
        let query = format!("INSERT INTO {db}.usage {} FORMAT TabSeparated", USAGE_ROW.columns());
        let port = self.server.tcp_port().to_string();
        let out = Command::new("clickhouse-client")
            .args(["--host", "127.0.0.1", "--port", &port, "--query", &query])
            .stdin(File::open(file)?)
            .stdout(Stdio::null())
            .output()
            .context("run clickhouse-client (apt-get install -y clickhouse-client)")?;
        ensure!(
            out.status.success(),
            "clickhouse-client failed on {}: {}\n{}",
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The table must hold exactly the dataset: N rows and the same `sum(value)`.
    /// A hash over every other column must also equal the first measurement's,
    /// so all paths provably stored the same rows, not just as many.
    fn verify(&self, db: &str, inserter: Inserter) -> Result<()> {
        let got = self.server.query(&format!(
            "SELECT count(), sum(value), sum(cityHash64(tenant, meter, window_start, service, route, dimensions, \
             unit, source_id, batch_seq)) FROM {db}.usage"
        ))?;
        let fields: Vec<&str> = got.trim().split('\t').collect();
        let [count, sum, fingerprint] = fields[..] else { bail!("expected count, sum and hash, got {got:?}") };
        let (count, sum): (usize, Decimal) = (count.parse()?, sum.parse()?);
        ensure!(
            count == self.data.rows && sum == self.data.sum,
            "{}: the table holds {count} rows summing to {sum}, expected {} rows summing to {}",
            inserter.label(),
            self.data.rows,
            self.data.sum
        );
        let first = self.fingerprint.get_or_init(|| fingerprint.to_owned());
        ensure!(first == fingerprint, "{}: the rows differ from the first measurement's (hash)", inserter.label());
        Ok(())
    }
}

/// Tally's path: push every batch, one `flush` (one INSERT) per group. Returns rows inserted.
async fn insert_with_writer(ch: ClickHouse, db: &str, inserts: &[Vec<UsageBatch>]) -> Result<usize> {
    let mut writer = UsageWriter::new(ch, db, Catalog::builtin())?;
    let mut rows = 0;
    for batches in inserts {
        for batch in batches {
            writer.push(batch)?;
        }
        rows += writer.flush().await?;
    }
    Ok(rows)
}

/// Per-inserter results over all runs.
struct Summary {
    inserter: Inserter,
    median: f64,
    min: f64,
    max: f64,
    client_cpu_per_m: f64,
    server_cpu_per_m: f64,
}

impl Summary {
    fn of(inserter: Inserter, samples: &[Sample], rows: usize) -> Self {
        let per_m = |cpu: f64| cpu / (rows as f64 / 1e6);
        let rates: Vec<f64> = samples.iter().map(|s| s.rate(rows)).collect();
        Self {
            inserter,
            median: median(rates.iter().copied()),
            min: rates.iter().copied().fold(f64::INFINITY, f64::min),
            max: rates.iter().copied().fold(0.0, f64::max),
            client_cpu_per_m: median(samples.iter().map(|s| per_m(s.client_cpu))),
            server_cpu_per_m: median(samples.iter().map(|s| per_m(s.server_cpu))),
        }
    }
}

fn print_ratios(summaries: &[Summary]) {
    let tally = &summaries[Inserter::Tally as usize];
    println!();
    for s in summaries {
        println!(
            "{:<34} median {:>11} rows/s (min {}, max {}); client CPU {:.2} s/M rows; server CPU {:.2} s/M rows",
            s.inserter.label(),
            thousands(s.median),
            thousands(s.min),
            thousands(s.max),
            s.client_cpu_per_m,
            s.server_cpu_per_m
        );
    }
    for s in &summaries[1..] {
        println!("ratio Tally / {}: {:.2}", s.inserter.label(), tally.median / s.median);
    }
}

/// What the numbers were measured on.
struct Environment {
    date: time::Date,
    nproc: usize,
    server_version: String,
    client_version: String,
    /// Where the server keeps its parts (`TMPDIR` decides), e.g. `ext4` or `tmpfs`.
    data_fs: String,
    /// 1-minute load averages before and after: the machine is shared, and this says how busy it was.
    load_before: String,
    load_after: String,
}

impl Environment {
    fn probe(server: &ClickHouseServer) -> Result<Self> {
        let out = Command::new("clickhouse-client").arg("--version").output().context("run clickhouse-client")?;
        // "ClickHouse client version 18.16.1."
        let client = String::from_utf8_lossy(&out.stdout);
        let client_version = client.trim().trim_end_matches('.').rsplit(' ').next().unwrap_or_default().to_owned();
        Ok(Self {
            date: OffsetDateTime::now_utc().date(),
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            server_version: server.query("SELECT version()")?.trim().to_owned(),
            client_version,
            data_fs: filesystem_of(server.dir()),
            load_before: load_average(),
            load_after: String::new(),
        })
    }
}

/// The Markdown table for docs/benchmarks.md.
fn print_table(args: &Args, data: &Dataset, env: &Environment, summaries: &[Summary]) {
    let tally = summaries[Inserter::Tally as usize].median;
    println!(
        "{} (UTC), nproc {}, load {} → {}, ClickHouse server {} (data on {}), clickhouse-client {}, {} rows, \
         {} rows per INSERT, {} records per UsageBatch, median of {} runs:",
        env.date,
        env.nproc,
        env.load_before,
        env.load_after,
        env.server_version,
        env.data_fs,
        env.client_version,
        thousands(args.rows as f64),
        thousands(args.batch_rows as f64),
        thousands(args.source_batch as f64),
        args.runs
    );
    println!();
    println!("| Inserter | INSERTs | Rows/s (median) | Rows/s (min – max) | Client CPU s / M rows | Server CPU s / M rows | Tally ÷ this |");
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for s in summaries {
        let inserts = if s.inserter == Inserter::ClientWholeFile { 1 } else { data.inserts.len() };
        println!(
            "| {} | {} | {} | {} – {} | {:.2} | {:.2} | {:.2} |",
            s.inserter.label(),
            thousands(inserts as f64),
            thousands(s.median),
            thousands(s.min),
            thousands(s.max),
            s.client_cpu_per_m,
            s.server_cpu_per_m,
            tally / s.median
        );
    }
    println!();
    println!(
        "Client CPU: this process for Tally, the `clickhouse-client` processes otherwise. Server CPU: \
         `clickhouse-server` while inserting, including background merges that ran meanwhile."
    );
}
