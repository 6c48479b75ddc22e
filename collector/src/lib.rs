//! tally-collector: OTLP in, per-tenant usage out to ClickHouse.

pub mod custom;
pub mod keys;
pub mod limits;
pub mod measure;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod reports;
pub mod settings;
pub mod sink;
pub mod sla;
pub mod wal;
