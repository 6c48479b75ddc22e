//! `tally-loadgen`: drives an OTLP/gRPC endpoint with realistic trace exports
//! and prints what it answered as one JSON line (see `testkit::loadgen`).
//!
//! Exits 0 when every span was accepted, 2 when any request was refused, failed
//! or partially rejected (the report says which), 1 on a usage error.

use clap::Parser;
use testkit::loadgen::{self, Config, Pool};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let pool = Pool::build(&config);
    let report = loadgen::run(&config, &pool).await?;
    println!("{}", serde_json::to_string(&report)?);
    if !report.all_accepted() {
        std::process::exit(2);
    }
    Ok(())
}
