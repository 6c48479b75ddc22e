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
    /// The receiver's budget of bytes in flight could not give its output room to grow: a
    /// retryable refusal, unlike [`InflateError::TooLarge`].
    #[error("the receiver has no room for this request now ({held} bytes inflated so far); retry later")]
    OverBudget {
        /// What it held (its inflated bytes, capacity included) when refused.
        held: usize,
    },
    /// It is not a valid stream of its compression.
    #[error("the request body is not a valid {0} stream: {1}")]
    Corrupt(&'static str, String),
}

/// Inflates `body`, failing as soon as more than `limit` bytes come out.
pub fn inflate(compression: Compression, body: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    inflate_within(compression, body, limit, &mut |_| true)
}

/// Inflates `body` like [`inflate`], asking `room` for every byte of capacity the output
/// grows by before it grows; a `false` stops with [`InflateError::OverBudget`].
pub(crate) fn inflate_within(
    compression: Compression,
    body: &[u8],
    limit: usize,
    room: &mut dyn FnMut(usize) -> bool,
) -> Result<Vec<u8>, InflateError> {
    let corrupt = |e: std::io::Error| InflateError::Corrupt(compression.name(), e.to_string());
    match compression {
        Compression::Gzip => bounded(MultiGzDecoder::new(body), body.len(), limit, room).map_err(corrupt)?,
        Compression::Zstd => {
            bounded(zstd::stream::read::Decoder::with_buffer(body).map_err(corrupt)?, body.len(), limit, room)
                .map_err(corrupt)?
        }
    }
}

/// Everything `reader` yields, [`InflateError::TooLarge`] past `limit` bytes, or
/// [`InflateError::OverBudget`] when `room` refuses the output's next growth.
fn bounded(
    reader: impl Read,
    compressed_len: usize,
    limit: usize,
    room: &mut dyn FnMut(usize) -> bool,
) -> std::io::Result<Result<Vec<u8>, InflateError>> {
    // One byte over the limit is enough to know it is too large, and no more is read.
    let most = limit.saturating_add(1);
    let mut reader = reader.take(most as u64);
    let mut out: Vec<u8> = Vec::new();
    // Capacity grows as read_to_end would (a first guess, then doubling), but each growth is
    // asked for first: the budget counts the memory held, not just the bytes written.
    let mut next = compressed_len.saturating_mul(4).max(8 << 10).min(most);
    loop {
        if out.len() == out.capacity() {
            let more = next - out.capacity();
            if more == 0 {
                break;
            }
            if !room(more) {
                return Ok(Err(InflateError::OverBudget { held: out.capacity() }));
            }
            out.reserve_exact(more);
            next = out.capacity().saturating_mul(2).min(most);
        }
        let start = out.len();
        out.resize(out.capacity(), 0);
        match reader.read(&mut out[start..]) {
            Ok(0) => {
                out.truncate(start);
                break;
            }
            Ok(n) => out.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(start),
            Err(e) => return Err(e),
        }
    }
    Ok(if out.len() <= limit { Ok(out) } else { Err(InflateError::TooLarge { limit }) })
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
    fn growth_is_asked_for_and_a_refusal_stops_it() {
        let data = vec![7u8; 1 << 20];
        let mut asked = 0;
        let out = inflate_within(Compression::Gzip, &gz(&data), 2 << 20, &mut |n| {
            asked += n;
            true
        })
        .unwrap();
        assert_eq!(out, data);
        assert_eq!(asked, out.capacity(), "every byte of capacity was asked for");
        let mut allowed = 256 << 10;
        let refused = inflate_within(Compression::Zstd, &zst(&data), 2 << 20, &mut |n| {
            let ok = n <= allowed;
            allowed = allowed.saturating_sub(n);
            ok
        });
        assert!(matches!(refused, Err(InflateError::OverBudget { held }) if held <= 256 << 10), "{refused:?}");
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
