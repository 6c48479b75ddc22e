//! The batch identity a sender (the agent) puts on every export, in the
//! `tally-batch` header / gRPC metadata: `<source-id> <sequence> <unix-millis>`.
//!
//! The source id names the sender and its boot (`agent:<id>:<boot>`), the
//! sequence numbers its batches, and the time is when the sender accepted the
//! data. A resend carries the same identity and time, so it reproduces the same
//! usage rows and is stored once — whichever collector takes it, whenever.

use axum::http::HeaderMap;
use time::OffsetDateTime;

/// The header (gRPC metadata key) carrying the identity.
pub const HEADER: &str = "tally-batch";

/// How far in the future a batch time may be (clock skew) before it is refused.
pub const MAX_FUTURE: time::Duration = time::Duration::minutes(5);

/// A sender's batch identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchId {
    /// The sender and its boot.
    pub source: String,
    /// The batch's number within the source.
    pub seq: u64,
    /// When the sender accepted the data.
    pub time: OffsetDateTime,
}

/// Reads the identity from `headers`; `Ok(None)` when there is none.
pub fn from_headers(headers: &HeaderMap, now: OffsetDateTime) -> Result<Option<BatchId>, String> {
    let Some(value) = headers.get(HEADER) else { return Ok(None) };
    let text = value.to_str().map_err(|_| format!("{HEADER} is not ASCII"))?;
    parse(text, now).map(Some)
}

/// Parses `<source-id> <sequence> <unix-millis>`.
///
/// ```
/// use otlp::batch::parse;
/// let now = time::OffsetDateTime::now_utc();
/// let id = parse("agent:a1:b7 42 1700000000000", now).unwrap();
/// assert_eq!((id.source.as_str(), id.seq, id.time.unix_timestamp()), ("agent:a1:b7", 42, 1_700_000_000));
/// assert!(parse("agent 1", now).is_err());
/// ```
pub fn parse(text: &str, now: OffsetDateTime) -> Result<BatchId, String> {
    let bad = |why: &str| format!("{HEADER} {text:?}: {why}; expected `<source-id> <sequence> <unix-millis>`");
    let mut parts = text.split_ascii_whitespace();
    let (Some(source), Some(seq), Some(millis), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad("wrong number of fields"));
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if source.len() > 128 || !source.chars().all(valid) {
        return Err(bad("the source id must be 1-128 of A-Z a-z 0-9 . _ : -"));
    }
    let seq = seq.parse().map_err(|_| bad("the sequence is not a whole number"))?;
    let millis: i64 = millis.parse().map_err(|_| bad("the time is not whole milliseconds"))?;
    let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map_err(|_| bad("the time is out of range"))?;
    if time > now + MAX_FUTURE {
        return Err(bad("the time is more than 5 minutes in the future"));
    }
    if time.unix_timestamp() < 0 {
        return Err(bad("the time is before 1970"));
    }
    Ok(BatchId { source: source.to_owned(), seq, time })
}
