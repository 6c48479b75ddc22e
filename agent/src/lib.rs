//! tally-agent: OTLP from the host's apps, forwarded through a disk WAL to collectors.
//!
//! Apps' requests are received by the collector's OTLP receiver (the same code
//! and statuses), admitted by the collectors' own rules ([`admission`]), written
//! to a WAL ([`intake`]), cut into batches with a stable identity ([`batches`])
//! and shipped to collectors ([`ship`], [`forward`]); a segment leaves the WAL
//! only once a collector acknowledged all of it. The host's kernel usage per
//! tenant comes from the eBPF probes ([`kernel`]) and travels in the agent's
//! usage reports ([`report`]).

pub mod admission;
pub mod batches;
pub mod forward;
pub mod identity;
pub mod intake;
pub mod kernel;
pub mod ledger;
pub mod metrics;
pub mod record;
pub mod report;
pub mod settings;
pub mod ship;
