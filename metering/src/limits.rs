//! The bounds of what the usage store accepts, which the meters file, the records and the
//! encoders all check against.

/// Longest tenant id accepted.
pub const MAX_TENANT_LEN: usize = 128;
/// Longest service, route, dimension key or value accepted, in bytes.
pub const MAX_DIMENSION_LEN: usize = 1024;
/// Values are stored as `Decimal(38, 9)`: nine fractional digits.
pub const VALUE_SCALE: u32 = 9;
