//! The billing API (`tally serve`) and the `tally` command line: what billing systems, tenants
//! and operators use on top of the usage domain (`metering`).

// The OpenAPI document is a few large `json!` literals.
#![recursion_limit = "256"]

pub mod api;
pub mod cli;
pub mod settler;
