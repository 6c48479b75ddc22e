//! tally-agent: OTLP from the host's apps, forwarded through a disk WAL.

pub mod settings;
