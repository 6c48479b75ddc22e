//! Reconciliation: per agent and tenant, the items an agent says it accepted
//! from apps against the items stored from its batches and the items it (or a
//! collector) reported dropped. The agent's books arrive as usage
//! (`agent_accepted_*`, `agent_acked_*`, `dropped_*{reason}`) in the agent's own
//! batches, so both sides are read from `usage` with the same exactly-once collapse
//! as every roll-up.
//!
//! An agent is its batches' source without the boot: the collector stores
//! `<key namespace>/agent:<agent id>:<boot, 16 hex digits>`, and items accepted in
//! one boot may ship in the next. `gap = accepted − stored − dropped`: zero once
//! everything accepted was shipped; positive while data waits in a WAL, or when
//! some was lost (a damaged WAL segment); negative if something counted twice.
//! Books are reported every interval, so a window's edges can split an interval:
//! reconcile over windows that end well after the agents' last report.
//!
//! ```
//! use metering::reconcile::agent_of;
//! assert_eq!(agent_of("3f2a1b/agent:node-7:00000000000000a1"), Some("3f2a1b/agent:node-7"));
//! assert_eq!(agent_of("collector:123:456"), None);
//! ```

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;
use time::OffsetDateTime;

use crate::clickhouse::sql::{BadIdentifier, Param, Sql};
use crate::report::decimal_text;
use crate::store::Store;
use crate::store::StoreError;

/// The item meters agents keep books for.
pub const SIGNALS: [&str; 3] = ["spans", "metric_points", "log_records"];

/// The agent of a batch source, `None` for sources that are not agents.
pub fn agent_of(source_id: &str) -> Option<&str> {
    let (agent, boot) = source_id.rsplit_once(':')?;
    let is_boot = boot.len() == 16 && boot.bytes().all(|b| b.is_ascii_hexdigit());
    (is_boot && agent.contains("agent:")).then_some(agent)
}

/// One agent, tenant and signal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Line {
    /// The agent (key namespace and agent id).
    pub agent: String,
    /// The tenant.
    pub tenant: String,
    /// `spans`, `metric_points` or `log_records`.
    pub signal: String,
    /// Items the agent accepted from apps.
    #[serde(serialize_with = "decimal_text")]
    pub accepted: Decimal,
    /// Items collectors acknowledged to the agent.
    #[serde(serialize_with = "decimal_text")]
    pub acked: Decimal,
    /// Items stored from the agent's batches.
    #[serde(serialize_with = "decimal_text")]
    pub stored: Decimal,
    /// Items dropped (by the agent or a collector), all reasons.
    #[serde(serialize_with = "decimal_text")]
    pub dropped: Decimal,
    /// Dropped items by reason.
    pub dropped_by_reason: BTreeMap<String, String>,
    /// accepted − stored − dropped.
    #[serde(serialize_with = "decimal_text")]
    pub gap: Decimal,
}

/// The query: per batch source, tenant, meter and reason, the collapsed sum of the
/// agents' item meters and books in `[from, to)`.
pub fn to_sql(db: &str, from: OffsetDateTime, to: OffsetDateTime) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new(
        "SELECT source_id, tenant, meter, reason, sum(v) FROM (SELECT source_id, tenant, meter, \
         visitParamExtractString(dimensions, 'reason') AS reason, max(value) AS v FROM ",
    )
    .ident(db)?
    .push(".usage WHERE window_start >= ")
    .bind(Param::DateTime(from.unix_timestamp() as u32))
    .push(" AND window_start < ")
    .bind(Param::DateTime(to.unix_timestamp() as u32))
    .push(
        " AND meter IN ('spans', 'metric_points', 'log_records', 'agent_accepted_spans', 'agent_accepted_metric_points', \
         'agent_accepted_log_records', 'agent_acked_spans', 'agent_acked_metric_points', 'agent_acked_log_records', \
         'dropped_spans', 'dropped_metric_points', 'dropped_log_records') AND position(source_id, 'agent:') > 0 \
         GROUP BY tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq) \
         GROUP BY source_id, tenant, meter, reason ORDER BY source_id, tenant, meter, reason",
    ))
}

/// The lines from [`to_sql`]'s rows (TabSeparated fields), by agent, tenant and signal.
pub fn lines(rows: Vec<Vec<String>>) -> Result<Vec<Line>, StoreError> {
    let mut out: BTreeMap<(String, String, String), Line> = BTreeMap::new();
    for row in rows {
        let bad = |reason: &str| StoreError::BadRow { row: row.clone(), reason: reason.to_owned() };
        let [source, tenant, meter, reason, value] =
            <[String; 5]>::try_from(row.clone()).map_err(|_| bad("expected 5 fields"))?;
        let value: Decimal = value.parse().map_err(|_| bad("sum is not a decimal"))?;
        let Some(agent) = agent_of(&source) else { continue };
        let books =
            [("accepted", "agent_accepted_"), ("acked", "agent_acked_"), ("dropped", "dropped_"), ("stored", "")];
        let Some((book, signal)) = books
            .iter()
            .find_map(|(book, prefix)| meter.strip_prefix(prefix).filter(|s| SIGNALS.contains(s)).map(|s| (*book, s)))
        else {
            continue;
        };
        let line = out.entry((agent.to_owned(), tenant.clone(), signal.to_owned())).or_insert_with(|| Line {
            agent: agent.to_owned(),
            tenant: tenant.clone(),
            signal: signal.to_owned(),
            ..Default::default()
        });
        match book {
            "stored" => line.stored += value,
            "accepted" => line.accepted += value,
            "acked" => line.acked += value,
            _ => {
                line.dropped += value;
                let slot = line.dropped_by_reason.entry(reason).or_insert_with(|| "0".to_owned());
                *slot = (slot.parse::<Decimal>().unwrap_or_default() + value).normalize().to_string();
            }
        }
    }
    Ok(out
        .into_values()
        .map(|mut l| {
            for d in [&mut l.accepted, &mut l.acked, &mut l.stored, &mut l.dropped] {
                *d = d.normalize();
            }
            l.gap = (l.accepted - l.stored - l.dropped).normalize();
            l
        })
        .collect())
}

/// Reconciles `[from, to)`.
pub async fn reconcile(store: &Store, from: OffsetDateTime, to: OffsetDateTime) -> Result<Vec<Line>, StoreError> {
    lines(store.ch().query_tsv(&to_sql(store.db(), from, to)?).await?)
}
