//! Custom meters: their definitions in the operator's meters file, and the
//! checks every definition passes before a binary starts.
//!
//! ```yaml
//! meters:
//!   - name: llm_tokens            # a-z 0-9 _, starting with a letter; not a built-in's name
//!     signal: traces              # traces | logs | metrics
//!     aggregation: sum            # count | sum | max | unique_count
//!     attribute: llm.tokens       # the item attribute summed, maxed or counted distinct
//!     unit: count                 # count | bytes | seconds (default count)
//!     filter: {llm.vendor: openai}  # every attribute must equal its value
//!     group_by: [model]           # the records' dimensions
//!     description: LLM tokens     # optional, for humans
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

use super::{Meter, Unit, BUILTIN};
use crate::limits::MAX_DIMENSION_LEN;
use crate::signal::Signal;
use runtime::settings::AtLine;
use runtime::yaml_line::{line_of, Step};

/// Longest custom meter name.
pub const MAX_NAME_LEN: usize = 64;
/// Most `group_by` attributes one meter may have.
pub const MAX_GROUP_BY: usize = 16;

/// How a meter's values combine: within a batch, and across the rows of a roll-up bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The number of matching items; summed.
    Count,
    /// The sum of an attribute; summed.
    Sum,
    /// The largest value of an attribute; a bucket holds the largest of its rows.
    Max,
    /// The number of distinct values of an attribute; a bucket counts the distinct
    /// values of all its rows exactly (not the sum of per-minute counts).
    UniqueCount,
}

impl Aggregation {
    /// The name used in the meters file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Aggregation::Count => "count",
            Aggregation::Sum => "sum",
            Aggregation::Max => "max",
            Aggregation::UniqueCount => "unique_count",
        }
    }

    /// Combines two values of one key: sum for count and sum, the larger for max
    /// and unique_count (each distinct value's row holds 1). `None` on overflow.
    ///
    /// ```
    /// use metering::meter::Aggregation;
    /// assert_eq!(Aggregation::Max.combine(2.into(), 5.into()), Some(5.into()));
    /// assert_eq!(Aggregation::Sum.combine(2.into(), 5.into()), Some(7.into()));
    /// ```
    pub fn combine(self, a: Decimal, b: Decimal) -> Option<Decimal> {
        match self {
            Aggregation::Count | Aggregation::Sum => a.checked_add(b),
            Aggregation::Max | Aggregation::UniqueCount => Some(a.max(b)),
        }
    }
}

/// One custom meter, as written in the meters file and checked by [`parse`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterDefinition {
    /// The meter's name in storage and the API.
    pub name: String,
    /// Which items it reads.
    pub signal: Signal,
    /// What it computes.
    pub aggregation: Aggregation,
    /// The attribute read (an item attribute, else a resource attribute). Not allowed
    /// for `count`; required for `unique_count`, and for `sum` and `max` except on
    /// `metrics`, where omitting it reads the value of gauge and sum data points.
    #[serde(default)]
    pub attribute: Option<String>,
    /// The unit of the values (`count` for count and unique_count).
    #[serde(default = "default_unit")]
    pub unit: Unit,
    /// Attribute = value conditions, all of which an item must meet (item attributes first,
    /// then resource attributes). Numbers and booleans compare as their text.
    #[serde(default, deserialize_with = "scalar_map")]
    pub filter: BTreeMap<String, String>,
    /// Attributes whose values become the records' dimensions (empty string when missing).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// One line for humans; a summary of the definition when omitted.
    #[serde(default)]
    pub description: Option<String>,
}

fn default_unit() -> Unit {
    Unit::Count
}

/// Reads a map whose values are YAML scalars, as their text.
fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, serde_yaml::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "filter {k:?}: expected a string, number or boolean, got {other:?}"
                    )))
                }
            };
            Ok((k, text))
        })
        .collect()
}

impl MeterDefinition {
    /// The catalog entry of this meter.
    pub fn meter(&self) -> Meter {
        let description = self.description.clone().unwrap_or_else(|| {
            let what = self.attribute.as_deref().map_or_else(|| "value".to_owned(), |a| format!("`{a}`"));
            match self.aggregation {
                Aggregation::Count => format!("{} matching the filter", self.signal.name()),
                agg => format!("{} of {what} over {}", agg.as_str(), self.signal.name()),
            }
        });
        Meter {
            name: Cow::Owned(self.name.clone()),
            unit: self.unit,
            aggregation: self.aggregation,
            description: Cow::Owned(description),
        }
    }

    /// Why this definition cannot be used, if it cannot.
    fn problem(&self) -> Option<String> {
        let name = &self.name;
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Some(format!("name must be 1 to {MAX_NAME_LEN} characters"));
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase())
            || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Some("name must be lowercase a-z, 0-9 and _, starting with a letter".into());
        }
        if BUILTIN.iter().any(|m| m.name == name.as_str()) {
            return Some(format!("name {name:?} is a built-in meter's"));
        }
        let agg = self.aggregation.as_str();
        match (self.aggregation, &self.attribute, self.signal) {
            (Aggregation::Count, Some(_), _) => {
                return Some(
                    "`attribute` is not used by count (it counts matching items); use `filter` to select them".into(),
                )
            }
            (Aggregation::Sum | Aggregation::Max, None, Signal::Traces | Signal::Logs) => {
                return Some(format!("{agg} needs an `attribute` on {}", self.signal.name()))
            }
            (Aggregation::UniqueCount, None, _) => return Some("unique_count needs an `attribute`".into()),
            (_, Some(a), _) if a.is_empty() || a.len() > MAX_DIMENSION_LEN => {
                return Some(format!("`attribute` must be 1 to {MAX_DIMENSION_LEN} bytes"))
            }
            _ => {}
        }
        if matches!(self.aggregation, Aggregation::Count | Aggregation::UniqueCount) && self.unit != Unit::Count {
            return Some(format!("{agg} counts things: its unit must be count, not {}", self.unit));
        }
        if let Some(k) = self.filter.keys().find(|k| k.is_empty() || k.len() > MAX_DIMENSION_LEN) {
            return Some(format!("filter attribute {k:?} must be 1 to {MAX_DIMENSION_LEN} bytes"));
        }
        if self.group_by.len() > MAX_GROUP_BY {
            return Some(format!("at most {MAX_GROUP_BY} group_by attributes"));
        }
        for (i, key) in self.group_by.iter().enumerate() {
            if key.is_empty() || key.len() > MAX_DIMENSION_LEN {
                return Some(format!("group_by attribute {key:?} must be 1 to {MAX_DIMENSION_LEN} bytes"));
            }
            if self.group_by[..i].contains(key) {
                return Some(format!("group_by lists {key:?} twice"));
            }
        }
        None
    }
}

/// Why a meters file was refused. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The file could not be read.
    #[error("cannot read meters file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it reported.
        error: std::io::Error,
    },
    /// The file is not a valid meters document (YAML, field names, enum values).
    #[error("meters file {}{}: {message}", path.display(), AtLine(*line))]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line (1-based), when the YAML parser knows it.
        line: Option<usize>,
        /// The parser's message, with the path of the field (e.g. `meters[1].aggregation`).
        message: String,
    },
    /// A definition is well-formed but not usable.
    #[error("meters file {}{}: meter #{index} ({name:?}): {reason}", path.display(), AtLine(*line))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line (1-based) where the definition starts.
        line: Option<usize>,
        /// The definition's position in `meters`, from 0.
        index: usize,
        /// Its name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetersFile {
    #[serde(default)]
    meters: Vec<MeterDefinition>,
}

/// Parses and checks the text of a meters file; `path` is only for messages.
///
/// ```
/// use metering::meter::definition::parse;
/// let err = parse("meters:\n  - {name: spans, signal: traces, aggregation: count}\n", "m.yaml".as_ref()).unwrap_err();
/// assert_eq!(err.to_string(), r#"meters file m.yaml line 2: meter #0 ("spans"): name "spans" is a built-in meter's"#);
/// ```
pub fn parse(text: &str, path: &Path) -> Result<Vec<MeterDefinition>, DefinitionError> {
    let file: MetersFile = serde_yaml::from_str(text).map_err(|e| DefinitionError::Syntax {
        path: path.to_owned(),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    })?;
    for (index, def) in file.meters.iter().enumerate() {
        let invalid = |reason| DefinitionError::Invalid {
            path: path.to_owned(),
            line: line_of(text, &[Step::Key("meters"), Step::Index(index)]),
            index,
            name: def.name.clone(),
            reason,
        };
        if let Some(reason) = def.problem() {
            return Err(invalid(reason));
        }
        if file.meters[..index].iter().any(|d| d.name == def.name) {
            return Err(invalid("another meter earlier in the file has this name".into()));
        }
    }
    Ok(file.meters)
}

/// Reads, parses and checks the meters file at `path`.
pub fn load(path: &Path) -> Result<Vec<MeterDefinition>, DefinitionError> {
    let text = std::fs::read_to_string(path).map_err(|error| DefinitionError::Read { path: path.to_owned(), error })?;
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        parse(yaml, Path::new("m.yaml")).unwrap_err().to_string()
    }

    #[test]
    fn full_definition_parses() {
        let yaml =
            "meters:\n  - name: llm_tokens\n    signal: traces\n    aggregation: sum\n    attribute: llm.tokens\n    \
                    filter: {llm.vendor: openai, http.status_code: 200, cached: false}\n    group_by: [model]\n";
        let defs = parse(yaml, Path::new("m.yaml")).unwrap();
        assert_eq!(defs.len(), 1);
        let d = &defs[0];
        assert_eq!((d.signal, d.aggregation, d.unit), (Signal::Traces, Aggregation::Sum, Unit::Count));
        assert_eq!(d.filter["llm.vendor"], "openai");
        assert_eq!(d.filter["http.status_code"], "200");
        assert_eq!(d.filter["cached"], "false");
        assert_eq!(d.group_by, ["model"]);
        assert_eq!(d.meter().description, "sum of `llm.tokens` over traces");
        assert!(parse("meters: []\n", Path::new("m.yaml")).unwrap().is_empty());
    }

    #[test]
    fn bad_definitions_name_file_meter_and_reason() {
        let m =
            |body: &str| format!("meters:\n  - {{name: ok_one, signal: logs, aggregation: count}}\n  - {{{body}}}\n");
        assert_eq!(
            err(&m("name: Bad, signal: traces, aggregation: count")),
            r#"meters file m.yaml line 3: meter #1 ("Bad"): name must be lowercase a-z, 0-9 and _, starting with a letter"#
        );
        assert!(err(&m("name: ok_one, signal: traces, aggregation: count"))
            .contains("meter #1 (\"ok_one\"): another meter"));
        assert!(err(&m("name: x, signal: traces, aggregation: sum")).ends_with("sum needs an `attribute` on traces"));
        assert!(err(&m("name: x, signal: traces, aggregation: count, attribute: a")).contains("not used by count"));
        assert!(
            err(&m("name: x, signal: traces, aggregation: unique_count")).contains("unique_count needs an `attribute`")
        );
        assert!(err(&m("name: x, signal: traces, aggregation: unique_count, attribute: u, unit: bytes"))
            .contains("unit must be count"));
        assert!(err(&m("name: x, signal: traces, aggregation: count, group_by: [a, a]")).contains("lists \"a\" twice"));
        // Metric point values need no attribute.
        assert!(parse(&m("name: x, signal: metrics, aggregation: max"), Path::new("m.yaml")).is_ok());
        // Serde's errors keep the line and the field's path.
        let e = err(&m("name: x, signal: traces, aggregation: avg"));
        assert!(e.starts_with("meters file m.yaml line 3: meters[1].aggregation: unknown variant `avg`"), "{e}");
        let e = err(&m("name: x, signal: traces, aggregation: count, colour: red"));
        assert!(e.contains("line 3") && e.contains("unknown field `colour`"), "{e}");
        let e = err(&m("name: x, signal: traces, aggregation: count, filter: {a: [1]}"));
        assert!(e.contains("filter \"a\": expected a string, number or boolean"), "{e}");
    }
}
