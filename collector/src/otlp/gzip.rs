//! Request bodies compressed with gzip, inflated with a hard bound so a small
//! "gzip bomb" cannot be expanded into memory.

use std::io::Read;

use flate2::read::MultiGzDecoder;

/// Why a gzip body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GzipError {
    /// It inflates past the limit.
    #[error("the request inflates to more than {limit} bytes (the limit after decompression)")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// It is not a valid gzip stream.
    #[error("the request body is not a valid gzip stream: {0}")]
    Corrupt(String),
}

/// Inflates `body`, failing as soon as more than `limit` bytes come out.
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, GzipError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    // One byte over the limit is enough to know it is too large, and no more is read.
    let mut reader = MultiGzDecoder::new(body).take(limit as u64 + 1);
    reader.read_to_end(&mut out).map_err(|e| GzipError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(GzipError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_within_the_limit() {
        assert_eq!(gunzip(&gz(b"hello"), 5).unwrap(), b"hello");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = gz(&vec![0u8; 50 << 20]);
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        assert_eq!(gunzip(&bomb, 1 << 20), Err(GzipError::TooLarge { limit: 1 << 20 }));
    }

    #[test]
    fn garbage_is_corrupt() {
        assert!(matches!(gunzip(b"not gzip at all", 100), Err(GzipError::Corrupt(_))));
        let mut truncated = gz(b"hello world, hello world");
        truncated.truncate(truncated.len() - 6);
        assert!(matches!(gunzip(&truncated, 100), Err(GzipError::Corrupt(_))));
    }
}
