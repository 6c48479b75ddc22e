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

use metering::record::UsageRecord;
use metering::sla::SlaRecord;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use otlp::view::Attributes;

pub use builtin::{measure, measure_request, measure_with};

/// The tenant of data whose sender and resource name none.
pub const UNKNOWN_TENANT: &str = "unknown";
/// The resource attribute naming the tenant.
pub const TENANT_ATTRIBUTE: &str = "tenant.id";

/// The tenant a resource names for a sender trusted to name tenants: its `tenant.id` (the last
/// one when it repeats), `unknown` when it names none, refused when the id is malformed. The one
/// tenant rule: the agent acknowledges and batches by it, the collector meters by it.
pub fn resource_tenant(claimed: Option<&str>) -> Result<&str, metering::record::TenantError> {
    match claimed {
        None => Ok(UNKNOWN_TENANT),
        Some(c) => metering::record::validate_tenant(c).map(|()| c),
    }
}

/// Who may name the tenant of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenancy {
    /// A tenant key: everything is this tenant's, whatever the data claims.
    Pinned(String),
    /// A trusted agent or anonymous mode: the resource's `tenant.id` decides.
    FromResource,
}

/// What a request costs, as [`measure`] and the custom meters found it.
#[derive(Debug, Default, PartialEq)]
pub struct Measured {
    /// Usage records, one per tenant × service × meter.
    pub records: Vec<UsageRecord>,
    /// Items refused (a malformed tenant id, a value a custom meter cannot take), for partial success.
    pub rejected: u64,
    /// Why, when `rejected` > 0 (the last reason).
    pub reason: String,
    /// Of `rejected`, the items refused whole: their resource names a malformed tenant, so no
    /// meter counts them. The rest were refused by a custom meter alone; the other meters count them.
    pub refused_whole: u64,
    /// Items whose resource claimed another tenant than the key's.
    pub mismatched: u64,
    /// SLA records (see [`crate::sla`]), per resource and route; the encoder merges equal keys.
    pub sla: Vec<SlaRecord>,
}

/// The string value of `key` among `attrs`; the last one wins when a key repeats.
pub fn attribute<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.string(key)
}

/// `s` cut to at most `max` bytes on a character boundary: an overlong service
/// name must not cost the tenant's usage, only the name's tail.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
