//! Versioned migrations, recorded in `tally_migrations`. Running them twice is
//! a no-op: applied versions are skipped and every statement is idempotent.

use tracing::info;

use super::cluster::{ClusterDdl, Step};
use super::{schema, Dialect, StoreError};
use crate::clickhouse::sql::{BadIdentifier, Sql};
use crate::clickhouse::ClickHouse;
use crate::store::Store;

/// Builds one statement for a database.
pub type StatementFor = fn(&str) -> Result<Sql, BadIdentifier>;

/// One schema change.
pub struct Migration {
    /// Increasing, never reused.
    pub version: u32,
    /// What it does.
    pub name: &'static str,
    /// Its statements for a database and dialect.
    pub statements: fn(&str, Dialect) -> Result<Vec<Sql>, BadIdentifier>,
    /// For a statement that cannot be made idempotent: a query answering a non-zero
    /// number when the change is already in place (a run interrupted before recording it).
    pub already_done: Option<StatementFor>,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "usage table",
        statements: |db, dialect| Ok(vec![schema::create_usage(db, dialect)?]),
        already_done: None,
    },
    Migration {
        version: 2,
        name: "sla table",
        statements: |db, dialect| Ok(vec![crate::sla::schema::create_sla(db, dialect)?]),
        already_done: None,
    },
    Migration {
        version: 3,
        name: "usage.unique_value and usage.aggregation for custom meters",
        statements: |db, _| Ok(vec![schema::add_custom_meter_columns(db)?]),
        already_done: Some(|db| Ok(schema::has_custom_meter_columns(db))),
    },
    Migration {
        version: 4,
        name: "sealed_usage, sealed_sla and periods tables for sealed months",
        statements: |db, _| {
            use crate::seal::schema::{create_periods, create_sealed_sla, create_sealed_usage};
            Ok(vec![create_sealed_usage(db)?, create_sealed_sla(db)?, create_periods(db)?])
        },
        already_done: None,
    },
    Migration {
        version: 5,
        name: "sealed_usage_daily and sealed_sla_hourly roll-ups of seals, periods.rollups",
        statements: |db, _| {
            use crate::seal::rollup::{add_periods_rollups, create_sla_hourly, create_usage_daily};
            // The ALTER last: a run interrupted before it creates the tables again (IF NOT
            // EXISTS); one interrupted after it is found done by `already_done`.
            Ok(vec![create_usage_daily(db)?, create_sla_hourly(db)?, add_periods_rollups(db)?])
        },
        already_done: Some(|db| Ok(crate::seal::rollup::has_periods_rollups(db))),
    },
    Migration {
        version: 6,
        name: "usage_settled, sla_settled and settle_folds for settled usage",
        statements: |db, _| {
            use crate::settle::schema::{create_settle_folds, create_sla_settled, create_usage_settled};
            Ok(vec![create_usage_settled(db)?, create_sla_settled(db)?, create_settle_folds(db)?])
        },
        already_done: None,
    },
    Migration {
        version: 7,
        name: "seal_verifications: every verification of a seal, served to readers",
        statements: |db, _| Ok(vec![crate::seal::verified::create_seal_verifications(db)?]),
        already_done: None,
    },
    Migration {
        version: 8,
        name: "usage_settled_daily, sla_settled_hourly and settle_rollups: settled rows rolled up by day",
        statements: |db, _| {
            use crate::settle::schema::{create_settle_rollups, create_sla_settled_hourly, create_usage_settled_daily};
            Ok(vec![create_usage_settled_daily(db)?, create_sla_settled_hourly(db)?, create_settle_rollups(db)?])
        },
        already_done: None,
    },
    Migration {
        version: 9,
        name: "usage_inserts and sla_inserts, the insert journals folds find batches by; settle_folds minutes",
        statements: |db, _| {
            use crate::settle::schema::{add_fold_minutes, backfill_inserts, create_inserts, create_inserts_view};
            use crate::settle::Table;
            let mut out = Vec::new();
            for table in Table::ALL {
                out.extend([create_inserts(db, table)?, create_inserts_view(db, table)?, backfill_inserts(db, table)?]);
            }
            // The ALTER last: a run stopped after it is found done by `already_done`.
            out.push(add_fold_minutes(db)?);
            Ok(out)
        },
        already_done: Some(|db| Ok(crate::settle::schema::has_fold_minutes(db))),
    },
];

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The server's dialect.
    pub dialect: Dialect,
    /// Versions applied by this run.
    pub applied: Vec<u32>,
    /// Versions that were already there.
    pub skipped: Vec<u32>,
}

/// The statements that create the database and the migrations table.
pub fn bootstrap(db: &str) -> Result<Vec<Sql>, BadIdentifier> {
    Ok(vec![
        Sql::new("CREATE DATABASE IF NOT EXISTS ").ident(db)?,
        Sql::new("CREATE TABLE IF NOT EXISTS ").ident(db)?.push(
            ".tally_migrations (version UInt32, name String, dialect String, \
             applied_at DateTime('UTC') DEFAULT now()) ENGINE = MergeTree ORDER BY version",
        ),
    ])
}

/// The query listing applied versions (one per row).
pub fn applied_versions(db: &str) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("SELECT DISTINCT version FROM ").ident(db)?.push(".tally_migrations ORDER BY version"))
}

/// The statement recording that `m` was applied.
pub fn record_applied(db: &str, m: &Migration, dialect: Dialect) -> Result<Sql, BadIdentifier> {
    Ok(Sql::new("INSERT INTO ")
        .ident(db)?
        .push(".tally_migrations (version, name, dialect) VALUES (")
        .bind(u64::from(m.version))
        .push(", ")
        .bind(m.name)
        .push(", ")
        .bind(dialect.as_str())
        .push(")"))
}

/// A cluster to migrate: its name and one server of each shard, for the few
/// statements that must run per shard (see [`super::cluster`]).
#[derive(Debug, Clone)]
pub struct ClusterTarget {
    /// The cluster's name in the servers' `<remote_servers>`.
    pub name: String,
    /// One client per shard.
    pub shards: Vec<ClickHouse>,
}

impl ClusterTarget {
    /// Finds the first replica of every shard in `system.clusters` of the server
    /// behind `ch`, reached like it (same scheme, port, credentials, settings).
    pub async fn discover(ch: &ClickHouse, name: &str) -> Result<Self, StoreError> {
        let hosts = Self::first_replicas(ch, name).await?;
        let shards: Vec<ClickHouse> = hosts.iter().map(|h| ch.with_host(h)).collect::<Result<_, _>>()?;
        // Servers sharing a host on different ports (a test cluster) cannot be told apart this
        // way; running a shard's statement on another shard's server would be wrong, not slow.
        let mut urls: Vec<&str> = shards.iter().map(ClickHouse::url).collect();
        urls.sort_unstable();
        urls.dedup();
        if urls.len() != shards.len() {
            return Err(StoreError::ShardsShareHost { cluster: name.to_owned(), url: ch.url().to_owned() });
        }
        Ok(Self { name: name.to_owned(), shards })
    }

    /// The cluster `name` with its shards' servers given (`shards[i]` serves shard i + 1), checked
    /// against the shard count in `system.clusters` of the server behind `ch`.
    pub async fn with_shards(ch: &ClickHouse, name: &str, shards: Vec<ClickHouse>) -> Result<Self, StoreError> {
        let found = Self::first_replicas(ch, name).await?.len();
        if found != shards.len() {
            return Err(StoreError::ShardCount {
                cluster: name.to_owned(),
                url: ch.url().to_owned(),
                shards: found,
                given: shards.len(),
            });
        }
        Ok(Self { name: name.to_owned(), shards })
    }

    /// The host of each shard's first replica, in shard order.
    async fn first_replicas(ch: &ClickHouse, name: &str) -> Result<Vec<String>, StoreError> {
        let hosts = ch
            .query_column(
                &Sql::new("SELECT host_name FROM system.clusters WHERE cluster = ")
                    .bind(name)
                    .push(" AND replica_num = 1 ORDER BY shard_num"),
            )
            .await?;
        if hosts.is_empty() {
            return Err(StoreError::NoCluster { cluster: name.to_owned(), url: ch.url().to_owned() });
        }
        Ok(hosts)
    }
}

/// What `tally migrate --clickhouse-cluster cluster` runs on a fresh cluster of `dialect`
/// servers, as a SQL script (`deploy/clickhouse/cluster/schema.sql` is this, for review).
pub fn cluster_script(cluster: &str, db: &str, dialect: Dialect) -> Result<String, StoreError> {
    let mut ddl = ClusterDdl::new(cluster, db, dialect)?;
    let mut out = String::new();
    let emit = |out: &mut String, steps: Vec<Step>| {
        for step in steps {
            let (note, sql) = match step {
                Step::OnCluster(sql) => ("", sql),
                Step::PerShard(sql) => ("-- on one server of each shard:\n", sql),
                Step::Local(sql) => ("-- on any one server:\n", sql),
            };
            out.push_str(&format!("{note}{};\n\n", sql.as_str()));
        }
    };
    for statement in bootstrap(db)? {
        emit(&mut out, ddl.rewrite(&statement)?);
    }
    for m in MIGRATIONS {
        out.push_str(&format!("-- migration {}: {}\n", m.version, m.name));
        for statement in (m.statements)(db, dialect)? {
            emit(&mut out, ddl.rewrite(&statement)?);
        }
        // Recorded through one server; `tally_migrations` replicates to every other.
        emit(&mut out, vec![Step::Local(record_applied(db, m, dialect)?)]);
    }
    Ok(out)
}

/// Brings database `db` up to the latest version.
pub async fn migrate(store: &Store) -> Result<MigrationReport, StoreError> {
    run(store, None).await
}

/// Brings database `db` up to the latest version on a cluster: every
/// migration's statements rewritten by [`ClusterDdl`], run `ON CLUSTER`
/// through `ch` (or per shard where the server needs it). Applied versions are
/// recorded in `tally_migrations`, which every server replicates.
pub async fn migrate_on_cluster(store: &Store, cluster: &ClusterTarget) -> Result<MigrationReport, StoreError> {
    run(store, Some(cluster)).await
}

async fn execute(
    ch: &ClickHouse,
    cluster: Option<(&mut ClusterDdl, &ClusterTarget)>,
    statement: &Sql,
) -> Result<(), StoreError> {
    let Some((ddl, target)) = cluster else {
        return Ok(ch.execute(statement).await?);
    };
    let steps = ddl.rewrite(statement)?;
    run_steps(ch, target, steps).await
}

async fn run_steps(ch: &ClickHouse, target: &ClusterTarget, steps: Vec<Step>) -> Result<(), StoreError> {
    for step in steps {
        match step {
            Step::OnCluster(sql) | Step::Local(sql) => ch.execute(&sql).await?,
            Step::PerShard(sql) => {
                for shard in &target.shards {
                    shard.execute(&sql).await?;
                }
            }
        }
    }
    Ok(())
}

async fn run(store: &Store, cluster: Option<&ClusterTarget>) -> Result<MigrationReport, StoreError> {
    let dialect = Dialect::detect(store.ch()).await?;
    let mut ddl = cluster.map(|c| ClusterDdl::new(&c.name, store.db(), dialect)).transpose()?;
    for statement in bootstrap(store.db())? {
        execute(store.ch(), ddl.as_mut().zip(cluster), &statement).await?;
    }
    if cluster.is_some() {
        // Versions recorded through another server may still be on their way here.
        store.ch().execute(&Sql::new("SYSTEM SYNC REPLICA ").ident(store.db())?.push(".tally_migrations")).await?;
    }
    let done: Vec<u32> = store
        .ch()
        .query_tsv(&applied_versions(store.db())?)
        .await?
        .into_iter()
        .filter_map(|row| row.first().and_then(|v| v.parse().ok()))
        .collect();
    let mut report = MigrationReport { dialect, applied: vec![], skipped: vec![] };
    for m in MIGRATIONS {
        let statements = (m.statements)(store.db(), dialect)?;
        if done.contains(&m.version) {
            if let Some(ddl) = &mut ddl {
                // Learns the tables it creates, for later ALTERs.
                for statement in &statements {
                    ddl.rewrite(statement)?;
                }
            }
            report.skipped.push(m.version);
            continue;
        }
        let in_place = match m.already_done {
            Some(check) => {
                // On a cluster the change is per shard (a run may stop between them): ask each.
                let servers: Vec<&ClickHouse> = cluster.map_or_else(|| vec![store.ch()], |c| c.shards.iter().collect());
                let (mut done, mut missing) = (Vec::new(), Vec::new());
                for server in servers {
                    let count = server.query_column(&check(store.db())?).await?;
                    let urls = if count.first().is_some_and(|n| n != "0") { &mut done } else { &mut missing };
                    urls.push(server.url().to_owned());
                }
                if !done.is_empty() && !missing.is_empty() {
                    return Err(StoreError::PartlyApplied { version: m.version, name: m.name, done, missing });
                }
                missing.is_empty()
            }
            None => false,
        };
        for statement in &statements {
            if !in_place {
                execute(store.ch(), ddl.as_mut().zip(cluster), statement).await?;
            } else if let Some((ddl, target)) = ddl.as_mut().zip(cluster) {
                // The change itself is not run again, but what follows it on a cluster (the
                // Distributed table's rebuild) may not have run before the stop.
                let rest = ddl.rewrite_in_place(statement)?;
                run_steps(store.ch(), target, rest).await?;
            }
        }
        store.ch().execute(&record_applied(store.db(), m, dialect)?).await?;
        info!(
            database = store.db(),
            version = m.version,
            name = m.name,
            dialect = dialect.as_str(),
            "migration applied"
        );
        report.applied.push(m.version);
    }
    Ok(report)
}
