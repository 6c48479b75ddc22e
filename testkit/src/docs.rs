//! Keeps generated parts of the README (the configuration reference) equal to
//! what the code generates, so the documentation cannot drift.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

fn readme() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

/// Checks that README.md holds `content` between `<!-- generated:NAME -->` and
/// `<!-- /generated:NAME -->`. With `TALLY_BLESS=1` it writes `content` there
/// instead (run the test that way after changing a setting).
pub fn check_section(name: &str, content: &str) -> Result<()> {
    let path = readme();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (open, close) = (format!("<!-- generated:{name} -->\n"), format!("<!-- /generated:{name} -->"));
    let start = text.find(&open).with_context(|| format!("README.md has no `{}` marker", open.trim()))? + open.len();
    let end = start + text[start..].find(&close).with_context(|| format!("README.md has no `{close}` marker"))?;
    if text[start..end] == *content {
        return Ok(());
    }
    if std::env::var_os("TALLY_BLESS").is_some_and(|v| v == "1") {
        let updated = format!("{}{content}{}", &text[..start], &text[end..]);
        return std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()));
    }
    bail!(
        "README.md's generated section `{name}` is out of date; rerun this test with TALLY_BLESS=1.\n\
         --- README ---\n{}\n--- generated ---\n{content}",
        &text[start..end]
    )
}
