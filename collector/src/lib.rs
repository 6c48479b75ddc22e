//! tally-collector: OTLP in, per-tenant usage out to ClickHouse.

pub mod settings;
