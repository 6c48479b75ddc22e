//! Keeps generated parts of the docs (the configuration reference in docs/configuration.md) equal
//! to what the code generates, so the documentation cannot drift.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

fn configuration_doc() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md")
}

/// Checks that docs/configuration.md holds `content` between `<!-- generated:NAME -->` and
/// `<!-- /generated:NAME -->`. With `TALLY_BLESS=1` it writes `content` there instead (run the
/// test that way after changing a setting).
pub fn check_section(name: &str, content: &str) -> Result<()> {
    let path = configuration_doc();
    let file = path.display();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {file}"))?;
    let (open, close) = (format!("<!-- generated:{name} -->\n"), format!("<!-- /generated:{name} -->"));
    let start = text.find(&open).with_context(|| format!("{file} has no `{}` marker", open.trim()))? + open.len();
    let end = start + text[start..].find(&close).with_context(|| format!("{file} has no `{close}` marker"))?;
    if text[start..end] == *content {
        return Ok(());
    }
    if std::env::var_os("TALLY_BLESS").is_some_and(|v| v == "1") {
        let updated = format!("{}{content}{}", &text[..start], &text[end..]);
        return std::fs::write(&path, updated).with_context(|| format!("writing {file}"));
    }
    bail!(
        "{file}'s generated section `{name}` is out of date; rerun this test with TALLY_BLESS=1.\n\
         --- doc ---\n{}\n--- generated ---\n{content}",
        &text[start..end]
    )
}
