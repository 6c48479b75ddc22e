//! What an OTLP request costs, as usage records: the built-in meters per tenant × service
//! ([`builtin`]), the operator's custom meters ([`custom`]), the SLA aggregates of request spans
//! ([`sla`]) and the usage agents report about themselves ([`reported`]).
//!
//! Written once over the OTLP view's traits ([`otlp::view`]), so protobuf read in place and prost
//! types (OTLP/JSON, the agent's edited requests) are metered by the same code; the agent and the
//! collector share it.

pub mod builtin;
pub mod custom;
pub mod reported;
pub mod sla;
#[cfg(test)]
mod view_tests;

pub use builtin::{
    attribute, measure, measure_request, measure_with, truncate, Measured, Tenancy, TENANT_ATTRIBUTE, UNKNOWN_TENANT,
};
