//! Proves the harness itself: a private ClickHouse 18.16 server and chDB.

use std::io::Write;
use std::path::Path;
use testkit::{Chdb, ClickHouseServer};

#[test]
fn server_answers_and_databases_are_distinct() {
    let server = ClickHouseServer::start().expect("start clickhouse-server");
    assert_eq!(server.http_url(), format!("http://127.0.0.1:{}", server.http_port()));
    assert_ne!(server.http_port(), server.tcp_port());
    assert!(server.query("SELECT version()").unwrap().starts_with("18.16."));
    // 18.16 reports the configured `UTC` by its zoneinfo name.
    assert_eq!(server.query("SELECT timezone()").unwrap(), "Etc/UTC\n");
    assert_eq!(server.query("SELECT toString(toDateTime(86400))").unwrap(), "1970-01-02 00:00:00\n");

    let a = server.database("harness").unwrap();
    let b = server.database("harness").unwrap();
    assert_ne!(a, b);
    let pid = std::process::id();
    for name in [&a, &b] {
        assert!(name.starts_with(&format!("harness_{pid}_")), "{name}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
    }
    let listed =
        server.query(&format!("SELECT name FROM system.databases WHERE name IN ('{a}', '{b}') ORDER BY name")).unwrap();
    let mut expected = [a.clone(), b.clone()];
    expected.sort();
    assert_eq!(listed, format!("{}\n{}\n", expected[0], expected[1]));
}

#[test]
fn server_query_error_carries_message_and_sql() {
    let server = ClickHouseServer::start().unwrap();
    let err = server.query("SELECT * FROM no_such_db.no_such_table").unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("HTTP 404") || msg.contains("HTTP 500"), "{msg}");
    assert!(msg.contains("no_such_db"), "{msg}");
    assert!(msg.contains("Code: 81"), "{msg}");
    assert!(msg.contains("SQL: SELECT * FROM no_such_db.no_such_table"), "{msg}");
}

#[test]
fn server_data_survives_kill9_and_restart() {
    let mut server = ClickHouseServer::start().unwrap();
    let (http, tcp) = (server.http_port(), server.tcp_port());
    let db = server.database("fault").unwrap();
    server.query(&format!("CREATE TABLE {db}.t (k String, v UInt64) ENGINE = MergeTree ORDER BY k")).unwrap();
    server.query(&format!("INSERT INTO {db}.t VALUES ('a', 1), ('b', 18446744073709551615), ('c', 0)")).unwrap();
    let select = format!("SELECT k, v FROM {db}.t ORDER BY k");
    let rows = "a\t1\nb\t18446744073709551615\nc\t0\n";
    assert_eq!(server.query(&select).unwrap(), rows);

    let old_pid = server.pid().unwrap();
    server.kill9();
    assert_eq!(server.pid(), None);
    assert!(server.query("SELECT 1").is_err(), "server still answers after kill9");

    server.restart().unwrap();
    assert_ne!(server.pid(), Some(old_pid));
    assert_eq!((server.http_port(), server.tcp_port()), (http, tcp));
    assert_eq!(server.query(&select).unwrap(), rows);

    // A graceful stop/restart keeps the data too.
    server.stop();
    server.restart().unwrap();
    assert_eq!(server.query(&select).unwrap(), rows);
}

#[test]
fn server_dir_is_removed_on_drop() {
    let server = ClickHouseServer::start().unwrap();
    let dir = server.dir().to_path_buf();
    let pid = server.pid().unwrap();
    assert!(dir.join("config.xml").exists());
    drop(server);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "server {pid} still alive");
}

#[test]
fn chdb_runs_modern_ddl_and_selects() {
    let mut ch = Chdb::start().expect("start chDB");
    let version = ch.version().unwrap();
    let major: u32 = version.split('.').next().unwrap().parse().unwrap();
    assert!(major >= 24, "chDB version {version}");

    ch.query("CREATE DATABASE db").unwrap();
    assert_eq!(
        ch.query(
            "CREATE TABLE db.t (k LowCardinality(String), ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD), \
             v UInt64, m Map(String, UInt64)) ENGINE = MergeTree ORDER BY (k, ts) \
             TTL toDateTime(ts) + INTERVAL 1 DAY"
        )
        .unwrap(),
        ""
    );
    ch.query(
        "INSERT INTO db.t VALUES ('a', '2099-01-01 00:00:00.123', 5, {'x': 1}), \
         ('b', '2099-01-01 00:07:00.000', 7, {})",
    )
    .unwrap();
    assert_eq!(
        ch.query("SELECT k, ts, v, m FROM db.t ORDER BY k").unwrap(),
        "a\t2099-01-01 00:00:00.123\t5\t{'x':1}\nb\t2099-01-01 00:07:00.000\t7\t{}\n"
    );
    assert_eq!(
        ch.query("SELECT toStartOfInterval(ts, INTERVAL 5 MINUTE) AS w, sum(v) FROM db.t GROUP BY w ORDER BY w")
            .unwrap(),
        "2099-01-01 00:00:00\t5\n2099-01-01 00:05:00\t7\n"
    );
    // A FORMAT clause wins over the default TabSeparated. Note: 26.x does not
    // quote 64-bit integers in JSON by default (18.16 does).
    assert_eq!(
        ch.query("SELECT k, v FROM db.t ORDER BY k FORMAT JSONEachRow").unwrap(),
        "{\"k\":\"a\",\"v\":5}\n{\"k\":\"b\",\"v\":7}\n"
    );
}

#[test]
fn chdb_bad_sql_is_a_precise_error() {
    let mut ch = Chdb::start().unwrap();
    let err = ch.query("SELEC 1").unwrap_err().to_string();
    assert!(err.starts_with("chDB query failed: Code: 62. DB::Exception: Syntax error"), "{err}");
    assert!(err.ends_with("\nSQL: SELEC 1"), "{err}");
    let err = ch.query("SELECT * FROM nowhere.t").unwrap_err().to_string();
    assert!(err.contains("Code: 81") && err.contains("nowhere"), "{err}");
    // The session is still usable after errors.
    assert_eq!(ch.query("SELECT 1 + 1").unwrap(), "2\n");
}

/// RowBinary: String is a LEB128 length + bytes, UInt64 is 8 bytes little-endian.
fn row_binary(rows: &[(&str, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (s, v) in rows {
        let mut n = s.len();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[test]
fn chdb_reads_row_binary_files_by_absolute_and_relative_path() {
    let mut ch = Chdb::start().unwrap();
    let long = "x".repeat(200); // two-byte length prefix
    let data = row_binary(&[("hello", 42), (&long, u64::MAX)]);
    let elsewhere = tempfile::tempdir().unwrap();
    let abs = elsewhere.path().join("rows.bin");
    std::fs::File::create(&abs).unwrap().write_all(&data).unwrap();
    std::fs::write(ch.dir().join("rel.bin"), &data).unwrap();

    ch.query("CREATE DATABASE db").unwrap();
    ch.query("CREATE TABLE db.t (a String, b UInt64) ENGINE = MergeTree ORDER BY a").unwrap();
    ch.query(&format!("INSERT INTO db.t SELECT * FROM file('{}', 'RowBinary', 'a String, b UInt64')", abs.display()))
        .unwrap();
    ch.query("INSERT INTO db.t SELECT * FROM file('rel.bin', 'RowBinary', 'a String, b UInt64')").unwrap();
    assert_eq!(
        ch.query("SELECT a, b, count() FROM db.t GROUP BY a, b ORDER BY a").unwrap(),
        format!("hello\t42\t2\n{long}\t18446744073709551615\t2\n")
    );
}

#[test]
fn chdb_without_interpreter_or_module_says_how_to_install() {
    let hint = "python3 -m venv .venv && .venv/bin/pip install chdb-core (scripts/test does this)";
    let err = Chdb::start_with_python(Path::new("/nonexistent/python")).err().expect("must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("/nonexistent/python") && msg.contains(hint), "{msg}");

    // An interpreter without chdb: the system python3.
    let err = Chdb::start_with_python(Path::new("/usr/bin/python3")).err().expect("must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("import chdb failed") && msg.contains(hint), "{msg}");
}

#[test]
fn server_outlives_the_thread_that_started_it() {
    // PR_SET_PDEATHSIG fires on the death of the forking *thread*; testkit forks
    // from a long-lived thread, so a server shared across tests stays up.
    let server = std::thread::spawn(|| ClickHouseServer::start().unwrap()).join().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(server.query("SELECT 1").unwrap(), "1\n");
}

const ORPHAN_ENV: &str = "TESTKIT_ORPHAN_HELPER";

/// Helper process for `server_dies_with_the_test_process`: prints the server
/// pid and waits to be killed.
#[test]
#[ignore = "helper, run by server_dies_with_the_test_process"]
fn orphan_helper() {
    if std::env::var_os(ORPHAN_ENV).is_none() {
        return;
    }
    let server = ClickHouseServer::start().unwrap();
    println!("SERVER {} {}", server.pid().unwrap(), server.dir().display());
    std::thread::sleep(std::time::Duration::from_secs(120));
}

fn alive(pid: u32) -> bool {
    // A killed but not yet reaped process is a zombie ("Z"): dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn server_dies_with_the_test_process() {
    use std::io::BufRead;
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["orphan_helper", "--exact", "--ignored", "--nocapture"])
        .env(ORPHAN_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(helper.stdout.take().unwrap()).lines();
    let (pid, dir): (u32, String) = loop {
        let line = lines.next().expect("helper ended without a pid").unwrap();
        if let Some((pid, dir)) = line.strip_prefix("SERVER ").and_then(|l| l.split_once(' ')) {
            break (pid.parse().unwrap(), dir.to_owned());
        }
    };
    assert!(alive(pid));
    helper.kill().unwrap();
    helper.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!alive(pid), "server {pid} survived its test process");
    // The killed helper never ran Drop; remove its temp dir.
    std::fs::remove_dir_all(&dir).unwrap();
}
