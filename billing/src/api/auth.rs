//! Bearer keys. Only SHA-256 digests of keys are held, and a presented key is
//! compared with every digest in constant time, so neither memory dumps nor
//! timing reveal a key.
//!
//! A billing key reads every tenant; a tenant key reads only its own tenant
//! (`--tenant-key TENANT=KEY`, or `TENANT=sha256:<hex digest>` so the key itself
//! never appears in a config file).

use axum::http::{header, HeaderMap};
use runtime::auth::{bearer, digest, parse_digest};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// What a key may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A billing system: every tenant.
    Billing,
    /// A tenant: its own usage and invoices only.
    Tenant(String),
}

impl Principal {
    /// Whether this principal may read `tenant`'s data.
    pub fn may_read(&self, tenant: &str) -> bool {
        match self {
            Principal::Billing => true,
            Principal::Tenant(own) => own == tenant,
        }
    }
}

/// A `--tenant-key` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantKeyError {
    /// Not `TENANT=KEY`.
    #[error("--tenant-key {0:?}: expected TENANT=KEY or TENANT=sha256:<64 hex digits>")]
    Format(String),
    /// The tenant id is malformed.
    #[error("--tenant-key for {tenant:?}: {reason}")]
    Tenant {
        /// As given.
        tenant: String,
        /// Why.
        reason: String,
    },
    /// The same key is given twice, or is also a billing key.
    #[error("--tenant-key for {0:?}: this key is already a billing key or another tenant's key")]
    Duplicate(String),
}

/// The keys `tally serve` accepts.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    billing: Vec<[u8; 32]>,
    tenants: Vec<([u8; 32], String)>,
}

impl KeyRing {
    /// A ring of billing keys, given in clear (flags, env) and hashed at once.
    pub fn with_billing_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        Self { billing: keys.into_iter().map(digest).collect(), tenants: Vec::new() }
    }

    /// The same ring with a tenant key, given as `TENANT=KEY` (hashed at once) or
    /// `TENANT=sha256:<hex digest of the key>`.
    ///
    /// ```
    /// use billing::api::auth::{KeyRing, Principal};
    /// let ring = KeyRing::with_billing_keys(["b"]).with_tenant_key("acme=k1").unwrap();
    /// let mut headers = axum::http::HeaderMap::new();
    /// headers.insert("authorization", "Bearer k1".parse().unwrap());
    /// assert_eq!(ring.authenticate(&headers), Ok(Principal::Tenant("acme".into())));
    /// assert!(ring.with_tenant_key("globex=b").is_err()); // a billing key already
    /// ```
    pub fn with_tenant_key(mut self, spec: &str) -> Result<Self, TenantKeyError> {
        let (tenant, key) = spec.split_once('=').ok_or_else(|| TenantKeyError::Format(redact(spec)))?;
        let (tenant, key) = (tenant.trim(), key.trim());
        if key.is_empty() {
            return Err(TenantKeyError::Format(redact(spec)));
        }
        metering::record::validate_tenant(tenant)
            .map_err(|e| TenantKeyError::Tenant { tenant: tenant.to_owned(), reason: e.to_string() })?;
        let d = match key.strip_prefix("sha256:") {
            Some(hex) => parse_digest(hex).ok_or_else(|| TenantKeyError::Format(format!("{tenant}=sha256:…")))?,
            None => digest(key),
        };
        if self.billing.contains(&d) || self.tenants.iter().any(|(t, _)| *t == d) {
            return Err(TenantKeyError::Duplicate(tenant.to_owned()));
        }
        self.tenants.push((d, tenant.to_owned()));
        Ok(self)
    }

    /// Whether no key at all is configured.
    pub fn is_empty(&self) -> bool {
        self.billing.is_empty() && self.tenants.is_empty()
    }

    /// The principal of a request's `Authorization: Bearer <key>` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if !headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::unauthenticated("missing Authorization header; send `Authorization: Bearer <key>`"));
        }
        let key = bearer(headers).ok_or_else(|| ApiError::unauthenticated("Authorization must be `Bearer <key>`"))?;
        let presented = digest(key);
        // Fold over every digest so the time taken does not depend on which one matched.
        let billing = self.billing.iter().fold(subtle::Choice::from(0), |acc, d| acc | d.ct_eq(&presented));
        let mut tenant = None;
        for (d, t) in &self.tenants {
            if bool::from(d.ct_eq(&presented)) {
                tenant = Some(t);
            }
        }
        match (bool::from(billing), tenant) {
            (true, _) => Ok(Principal::Billing),
            (false, Some(t)) => Ok(Principal::Tenant(t.clone())),
            (false, None) => Err(ApiError::unauthenticated("unknown key")),
        }
    }
}

/// `TENANT=…` with the key left out, for messages.
fn redact(spec: &str) -> String {
    match spec.split_once('=') {
        Some((tenant, _)) => format!("{tenant}=…"),
        None => "…".to_owned(),
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
        assert_eq!(ring.authenticate(&headers("Bearer k3")).unwrap_err().message, "unknown key");
        assert_eq!(ring.authenticate(&headers("Basic azE=")).unwrap_err().code, "unauthenticated");
        assert_eq!(ring.authenticate(&HeaderMap::new()).unwrap_err().status, 401);
        assert!(KeyRing::default().authenticate(&headers("Bearer k1")).is_err());
    }

    #[test]
    fn tenant_keys_pin_their_tenant() {
        // sha256("test") = 9f86…0a08.
        let ring = KeyRing::with_billing_keys(["b1"])
            .with_tenant_key("acme=a-secret")
            .unwrap()
            .with_tenant_key("globex=sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
            .unwrap();
        assert_eq!(ring.authenticate(&headers("Bearer a-secret")), Ok(Principal::Tenant("acme".into())));
        assert_eq!(ring.authenticate(&headers("Bearer test")), Ok(Principal::Tenant("globex".into())));
        assert_eq!(ring.authenticate(&headers("Bearer b1")), Ok(Principal::Billing));
        assert_eq!(ring.authenticate(&headers("Bearer acme")).unwrap_err().code, "unauthenticated");
        assert!(Principal::Tenant("acme".into()).may_read("acme"));
        assert!(!Principal::Tenant("acme".into()).may_read("globex"));
        assert!(Principal::Billing.may_read("globex"));
        // Refusals never echo the key.
        assert_eq!(
            ring.clone().with_tenant_key("no-equals-sign").unwrap_err().to_string(),
            "--tenant-key \"…\": expected TENANT=KEY or TENANT=sha256:<64 hex digits>"
        );
        assert_eq!(ring.clone().with_tenant_key("acme=").unwrap_err(), TenantKeyError::Format("acme=…".into()));
        assert_eq!(
            ring.clone().with_tenant_key("acme=sha256:abc").unwrap_err(),
            TenantKeyError::Format("acme=sha256:…".into())
        );
        assert_eq!(
            ring.clone().with_tenant_key("initech=a-secret").unwrap_err(),
            TenantKeyError::Duplicate("initech".into())
        );
        assert_eq!(
            ring.clone().with_tenant_key("initech=b1").unwrap_err(),
            TenantKeyError::Duplicate("initech".into())
        );
        assert!(matches!(ring.with_tenant_key("a b=k").unwrap_err(), TenantKeyError::Tenant { .. }));
    }
}
