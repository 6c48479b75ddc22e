//! Layered settings for every Tally binary.
//!
//! A binary declares its settings once, as a clap derive struct, and reads them with [`parse`].
//! Each setting then has one name, used three ways:
//!
//! | Where       | Form                                                      | Example                 |
//! |-------------|-----------------------------------------------------------|-------------------------|
//! | flag        | the long name                                             | `--clickhouse-url URL`  |
//! | environment | `TALLY_` + the long name upper-cased, `-` replaced by `_` | `TALLY_CLICKHOUSE_URL`  |
//! | YAML file   | the long name, exactly                                    | `clickhouse-url: URL`   |
//!
//! The file is named by `--config FILE` or `TALLY_CONFIG`, a flag added to every binary (and shown
//! in the help of every subcommand). Precedence: flag > environment > file > built-in default.
//!
//! One file may serve several subcommands: a key is valid when some command or subcommand has that
//! setting, and sets it wherever it appears. A key no command knows is an error naming the file,
//! the line and the valid keys. In the file a repeatable setting takes a YAML list, a boolean flag
//! takes `true` or `false`, and numbers and booleans are read as the text they would be on the
//! command line. Values are checked with the setting's own parser before anything runs.
//!
//! `--help` shows each setting's variable (`[env: TALLY_LISTEN]`) but never the values of
//! variables or of the file, which may hold credentials.
//!
//! ```no_run
//! use clap::Parser;
//!
//! /// Serves things.
//! #[derive(Debug, Parser)]
//! struct Cli {
//!     /// Address to listen on.
//!     #[arg(long, default_value = "0.0.0.0:8088")]
//!     listen: std::net::SocketAddr,
//! }
//!
//! // `--listen`, `TALLY_LISTEN` or `listen:` in the file given by `--config`/`TALLY_CONFIG`.
//! let cli: Cli = runtime::settings::parse();
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue};
use clap::{Arg, ArgAction, Command, CommandFactory, Parser};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_yaml::Value;

/// Prefix of every settings environment variable.
///
/// ```
/// assert_eq!(runtime::settings::env_var_name("listen"), format!("{}LISTEN", runtime::settings::ENV_PREFIX));
/// ```
pub const ENV_PREFIX: &str = "TALLY_";

/// Id and long name of the config-file argument.
const CONFIG: &str = "config";

/// Why settings could not be read.
///
/// Every variant but [`SettingsError::Clap`] is about the config file and names it.
///
/// ```
/// use std::path::PathBuf;
/// use runtime::settings::SettingsError;
///
/// let e = SettingsError::UnknownKey {
///     path: PathBuf::from("tally.yaml"),
///     line: Some(3),
///     key: "listne".into(),
///     valid: vec!["clickhouse-url".into(), "listen".into()],
/// };
/// assert_eq!(
///     e.to_string(),
///     "config file tally.yaml line 3: unknown setting `listne`; valid settings: clickhouse-url, listen"
/// );
/// ```
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    ReadFile {
        /// The file as given.
        path: PathBuf,
        /// What reading it reported.
        error: std::io::Error,
    },
    /// The config file is not YAML, or not a mapping of settings.
    #[error("config file {}: {message}", path.display())]
    InvalidYaml {
        /// The file as given.
        path: PathBuf,
        /// Line of the problem (1-based), when known; the message names it too.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A key of the config file is no setting of this binary.
    #[error("config file {}{}: unknown setting `{key}`; valid settings: {}", path.display(), AtLine(*line), valid.join(", "))]
    UnknownKey {
        /// The file as given.
        path: PathBuf,
        /// Line of the key (1-based).
        line: Option<usize>,
        /// The key.
        key: String,
        /// Every key the file may hold, sorted.
        valid: Vec<String>,
    },
    /// A value of the config file is not valid for its setting.
    #[error("config file {}{}: invalid value for `{key}`: {reason}", path.display(), AtLine(*line))]
    InvalidValue {
        /// The file as given.
        path: PathBuf,
        /// Line of the key (1-based).
        line: Option<usize>,
        /// The key.
        key: String,
        /// Why the value was rejected (the setting's parser's words).
        reason: String,
    },
    /// Flags or environment variables are wrong, or help or version was asked for.
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

/// ` line N` when the line is known.
pub struct AtLine(pub Option<usize>);

impl fmt::Display for AtLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " line {line}"),
            None => Ok(()),
        }
    }
}

/// The environment variable of the setting with long name `long`: `TALLY_` + `long` upper-cased,
/// with `-` replaced by `_`.
///
/// ```
/// assert_eq!(runtime::settings::env_var_name("clickhouse-url"), "TALLY_CLICKHOUSE_URL");
/// ```
pub fn env_var_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Parses the process's arguments, environment and config file into `T`; for `main`.
///
/// On `--help` or `--version` prints and exits with 0; on a bad flag or variable prints clap's
/// error and exits with 2; on a bad config file prints `error: config file …` to stderr and exits
/// with 2.
///
/// ```no_run
/// #[derive(clap::Parser)]
/// struct Cli {
///     /// ClickHouse HTTP URL.
///     #[arg(long, default_value = "http://127.0.0.1:8123")]
///     clickhouse_url: String,
/// }
///
/// let cli: Cli = runtime::settings::parse();
/// println!("{}", cli.clickhouse_url);
/// ```
pub fn parse<T: Parser>() -> T {
    match try_parse_from(std::env::args_os()) {
        Ok(settings) => settings,
        Err(SettingsError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    }
}

/// Parses `args` (the first is the binary's name), the process's `TALLY_*` environment variables
/// and the config file they name into `T`.
///
/// ```
/// use clap::Parser;
/// use runtime::settings::{try_parse_from, SettingsError};
///
/// #[derive(Debug, Parser)]
/// struct Cli {
///     /// Name of this instance.
///     #[arg(long, default_value = "alpha")]
///     name: String,
/// }
///
/// let cli: Cli = try_parse_from(["demo", "--name", "beta"])?;
/// assert_eq!(cli.name, "beta");
/// # Ok::<(), SettingsError>(())
/// ```
pub fn try_parse_from<T, I, S>(args: I) -> Result<T, SettingsError>
where
    T: Parser,
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = command::<T>();
    if let Some(path) = config_path(&cmd, &args) {
        cmd = apply_file(cmd, &path)?;
    }
    let mut matches = cmd.try_get_matches_from_mut(args)?;
    T::from_arg_matches_mut(&mut matches).map_err(|e| SettingsError::Clap(e.format(&mut cmd)))
}

/// `T`'s command as [`parse`] runs it: every long flag (of every subcommand) reads its `TALLY_*`
/// variable, and a global `--config <FILE>` (`TALLY_CONFIG`) is added unless some command already
/// has a `--config`.
///
/// ```
/// #[derive(clap::Parser)]
/// struct Cli {
///     /// Address to listen on.
///     #[arg(long)]
///     listen: Option<std::net::SocketAddr>,
/// }
///
/// let cmd = runtime::settings::command::<Cli>();
/// let listen = cmd.get_arguments().find(|a| a.get_id() == "listen").unwrap();
/// assert_eq!(listen.get_env(), Some(std::ffi::OsStr::new("TALLY_LISTEN")));
/// assert!(cmd.get_arguments().any(|a| a.get_long() == Some("config")));
/// ```
pub fn command<T: CommandFactory>() -> Command {
    let mut cmd = T::command();
    if find_long(&cmd, CONFIG).is_none() {
        cmd = cmd.arg(
            Arg::new(CONFIG)
                .long(CONFIG)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .action(ArgAction::Set)
                .global(true)
                .help("YAML file of settings, keyed by long flag name (flags and environment variables override it)"),
        );
    }
    with_env(cmd)
}

/// A Markdown table of every setting of `T` and its subcommands: flag, environment variable, file
/// key, default and help, plus the commands it applies to when `T` has subcommands. Generated from
/// the code, for docs/configuration.md.
///
/// ```
/// #[derive(clap::Parser)]
/// #[command(name = "demo")]
/// struct Cli {
///     /// Name of this instance.
///     #[arg(long, default_value = "alpha")]
///     name: String,
/// }
///
/// let table = runtime::settings::config_reference::<Cli>();
/// assert!(table.contains("| `--name <NAME>` | `TALLY_NAME` | `name` | `alpha` | Name of this instance |"));
/// ```
pub fn config_reference<T: CommandFactory>() -> String {
    let mut cmd = command::<T>();
    cmd.build();
    let with_commands = subcommands(&cmd).next().is_some();
    let mut rows = Vec::new();
    reference_rows(&cmd, cmd.get_name(), true, &BTreeSet::new(), &mut rows);

    let mut out = String::new();
    let mut header = vec!["Flag", "Environment variable", "File key", "Default"];
    if with_commands {
        header.push("Commands");
    }
    header.push("Description");
    push_row(&mut out, header.iter().map(|h| h.to_string()));
    push_row(&mut out, header.iter().map(|_| "---".to_owned()));
    for row in rows {
        let mut cells = vec![row.flag, row.env, row.key, row.default];
        if with_commands {
            cells.push(row.commands.join(", "));
        }
        cells.push(row.help);
        push_row(&mut out, cells.into_iter());
    }
    out
}

/// One setting in [`config_reference`].
struct RefRow {
    flag: String,
    env: String,
    key: String,
    default: String,
    help: String,
    commands: Vec<String>,
}

fn reference_rows(cmd: &Command, path: &str, root: bool, inherited: &BTreeSet<String>, rows: &mut Vec<RefRow>) {
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if is_builtin(arg) || arg.is_hide_set() || inherited.contains(arg.get_id().as_str()) {
            continue;
        }
        let takes_values = arg.get_action().takes_values();
        let flag = match (arg.get_short(), takes_values) {
            (Some(short), _) => format!("-{short}, --{long}"),
            (None, _) => format!("--{long}"),
        };
        let flag = if takes_values {
            let name = arg.get_value_names().and_then(|n| n.first()).map(|n| n.to_string());
            format!("{flag} <{}>", name.unwrap_or_else(|| arg.get_id().as_str().to_ascii_uppercase()))
        } else {
            flag
        };
        let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default().replace('\n', " ");
        let possible: Vec<String> =
            arg.get_possible_values().iter().filter(|p| !p.is_hide_set()).map(|p| code(p.get_name())).collect();
        if takes_values && !possible.is_empty() {
            let one_of = format!("One of: {}", possible.join(", "));
            help = match help.trim_end() {
                "" => one_of,
                h if h.ends_with('.') => format!("{h} {one_of}"),
                h => format!("{h}. {one_of}"),
            };
        }
        let default = if arg.is_hide_default_value_set() {
            String::new()
        } else {
            arg.get_default_values().iter().map(|v| code(&v.to_string_lossy())).collect::<Vec<_>>().join(", ")
        };
        let commands = if arg.is_global_set() {
            if root {
                "all".to_owned()
            } else {
                format!("{} and its subcommands", code(path))
            }
        } else {
            code(path)
        };
        let row = RefRow {
            flag: code(&flag),
            env: arg.get_env().map(|e| code(&e.to_string_lossy())).unwrap_or_default(),
            key: if long == CONFIG { "—".to_owned() } else { code(long) },
            default,
            help,
            commands: vec![commands],
        };
        match rows.iter_mut().find(|r| r.same_setting(&row)) {
            Some(existing) => existing.commands.extend(row.commands),
            None => rows.push(row),
        }
    }
    let mut inherited = inherited.clone();
    inherited.extend(cmd.get_arguments().filter(|a| a.is_global_set()).map(|a| a.get_id().to_string()));
    for sub in subcommands(cmd) {
        reference_rows(sub, &format!("{path} {}", sub.get_name()), false, &inherited, rows);
    }
}

impl RefRow {
    fn same_setting(&self, other: &RefRow) -> bool {
        (&self.flag, &self.env, &self.key, &self.default, &self.help)
            == (&other.flag, &other.env, &other.key, &other.default, &other.help)
    }
}

fn code(text: &str) -> String {
    format!("`{text}`")
}

fn push_row(out: &mut String, cells: impl Iterator<Item = String>) {
    out.push('|');
    for cell in cells {
        out.push(' ');
        out.push_str(&cell.replace('|', "\\|"));
        out.push_str(" |");
    }
    out.push('\n');
}

/// Subcommands other than clap's generated `help`.
fn subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    let generated_help = !cmd.is_disable_help_subcommand_set();
    cmd.get_subcommands().filter(move |s| !(generated_help && s.get_name() == "help"))
}

/// Help and version flags are no settings.
fn is_builtin(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version)
}

/// The settings argument with long name `long` in `cmd` or any subcommand.
fn find_long<'a>(cmd: &'a Command, long: &str) -> Option<&'a Arg> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .or_else(|| cmd.get_subcommands().find_map(|s| find_long(s, long)))
}

/// Gives every long flag without a variable its `TALLY_*` one, recursively.
fn with_env(cmd: Command) -> Command {
    cmd.mut_args(|arg| {
        let name = arg.get_long().filter(|_| arg.get_env().is_none() && !is_builtin(&arg)).map(env_var_name);
        match name {
            Some(name) => arg.env(name).hide_env_values(true),
            None => arg,
        }
    })
    .mut_subcommands(with_env)
}

/// The config file named on the command line (`--config F`, `--config=F`, and the short forms if
/// the argument has a short name), else by its environment variable. Empty means none.
fn config_path(cmd: &Command, args: &[OsString]) -> Option<PathBuf> {
    let arg = find_long(cmd, CONFIG)?;
    let long = format!("--{CONFIG}");
    let long_eq = format!("--{CONFIG}=");
    let short = arg.get_short().map(|c| format!("-{c}"));
    let mut found = None;
    let mut rest = args.iter().skip(1).peekable();
    while let Some(a) = rest.next() {
        if a == "--" {
            break;
        }
        let separate = a.as_os_str() == OsStr::new(&long) || short.as_deref().is_some_and(|s| a == s);
        if separate {
            // A following flag is no value; clap reports the missing one.
            found = rest.next_if(|v| v.to_str().is_none_or(|s| !s.starts_with('-') || s == "-")).cloned();
        } else if let Some(value) = strip_prefix(a, &long_eq) {
            found = Some(value);
        } else if let Some(value) = short.as_deref().and_then(|s| strip_prefix(a, s)) {
            found = Some(strip_prefix(&value, "=").unwrap_or(value));
        }
    }
    let found = found.or_else(|| arg.get_env().and_then(std::env::var_os));
    found.filter(|p| !p.is_empty()).map(PathBuf::from)
}

fn strip_prefix(arg: &OsStr, prefix: &str) -> Option<OsString> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        arg.as_bytes().strip_prefix(prefix.as_bytes()).map(|rest| OsStr::from_bytes(rest).to_owned())
    }
    #[cfg(not(unix))]
    {
        arg.to_str()?.strip_prefix(prefix).map(OsString::from)
    }
}

/// Reads the config file and installs its values as the defaults of the arguments they set.
fn apply_file(cmd: Command, path: &Path) -> Result<Command, SettingsError> {
    let text =
        std::fs::read_to_string(path).map_err(|error| SettingsError::ReadFile { path: path.to_owned(), error })?;
    let values = ConfigFile { path, text: &text }.values(&cmd)?;
    Ok(install(cmd, &values))
}

fn install(cmd: Command, values: &BTreeMap<String, Vec<String>>) -> Command {
    cmd.mut_args(|arg| {
        let vals = arg.get_long().filter(|_| !is_builtin(&arg)).and_then(|long| values.get(long)).cloned();
        match vals {
            // Installed as the default, so a variable or a flag still wins; hidden from --help
            // as it may be a credential.
            Some(vals) => {
                let takes_values = arg.get_action().takes_values();
                arg.default_values(vals).required(false).hide_default_value(takes_values)
            }
            None => arg,
        }
    })
    .mut_subcommands(|sub| install(sub, values))
}

struct ConfigFile<'a> {
    path: &'a Path,
    text: &'a str,
}

impl ConfigFile<'_> {
    /// The file's values by key, each checked against every argument with that long name.
    fn values(&self, cmd: &Command) -> Result<BTreeMap<String, Vec<String>>, SettingsError> {
        let Entries(entries) = serde_yaml::from_str(self.text).map_err(|e| SettingsError::InvalidYaml {
            path: self.path.to_owned(),
            line: e.location().map(|l| l.line()),
            message: format!("invalid YAML: {e}"),
        })?;
        // Built, so that value parsers are resolved.
        let mut built = cmd.clone();
        built.build();
        let mut settings: BTreeMap<&str, Vec<&Arg>> = BTreeMap::new();
        collect_settings(&built, &mut settings);

        let mut values = BTreeMap::new();
        for (key, value) in &entries {
            let key = match key {
                Value::String(s) => s.clone(),
                other => scalar(other).unwrap_or_else(|_| format!("<{}>", kind(other))),
            };
            if values.contains_key(&key) {
                let line = key_line(self.text, &key, 2);
                let at = line.map(|l| format!(" at line {l}")).unwrap_or_default();
                return Err(SettingsError::InvalidYaml {
                    path: self.path.to_owned(),
                    line,
                    message: format!("duplicate setting `{key}`{at}"),
                });
            }
            let Some(args) = settings.get(key.as_str()) else {
                return Err(SettingsError::UnknownKey {
                    path: self.path.to_owned(),
                    line: key_line(self.text, &key, 1),
                    valid: settings.keys().map(|k| k.to_string()).collect(),
                    key,
                });
            };
            let invalid = |reason: String| SettingsError::InvalidValue {
                path: self.path.to_owned(),
                line: key_line(self.text, &key, 1),
                key: key.clone(),
                reason,
            };
            let (items, is_list) = match value {
                Value::Sequence(items) => (items.iter().map(scalar).collect::<Result<Vec<_>, _>>(), true),
                other => (scalar(other).map(|s| vec![s]), false),
            };
            let items = items.map_err(|found| {
                invalid(if is_list {
                    format!("list items must be strings, numbers or booleans, found {found}")
                } else {
                    format!("expected a string, number, boolean or list, found {found}")
                })
            })?;
            for arg in args {
                if is_list && !takes_many(arg) {
                    return Err(invalid("expected a single value, found a list".to_owned()));
                }
                for item in &items {
                    check_value(arg, item).map_err(invalid)?;
                }
            }
            values.insert(key, items);
        }
        Ok(values)
    }
}

/// The top-level entries of a settings document, in order and with duplicates kept (so that they
/// can be reported by line); an empty document has none.
struct Entries(Vec<(Value, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of settings (`name: value` lines)")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Entries, E> {
                Ok(Entries(Vec::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Entries, E> {
                Ok(Entries(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_any(EntriesVisitor)
    }
}

/// Every settable argument of `cmd` and its subcommands, by long name.
fn collect_settings<'a>(cmd: &'a Command, settings: &mut BTreeMap<&'a str, Vec<&'a Arg>>) {
    for arg in cmd.get_arguments() {
        if let Some(long) = arg.get_long().filter(|&l| l != CONFIG && !is_builtin(arg)) {
            settings.entry(long).or_default().push(arg);
        }
    }
    for sub in cmd.get_subcommands() {
        collect_settings(sub, settings);
    }
}

fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append) || arg.get_num_args().is_some_and(|n| n.max_values() > 1)
}

/// A YAML scalar as it would be written on the command line; else the kind of value found.
fn scalar(value: &Value) -> Result<String, &'static str> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(kind(other)),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Checks one file value with `arg`'s own parser, as clap will parse it (split at the argument's
/// value delimiter, if any); the error is the parser's reason.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let pieces: Vec<&str> = match arg.get_value_delimiter() {
        Some(delimiter) => value.split(delimiter).collect(),
        None => vec![value],
    };
    for piece in pieces {
        let probe = Arg::new("value")
            .long("value")
            .action(ArgAction::Set)
            .num_args(1)
            .allow_hyphen_values(true)
            .ignore_case(arg.is_ignore_case_set())
            .value_parser(arg.get_value_parser().clone());
        Command::new("probe")
            .no_binary_name(true)
            .disable_help_flag(true)
            .arg(probe)
            .try_get_matches_from([format!("--value={piece}")])
            .map_err(|e| reason(&e))?;
    }
    Ok(())
}

/// The reason part of a value parser's error (without clap's framing of the probe argument).
fn reason(e: &clap::Error) -> String {
    if let Some(source) = std::error::Error::source(e) {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        let valid: Vec<String> = valid.iter().map(|v| code(v)).collect();
        return format!("expected one of {}", valid.join(", "));
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// The line (1-based) of the `nth` (from 1) occurrence of top-level key `key` in `text`, found by
/// running serde_yaml's own parser up to that key.
fn key_line(text: &str, key: &str, nth: usize) -> Option<usize> {
    const FOUND: &str = "tally-settings: key found";

    struct Doc<'k>(&'k str, usize);
    struct Key<'k, 'n>(&'k str, &'n mut usize);

    impl<'de> DeserializeSeed<'de> for Doc<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Doc<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut left = self.1;
            while map.next_key_seed(Key(self.0, &mut left))?.is_some() {
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }

    impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for Key<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a setting name")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
            if v == self.0 {
                *self.1 -= 1;
            }
            if *self.1 == 0 {
                Err(E::custom(FOUND))
            } else {
                Ok(())
            }
        }
    }

    if nth == 0 {
        return None;
    }
    match Doc(key, nth).deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().starts_with(FOUND) => e.location().map(|l| l.line()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    /// A command whose config argument reads a variable no test sets.
    fn cmd(short: Option<char>) -> Command {
        Command::new("demo").arg(
            Arg::new(CONFIG).long(CONFIG).short(short).env("TALLY_SETTINGS_UNIT_TEST_UNSET").action(ArgAction::Set),
        )
    }

    #[test]
    fn env_var_name_upper_snake_cases_the_long_name() {
        assert_eq!(env_var_name("clickhouse-url"), "TALLY_CLICKHOUSE_URL");
        assert_eq!(env_var_name("listen"), "TALLY_LISTEN");
    }

    #[test]
    fn config_path_forms() {
        let c = cmd(None);
        assert_eq!(config_path(&c, &os(&["demo"])), None);
        assert_eq!(config_path(&c, &os(&["demo", "--config", "a.yaml"])), Some(PathBuf::from("a.yaml")));
        assert_eq!(config_path(&c, &os(&["demo", "--config=b.yaml"])), Some(PathBuf::from("b.yaml")));
        assert_eq!(
            config_path(&c, &os(&["demo", "serve", "--config", "c.yaml", "--x"])),
            Some(PathBuf::from("c.yaml"))
        );
        assert_eq!(config_path(&c, &os(&["demo", "--config=a", "--config=b"])), Some(PathBuf::from("b")));
        // Not after `--`, not a following flag, not empty.
        assert_eq!(config_path(&c, &os(&["demo", "--", "--config", "a.yaml"])), None);
        assert_eq!(config_path(&c, &os(&["demo", "--config", "--listen", "x"])), None);
        assert_eq!(config_path(&c, &os(&["demo", "--config="])), None);
        // Short forms only when the argument has a short name.
        assert_eq!(config_path(&c, &os(&["demo", "-c", "a.yaml"])), None);
        let c = cmd(Some('c'));
        assert_eq!(config_path(&c, &os(&["demo", "-c", "a.yaml"])), Some(PathBuf::from("a.yaml")));
        assert_eq!(config_path(&c, &os(&["demo", "-cb.yaml"])), Some(PathBuf::from("b.yaml")));
        assert_eq!(config_path(&c, &os(&["demo", "-c=d.yaml"])), Some(PathBuf::from("d.yaml")));
    }

    #[test]
    fn key_line_finds_top_level_keys_only() {
        let text = "# comment\nname: alpha\n\ntag:\n  - a\n  - name\nnested:\n  listen: x\n\"listen\": y\nname: beta\n";
        assert_eq!(key_line(text, "name", 1), Some(2));
        assert_eq!(key_line(text, "name", 2), Some(10));
        assert_eq!(key_line(text, "name", 3), None);
        assert_eq!(key_line(text, "tag", 1), Some(4));
        assert_eq!(key_line(text, "nested", 1), Some(7));
        assert_eq!(key_line(text, "listen", 1), Some(9));
        assert_eq!(key_line(text, "missing", 1), None);
        assert_eq!(key_line("- name\n", "name", 1), None);
    }

    #[test]
    fn documents_without_settings_have_no_entries() {
        for text in ["", "\n", "# only a comment\n", "---\n", "~\n", "{}\n"] {
            let Entries(entries) = serde_yaml::from_str(text).unwrap();
            assert!(entries.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn scalars_render_as_on_the_command_line() {
        assert_eq!(scalar(&serde_yaml::from_str("true").unwrap()), Ok("true".to_owned()));
        assert_eq!(scalar(&serde_yaml::from_str("8088").unwrap()), Ok("8088".to_owned()));
        assert_eq!(scalar(&serde_yaml::from_str("0.5").unwrap()), Ok("0.5".to_owned()));
        assert_eq!(scalar(&serde_yaml::from_str("'x y'").unwrap()), Ok("x y".to_owned()));
        assert_eq!(scalar(&serde_yaml::from_str("~").unwrap()), Err("nothing (null)"));
        assert_eq!(scalar(&serde_yaml::from_str("{a: 1}").unwrap()), Err("a mapping"));
    }

    #[test]
    fn check_value_uses_the_arguments_parser() {
        let port = Arg::new("port").long("port").value_parser(clap::value_parser!(u16));
        assert_eq!(check_value(&port, "8080"), Ok(()));
        assert_eq!(check_value(&port, "x"), Err("invalid digit found in string".to_owned()));
        assert_eq!(check_value(&port, "70000"), Err("70000 is not in 0..=65535".to_owned()));
        let flag = Arg::new("on").long("on").action(ArgAction::SetTrue).value_parser(clap::value_parser!(bool));
        assert_eq!(check_value(&flag, "false"), Ok(()));
        assert_eq!(check_value(&flag, "yes"), Err("expected one of `true`, `false`".to_owned()));
        let keys = Arg::new("key").long("key").value_delimiter(',').value_parser(clap::value_parser!(u8));
        assert_eq!(check_value(&keys, "1,2"), Ok(()));
        assert_eq!(check_value(&keys, "1,x"), Err("invalid digit found in string".to_owned()));
        assert_eq!(check_value(&keys, "1,-2"), Err("-2 is not in 0..=255".to_owned()));
    }

    #[derive(Debug, PartialEq, Parser)]
    #[command(name = "unit")]
    struct Unit {
        /// Port to use.
        #[arg(long, default_value_t = 1)]
        settings_unit_port: u16,
    }

    #[test]
    fn file_values_become_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("unit.yaml");
        std::fs::write(&file, "settings-unit-port: 7\n").unwrap();
        let config = format!("--config={}", file.display());
        let parsed: Unit = try_parse_from(["unit", config.as_str()]).unwrap();
        assert_eq!(parsed, Unit { settings_unit_port: 7 });
        let parsed: Unit = try_parse_from(["unit", config.as_str(), "--settings-unit-port", "9"]).unwrap();
        assert_eq!(parsed, Unit { settings_unit_port: 9 });
    }

    #[test]
    fn duplicate_and_malformed_yaml_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        let parse = || try_parse_from::<Unit, _, _>(["unit", "--config", file.to_str().unwrap()]).unwrap_err();
        let f = file.display();

        std::fs::write(&file, "settings-unit-port: 7\n\nsettings-unit-port: 8\n").unwrap();
        let err = parse();
        assert!(matches!(&err, SettingsError::InvalidYaml { line: Some(3), .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("config file {f}: duplicate setting `settings-unit-port` at line 3"));

        std::fs::write(&file, "- settings-unit-port\n").unwrap();
        let err = parse();
        assert!(matches!(&err, SettingsError::InvalidYaml { line: Some(1), .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "config file {f}: invalid YAML: invalid type: sequence, expected a mapping of settings (`name: value` lines)"
            )
        );

        std::fs::write(&file, "settings-unit-port: 7\n  x: [\n").unwrap();
        let err = parse();
        assert!(matches!(&err, SettingsError::InvalidYaml { line: Some(2), .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("config file {f}: invalid YAML: mapping values are not allowed in this context at line 2 column 4")
        );
    }
}
