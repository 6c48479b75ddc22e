//! Equivalence of the view and prost, and malformed input.
