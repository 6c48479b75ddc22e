//! Sender keys, loaded from a YAML file that holds only their SHA-256 digests.
//!
//! ```yaml
//! keys:
//!   - sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!     tenant: acme        # a tenant key: pins everything it sends to acme
//!   - sha256: d4f0bc5a29de06b510f9aa428f1eedba926012b591fef7a518e776a7c9bd1824
//!                         # no tenant: an agent key, trusted to name tenants
//!   - sha256: 2f2b6bc0b5e1c1ee1d6b2fd0e0b1b9a1b1c1f1b6c1a1e1d1c1b1a1f1e1d1c1b1
//!     tenants: [acme, "team-*"]   # an agent key that may name these tenants only
//!     kernel_usage: false         # and may not report kernel usage (eBPF: CPU, network)
//!   - sha256: 4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b
//!     hosts: 200                  # an agent key shared by 200 hosts: its kernel usage over
//!                                 # time may be 200 hosts' worth (default 1)
//! ```

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use metering::record::validate_tenant;
use serde::Deserialize;

use measure::Tenancy;
use otlp::batch::BatchId;
use otlp::Grant;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    keys: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    sha256: String,
    tenant: Option<String>,
    tenants: Option<Vec<String>>,
    kernel_usage: Option<bool>,
    hosts: Option<NonZeroU32>,
}

/// Which tenants an agent key may name, and whether it may send usage reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Tenant ids, or prefixes ending in `*`; `None`: any tenant.
    tenants: Option<Vec<String>>,
    /// It may report kernel usage (`cpu_seconds`, `net_*_bytes`, `tcp_connections`); an agent's
    /// books (`agent_*`, `dropped_*`) it may report either way.
    pub kernel_usage: bool,
}

impl Scope {
    /// Any tenant, kernel usage included (an unscoped agent key, or anonymous mode).
    pub const ANY: Scope = Scope { tenants: None, kernel_usage: true };

    /// Whether `tenant` is one this key may name.
    pub fn allows(&self, tenant: &str) -> bool {
        self.tenants.as_ref().is_none_or(|patterns| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => tenant.starts_with(prefix),
                None => p == tenant,
            })
        })
    }
}

/// What a key may do: where its tenant comes from, and (an agent key) within which scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// A tenant key's tenant, or tenants named by the resources.
    pub tenancy: Tenancy,
    /// What an agent key may name and report ([`Scope::ANY`] for a tenant key: its tenant is
    /// pinned, and its `tally.usage` scope is ordinary metrics).
    pub scope: Scope,
    /// How many hosts share an agent key: its kernel usage reports may add up to this many
    /// hosts' worth over time (see [`crate::kernel_budget`]). Kept out of [`Scope`], whose
    /// [`Scope::ANY`] lets ordinary requests skip the scope checks.
    pub hosts: NonZeroU32,
}

impl Sender {
    /// An agent key that may name any tenant and report kernel usage, for one host (and
    /// anonymous senders, when allowed).
    pub const AGENT: Sender = Sender { tenancy: Tenancy::FromResource, scope: Scope::ANY, hosts: NonZeroU32::MIN };
}

/// The keys the collector accepts and what each may do.
#[derive(Debug, Default, Clone)]
pub struct Keys {
    by_digest: HashMap<[u8; 32], Sender>,
}

/// Why a keys file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Unreadable.
    #[error("keys file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not the expected YAML.
    #[error("keys file {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why, with the line where serde knows it.
        reason: String,
    },
}

impl Keys {
    /// Loads a keys file.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeysError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text).map_err(|reason| KeysError::Invalid { path: path.display().to_string(), reason })
    }

    /// Parses a keys file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_digest = HashMap::new();
        for (i, entry) in file.keys.into_iter().enumerate() {
            let digest = runtime::auth::parse_digest(&entry.sha256)
                .ok_or_else(|| format!("keys[{i}].sha256 is not 64 hex digits"))?;
            let sender = match (entry.tenant, entry.tenants, entry.kernel_usage, entry.hosts) {
                (Some(t), None, None, None) => {
                    validate_tenant(&t).map_err(|e| format!("keys[{i}].tenant: {e}"))?;
                    Sender { tenancy: Tenancy::Pinned(t), scope: Scope::ANY, hosts: NonZeroU32::MIN }
                }
                (Some(_), _, _, _) => {
                    return Err(format!(
                        "keys[{i}]: a tenant key (tenant:) takes no tenants:, kernel_usage: or hosts: (those are \
                         agent keys')"
                    ))
                }
                (None, tenants, kernel_usage, hosts) => {
                    for (j, p) in tenants.iter().flatten().enumerate() {
                        validate_tenant(p.strip_suffix('*').filter(|s| !s.is_empty()).unwrap_or(p))
                            .map_err(|e| format!("keys[{i}].tenants[{j}]: {e} (a tenant id, or a prefix and *)"))?;
                    }
                    Sender {
                        tenancy: Tenancy::FromResource,
                        scope: Scope { tenants, kernel_usage: kernel_usage.unwrap_or(true) },
                        hosts: hosts.unwrap_or(NonZeroU32::MIN),
                    }
                }
            };
            if by_digest.insert(digest, sender).is_some() {
                return Err(format!("keys[{i}] repeats an earlier key"));
            }
        }
        Ok(Self { by_digest })
    }

    /// What `key` may do, if it is known.
    pub fn lookup(&self, key: &str) -> Option<&Sender> {
        self.by_digest.get(&runtime::auth::digest(key))
    }
}

/// Who may send, and what each sender may assert (docs/trust.md): tenant keys send their own
/// tenant's items; agent keys (and anonymous senders, when allowed) name tenants and their
/// batches' identity and time, within `batch_max_age` of now.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The accepted keys.
    pub keys: Keys,
    /// Senders without a key are taken as agents (local use only).
    pub allow_anonymous: bool,
    /// The oldest batch time accepted, before now.
    pub batch_max_age: Duration,
    /// What a usage report may claim.
    pub report_bounds: measure::reported::Bounds,
}

impl Trust {
    /// What `key` may do; `Err` is why the key is refused.
    pub fn sender(&self, key: Option<&str>) -> Result<Sender, String> {
        match key {
            Some(k) => self.keys.lookup(k).cloned().ok_or_else(|| "unknown key".to_owned()),
            None if self.allow_anonymous => Ok(Sender::AGENT),
            None => Err("missing key: send `Authorization: Bearer <key>`".to_owned()),
        }
    }

    /// What `key` may assert: a batch identity only when it may name tenants (an agent's key).
    pub fn grant(&self, key: Option<&str>) -> Result<Grant, String> {
        Ok(Grant { batch_identity: self.sender(key)?.tenancy == Tenancy::FromResource })
    }

    /// Refuses a batch time older than `batch_max_age` before `now` (the receiver has refused
    /// one in the future already): a sender may not move usage into a month long billed.
    pub fn check_batch_time(&self, batch: &BatchId, now: time::OffsetDateTime) -> Result<(), String> {
        let oldest = now - self.batch_max_age;
        if batch.time < oldest {
            return Err(format!(
                "{} {batch}: the batch time {} is more than {} h before now, the oldest this collector \
                 accepts (--batch-max-age-hours)",
                otlp::batch::HEADER,
                batch.time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                self.batch_max_age.as_secs() / 3600
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_file() {
        // sha256("test") and sha256("agent").
        let keys = Keys::parse(
            "keys:\n  - sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n    tenant: acme\n  - sha256: d4f0bc5a29de06b510f9aa428f1eedba926012b591fef7a518e776a7c9bd1824\n",
        )
        .unwrap();
        assert_eq!(keys.lookup("test").map(|s| &s.tenancy), Some(&Tenancy::Pinned("acme".into())));
        assert_eq!(keys.lookup("agent"), Some(&Sender::AGENT));
        assert_eq!(keys.lookup("nope"), None);
        assert_eq!(Keys::parse("keys:\n  - sha256: abc\n").unwrap_err(), "keys[0].sha256 is not 64 hex digits");
        assert!(Keys::parse("keys:\n  - sha25: x\n").unwrap_err().contains("unknown field `sha25`"));
        let bad_tenant = "keys:\n  - sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n    tenant: \"a b\"\n";
        assert!(Keys::parse(bad_tenant).unwrap_err().starts_with("keys[0].tenant: tenant id \"a b\" contains ' '"));
    }

    #[test]
    fn agent_keys_may_be_scoped() {
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // sha256("test")
        let keys =
            Keys::parse(&format!("keys:\n  - sha256: {sha}\n    tenants: [acme, team-*]\n    kernel_usage: false\n"))
                .unwrap();
        let scope = &keys.lookup("test").unwrap().scope;
        assert!(!scope.kernel_usage);
        assert!(scope.allows("acme") && scope.allows("team-a") && scope.allows("team-"));
        assert!(!scope.allows("acme2") && !scope.allows("globex") && !scope.allows("team"));
        assert!(Scope::ANY.allows("anyone") && Scope::ANY.kernel_usage);
        let pinned_and_scoped = format!("keys:\n  - sha256: {sha}\n    tenant: acme\n    tenants: [b]\n");
        assert!(Keys::parse(&pinned_and_scoped).unwrap_err().contains("a tenant key (tenant:) takes no tenants:"));
        let bad = format!("keys:\n  - sha256: {sha}\n    tenants: [\"a b*\"]\n");
        assert!(Keys::parse(&bad).unwrap_err().starts_with("keys[0].tenants[0]: tenant id \"a b\""), "{bad}");
    }

    #[test]
    fn an_agent_key_says_how_many_hosts_share_it() {
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // sha256("test")
        let keys = Keys::parse(&format!("keys:\n  - sha256: {sha}\n    hosts: 200\n")).unwrap();
        assert_eq!(keys.lookup("test").unwrap().hosts.get(), 200);
        assert_eq!(Keys::parse(&format!("keys:\n  - sha256: {sha}\n")).unwrap().lookup("test"), Some(&Sender::AGENT));
        let tenant_key = format!("keys:\n  - sha256: {sha}\n    tenant: acme\n    hosts: 2\n");
        assert!(Keys::parse(&tenant_key)
            .unwrap_err()
            .contains("a tenant key (tenant:) takes no tenants:, kernel_usage: or hosts:"));
        let none = format!("keys:\n  - sha256: {sha}\n    hosts: 0\n");
        assert!(Keys::parse(&none).unwrap_err().contains("expected a nonzero u32"), "{:?}", Keys::parse(&none));
    }
}
