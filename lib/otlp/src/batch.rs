//! The batch identity a sender (the agent) puts on every export, in the
//! `tally-batch` header / gRPC metadata: `<source-id> <sequence> <unix-millis>`.
//!
//! The source id names the sender and its boot (`agent:<id>:<boot>`), the
//! sequence numbers its batches, and the time is when the sender accepted the
//! data. A resend carries the same identity and time, so it reproduces the same
//! usage rows and is stored once — whichever collector takes it, whenever.

use std::fmt;
use std::str::FromStr;

use axum::http::HeaderMap;
use time::OffsetDateTime;

/// The header (gRPC metadata key) carrying the identity.
pub const HEADER: &str = "tally-batch";

/// How far in the future a batch time may be (clock skew) before it is refused.
pub const MAX_FUTURE: time::Duration = time::Duration::minutes(5);

/// Longest source id.
pub const MAX_SOURCE_LEN: usize = 128;

/// A sender's batch identity: written by the agent with [`Display`](fmt::Display), read by the
/// receiver with [`parse`].
///
/// ```
/// use otlp::batch::{parse, BatchId};
/// let id = BatchId::agent("a1", 0xb7, 42, 1_700_000_000_000);
/// assert_eq!(id.to_string(), "agent:a1:00000000000000b7 42 1700000000000");
/// assert_eq!(parse(&id.to_string(), time::OffsetDateTime::now_utc()), Ok(id));
/// assert!(parse("agent 1", time::OffsetDateTime::now_utc()).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchId {
    /// The sender and its boot.
    pub source: String,
    /// The batch's number within the source.
    pub seq: u64,
    /// When the sender accepted the data (whole milliseconds).
    pub time: OffsetDateTime,
}

impl BatchId {
    /// Batch `seq` of the agent process `boot` of agent `agent_id`, accepted at `accepted_millis`.
    pub fn agent(agent_id: &str, boot: u64, seq: u64, accepted_millis: u64) -> Self {
        let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(accepted_millis) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Self { source: format!("agent:{agent_id}:{boot:016x}"), seq, time }
    }

    fn millis(&self) -> i128 {
        self.time.unix_timestamp_nanos() / 1_000_000
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.source, self.seq, self.millis())
    }
}

/// `<source-id> <sequence> <unix-millis>`, checked field by field; the time is not checked
/// against a clock (see [`parse`]).
impl FromStr for BatchId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| refusal(text, why);
        let mut parts = text.split_ascii_whitespace();
        let (Some(source), Some(seq), Some(millis), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("wrong number of fields"));
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if source.len() > MAX_SOURCE_LEN || !source.chars().all(valid) {
            return Err(bad("the source id must be 1-128 of A-Z a-z 0-9 . _ : -"));
        }
        let seq = seq.parse().map_err(|_| bad("the sequence is not a whole number"))?;
        let millis: i64 = millis.parse().map_err(|_| bad("the time is not whole milliseconds"))?;
        let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
            .map_err(|_| bad("the time is out of range"))?;
        if time.unix_timestamp() < 0 {
            return Err(bad("the time is before 1970"));
        }
        Ok(BatchId { source: source.to_owned(), seq, time })
    }
}

/// Why `text` is refused as a batch identity, in the answer's words.
fn refusal(text: &str, why: &str) -> String {
    format!("{HEADER} {text:?}: {why}; expected `<source-id> <sequence> <unix-millis>`")
}

/// Reads the identity from `headers`; `Ok(None)` when there is none.
pub fn from_headers(headers: &HeaderMap, now: OffsetDateTime) -> Result<Option<BatchId>, String> {
    let Some(value) = headers.get(HEADER) else { return Ok(None) };
    let text = value.to_str().map_err(|_| format!("{HEADER} is not ASCII"))?;
    parse(text, now).map(Some)
}

/// Parses `<source-id> <sequence> <unix-millis>`, refusing a time more than [`MAX_FUTURE`]
/// after `now`.
pub fn parse(text: &str, now: OffsetDateTime) -> Result<BatchId, String> {
    let id: BatchId = text.parse()?;
    if id.time > now + MAX_FUTURE {
        return Err(refusal(text, "the time is more than 5 minutes in the future"));
    }
    Ok(id)
}
