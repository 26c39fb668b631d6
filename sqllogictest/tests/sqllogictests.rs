//! Runs every `test_files/**/*.slt` against a real `braid` server over real PostgreSQL
//! connections, once with the simple query protocol and once with the extended protocol.
//!
//! Extra records understood by this runner (written as statements):
//! - `statement ok` + `RESTART SERVER`: SIGTERM the server, wait for exit 0, start it again on
//!   the same data directory, reconnect.
//! - `statement ok` + `KILL SERVER`: SIGKILL the server, start it again, reconnect.
//! - `statement ok` + `\connect name`: connect this connection to database `name` instead (as
//!   psql's `\connect`; the name is taken as written, double quotes removed). If the server
//!   refuses, the old connection stays and the refusal is the record's error, so `statement
//!   error 3D000` + `\connect nosuch` checks it. Restarts reconnect to the database last
//!   connected to. With sqllogictest's `connection <name>` line before a record, several
//!   sessions can each be on a database of their own.
//!
//! An error's DETAIL, when it has one, is matched as part of its message: `<SQLSTATE>:
//! <message> DETAIL: <detail>`.
//!
//! Usage: `cargo test -p braid-sqllogictest` (all files), `... -- <substring>` (matching
//! files), `BRAID_SLT_COMPLETE=1 ...` rewrites the expected output from what the server
//! returns (review the diff!). Each file gets its own server and data directory; after the
//! file the server is stopped with SIGTERM and must exit 0 with no ERROR/WARN log line.
//!
//! Checking against PostgreSQL: `BRAID_SLT_TARGET=postgres cargo test -p braid-sqllogictest
//! -- tables` runs the same files against a temporary PostgreSQL 15 cluster instead of braid
//! (`initdb` in a temporary directory, a free port on 127.0.0.1, programs from `$BRAID_PG_BIN`,
//! default `/usr/lib/postgresql/15/bin`; as root they run as `$BRAID_PG_USER`, default
//! `postgres`). A file that passes there has PostgreSQL's results, SQLSTATEs and messages.
//! With `BRAID_SLT_COMPLETE=1` it writes PostgreSQL's output into the files. There,
//! `RESTART SERVER` is a clean `pg_ctl` restart and `KILL SERVER` an immediate stop (crash
//! recovery on start). Records can be limited to one side with `onlyif braid` / `skipif
//! braid` or `onlyif postgres` / `skipif postgres` (the runner's label is the target's name).
//! Files under `test_files/` whose name does not start with `tables/` mostly use braid's own
//! statements (streams) and are not meant to pass on PostgreSQL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use braid_sqllogictest::{BraidServer, PostgresServer};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};
use tokio::sync::Mutex;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Simple,
    Extended,
}

/// An error as the test files see it: the SQLSTATE (for `statement error (42P01)`) and the
/// message (for `statement error <regex>`).
#[derive(Debug)]
struct DbError {
    code: Option<String>,
    message: String,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(c) => write!(f, "{c}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for DbError {}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            // A DETAIL line follows the message on the same line, so a file can match it
            // (`... DETAIL: Key \(a\)=\(1\) already exists\.`) and older patterns still match.
            Some(db) => DbError {
                code: Some(db.code().code().to_string()),
                message: match db.detail() {
                    Some(d) => format!("{} DETAIL: {d}", db.message()),
                    None => db.message().to_string(),
                },
            },
            None => DbError {
                code: None,
                message: e.to_string(),
            },
        }
    }
}

fn harness_err(e: anyhow::Error) -> DbError {
    DbError {
        code: None,
        message: format!("test harness: {e:#}"),
    }
}

/// Which server the files run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Braid,
    Postgres,
}

/// The server under test.
#[derive(Debug)]
enum Server {
    Braid(BraidServer),
    Postgres(PostgresServer),
}

impl Server {
    async fn start(target: Target) -> anyhow::Result<Server> {
        Ok(match target {
            Target::Braid => Server::Braid(BraidServer::start().await?),
            Target::Postgres => Server::Postgres(PostgresServer::start().await?),
        })
    }

    async fn connect(&self) -> anyhow::Result<Client> {
        self.connect_to("postgres").await
    }

    async fn connect_to(&self, db: &str) -> anyhow::Result<Client> {
        match self {
            Server::Braid(s) => s.connect_to(db).await,
            Server::Postgres(s) => s.connect_to(db).await,
        }
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        match self {
            Server::Braid(s) => s.restart().await,
            Server::Postgres(s) => s.restart().await,
        }
    }

    async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        match self {
            Server::Braid(s) => s.kill_and_restart().await,
            Server::Postgres(s) => s.kill_and_restart().await,
        }
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        match self {
            Server::Braid(s) => s.stop().await,
            Server::Postgres(s) => s.stop().await,
        }
    }

    /// ERROR/WARN lines of braid's log; PostgreSQL logs every failed statement, which the
    /// files expect, so its log is not checked.
    fn unexpected_log_lines(&self) -> Vec<String> {
        match self {
            Server::Braid(s) => s.unexpected_log_lines(),
            Server::Postgres(_) => Vec::new(),
        }
    }
}

struct BraidDb {
    server: Arc<Mutex<Server>>,
    client: Client,
    protocol: Protocol,
    /// The database `client` is connected to.
    database: String,
}

fn text_value(v: Option<&str>) -> String {
    match v {
        None => "NULL".to_string(),
        Some("") => "(empty)".to_string(),
        Some(s) => s.to_string(),
    }
}

/// Renders one value of an extended-protocol (binary) row as PostgreSQL's text format would.
fn binary_value(
    row: &tokio_postgres::Row,
    i: usize,
    ty: &Type,
) -> Result<String, tokio_postgres::Error> {
    fn opt<T: ToString>(v: Option<T>) -> String {
        match v {
            None => "NULL".to_string(),
            Some(v) => {
                let s = v.to_string();
                if s.is_empty() {
                    "(empty)".to_string()
                } else {
                    s
                }
            }
        }
    }
    Ok(match *ty {
        Type::BOOL => match row.try_get::<_, Option<bool>>(i)? {
            None => "NULL".into(),
            Some(true) => "t".into(),
            Some(false) => "f".into(),
        },
        // PostgreSQL's one-byte `"char"` (pg_class.relkind and the like); a zero byte is the
        // empty value (attidentity of an ordinary column).
        Type::CHAR => opt(row.try_get::<_, Option<i8>>(i)?.map(|c| match c {
            0 => String::new(),
            c => char::from(c as u8).to_string(),
        })),
        Type::OID => opt(row.try_get::<_, Option<u32>>(i)?),
        Type::INT2 => opt(row.try_get::<_, Option<i16>>(i)?),
        Type::INT4 => opt(row.try_get::<_, Option<i32>>(i)?),
        Type::INT8 => opt(row.try_get::<_, Option<i64>>(i)?),
        Type::FLOAT4 => opt(row.try_get::<_, Option<f32>>(i)?),
        Type::FLOAT8 => opt(row.try_get::<_, Option<f64>>(i)?),
        Type::NUMERIC => opt(row.try_get::<_, Option<rust_decimal::Decimal>>(i)?),
        Type::DATE => opt(row.try_get::<_, Option<chrono::NaiveDate>>(i)?),
        Type::TIMESTAMP => opt(row
            .try_get::<_, Option<chrono::NaiveDateTime>>(i)?
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.f").to_string())),
        Type::TIMESTAMPTZ => opt(row
            .try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)?
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.f%:::z").to_string())),
        Type::JSON | Type::JSONB => opt(row.try_get::<_, Option<serde_json::Value>>(i)?),
        Type::BYTEA => opt(row.try_get::<_, Option<Vec<u8>>>(i)?.map(|b| {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("\\x{hex}")
        })),
        _ => opt(row.try_get::<_, Option<String>>(i)?),
    })
}

/// Splits rows whose cells hold several lines (EXPLAIN plans) into one row per extra line, so
/// expected output stays one line per row.
fn split_multiline(rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if !row.iter().any(|c| c.contains('\n')) {
            out.push(row);
            continue;
        }
        let mut first = Vec::with_capacity(row.len());
        let mut rest = Vec::new();
        for cell in row {
            let mut lines = cell
                .lines()
                .map(|l| l.trim_end().to_string())
                .filter(|l| !l.trim().is_empty());
            first.push(lines.next().unwrap_or_default());
            rest.extend(lines.map(|l| vec![l]));
        }
        out.push(first);
        out.extend(rest);
    }
    out
}

fn column_type(ty: &Type) -> DefaultColumnType {
    match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 => DefaultColumnType::Integer,
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => DefaultColumnType::FloatingPoint,
        Type::TEXT | Type::VARCHAR => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

impl BraidDb {
    async fn reconnect(&mut self) -> Result<(), DbError> {
        let server = self.server.lock().await;
        self.client = server
            .connect_to(&self.database)
            .await
            .map_err(harness_err)?;
        Ok(())
    }

    /// `\connect name`: a new connection to database `name`, which replaces the current one
    /// only once it is made.
    async fn connect_to(&mut self, name: &str) -> Result<(), DbError> {
        let name = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .map_or_else(|| name.to_string(), |n| n.replace("\"\"", "\""));
        let connected = self.server.lock().await.connect_to(&name).await;
        match connected {
            Ok(client) => {
                self.client = client;
                self.database = name;
                Ok(())
            }
            Err(e) => match e.downcast_ref::<tokio_postgres::Error>() {
                Some(pe) if pe.as_db_error().is_some() => Err(DbError {
                    code: pe.as_db_error().map(|d| d.code().code().to_string()),
                    message: pe
                        .as_db_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or_default(),
                }),
                _ => Err(harness_err(e)),
            },
        }
    }

    async fn run_simple(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let messages = self.client.simple_query(sql).await?;
        let mut rows: Option<Vec<Vec<String>>> = None;
        let mut width = 0;
        let mut count = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(cols) => {
                    width = cols.len();
                    rows = Some(Vec::new());
                }
                SimpleQueryMessage::Row(r) => {
                    width = r.len();
                    let row = (0..r.len()).map(|i| text_value(r.get(i))).collect();
                    rows.get_or_insert_with(Vec::new).push(row);
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        Ok(match rows {
            Some(rows) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; width],
                rows: split_multiline(rows),
            },
            None => DBOutput::StatementComplete(count),
        })
    }

    async fn run_extended(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let stmt = self.client.prepare(sql).await?;
        if stmt.columns().is_empty() {
            let n = self.client.execute(&stmt, &[]).await?;
            return Ok(DBOutput::StatementComplete(n));
        }
        let rows = self.client.query(&stmt, &[]).await?;
        let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut row = Vec::with_capacity(types.len());
            for (i, t) in types.iter().enumerate() {
                row.push(binary_value(r, i, t)?);
            }
            out.push(row);
        }
        Ok(DBOutput::Rows {
            types: types.iter().map(column_type).collect(),
            rows: split_multiline(out),
        })
    }
}

#[async_trait]
impl AsyncDB for BraidDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        if let Some(name) = sql.trim().strip_prefix("\\connect ") {
            self.connect_to(name.trim().trim_end_matches(';').trim())
                .await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        let command = sql.trim().trim_end_matches(';').trim().to_ascii_uppercase();
        match command.as_str() {
            "RESTART SERVER" => {
                self.server
                    .lock()
                    .await
                    .restart()
                    .await
                    .map_err(harness_err)?;
                self.reconnect().await?;
                return Ok(DBOutput::StatementComplete(0));
            }
            "KILL SERVER" => {
                self.server
                    .lock()
                    .await
                    .kill_and_restart()
                    .await
                    .map_err(harness_err)?;
                self.reconnect().await?;
                return Ok(DBOutput::StatementComplete(0));
            }
            _ => {}
        }
        match self.protocol {
            Protocol::Simple => self.run_simple(sql).await,
            Protocol::Extended => self.run_extended(sql).await,
        }
    }

    async fn shutdown(&mut self) {}

    // Empty: `onlyif`/`skipif` then see only the runner's label, the target's name ("braid"
    // or "postgres"); an engine name would be a label on both targets.
    fn engine_name(&self) -> &str {
        ""
    }

    fn error_sql_state(err: &Self::Error) -> Option<String> {
        err.code.clone()
    }
}

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            slt_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
    Ok(())
}

async fn run_file(
    path: &Path,
    protocol: Protocol,
    complete: bool,
    target: Target,
) -> anyhow::Result<()> {
    let server = Arc::new(Mutex::new(Server::start(target).await?));
    let s2 = server.clone();
    let mut runner = Runner::new(move || {
        let server = s2.clone();
        async move {
            let client = server.lock().await.connect().await.map_err(harness_err)?;
            Ok(BraidDb {
                server,
                client,
                protocol,
                database: "postgres".to_string(),
            })
        }
    });
    runner.add_label(match target {
        Target::Braid => "braid",
        Target::Postgres => "postgres",
    });
    let result = if complete {
        runner
            .update_test_file(
                path,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    } else {
        runner
            .run_file_async(path)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    drop(runner);
    let mut server = server.lock().await;
    let stopped = server.stop().await;
    result?;
    stopped?;
    let bad = server.unexpected_log_lines();
    if !bad.is_empty() {
        anyhow::bail!(
            "unexpected ERROR/WARN lines in the server log:\n{}",
            bad.join("\n")
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let root = manifest_dir().join("test_files");
    let mut files = Vec::new();
    slt_files(&root, &mut files)?;
    files.sort();
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|x| f.to_string_lossy().contains(x.as_str()))
        })
        .collect();
    let complete = std::env::var("BRAID_SLT_COMPLETE").is_ok_and(|v| v == "1");
    let target = match std::env::var("BRAID_SLT_TARGET").as_deref() {
        Err(_) | Ok("") | Ok("braid") => Target::Braid,
        Ok("postgres") => Target::Postgres,
        Ok(other) => anyhow::bail!("BRAID_SLT_TARGET={other}: expected braid or postgres"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        let protocols: &[Protocol] = if complete {
            &[Protocol::Extended]
        } else {
            &[Protocol::Simple, Protocol::Extended]
        };
        for &protocol in protocols {
            let label = format!("{name} [{protocol:?}]");
            match runtime.block_on(run_file(file, protocol, complete, target)) {
                Ok(()) => {
                    passed += 1;
                    println!("test {label} ... ok");
                }
                Err(e) => {
                    failed += 1;
                    println!("test {label} ... FAILED\n{e:#}\n");
                }
            }
        }
    }
    println!("\nsqllogictest: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// This package's directory. Cargo sets `CARGO_MANIFEST_DIR` when it runs a test; the value
/// compiled in may name another checkout that shares the target directory (cargo reuses a
/// test binary across checkouts of the same workspace).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
