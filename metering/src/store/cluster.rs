//! Cluster mode (`--clickhouse-cluster NAME`): every migration's DDL, as
//! written for one server, rewritten for a ClickHouse cluster. Migrations stay
//! single-node SQL; this is the one place that knows about clusters, so a
//! migration added later needs no cluster work of its own (a statement this
//! cannot rewrite is an error naming it, and a unit test runs every migration
//! through it).
//!
//! The layout, decided per table by whether it has a `tenant` column:
//!
//! * **Tenant tables** (`usage`, `sla`, ...) are sharded by tenant. The rows
//!   live in `<table>_local`, a `Replicated*MergeTree` at
//!   `/clickhouse/tables/{shard}/<db>.<table>` with replica `{replica}`, and
//!   `<table>` becomes a `Distributed` table over it, sharded by
//!   `cityHash64(tenant)`. Every reader and writer keeps using `<table>`, so
//!   all reads and writes go through the Distributed table. One tenant's rows,
//!   and so every resent copy of one batch's rows, land on one shard.
//! * **Other tables** (`tally_migrations`) are small and global: one replicated
//!   table with every server of the cluster as a replica (path
//!   `/clickhouse/tables/all/<db>.<table>`, replica `{shard}-{replica}`), read
//!   locally on any server. For `tally_migrations` this means a migration
//!   recorded through one server is seen through every other: the schema is a
//!   fact about the cluster, not about one node.
//!
//! Statements run `ON CLUSTER NAME`, except one case ClickHouse 18.16 refuses:
//! its DDL queue takes only some ALTERs (ADD/DROP/MODIFY COLUMN, partitions,
//! mutations, not MODIFY ORDER BY). Such an ALTER runs on one replica of every
//! shard ([`Step::PerShard`]); replication carries it to the shard's other
//! replicas. After an ALTER that changes columns, the Distributed table is
//! rebuilt from its local table (18.16 cannot ALTER a Distributed table
//! `ON CLUSTER` when shards replicate internally).

use std::collections::BTreeMap;

use super::Dialect;
use crate::clickhouse::sql::{check_identifier, BadIdentifier, Sql};

/// The column a table must have to be sharded, and its sharding key.
const SHARD_COLUMN: &str = "tenant";
const SHARDING_KEY: &str = "cityHash64(tenant)";
/// The suffix of the replicated table behind a Distributed one.
pub const LOCAL_SUFFIX: &str = "_local";

/// Where a rewritten statement runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Once, through any server: it carries `ON CLUSTER`.
    OnCluster(Sql),
    /// Once on one replica of every shard (replication does the rest).
    PerShard(Sql),
    /// Once, on the server at hand (replication does the rest).
    Local(Sql),
}

/// How a table is laid out on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// `<table>_local` on each shard behind a Distributed `<table>`.
    Sharded,
    /// One replicated table on every server.
    Global,
}

/// A statement cluster mode cannot rewrite.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterDdlError {
    /// The cluster name is not an identifier.
    #[error("cluster name: {0}")]
    Name(#[from] BadIdentifier),
    /// A statement of a form this does not know.
    #[error("cluster mode cannot rewrite this statement ({reason}); extend store::cluster: {statement}")]
    Unsupported {
        /// Why.
        reason: &'static str,
        /// The statement.
        statement: String,
    },
}

/// The rewriter for one cluster and database. It learns each table's kind from
/// the CREATE statements it sees, so feed it every migration in order
/// (including ones already applied) before the ALTERs that follow them.
#[derive(Debug, Clone)]
pub struct ClusterDdl {
    cluster: String,
    db: String,
    dialect: Dialect,
    tables: BTreeMap<String, TableKind>,
}

impl ClusterDdl {
    /// A rewriter for cluster `cluster` (as in `<remote_servers>`) and database `db`.
    pub fn new(cluster: &str, db: &str, dialect: Dialect) -> Result<Self, ClusterDdlError> {
        check_identifier(cluster)?;
        check_identifier(db)?;
        Ok(Self { cluster: cluster.to_owned(), db: db.to_owned(), dialect, tables: BTreeMap::new() })
    }

    /// The kind of a table created so far.
    pub fn kind(&self, table: &str) -> Option<TableKind> {
        self.tables.get(table).copied()
    }

    /// Rewrites one single-node statement into the steps that do it on the cluster.
    ///
    /// ```
    /// use metering::store::{cluster::{ClusterDdl, Step}, Dialect};
    /// use metering::clickhouse::sql::Sql;
    /// let mut ddl = ClusterDdl::new("tally", "db", Dialect::Legacy).unwrap();
    /// let steps = ddl.rewrite(&Sql::new("CREATE DATABASE IF NOT EXISTS `db`")).unwrap();
    /// assert_eq!(steps, vec![Step::OnCluster(Sql::new("CREATE DATABASE IF NOT EXISTS `db` ON CLUSTER `tally`"))]);
    /// ```
    pub fn rewrite(&mut self, statement: &Sql) -> Result<Vec<Step>, ClusterDdlError> {
        let text = statement.as_str();
        let unsupported = |reason| ClusterDdlError::Unsupported { reason, statement: text.to_owned() };
        if let Some(rest) = text.strip_prefix("CREATE DATABASE IF NOT EXISTS ") {
            if rest != format!("`{}`", self.db) {
                return Err(unsupported("another database"));
            }
            return Ok(vec![Step::OnCluster(self.sql(format!("{text} ON CLUSTER `{}`", self.cluster)))]);
        }
        if let Some(rest) = text.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
            return self
                .create_table(rest)
                .ok_or_else(|| unsupported("expected `db`.table (columns) ENGINE = *MergeTree ..."))?;
        }
        if let Some(rest) = text.strip_prefix("ALTER TABLE ") {
            return self
                .alter_table(rest)
                .ok_or_else(|| unsupported("expected ALTER TABLE `db`.table of a table created before"))?;
        }
        if let Some(rest) = text.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
            return self.create_view(rest).ok_or_else(|| {
                unsupported(
                    "expected `db`.view TO `db`.table AS SELECT ... FROM `db`.table ..., both tables created before",
                )
            });
        }
        // Data a migration moves (a backfill): once, through the Distributed tables.
        if text.starts_with("INSERT INTO ") {
            return Ok(vec![Step::Local(statement.clone())]);
        }
        Err(unsupported(
            "only CREATE DATABASE IF NOT EXISTS, CREATE TABLE IF NOT EXISTS, CREATE MATERIALIZED VIEW IF NOT EXISTS, \
             ALTER TABLE and INSERT INTO are known",
        ))
    }

    /// The steps of `statement` still to run when its change is already in place (a migration
    /// stopped part-way, after an ALTER ran and before it was recorded): the rebuild of the
    /// Distributed table that follows a column change, idempotent as a whole; nothing else.
    pub fn rewrite_in_place(&mut self, statement: &Sql) -> Result<Vec<Step>, ClusterDdlError> {
        let mut steps = self.rewrite(statement)?;
        if !statement.as_str().starts_with("ALTER TABLE ") || steps.is_empty() {
            return Ok(vec![]);
        }
        // An ALTER's first step is the change itself (`alter_table`).
        steps.remove(0);
        Ok(steps)
    }

    fn sql(&self, text: String) -> Sql {
        Sql::rewritten(text)
    }

    /// Splits `` `db`.table rest `` into the table and the rest.
    fn table_of<'a>(&self, text: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = text.strip_prefix(&format!("`{}`.", self.db))?;
        let end = rest.find([' ', '(']).unwrap_or(rest.len());
        let table = rest[..end].trim_matches('`');
        check_identifier(table).ok()?;
        Some((&rest[..end], &rest[end..]))
    }

    fn create_table(&mut self, text: &str) -> Option<Result<Vec<Step>, ClusterDdlError>> {
        let (table, rest) = self.table_of(text)?;
        let rest = rest.trim_start();
        let close = matching_paren(rest)?;
        let columns = &rest[1..close];
        let after = rest[close + 1..].trim_start().strip_prefix("ENGINE = ")?;
        let engine_end = after.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(after.len());
        let engine = &after[..engine_end];
        if !engine.ends_with("MergeTree") || engine.starts_with("Replicated") {
            return None;
        }
        let mut tail = &after[engine_end..];
        let mut args = "";
        if tail.starts_with('(') {
            let close = matching_paren(tail)?;
            args = &tail[1..close];
            tail = &tail[close + 1..];
        }
        let sharded = split_top_level(columns).iter().any(|c| c.split_whitespace().next() == Some(SHARD_COLUMN));
        let (db, cluster) = (&self.db, &self.cluster);
        let extra = if args.trim().is_empty() { String::new() } else { format!(", {args}") };
        if sharded {
            self.tables.insert(table.to_owned(), TableKind::Sharded);
            let local = format!("{table}{LOCAL_SUFFIX}");
            Some(Ok(vec![
                Step::OnCluster(self.sql(format!(
                    "CREATE TABLE IF NOT EXISTS `{db}`.{local} ON CLUSTER `{cluster}` ({columns}) ENGINE = Replicated{engine}\
                     ('/clickhouse/tables/{{shard}}/{db}.{table}', '{{replica}}'{extra}){tail}"
                ))),
                Step::OnCluster(self.distributed(table, table)),
            ]))
        } else {
            self.tables.insert(table.to_owned(), TableKind::Global);
            Some(Ok(vec![Step::OnCluster(self.sql(format!(
                "CREATE TABLE IF NOT EXISTS `{db}`.{table} ON CLUSTER `{cluster}` ({columns}) ENGINE = Replicated{engine}\
                 ('/clickhouse/tables/all/{db}.{table}', '{{shard}}-{{replica}}'{extra}){tail}"
            )))]))
        }
    }

    /// A materialized view on every server, between the local tables behind sharded ones: it
    /// sees the blocks inserted into its server's replica (a replica that fetches a part does not
    /// run it: the target table replicates on its own).
    fn create_view(&self, text: &str) -> Option<Vec<Step>> {
        let (view, rest) = self.table_of(text)?;
        let (target, rest) = self.table_of(rest.strip_prefix(" TO ")?)?;
        let select = rest.strip_prefix(" AS SELECT ")?;
        let from = select.find(&format!(" FROM `{}`.", self.db))?;
        let (source, tail) = self.table_of(&select[from + " FROM ".len()..])?;
        let local = |table: &str| -> Option<String> {
            Some(match self.kind(table)? {
                TableKind::Sharded => format!("{table}{LOCAL_SUFFIX}"),
                TableKind::Global => table.to_owned(),
            })
        };
        let (db, cluster) = (&self.db, &self.cluster);
        Some(vec![Step::OnCluster(self.sql(format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.{view} ON CLUSTER `{cluster}` TO `{db}`.{} AS SELECT {} FROM \
             `{db}`.{}{tail}",
            local(target)?,
            &select[..from],
            local(source)?,
        )))])
    }

    /// `CREATE TABLE name ON CLUSTER AS table_local ENGINE = Distributed(...)`:
    /// the local table's columns as each server has them.
    fn distributed(&self, table: &str, name: &str) -> Sql {
        let (db, cluster) = (&self.db, &self.cluster);
        self.sql(format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.{name} ON CLUSTER `{cluster}` AS `{db}`.{table}{LOCAL_SUFFIX} \
             ENGINE = Distributed(`{cluster}`, `{db}`, {table}{LOCAL_SUFFIX}, {SHARDING_KEY})"
        ))
    }

    fn alter_table(&mut self, text: &str) -> Option<Result<Vec<Step>, ClusterDdlError>> {
        let (table, rest) = self.table_of(text)?;
        let clauses = rest.trim_start();
        let kind = self.kind(table)?;
        let (db, cluster) = (&self.db, &self.cluster);
        if kind == TableKind::Global {
            // Every server is a replica of it: one ALTER replicates everywhere.
            return Some(Ok(vec![Step::Local(self.sql(format!("ALTER TABLE `{db}`.{table} {clauses}")))]));
        }
        let parts = split_top_level(clauses);
        let queue_takes_all = self.dialect == Dialect::Modern || parts.iter().all(|c| legacy_ddl_queue_takes(c));
        // The change first, then what follows from it (`rewrite_in_place` relies on this order).
        let mut steps = vec![if queue_takes_all {
            Step::OnCluster(
                self.sql(format!("ALTER TABLE `{db}`.{table}{LOCAL_SUFFIX} ON CLUSTER `{cluster}` {clauses}")),
            )
        } else {
            Step::PerShard(self.sql(format!("ALTER TABLE `{db}`.{table}{LOCAL_SUFFIX} {clauses}")))
        }];
        if parts.iter().any(|c| changes_columns(c)) {
            // Swap in a Distributed table with the new columns: built beside the
            // old one, then both renamed in one statement, so writers always find one.
            let (new, old) = (format!("{table}__dist_new"), format!("{table}__dist_old"));
            steps.push(Step::OnCluster(self.sql(format!("DROP TABLE IF EXISTS `{db}`.{new} ON CLUSTER `{cluster}`"))));
            steps.push(Step::OnCluster(self.sql(format!("DROP TABLE IF EXISTS `{db}`.{old} ON CLUSTER `{cluster}`"))));
            steps.push(Step::OnCluster(self.distributed(table, &new)));
            steps.push(Step::OnCluster(self.sql(format!(
                "RENAME TABLE `{db}`.{table} TO `{db}`.{old}, `{db}`.{new} TO `{db}`.{table} ON CLUSTER `{cluster}`"
            ))));
            steps.push(Step::OnCluster(self.sql(format!("DROP TABLE IF EXISTS `{db}`.{old} ON CLUSTER `{cluster}`"))));
        }
        Some(Ok(steps))
    }
}

/// Whether 18.16's `ON CLUSTER` queue accepts this ALTER clause (its
/// `isSupportedAlterType`: columns, partitions, mutations; not MODIFY ORDER BY).
fn legacy_ddl_queue_takes(clause: &str) -> bool {
    ["ADD COLUMN", "DROP COLUMN", "MODIFY COLUMN", "DROP PARTITION", "DELETE", "UPDATE"]
        .iter()
        .any(|p| clause.trim_start().starts_with(p))
}

fn changes_columns(clause: &str) -> bool {
    ["ADD COLUMN", "DROP COLUMN", "MODIFY COLUMN", "RENAME COLUMN"].iter().any(|p| clause.trim_start().starts_with(p))
}

/// The characters of `text` outside quoted strings (`'`, `` ` ``, `"`, with backslash escapes),
/// with their byte index: what both scanners below look at.
fn unquoted(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let (mut quote, mut escaped) = (None, false);
    text.char_indices().filter(move |&(_, c)| match quote {
        Some(_) if escaped => {
            escaped = false;
            false
        }
        Some(_) if c == '\\' => {
            escaped = true;
            false
        }
        Some(q) => {
            if c == q {
                quote = None;
            }
            false
        }
        None if matches!(c, '\'' | '`' | '"') => {
            quote = Some(c);
            false
        }
        None => true,
    })
}

/// The index of the `)` closing the `(` that `text` starts with, skipping quoted strings.
fn matching_paren(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in unquoted(text) {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits at commas outside parentheses and quotes.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in unquoted(text) {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrate::{bootstrap, MIGRATIONS};

    #[test]
    fn scanners_skip_quoted_commas_and_parentheses() {
        let columns = r"a String DEFAULT 'x,(y', b Decimal(38, 9), c String DEFAULT 'it\'s, ok'";
        assert_eq!(
            split_top_level(columns),
            ["a String DEFAULT 'x,(y'", "b Decimal(38, 9)", r"c String DEFAULT 'it\'s, ok'"]
        );
        assert_eq!(matching_paren("(a 'b)' `(` (c)) tail"), Some(15));
        assert_eq!(matching_paren(") (a)"), None);
        assert_eq!(matching_paren("(a"), None);
    }

    fn texts(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::OnCluster(q) => format!("cluster: {}", q.as_str()),
                Step::PerShard(q) => format!("shards: {}", q.as_str()),
                Step::Local(q) => format!("local: {}", q.as_str()),
            })
            .collect()
    }

    /// Every migration, present and future, must go through cluster mode.
    #[test]
    fn every_migration_rewrites_on_both_dialects() {
        for dialect in [Dialect::Legacy, Dialect::Modern] {
            let mut ddl = ClusterDdl::new("tally", "db", dialect).unwrap();
            for s in bootstrap("db").unwrap() {
                ddl.rewrite(&s).unwrap();
            }
            for m in MIGRATIONS {
                for s in (m.statements)("db", dialect).unwrap() {
                    let steps = ddl.rewrite(&s).unwrap_or_else(|e| panic!("migration {} ({}): {e}", m.version, m.name));
                    assert!(!steps.is_empty());
                }
            }
            assert_eq!(ddl.kind("usage"), Some(TableKind::Sharded));
            assert_eq!(ddl.kind("sla"), Some(TableKind::Sharded));
            assert_eq!(ddl.kind("tally_migrations"), Some(TableKind::Global));
        }
    }

    #[test]
    fn tenant_tables_are_sharded_behind_distributed_ones() {
        let mut ddl = ClusterDdl::new("c", "db", Dialect::Legacy).unwrap();
        let steps = ddl
            .rewrite(&Sql::new(
                "CREATE TABLE IF NOT EXISTS `db`.usage (tenant String, value Decimal(38, 9), d String DEFAULT 'a,b') \
                 ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(t) ORDER BY (tenant, d)",
            ))
            .unwrap();
        assert_eq!(
            texts(&steps),
            [
                "cluster: CREATE TABLE IF NOT EXISTS `db`.usage_local ON CLUSTER `c` (tenant String, value Decimal(38, 9), \
                 d String DEFAULT 'a,b') ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db.usage', \
                 '{replica}') PARTITION BY toYYYYMM(t) ORDER BY (tenant, d)",
                "cluster: CREATE TABLE IF NOT EXISTS `db`.usage ON CLUSTER `c` AS `db`.usage_local \
                 ENGINE = Distributed(`c`, `db`, usage_local, cityHash64(tenant))",
            ]
        );
    }

    #[test]
    fn other_tables_are_replicated_to_every_server_and_keep_engine_arguments() {
        let mut ddl = ClusterDdl::new("c", "db", Dialect::Modern).unwrap();
        let steps = ddl
            .rewrite(&Sql::new("CREATE TABLE IF NOT EXISTS `db`.periods (month String, v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY month"))
            .unwrap();
        assert_eq!(
            texts(&steps),
            [
                "cluster: CREATE TABLE IF NOT EXISTS `db`.periods ON CLUSTER `c` (month String, v UInt64) ENGINE = \
              ReplicatedReplacingMergeTree('/clickhouse/tables/all/db.periods', '{shard}-{replica}', v) ORDER BY month"
            ]
        );
        let steps = ddl.rewrite(&Sql::new("ALTER TABLE `db`.periods ADD COLUMN x String")).unwrap();
        assert_eq!(texts(&steps), ["local: ALTER TABLE `db`.periods ADD COLUMN x String"]);
    }

    #[test]
    fn alters_run_where_the_server_takes_them_and_rebuild_the_distributed_table() {
        let create =
            Sql::new("CREATE TABLE IF NOT EXISTS `db`.usage (tenant String) ENGINE = MergeTree ORDER BY tenant");
        let alter = Sql::new("ALTER TABLE `db`.usage ADD COLUMN u String, MODIFY ORDER BY (tenant, u)");
        let mut legacy = ClusterDdl::new("c", "db", Dialect::Legacy).unwrap();
        legacy.rewrite(&create).unwrap();
        let steps = texts(&legacy.rewrite(&alter).unwrap());
        assert_eq!(steps[0], "shards: ALTER TABLE `db`.usage_local ADD COLUMN u String, MODIFY ORDER BY (tenant, u)");
        assert_eq!(
            steps[1..],
            [
                "cluster: DROP TABLE IF EXISTS `db`.usage__dist_new ON CLUSTER `c`",
                "cluster: DROP TABLE IF EXISTS `db`.usage__dist_old ON CLUSTER `c`",
                "cluster: CREATE TABLE IF NOT EXISTS `db`.usage__dist_new ON CLUSTER `c` AS `db`.usage_local \
                 ENGINE = Distributed(`c`, `db`, usage_local, cityHash64(tenant))",
                "cluster: RENAME TABLE `db`.usage TO `db`.usage__dist_old, `db`.usage__dist_new TO `db`.usage ON CLUSTER `c`",
                "cluster: DROP TABLE IF EXISTS `db`.usage__dist_old ON CLUSTER `c`",
            ]
        );
        let mut modern = ClusterDdl::new("c", "db", Dialect::Modern).unwrap();
        modern.rewrite(&create).unwrap();
        assert_eq!(
            texts(&modern.rewrite(&alter).unwrap())[0],
            "cluster: ALTER TABLE `db`.usage_local ON CLUSTER `c` ADD COLUMN u String, MODIFY ORDER BY (tenant, u)"
        );
        // Only column changes touch the Distributed table.
        let steps = modern.rewrite(&Sql::new("ALTER TABLE `db`.usage DROP PARTITION 202601")).unwrap();
        assert_eq!(texts(&steps), ["cluster: ALTER TABLE `db`.usage_local ON CLUSTER `c` DROP PARTITION 202601"]);
    }

    #[test]
    fn unknown_statements_are_refused_by_name() {
        let mut ddl = ClusterDdl::new("c", "db", Dialect::Legacy).unwrap();
        for sql in [
            Sql::new("CREATE TABLE IF NOT EXISTS `db`.m (tenant String) ENGINE = Memory"),
            Sql::new("ALTER TABLE `db`.never_created ADD COLUMN x String"),
            Sql::new("CREATE MATERIALIZED VIEW `db`.v AS SELECT 1"),
            Sql::new("CREATE DATABASE IF NOT EXISTS `other`"),
        ] {
            let err = ddl.rewrite(&sql).unwrap_err();
            assert!(err.to_string().ends_with(sql.as_str()), "{err}");
        }
        assert!(ClusterDdl::new("bad name", "db", Dialect::Legacy).is_err());
    }
}
