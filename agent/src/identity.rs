//! Who the agent is: an id kept in its data directory (stable across restarts)
//! and a boot id new to each process, which together name its batches.

use std::io::Read;
use std::path::Path;

use anyhow::Context;

/// Eight random bytes from the kernel.
pub fn random_u64() -> anyhow::Result<u64> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    Ok(u64::from_le_bytes(bytes))
}

/// The agent's id from `dir/agent-id`, created on first start.
pub fn agent_id(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("agent-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if valid(id.trim()) => return Ok(id.trim().to_owned()),
        Ok(id) => anyhow::bail!(
            "{}: {:?} is not an agent id (1-64 of A-Z a-z 0-9 . _ -); fix or remove the file",
            path.display(),
            id.trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let id = format!("{:016x}", random_u64()?);
    let tmp = dir.join("agent-id.tmp");
    std::fs::write(&tmp, format!("{id}\n")).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("creating {}", path.display()))?;
    Ok(id)
}

fn valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = agent_id(dir.path()).unwrap();
        assert_eq!(id.len(), 16);
        assert_eq!(agent_id(dir.path()).unwrap(), id);
        std::fs::write(dir.path().join("agent-id"), "node-7.eu\n").unwrap();
        assert_eq!(agent_id(dir.path()).unwrap(), "node-7.eu");
        std::fs::write(dir.path().join("agent-id"), "a b").unwrap();
        assert!(agent_id(dir.path()).unwrap_err().to_string().contains("\"a b\" is not an agent id"));
    }
}
