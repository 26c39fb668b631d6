//! The planner without a server: an engine over the in-memory log (the `StreamLogs` trait's
//! test implementation) and the real catalog files, reopened to check the catalog persists.

use std::sync::Arc;

use braid_planner::catalog::FileStore;
use braid_planner::datafusion::arrow::array::{AsArray, RecordBatch};
use braid_planner::datafusion::arrow::datatypes::{Decimal128Type, Int64Type};
use braid_planner::stream::log::StreamLogs;
use braid_planner::stream::logcore::{open_storage, LogDurability};
use braid_planner::stream::memlog::MemLogs;
use braid_planner::{Engine, EngineOptions, Error, Output};
use futures::TryStreamExt;

async fn rows(out: Output) -> anyhow::Result<Vec<RecordBatch>> {
    match out {
        Output::Rows { stream, .. } => Ok(stream.try_collect().await?),
        other => anyhow::bail!("expected rows, got {other:?}"),
    }
}

#[tokio::test]
async fn catalog_persists_and_streams_append() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (files, _) = open_storage(dir.path(), LogDurability::Sync)?;
    let files: Arc<dyn FileStore> = files;
    let logs: Arc<dyn StreamLogs> = Arc::new(MemLogs::default());

    let engine = Engine::open(
        files.clone(),
        logs.clone(),
        dir.path(),
        EngineOptions::default(),
    )
    .await?;
    let s = engine.session("postgres", "postgres", 1)?;
    s.execute("CREATE STREAM e (k text, v bigint) WITH (partitions = 3, partition_key = 'k')")
        .await?;
    match s
        .execute("INSERT INTO e VALUES ('a', 1), ('b', 2), ('a', 3)")
        .await?
    {
        Output::Command { tag, rows } => assert_eq!((tag.as_str(), rows), ("INSERT", Some(3))),
        other => anyhow::bail!("unexpected {other:?}"),
    }
    // sum(bigint) is numeric(38, 0), as in PostgreSQL.
    let batches = rows(s.execute("SELECT sum(v) FROM e WHERE k = 'a'").await?).await?;
    assert_eq!(
        batches[0]
            .column(0)
            .as_primitive::<Decimal128Type>()
            .value(0),
        4
    );
    assert!(matches!(
        s.execute("DELETE FROM e").await,
        Err(Error::Unsupported(m)) if m.contains("append-only")
    ));
    engine.close().await;

    // A new engine on the same directory sees the stream (the log here is the same MemLogs).
    let engine = Engine::open(files, logs, dir.path(), EngineOptions::default()).await?;
    let s = engine.session("postgres", "postgres", 2)?;
    let batches = rows(s.execute("SELECT count(*) FROM e").await?).await?;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 3);
    assert!(matches!(
        s.execute("CREATE STREAM e (x int)").await,
        Err(Error::DuplicateTable(_))
    ));
    assert!(matches!(
        engine.session("nope", "postgres", 3),
        Err(Error::UndefinedDatabase(_))
    ));
    Ok(())
}

/// Runs `sql` until it does not fail with 40001 (what a client does on a serialization
/// failure).
async fn retrying(s: &braid_planner::Session, sql: &str) -> anyhow::Result<u32> {
    let mut retries = 0;
    loop {
        match s.execute(sql).await {
            Ok(_) => return Ok(retries),
            Err(e) if e.to_string().contains("could not serialize") => retries += 1,
            Err(e) => anyhow::bail!("{sql}: {e}"),
        }
    }
}

/// CREATE UNIQUE INDEX while another session inserts rows: every committed row, from before,
/// during or after the index's creation, is found through the index, and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_index_during_inserts_misses_no_row() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (files, _) = open_storage(dir.path(), LogDurability::Sync)?;
    let files: Arc<dyn FileStore> = files;
    let logs: Arc<dyn StreamLogs> = Arc::new(MemLogs::default());
    let engine = Engine::open(files, logs, dir.path(), EngineOptions::default()).await?;
    let s = engine.session("postgres", "postgres", 1)?;
    s.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
        .await?;
    let values: Vec<String> = (0..300).map(|i| format!("({i}, {i})")).collect();
    s.execute(&format!("INSERT INTO t VALUES {}", values.join(", ")))
        .await?;
    let w = engine.session("postgres", "postgres", 2)?;
    let writer = tokio::spawn(async move {
        for i in 300..700 {
            retrying(&w, &format!("INSERT INTO t VALUES ({i}, {i})")).await?;
        }
        anyhow::Ok(())
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    retrying(&s, "CREATE UNIQUE INDEX t_v ON t (v)").await?;
    writer.await??;
    let count = |sql: &'static str| {
        let s = &s;
        async move {
            let b = rows(s.execute(sql).await?).await?;
            anyhow::Ok(b[0].column(0).as_primitive::<Int64Type>().value(0))
        }
    };
    assert_eq!(count("SELECT count(*) FROM t").await?, 700);
    assert_eq!(count("SELECT count(*) FROM t WHERE v >= 0").await?, 700);
    assert_eq!(count("SELECT count(*) FROM t WHERE v < 350").await?, 350);
    let plan = rows(
        s.execute("EXPLAIN SELECT count(*) FROM t WHERE v >= 0")
            .await?,
    )
    .await?;
    let text = format!("{:?}", plan);
    assert!(text.contains("index=t_v"), "{text}");
    let err = s.execute("INSERT INTO t VALUES (1000, 650)").await;
    assert!(
        err.as_ref()
            .is_err_and(|e| e.to_string().contains("\"t_v\"")),
        "{err:?}"
    );
    engine.close().await;
    Ok(())
}

async fn count(s: &braid_planner::Session, sql: &str) -> anyhow::Result<i64> {
    let b = rows(s.execute(sql).await?).await?;
    Ok(b[0].column(0).as_primitive::<Int64Type>().value(0))
}

/// CREATE DATABASE makes a whole database: its own row store and stream logs under its own
/// directories, kept across a reopen; DROP DATABASE refuses while a session uses it, then
/// removes the catalog entry and the directories, and leaves the other databases alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_are_separate_and_dropped_with_their_files() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (files, logs) = open_storage(dir.path(), LogDurability::Sync)?;
    let engine = Engine::open(
        files.clone(),
        logs.clone(),
        dir.path(),
        EngineOptions::default(),
    )
    .await?;
    let pg = engine.session("postgres", "postgres", 1)?;
    pg.execute("CREATE TABLE t (id int PRIMARY KEY)").await?;
    pg.execute("INSERT INTO t VALUES (1)").await?;
    pg.execute("CREATE DATABASE \"a/../b\"").await?;
    assert!(matches!(
        pg.execute("CREATE DATABASE \"a/../b\"").await,
        Err(Error::DuplicateDatabase(_))
    ));
    let shop = engine.session("a/../b", "postgres", 2)?;
    shop.execute("CREATE TABLE t (id int PRIMARY KEY)").await?;
    shop.execute("INSERT INTO t VALUES (1), (2)").await?;
    shop.execute("CREATE STREAM ev (n bigint)").await?;
    shop.execute("INSERT INTO ev VALUES (1), (2), (3)").await?;
    assert_eq!(count(&pg, "SELECT count(*) FROM t").await?, 1);
    assert_eq!(count(&shop, "SELECT count(*) FROM t").await?, 2);
    // The name is kept inside the data directory.
    let db_dir = braid_planner::catalog::database_dir("a/../b");
    assert_eq!(db_dir, "a%2F%2E%2E%2Fb");
    assert!(dir.path().join("tables").join(&db_dir).is_dir());
    assert!(dir.path().join("log").join(&db_dir).is_dir());
    engine.close().await;
    drop((pg, shop));

    let engine = Engine::open(
        files.clone(),
        logs.clone(),
        dir.path(),
        EngineOptions::default(),
    )
    .await?;
    let pg = engine.session("postgres", "postgres", 3)?;
    let shop = engine.session("a/../b", "postgres", 4)?;
    assert_eq!(count(&shop, "SELECT count(*) FROM t").await?, 2);
    assert_eq!(count(&shop, "SELECT count(*) FROM ev").await?, 3);
    assert!(matches!(
        shop.execute("DROP DATABASE \"a/../b\"").await,
        Err(Error::ObjectInUse { .. })
    ));
    drop(shop);
    pg.execute("DROP DATABASE \"a/../b\"").await?;
    assert!(!dir.path().join("tables").join(&db_dir).exists());
    assert!(!dir.path().join("log").join(&db_dir).exists());
    assert!(matches!(
        engine.session("a/../b", "postgres", 5),
        Err(Error::UndefinedDatabase(_))
    ));
    assert_eq!(count(&pg, "SELECT count(*) FROM t").await?, 1);
    engine.close().await;
    Ok(())
}

/// Directories a crash left between DROP DATABASE's catalog write and its removal of the
/// files belong to no database; the next start removes them and keeps every database's.
#[tokio::test]
async fn start_removes_the_files_of_dropped_databases() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (files, logs) = open_storage(dir.path(), LogDurability::Sync)?;
    let orphan_table = dir.path().join("tables").join("gone").join("7");
    let orphan_log = dir.path().join("log").join("gone").join("_commit");
    std::fs::create_dir_all(&orphan_table)?;
    std::fs::create_dir_all(&orphan_log)?;
    let engine = Engine::open(files, logs, dir.path(), EngineOptions::default()).await?;
    assert!(!dir.path().join("tables").join("gone").exists());
    assert!(!dir.path().join("log").join("gone").exists());
    assert!(dir.path().join("tables").join("postgres").is_dir());
    assert!(dir.path().join("log").join("postgres").is_dir());
    engine.close().await;
    Ok(())
}

/// A catalog written before schemas and databases had ids (format version 1 without `id`
/// fields) still opens: its `public` schema keeps PostgreSQL's OID and its table its rows,
/// and new schemas and databases take ids from the same counter.
#[tokio::test]
async fn catalog_without_ids_still_opens() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/catalog_v1_before_namespaces.json");
    std::fs::create_dir_all(dir.path().join("catalog"))?;
    std::fs::copy(&fixture, dir.path().join("catalog/catalog.json"))?;
    let (files, logs) = open_storage(dir.path(), LogDurability::Sync)?;
    let engine = Engine::open(files, logs, dir.path(), EngineOptions::default()).await?;
    let s = engine.session("postgres", "postgres", 1)?;
    s.execute("INSERT INTO t VALUES (1, 'one')").await?;
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = 'public' AND oid = 2200"
        )
        .await?,
        1
    );
    s.execute("CREATE SCHEMA s").await?;
    s.execute("CREATE TABLE s.t (a int)").await?;
    s.execute("CREATE DATABASE d").await?;
    // Schema, table and database ids come after the fixture's table (id 1).
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 't' AND oid > 16385"
        )
        .await?,
        1
    );
    assert_eq!(count(&s, "SELECT count(*) FROM public.t").await?, 1);
    engine.close().await;
    Ok(())
}

/// COPY resolves an unqualified table through the search path, both ways, as PostgreSQL
/// does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_follows_the_search_path() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (files, logs) = open_storage(dir.path(), LogDurability::Sync)?;
    let engine = Engine::open(files, logs, dir.path(), EngineOptions::default()).await?;
    let s = engine.session("postgres", "postgres", 1)?;
    s.execute("CREATE SCHEMA s").await?;
    s.execute("CREATE TABLE s.t (id int PRIMARY KEY, v text)")
        .await?;
    s.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await?;
    s.execute("SET search_path TO s, public").await?;
    let Output::CopyIn(copy) = s.execute("COPY t FROM STDIN").await? else {
        anyhow::bail!("COPY FROM STDIN did not start a copy");
    };
    let load = copy.start();
    let tx = load.sender().ok_or_else(|| anyhow::anyhow!("no sender"))?;
    tx.send(bytes::Bytes::from_static(b"1\tone\n2\ttwo\n"))
        .await?;
    drop(tx);
    assert_eq!(load.finish().await?, 2);
    assert_eq!(count(&s, "SELECT count(*) FROM s.t").await?, 2);
    assert_eq!(count(&s, "SELECT count(*) FROM public.t").await?, 0);
    let Output::CopyOut { stream, .. } = s.execute("COPY t TO STDOUT").await? else {
        anyhow::bail!("COPY TO STDOUT did not return rows");
    };
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    engine.close().await;
    Ok(())
}
