//! From a cgroup id to whom its usage is billed: the cgroup's path ([`CgroupPaths`]), the
//! container and pod it is ([`ContainerRef`]), the tenant ([`TenantRules`]). [`Attributor`] does
//! the three once per new cgroup id and caches the answer.

mod cgroup_paths;
mod container;
mod tenant;

pub use cgroup_paths::CgroupPaths;
pub use container::{ContainerRef, Runtime};
pub use tenant::{RuleError, TenantRules, UNKNOWN_TENANT};

use std::{collections::HashMap, path::PathBuf};

/// Whom one cgroup's usage is billed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    /// The cgroup's path relative to the cgroup root; `None` when no cgroup under the root has
    /// the id (removed before it was first seen, or outside the root, like id 0).
    pub path: Option<PathBuf>,
    /// The container and pod the path names.
    pub container: ContainerRef,
    /// The tenant from the rules, or [`UNKNOWN_TENANT`].
    pub tenant: String,
}

/// Cgroup id → [`Attribution`], worked out once per new id and cached until [`Self::forget`].
#[derive(Debug)]
pub struct Attributor {
    paths: CgroupPaths,
    rules: TenantRules,
    cache: HashMap<u64, Attribution>,
}

impl Attributor {
    /// An attributor for the cgroups under `cgroup_root` (the probes' root).
    pub fn new(cgroup_root: impl Into<PathBuf>, rules: TenantRules) -> Self {
        Self { paths: CgroupPaths::new(cgroup_root), rules, cache: HashMap::new() }
    }

    /// The attribution of cgroup `id`.
    pub fn attribute(&mut self, id: u64) -> &Attribution {
        let Self { paths, rules, cache } = self;
        cache.entry(id).or_insert_with(|| {
            let path = paths.resolve(id).map(|p| p.to_path_buf());
            let text = path.as_deref().map(|p| p.to_string_lossy().into_owned());
            let container = text.as_deref().map(ContainerRef::parse).unwrap_or_default();
            let tenant = match &text {
                Some(t) => rules.tenant_for(t).to_string(),
                None => UNKNOWN_TENANT.to_string(),
            };
            Attribution { path, container, tenant }
        })
    }

    /// Forgets a retired cgroup (after its last usage was attributed).
    pub fn forget(&mut self, id: u64) {
        self.cache.remove(&id);
        self.paths.forget(id);
    }
}
