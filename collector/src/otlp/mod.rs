//! The OTLP receiver, written once for the collector and the agent: HTTP
//! (`/v1/traces|metrics|logs`, protobuf and JSON, gzip) and gRPC (unary Export
//! over h2c, gzip), with the statuses the OTLP specification names, handing
//! decoded requests to a [`Consumer`].

pub mod consumer;
pub mod decode;
pub mod grpc;
pub mod gzip;
pub mod http;
pub mod status;

pub use consumer::{Consumer, Delivery, Outcome};
pub use decode::{decode, DecodeError, Encoding, Payload, Signal};

/// Default limit of a request body, before and after decompression (the spec recommends 64 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 << 20;
