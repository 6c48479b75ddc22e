//! A small ClickHouse HTTP client: statements, TSV reads and RowBinary inserts.
//! Our own, rather than a driver, because it must speak to 18.16 and to current
//! servers alike and the collector's sink needs to classify every failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::sql::Sql;

/// A failed ClickHouse call.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    /// The URL is not usable.
    #[error("invalid ClickHouse URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached or the call timed out; retrying may help.
    #[error("ClickHouse at {url} unreachable: {source}")]
    Unreachable {
        /// The server's URL (without credentials).
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("ClickHouse error (HTTP {status}{code}): {message}", code = .code.map(|c| format!(", code {c}")).unwrap_or_default())]
    Server {
        /// HTTP status.
        status: u16,
        /// ClickHouse's exception code, when it gave one.
        code: Option<u32>,
        /// The exception text.
        message: String,
    },
    /// The answer did not have the expected shape.
    #[error("unexpected ClickHouse answer to {query}: {reason}")]
    Decode {
        /// The start of the query.
        query: String,
        /// What was wrong.
        reason: String,
    },
}

impl ClickHouseError {
    /// Whether a retry of the same call can succeed (network faults, timeouts,
    /// server overload), as opposed to an error in the call itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClickHouseError::Unreachable { .. } => true,
            ClickHouseError::Server { status, code, .. } => {
                // 159 timeout, 164 readonly, 202 too many simultaneous queries,
                // 209/210 socket errors, 241 memory limit, 252 too many parts, 242 table readonly.
                // On a cluster: 225 no ZooKeeper, 279 no replica of a shard reachable, 285 too few
                // live replicas, 319 insert status unknown (a retry is safe: rows carry their
                // batch identity), 999 ZooKeeper session errors.
                *status >= 500
                    && matches!(
                        code,
                        None | Some(159 | 164 | 202 | 209 | 210 | 225 | 241 | 242 | 252 | 279 | 285 | 319 | 999)
                    )
                    || *status == 503
            }
            _ => false,
        }
    }
}

/// A connection to one ClickHouse server over HTTP.
#[derive(Clone, Debug)]
pub struct ClickHouse {
    http: reqwest::Client,
    base: reqwest::Url,
    user: Option<(String, Option<String>)>,
    display: String,
    /// When set, every call carries `query_id=<prefix>-<n>`, so that one caller's queries can be
    /// found in `system.processes` and killed together (see [`ClickHouse::kill_queries`]).
    query_ids: Option<Arc<QueryIds>>,
}

#[derive(Debug)]
struct QueryIds {
    prefix: String,
    next: AtomicU64,
}

/// A query id prefix is matched with `LIKE`, so it may hold only characters that match themselves.
fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl ClickHouse {
    /// A client for `url` (e.g. `http://user:pass@127.0.0.1:8123`), with a
    /// per-call timeout.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, ClickHouseError> {
        let bad = |reason: &str| ClickHouseError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
        let mut base = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        let user =
            (!base.username().is_empty()).then(|| (base.username().to_owned(), base.password().map(str::to_owned)));
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // Shorter than any server's keep_alive_timeout (3 s in Debian's config, 10 s by
            // default): a connection the server closes as it is reused fails the call.
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        let display = base.as_str().trim_end_matches('/').to_owned();
        Ok(Self { http, base, user, display, query_ids: None })
    }

    /// The same client with a ClickHouse setting sent on every call (e.g.
    /// `insert_distributed_sync=1` for writes through Distributed tables).
    pub fn with_setting(mut self, name: &str, value: &str) -> Self {
        self.base.query_pairs_mut().append_pair(name, value);
        self
    }

    /// The same client with every call's `query_id` starting `prefix-` (ASCII letters, digits and
    /// `-` only: the prefix is matched with `LIKE`). Calls through clones share one counter, so
    /// concurrent calls never reuse an id (which ClickHouse would refuse while the first runs).
    pub fn with_query_id_prefix(mut self, prefix: &str) -> Result<Self, ClickHouseError> {
        if !valid_prefix(prefix) {
            return Err(ClickHouseError::BadUrl {
                url: self.display.clone(),
                reason: format!("query id prefix {prefix:?} must be ASCII letters, digits and `-`"),
            });
        }
        self.query_ids = Some(Arc::new(QueryIds { prefix: prefix.to_owned(), next: AtomicU64::new(0) }));
        Ok(self)
    }

    /// Stops every query whose id starts `prefix-` (`KILL QUERY`, asynchronous: the server
    /// cancels them at their next block). Calls this client made with
    /// [`with_query_id_prefix`](Self::with_query_id_prefix) are found this way.
    pub async fn kill_queries(&self, prefix: &str) -> Result<(), ClickHouseError> {
        self.kill(prefix, "ASYNC").await
    }

    /// [`kill_queries`](Self::kill_queries), returning once none of them runs any more (`SYNC`):
    /// stopped, or finished (a query past its last block runs to its end).
    pub async fn kill_queries_and_wait(&self, prefix: &str) -> Result<(), ClickHouseError> {
        self.kill(prefix, "SYNC").await
    }

    async fn kill(&self, prefix: &str, mode: &str) -> Result<(), ClickHouseError> {
        if !valid_prefix(prefix) {
            return Err(ClickHouseError::BadUrl {
                url: self.display.clone(),
                reason: format!("query id prefix {prefix:?} must be ASCII letters, digits and `-`"),
            });
        }
        // Without an id of its own: the KILL must not collide with the queries it stops.
        let mut plain = self.clone();
        plain.query_ids = None;
        let sql = format!("KILL QUERY WHERE query_id LIKE '{prefix}-%' {mode}");
        plain.post(&sql, bytes::Bytes::new()).await.map(drop)
    }

    /// The same client (credentials, settings, port) for another host of a cluster.
    pub fn with_host(&self, host: &str) -> Result<Self, ClickHouseError> {
        let mut other = self.clone();
        other
            .base
            .set_host(Some(host))
            .map_err(|e| ClickHouseError::BadUrl { url: host.to_owned(), reason: e.to_string() })?;
        let mut shown = other.base.clone();
        shown.set_query(None);
        other.display = shown.as_str().trim_end_matches('/').to_owned();
        Ok(other)
    }

    /// The server URL without credentials, for logs and errors.
    pub fn url(&self) -> &str {
        &self.display
    }

    /// Runs a statement that returns nothing (DDL, INSERT ... SELECT).
    pub async fn execute(&self, sql: &Sql) -> Result<(), ClickHouseError> {
        self.post(sql.as_str(), bytes::Bytes::new()).await.map(drop)
    }

    /// Runs a query and returns its rows as TabSeparated fields, unescaped.
    /// The query must not name a FORMAT; this adds `FORMAT TabSeparated`.
    pub async fn query_tsv(&self, sql: &Sql) -> Result<Vec<Vec<String>>, ClickHouseError> {
        let query = format!("{} FORMAT TabSeparated", sql.as_str());
        let body = self.post(&query, bytes::Bytes::new()).await?;
        let text = String::from_utf8(body)
            .map_err(|e| ClickHouseError::Decode { query: head(&query), reason: e.to_string() })?;
        Ok(parse_tsv(&text))
    }

    /// Runs a query and returns its rows as RowBinary bytes (read them with
    /// [`rowbinary::Reader`](super::rowbinary::Reader)). The query must not name a FORMAT.
    pub async fn query_rowbinary(&self, sql: &Sql) -> Result<Vec<u8>, ClickHouseError> {
        self.post(&format!("{} FORMAT RowBinary", sql.as_str()), bytes::Bytes::new()).await
    }

    /// The first field of every row of a query (a list of names, or one value).
    pub async fn query_column(&self, sql: &Sql) -> Result<Vec<String>, ClickHouseError> {
        Ok(self.query_tsv(sql).await?.into_iter().filter_map(|row| row.into_iter().next()).collect())
    }

    /// Inserts RowBinary-encoded `rows` with `INSERT INTO <insert> FORMAT RowBinary`.
    pub async fn insert_rowbinary(&self, insert: &Sql, rows: bytes::Bytes) -> Result<(), ClickHouseError> {
        let query = format!("INSERT INTO {} FORMAT RowBinary", insert.as_str());
        self.post(&query, rows).await.map(drop)
    }

    /// The server's version, e.g. `18.16.1`.
    pub async fn version(&self) -> Result<String, ClickHouseError> {
        self.query_column(&Sql::new("SELECT version()"))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ClickHouseError::Decode { query: "SELECT version()".into(), reason: "no rows".into() })
    }

    async fn post(&self, query: &str, body: bytes::Bytes) -> Result<Vec<u8>, ClickHouseError> {
        // The query goes in the URL when there is a body (an INSERT's data), else in the body,
        // where its length is not limited by URL size.
        let mut url = self.base.clone();
        if let Some(ids) = &self.query_ids {
            let n = ids.next.fetch_add(1, Ordering::Relaxed);
            url.query_pairs_mut().append_pair("query_id", &format!("{}-{n}", ids.prefix));
        }
        let request = if body.is_empty() {
            self.http.post(url).body(query.to_owned())
        } else {
            url.query_pairs_mut().append_pair("query", query);
            self.http.post(url).body(body)
        };
        let request = match &self.user {
            Some((user, password)) => request.basic_auth(user, password.as_ref()),
            None => request,
        };
        let unreachable = |source| ClickHouseError::Unreachable { url: self.display.clone(), source };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let message = String::from_utf8_lossy(&bytes).trim().to_owned();
        Err(ClickHouseError::Server { status: status.as_u16(), code: exception_code(&message), message })
    }
}

/// ClickHouse messages start `Code: 60, e.displayText() = ...` (18.16) or `Code: 60. DB::Exception: ...`.
fn exception_code(message: &str) -> Option<u32> {
    let rest = message.strip_prefix("Code: ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn head(query: &str) -> String {
    query.chars().take(120).collect()
}

/// Splits TabSeparated output into rows of unescaped fields.
pub fn parse_tsv(text: &str) -> Vec<Vec<String>> {
    text.lines().filter(|l| !l.is_empty()).map(|line| line.split('\t').map(unescape).collect()).collect()
}

fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_unescapes() {
        let rows = parse_tsv("a\\tb\tc\\\\d\n\nx\\ny\t1\n");
        assert_eq!(rows, vec![vec!["a\tb".to_owned(), "c\\d".into()], vec!["x\ny".into(), "1".into()]]);
    }

    #[test]
    fn codes() {
        assert_eq!(exception_code("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist"), Some(60));
        assert_eq!(exception_code("Code: 241. DB::Exception: Memory limit"), Some(241));
        assert_eq!(exception_code("oops"), None);
    }

    #[test]
    fn cluster_outages_are_retryable() {
        let server = |code| ClickHouseError::Server { status: 500, code: Some(code), message: String::new() };
        for code in [225, 279, 285, 319, 999, 209] {
            assert!(server(code).is_retryable(), "code {code}");
        }
        for code in [60, 62, 44] {
            assert!(!server(code).is_retryable(), "code {code}");
        }
    }

    #[test]
    fn urls() {
        let ch = ClickHouse::new("http://u:p@127.0.0.1:8123/", Duration::from_secs(1)).unwrap();
        assert_eq!(ch.url(), "http://127.0.0.1:8123");
        assert!(matches!(ClickHouse::new("ftp://x", Duration::from_secs(1)), Err(ClickHouseError::BadUrl { .. })));
        assert!(matches!(ClickHouse::new("not a url", Duration::from_secs(1)), Err(ClickHouseError::BadUrl { .. })));
    }
}
