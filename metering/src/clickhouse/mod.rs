//! Talking to ClickHouse: the HTTP client, safe SQL construction and RowBinary.

pub mod client;
pub mod rowbinary;
pub mod sql;

pub use client::{ClickHouse, ClickHouseError};
pub use sql::Sql;
