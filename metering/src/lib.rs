//! Tally's usage domain: the meters, the usage record, the ClickHouse usage
//! store (schema, migrations, writer, roll-ups), pricing and invoices, reports,
//! sealed months and exports. The billing API and the `tally` command line on top
//! of it are the `tally-billing` crate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use metering::{clickhouse::ClickHouse, meter::Catalog, record::*, store::{migrate, writer::UsageWriter, Store}};
//! let ch = ClickHouse::new("http://127.0.0.1:8123", std::time::Duration::from_secs(10))?;
//! migrate::migrate(&Store::new(ch.clone(), "tally")).await?;
//! let mut writer = UsageWriter::new(ch, "tally", Catalog::builtin())?;
//! let now = time::OffsetDateTime::now_utc();
//! writer.push(&UsageBatch { source_id: "demo".into(), seq: 1, records: vec![
//!     UsageRecord::new("acme", "spans", now, 512.into()).with_service("checkout"),
//! ]})?;
//! writer.flush().await?;
//! # Ok(()) }
//! ```

pub mod clickhouse;
pub mod export;
pub mod limits;
pub mod meter;
pub mod pricing;
pub mod reconcile;
pub mod record;
pub mod report;
pub mod seal;
pub mod settle;
pub mod signal;
pub mod sla;
pub mod store;
