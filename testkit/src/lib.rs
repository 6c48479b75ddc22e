//! Test support for Tally integration tests.
//!
//! Two engines, because production runs ClickHouse ≥ 23.8 but the only server
//! packaged for these machines is Debian's 18.16:
//!
//! * [`ClickHouseServer`] runs a private, real `clickhouse-server` (18.16) on
//!   free loopback ports with a throw-away data directory, so tests exercise the
//!   wire protocols and the old dialect, and can kill/restart it for fault tests.
//! * [`Chdb`] runs SQL through chDB (a ClickHouse 26.x engine inside a Python
//!   process), so the same DDL and queries are proven against the modern dialect.
//!
//! * [`ClickHouseCluster`] runs a private cluster of four such servers (two
//!   shards of two replicas) and a ZooKeeper, for replication and `ON CLUSTER` tests.
//!
//! [`loadgen`] drives an OTLP/gRPC endpoint (the collector) with realistic
//! trace exports and counts every answer, for tests and benches.
//!
//! [`service`] runs Tally's own binaries as children of a test, for end-to-end and fault
//! tests; [`collector`], [`agent`] and [`tally`] start each the way the tests need it.
//!
//! [`usage`] is a deterministic usage dataset with its roll-ups computed without the code
//! under test.
//!
//! Both ClickHouse engines fail loudly with install instructions when missing:
//! a test that silently skips proves nothing.

pub mod agent;
pub mod bench;
pub mod chdb;
pub mod chromium;
pub mod clickhouse;
pub mod cluster;
pub mod collector;
pub mod docs;
mod http;
pub mod loadgen;
pub mod sdk;
pub mod service;
pub mod spawn;
pub mod tally;
pub mod usage;

pub use chdb::Chdb;
pub use clickhouse::ClickHouseServer;
pub use cluster::ClickHouseCluster;
