//! Cgroup id → cgroup path. In cgroup2 a cgroup's id is the inode number of its directory, so a
//! walk of the tree under the root finds every live cgroup's id.

use std::{
    collections::{HashMap, HashSet},
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Resolves cgroup ids to paths relative to a cgroup root, with a cache. A miss rescans the tree
/// once; an id still not found then (a cgroup already removed, or one outside the root) is
/// remembered as unknown, so it costs no further scans. Ids are never reused while the system
/// runs (64-bit kernfs ids), so cached answers stay right.
#[derive(Debug)]
pub struct CgroupPaths {
    root: PathBuf,
    by_id: HashMap<u64, PathBuf>,
    unknown: HashSet<u64>,
    scans: u64,
}

impl CgroupPaths {
    /// A resolver for the cgroups under `root` (a cgroup2 directory); nothing is read yet.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), by_id: HashMap::new(), unknown: HashSet::new(), scans: 0 }
    }

    /// The cgroup id of a cgroup directory: its inode number.
    pub fn id_of(dir: &Path) -> io::Result<u64> {
        Ok(fs::metadata(dir)?.ino())
    }

    /// The path of cgroup `id` relative to the root (empty for the root itself), or `None` if no
    /// cgroup under the root has that id.
    pub fn resolve(&mut self, id: u64) -> Option<&Path> {
        if !self.by_id.contains_key(&id) {
            if self.unknown.contains(&id) {
                return None;
            }
            self.rescan();
            if !self.by_id.contains_key(&id) {
                self.unknown.insert(id);
                return None;
            }
        }
        self.by_id.get(&id).map(PathBuf::as_path)
    }

    /// Drops what is cached about `id` (call it when the cgroup is retired).
    pub fn forget(&mut self, id: u64) {
        self.by_id.remove(&id);
        self.unknown.remove(&id);
    }

    /// How many times the tree was walked (for tests and metrics).
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Walks the tree under the root and records every cgroup found. Directories that vanish
    /// during the walk are skipped.
    pub fn rescan(&mut self) {
        self.scans += 1;
        let mut stack = vec![PathBuf::new()];
        while let Some(relative) = stack.pop() {
            let dir = self.root.join(&relative);
            let Ok(meta) = fs::symlink_metadata(&dir) else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            self.by_id.entry(meta.ino()).or_insert_with(|| relative.clone());
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(relative.join(entry.file_name()));
                }
            }
        }
        tracing::debug!(root = %self.root.display(), cgroups = self.by_id.len(), "scanned cgroups");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain directory tree stands in for cgroupfs: the mapping is the same inode rule.
    #[test]
    fn resolves_by_inode_and_caches_misses() {
        let dir = std::env::temp_dir().join(format!("tally-cgpaths-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("kubepods/podabc/ctr")).unwrap();
        fs::create_dir_all(dir.join("system.slice/a.service")).unwrap();
        let ctr = CgroupPaths::id_of(&dir.join("kubepods/podabc/ctr")).unwrap();
        let svc = CgroupPaths::id_of(&dir.join("system.slice/a.service")).unwrap();
        let root = CgroupPaths::id_of(&dir).unwrap();

        let mut paths = CgroupPaths::new(&dir);
        assert_eq!(paths.resolve(ctr), Some(Path::new("kubepods/podabc/ctr")));
        assert_eq!(paths.resolve(svc), Some(Path::new("system.slice/a.service")));
        assert_eq!(paths.resolve(root), Some(Path::new("")));
        assert_eq!(paths.scans(), 1, "one walk finds them all");

        // Unknown id: one more walk, then remembered.
        assert_eq!(paths.resolve(u64::MAX), None);
        assert_eq!(paths.resolve(u64::MAX), None);
        assert_eq!(paths.scans(), 2);

        // A cgroup created later is found by the walk its first lookup triggers.
        fs::create_dir_all(dir.join("kubepods/podabc/ctr2")).unwrap();
        let ctr2 = CgroupPaths::id_of(&dir.join("kubepods/podabc/ctr2")).unwrap();
        assert_eq!(paths.resolve(ctr2), Some(Path::new("kubepods/podabc/ctr2")));
        assert_eq!(paths.scans(), 3);
        fs::remove_dir_all(&dir).unwrap();
    }
}
