//! The official OpenTelemetry Python SDK as a test client: the scripts in
//! `python/` send known workloads and print what they sent as one JSON line.

use std::path::PathBuf;

/// The Python that has the SDK: `$TALLY_PYTHON`, else the workspace's `.venv`
/// (which `scripts/test` creates).
pub fn python() -> PathBuf {
    std::env::var_os("TALLY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python")))
}

/// Runs `python/<script>` against `endpoint` over `protocol` (`http` or `grpc`)
/// with `args`; panics with its stderr when it fails; returns its JSON report.
pub async fn run(script: &str, endpoint: &str, protocol: &str, args: &[&str]) -> serde_json::Value {
    let path = format!("{}/../python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(python())
        .arg(&path)
        .args(["--endpoint", endpoint, "--protocol", protocol])
        .args(args)
        .output()
        .await
        .expect("python with the OTel SDK (scripts/test installs it into .venv)");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(out.stdout.trim_ascii()).unwrap_or_else(|e| panic!("{script} printed no JSON report ({e})"))
}

/// Runs python/send_otlp.py (the official SDK and exporters) against `endpoint`.
pub async fn send_otlp(endpoint: &str, protocol: &str, args: &[&str]) -> serde_json::Value {
    run("send_otlp.py", endpoint, protocol, args).await
}
