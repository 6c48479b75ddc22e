//! `tally report usage|sla`: a month's report to standard output, or one file per
//! tenant into `--out DIR` (with a progress bar on a terminal).

use std::path::Path;

use anyhow::Context;
use billing::cli::ReportCommand;
use indicatif::{ProgressBar, ProgressStyle};
use metering::pricing::BillingMonth;
use metering::record::validate_tenant;
use metering::report::sla::SlaReport;
use metering::report::usage::UsageReport;
use metering::report::{self, Format};

fn bar(len: usize, what: &str) -> ProgressBar {
    // Drawn on stderr only when it is a terminal; hidden in CronJobs and tests.
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} tenants ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

fn write_file(dir: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))
}

fn usage_text(r: &UsageReport, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(r)? + "\n",
        Format::Csv => report::csv::usage(r),
        Format::Html => report::html::usage(r),
    })
}

fn sla_text(r: &SlaReport, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(r)? + "\n",
        Format::Csv => report::csv::sla(r),
        Format::Html => report::html::sla(r),
    })
}

/// `1 SLA report`, `2 SLA reports`.
fn reports(n: usize, kind: &str) -> String {
    format!("{n} {kind} report{}", if n == 1 { "" } else { "s" })
}

/// Runs `tally report`.
pub async fn run(command: ReportCommand) -> anyhow::Result<()> {
    let (args, pricing) = match command {
        ReportCommand::Usage(a) => (a, None),
        ReportCommand::Sla(a) => (a.report, Some(a.pricing)),
    };
    let kind = if pricing.is_some() { "sla" } else { "usage" };
    let month = BillingMonth::parse(&args.month)?;
    if let Some(t) = &args.tenant {
        validate_tenant(t).with_context(|| format!("--tenant {t:?}"))?;
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let store = args.store.store()?;
    let tenant = args.tenant.as_deref();
    let ext = args.format.extension();
    let context = || format!("reading the {kind} report of {month} from {store}");
    match pricing {
        None => {
            let r = report::read_usage_report(&store, month, tenant).await.with_context(context)?;
            tracing::info!(%month, tenants = r.tenants.len(), "usage report read");
            match &args.out {
                None => print!("{}", usage_text(&r, args.format)?),
                Some(dir) => {
                    let progress = bar(r.tenants.len(), "writing usage reports");
                    for t in &r.tenants {
                        let one = UsageReport {
                            month: r.month.clone(),
                            sealed_digest: r.sealed_digest.clone(),
                            tenants: vec![t.clone()],
                        };
                        write_file(dir, &format!("usage-{month}-{}.{ext}", t.tenant), &usage_text(&one, args.format)?)?;
                        progress.inc(1);
                    }
                    progress.finish_and_clear();
                    println!("wrote {} of {month} into {}", reports(r.tenants.len(), "usage"), dir.display());
                }
            }
        }
        Some(pricing) => {
            let catalog = pricing.catalog()?;
            let book = pricing.price_book(&catalog)?;
            if book.is_none() {
                tracing::warn!("no plans file (--plans): the SLA report shows no objectives and no credits");
            }
            let progress = bar(0, "pricing SLA credits");
            let r = report::read_sla_report(&store, month, tenant, book.as_ref().map(|b| (b, &catalog)), |done, of| {
                progress.set_length(of as u64);
                progress.set_position(done as u64);
            })
            .await
            .with_context(context)?;
            progress.finish_and_clear();
            match &args.out {
                None => print!("{}", sla_text(&r, args.format)?),
                Some(dir) => {
                    for t in &r.tenants {
                        let one = SlaReport {
                            month: r.month.clone(),
                            sealed_digest: r.sealed_digest.clone(),
                            tenants: vec![t.clone()],
                        };
                        write_file(dir, &format!("sla-{month}-{}.{ext}", t.tenant), &sla_text(&one, args.format)?)?;
                    }
                    println!("wrote {} of {month} into {}", reports(r.tenants.len(), "SLA"), dir.display());
                }
            }
        }
    }
    Ok(())
}
