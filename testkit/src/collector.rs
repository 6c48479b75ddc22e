//! The real `tally-collector` binary against a private ClickHouse: start, kill,
//! restart on the same spool, wait for the spool to drain, read usage back; OTLP/gRPC
//! requests sent by hand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::service::{free_port as port, Service};
use crate::ClickHouseServer;
use metering::clickhouse::ClickHouse;
use metering::store::rollup::{query_usage, Granularity, UsageQuery};
use metering::store::Store;
use rust_decimal::Decimal;

pub fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A running collector; killed when dropped. Its data dir outlives it, for restarts.
pub struct Running {
    pub service: Service,
    pub data_dir: PathBuf,
    pub http_url: String,
    pub grpc_url: String,
    pub admin_url: String,
}

/// Starts the collector with keys `initech-key` and `globex-key` (tenant keys, pinning
/// tenants initech and globex), `agent-key` and `host-key` (agent keys: they name tenants) and
/// `sidecar-key` (an agent key that may name acme only, without kernel usage reports), anonymous
/// senders allowed, flushing every 100 ms.
pub async fn start_collector(server: &ClickHouseServer, db: &str, dir: &Path, extra: &[&str]) -> Running {
    start_collector_at(&server.http_url(), db, dir, extra).await
}

/// [`start_collector`] against the ClickHouse server at `clickhouse_url` (e.g. one server of a cluster).
pub async fn start_collector_at(clickhouse_url: &str, db: &str, dir: &Path, extra: &[&str]) -> Running {
    launch(clickhouse_url, db, dir, true, extra).await
}

/// [`start_collector`] refusing senders without a key, as in production.
pub async fn start_keyed_collector(server: &ClickHouseServer, db: &str, dir: &Path, extra: &[&str]) -> Running {
    launch(&server.http_url(), db, dir, false, extra).await
}

async fn launch(clickhouse_url: &str, db: &str, dir: &Path, anonymous: bool, extra: &[&str]) -> Running {
    let keys = dir.join("keys.yaml");
    std::fs::write(
        &keys,
        format!(
            "keys:\n  - sha256: {}\n    tenant: initech\n  - sha256: {}\n    tenant: globex\n  - sha256: {}\n  - sha256: {}\n    tenants: [acme]\n    kernel_usage: false\n  - sha256: {}\n",
            sha256_hex("initech-key"),
            sha256_hex("globex-key"),
            sha256_hex("agent-key"),
            sha256_hex("sidecar-key"),
            sha256_hex("host-key")
        ),
    )
    .unwrap();
    let (grpc, http, admin) = (port(), port(), port());
    let data_dir = dir.join("data");
    let args = [
        "--grpc-listen",
        &format!("127.0.0.1:{grpc}"),
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--clickhouse-url",
        clickhouse_url,
        "--clickhouse-database",
        db,
        "--keys",
        keys.to_str().unwrap(),
        "--clickhouse-timeout-secs",
        "5",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--flush-interval-ms",
        "100",
    ];
    let admin_url = format!("http://127.0.0.1:{admin}");
    let anonymous = anonymous.then_some("--allow-anonymous");
    let mut service = Service::new(
        crate::service::binary("tally-collector"),
        args.iter().chain(&anonymous).map(|s| s.to_string()).collect(),
        admin_url.clone(),
    );
    service.start(extra).await.unwrap();
    Running {
        service,
        data_dir,
        http_url: format!("http://127.0.0.1:{http}"),
        grpc_url: format!("http://127.0.0.1:{grpc}"),
        admin_url,
    }
}

impl Running {
    /// (Re)starts the process with its arguments, those in `more` taking precedence.
    pub async fn start(&mut self, more: &[&str]) {
        self.service.start(more).await.unwrap();
    }

    pub fn kill9(&mut self) {
        self.service.kill9();
    }

    /// SIGTERM, then waits for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.service.terminate().unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.service.metrics().await.unwrap()
    }

    /// Waits until nothing is left in the spool: every acknowledged row is in ClickHouse.
    pub async fn settle(&self) {
        self.service.wait_for_line("tally_collector_spool_bytes 0", Duration::from_secs(60)).await.unwrap();
    }
}

/// A private ClickHouse with a migrated database named after `prefix`, and a client of it.
pub async fn setup(prefix: &str) -> (ClickHouseServer, String, ClickHouse) {
    let server = ClickHouseServer::start().unwrap();
    let db = server.database(prefix).unwrap();
    let ch = ClickHouse::new(&server.http_url(), Duration::from_secs(30)).unwrap();
    metering::store::migrate::migrate(&Store::new(ch.clone(), &db)).await.unwrap();
    (server, db, ch)
}

/// Usage per (tenant, meter) from yesterday to two days ahead.
pub async fn totals(ch: &ClickHouse, db: &str) -> BTreeMap<(String, String), Decimal> {
    let now = time::OffsetDateTime::now_utc();
    let from = now.replace_time(time::Time::MIDNIGHT) - time::Duration::days(1);
    let mut q = UsageQuery::new(from, from + time::Duration::days(3));
    q.granularity = Granularity::Month;
    let mut got = BTreeMap::new();
    for p in query_usage(&Store::new(ch.clone(), db), &q).await.unwrap() {
        *got.entry((p.tenant, p.meter)).or_insert(Decimal::ZERO) += p.value;
    }
    got
}

/// One meter of one tenant in `totals`, zero when absent.
pub fn value(got: &BTreeMap<(String, String), Decimal>, tenant: &str, meter: &str) -> Decimal {
    got.get(&(tenant.to_owned(), meter.to_owned())).copied().unwrap_or_default()
}

/// An OTLP/JSON trace request of `n` SERVER spans (each one request) of tenant `tenant`.
pub fn spans_json(tenant: &str, n: usize) -> String {
    let one = r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a","kind":2}"#;
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"tenant.id","value":{{"stringValue":"{tenant}"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        vec![one; n].join(",")
    )
}

/// A gRPC message frame: the compressed flag, the length, the message.
pub fn grpc_frame(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Exports the OTLP/JSON trace request `json` over gRPC (h2c) with the agent key and `headers`.
pub async fn grpc_export_traces(grpc_url: &str, json: &str, headers: &[(&str, String)]) -> reqwest::Response {
    grpc_export_traces_as(grpc_url, "agent-key", json, headers).await
}

/// [`grpc_export_traces`] with bearer key `key`.
pub async fn grpc_export_traces_as(
    grpc_url: &str,
    key: &str,
    json: &str,
    headers: &[(&str, String)],
) -> reqwest::Response {
    use prost::Message;
    let request: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest =
        serde_json::from_str(json).unwrap();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut post = h2
        .post(format!("{grpc_url}{}", otlp::grpc::TRACES_PATH))
        .header("content-type", "application/grpc")
        .header("authorization", format!("Bearer {key}"));
    for (name, value) in headers {
        post = post.header(*name, value);
    }
    post.body(grpc_frame(false, &request.encode_to_vec())).send().await.unwrap()
}
