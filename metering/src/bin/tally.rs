//! `tally`: migrations, the billing API and (later) invoices and reports.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use metering::api::{self, auth::KeyRing, AppState};
use metering::clickhouse::ClickHouse;
use metering::store::migrate::migrate;
use metering::telemetry::{self, LogFormat};

/// Tally: usage metering for multi-tenant platforms.
#[derive(Debug, Parser)]
#[command(name = "tally", version)]
struct Cli {
    /// How logs are written (level from RUST_LOG).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade the usage store's schema (safe to run again).
    Migrate(StoreArgs),
    /// Serve the billing API.
    Serve(ServeArgs),
}

/// Where usage is stored.
#[derive(Debug, Args)]
struct StoreArgs {
    /// ClickHouse HTTP URL; credentials may go in it (http://user:password@host:8123).
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse_url: String,
    /// ClickHouse database holding Tally's tables.
    #[arg(long, default_value = "tally")]
    clickhouse_database: String,
    /// Timeout of one ClickHouse request, in seconds.
    #[arg(long, default_value_t = 30)]
    clickhouse_timeout_secs: u64,
}

impl StoreArgs {
    fn client(&self) -> anyhow::Result<ClickHouse> {
        Ok(ClickHouse::new(&self.clickhouse_url, Duration::from_secs(self.clickhouse_timeout_secs))?)
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address the billing API listens on.
    #[arg(long, default_value = "0.0.0.0:8088")]
    listen: SocketAddr,
    /// A key that may read every tenant's usage (repeatable; comma-separated in the env var).
    #[arg(long, value_delimiter = ',')]
    billing_key: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = <Cli as clap::Parser>::parse(); // SETTINGS-TODO
    telemetry::init_logging(cli.log_format);
    match cli.command {
        Command::Migrate(store) => {
            let ch = store.client()?;
            let db = &store.clickhouse_database;
            let report = migrate(&ch, db).await.with_context(|| format!("migrating database {db} on {}", ch.url()))?;
            println!(
                "database {db} on {} is at version {} ({} dialect): applied {:?}, already applied {:?}",
                ch.url(),
                report.applied.iter().chain(&report.skipped).max().copied().unwrap_or(0),
                report.dialect.as_str(),
                report.applied,
                report.skipped
            );
        }
        Command::Serve(args) => {
            if args.billing_key.iter().all(|k| k.trim().is_empty()) {
                bail!("tally serve needs at least one --billing-key (or TALLY_BILLING_KEY, or billing-key in the config file)");
            }
            let keys = KeyRing::with_billing_keys(args.billing_key.iter().map(String::as_str).filter(|k| !k.is_empty()));
            let ch = args.store.client()?;
            if let Err(e) = ch.version().await {
                tracing::warn!(error = %e, "ClickHouse is not answering yet; /v1/usage answers 503 until it does");
            }
            let state = AppState::new(ch, &args.store.clickhouse_database, keys)?;
            api::serve(args.listen, state, telemetry::shutdown_signal())
                .await
                .with_context(|| format!("serving the billing API on {}", args.listen))?;
        }
    }
    Ok(())
}
