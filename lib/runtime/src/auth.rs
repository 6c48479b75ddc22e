//! Bearer keys as every Tally server reads them: the OTLP receivers (sender keys) and the billing
//! API (billing and tenant keys). Only SHA-256 digests of keys are held, so a config file, a
//! memory dump or a log never holds a key itself.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

/// The key of an `Authorization: Bearer <key>` header, if the request has one.
/// The scheme is matched without regard to case (RFC 9110).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// The SHA-256 digest of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A digest written as 64 hex digits (`sha256sum`'s output), as config files hold them.
pub fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_keys() {
        assert_eq!(bearer(&headers("BEARER k1")), Some("k1"));
        assert_eq!(bearer(&headers("bearer  k1 ")), Some("k1"));
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&headers("Basic azE=")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn digests() {
        // sha256("test") = 9f86…0a08.
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(parse_digest(hex), Some(digest("test")));
        assert_eq!(parse_digest(&hex.to_uppercase()), Some(digest("test")));
        assert_eq!(parse_digest("abc"), None);
        assert_eq!(parse_digest(&hex.replace('9', "g")), None);
    }
}
