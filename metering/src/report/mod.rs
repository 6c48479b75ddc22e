//! Monthly reports a customer reads: usage (per tenant and meter, a daily series
//! and the month's total) and SLA (availability, latency percentiles, the SLO, the
//! error budget, the worst hours with exemplar traces, credits owed), as JSON, CSV
//! or a self-contained HTML page with inline SVG charts.
//!
//! Building a report is pure ([`usage::build`], [`sla::build`]) over the same
//! roll-ups the billing API serves; [`read`] fetches them from ClickHouse, and
//! credits come from pricing's invoice, so a report and an invoice never disagree.
//!
//! ```
//! use metering::report::Format;
//! assert_eq!(Format::parse("html"), Some(Format::Html));
//! assert_eq!(Format::Csv.content_type(), "text/csv; charset=utf-8");
//! ```

pub mod csv;
pub mod html;
pub mod read;
pub mod sla;
mod svg;
pub mod usage;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serializer;
use time::Date;

pub use read::{read_sla_report, read_usage_report, ReportError};

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Machine-readable, decimals as exact strings.
    Json,
    /// One row per figure, for spreadsheets.
    Csv,
    /// A page with charts, no external assets.
    Html,
}

impl Format {
    /// Parses `json`, `csv` or `html`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "json" => Self::Json,
            "csv" => Self::Csv,
            "html" => Self::Html,
            _ => return None,
        })
    }

    /// The file extension (also the name `parse` takes).
    pub const fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Html => "html",
        }
    }

    /// The HTTP `Content-Type`.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Html => "text/html; charset=utf-8",
        }
    }
}

/// Rounds half away from zero to `dp` decimals, for figures shown (never for money
/// or for comparisons, which stay exact).
pub(crate) fn shown(value: Decimal, dp: u32) -> Decimal {
    value.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero).normalize()
}

/// Nanoseconds as milliseconds rounded to 3 decimals (a microsecond).
pub(crate) fn ns_to_ms(ns: u64) -> Decimal {
    shown(Decimal::from_i128_with_scale(i128::from(ns), 6), 3)
}

pub(crate) fn decimal_text<S: Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub(crate) fn opt_decimal_text<S: Serializer>(v: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

pub(crate) fn date_text<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::pricing::ymd(*d))
}
