//! The `tally` command line, here rather than in the binary so tests and the
//! README's configuration reference see the same definition.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::store::StoreSettings;
use crate::telemetry::LogFormat;

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
    Migrate(StoreSettings),
    /// Serve the billing API.
    Serve(ServeSettings),
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
    /// A key that may read every tenant's usage (repeatable; comma-separated in the env var).
    #[arg(long, value_delimiter = ',')]
    pub billing_key: Vec<String>,
    /// YAML file of custom meter definitions (the collector's `meters` file), so the API knows
    /// their names and units.
    #[arg(long)]
    pub meters: Option<PathBuf>,
}
