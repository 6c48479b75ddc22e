//! Shared by the receiver tests: a consumer that records what reached it and
//! answers with scripted outcomes, and the OTel Python SDK as the client.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use otlp::{Consumer, Delivery, Grant, Outcome, Signal};

#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<(&'static str, u64, Option<String>)>>,
    /// Outcomes to answer, in order; `Accepted` once they run out (unless `always` is set).
    pub script: Mutex<VecDeque<Outcome>>,
    pub always: Mutex<Option<Outcome>>,
}

impl Consumer for Recorder {
    fn authenticate(&self, _key: Option<&str>) -> Result<Grant, String> {
        Ok(Grant { batch_identity: true })
    }

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
    testkit::sdk::send_otlp(base, protocol, args).await
}
