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
