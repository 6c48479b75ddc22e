//! Layered settings: built-in default < YAML file < `TALLY_*` variable < flag.
//!
//! The tests set process environment variables, so each holds [`Env`]'s lock for its whole run,
//! starting from (and restoring) a known state of every variable the test structs read.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use clap::{Args, Parser, Subcommand};
use runtime::settings::{config_reference, try_parse_from, SettingsError};

/// A flat binary.
#[derive(Debug, PartialEq, Parser)]
#[command(name = "demo")]
struct Flat {
    /// Name of this instance.
    #[arg(long, default_value = "alpha")]
    name: String,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// A tag to attach (repeatable).
    #[arg(long)]
    tag: Vec<String>,
    /// Log more.
    #[arg(long)]
    verbose: bool,
}

/// A binary with subcommands.
#[derive(Debug, PartialEq, Parser)]
#[command(name = "tool")]
struct Tool {
    /// How logs are written.
    #[arg(long, default_value = "text", global = true)]
    log_format: String,
    #[command(subcommand)]
    command: ToolCommand,
}

#[derive(Debug, PartialEq, Subcommand)]
enum ToolCommand {
    /// Create the schema.
    Migrate(Store),
    /// Serve the API.
    Serve(Serve),
}

#[derive(Debug, PartialEq, Args)]
struct Store {
    /// ClickHouse HTTP URL.
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse_url: String,
}

#[derive(Debug, PartialEq, Args)]
struct Serve {
    #[command(flatten)]
    store: Store,
    /// Address the API listens on.
    #[arg(long, default_value = "0.0.0.0:8088")]
    listen: SocketAddr,
}

/// A binary with a required setting.
#[derive(Debug, PartialEq, Parser)]
#[command(name = "req")]
struct Required {
    /// Token to present.
    #[arg(long)]
    token: String,
}

/// Every variable the structs above read.
const VARS: &[&str] = &[
    "TALLY_CONFIG",
    "TALLY_NAME",
    "TALLY_LISTEN",
    "TALLY_TAG",
    "TALLY_VERBOSE",
    "TALLY_LOG_FORMAT",
    "TALLY_CLICKHOUSE_URL",
    "TALLY_TOKEN",
];

static LOCK: Mutex<()> = Mutex::new(());

/// Exclusive use of the process environment: [`VARS`] unset but for `set`, restored on drop.
struct Env {
    saved: Vec<(&'static str, Option<OsString>)>,
    _lock: MutexGuard<'static, ()>,
}

impl Env {
    fn with(set: &[(&str, &str)]) -> Env {
        let lock = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let saved = VARS.iter().map(|&v| (v, std::env::var_os(v))).collect();
        for v in VARS {
            std::env::remove_var(v);
        }
        for (name, value) in set {
            assert!(VARS.contains(name), "add {name} to VARS");
            std::env::set_var(name, value);
        }
        Env { saved, _lock: lock }
    }

    fn clean() -> Env {
        Env::with(&[])
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (name, value) in &self.saved {
            match value {
                Some(value) => std::env::set_var(name, value),
                None => std::env::remove_var(name),
            }
        }
    }
}

/// A config file with `text` in a fresh directory (kept alive by the returned guard).
fn config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn arg(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

fn flat(name: &str, listen: Option<&str>, tag: &[&str], verbose: bool) -> Flat {
    Flat {
        name: name.to_owned(),
        listen: listen.map(|l| l.parse().unwrap()),
        tag: tag.iter().map(|t| t.to_string()).collect(),
        verbose,
    }
}

#[test]
fn defaults_without_file_env_or_flags() {
    let _env = Env::clean();
    let parsed: Flat = try_parse_from(["demo"]).unwrap();
    assert_eq!(parsed, flat("alpha", None, &[], false));
}

#[test]
fn file_overrides_default() {
    let (_dir, file) = config("name: from-file\nlisten: 127.0.0.1:9000\n");
    let _env = Env::clean();
    let parsed: Flat = try_parse_from(["demo", "--config", &arg(&file)]).unwrap();
    assert_eq!(parsed, flat("from-file", Some("127.0.0.1:9000"), &[], false));
}

#[test]
fn env_overrides_file() {
    let (_dir, file) = config("name: from-file\nlisten: 127.0.0.1:9000\n");
    let _env = Env::with(&[("TALLY_NAME", "from-env")]);
    let parsed: Flat = try_parse_from(["demo", "--config", &arg(&file)]).unwrap();
    assert_eq!(parsed, flat("from-env", Some("127.0.0.1:9000"), &[], false));
}

#[test]
fn flag_overrides_env_and_file() {
    let (_dir, file) = config("name: from-file\nlisten: 127.0.0.1:9000\n");
    let _env = Env::with(&[("TALLY_NAME", "from-env"), ("TALLY_LISTEN", "127.0.0.1:9001")]);
    let parsed: Flat =
        try_parse_from(["demo", "--config", &arg(&file), "--name", "from-flag", "--listen", "127.0.0.1:9002"]).unwrap();
    assert_eq!(parsed, flat("from-flag", Some("127.0.0.1:9002"), &[], false));
}

#[test]
fn repeatable_setting_from_yaml_list() {
    let (_dir, file) = config("tag:\n  - a\n  - b\n");
    let _env = Env::clean();
    let parsed: Flat = try_parse_from(["demo", "--config", &arg(&file)]).unwrap();
    assert_eq!(parsed, flat("alpha", None, &["a", "b"], false));
    // A flag replaces the file's whole list.
    let parsed: Flat = try_parse_from(["demo", "--config", &arg(&file), "--tag", "c"]).unwrap();
    assert_eq!(parsed, flat("alpha", None, &["c"], false));
    // A single value for a repeatable setting is a one-item list.
    let (_dir2, file) = config("tag: solo\n");
    let parsed: Flat = try_parse_from(["demo", "--config", &arg(&file)]).unwrap();
    assert_eq!(parsed, flat("alpha", None, &["solo"], false));
}

#[test]
fn bool_flag_from_file() {
    let _env = Env::clean();
    let (_dir, file) = config("verbose: true\n");
    let parsed: Flat = try_parse_from(["demo", "--config", &arg(&file)]).unwrap();
    assert_eq!(parsed, flat("alpha", None, &[], true));
    let (_dir2, file) = config("verbose: false\n");
    let parsed: Flat = try_parse_from(["demo", "--config", &arg(&file)]).unwrap();
    assert_eq!(parsed, flat("alpha", None, &[], false));
    let parsed: Flat = try_parse_from(["demo", "--config", &arg(&file), "--verbose"]).unwrap();
    assert_eq!(parsed, flat("alpha", None, &[], true));
}

#[test]
fn env_overrides_bool_from_file() {
    let (_dir, file) = config("verbose: true\n");
    let _env = Env::with(&[("TALLY_VERBOSE", "false")]);
    let parsed: Flat = try_parse_from(["demo", "--config", &arg(&file)]).unwrap();
    assert_eq!(parsed, flat("alpha", None, &[], false));
}

#[test]
fn unknown_key_names_file_line_and_valid_keys() {
    let (_dir, file) = config("# settings\nname: x\n\nlistne: 127.0.0.1:9000\n");
    let _env = Env::clean();
    let err = try_parse_from::<Flat, _, _>(["demo", "--config", &arg(&file)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "config file {} line 4: unknown setting `listne`; valid settings: listen, name, tag, verbose",
            file.display()
        )
    );
    match err {
        SettingsError::UnknownKey { path, line, key, valid } => {
            assert_eq!(path, file);
            assert_eq!(line, Some(4));
            assert_eq!(key, "listne");
            assert_eq!(valid, ["listen", "name", "tag", "verbose"]);
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

#[test]
fn config_key_is_not_a_setting() {
    let (_dir, file) = config("config: other.yaml\n");
    let _env = Env::clean();
    let err = try_parse_from::<Flat, _, _>(["demo", "--config", &arg(&file)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "config file {} line 1: unknown setting `config`; valid settings: listen, name, tag, verbose",
            file.display()
        )
    );
}

#[test]
fn invalid_value_names_file_line_key_and_reason() {
    let _env = Env::clean();
    let cases = [
        ("name: x\nlisten: nowhere\n", "line 2: invalid value for `listen`: invalid socket address syntax"),
        ("verbose: yes\n", "line 1: invalid value for `verbose`: expected one of `true`, `false`"),
        ("listen: [127.0.0.1:1]\n", "line 1: invalid value for `listen`: expected a single value, found a list"),
        (
            "name:\n",
            "line 1: invalid value for `name`: expected a string, number, boolean or list, found nothing (null)",
        ),
        (
            "name: {a: 1}\n",
            "line 1: invalid value for `name`: expected a string, number, boolean or list, found a mapping",
        ),
        (
            "tag:\n  - [a]\n",
            "line 1: invalid value for `tag`: list items must be strings, numbers or booleans, found a list",
        ),
    ];
    for (text, expected) in cases {
        let (_dir, file) = config(text);
        let err = try_parse_from::<Flat, _, _>(["demo", "--config", &arg(&file)]).unwrap_err();
        assert!(matches!(err, SettingsError::InvalidValue { .. }), "{text:?}: {err:?}");
        assert_eq!(err.to_string(), format!("config file {} {expected}", file.display()), "{text:?}");
    }
}

#[test]
fn invalid_file_value_fails_even_when_a_flag_overrides_it() {
    let (_dir, file) = config("listen: nowhere\n");
    let _env = Env::clean();
    let err = try_parse_from::<Flat, _, _>(["demo", "--config", &arg(&file), "--listen", "127.0.0.1:1"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("config file {} line 1: invalid value for `listen`: invalid socket address syntax", file.display())
    );
}

#[test]
fn config_equals_form() {
    let (_dir, file) = config("name: eq\n");
    let _env = Env::clean();
    let parsed: Flat = try_parse_from(["demo".to_owned(), format!("--config={}", arg(&file))]).unwrap();
    assert_eq!(parsed, flat("eq", None, &[], false));
}

#[test]
fn config_from_env_and_flag_wins_over_it() {
    let (_dir, env_file) = config("name: env-file\n");
    let (_dir2, flag_file) = config("name: flag-file\n");
    let _env = Env::with(&[("TALLY_CONFIG", &arg(&env_file))]);
    let parsed: Flat = try_parse_from(["demo"]).unwrap();
    assert_eq!(parsed, flat("env-file", None, &[], false));
    let parsed: Flat = try_parse_from(["demo", "--config", &arg(&flag_file)]).unwrap();
    assert_eq!(parsed, flat("flag-file", None, &[], false));
}

#[test]
fn empty_file_changes_nothing() {
    let (_dir, file) = config("# nothing set\n");
    let _env = Env::clean();
    let parsed: Flat = try_parse_from(["demo", "--config", &arg(&file)]).unwrap();
    assert_eq!(parsed, flat("alpha", None, &[], false));
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let _env = Env::clean();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.yaml");
    let err = try_parse_from::<Flat, _, _>(["demo", "--config", &arg(&file)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot read config file {}: No such file or directory (os error 2)", file.display())
    );
    match err {
        SettingsError::ReadFile { path, error } => {
            assert_eq!(path, file);
            assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected ReadFile, got {other:?}"),
    }
}

#[test]
fn required_setting_satisfied_by_file() {
    let _env = Env::clean();
    let err = try_parse_from::<Required, _, _>(["req"]).unwrap_err();
    match err {
        SettingsError::Clap(e) => assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument),
        other => panic!("expected a clap error, got {other:?}"),
    }
    let (_dir, file) = config("token: secret\n");
    let parsed: Required = try_parse_from(["req", "--config", &arg(&file)]).unwrap();
    assert_eq!(parsed, Required { token: "secret".to_owned() });
}

#[test]
fn bad_env_value_is_a_clap_error() {
    let _env = Env::with(&[("TALLY_LISTEN", "nowhere")]);
    let err = try_parse_from::<Flat, _, _>(["demo"]).unwrap_err();
    match err {
        SettingsError::Clap(e) => assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation),
        other => panic!("expected a clap error, got {other:?}"),
    }
}

#[test]
fn one_file_serves_every_subcommand() {
    let (_dir, file) = config("clickhouse-url: http://ch:8123\nlisten: 127.0.0.1:7000\nlog-format: json\n");
    let _env = Env::clean();
    let parsed: Tool = try_parse_from(["tool", "migrate", "--config", &arg(&file)]).unwrap();
    assert_eq!(
        parsed,
        Tool {
            log_format: "json".to_owned(),
            command: ToolCommand::Migrate(Store { clickhouse_url: "http://ch:8123".to_owned() }),
        }
    );
    let parsed: Tool = try_parse_from(["tool", "--config", &arg(&file), "serve"]).unwrap();
    assert_eq!(
        parsed,
        Tool {
            log_format: "json".to_owned(),
            command: ToolCommand::Serve(Serve {
                store: Store { clickhouse_url: "http://ch:8123".to_owned() },
                listen: "127.0.0.1:7000".parse().unwrap(),
            }),
        }
    );
}

#[test]
fn subcommand_precedence_for_global_and_nested_settings() {
    let (_dir, file) = config("clickhouse-url: http://file:8123\nlog-format: json\n");
    let _env = Env::with(&[("TALLY_CLICKHOUSE_URL", "http://env:8123"), ("TALLY_LOG_FORMAT", "logfmt")]);
    let parsed: Tool = try_parse_from(["tool", "--config", &arg(&file), "migrate"]).unwrap();
    assert_eq!(
        parsed,
        Tool {
            log_format: "logfmt".to_owned(),
            command: ToolCommand::Migrate(Store { clickhouse_url: "http://env:8123".to_owned() }),
        }
    );
    let parsed: Tool = try_parse_from([
        "tool",
        "--log-format",
        "text",
        "--config",
        &arg(&file),
        "migrate",
        "--clickhouse-url",
        "http://flag:8123",
    ])
    .unwrap();
    assert_eq!(
        parsed,
        Tool {
            log_format: "text".to_owned(),
            command: ToolCommand::Migrate(Store { clickhouse_url: "http://flag:8123".to_owned() }),
        }
    );
}

#[test]
fn unknown_key_lists_keys_of_every_subcommand() {
    let (_dir, file) = config("clickhouse-url: http://ch:8123\nport: 1\n");
    let _env = Env::clean();
    let err = try_parse_from::<Tool, _, _>(["tool", "migrate", "--config", &arg(&file)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "config file {} line 2: unknown setting `port`; valid settings: clickhouse-url, listen, log-format",
            file.display()
        )
    );
}

fn help(args: &[&str]) -> String {
    match try_parse_from::<Tool, _, _>(args) {
        Err(SettingsError::Clap(e)) => {
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
            e.to_string()
        }
        other => panic!("expected help, got {other:?}"),
    }
}

#[test]
fn help_shows_variables_but_not_their_values() {
    let (_dir, file) = config("listen: 127.0.0.1:7000\n");
    let _env = Env::with(&[("TALLY_CLICKHOUSE_URL", "http://user:secret@ch:8123")]);
    let serve = help(&["tool", "serve", "--config", &arg(&file), "--help"]);
    for expected in [
        "[env: TALLY_CLICKHOUSE_URL]",
        "[env: TALLY_LISTEN]",
        "[env: TALLY_LOG_FORMAT]",
        "--config <FILE>",
        "[env: TALLY_CONFIG]",
    ] {
        assert!(serve.contains(expected), "{expected:?} missing from:\n{serve}");
    }
    assert!(!serve.contains("secret"), "{serve}");
    assert!(!serve.contains("127.0.0.1:7000"), "{serve}");
    let top = help(&["tool", "--help"]);
    assert!(top.contains("--config <FILE>") && top.contains("[env: TALLY_CONFIG]"), "{top}");
    assert!(top.contains("[env: TALLY_LOG_FORMAT]"), "{top}");

    let flat = match try_parse_from::<Flat, _, _>(["demo", "--help"]) {
        Err(SettingsError::Clap(e)) => e.to_string(),
        other => panic!("expected help, got {other:?}"),
    };
    for expected in ["[env: TALLY_NAME]", "[env: TALLY_LISTEN]", "[env: TALLY_TAG]", "[env: TALLY_VERBOSE]"] {
        assert!(flat.contains(expected), "{expected:?} missing from:\n{flat}");
    }
}

#[test]
fn config_reference_of_a_flat_binary() {
    assert_eq!(
        config_reference::<Flat>(),
        "\
| Flag | Environment variable | File key | Default | Description |
| --- | --- | --- | --- | --- |
| `--name <NAME>` | `TALLY_NAME` | `name` | `alpha` | Name of this instance |
| `--listen <LISTEN>` | `TALLY_LISTEN` | `listen` |  | Address to listen on |
| `--tag <TAG>` | `TALLY_TAG` | `tag` |  | A tag to attach (repeatable) |
| `--verbose` | `TALLY_VERBOSE` | `verbose` | `false` | Log more |
| `--config <FILE>` | `TALLY_CONFIG` | — |  | YAML file of settings, keyed by long flag name (flags and environment variables override it) |
"
    );
}

#[test]
fn config_reference_with_subcommands() {
    assert_eq!(
        config_reference::<Tool>(),
        "\
| Flag | Environment variable | File key | Default | Commands | Description |
| --- | --- | --- | --- | --- | --- |
| `--log-format <LOG_FORMAT>` | `TALLY_LOG_FORMAT` | `log-format` | `text` | all | How logs are written |
| `--config <FILE>` | `TALLY_CONFIG` | — |  | all | YAML file of settings, keyed by long flag name (flags and environment variables override it) |
| `--clickhouse-url <CLICKHOUSE_URL>` | `TALLY_CLICKHOUSE_URL` | `clickhouse-url` | `http://127.0.0.1:8123` | `tool migrate`, `tool serve` | ClickHouse HTTP URL |
| `--listen <LISTEN>` | `TALLY_LISTEN` | `listen` | `0.0.0.0:8088` | `tool serve` | Address the API listens on |
"
    );
}

#[test]
fn configuration_doc_for_tally_is_current() {
    let table = runtime::settings::config_reference::<billing::cli::Cli>();
    testkit::docs::check_section("config:tally", &table).unwrap();
}
