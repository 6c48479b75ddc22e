//! The `tally` command line, here rather than in the binary so tests and the
//! configuration reference (docs/configuration.md) see the same definition.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use metering::meter::{definition, Catalog, DefinitionError};
use metering::pricing::plan::PriceBook;
use metering::pricing::plan_file::{self, PlanError};
use metering::store::StoreSettings;
use runtime::telemetry::LogFormat;

/// Tally: usage metering for multi-tenant platforms.
#[derive(Debug, Parser)]
#[command(name = "tally", version)]
pub struct Cli {
    /// How logs are written (level from RUST_LOG).
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `tally`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the usage store's schema (safe to run again).
    Migrate(MigrateSettings),
    /// Serve the billing API.
    Serve(ServeSettings),
    /// Price a tenant's month and print the invoice.
    Invoice(InvoiceSettings),
    /// Write a month's usage or SLA report.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Seal a month: snapshot and digest its usage, chained to the previous seal.
    Seal(PeriodSettings),
    /// Recompute a sealed month's digest from its snapshot and check the chain (exit 1 if it fails).
    Verify(PeriodSettings),
    /// Export a month's daily usage for a billing system.
    Export(ExportSettings),
    /// Fold stored usage into settled rows, so reads cost tenants × minutes, not batches (run one).
    Settle(SettleSettings),
}

/// `tally settle`.
#[derive(Debug, Args)]
pub struct SettleSettings {
    /// The usage store.
    #[command(flatten)]
    pub store: StoreSettings,
    /// Fold again every this many seconds, until stopped (default: fold what is there and exit)
    #[arg(long)]
    pub every_secs: Option<u64>,
    /// Leave rows inserted less than this many seconds ago to a later fold (inserts in flight)
    #[arg(long, default_value_t = 60)]
    pub grace_secs: u64,
    /// Each fold looks this many seconds back before the previous one's end, for rows a slow INSERT made visible late
    #[arg(long, default_value_t = 3600)]
    pub margin_secs: u64,
    /// With --every-secs: address of /healthz, /readyz (503 while the last round failed) and /metrics
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
}

/// `tally export`.
#[derive(Debug, Args)]
pub struct ExportSettings {
    /// The usage store.
    #[command(flatten)]
    pub store: StoreSettings,
    /// The month to export, YYYY-MM (UTC); a sealed month exports its sealed figures.
    #[arg(long)]
    pub month: String,
    /// How usage is written: CloudEvents or Stripe meter events (JSON Lines), or CSV.
    #[arg(long = "format", value_enum)]
    pub export_format: metering::export::ExportFormat,
    /// Only this tenant (default: every tenant with usage that month).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only these meters (repeatable; default: all but the agents' books).
    #[arg(long)]
    pub meter: Vec<String>,
    /// A tenant's Stripe customer, TENANT=cus_... (repeatable; the stripe format needs one per tenant).
    #[arg(long)]
    pub stripe_customer: Vec<String>,
}

/// `tally seal` and `tally verify`.
#[derive(Debug, Args)]
pub struct PeriodSettings {
    /// The usage store.
    #[command(flatten)]
    pub store: StoreSettings,
    /// The month to seal or verify, YYYY-MM (UTC).
    #[arg(long)]
    pub month: String,
}

/// `tally report`'s reports.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Per tenant and meter: every day's usage and the month's total.
    Usage(ReportSettings),
    /// Per tenant and service: availability, latency percentiles, SLO, error budget, worst hours, credits.
    Sla(SlaReportSettings),
}

/// `tally report sla`: a report's settings and the plans that give objectives and credits.
#[derive(Debug, Args)]
pub struct SlaReportSettings {
    /// What every report takes.
    #[command(flatten)]
    pub report: ReportSettings,
    /// Meters and plans.
    #[command(flatten)]
    pub pricing: PricingSettings,
}

/// `tally report usage|sla`.
#[derive(Debug, Args)]
pub struct ReportSettings {
    /// The usage store.
    #[command(flatten)]
    pub store: StoreSettings,
    /// The month to report, YYYY-MM (UTC).
    #[arg(long)]
    pub month: String,
    /// How the report is written.
    #[arg(long, value_enum, default_value = "json")]
    pub format: metering::report::Format,
    /// Only this tenant (default: every tenant with data that month).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Write one file per tenant into this directory (`<report>-<month>-<tenant>.<format>`) instead of
    /// the whole report to standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What pricing reads besides usage: the meters and the plans.
#[derive(Debug, Args)]
pub struct PricingSettings {
    /// YAML file of custom meter definitions (the collector's `meters` file), so their names and
    /// units are known.
    #[arg(long)]
    pub meters: Option<PathBuf>,
    /// YAML file of plans, tax regions, conversion rates and tenants' plan assignments (see
    /// docs/plans.md); invoices need it.
    #[arg(long)]
    pub plans: Option<PathBuf>,
}

impl PricingSettings {
    /// The catalog: the built-in meters plus the meters file's.
    pub fn catalog(&self) -> Result<Catalog, DefinitionError> {
        Ok(match &self.meters {
            Some(path) => Catalog::with_custom(&definition::load(path)?),
            None => Catalog::builtin(),
        })
    }

    /// The plans file checked against `catalog`, if one is configured.
    pub fn price_book(&self, catalog: &Catalog) -> Result<Option<PriceBook>, PlanError> {
        self.plans.as_deref().map(|path| plan_file::load(path, catalog)).transpose()
    }
}

/// How `tally invoice` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InvoiceFormat {
    /// The billing API's JSON.
    Json,
    /// A readable layout of the same figures.
    Text,
}

/// `tally invoice`.
#[derive(Debug, Args)]
pub struct InvoiceSettings {
    /// The usage store.
    #[command(flatten)]
    pub store: StoreSettings,
    /// Meters and plans.
    #[command(flatten)]
    pub pricing: PricingSettings,
    /// The tenant to invoice.
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    pub tenant: Option<String>,
    /// Every tenant of the plans file with a plan that month, priced from shared reads (as
    /// `GET /v1/invoices/{month}`).
    #[arg(long)]
    pub all: bool,
    /// The month to invoice, YYYY-MM (UTC).
    #[arg(long)]
    pub month: String,
    /// How the invoice is printed.
    #[arg(long, value_enum, default_value = "json")]
    pub format: InvoiceFormat,
}

/// `tally migrate`.
#[derive(Debug, Args)]
pub struct MigrateSettings {
    /// The usage store.
    #[command(flatten)]
    pub store: StoreSettings,
    /// With --clickhouse-cluster: one server of each shard, in shard order, for the few
    /// statements that run per shard (repeatable; comma-separated in the env var). Default: each
    /// shard's first replica in system.clusters, reached at --clickhouse-url's port.
    #[arg(long, value_delimiter = ',', requires = "clickhouse_cluster")]
    pub clickhouse_shard_url: Vec<String>,
}

/// `tally serve`.
#[derive(Debug, Args)]
pub struct ServeSettings {
    /// The usage store.
    #[command(flatten)]
    pub store: StoreSettings,
    /// Address the billing API listens on.
    #[arg(long, default_value = "0.0.0.0:8088")]
    pub listen: SocketAddr,
    /// A key that may read every tenant's usage and invoices (repeatable; comma-separated in the
    /// env var).
    #[arg(long, value_delimiter = ',')]
    pub billing_key: Vec<String>,
    /// A key that may read only its tenant's usage and invoices: TENANT=KEY, or
    /// TENANT=sha256:<hex SHA-256 of the key> to keep the key itself out of files (repeatable;
    /// comma-separated in the env var).
    #[arg(long, value_delimiter = ',')]
    pub tenant_key: Vec<String>,
    /// Meters and plans.
    #[command(flatten)]
    pub pricing: PricingSettings,
    /// What one read may cost.
    #[command(flatten)]
    pub limits: crate::api::limits::ReadLimits,
    /// Verify every seal again every this many seconds in the background, storing each
    /// verification (GET /v1/periods serves the latest); 0 verifies only on request
    #[arg(long, default_value_t = 3600)]
    pub verify_every_secs: u64,
}
