//! tally-collector: OTLP in, per-tenant usage out to ClickHouse.

pub mod otlp;
pub mod settings;
