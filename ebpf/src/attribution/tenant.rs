//! Cgroup path → tenant, from operator rules `PATTERN=TENANT`.
//!
//! Glob syntax, matched segment by segment against the cgroup path relative to the cgroup root
//! (a leading `/` in the pattern is ignored):
//! - `*` matches any run of characters within one path segment (never a `/`);
//! - `?` matches one character within a segment;
//! - `**` as a whole segment matches any number of segments, none included;
//! - anything else matches itself.
//!
//! A rule covers the cgroups it matches and all their descendants: `tenants/acme=acme` bills
//! `tenants/acme/web/worker` to `acme`. Rules are tried in the order given; the first that covers
//! the path wins; no rule means [`UNKNOWN_TENANT`].

use std::fmt;

/// The tenant of usage that no rule maps: metered, never dropped.
pub const UNKNOWN_TENANT: &str = "unknown";

const MAX_TENANT_LEN: usize = 128;

/// Why a rule was refused; carries the rule as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// No `=` between pattern and tenant.
    #[error("tenant rule {rule:?}: expected PATTERN=TENANT")]
    MissingEquals { rule: String },
    /// Nothing before the `=`.
    #[error("tenant rule {rule:?}: the pattern is empty")]
    EmptyPattern { rule: String },
    /// `**` mixed with other characters in a segment (`a**`, `***`).
    #[error("tenant rule {rule:?}: `**` must be a whole path segment, found {segment:?}")]
    BadDoubleStar { rule: String, segment: String },
    /// The tenant is not a valid tenant id.
    #[error("tenant rule {rule:?}: tenant {tenant:?} must be 1 to 128 characters from A-Z a-z 0-9 . _ : @ -")]
    BadTenant { rule: String, tenant: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    AnySegments,
    Glob(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    text: String,
    segments: Vec<Segment>,
    tenant: String,
}

/// Ordered `PATTERN=TENANT` rules.
///
/// ```
/// use tally_ebpf::attribution::TenantRules;
/// let rules = TenantRules::parse(["kubepods.slice/*/*pod0c4f5a0e_*=acme", "system.slice/**=platform"]).unwrap();
/// assert_eq!(rules.tenant_for("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c4f5a0e_1b2c.slice/cri-containerd-ab.scope"), "acme");
/// assert_eq!(rules.tenant_for("system.slice/sshd.service"), "platform");
/// assert_eq!(rules.tenant_for("user.slice"), "unknown");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantRules {
    rules: Vec<Rule>,
}

impl TenantRules {
    /// Parses rules in order; the first bad one is refused with its text.
    pub fn parse<I, S>(rules: I) -> Result<TenantRules, RuleError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let rules = rules.into_iter().map(|r| parse_rule(r.as_ref())).collect::<Result<_, _>>()?;
        Ok(TenantRules { rules })
    }

    /// The tenant of a cgroup path relative to the cgroup root; [`UNKNOWN_TENANT`] when no rule
    /// covers it.
    pub fn tenant_for(&self, path: &str) -> &str {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        self.rules
            .iter()
            .find(|rule| (0..=segments.len()).any(|n| match_segments(&rule.segments, &segments[..n])))
            .map_or(UNKNOWN_TENANT, |rule| rule.tenant.as_str())
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True without rules (everything is [`UNKNOWN_TENANT`]).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl fmt::Display for TenantRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<&str> = self.rules.iter().map(|r| r.text.as_str()).collect();
        f.write_str(&texts.join(" "))
    }
}

fn parse_rule(text: &str) -> Result<Rule, RuleError> {
    let rule = || text.to_string();
    // The tenant cannot contain '=', the pattern may: split at the last one.
    let (pattern, tenant) = text.rsplit_once('=').ok_or_else(|| RuleError::MissingEquals { rule: rule() })?;
    let (pattern, tenant) = (pattern.trim(), tenant.trim());
    let valid_tenant = !tenant.is_empty()
        && tenant.len() <= MAX_TENANT_LEN
        && tenant.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-'));
    if !valid_tenant {
        // The same rule as the collector's tenant ids (metering::record::validate_tenant).
        return Err(RuleError::BadTenant { rule: rule(), tenant: tenant.to_string() });
    }
    let mut segments = Vec::new();
    for segment in pattern.split('/').filter(|s| !s.is_empty()) {
        if segment == "**" {
            segments.push(Segment::AnySegments);
        } else if segment.contains("**") {
            return Err(RuleError::BadDoubleStar { rule: rule(), segment: segment.to_string() });
        } else {
            segments.push(Segment::Glob(segment.to_string()));
        }
    }
    if segments.is_empty() {
        return Err(RuleError::EmptyPattern { rule: rule() });
    }
    Ok(Rule { text: text.to_string(), segments, tenant: tenant.to_string() })
}

fn match_segments(pattern: &[Segment], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((Segment::AnySegments, rest)) => (0..=path.len()).any(|skip| match_segments(rest, &path[skip..])),
        Some((Segment::Glob(glob), rest)) => match path.split_first() {
            Some((first, others)) => match_glob(glob.as_bytes(), first.as_bytes()) && match_segments(rest, others),
            None => false,
        },
    }
}

/// `*` and `?` within one segment (iterative, with backtracking to the last `*`).
fn match_glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_within_a_segment() {
        assert!(match_glob(b"*", b""));
        assert!(match_glob(b"pod*", b"pod123"));
        assert!(match_glob(b"*-pod?bc*", b"kubepods-pod1bc_x.slice"));
        assert!(!match_glob(b"pod?", b"pod"));
        assert!(match_glob(b"a*b*c", b"axxbyyc"));
        assert!(!match_glob(b"a*b*c", b"axxbyy"));
    }

    #[test]
    fn rules_cover_descendants_first_match_wins() {
        let rules = TenantRules::parse([
            "/tenants/acme=acme",
            "tenants/*/special=special",
            "tenants/*=other",
            "**/payments.service=payments",
        ])
        .unwrap();
        assert_eq!(rules.tenant_for("tenants/acme"), "acme");
        assert_eq!(rules.tenant_for("tenants/acme/web/worker"), "acme");
        assert_eq!(rules.tenant_for("tenants/globex/special"), "special");
        assert_eq!(rules.tenant_for("tenants/globex/batch"), "other");
        assert_eq!(rules.tenant_for("system.slice/payments.service"), "payments");
        assert_eq!(rules.tenant_for("payments.service"), "payments", "** matches zero segments");
        assert_eq!(rules.tenant_for("tenantsx/acme"), UNKNOWN_TENANT);
        assert_eq!(rules.tenant_for(""), UNKNOWN_TENANT);
        // `*` never crosses a `/`.
        let star = TenantRules::parse(["a/*/c=t"]).unwrap();
        assert_eq!(star.tenant_for("a/b/x/c"), UNKNOWN_TENANT);
        assert_eq!(star.tenant_for("a/b/c/d"), "t");
    }

    #[test]
    fn precise_errors() {
        assert_eq!(TenantRules::parse(["kubepods"]), Err(RuleError::MissingEquals { rule: "kubepods".into() }));
        assert_eq!(TenantRules::parse(["=acme"]), Err(RuleError::EmptyPattern { rule: "=acme".into() }));
        assert_eq!(TenantRules::parse(["/=acme"]), Err(RuleError::EmptyPattern { rule: "/=acme".into() }));
        assert_eq!(
            TenantRules::parse(["a/b**=acme"]),
            Err(RuleError::BadDoubleStar { rule: "a/b**=acme".into(), segment: "b**".into() })
        );
        let e = TenantRules::parse(["a=ac me"]).unwrap_err();
        assert_eq!(e, RuleError::BadTenant { rule: "a=ac me".into(), tenant: "ac me".into() });
        assert!(e.to_string().contains("1 to 128 characters"));
        assert!(matches!(TenantRules::parse(["a="]), Err(RuleError::BadTenant { .. })));
        // The pattern may hold '=': the tenant is after the last one.
        assert_eq!(TenantRules::parse(["x=y/z=acme"]).unwrap().tenant_for("x=y/z"), "acme");
    }
}
