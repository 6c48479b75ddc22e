//! Tally's usage domain.
pub mod settings;
