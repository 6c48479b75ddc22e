//! Layered settings.
