//! Bench (not a test): a month of invoices and reports for many tenants.
//!
//! ```text
//! cargo bench -p tally-metering --bench month -- [--tenants 1000] [--days 30] [--runs 3]
//! ```
//!
//! Starts a private ClickHouse 18.16, migrates it, and generates November 2026
//! server-side (`INSERT ... SELECT FROM numbers(N)`): for every tenant, 10 meters
//! × one `usage` row per minute, and 2 services × one `sla` row per minute, as the
//! collector writes them (one batch identity per source and minute). `--days`
//! fills only the month's first days, for quick runs; invoices and reports still
//! cover the whole month. Generating is set-up: timed and reported, not measured.
//!
//! Then, `--runs` times, it measures the production paths the CLI runs:
//!
//! * every tenant's invoice (`pricing::store::invoice`, as `tally invoice`), as JSON;
//! * the usage report of all tenants (`report::read_usage_report`), as JSON;
//! * the SLA report of all tenants with credits (`report::read_sla_report`), as JSON;
//!
//! Then it seals the month and verifies the seal once (`seal::seal`, `seal::verify`, as
//! `tally seal|verify`), and measures the three again, `--runs` times, now from the
//! seal (as billing reads a closed month). Every phase gets wall time, CPU and peak
//! resident memory of this process and of the server (peaks reset through
//! `/proc/<pid>/clear_refs` before each), and the medians are printed as a Markdown table.
//!
//! Values are a closed-form function of tenant, meter and minute, so the bench
//! checks exactness: some tenants' invoice lines, report totals and request
//! counts must equal the totals computed here, or it aborts.

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
use metering::sla::schema::SLA_ROW;
use metering::sla::sketch::bucket_of;
use metering::store::migrate::migrate;
use metering::store::schema::USAGE_ROW;
use rust_decimal::Decimal;
use testkit::bench::{cpu_times, filesystem_of, load_average, median, peak_rss_kib, thousands, wait_until_quiet};
use testkit::ClickHouseServer;

const USAGE: &str =
    "usage: cargo bench -p tally-metering --bench month -- [--tenants N] [--days D] [--runs R] [--live]\n\
     --live also reads the month live (before it is sealed) R times: minutes of ClickHouse work per tenant";

const MONTH: &str = "2026-11";
/// The meters every tenant uses: the first ten built-ins, all reported (no agents' books).
const METERS: usize = 10;
const SERVICES: [&str; 2] = ["api", "web"];
/// Tenants whose figures are checked against the closed forms: first, middle, last.
const CHECKED: usize = 3;
/// Tenants per generating INSERT: one INSERT of the whole month would outrun
/// 18.16's merges (it refuses inserts into a partition of 300 parts).
const TENANTS_PER_INSERT: u64 = 20;

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let month = BillingMonth::parse(MONTH)?;
    let minutes = args.days * 1440;
    ensure!(args.days <= u64::from(month.days()), "--days must be at most {} ({MONTH})", month.days());
    ensure!(args.tenants < 10_000, "--tenants must be under 10,000 (tenant names have 4 digits)");
    let meters = &BUILTIN[..METERS];
    ensure!(meters.iter().all(|m| !m.name.starts_with("agent_")), "a generated meter is one of the agents' books");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let server = ClickHouseServer::start()?;
    let server_pid = server.pid().context("server not running")?;
    let db = server.database("bench_month")?;
    rt.block_on(migrate(&Store::new(client(&server)?, &db))).context("migrating")?;
    let load_before = load_average();
    eprintln!(
        "ClickHouse {} (data on {} in {}); {} tenants × {METERS} meters × {} minutes = {} usage rows, {} SLA rows",
        server.query("SELECT version()")?.trim(),
        filesystem_of(server.dir()),
        server.dir().display(),
        args.tenants,
        thousands(minutes as f64),
        thousands((args.tenants * METERS as u64 * minutes) as f64),
        thousands((args.tenants * SERVICES.len() as u64 * minutes) as f64),
    );

    let shape = Shape { tenants: args.tenants, minutes, start: month_start(month) };
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

    // With --live, the live month `--runs` times; then it is sealed and verified once; then read
    // `--runs` times from its seal, as billing reads a closed month.
    let live_runs = if args.live { args.runs } else { 0 };
    let live = (0..live_runs).flat_map(|run| Phase::ALL.map(|p| (run, p, false)));
    let sealed = (0..args.runs).flat_map(|run| Phase::ALL.map(|p| (run, p, true)));
    // (label, which "all three" total it counts in, samples)
    let mut rows: Vec<(String, Option<usize>, Vec<Sample>)> = Vec::new();
    for (run, phase, after_seal) in live.chain(Phase::ONCE.map(|p| (0, p, true))).chain(sealed) {
        wait_until_quiet(server_pid)?;
        // A client per phase, as each CLI run has.
        let ch = client(&server)?;
        let ctx = Ctx { ch: &ch, db: &db, book: &book, catalog: &catalog, month, shape: &shape };
        let sample = measure(server_pid, || rt.block_on(ctx.run(phase)))?;
        let (label, total) = match (after_seal, Phase::ALL.contains(&phase)) {
            (false, _) => (phase.label().to_owned(), Some(0)),
            (true, true) => (format!("{}, from the seal", phase.label()), Some(1)),
            (true, false) => (phase.label().to_owned(), None),
        };
        eprintln!("run {}/{}  {label:<50} {}", run + 1, args.runs, sample.describe());
        match rows.iter_mut().find(|r| r.0 == label) {
            Some(row) => row.2.push(sample),
            None => rows.push((label, total, vec![sample])),
        }
    }

    println!();
    println!(
        "{} (UTC), nproc {}, load {load_before} → {}, ClickHouse {} (data on {}), {} tenants × {METERS} meters × {} \
         minutes = {} usage rows and {} SLA rows ({} services × minute), median of {} runs; generated in {:.0} s, {} on disk:",
        time::OffsetDateTime::now_utc().date(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        server.query("SELECT version()")?.trim(),
        filesystem_of(server.dir()),
        thousands(args.tenants as f64),
        thousands(minutes as f64),
        thousands(shape.usage_rows() as f64),
        thousands(shape.sla_rows() as f64),
        SERVICES.len(),
        args.runs,
        generated.as_secs_f64(),
        disk.trim(),
    );
    println!();
    println!("| phase | wall s (median) | wall s (min – max) | our CPU s | our peak RSS | ClickHouse CPU s | ClickHouse peak RSS | output |");
    println!("|---|--:|--:|--:|--:|--:|--:|--:|");
    let mut totals = [0.0; 2];
    for (label, total, s) in &rows {
        let wall: Vec<f64> = s.iter().map(|s| s.wall.as_secs_f64()).collect();
        if let Some(t) = total {
            totals[*t] += median(wall.iter().copied());
        }
        println!(
            "| {label} | {:.2} | {:.2} – {:.2} | {:.2} | {} | {:.2} | {} | {} |",
            median(wall.iter().copied()),
            wall.iter().copied().fold(f64::INFINITY, f64::min),
            wall.iter().copied().fold(0.0, f64::max),
            median(s.iter().map(|s| s.cpu)),
            mib(median(s.iter().map(|s| s.peak_kib as f64))),
            median(s.iter().map(|s| s.server_cpu)),
            mib(median(s.iter().map(|s| s.server_peak_kib as f64))),
            mib(median(s.iter().map(|s| s.output_bytes as f64 / 1024.0))),
        );
    }
    if args.live {
        println!("| **all three, live** | **{:.2}** | | | | | | |", totals[0]);
    }
    println!("| **all three, from the seal** | **{:.2}** | | | | | | |", totals[1]);
    println!();
    println!(
        "Peak RSS: `VmHWM`, reset before each phase (`/proc/<pid>/clear_refs`). ClickHouse's CPU includes any \
         background merges that ran meanwhile. Output: the JSON the CLI would print."
    );
    Ok(())
}

/// Command-line options, parsed by hand (`cargo bench` also passes `--bench`).
struct Args {
    tenants: u64,
    days: u64,
    runs: usize,
    live: bool,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let mut parsed = Self { tenants: 1000, days: 30, runs: 3, live: false };
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                continue;
            }
            if matches!(arg.as_str(), "-h" | "--help") {
                println!("{USAGE}");
                std::process::exit(0);
            }
            if arg == "--live" {
                parsed.live = true;
                continue;
            }
            let value = args.next().with_context(|| format!("{arg} needs a value\n{USAGE}"))?;
            // Accept 1_000 and 1,000 as well as 1000.
            let n: u64 = value.replace(['_', ','], "").parse().with_context(|| format!("{arg} {value:?}\n{USAGE}"))?;
            ensure!(n > 0, "{arg} must be positive");
            match arg.as_str() {
                "--tenants" => parsed.tenants = n,
                "--days" => parsed.days = n,
                "--runs" => parsed.runs = n as usize,
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(parsed)
    }
}

/// What is generated: tenants `0..tenants`, minutes `0..minutes` from `start` (Unix seconds).
struct Shape {
    tenants: u64,
    minutes: u64,
    start: u64,
}

impl Shape {
    fn usage_rows(&self) -> u64 {
        self.tenants * METERS as u64 * self.minutes
    }

    fn sla_rows(&self) -> u64 {
        self.tenants * SERVICES.len() as u64 * self.minutes
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

/// Generates the month, `TENANTS_PER_INSERT` tenants per INSERT, each chunk in key order.
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
        let tenants = TENANTS_PER_INSERT.min(shape.tenants - first);
        let (m, n) = (shape.minutes, METERS as u64);
        let usage = format!(
            "INSERT INTO {db}.usage {usage_columns} \
             SELECT {TENANT_SQL}, [{names}][m + 1], toDateTime({start} + k * 60, 'UTC'), [{services}][k % 2 + 1], '', '', '', \
             toDecimal128({USAGE_VALUE_SQL}, 9) / [{divisors}][m + 1], [{units}][m + 1], 'sum', \
             concat('agent:node-', toString(t % 50), ':boot-1'), k + 1 \
             FROM (SELECT {first} + intDiv(number, {m} * {n}) AS t, intDiv(number, {m}) % {n} AS m, number % {m} AS k \
             FROM numbers({rows}))",
            start = shape.start,
            rows = tenants * n * m,
            usage_columns = USAGE_ROW.columns(),
        );
        let sla = format!(
            "INSERT INTO {db}.sla {sla_columns} \
             SELECT {TENANT_SQL}, [{services}][s + 1], '/', toDateTime({start} + k * 60, 'UTC'), req, err, \
             [{buckets}], [req - 6, 5, 1], \
             if(err > 0, [slow, failed], [slow]), if(err > 0, [400000000 + k, 300000000 + k], [400000000 + k]), \
             if(err > 0, [0, 1], [0]), concat('collector-', toString(t % 4)), k + 1 \
             FROM (SELECT {first} + intDiv(number, {m} * 2) AS t, intDiv(number, {m}) % 2 AS s, number % {m} AS k, \
             {REQUESTS_SQL} AS req, {ERRORS_SQL} AS err, \
             lower(hex(MD5(concat(toString(t), '/', toString(s), '/', toString(k))))) AS slow, \
             lower(hex(MD5(concat(toString(t), '/', toString(s), '/', toString(k), '/e')))) AS failed \
             FROM numbers({rows}))",
            start = shape.start,
            rows = tenants * SERVICES.len() as u64 * m,
            sla_columns = SLA_ROW.columns(),
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
    Seal,
    Verify,
}

impl Phase {
    /// Measured `--runs` times.
    const ALL: [Phase; 3] = [Phase::Invoices, Phase::UsageReport, Phase::SlaReport];
    /// Measured once, after them (a month is sealed once).
    const ONCE: [Phase; 2] = [Phase::Seal, Phase::Verify];

    fn label(self) -> &'static str {
        match self {
            Phase::Invoices => "every tenant's invoice",
            Phase::UsageReport => "usage report, all tenants",
            Phase::SlaReport => "SLA report, all tenants, credits",
            Phase::Seal => "seal the month (once)",
            Phase::Verify => "verify the seal (once)",
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
}

impl Ctx<'_> {
    /// Runs `phase` as the CLI would, checks its figures, and returns the bytes of JSON it produced.
    async fn run(&self, phase: Phase) -> Result<usize> {
        let (ch, db, month) = (self.ch, self.db, self.month);
        let store = Store::new(ch.clone(), db);
        match phase {
            Phase::Invoices => {
                let (mut bytes, mut invoices) = (0, Vec::new());
                for t in 0..self.shape.tenants {
                    let tenant = tenant_name(t);
                    let invoice = pricing::store::invoice(&store, self.book, self.catalog, &tenant, month)
                        .await
                        .with_context(|| format!("invoicing {tenant}"))?;
                    bytes += serde_json::to_vec_pretty(&invoice)?.len();
                    if self.checked().contains(&t) {
                        invoices.push(invoice);
                    }
                }
                for invoice in &invoices {
                    self.check_invoice(invoice)?;
                }
                Ok(bytes)
            }
            Phase::UsageReport => {
                let r = report::read_usage_report(&store, month, None).await.context("usage report")?;
                let bytes = serde_json::to_vec_pretty(&r)?.len();
                self.check_tenants("usage report", r.tenants.len())?;
                for t in self.checked() {
                    let tenant = &r.tenants[t as usize];
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
                Ok(bytes)
            }
            Phase::SlaReport => {
                let plans = Some((self.book, self.catalog));
                let r = report::read_sla_report(&store, month, None, plans, |_, _| {}).await.context("SLA report")?;
                let bytes = serde_json::to_vec_pretty(&r)?.len();
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
                Ok(bytes)
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
                Ok(serde_json::to_vec_pretty(&p)?.len())
            }
            Phase::Verify => {
                let v = metering::seal::verify(&store, month)
                    .await
                    .context("verifying")?
                    .context("the month is not sealed")?;
                ensure!(v.verified && v.recomputed_rows == self.shape.usage_rows(), "the seal does not verify: {v:?}");
                Ok(serde_json::to_vec_pretty(&v)?.len())
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
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: f64,
    peak_kib: u64,
    server_cpu: f64,
    server_peak_kib: u64,
    output_bytes: usize,
}

impl Sample {
    fn describe(&self) -> String {
        format!(
            "{:>8.2} s  CPU {:.2} s, peak {}  ClickHouse CPU {:.2} s, peak {}",
            self.wall.as_secs_f64(),
            self.cpu,
            mib(self.peak_kib as f64),
            self.server_cpu,
            mib(self.server_peak_kib as f64)
        )
    }
}

/// Times `phase`, with CPU and peak memory of this process and the server.
fn measure(server_pid: u32, phase: impl FnOnce() -> Result<usize>) -> Result<Sample> {
    let me = std::process::id();
    reset_peak(me)?;
    reset_peak(server_pid)?;
    let (cpu, server_cpu) = (cpu_times(me)?.0, cpu_times(server_pid)?.0);
    let start = Instant::now();
    let output_bytes = phase()?;
    let wall = start.elapsed();
    Ok(Sample {
        wall,
        cpu: cpu_times(me)?.0 - cpu,
        peak_kib: peak_rss_kib(me)?,
        server_cpu: cpu_times(server_pid)?.0 - server_cpu,
        server_peak_kib: peak_rss_kib(server_pid)?,
        output_bytes,
    })
}

/// Resets a process's `VmHWM` to its current RSS, so the next read is this phase's peak.
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").with_context(|| format!("resetting the peak RSS of {pid}"))
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}
