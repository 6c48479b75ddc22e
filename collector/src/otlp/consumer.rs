//! Where decoded requests go, and what the consumer says back.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::Payload;

/// A decoded request and what the receiver knows of its sender.
#[derive(Debug)]
pub struct Delivery {
    /// The request.
    pub payload: Payload,
    /// Its encoded size (after decompression), for byte meters.
    pub encoded_len: usize,
    /// The bearer key the sender presented, if any.
    pub key: Option<String>,
    /// The sender's batch identity, if it gave one.
    pub batch: Option<super::batch::BatchId>,
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

/// Takes decoded requests. Implemented by the collector's pipeline and the agent's WAL.
pub trait Consumer: Send + Sync + 'static {
    /// Handles one request; the returned outcome is what the sender is told.
    fn consume(&self, delivery: Delivery) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>>;
}
