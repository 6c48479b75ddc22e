//! Bearer keys. Only SHA-256 digests of keys are held, and a presented key is
//! compared with every digest in constant time, so neither memory dumps nor
//! timing reveal a key.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// What a key may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A billing system: every tenant.
    Billing,
}

/// The keys `tally serve` accepts.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    billing: Vec<[u8; 32]>,
}

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

impl KeyRing {
    /// A ring of billing keys, given in clear (flags, env) and hashed at once.
    pub fn with_billing_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        Self { billing: keys.into_iter().map(digest).collect() }
    }

    /// Whether no key at all is configured.
    pub fn is_empty(&self) -> bool {
        self.billing.is_empty()
    }

    /// The principal of a request's `Authorization: Bearer <key>` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if !headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::unauthenticated("missing Authorization header; send `Authorization: Bearer <key>`"));
        }
        let key = bearer(headers).ok_or_else(|| ApiError::unauthenticated("Authorization must be `Bearer <key>`"))?;
        let presented = digest(key);
        // Fold over every digest so the time taken does not depend on which one matched.
        let matched = self.billing.iter().fold(subtle::Choice::from(0), |acc, d| acc | d.ct_eq(&presented));
        if bool::from(matched) {
            Ok(Principal::Billing)
        } else {
            Err(ApiError::unauthenticated("unknown key"))
        }
    }
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
    fn keys() {
        let ring = KeyRing::with_billing_keys(["k1", "k2"]);
        assert_eq!(ring.authenticate(&headers("Bearer k2")), Ok(Principal::Billing));
        assert_eq!(ring.authenticate(&headers("bearer  k1 ")), Ok(Principal::Billing));
        assert_eq!(bearer(&headers("BEARER k1")), Some("k1"));
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(ring.authenticate(&headers("Bearer k3")).unwrap_err().message, "unknown key");
        assert_eq!(ring.authenticate(&headers("Basic azE=")).unwrap_err().code, "unauthenticated");
        assert_eq!(ring.authenticate(&HeaderMap::new()).unwrap_err().status, 401);
        assert!(KeyRing::default().authenticate(&headers("Bearer k1")).is_err());
    }
}
