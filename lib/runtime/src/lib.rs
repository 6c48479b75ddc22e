//! What every Tally binary runs on, whatever it does: layered settings (one name per setting as a
//! flag, an environment variable and a file key), logging, the admin server (`/healthz`,
//! `/readyz`, `/metrics`) with graceful shutdown, and bearer keys.

pub mod auth;
pub mod serve;
pub mod settings;
pub mod telemetry;
pub mod yaml_line;
