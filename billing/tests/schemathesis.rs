//! schemathesis (PyPI) against `/openapi.json` of a running `tally serve` with usage
//! in a real ClickHouse 18.16: every operation, with a billing key and with a tenant
//! key, generated requests of every shape; no answer may be a 5xx, and every answer
//! must match the document (status, content type, headers, body schema).

use metering::store::Store;
use std::process::Command;
use std::time::Duration;

use metering::clickhouse::ClickHouse;
use metering::meter::{definition, Catalog};
use metering::store::migrate::migrate;
use metering::store::writer::UsageWriter;
use testkit::tally::start;
use testkit::ClickHouseServer;

fn fixture(name: &str) -> String {
    format!("{}/../metering/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs schemathesis with `key`; returns how many test cases it generated (all passed).
fn schemathesis(base: &str, key: &str) -> u64 {
    let venv = testkit::sdk::python();
    let bin = venv.parent().expect("the venv's bin directory").join("schemathesis");
    // Its example cache goes into the working directory: a temporary one, not the repository.
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(&bin)
        .current_dir(cache.path())
        .args(["run", &format!("{base}/openapi.json"), "-H", &format!("Authorization: Bearer {key}")])
        // The document's promises. Not positive/negative data acceptance: the document does not
        // spell out every cross-field rule (`from` before `to`, months a billing system can have).
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"])
        .args(["--max-examples", "40", "--seed", "20261204", "--no-color"])
        .output()
        .unwrap_or_else(|e| panic!("running {} (scripts/test installs it into .venv): {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    // "Test cases:\n  1059 generated, 1059 passed"
    let line = text.lines().find(|l| l.contains(" generated, ")).unwrap_or_else(|| panic!("no summary in:\n{text}"));
    let numbers: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert!(numbers.len() >= 2 && numbers[0] == numbers[1], "not every generated case passed: {line}\n{text}");
    numbers[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_openapi_document_and_never_answers_5xx() {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database("schemathesis").unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    let store = Store::new(ch.clone(), &db);
    migrate(&store).await.unwrap();
    let catalog = Catalog::with_custom(&definition::load(std::path::Path::new(&fixture("meters.yaml"))).unwrap());
    let mut writer = UsageWriter::new(ch.clone(), &db, catalog).unwrap();
    for batch in testkit::usage::dataset() {
        writer.push(&batch).unwrap();
    }
    writer.flush().await.unwrap();
    let serve = start(
        &server.http_url(),
        &db,
        &[
            "--billing-key",
            "billing-key-1",
            "--tenant-key",
            "acme=acme-key-1",
            "--plans",
            &fixture("plans.yaml"),
            "--meters",
            &fixture("meters.yaml"),
        ],
    )
    .await;
    let billing = schemathesis(&serve.base, "billing-key-1");
    let tenant = schemathesis(&serve.base, "acme-key-1");
    // Every operation was exercised many times over, not skipped.
    assert!(billing >= 200 && tenant >= 200, "generated {billing} and {tenant} cases");
}
