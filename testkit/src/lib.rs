//! Test support for Tally integration tests.
