//! `google.rpc.Status` (the body of every OTLP/HTTP error, gRPC's status details) and RetryInfo.

use prost::Message;

/// `google.rpc.Status` (code is a gRPC status code).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// The gRPC code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// An English message.
    #[prost(string, tag = "2")]
    pub message: String,
}

impl RpcStatus {
    /// A status carrying a `google.rpc.RetryInfo` detail.
    pub fn with_retry_info(code: i32, message: &str, info: &RetryInfo) -> RpcStatusWithDetails {
        RpcStatusWithDetails {
            code,
            message: message.to_owned(),
            details: vec![Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: info.encode_to_vec(),
            }],
        }
    }
}

/// `google.rpc.Status` with its `details` (for `grpc-status-details-bin`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatusWithDetails {
    /// The gRPC code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// An English message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// The type's URL.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`: when the client should retry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    /// The delay.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

impl RetryInfo {
    /// Retry after `d`.
    pub fn after(d: std::time::Duration) -> Self {
        Self { retry_delay: Some(ProtoDuration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }) }
    }
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// gRPC status codes used by the receivers.
pub mod code {
    /// INVALID_ARGUMENT
    pub const INVALID_ARGUMENT: i32 = 3;
    /// PERMISSION_DENIED
    pub const PERMISSION_DENIED: i32 = 7;
    /// RESOURCE_EXHAUSTED
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// UNIMPLEMENTED
    pub const UNIMPLEMENTED: i32 = 12;
    /// INTERNAL
    pub const INTERNAL: i32 = 13;
    /// UNAVAILABLE
    pub const UNAVAILABLE: i32 = 14;
    /// UNAUTHENTICATED
    pub const UNAUTHENTICATED: i32 = 16;
}
