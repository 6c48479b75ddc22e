//! `tally`: migrations, the billing API, invoices and reports.

mod report;

use anyhow::{bail, Context};
use billing::api::{self, auth::KeyRing, AppState};
use billing::cli::{Cli, Command, InvoiceFormat, SettleSettings};
use billing::settler;
use metering::export::{self, ExportFormat};
use metering::pricing::{self, BillingMonth};
use metering::store::migrate::{migrate, migrate_on_cluster, ClusterTarget};
use metering::store::StoreSettings;
use runtime::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = runtime::settings::parse();
    telemetry::init_logging(cli.log_format);
    match cli.command {
        Command::Migrate(args) => {
            let settings = &args.store;
            let store = settings.store()?;
            let ch = store.ch();
            let report = match &settings.clickhouse_cluster {
                None => migrate(&store).await,
                Some(name) => {
                    let shards: Vec<_> = args
                        .clickhouse_shard_url
                        .iter()
                        .map(|url| StoreSettings { clickhouse_url: url.clone(), ..settings.clone() }.client())
                        .collect::<Result<_, _>>()?;
                    let target = match shards.is_empty() {
                        true => ClusterTarget::discover(ch, name).await,
                        false => ClusterTarget::with_shards(ch, name, shards).await,
                    };
                    match target {
                        Ok(cluster) => migrate_on_cluster(&store, &cluster).await,
                        Err(e) => Err(e),
                    }
                }
            }
            .with_context(|| format!("migrating {store}"))?;
            println!(
                "{store} is at version {} ({} dialect): applied {:?}, already applied {:?}",
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
            let mut ring = KeyRing::with_billing_keys(keys);
            for spec in args.tenant_key.iter().filter(|k| !k.trim().is_empty()) {
                ring = ring.with_tenant_key(spec)?;
            }
            let catalog = args.pricing.catalog()?;
            let plans = args.pricing.price_book(&catalog)?;
            let store = args.store.store()?;
            if let Err(e) = store.ch().version().await {
                tracing::warn!(error = %e, "ClickHouse is not answering yet; /v1/usage answers 503 until it does");
            }
            let mut state = AppState::new(store, ring)?.with_catalog(catalog).with_limits(args.limits);
            if let Some(plans) = plans {
                tracing::info!(plans = plans.plans.len(), tenants = plans.tenants.len(), "plans loaded");
                state = state.with_plans(plans);
            }
            if args.verify_every_secs > 0 {
                let every = std::time::Duration::from_secs(args.verify_every_secs);
                let store = state.reads.store(&state.store);
                tokio::spawn(state.verifications.clone().refresh_all(store, every));
            }
            api::serve(args.listen, state, telemetry::shutdown_signal())
                .await
                .with_context(|| format!("serving the billing API on {}", args.listen))?;
        }
        Command::Settle(args) => settle(args).await?,
        Command::Invoice(args) => {
            let month = BillingMonth::parse(&args.month)?;
            let catalog = args.pricing.catalog()?;
            let Some(book) = args.pricing.price_book(&catalog)? else {
                bail!("tally invoice needs a plans file: --plans FILE (or TALLY_PLANS, or plans in the config file)");
            };
            let store = args.store.store()?;
            match &args.tenant {
                Some(tenant) => {
                    let invoice = pricing::store::invoice(&store, &book, &catalog, tenant, month)
                        .await
                        .with_context(|| format!("invoicing tenant {tenant} for {month} from {store}"))?;
                    match args.format {
                        InvoiceFormat::Json => println!("{}", serde_json::to_string_pretty(&invoice)?),
                        InvoiceFormat::Text => print!("{}", pricing::text::render(&invoice)),
                    }
                }
                None => {
                    let tenants: Vec<&str> = book.tenants.keys().map(String::as_str).collect();
                    let all = pricing::store::month_invoices(&store, &book, &catalog, &tenants, month)
                        .await
                        .with_context(|| format!("invoicing every tenant for {month} from {store}"))?;
                    match args.format {
                        InvoiceFormat::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                        InvoiceFormat::Text => {
                            let texts: Vec<String> = all.invoices.iter().map(pricing::text::render).collect();
                            print!("{}", texts.join("\n"));
                        }
                    }
                }
            }
        }
        Command::Report(command) => report::run(command).await?,
        Command::Export(args) => {
            let month = BillingMonth::parse(&args.month)?;
            let store = args.store.store()?;
            let report = metering::report::read_usage_report(&store, month, args.tenant.as_deref())
                .await
                .with_context(|| format!("reading {month}'s usage from {store}"))?;
            for m in &args.meter {
                let in_report = report.tenants.iter().any(|t| t.meters.iter().any(|u| &u.meter == m));
                if !in_report && metering::meter::Catalog::builtin().get(m).is_none() {
                    bail!("--meter {m:?}: no such meter in {month}'s usage");
                }
            }
            let out = match args.export_format {
                ExportFormat::Cloudevents => {
                    export::cloudevents(&report, &args.meter, &format!("tally/{}", store.db()))
                }
                ExportFormat::Csv => {
                    let mut report = report;
                    for t in &mut report.tenants {
                        t.meters.retain(|m| args.meter.is_empty() || args.meter.contains(&m.meter));
                    }
                    metering::report::csv::usage(&report)
                }
                ExportFormat::Stripe => {
                    let mut customers = std::collections::BTreeMap::new();
                    for spec in &args.stripe_customer {
                        let Some((tenant, customer)) = spec.split_once('=') else {
                            bail!("--stripe-customer {spec:?}: expected TENANT=cus_...");
                        };
                        customers.insert(tenant.to_owned(), customer.to_owned());
                    }
                    export::stripe(&report, &args.meter, &customers)?
                }
            };
            print!("{out}");
        }
        Command::Seal(args) => {
            let month = BillingMonth::parse(&args.month)?;
            let store = args.store.store()?;
            let period = metering::seal::seal(&store, month, time::OffsetDateTime::now_utc())
                .await
                .with_context(|| format!("sealing {month} in {store}"))?;
            println!("{}", serde_json::to_string_pretty(&period)?);
        }
        Command::Verify(args) => {
            let month = BillingMonth::parse(&args.month)?;
            let store = args.store.store()?;
            let Some(v) =
                metering::seal::verify(&store, month).await.with_context(|| format!("verifying {month} in {store}"))?
            else {
                bail!("{month} is not sealed");
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
            if !v.verified {
                bail!(
                    "{month} does not verify: recorded digest {} over {} rows after {}, recomputed {} over {} rows after {}",
                    v.period.digest, v.period.rows, v.period.previous_digest, v.recomputed_digest, v.recomputed_rows, v.expected_previous_digest
                );
            }
        }
    }
    Ok(())
}

/// Folds until caught up and exits (non-zero on failure); with `--every-secs`, again and again
/// until SIGTERM or Ctrl-C, its metrics on `--admin-listen`.
async fn settle(args: SettleSettings) -> anyhow::Result<()> {
    let store = args.store.store()?;
    let store = store.with_ch(store.ch().clone().with_query_id_prefix(&settler::query_id_prefix(store.db()))?);
    let options = metering::settle::FoldOptions {
        grace: std::time::Duration::from_secs(args.grace_secs),
        margin: std::time::Duration::from_secs(args.margin_secs),
        ..Default::default()
    };
    let metrics = std::sync::Arc::new(settler::SettleMetrics::default());
    let Some(every) = args.every_secs else {
        return settler::round(&store, options, &metrics).await.with_context(|| format!("settling {store}"));
    };
    let servers = match args.admin_listen {
        Some(addr) => {
            let (render, ready) = (metrics.clone(), metrics.clone());
            let admin = runtime::serve::admin_router(
                move || render.render(),
                move || {
                    let healthy = ready.healthy();
                    async move {
                        match healthy {
                            true => (axum::http::StatusCode::OK, "settling\n".to_owned()),
                            false => {
                                (axum::http::StatusCode::SERVICE_UNAVAILABLE, "the last round failed\n".to_owned())
                            }
                        }
                    }
                },
            );
            Some(runtime::serve::start(vec![("admin", addr, admin)]).await?)
        }
        None => None,
    };
    settler::scheduled(&store, options, std::time::Duration::from_secs(every), &metrics, telemetry::shutdown_signal())
        .await;
    if let Some(servers) = servers {
        servers.stop().await.context("serving")?;
    }
    Ok(())
}
