//! `tally-agent`: OTLP/gRPC and OTLP/HTTP from apps, through a disk WAL, to collectors.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::http::StatusCode;
use metering::meter::definition;
use otlp::{grpc, http};
use runtime::serve;
use tally_agent::admission::Admission;
use tally_agent::forward::Collector;
use tally_agent::identity;
use tally_agent::intake::Intake;
use tally_agent::kernel::{Collecting, KernelError, KernelOptions, KernelUsage};
use tally_agent::ledger::Ledger;
use tally_agent::metrics::Metrics;
use tally_agent::report;
use tally_agent::settings::{Compression, Settings};
use tally_agent::ship::{Backlog, ShipOptions, Shipper, Upstream};
use tonic::codec::CompressionEncoding;
use wal::{Fsync, Wal, WalOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let s: Settings = runtime::settings::parse();
    runtime::telemetry::init_logging(s.log_format);
    if s.collector.is_empty() {
        bail!("no --collector: the agent would accept data it can send nowhere");
    }
    if let Some(t) = &s.tenant {
        metering::record::validate_tenant(t).context("--tenant")?;
    }
    // The collectors' file: what their custom meters refuse is then answered to apps here.
    let meters = match &s.meters {
        Some(path) => definition::load(path)?,
        None => Vec::new(),
    };
    // One budget of bytes in flight for both transports.
    let limits = otlp::Limits::new(s.max_request_bytes, s.max_inflight_bytes).context("--max-inflight-bytes")?;
    let timeout = Duration::from_secs(s.collector_timeout_secs);
    let compression = match s.compression {
        Compression::Zstd => Some(CompressionEncoding::Zstd),
        Compression::Gzip => Some(CompressionEncoding::Gzip),
        Compression::None => None,
    };
    let collectors = s
        .collector
        .iter()
        .map(|url| Collector::new(url, timeout, compression))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&s.data_dir).with_context(|| format!("creating --data-dir {}", s.data_dir.display()))?;
    let agent_id = identity::agent_id(&s.data_dir)?;
    let boot = identity::random_u64()?;
    let fsync = if s.wal_fsync_ms == 0 { Fsync::Always } else { Fsync::Every(Duration::from_millis(s.wal_fsync_ms)) };
    // Small segments: a segment is read whole when it is shipped, so this bounds memory. They
    // hold two batches at least, else a larger --batch-max-bytes would not make larger batches.
    let segment_bytes = (s.wal_max_bytes / 8).clamp(1 << 20, (8 << 20).max(2 * s.batch_max_bytes as u64));
    let seal_after = Some(Duration::from_millis(s.flush_interval_ms.max(1)));
    // The segment cap bounds the shipper's backlog of sealed segments (see wal::DEFAULT_MAX_SEGMENTS).
    let wal_options = WalOptions {
        max_bytes: s.wal_max_bytes,
        segment_bytes,
        fsync,
        seal_after,
        max_segments: wal::DEFAULT_MAX_SEGMENTS,
    };
    let backlog = Arc::new(Backlog::default());
    let sealed = backlog.clone();
    let wal = Wal::open(&s.data_dir.join("wal"), wal_options, move |segment| sealed.sealed(segment))
        .context("opening the WAL (--data-dir)")?;
    tracing::info!(
        agent_id,
        boot = format!("{boot:016x}"),
        pending_bytes = wal.pending_bytes(),
        custom_meters = meters.len(),
        "tally-agent starting"
    );

    let metrics = Arc::new(Metrics::new(limits.inflight.clone()));
    metrics.watch_wal(wal.clone());
    let ship_options = ShipOptions {
        batch_max_bytes: s.batch_max_bytes.max(1),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(s.max_backoff_secs.max(1)),
        shutdown_timeout: Duration::from_secs(s.shutdown_timeout_secs),
        segments_in_flight: s.segments_in_flight.max(1),
    };
    let ledger = Arc::new(Ledger::new());
    let shipper = Shipper::new(
        Upstream { collectors, key: s.key.clone(), agent_id },
        wal.clone(),
        backlog.clone(),
        ledger.clone(),
        boot,
        metrics.clone(),
        ship_options,
    );
    let (stop_shipper, shipper_stopped) = tokio::sync::watch::channel(());
    let shipper = tokio::spawn(shipper.run(shipper_stopped));

    let report_interval = Duration::from_secs(s.report_interval_secs.max(1));
    let kernel = kernel_usage(&s, ledger.clone(), metrics.clone(), report_interval)?;
    let reporter = tokio::spawn(report::run(ledger.clone(), wal.clone(), boot, report_interval));
    let intake = Arc::new(Intake::new(
        wal.clone(),
        boot,
        Admission { tenant: s.tenant.clone(), meters: meters.into() },
        s.wal_full,
        backlog,
        ledger.clone(),
        metrics.clone(),
    ));
    let exposition = metrics.clone();
    let wal_max = s.wal_max_bytes;
    let admin = serve::admin_router(
        move || exposition.render(),
        move || {
            let pending = wal.pending_bytes();
            async move {
                let status = if pending < wal_max { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, format!("WAL {pending} of {wal_max} bytes\n"))
            }
        },
    );
    let servers = serve::start(vec![
        ("OTLP/gRPC", s.otlp_grpc_listen, grpc::router_with(intake.clone(), limits.clone())),
        ("OTLP/HTTP", s.otlp_http_listen, http::router_with(intake.clone(), limits)),
        ("admin", s.admin_listen, admin),
    ])
    .await?;
    runtime::telemetry::shutdown_signal().await;
    servers.stop().await.context("serving")?;
    // The shipper writes the last report once it has shipped what waits: the probes' last
    // reading goes into it.
    reporter.abort();
    if let Some(k) = kernel {
        tokio::task::spawn_blocking(move || k.stop()).await.context("stopping the eBPF probes")?;
    }
    let _ = stop_shipper.send(());
    shipper.await.context("forwarding the WAL")?;
    Ok(())
}

/// The eBPF probes reading into `ledger`, or `None` when they are off: turned off, or not
/// possible here (the agent then runs OTLP-only and says why). A malformed rule stops the agent.
fn kernel_usage(
    s: &Settings,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    every: Duration,
) -> anyhow::Result<Option<Collecting>> {
    if s.no_ebpf {
        tracing::info!("eBPF usage probes off (--no-ebpf)");
        metrics.ebpf_state("disabled", "");
        return Ok(None);
    }
    let options = KernelOptions { cgroup_root: s.cgroup_root.clone(), rules: s.cgroup_tenant.clone() };
    match KernelUsage::load(&options) {
        Ok(usage) => {
            tracing::info!(
                rules = options.rules.len(),
                "eBPF usage probes on: cpu_seconds, net_rx_bytes, net_tx_bytes, tcp_connections per tenant"
            );
            metrics.ebpf_state("on", "");
            Ok(Some(Collecting::start(usage, ledger, metrics, every)))
        }
        Err(KernelError::Rule(e)) => Err(anyhow::anyhow!("--cgroup-tenant: {e}")),
        Err(KernelError::Probe(e)) => {
            let missing = e.missing().unwrap_or_else(|| "error".into());
            tracing::warn!(missing, error = %e, "eBPF usage probes unavailable; running OTLP-only");
            metrics.ebpf_state("off", &missing);
            Ok(None)
        }
    }
}
