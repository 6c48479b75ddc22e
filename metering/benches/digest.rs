//! Bench (not a test): reading a sealed tenant's snapshot back and digesting it, as sealing and
//! verifying do, both ways in the same run: RowBinary with borrowed fields (what production
//! runs) and, as the peer, TabSeparated text parsed into owned rows (what it replaced).
//!
//! cargo bench -p tally-metering --bench digest -- [--rows N] [--runs R]
//!
//! Prints, per way, the median wall time and this process's CPU per row (reading the reply,
//! decoding, sorting, hashing), and the ratio. ClickHouse's own time to answer is in the wall
//! time of both.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use metering::clickhouse::ClickHouse;
use metering::seal::digest::{Digester, GENESIS};
use metering::seal::schema::read_snapshot;
use metering::seal::store::{parse_snapshot, usage_lines};
use metering::store::migrate::migrate;
use metering::store::Store;
use testkit::bench::{cpu_seconds, load_average, median, thousands};
use testkit::ClickHouseServer;

fn main() -> Result<()> {
    let (mut rows, mut runs) = (2_000_000u64, 5usize);
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = args.next() {
        let n = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), n) {
            ("--rows", Some(n)) => rows = n,
            ("--runs", Some(n)) => runs = n as usize,
            _ => bail!("usage: cargo bench -p tally-metering --bench digest -- [--rows N] [--runs R]"),
        }
    }
    let server = ClickHouseServer::start()?;
    let db = server.database("digest")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = Store::new(ClickHouse::new(&server.http_url(), Duration::from_secs(600))?, &db);
    rt.block_on(migrate(&store))?;
    // One tenant's snapshot: 6 meters × 3 services × minutes, as a month of minute usage has.
    server.query(&format!(
        "INSERT INTO {db}.sealed_usage (seal_id, tenant, meter, window_start, service, route, dimensions, \
         unique_value, value, unit, aggregation, source_id, batch_seq) SELECT 's1', 'tenant-0042', \
         arrayElement(['spans', 'span_bytes', 'requests', 'log_records', 'metric_points', 'cpu_seconds'], number % 6 + 1), \
         toDateTime(1796083200 + intDiv(number, 18) * 60, 'UTC'), concat('svc-', toString(intDiv(number, 6) % 3)), \
         '/v1/items', '', '', toDecimal128(number % 100000, 9) / 1000, 'count', 'sum', 'agent-7:boot-1', intDiv(number, 90) \
         FROM system.numbers LIMIT {rows}"
    ))?;
    let sql = read_snapshot(&db, "s1", "tenant-0042")?;
    let me = std::process::id();
    let (mut tsv, mut rowbinary) = (Vec::new(), Vec::new());
    let mut digests = Vec::new();
    for _ in 0..runs {
        for way in ["rowbinary", "tsv"] {
            let (start, cpu) = (Instant::now(), cpu_seconds(me)?);
            let mut d = Digester::new("2026-12", GENESIS, rows);
            let n = match way {
                "rowbinary" => {
                    let bytes = rt.block_on(store.ch().query_rowbinary(&sql))?;
                    let lines = usage_lines(&bytes)?;
                    d.usage_lines(&lines);
                    lines.len()
                }
                _ => {
                    let text = rt.block_on(store.ch().query_tsv(&sql))?;
                    let owned = parse_snapshot(text)?;
                    d.usage(&owned);
                    owned.len()
                }
            };
            digests.push(d.finish());
            let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds(me)? - cpu);
            assert_eq!(n as u64, rows);
            let out = if way == "rowbinary" { &mut rowbinary } else { &mut tsv };
            out.push((wall, cpu * 1e6 / rows as f64));
        }
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "the two ways digest differently");
    let report = |name: &str, v: &[(f64, f64)]| {
        let (wall, cpu) = (median(v.iter().map(|x| x.0)), median(v.iter().map(|x| x.1)));
        println!("{name:<32} {wall:>7.2} s wall   {cpu:>6.3} µs CPU per row");
        cpu
    };
    println!(
        "{} rows of one tenant's snapshot, {runs} runs each, interleaved; load {}",
        thousands(rows as f64),
        load_average()
    );
    let new = report("RowBinary, borrowed (production)", &rowbinary);
    let old = report("TabSeparated, owned (before)", &tsv);
    println!("CPU per row: {:.2}× of before", new / old);
    Ok(())
}
