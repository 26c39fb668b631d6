//! Client test: the NOTICEs `IF [NOT] EXISTS` and `DROP SCHEMA ... CASCADE` raise reach a
//! real driver (tokio-postgres, which hands them out as `AsyncMessage::Notice`) with the
//! SQLSTATE, message and detail PostgreSQL 15 gives them. The same statements run against a
//! PostgreSQL 15 started by the test, and both servers' notices must be equal; over the simple
//! protocol (`batch_execute`) and the extended one (`execute`).

use std::time::Duration;

use anyhow::Context;
use braid_sqllogictest::{BraidServer, PostgresServer};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

/// Statements run in order; each is followed by the notices it raised.
const STATEMENTS: &[&str] = &[
    "CREATE TABLE nt (a int)",
    "CREATE TABLE IF NOT EXISTS nt (a int)",
    "DROP TABLE IF EXISTS nosuch",
    "CREATE INDEX ni ON nt (a)",
    "CREATE INDEX IF NOT EXISTS ni ON nt (a)",
    "DROP INDEX IF EXISTS nosuch_index",
    "ALTER TABLE IF EXISTS nosuch ADD COLUMN b int",
    "ALTER TABLE nt ADD COLUMN IF NOT EXISTS a int",
    "ALTER TABLE nt DROP COLUMN IF EXISTS zz",
    "CREATE SCHEMA ns",
    "CREATE SCHEMA IF NOT EXISTS ns",
    "DROP SCHEMA IF EXISTS nosuch_schema",
    "CREATE TABLE ns.a (x int)",
    "CREATE TABLE ns.b (x int)",
    "DROP SCHEMA ns CASCADE",
    "CREATE SCHEMA ns2",
    "CREATE TABLE ns2.a (x int)",
    "DROP SCHEMA ns2 CASCADE",
    "DROP DATABASE IF EXISTS nosuch_database",
    // No notice: the table exists and is dropped.
    "DROP TABLE IF EXISTS nt",
];

/// (statement, SQLSTATE, message, detail) of every notice, in order.
type Notices = Vec<(String, String, String, Option<String>)>;

/// Runs [`STATEMENTS`] on a fresh connection to `conn_str`, each through the simple protocol
/// when `simple`, else prepared; returns the notices each raised.
async fn notices_of(conn_str: &str, simple: bool) -> anyhow::Result<Notices> {
    let (client, mut connection) = tokio_postgres::connect(conn_str, NoTls)
        .await
        .with_context(|| format!("connecting to {conn_str}"))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notice(n)) => {
                    let _ = tx.send(n);
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let mut out = Vec::new();
    for sql in STATEMENTS {
        if simple {
            client.batch_execute(sql).await
        } else {
            client.execute(*sql, &[]).await.map(|_| ())
        }
        .with_context(|| format!("running {sql}"))?;
        // The connection task has read every message before the statement's result reached
        // the client, so the notices are queued by now.
        while let Ok(n) = rx.try_recv() {
            out.push((
                sql.to_string(),
                n.code().code().to_string(),
                n.message().to_string(),
                n.detail().map(str::to_string),
            ));
        }
    }
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .context("the connection did not close")???;
    Ok(out)
}

fn expected() -> Notices {
    let n = |sql: &str, code: &str, message: &str, detail: Option<&str>| {
        (
            sql.to_string(),
            code.to_string(),
            message.to_string(),
            detail.map(str::to_string),
        )
    };
    vec![
        n(
            "CREATE TABLE IF NOT EXISTS nt (a int)",
            "42P07",
            "relation \"nt\" already exists, skipping",
            None,
        ),
        n(
            "DROP TABLE IF EXISTS nosuch",
            "00000",
            "table \"nosuch\" does not exist, skipping",
            None,
        ),
        n(
            "CREATE INDEX IF NOT EXISTS ni ON nt (a)",
            "42P07",
            "relation \"ni\" already exists, skipping",
            None,
        ),
        n(
            "DROP INDEX IF EXISTS nosuch_index",
            "00000",
            "index \"nosuch_index\" does not exist, skipping",
            None,
        ),
        n(
            "ALTER TABLE IF EXISTS nosuch ADD COLUMN b int",
            "00000",
            "relation \"nosuch\" does not exist, skipping",
            None,
        ),
        n(
            "ALTER TABLE nt ADD COLUMN IF NOT EXISTS a int",
            "42701",
            "column \"a\" of relation \"nt\" already exists, skipping",
            None,
        ),
        n(
            "ALTER TABLE nt DROP COLUMN IF EXISTS zz",
            "00000",
            "column \"zz\" of relation \"nt\" does not exist, skipping",
            None,
        ),
        n(
            "CREATE SCHEMA IF NOT EXISTS ns",
            "42P06",
            "schema \"ns\" already exists, skipping",
            None,
        ),
        n(
            "DROP SCHEMA IF EXISTS nosuch_schema",
            "00000",
            "schema \"nosuch_schema\" does not exist, skipping",
            None,
        ),
        n(
            "DROP SCHEMA ns CASCADE",
            "00000",
            "drop cascades to 2 other objects",
            Some("drop cascades to table ns.a\ndrop cascades to table ns.b"),
        ),
        n(
            "DROP SCHEMA ns2 CASCADE",
            "00000",
            "drop cascades to table ns2.a",
            None,
        ),
        n(
            "DROP DATABASE IF EXISTS nosuch_database",
            "00000",
            "database \"nosuch_database\" does not exist, skipping",
            None,
        ),
    ]
}

#[tokio::test]
async fn notices_match_postgresql() -> anyhow::Result<()> {
    let mut pg = PostgresServer::start().await?;
    let reference = notices_of(&pg.conn_str(), true).await?;
    pg.stop().await?;
    assert_eq!(reference, expected(), "PostgreSQL 15 itself");
    for simple in [true, false] {
        let mut braid = BraidServer::start().await?;
        let got = notices_of(&braid.conn_str(), simple).await?;
        assert_eq!(got, reference, "simple protocol: {simple}");
        braid.stop().await?;
        let bad = braid.unexpected_log_lines();
        assert!(bad.is_empty(), "unexpected server log lines: {bad:?}");
    }
    Ok(())
}
