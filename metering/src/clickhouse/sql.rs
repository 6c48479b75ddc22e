//! SQL text built only from static fragments, checked identifiers and bound
//! values. ClickHouse 18.16 has no server-side query parameters, so values are
//! rendered as escaped literals here, in one place; user input never reaches
//! the query text any other way (the fragment type is `&'static str`).

use std::fmt::Write;

use rust_decimal::Decimal;

/// A value bound into a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// A string literal.
    Str(String),
    /// An unsigned integer.
    U64(u64),
    /// A UTC instant in Unix seconds, rendered as `toDateTime(n, 'UTC')`.
    DateTime(u32),
    /// A decimal, rendered as `toDecimal128('v', 9)`.
    Decimal(Decimal),
}

/// An identifier that is not a safe ClickHouse name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name:?} is not a valid ClickHouse identifier (use letters, digits and _, not starting with a digit, at most 64)"
)]
pub struct BadIdentifier {
    /// The rejected name.
    pub name: String,
}

/// Checks a database or table name: `[A-Za-z_][A-Za-z0-9_]{0,63}`.
pub fn check_identifier(name: &str) -> Result<(), BadIdentifier> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(BadIdentifier { name: name.to_owned() })
    }
}

/// A query under construction.
///
/// ```
/// use metering::clickhouse::sql::Sql;
/// let sql = Sql::new("SELECT count() FROM ")
///     .ident("tally").unwrap()
///     .push(".usage WHERE tenant = ")
///     .bind("it's");
/// assert_eq!(sql.as_str(), r"SELECT count() FROM `tally`.usage WHERE tenant = 'it\'s'");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sql {
    text: String,
}

impl Sql {
    /// Starts a query with a static fragment.
    pub fn new(fragment: &'static str) -> Self {
        Self { text: fragment.to_owned() }
    }

    /// Appends a static fragment.
    pub fn push(mut self, fragment: &'static str) -> Self {
        self.text.push_str(fragment);
        self
    }

    /// Appends `layout`'s column list, `(a, b, c)`: static names, like every fragment.
    pub fn columns(mut self, layout: super::rowbinary::Layout) -> Self {
        self.text.push_str(&layout.columns());
        self
    }

    /// Appends a checked identifier, back-quoted.
    pub fn ident(mut self, name: &str) -> Result<Self, BadIdentifier> {
        check_identifier(name)?;
        let _ = write!(self.text, "`{name}`");
        Ok(self)
    }

    /// Appends a value as a literal.
    pub fn bind(mut self, value: impl Into<Param>) -> Self {
        match value.into() {
            Param::Str(s) => quote_into(&mut self.text, &s),
            Param::U64(n) => {
                let _ = write!(self.text, "{n}");
            }
            Param::DateTime(secs) => {
                let _ = write!(self.text, "toDateTime({secs}, 'UTC')");
            }
            Param::Decimal(d) => {
                let _ = write!(self.text, "toDecimal128('{d}', 9)");
            }
        }
        self
    }

    /// A statement rewritten from statements built by these rules, with only
    /// checked identifiers and static fragments added (see `store::cluster`).
    pub(crate) fn rewritten(text: String) -> Self {
        Self { text }
    }

    /// Appends another query's text (both were built by these rules).
    pub fn append(mut self, other: Sql) -> Self {
        self.text.push_str(&other.text);
        self
    }

    /// The finished text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Consumes the query into its text.
    pub fn into_string(self) -> String {
        self.text
    }
}

fn quote_into(out: &mut String, s: &str) {
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

impl From<&str> for Param {
    fn from(s: &str) -> Self {
        Param::Str(s.to_owned())
    }
}
impl From<String> for Param {
    fn from(s: String) -> Self {
        Param::Str(s)
    }
}
impl From<&String> for Param {
    fn from(s: &String) -> Self {
        Param::Str(s.clone())
    }
}
impl From<u64> for Param {
    fn from(n: u64) -> Self {
        Param::U64(n)
    }
}
impl From<Decimal> for Param {
    fn from(d: Decimal) -> Self {
        Param::Decimal(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_neutralises_every_escape() {
        let sql = Sql::new("SELECT ").bind("a'b\\c\nd\0");
        assert_eq!(sql.as_str(), r"SELECT 'a\'b\\c\nd\0'");
        let sql = Sql::new("SELECT ").bind("\\'; DROP TABLE x; --");
        assert_eq!(sql.as_str(), r"SELECT '\\\'; DROP TABLE x; --'");
    }

    #[test]
    fn identifiers() {
        assert!(check_identifier("tally_2").is_ok());
        assert!(check_identifier("_x").is_ok());
        for bad in ["", "2x", "a-b", "a`b", "a b", &"x".repeat(65)] {
            assert_eq!(check_identifier(bad), Err(BadIdentifier { name: bad.to_owned() }), "{bad}");
        }
    }

    #[test]
    fn params_render() {
        let sql = Sql::new("")
            .bind(Param::DateTime(60))
            .push(",")
            .bind(7u64)
            .push(",")
            .bind("1.5".parse::<Decimal>().unwrap());
        assert_eq!(sql.as_str(), "toDateTime(60, 'UTC'),7,toDecimal128('1.5', 9)");
    }
}
