//! Compressed request bodies (gzip, zstd), inflated with a hard bound so a
//! small "bomb" cannot be expanded into memory.

use std::io::Read;

use flate2::read::MultiGzDecoder;

/// A compression the receivers take: gzip, which the OTLP spec requires, and
/// zstd, which the OpenTelemetry Collector also takes and which costs a sender
/// (the agent) a fraction of gzip's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `gzip`.
    Gzip,
    /// `zstd`.
    Zstd,
}

impl Compression {
    /// The compression a `grpc-encoding` or `Content-Encoding` value names;
    /// `None` for an encoding we do not take (identity is not a compression).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gzip" => Some(Self::Gzip),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// What the receivers list in `grpc-accept-encoding` and in error messages.
pub const ACCEPTED: &str = "gzip,zstd,identity";

/// Why a compressed body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit.
    #[error("the request inflates to more than {limit} bytes (the limit after decompression)")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// It is not a valid stream of its compression.
    #[error("the request body is not a valid {0} stream: {1}")]
    Corrupt(&'static str, String),
}

/// Inflates `body`, failing as soon as more than `limit` bytes come out.
pub fn inflate(compression: Compression, body: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let corrupt = |e: std::io::Error| InflateError::Corrupt(compression.name(), e.to_string());
    match compression {
        Compression::Gzip => bounded(MultiGzDecoder::new(body), body.len(), limit).map_err(corrupt)?,
        Compression::Zstd => {
            bounded(zstd::stream::read::Decoder::with_buffer(body).map_err(corrupt)?, body.len(), limit)
                .map_err(corrupt)?
        }
    }
    .ok_or(InflateError::TooLarge { limit })
}

/// Everything `reader` yields, or `None` past `limit` bytes.
fn bounded(reader: impl Read, compressed_len: usize, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(compressed_len.saturating_mul(4).min(limit));
    // One byte over the limit is enough to know it is too large, and no more is read.
    reader.take(limit as u64 + 1).read_to_end(&mut out)?;
    Ok((out.len() <= limit).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zst(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    #[test]
    fn inflates_within_the_limit() {
        assert_eq!(inflate(Compression::Gzip, &gz(b"hello"), 5).unwrap(), b"hello");
        assert_eq!(inflate(Compression::Zstd, &zst(b"hello"), 5).unwrap(), b"hello");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let data = vec![0u8; 50 << 20];
        for (compression, bomb) in [(Compression::Gzip, gz(&data)), (Compression::Zstd, zst(&data))] {
            assert!(bomb.len() < 100_000, "{compression:?}: {}", bomb.len());
            assert_eq!(inflate(compression, &bomb, 1 << 20), Err(InflateError::TooLarge { limit: 1 << 20 }));
        }
    }

    #[test]
    fn garbage_and_truncation_are_corrupt() {
        for (compression, encode) in [(Compression::Gzip, gz as fn(&[u8]) -> Vec<u8>), (Compression::Zstd, zst)] {
            let e = inflate(compression, b"not compressed at all", 100).unwrap_err();
            assert!(matches!(e, InflateError::Corrupt(name, _) if name == compression.name()), "{e}");
            let mut truncated = encode(b"hello world, hello world");
            truncated.truncate(truncated.len() - 6);
            assert!(matches!(inflate(compression, &truncated, 100), Err(InflateError::Corrupt(..))), "{compression:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for c in [Compression::Gzip, Compression::Zstd] {
            assert_eq!(Compression::from_name(c.name()), Some(c));
        }
        assert_eq!(Compression::from_name("br"), None);
        assert_eq!(Compression::from_name("identity"), None);
    }
}
