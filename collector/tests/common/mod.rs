//! Shared by the receiver tests: a consumer that records what reached it and
//! answers with scripted outcomes, and the OTel Python SDK as the client.
#![allow(dead_code)]

pub mod collector;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use otlp::{Consumer, Delivery, Outcome, Signal};

#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<(&'static str, u64, Option<String>)>>,
    /// Outcomes to answer, in order; `Accepted` once they run out (unless `always` is set).
    pub script: Mutex<VecDeque<Outcome>>,
    pub always: Mutex<Option<Outcome>>,
}

impl Consumer for Recorder {
    fn consume(&self, d: Delivery) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + '_>> {
        let kind = match d.request.signal() {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "logs",
        };
        self.seen.lock().unwrap().push((kind, d.request.items(), d.key));
        let scripted = self.script.lock().unwrap().pop_front();
        let outcome = scripted
            .or_else(|| self.always.lock().unwrap().clone())
            .unwrap_or(Outcome::Accepted { rejected: 0, message: String::new() });
        Box::pin(async move { outcome })
    }
}

impl Recorder {
    pub fn total(&self, kind: &str) -> u64 {
        self.seen.lock().unwrap().iter().filter(|s| s.0 == kind).map(|s| s.1).sum()
    }
    pub fn set(&self, outcome: Outcome) {
        *self.always.lock().unwrap() = Some(outcome);
    }
}

/// Serves `router` on a free loopback port; returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

pub fn recorder() -> Arc<Recorder> {
    Arc::new(Recorder::default())
}

/// Runs python/send_otlp.py (the official SDK and exporters) against `base`.
pub async fn sdk(base: &str, protocol: &str, args: &[&str]) -> serde_json::Value {
    testkit::sdk::run("send_otlp.py", base, protocol, args).await
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
    use prost::Message;
    let request: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest =
        serde_json::from_str(json).unwrap();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut post = h2
        .post(format!("{grpc_url}{}", otlp::grpc::TRACES_PATH))
        .header("content-type", "application/grpc")
        .header("authorization", "Bearer agent-key");
    for (name, value) in headers {
        post = post.header(*name, value);
    }
    post.body(grpc_frame(false, &request.encode_to_vec())).send().await.unwrap()
}
