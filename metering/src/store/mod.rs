//! The usage store in ClickHouse: schema, migrations, the batched writer and
//! the roll-up queries the billing API serves.

pub mod cluster;
pub mod granularity;
pub mod migrate;
pub mod rollup;
pub mod schema;
pub mod writer;

use std::time::Duration;

use crate::clickhouse::sql::BadIdentifier;
use crate::clickhouse::{ClickHouse, ClickHouseError};

/// Where usage is stored: the settings every binary that reads or writes it shares.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreSettings {
    /// ClickHouse HTTP URL; credentials may go in it (http://user:password@host:8123).
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    pub clickhouse_url: String,
    /// ClickHouse database holding Tally's tables.
    #[arg(long, default_value = "tally")]
    pub clickhouse_database: String,
    /// Timeout of one ClickHouse request, in seconds.
    #[arg(long, default_value_t = 30)]
    pub clickhouse_timeout_secs: u64,
    /// ClickHouse cluster (a name in the servers' remote_servers): migrations run ON CLUSTER, tables with a tenant are
    /// replicated and sharded by tenant behind Distributed tables, and writes wait for every shard (default: one server)
    #[arg(long)]
    pub clickhouse_cluster: Option<String>,
}

/// The usage store: a ClickHouse server and the database Tally's tables live in. Every read and
/// write of stored usage, SLA rows, seals and prices goes through one.
#[derive(Debug, Clone)]
pub struct Store {
    ch: ClickHouse,
    db: String,
}

impl Store {
    /// The store in database `db` of server `ch`.
    pub fn new(ch: ClickHouse, db: &str) -> Self {
        Self { ch, db: db.to_owned() }
    }

    /// The same database reached through `ch` (e.g. a client sending per-query limits).
    pub fn with_ch(&self, ch: ClickHouse) -> Self {
        Self { ch, db: self.db.clone() }
    }

    /// Its server.
    pub fn ch(&self) -> &ClickHouse {
        &self.ch
    }

    /// Its database.
    pub fn db(&self) -> &str {
        &self.db
    }
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "database {} on {}", self.db, self.ch.url())
    }
}

impl StoreSettings {
    /// A client for the configured server. In cluster mode its inserts into a
    /// Distributed table return only once every shard has stored the rows
    /// (`insert_distributed_sync`): an acknowledged write is stored on one
    /// replica of its shard, not queued on the server that took it. The shard's
    /// other replicas get it by replication, so a read that reaches one of them
    /// an instant later can miss it (never double it) until they have.
    ///
    /// Its subqueries over a Distributed table inside a query over another
    /// (`distributed_product_mode=local`) read each shard's own table: a tenant's
    /// rows of every table sharded by tenant are on one shard, so a settled read's
    /// test of batch identities needs nothing from the other shards.
    pub fn client(&self) -> Result<ClickHouse, ClickHouseError> {
        let ch = ClickHouse::new(&self.clickhouse_url, Duration::from_secs(self.clickhouse_timeout_secs))?;
        Ok(match self.clickhouse_cluster {
            Some(_) => {
                ch.with_setting("insert_distributed_sync", "1").with_setting("distributed_product_mode", "local")
            }
            None => ch,
        })
    }

    /// The configured store: [`StoreSettings::client`] and the database.
    pub fn store(&self) -> Result<Store, ClickHouseError> {
        Ok(Store::new(self.client()?, &self.clickhouse_database))
    }
}

/// Which DDL a server gets. 18.16 (Debian's package, our test server) lacks
/// codecs and needs a setting for LowCardinality; servers from 20.1 on have both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// ClickHouse before 20.1.
    Legacy,
    /// ClickHouse 20.1 and later.
    Modern,
}

impl Dialect {
    /// The dialect of a server reporting `version` (`18.16.1`, `26.9.2.1`).
    ///
    /// ```
    /// use metering::store::Dialect;
    /// assert_eq!(Dialect::from_version("18.16.1"), Dialect::Legacy);
    /// assert_eq!(Dialect::from_version("23.8.2.7"), Dialect::Modern);
    /// ```
    pub fn from_version(version: &str) -> Self {
        let major: u32 = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
        if major >= 20 {
            Dialect::Modern
        } else {
            Dialect::Legacy
        }
    }

    /// Asks the server.
    pub async fn detect(ch: &ClickHouse) -> Result<Self, ClickHouseError> {
        Ok(Self::from_version(&ch.version().await?))
    }

    /// `legacy` or `modern`, as recorded in `tally_migrations`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Dialect::Legacy => "legacy",
            Dialect::Modern => "modern",
        }
    }
}

/// A failure of the usage store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// ClickHouse failed.
    #[error(transparent)]
    ClickHouse(#[from] ClickHouseError),
    /// The database name is not a valid identifier.
    #[error("database: {0}")]
    Database(#[from] BadIdentifier),
    /// A migration statement cluster mode cannot rewrite.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterDdlError),
    /// The cluster is not in the server's `system.clusters`.
    #[error("cluster {cluster:?} is not in system.clusters of {url}; check remote_servers in the server's config")]
    NoCluster {
        /// The name asked for.
        cluster: String,
        /// The server asked.
        url: String,
    },
    /// Two shards' first replicas are on one host, so they cannot be reached by host name.
    #[error("cluster {cluster:?} in system.clusters of {url} has shards on one host; name one server per shard with --clickhouse-shard-url")]
    ShardsShareHost {
        /// The name asked for.
        cluster: String,
        /// The server asked.
        url: String,
    },
    /// A migration's change is in place on some shards and not on others (a run stopped
    /// between them, or a shard was changed by hand).
    #[error("migration {version} ({name}) is in place on {done:?} but not on {missing:?}; finish it there by hand (see the statements in deploy/clickhouse/cluster/schema.sql), then run migrate again")]
    PartlyApplied {
        /// The migration.
        version: u32,
        /// Its name.
        name: &'static str,
        /// Shards' servers that have it.
        done: Vec<String>,
        /// Shards' servers that do not.
        missing: Vec<String>,
    },
    /// The servers named per shard are not one per shard of the cluster.
    #[error("cluster {cluster:?} in system.clusters of {url} has {shards} shards, but {given} shard URLs were given")]
    ShardCount {
        /// The name asked for.
        cluster: String,
        /// The server asked.
        url: String,
        /// Shards in system.clusters.
        shards: usize,
        /// URLs given.
        given: usize,
    },
    /// The server returned a row this code cannot read.
    #[error("unreadable usage row {row:?}: {reason}")]
    BadRow {
        /// The row's fields.
        row: Vec<String>,
        /// Why.
        reason: String,
    },
}
