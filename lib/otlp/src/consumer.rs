//! Where decoded requests go, and what the consumer says back.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::view::Protobuf;
use super::{DecodeError, Payload, Signal};

/// A request as the receiver hands it over.
#[derive(Debug, Clone)]
pub enum Request {
    /// A protobuf body, framing checked, not decoded: metering reads it in
    /// place (see [`super::view`]), without prost's cost of materializing
    /// every string.
    Protobuf(Protobuf),
    /// Decoded into the prost types (OTLP/JSON).
    Decoded(Payload),
}

impl Request {
    /// The request's signal.
    pub fn signal(&self) -> Signal {
        match self {
            Request::Protobuf(p) => p.signal(),
            Request::Decoded(p) => p.signal(),
        }
    }

    /// Its items: spans, data points (a histogram point counts 1) or log records.
    pub fn items(&self) -> u64 {
        match self {
            Request::Protobuf(p) => p.items(),
            Request::Decoded(p) => p.items(),
        }
    }

    /// The prost types, decoding protobuf. An error is an invalid request,
    /// to be answered [`Outcome::Invalid`].
    pub fn into_payload(self) -> Result<Payload, DecodeError> {
        match self {
            Request::Protobuf(p) => p.decode(),
            Request::Decoded(p) => Ok(p),
        }
    }
}

/// A request and what the receiver knows of its sender.
#[derive(Debug)]
pub struct Delivery {
    /// The request.
    pub request: Request,
    /// Its encoded size (after decompression), for byte meters.
    pub encoded_len: usize,
    /// The bearer key the sender presented, if any.
    pub key: Option<String>,
    /// The sender's batch identity, if it gave one.
    pub batch: Option<super::batch::BatchId>,
}

impl Delivery {
    /// See [`Request::into_payload`].
    pub fn into_payload(self) -> Result<Payload, DecodeError> {
        self.request.into_payload()
    }
}

/// The consumer's verdict, which the receiver turns into the status the spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted, except `rejected` items (partial success when non-zero).
    Accepted {
        /// Items refused for good.
        rejected: u64,
        /// Why, in English, when `rejected` > 0.
        message: String,
    },
    /// The request is malformed (found while reading it); nothing was stored.
    /// INVALID_ARGUMENT / 400: the sender must not retry it.
    Invalid(String),
    /// The sender's key is missing or unknown; nothing was stored.
    Unauthenticated(String),
    /// Over the tenant's rate limit: retry after the given time.
    Throttled {
        /// When to retry.
        retry_after: Duration,
        /// Why.
        message: String,
    },
    /// Cannot take it now (buffer full, backend down): retry after the given time.
    Unavailable {
        /// When to retry.
        retry_after: Duration,
        /// Why.
        message: String,
    },
}

/// What a sender's key lets it assert beyond its items, as the consumer's key check finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grant {
    /// Its `tally-batch` identity and time are honoured (agents' keys). A request that carries
    /// one without this grant is refused: an identity it chose could deduplicate its own usage
    /// and a time it chose could move it into another month.
    pub batch_identity: bool,
}

/// Takes decoded requests. Implemented by the collector's pipeline and the agent's WAL.
pub trait Consumer: Send + Sync + 'static {
    /// Checks the sender's bearer `key` (`None`: no `Authorization` header) and says what it may
    /// assert; `Err` is the message of an UNAUTHENTICATED / 401 answer. The receiver calls it
    /// with the headers alone, before it inflates or decodes anything: an unknown sender costs
    /// a hash, not a parse.
    fn authenticate(&self, key: Option<&str>) -> Result<Grant, String>;

    /// Handles one request; the returned outcome is what the sender is told.
    fn consume(&self, delivery: Delivery) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>>;
}
