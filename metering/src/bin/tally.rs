//! `tally`: migrations and the billing API (invoices and reports come next).

use anyhow::{bail, Context};
use metering::api::{self, auth::KeyRing, AppState};
use metering::cli::{Cli, Command};
use metering::meter::{definition, Catalog};
use metering::store::migrate::migrate;
use metering::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = metering::settings::parse();
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
            let keys: Vec<&str> = args.billing_key.iter().map(|k| k.trim()).filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                bail!("tally serve needs at least one --billing-key (or TALLY_BILLING_KEY, or billing-key in the config file)");
            }
            let catalog = match &args.meters {
                Some(path) => Catalog::with_custom(&definition::load(path)?),
                None => Catalog::builtin(),
            };
            let ch = args.store.client()?;
            if let Err(e) = ch.version().await {
                tracing::warn!(error = %e, "ClickHouse is not answering yet; /v1/usage answers 503 until it does");
            }
            let state = AppState::new(ch, &args.store.clickhouse_database, KeyRing::with_billing_keys(keys))?.with_catalog(catalog);
            api::serve(args.listen, state, telemetry::shutdown_signal())
                .await
                .with_context(|| format!("serving the billing API on {}", args.listen))?;
        }
    }
    Ok(())
}
