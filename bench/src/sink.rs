//! The sink both forwarders send to: a real OTLP/gRPC receiver (the
//! collector's) in this process that counts spans and answers OK at once, so
//! the forwarder under test is the only thing being measured.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use otlp::{grpc, Consumer, Delivery, Grant, Outcome, Signal};
use runtime::serve::{self, Servers};

/// Spans received, with and without resends of a batch the sink already had.
#[derive(Default)]
pub struct Counts {
    /// Every span received.
    received: AtomicU64,
    /// Spans of batches seen for the first time (a request without a batch
    /// identity always counts).
    unique: AtomicU64,
    batches: Mutex<HashSet<String>>,
}

impl Counts {
    /// (received, unique) spans so far.
    pub fn get(&self) -> (u64, u64) {
        (self.received.load(Ordering::Relaxed), self.unique.load(Ordering::Relaxed))
    }
}

impl Consumer for Counts {
    fn authenticate(&self, _key: Option<&str>) -> Result<Grant, String> {
        Ok(Grant { batch_identity: true })
    }

    fn consume(&self, delivery: Delivery) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        if delivery.request.signal() == Signal::Traces {
            let spans = delivery.request.items();
            self.received.fetch_add(spans, Ordering::Relaxed);
            let first = match &delivery.batch {
                Some(id) => self.batches.lock().expect("not poisoned").insert(format!("{id:?}")),
                None => true,
            };
            if first {
                self.unique.fetch_add(spans, Ordering::Relaxed);
            }
        }
        Box::pin(async { Outcome::Accepted { rejected: 0, message: String::new() } })
    }
}

/// A running sink.
pub struct Sink {
    /// What it counted.
    pub counts: Arc<Counts>,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    servers: Option<Servers>,
}

impl Sink {
    /// Listens on a free loopback port.
    pub async fn start() -> Result<Self> {
        let counts = Arc::new(Counts::default());
        let addr: SocketAddr = format!("127.0.0.1:{}", testkit::service::free_port()).parse()?;
        let router = grpc::router(counts.clone(), otlp::DEFAULT_MAX_REQUEST_BYTES);
        let servers = serve::start(vec![("sink", addr, router)]).await?;
        Ok(Self { counts, url: format!("http://{addr}"), servers: Some(servers) })
    }

    /// Waits until `want` unique spans arrived (at most `timeout`); how long it took.
    pub async fn wait_for(&self, want: u64, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let (received, unique) = self.counts.get();
            if unique >= want {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!("the sink has {unique} of {want} spans after {timeout:?} ({received} received with resends)");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops listening.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.servers.take() {
            s.stop().await?;
        }
        Ok(())
    }
}
