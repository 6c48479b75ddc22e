//! `google.rpc.Status`, the body of every OTLP/HTTP error response.

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

/// gRPC status codes used by the receivers.
pub mod code {
    /// INVALID_ARGUMENT
    pub const INVALID_ARGUMENT: i32 = 3;
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
