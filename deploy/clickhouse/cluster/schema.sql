-- What `tally migrate --clickhouse-cluster tally` runs on a fresh cluster of ClickHouse >= 20.1
-- servers, database `tally` (generated from metering/src/store/migrate.rs by
-- metering/tests/cluster.rs; do not edit). Statements without a note run once, through any server.

CREATE DATABASE IF NOT EXISTS `tally` ON CLUSTER `tally`;

CREATE TABLE IF NOT EXISTS `tally`.tally_migrations ON CLUSTER `tally` (version UInt32, name String, dialect String, applied_at DateTime('UTC') DEFAULT now()) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/tally.tally_migrations', '{shard}-{replica}') ORDER BY version;

-- migration 1: usage table
CREATE TABLE IF NOT EXISTS `tally`.usage_local ON CLUSTER `tally` (tenant LowCardinality(String), meter LowCardinality(String), window_start DateTime('UTC') CODEC(DoubleDelta, ZSTD), service LowCardinality(String), route LowCardinality(String), dimensions String, value Decimal(38, 9) CODEC(ZSTD), unit LowCardinality(String), source_id LowCardinality(String), batch_seq UInt64, inserted_at DateTime('UTC') DEFAULT now()) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tally.usage', '{replica}') PARTITION BY toYYYYMM(window_start) ORDER BY (tenant, meter, window_start, service, route, dimensions, source_id, batch_seq);

CREATE TABLE IF NOT EXISTS `tally`.usage ON CLUSTER `tally` AS `tally`.usage_local ENGINE = Distributed(`tally`, `tally`, usage_local, cityHash64(tenant));

-- on any one server:
INSERT INTO `tally`.tally_migrations (version, name, dialect) VALUES (1, 'usage table', 'modern');

-- migration 2: sla table
CREATE TABLE IF NOT EXISTS `tally`.sla_local ON CLUSTER `tally` (tenant LowCardinality(String), service LowCardinality(String), route LowCardinality(String), window_start DateTime('UTC') CODEC(DoubleDelta, ZSTD), requests UInt64 CODEC(ZSTD), errors UInt64 CODEC(ZSTD), latency_buckets Array(UInt16) CODEC(ZSTD), latency_counts Array(UInt64) CODEC(ZSTD), exemplar_trace_ids Array(String) CODEC(ZSTD), exemplar_latencies_ns Array(UInt64) CODEC(ZSTD), exemplar_errors Array(UInt8) CODEC(ZSTD), source_id LowCardinality(String), batch_seq UInt64, inserted_at DateTime('UTC') DEFAULT now()) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tally.sla', '{replica}') PARTITION BY toYYYYMM(window_start) ORDER BY (tenant, service, route, window_start, source_id, batch_seq);

CREATE TABLE IF NOT EXISTS `tally`.sla ON CLUSTER `tally` AS `tally`.sla_local ENGINE = Distributed(`tally`, `tally`, sla_local, cityHash64(tenant));

-- on any one server:
INSERT INTO `tally`.tally_migrations (version, name, dialect) VALUES (2, 'sla table', 'modern');

-- migration 3: usage.unique_value and usage.aggregation for custom meters
ALTER TABLE `tally`.usage_local ON CLUSTER `tally` ADD COLUMN unique_value String AFTER dimensions, ADD COLUMN aggregation String AFTER unit, MODIFY ORDER BY (tenant, meter, window_start, service, route, dimensions, source_id, batch_seq, unique_value);

DROP TABLE IF EXISTS `tally`.usage__dist_new ON CLUSTER `tally`;

DROP TABLE IF EXISTS `tally`.usage__dist_old ON CLUSTER `tally`;

CREATE TABLE IF NOT EXISTS `tally`.usage__dist_new ON CLUSTER `tally` AS `tally`.usage_local ENGINE = Distributed(`tally`, `tally`, usage_local, cityHash64(tenant));

RENAME TABLE `tally`.usage TO `tally`.usage__dist_old, `tally`.usage__dist_new TO `tally`.usage ON CLUSTER `tally`;

DROP TABLE IF EXISTS `tally`.usage__dist_old ON CLUSTER `tally`;

-- on any one server:
INSERT INTO `tally`.tally_migrations (version, name, dialect) VALUES (3, 'usage.unique_value and usage.aggregation for custom meters', 'modern');

-- migration 4: sealed_usage, sealed_sla and periods tables for sealed months
CREATE TABLE IF NOT EXISTS `tally`.sealed_usage_local ON CLUSTER `tally` (seal_id String, tenant String, meter String, window_start DateTime('UTC'), service String, route String, dimensions String, unique_value String, value Decimal(38, 9), unit String, aggregation String, source_id String, batch_seq UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tally.sealed_usage', '{replica}') PARTITION BY toYYYYMM(window_start) ORDER BY (seal_id, tenant, meter, window_start, service, route, dimensions, source_id, batch_seq, unique_value);

CREATE TABLE IF NOT EXISTS `tally`.sealed_usage ON CLUSTER `tally` AS `tally`.sealed_usage_local ENGINE = Distributed(`tally`, `tally`, sealed_usage_local, cityHash64(tenant));

CREATE TABLE IF NOT EXISTS `tally`.sealed_sla_local ON CLUSTER `tally` (seal_id String, tenant String, service String, route String, window_start DateTime('UTC'), requests UInt64, errors UInt64, latency_buckets Array(UInt16), latency_counts Array(UInt64), exemplar_trace_ids Array(String), exemplar_latencies_ns Array(UInt64), exemplar_errors Array(UInt8), source_id String, batch_seq UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tally.sealed_sla', '{replica}') PARTITION BY toYYYYMM(window_start) ORDER BY (seal_id, tenant, service, route, window_start, source_id, batch_seq);

CREATE TABLE IF NOT EXISTS `tally`.sealed_sla ON CLUSTER `tally` AS `tally`.sealed_sla_local ENGINE = Distributed(`tally`, `tally`, sealed_sla_local, cityHash64(tenant));

CREATE TABLE IF NOT EXISTS `tally`.periods ON CLUSTER `tally` (month String, seal_id String, rows UInt64, sla_rows UInt64, digest String, previous_digest String, sealed_at DateTime('UTC')) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/tally.periods', '{shard}-{replica}') ORDER BY (month, sealed_at, seal_id);

-- on any one server:
INSERT INTO `tally`.tally_migrations (version, name, dialect) VALUES (4, 'sealed_usage, sealed_sla and periods tables for sealed months', 'modern');

-- migration 5: sealed_usage_daily and sealed_sla_hourly roll-ups of seals, periods.rollups
CREATE TABLE IF NOT EXISTS `tally`.sealed_usage_daily_local ON CLUSTER `tally` (seal_id String, tenant String, meter String, window_start DateTime('UTC'), service String, dimensions String, unique_value String, value Decimal(38, 9), unit String, aggregation String) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tally.sealed_usage_daily', '{replica}') PARTITION BY toYYYYMM(window_start) ORDER BY (seal_id, tenant, meter, window_start, service, dimensions, unique_value);

CREATE TABLE IF NOT EXISTS `tally`.sealed_usage_daily ON CLUSTER `tally` AS `tally`.sealed_usage_daily_local ENGINE = Distributed(`tally`, `tally`, sealed_usage_daily_local, cityHash64(tenant));

CREATE TABLE IF NOT EXISTS `tally`.sealed_sla_hourly_local ON CLUSTER `tally` (seal_id String, tenant String, service String, route String, window_start DateTime('UTC'), requests UInt64, errors UInt64, latency_buckets Array(UInt16), latency_counts Array(UInt64), exemplar_trace_ids Array(String), exemplar_latencies_ns Array(UInt64), exemplar_errors Array(UInt8)) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tally.sealed_sla_hourly', '{replica}') PARTITION BY toYYYYMM(window_start) ORDER BY (seal_id, tenant, service, route, window_start);

CREATE TABLE IF NOT EXISTS `tally`.sealed_sla_hourly ON CLUSTER `tally` AS `tally`.sealed_sla_hourly_local ENGINE = Distributed(`tally`, `tally`, sealed_sla_hourly_local, cityHash64(tenant));

-- on any one server:
ALTER TABLE `tally`.periods ADD COLUMN rollups UInt8;

-- on any one server:
INSERT INTO `tally`.tally_migrations (version, name, dialect) VALUES (5, 'sealed_usage_daily and sealed_sla_hourly roll-ups of seals, periods.rollups', 'modern');

-- migration 6: usage_settled, sla_settled and settle_folds for settled usage
CREATE TABLE IF NOT EXISTS `tally`.usage_settled_local ON CLUSTER `tally` (fold String, tenant String, meter String, window_start DateTime('UTC'), service String, route String, dimensions String, unique_value String, value Decimal(38, 9), unit String, aggregation String, source_id String, batch_seq UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tally.usage_settled', '{replica}') PARTITION BY toYYYYMM(window_start) ORDER BY (tenant, meter, window_start, service, route, dimensions, unique_value, source_id, batch_seq);

CREATE TABLE IF NOT EXISTS `tally`.usage_settled ON CLUSTER `tally` AS `tally`.usage_settled_local ENGINE = Distributed(`tally`, `tally`, usage_settled_local, cityHash64(tenant));

CREATE TABLE IF NOT EXISTS `tally`.sla_settled_local ON CLUSTER `tally` (fold String, tenant String, service String, route String, window_start DateTime('UTC'), requests UInt64, errors UInt64, latency_buckets Array(UInt16), latency_counts Array(UInt64), exemplar_trace_ids Array(String), exemplar_latencies_ns Array(UInt64), exemplar_errors Array(UInt8), source_id String, batch_seq UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tally.sla_settled', '{replica}') PARTITION BY toYYYYMM(window_start) ORDER BY (tenant, service, route, window_start, source_id, batch_seq);

CREATE TABLE IF NOT EXISTS `tally`.sla_settled ON CLUSTER `tally` AS `tally`.sla_settled_local ENGINE = Distributed(`tally`, `tally`, sla_settled_local, cityHash64(tenant));

CREATE TABLE IF NOT EXISTS `tally`.settle_folds ON CLUSTER `tally` (fold String, inserted_from DateTime('UTC'), inserted_to DateTime('UTC'), batches UInt64, rows UInt64, committed_at DateTime('UTC') DEFAULT now()) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/tally.settle_folds', '{shard}-{replica}') ORDER BY (inserted_to, fold);

-- on any one server:
INSERT INTO `tally`.tally_migrations (version, name, dialect) VALUES (6, 'usage_settled, sla_settled and settle_folds for settled usage', 'modern');

-- migration 7: seal_verifications: every verification of a seal, served to readers
CREATE TABLE IF NOT EXISTS `tally`.seal_verifications ON CLUSTER `tally` (month String, seal_id String, digest String, verified_at DateTime('UTC'), verification String) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/tally.seal_verifications', '{shard}-{replica}') ORDER BY (month, seal_id, digest, verified_at);

-- on any one server:
INSERT INTO `tally`.tally_migrations (version, name, dialect) VALUES (7, 'seal_verifications: every verification of a seal, served to readers', 'modern');

-- migration 8: usage_settled_daily, sla_settled_hourly and settle_rollups: settled rows rolled up by day
CREATE TABLE IF NOT EXISTS `tally`.usage_settled_daily_local ON CLUSTER `tally` (fold String, tenant String, meter String, window_start DateTime('UTC'), service String, dimensions String, unique_value String, value Decimal(38, 9), unit String, aggregation String) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tally.usage_settled_daily', '{replica}') PARTITION BY toYYYYMM(window_start) ORDER BY (tenant, meter, window_start, service, dimensions, unique_value);

CREATE TABLE IF NOT EXISTS `tally`.usage_settled_daily ON CLUSTER `tally` AS `tally`.usage_settled_daily_local ENGINE = Distributed(`tally`, `tally`, usage_settled_daily_local, cityHash64(tenant));

CREATE TABLE IF NOT EXISTS `tally`.sla_settled_hourly_local ON CLUSTER `tally` (fold String, tenant String, service String, route String, window_start DateTime('UTC'), requests UInt64, errors UInt64, latency_buckets Array(UInt16), latency_counts Array(UInt64), exemplar_trace_ids Array(String), exemplar_latencies_ns Array(UInt64), exemplar_errors Array(UInt8)) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tally.sla_settled_hourly', '{replica}') PARTITION BY toYYYYMM(window_start) ORDER BY (tenant, service, route, window_start);

CREATE TABLE IF NOT EXISTS `tally`.sla_settled_hourly ON CLUSTER `tally` AS `tally`.sla_settled_hourly_local ENGINE = Distributed(`tally`, `tally`, sla_settled_hourly_local, cityHash64(tenant));

CREATE TABLE IF NOT EXISTS `tally`.settle_rollups ON CLUSTER `tally` (rollup String, day_from DateTime('UTC'), day_to DateTime('UTC'), folds_upto DateTime('UTC'), rows UInt64, committed_at DateTime('UTC') DEFAULT now()) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/tally.settle_rollups', '{shard}-{replica}') ORDER BY (day_from, rollup);

-- on any one server:
INSERT INTO `tally`.tally_migrations (version, name, dialect) VALUES (8, 'usage_settled_daily, sla_settled_hourly and settle_rollups: settled rows rolled up by day', 'modern');

-- migration 9: usage_inserts and sla_inserts, the insert journals folds find batches by; settle_folds minutes
CREATE TABLE IF NOT EXISTS `tally`.usage_inserts_local ON CLUSTER `tally` (tenant String, source_id String, batch_seq UInt64, inserted_at DateTime('UTC'), window_min DateTime('UTC'), window_max DateTime('UTC')) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tally.usage_inserts', '{replica}') PARTITION BY toYYYYMM(inserted_at) ORDER BY (inserted_at, tenant, source_id, batch_seq);

CREATE TABLE IF NOT EXISTS `tally`.usage_inserts ON CLUSTER `tally` AS `tally`.usage_inserts_local ENGINE = Distributed(`tally`, `tally`, usage_inserts_local, cityHash64(tenant));

CREATE MATERIALIZED VIEW IF NOT EXISTS `tally`.usage_inserts_mv ON CLUSTER `tally` TO `tally`.usage_inserts_local AS SELECT tenant, source_id, batch_seq, inserted_at, min(window_start) AS window_min, max(window_start) AS window_max FROM `tally`.usage_local GROUP BY tenant, source_id, batch_seq, inserted_at;

-- on any one server:
INSERT INTO `tally`.usage_inserts (tenant, source_id, batch_seq, inserted_at, window_min, window_max) SELECT tenant, source_id, batch_seq, inserted_at, min(window_start), max(window_start) FROM `tally`.usage GROUP BY tenant, source_id, batch_seq, inserted_at SETTINGS max_bytes_before_external_group_by = 1000000000;

CREATE TABLE IF NOT EXISTS `tally`.sla_inserts_local ON CLUSTER `tally` (tenant String, source_id String, batch_seq UInt64, inserted_at DateTime('UTC'), window_min DateTime('UTC'), window_max DateTime('UTC')) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tally.sla_inserts', '{replica}') PARTITION BY toYYYYMM(inserted_at) ORDER BY (inserted_at, tenant, source_id, batch_seq);

CREATE TABLE IF NOT EXISTS `tally`.sla_inserts ON CLUSTER `tally` AS `tally`.sla_inserts_local ENGINE = Distributed(`tally`, `tally`, sla_inserts_local, cityHash64(tenant));

CREATE MATERIALIZED VIEW IF NOT EXISTS `tally`.sla_inserts_mv ON CLUSTER `tally` TO `tally`.sla_inserts_local AS SELECT tenant, source_id, batch_seq, inserted_at, min(window_start) AS window_min, max(window_start) AS window_max FROM `tally`.sla_local GROUP BY tenant, source_id, batch_seq, inserted_at;

-- on any one server:
INSERT INTO `tally`.sla_inserts (tenant, source_id, batch_seq, inserted_at, window_min, window_max) SELECT tenant, source_id, batch_seq, inserted_at, min(window_start), max(window_start) FROM `tally`.sla GROUP BY tenant, source_id, batch_seq, inserted_at SETTINGS max_bytes_before_external_group_by = 1000000000;

-- on any one server:
ALTER TABLE `tally`.settle_folds ADD COLUMN window_from DateTime('UTC'), ADD COLUMN window_to DateTime('UTC');

-- on any one server:
INSERT INTO `tally`.tally_migrations (version, name, dialect) VALUES (9, 'usage_inserts and sla_inserts, the insert journals folds find batches by; settle_folds minutes', 'modern');

