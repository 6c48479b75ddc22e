//! chDB (ClickHouse 26.x in-process, PyPI `chdb-core`) behind a Python child.
//!
//! Production runs ClickHouse ≥ 23.8 but the only packaged server here is
//! 18.16, so tests run the same DDL and queries through chDB to prove the
//! modern dialect. One long-lived Python process holds one chDB session and
//! answers JSON-line requests (see `chdb_runner.py`), so a test pays the
//! engine start-up once.
//!
//! Local files: chDB's `file()` table function reads absolute paths as well as
//! paths relative to the runner's working directory (which is
//! [`Chdb::dir`]), e.g.
//! `INSERT INTO db.t SELECT * FROM file('/abs/x.bin', 'RowBinary', 'a String, b UInt64')`.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const RUNNER: &str = include_str!("chdb_runner.py");
const INSTALL_HINT: &str =
    "install it with: python3 -m venv .venv && .venv/bin/pip install chdb-core (scripts/test does this)";

/// A chDB session in a child Python process; the process and its temp dir
/// are cleaned up on drop.
pub struct Chdb {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    // Declared last: removed only after `Drop::drop` has ended the process.
    dir: TempDir,
}

#[derive(Deserialize)]
struct Handshake {
    ready: bool,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    output: String,
    #[serde(default)]
    error: String,
}

impl Chdb {
    /// Starts the Python runner and opens a chDB session in a temp dir.
    ///
    /// The interpreter is `$TALLY_PYTHON` if set, else `<workspace>/.venv/bin/python`.
    /// A missing interpreter or a failing `import chdb` is an error carrying
    /// the install command: tests must not pass without the modern engine.
    pub fn start() -> Result<Self> {
        Self::start_with_python(&python_path())
    }

    /// Like [`Chdb::start`] with an explicit interpreter (one that has
    /// `chdb-core` installed).
    pub fn start_with_python(python: &Path) -> Result<Self> {
        if !python.exists() {
            bail!("Python interpreter for chDB not found at {}; {INSTALL_HINT}", python.display());
        }
        let dir = tempfile::Builder::new().prefix("tally-chdb-").tempdir().context("create temp dir for chDB")?;
        let script = dir.path().join("chdb_runner.py");
        fs::write(&script, RUNNER).context("write chdb_runner.py")?;
        let session_dir = dir.path().join("session");
        let stderr = fs::File::create(dir.path().join("stderr.log"))?;
        let mut cmd = Command::new(python);
        cmd.arg("-u")
            .arg(&script)
            .arg(&session_dir)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child =
            crate::spawn::spawn_tied(cmd).with_context(|| format!("spawn {}; {INSTALL_HINT}", python.display()))?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?);
        let mut chdb = Self { child, stdin: Some(stdin), stdout, dir };
        let line = chdb.read_line().with_context(|| format!("chDB runner ({}) failed to start", python.display()))?;
        let hs: Handshake =
            serde_json::from_str(&line).with_context(|| format!("bad handshake from chDB runner: {line:?}"))?;
        if !hs.ready {
            bail!("chDB is not usable with {}: {}; {INSTALL_HINT}", python.display(), hs.error);
        }
        Ok(chdb)
    }

    /// Runs one statement; output is TabSeparated unless the SQL says `FORMAT ...`.
    ///
    /// The error carries chDB's message (e.g. `Code: 62. DB::Exception: Syntax error ...`)
    /// and the SQL. Only text output is supported (binary formats are rejected).
    pub fn query(&mut self, sql: &str) -> Result<String> {
        let request = serde_json::json!({ "sql": sql, "format": "TabSeparated" }).to_string();
        let stdin = self.stdin.as_mut().context("chDB runner stdin closed")?;
        stdin
            .write_all(format!("{request}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| anyhow!("write to chDB runner: {e}\n{}", self.stderr_tail()))?;
        let line = self.read_line()?;
        let reply: Reply =
            serde_json::from_str(&line).with_context(|| format!("bad reply from chDB runner: {line:?}"))?;
        if !reply.ok {
            bail!("chDB query failed: {}\nSQL: {sql}", reply.error.trim_end());
        }
        Ok(reply.output)
    }

    /// The engine version (`SELECT version()`), e.g. `26.9.2.1`.
    pub fn version(&mut self) -> Result<String> {
        Ok(self.query("SELECT version()")?.trim().to_owned())
    }

    /// The runner's temp dir: its working directory, so `file('x.bin', ...)`
    /// reads `<dir>/x.bin`; a convenient place to drop input files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).context("read from chDB runner")?;
        if n == 0 {
            let status = self.child.try_wait().ok().flatten();
            bail!("chDB runner exited (status {status:?})\n{}", self.stderr_tail());
        }
        Ok(line)
    }

    fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- tail of chDB runner stderr ---\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
    }
}

impl Drop for Chdb {
    fn drop(&mut self) {
        // Closing stdin ends the request loop; the session closes cleanly.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python_path() -> PathBuf {
    match std::env::var_os("TALLY_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).join(".venv/bin/python"),
    }
}
