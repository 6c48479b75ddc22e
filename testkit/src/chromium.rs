//! Headless Chromium (Debian's `chromium`) driven over the Chrome DevTools
//! protocol on a pipe (`--remote-debugging-pipe`: JSON messages ending in NUL on
//! file descriptors 3 and 4), so a test can open a page, see every console error,
//! uncaught exception and failed load, ask the rendered DOM questions and take a
//! screenshot — without a WebSocket client.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A running headless Chromium, killed on drop.
pub struct Chromium {
    child: Child,
    to_browser: File,
    from_browser: Receiver<Value>,
    next_id: u64,
    /// Events read while waiting for an answer, kept for [`Tab::problems`].
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

/// A page opened by [`Chromium::open`].
pub struct Tab<'c> {
    chromium: &'c mut Chromium,
    session: String,
}

fn pipe() -> Result<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

impl Chromium {
    /// Starts `chromium --headless` with a fresh profile and the flags that work as root
    /// on these machines (no sandbox, no GPU, no background networking).
    pub fn start() -> Result<Self> {
        let profile = tempfile::tempdir()?;
        let (cmd_read, cmd_write) = pipe()?;
        let (resp_read, resp_write) = pipe()?;
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Move both ends above 4 first, so neither dup2 clobbers the other.
                let a = libc::fcntl(cmd_read, libc::F_DUPFD, 10);
                let b = libc::fcntl(resp_write, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = crate::spawn::spawn_tied(cmd).context("starting chromium (Debian: apt-get install -y chromium)")?;
        // SAFETY: we own these fds; the child has its copies.
        let (to_browser, from) = unsafe {
            libc::close(cmd_read);
            libc::close(resp_write);
            (File::from_raw_fd(cmd_write), File::from_raw_fd(resp_read))
        };
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from);
            let mut buf = Vec::new();
            while reader.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                buf.pop_if(|b| *b == 0);
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        Ok(Self { child, to_browser, from_browser: rx, next_id: 0, events: Vec::new(), _profile: profile })
    }

    fn next(&mut self, deadline: Instant) -> Result<Value> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.from_browser.recv_timeout(left).map_err(|e| anyhow!("no answer from chromium: {e}"))
    }

    /// Sends `method` (to a page's `session`, or to the browser) and waits for its result.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        self.to_browser.write_all(&bytes)?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let v = self.next(deadline)?;
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
            self.events.push(v);
        }
    }

    /// Opens `url` in a new tab `width` pixels wide and waits for its load event.
    pub fn open(&mut self, url: &str, width: u32) -> Result<Tab<'_>> {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let attached =
            self.call(None, "Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}))?;
        let session = attached["sessionId"].as_str().ok_or_else(|| anyhow!("no session id"))?.to_owned();
        for method in ["Runtime.enable", "Log.enable", "Page.enable"] {
            self.call(Some(&session), method, json!({}))?;
        }
        let s = Some(session.as_str());
        self.call(
            s,
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        self.events.clear();
        self.call(s, "Page.navigate", json!({"url": url}))?;
        let deadline = Instant::now() + TIMEOUT;
        while !self.events.iter().any(|e| e["method"] == "Page.loadEventFired" && e["sessionId"] == json!(session)) {
            let v = self.next(deadline)?;
            self.events.push(v);
        }
        Ok(Tab { chromium: self, session })
    }
}

impl Tab<'_> {
    /// Evaluates `expression` in the page and returns its value (JSON-serializable results).
    pub fn eval(&mut self, expression: &str) -> Result<Value> {
        let r = self.chromium.call(
            Some(&self.session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Every console error or warning, uncaught exception and error log entry
    /// (failed loads, blocked content) the page produced so far.
    pub fn problems(&self) -> Vec<String> {
        self.chromium
            .events
            .iter()
            .filter(|e| e["sessionId"] == json!(self.session))
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.consoleAPICalled"
                        if matches!(p["type"].as_str(), Some("error" | "warning" | "assert")) =>
                    {
                        Some(format!("console.{}: {}", p["type"].as_str().unwrap_or(""), p["args"]))
                    }
                    "Runtime.exceptionThrown" => Some(format!("exception: {}", p["exceptionDetails"])),
                    "Log.entryAdded" if p["entry"]["level"] == "error" => Some(format!("log: {}", p["entry"]["text"])),
                    _ => None,
                }
            })
            .collect()
    }

    /// A PNG of the whole page (not just the viewport) written to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        let r = self.chromium.call(
            Some(&self.session),
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )?;
        let data = r["data"].as_str().ok_or_else(|| anyhow!("no screenshot data"))?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.call(None, "Browser.close", json!({}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
