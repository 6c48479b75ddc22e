//! Pricing: plans (a YAML file checked at load), money and its rounding rule,
//! tiered prices, SLA credits, and invoices priced from stored usage.
//!
//! Everything but [`store`] is pure: the invoice of a month is a function of the
//! plans file, the month's usage per meter and its availability, so it can be
//! checked by hand.
//!
//! ```
//! use metering::meter::Catalog;
//! use metering::pricing::{invoice::{compute, Inputs, Usage}, plan_file::parse, BillingMonth};
//! use time::macros::date;
//! let yaml = "
//! plans:
//!   basic:
//!     currency: USD
//!     meters:
//!       spans: {allowance: 1000, price: 0.5, per: 1000}
//! regions: {us: {tax_percent: 10}}
//! tenants:
//!   acme: {region: us, plans: [{plan: basic, from: 2026-01-01}]}
//! ";
//! let book = parse(yaml, "plans.yaml".as_ref(), &Catalog::builtin()).unwrap();
//! let mut usage = Usage::new();
//! usage.set("spans", date!(2026-11-01), date!(2026-12-01), 4_500.into());
//! let month = BillingMonth::parse("2026-11").unwrap();
//! let inputs = Inputs { usage: &usage, availability: Default::default(), catalog: &Catalog::builtin() };
//! let invoice = compute(&book, "acme", month, inputs).unwrap();
//! // 3,500 billable spans × 0.5 USD per 1,000 = 1.75; tax 10 % = 0.175 → 0.18.
//! assert_eq!(invoice.lines[0].amount.to_string(), "1.75");
//! assert_eq!((invoice.tax.to_string(), invoice.total.to_string()), ("0.18".into(), "1.93".into()));
//! ```

pub mod credit;
pub mod invoice;
pub mod money;
mod month;
pub mod plan;
pub mod plan_file;
pub mod store;
pub mod text;
pub mod tiers;

#[cfg(test)]
mod tests;

pub(crate) use month::ymd;
pub use month::{BadMonth, BillingMonth};
