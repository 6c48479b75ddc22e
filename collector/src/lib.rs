//! tally-collector: OTLP in, per-tenant usage out to ClickHouse.

pub mod kernel_budget;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod settings;
pub mod sink;
