//! The planner without a server: an engine over the in-memory log (the `StreamLogs` trait's
//! test implementation) and the real catalog files, reopened to check the catalog persists.

use std::sync::Arc;

use braid_planner::catalog::FileStore;
use braid_planner::datafusion::arrow::array::{AsArray, RecordBatch};
use braid_planner::datafusion::arrow::datatypes::Int64Type;
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
    let batches = rows(s.execute("SELECT sum(v) FROM e WHERE k = 'a'").await?).await?;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 4);
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
