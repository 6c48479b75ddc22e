//! The agent's OTLP consumer: what apps send is written to the WAL (stamped
//! with the default tenant in sidecar mode) and acknowledged once it is there.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use collector::measure::{attribute, TENANT_ATTRIBUTE};
use collector::otlp::{Consumer, Delivery, Outcome, Payload};
use collector::wal::{AppendError, Wal};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::metrics::Metrics;
use crate::record::Record;

/// How long apps are told to wait when the WAL is full.
pub const FULL_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Takes requests from apps into the WAL.
pub struct Intake {
    wal: Wal,
    boot: u64,
    tenant: Option<String>,
    metrics: Arc<Metrics>,
}

impl Intake {
    /// An intake appending to `wal` for the process `boot`, stamping `tenant`
    /// on resources that name none.
    pub fn new(wal: Wal, boot: u64, tenant: Option<String>, metrics: Arc<Metrics>) -> Self {
        Self { wal, boot, tenant, metrics }
    }

    async fn take(&self, delivery: Delivery) -> Outcome {
        let mut payload = match delivery.into_payload() {
            Ok(payload) => payload,
            Err(e) => return Outcome::Invalid(e.to_string()),
        };
        let (signal, items) = (payload.signal(), payload.items());
        if let Some(tenant) = &self.tenant {
            stamp(&mut payload, tenant);
        }
        let request = match &payload {
            Payload::Traces(r) => r.encode_to_vec(),
            Payload::Metrics(r) => r.encode_to_vec(),
            Payload::Logs(r) => r.encode_to_vec(),
        };
        let millis = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let record = Record { signal, boot: self.boot, accepted_millis: millis as u64, request: &request };
        match self.wal.append(record.encode()).await {
            Ok(()) => {
                self.metrics.count_items(signal.name(), "accepted", items);
                Outcome::Accepted { rejected: 0, message: String::new() }
            }
            Err(e) => {
                self.metrics.count_items(signal.name(), "refused", items);
                if !matches!(e, AppendError::Full { .. }) {
                    tracing::error!(error = %e, "writing the WAL failed; apps are told to retry");
                }
                Outcome::Unavailable { retry_after: FULL_RETRY_AFTER, message: format!("the agent cannot take data now: {e}") }
            }
        }
    }
}

impl Consumer for Intake {
    fn consume(&self, delivery: Delivery) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(self.take(delivery))
    }
}

/// Adds `tenant.id = tenant` to every resource that names no tenant.
fn stamp(payload: &mut Payload, tenant: &str) {
    let fill = |resource: &mut Option<Resource>| {
        let r = resource.get_or_insert_with(Resource::default);
        if attribute(&r.attributes, TENANT_ATTRIBUTE).is_none() {
            r.attributes.push(KeyValue {
                key: TENANT_ATTRIBUTE.to_owned(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue(tenant.to_owned())) }),
                ..Default::default()
            });
        }
    };
    match payload {
        Payload::Traces(r) => r.resource_spans.iter_mut().for_each(|x| fill(&mut x.resource)),
        Payload::Metrics(r) => r.resource_metrics.iter_mut().for_each(|x| fill(&mut x.resource)),
        Payload::Logs(r) => r.resource_logs.iter_mut().for_each(|x| fill(&mut x.resource)),
    }
}
