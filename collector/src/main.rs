//! `tally-collector`: OTLP/gRPC and OTLP/HTTP in, per-tenant usage into ClickHouse.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::http::StatusCode;
use axum::Router;
use metering::meter::definition;
use otlp::{grpc, http};
use runtime::serve;
use runtime::telemetry;
use tally_collector::keys::{Keys, Trust};
use tally_collector::limits::Limits;
use tally_collector::metrics::{count_responses, Metrics};
use tally_collector::pipeline::Pipeline;
use tally_collector::settings::Settings;
use tally_collector::sink::{Sink, SinkOptions};
use wal::{Fsync, Wal, WalOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let s: Settings = runtime::settings::parse();
    telemetry::init_logging(s.log_format);
    let keys = match &s.keys {
        Some(path) => Keys::load(path)?,
        None if s.allow_anonymous => Keys::default(),
        None => bail!("no --keys file and no --allow-anonymous: every sender would be refused"),
    };
    // One budget of bytes in flight for both transports.
    let receiver_limits =
        otlp::Limits::new(s.max_request_bytes, s.max_inflight_bytes).context("--max-inflight-bytes")?;
    let meters = match &s.meters {
        Some(path) => definition::load(path)?,
        None => Vec::new(),
    };
    let ch = s.store.client()?;
    let spool_dir = s.data_dir.join("spool");
    // Every acknowledged request is synced before its answer (group commit keeps that cheap).
    let flush_interval = Duration::from_millis(s.flush_interval_ms.max(1));
    let wal_options = WalOptions {
        max_bytes: s.spool_max_bytes,
        segment_bytes: 16 << 20,
        fsync: Fsync::Always,
        seal_after: Some(flush_interval),
        max_segments: wal::DEFAULT_MAX_SEGMENTS,
    };
    let metrics = Arc::new(Metrics::new(receiver_limits.inflight.clone()));
    // Sealed segments on their way to the sink. The spool holds at most `max_segments` files
    // and the sink removes one only after taking it from here, so this queue is never full
    // while that holds (an earlier run with a larger cap may leave more). If it is, the spool's
    // writer waits for the sink (backpressure: appends wait, then the spool refuses once its
    // bytes are reserved) and the wait is counted: a segment is never lost from the queue.
    let (sealed_tx, sealed) = tokio::sync::mpsc::channel(wal::DEFAULT_MAX_SEGMENTS as usize);
    let handoff = metrics.clone();
    let spool = Wal::open(&spool_dir, wal_options, move |s| match sealed_tx.try_send(s) {
        Ok(()) => {}
        Err(tokio::sync::mpsc::error::TrySendError::Full(s)) => {
            handoff.spool_queue_full.inc();
            tracing::warn!("the sink's queue of sealed spool segments is full; the spool's writer waits for it");
            // On the spool's writer thread, never a runtime's: blocking is allowed here.
            let _ = sealed_tx.blocking_send(s);
        }
        // The sink has stopped (shutting down): the segment stays on disk for the next start.
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
    })
    .context("opening the spool (--data-dir)")?;
    if spool.pending_bytes() > 0 {
        tracing::info!(bytes = spool.pending_bytes(), dir = %spool_dir.display(), "an earlier run left spooled usage; writing it to ClickHouse");
    }
    metrics.watch_spool(spool.clone());
    let sink_options =
        SinkOptions { max_insert_bytes: 64 << 20, shutdown_timeout: Duration::from_secs(s.shutdown_timeout_secs) };
    let sink = Sink::new(ch.clone(), &s.store.clickhouse_database, spool.clone(), metrics.clone(), sink_options)?;
    let (stop_sink, sink_stopped) = tokio::sync::watch::channel(());
    let sink = tokio::spawn(sink.run(sealed, sink_stopped));
    let started = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let source_id = format!("collector:{}:{started}", std::process::id());
    let limits = Limits::new(&s.tenant_limit, s.default_tenant_limit);
    let trust = Trust {
        keys,
        allow_anonymous: s.allow_anonymous,
        batch_max_age: Duration::from_secs(s.batch_max_age_hours.saturating_mul(3600)),
        report_bounds: measure::reported::Bounds {
            max_cores: s.max_report_cores,
            max_link_bits_per_second: s.max_report_link_bits_per_second,
            max_connections_per_second: s.max_report_connections_per_second,
        },
    };
    let pipeline = Arc::new(Pipeline::new(trust, spool.clone(), source_id, metrics.clone(), limits, meters.into()));
    let counted = |transport: &'static str, router: Router| {
        let metrics = metrics.clone();
        router.layer(axum::middleware::from_fn(move |req, next| count_responses(metrics.clone(), transport, req, next)))
    };

    let exposition = metrics.clone();
    let spool_max = s.spool_max_bytes;
    let admin = serve::admin_router(
        move || exposition.render(),
        move || {
            let (ch, spool) = (ch.clone(), spool.clone());
            // Ready while the spool takes data: a ClickHouse outage is what the spool is for.
            async move {
                let pending = spool.pending_bytes();
                let store = match ch.version().await {
                    Ok(v) => format!("ClickHouse {v} reachable"),
                    Err(e) => format!("ClickHouse unreachable ({e}); spooling"),
                };
                let status = if pending < spool_max { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, format!("spool {pending} of {spool_max} bytes; {store}\n"))
            }
        },
    );
    let servers = serve::start(vec![
        ("OTLP/gRPC", s.grpc_listen, counted("grpc", grpc::router_with(pipeline.clone(), receiver_limits.clone()))),
        ("OTLP/HTTP", s.http_listen, counted("http", http::router_with(pipeline.clone(), receiver_limits))),
        ("admin", s.admin_listen, admin),
    ])
    .await?;
    telemetry::shutdown_signal().await;
    servers.stop().await.context("serving")?;
    // Nothing is appended any more: write what is spooled before leaving.
    let _ = stop_sink.send(());
    sink.await.context("flushing the spool")?;
    Ok(())
}
