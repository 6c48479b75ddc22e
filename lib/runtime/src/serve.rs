//! What both binaries serve besides OTLP: the admin routes, and running a set
//! of listeners until shutdown.

use std::future::Future;
use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::routing::{get, MethodRouter};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `/healthz`, `/metrics` (from `render`) and `/readyz` (from `ready`).
pub fn admin_router<R, F>(render: impl Fn() -> String + Clone + Send + Sync + 'static, ready: R) -> Router
where
    R: Fn() -> F + Clone + Send + Sync + 'static,
    F: Future<Output = (StatusCode, String)> + Send + 'static,
{
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", metrics_route(render))
        .route("/readyz", get(ready))
}

/// `GET /metrics`: the OpenMetrics text `render` makes, with its content type. Every server
/// that exposes metrics (the admin routers, the billing API) serves them through this.
pub fn metrics_route<S>(render: impl Fn() -> String + Clone + Send + Sync + 'static) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(move || {
        let text = render();
        async move { ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], text) }
    })
}

/// Listeners being served; [`Servers::stop`] ends them gracefully.
pub struct Servers {
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    stop: watch::Sender<()>,
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("binding the {name} listener to {addr}: {source}")]
    Bind {
        /// Which listener.
        name: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A server failed while serving.
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
    /// A server's task panicked.
    #[error("a server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Binds every `(name, address, router)` and serves them.
pub async fn start(servers: Vec<(&'static str, SocketAddr, Router)>) -> Result<Servers, ServeError> {
    let (stop, stopped) = watch::channel(());
    let mut tasks = Vec::new();
    for (name, addr, router) in servers {
        let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { name, addr, source })?;
        tracing::info!(%addr, "{name} listening");
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.changed().await;
                })
                .await
        }));
    }
    Ok(Servers { tasks, stop })
}

impl Servers {
    /// Stops accepting, lets requests in flight finish, and returns when all have.
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(());
        for task in self.tasks {
            task.await??;
        }
        Ok(())
    }
}
