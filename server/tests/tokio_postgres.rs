//! Driver test: tokio-postgres against the real `braid` binary — prepared statements with
//! parameters, binary results, errors with SQLSTATEs, COPY FROM STDIN, cancel.

use anyhow::Context;
use braid_sqllogictest::BraidServer;
use futures::SinkExt;
use tokio_postgres::error::SqlState;

#[tokio::test]
async fn prepared_statements_binary_results_errors_and_copy() -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;

    client
        .batch_execute(
            "CREATE STREAM ev (id bigint, name text, score double precision, ok boolean, \
             happened timestamptz, n numeric(10,2), raw bytea) WITH (partitions = 4, partition_key = 'name')",
        )
        .await
        .context("creating the stream")?;

    // Prepared INSERT with typed parameters, executed several times.
    let insert = client
        .prepare(
            "INSERT INTO ev (id, name, score, ok, happened, raw) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    let at =
        chrono::DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")?.with_timezone(&chrono::Utc);
    for i in 0..10i64 {
        let n = client
            .execute(
                &insert,
                &[
                    &i,
                    &format!("user{}", i % 3),
                    &(i as f64 * 0.5),
                    &(i % 2 == 0),
                    &at,
                    &vec![i as u8, 255u8],
                ],
            )
            .await?;
        assert_eq!(n, 1, "INSERT reports one row");
    }

    // Prepared SELECT with a parameter; binary results decode into Rust types.
    let select = client
        .prepare("SELECT id, name, score, ok, happened, raw FROM ev WHERE id >= $1 ORDER BY id")
        .await?;
    let rows = client.query(&select, &[&7i64]).await?;
    assert_eq!(rows.len(), 3);
    let id: i64 = rows[0].get(0);
    let name: &str = rows[0].get(1);
    let score: f64 = rows[0].get(2);
    let ok: bool = rows[0].get(3);
    let ts: chrono::DateTime<chrono::Utc> = rows[0].get(4);
    let raw: Vec<u8> = rows[0].get(5);
    assert_eq!((id, name, score, ok), (7, "user1", 3.5, false));
    assert_eq!(ts, at);
    assert_eq!(raw, vec![7u8, 255]);

    // Hidden columns are typed too.
    let row = client
        .query_one(
            "SELECT _partition, _offset, _key FROM ev WHERE id = $1",
            &[&4i64],
        )
        .await?;
    let partition: i32 = row.get(0);
    let _offset: i64 = row.get(1);
    let key: &str = row.get(2);
    assert!((0..4).contains(&partition));
    assert_eq!(key, "user1");

    // Arrays, numeric and jsonb in binary format.
    let row = client
        .query_one(
            "SELECT make_array(1::bigint, 2::bigint, 3::bigint), 12.5::numeric(10,2)",
            &[],
        )
        .await?;
    let arr: Vec<i64> = row.get(0);
    assert_eq!(arr, vec![1, 2, 3]);
    client
        .batch_execute("CREATE STREAM docs (d jsonb); INSERT INTO docs VALUES ('{\"a\": [1, 2]}')")
        .await?;
    let doc: serde_json::Value = client.query_one("SELECT d FROM docs", &[]).await?.get(0);
    assert_eq!(doc, serde_json::json!({"a": [1, 2]}));

    // Errors carry SQLSTATEs and the connection stays usable.
    let err = client
        .query("SELECT * FROM missing", &[])
        .await
        .expect_err("missing table");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    let err = client
        .query("SELECT nope FROM ev", &[])
        .await
        .expect_err("missing column");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_COLUMN));
    let err = client
        .execute("DELETE FROM ev", &[])
        .await
        .expect_err("append-only");
    assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED));
    let err = client
        .query("SELECT 1 / 0", &[])
        .await
        .expect_err("division by zero");
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let count: i64 = client
        .query_one("SELECT count(*) FROM ev", &[])
        .await?
        .get(0);
    assert_eq!(count, 10);

    // COPY FROM STDIN, text format.
    let sink = client
        .copy_in("COPY ev (id, name, score) FROM STDIN")
        .await?;
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"100\tcopy\t1.5\n101\t\\N\t2.5\n",
    ))
    .await?;
    let copied = sink.finish().await?;
    assert_eq!(copied, 2);

    // COPY FROM STDIN, CSV with a header.
    let sink = client
        .copy_in("COPY ev (id, name) FROM STDIN WITH (FORMAT csv, HEADER true)")
        .await?;
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"id,name\n200,\"a,b\"\n201,\n"))
        .await?;
    assert_eq!(sink.finish().await?, 2);

    let names: Vec<Option<String>> = client
        .query("SELECT name FROM ev WHERE id >= 100 ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        names,
        vec![Some("copy".into()), None, Some("a,b".into()), None]
    );

    // Bad COPY data is 22P02 and nothing of it is appended.
    let sink = client.copy_in("COPY ev (id) FROM STDIN").await?;
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"not-a-number\n"))
        .await?;
    let err = sink.finish().await.expect_err("bad COPY input");
    assert_eq!(err.code(), Some(&SqlState::INVALID_TEXT_REPRESENTATION));
    let count: i64 = client
        .query_one("SELECT count(*) FROM ev", &[])
        .await?
        .get(0);
    assert_eq!(count, 14);

    // An unknown database is refused at connect time.
    let bad_db = format!(
        "host=127.0.0.1 port={} user=postgres dbname=nope",
        server.port
    );
    let err = tokio_postgres::connect(&bad_db, tokio_postgres::NoTls)
        .await
        .err()
        .context("connecting to a missing database fails")?;
    assert_eq!(err.code(), Some(&SqlState::INVALID_CATALOG_NAME), "{err}");

    // Data survives a restart.
    drop(client);
    server.restart().await?;
    let client = server.connect().await?;
    let count: i64 = client
        .query_one("SELECT count(*) FROM ev", &[])
        .await?
        .get(0);
    assert_eq!(count, 14);

    drop(client);
    stop_with_a_clean_log(&mut server).await
}

#[tokio::test]
async fn cancel_request_stops_a_running_query() -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        client.query(
            "SELECT count(*) FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b",
            &[],
        ),
    )
    .await
    .context("the cancelled query did not return within 60 s")?;
    canceller.await??;
    let err = result.expect_err("the query was cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // The connection is still usable.
    let one: i64 = client.query_one("SELECT 1::bigint", &[]).await?.get(0);
    assert_eq!(one, 1);
    drop(client);
    server.stop().await?;
    Ok(())
}

/// Prepared INSERTs into streams: multi-row VALUES mixing parameters, constants and
/// expressions; casts; hidden columns; NOT NULL; and re-planning after DDL (a statement
/// prepared before DROP/CREATE STREAM writes into the new stream, or is refused with 0A000
/// when the new stream takes other types, as PostgreSQL refuses a changed cached plan).
#[tokio::test]
async fn prepared_inserts_follow_ddl_and_keep_semantics() -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE STREAM t (id bigint NOT NULL, label text, amount double precision) \
             WITH (partitions = 3)",
        )
        .await?;

    let multi = client
        .prepare(
            "INSERT INTO t (id, label, amount, _partition) VALUES \
             ($1, $2, 1.5, 2), ($1 + 1, upper($2), NULL, 0), (42, 'const', $3, 1)",
        )
        .await?;
    assert_eq!(client.execute(&multi, &[&7i64, &"abc", &3.25f64]).await?, 3);
    let rows: Vec<(i64, Option<String>, Option<f64>, i32)> = client
        .query(
            "SELECT id, label, amount, _partition FROM t ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (7, Some("abc".into()), Some(1.5), 2),
            (8, Some("ABC".into()), None, 0),
            (42, Some("const".into()), Some(3.25), 1),
        ]
    );

    // NULL into a NOT NULL column: 23502, nothing appended.
    let one = client
        .prepare("INSERT INTO t (id, label) VALUES ($1, $2)")
        .await?;
    let err = client
        .execute(&one, &[&None::<i64>, &"x"])
        .await
        .expect_err("not null");
    assert_eq!(err.code(), Some(&SqlState::NOT_NULL_VIOLATION), "{err}");
    // `_partition` out of range: refused, nothing appended.
    let part = client
        .prepare("INSERT INTO t (id, _partition) VALUES ($1, $2)")
        .await?;
    let err = client
        .execute(&part, &[&1i64, &9i32])
        .await
        .expect_err("partition out of range");
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_PARAMETER_VALUE),
        "{err:?}"
    );
    let message = err.as_db_error().map(|e| e.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("out of range")),
        "{message:?}"
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0);
    assert_eq!(n, 3);

    // DROP + CREATE with the same columns: the prepared statement writes into the new stream.
    client
        .batch_execute(
            "DROP STREAM t; CREATE STREAM t (id bigint NOT NULL, label text, amount double precision)",
        )
        .await?;
    assert_eq!(client.execute(&one, &[&5i64, &"new"]).await?, 1);
    let rows: Vec<(i64, String)> = client
        .query("SELECT id, label FROM t", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(5, "new".to_string())]);

    // Re-created with other column types: the cached statement is refused, not misapplied.
    client
        .batch_execute("DROP STREAM t; CREATE STREAM t (id text, label text)")
        .await?;
    let err = client
        .execute(&one, &[&6i64, &"changed"])
        .await
        .expect_err("changed types");
    assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{err}");
    // A fresh prepare works against the new definition.
    let fresh = client
        .prepare("INSERT INTO t (id, label) VALUES ($1, $2)")
        .await?;
    assert_eq!(client.execute(&fresh, &[&"six", &"ok"]).await?, 1);

    // Dropped without a replacement: 42P01.
    client.batch_execute("DROP STREAM t").await?;
    let err = client
        .execute(&fresh, &[&"seven", &"gone"])
        .await
        .expect_err("dropped");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE), "{err}");

    drop(client);
    stop_with_a_clean_log(&mut server).await
}

/// COPY data sent in many small CopyData messages, with rows cut at arbitrary points, loads
/// every row; a bad row far into the data fails the whole COPY with nothing appended.
#[tokio::test]
async fn copy_in_pieces_is_all_or_nothing() -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;
    client
        .batch_execute("CREATE STREAM c (id bigint, name text) WITH (partitions = 4)")
        .await?;
    let rows = 30_000usize;
    let mut data = String::new();
    for i in 0..rows {
        data.push_str(&format!("{i}\tname-{i}-é\n"));
    }
    let send_in_pieces = |data: String| async {
        let sink = client.copy_in("COPY c FROM STDIN").await?;
        futures::pin_mut!(sink);
        let bytes = data.into_bytes();
        // Piece sizes that never line up with rows or UTF-8 characters.
        for piece in bytes.chunks(997) {
            sink.send(bytes::Bytes::copy_from_slice(piece)).await?;
        }
        sink.finish().await
    };
    assert_eq!(send_in_pieces(data.clone()).await?, rows as u64);
    let (n, sum): (i64, i64) = {
        let r = client
            .query_one("SELECT count(*), sum(id)::bigint FROM c", &[])
            .await?;
        (r.get(0), r.get(1))
    };
    assert_eq!(n, rows as i64);
    assert_eq!(sum, (rows as i64 - 1) * rows as i64 / 2);
    let name: String = client
        .query_one("SELECT name FROM c WHERE id = 12345", &[])
        .await?
        .get(0);
    assert_eq!(name, "name-12345-é");

    // Line 25,002 is bad: the COPY fails with 22P02 naming it, and none of its rows land.
    let mut bad = data.clone();
    let at = bad
        .match_indices('\n')
        .nth(25_000)
        .map(|(i, _)| i + 1)
        .context("end of line 25,001")?;
    bad.insert_str(at, "oops\tx\n");
    let err = send_in_pieces(bad).await.expect_err("bad row");
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_TEXT_REPRESENTATION),
        "{err:?}"
    );
    let message = err.as_db_error().map(|e| e.message().to_string());
    assert!(
        message.as_deref().is_some_and(|m| m.contains("line 25002")),
        "{message:?}"
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM c", &[])
        .await?
        .get(0);
    assert_eq!(n, rows as i64);

    // Inside a block the COPY's rows are the block's own: it sees them (without offsets),
    // ROLLBACK drops them, and nobody else sees them before COMMIT.
    let other = server.connect().await?;
    client.batch_execute("BEGIN").await?;
    let piece: String = (0..100)
        .map(|i| format!("{}\tblock\n", 100_000 + i))
        .collect();
    assert_eq!(send_in_pieces(piece.clone()).await?, 100);
    let r = client
        .query_one(
            "SELECT count(*), count(_offset) FROM c WHERE name = 'block'",
            &[],
        )
        .await?;
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (100, 0));
    let n: i64 = other.query_one("SELECT count(*) FROM c", &[]).await?.get(0);
    assert_eq!(n, rows as i64, "another session sees nothing held");
    client.batch_execute("ROLLBACK").await?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM c", &[])
        .await?
        .get(0);
    assert_eq!(n, rows as i64);
    client.batch_execute("BEGIN").await?;
    send_in_pieces(piece).await?;
    client.batch_execute("COMMIT").await?;
    let r = other
        .query_one(
            "SELECT count(*), count(_offset) FROM c WHERE name = 'block'",
            &[],
        )
        .await?;
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (100, 100));

    drop(other);
    drop(client);
    stop_with_a_clean_log(&mut server).await
}

/// Row tables answer constraint violations with PostgreSQL's SQLSTATE, message and DETAIL, and
/// prepared statements with parameters read, write and roll back through them.
/// READ COMMITTED (the default), as in PostgreSQL: an UPDATE of a row another open
/// transaction has updated waits for it, then applies to its committed row — no 40001, no lost
/// update. REPEATABLE READ keeps snapshot isolation's rule (the later COMMIT fails with 40001),
/// and two transactions locking two rows in opposite order end with one 40P01.
#[tokio::test]
async fn read_committed_updates_wait_for_the_row_and_apply_to_its_newest_version(
) -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let a = server.connect().await?;
    let b = server.connect().await?;
    a.batch_execute(
        "CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL); \
         INSERT INTO counter VALUES (1, 0), (2, 0)",
    )
    .await?;
    let bump = "UPDATE counter SET n = n + $1 WHERE id = $2";

    // b's block starts (and takes its snapshot) before a commits.
    b.batch_execute("BEGIN").await?;
    assert_eq!(
        b.query_one("SELECT n FROM counter WHERE id = 2", &[])
            .await?
            .get::<_, i64>(0),
        0
    );
    a.batch_execute("BEGIN").await?;
    assert_eq!(a.execute(bump, &[&1i64, &1i32]).await?, 1);
    let waiting = tokio::spawn(async move {
        let n = b.execute(bump, &[&10i64, &1i32]).await?;
        b.batch_execute("COMMIT").await?;
        Ok::<_, tokio_postgres::Error>((n, b))
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "b's UPDATE waits for a's row lock");
    a.batch_execute("COMMIT").await?;
    let (n, b) = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .context("b's UPDATE resumes after a's COMMIT")???;
    assert_eq!(n, 1);
    let total: i64 = a
        .query_one("SELECT n FROM counter WHERE id = 1", &[])
        .await?
        .get(0);
    assert_eq!(total, 11, "both increments are there");

    // REPEATABLE READ: the later committer fails, as under snapshot isolation.
    b.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    b.execute(bump, &[&100i64, &1i32]).await?;
    a.execute(bump, &[&1000i64, &1i32]).await?;
    let err = b.batch_execute("COMMIT").await.expect_err("40001");
    assert_eq!(err.code(), Some(&SqlState::T_R_SERIALIZATION_FAILURE));
    let total: i64 = a
        .query_one("SELECT n FROM counter WHERE id = 1", &[])
        .await?
        .get(0);
    assert_eq!(total, 1011);
    // The same through the extended protocol; the block is over after the failed COMMIT.
    b.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    b.execute(bump, &[&100i64, &2i32]).await?;
    a.execute(bump, &[&1000i64, &2i32]).await?;
    let err = b.execute("COMMIT", &[]).await.expect_err("40001");
    assert_eq!(err.code(), Some(&SqlState::T_R_SERIALIZATION_FAILURE));
    assert_eq!(
        b.query_one("SELECT n FROM counter WHERE id = 2", &[])
            .await?
            .get::<_, i64>(0),
        1000
    );

    // Opposite lock order: one of the two gets 40P01 and the other goes on.
    a.batch_execute("BEGIN").await?;
    // The failed COMMIT ended b's block, as in PostgreSQL: BEGIN works at once.
    if let Err(e) = b.batch_execute("BEGIN").await {
        anyhow::bail!("BEGIN after a failed COMMIT: {:?}", e.as_db_error());
    }
    a.execute(bump, &[&1i64, &1i32]).await?;
    b.execute(bump, &[&1i64, &2i32]).await?;
    let a_next = tokio::spawn(async move {
        let r = a.execute(bump, &[&1i64, &2i32]).await;
        (r, a)
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let b_err = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        b.execute(bump, &[&1i64, &1i32]),
    )
    .await
    .context("b's UPDATE answers (a must have been waiting first)")?
    .expect_err("closing the cycle fails");
    assert_eq!(b_err.code(), Some(&SqlState::T_R_DEADLOCK_DETECTED));
    b.batch_execute("ROLLBACK").await?;
    let (r, a) = tokio::time::timeout(std::time::Duration::from_secs(10), a_next)
        .await
        .context("a resumes once b rolled back")??;
    assert_eq!(r?, 1);
    a.batch_execute("COMMIT").await?;
    let rows = a
        .query("SELECT id, n FROM counter ORDER BY id", &[])
        .await?;
    let got: Vec<(i32, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [(1, 1012), (2, 1001)]);
    drop((a, b));
    stop_with_a_clean_log(&mut server).await
}

/// COPY FROM STDIN into row tables: all rows or none, PostgreSQL's 23505 and 23502, held by
/// a transaction block until COMMIT (and dropped by ROLLBACK), tables with a hidden row id,
/// CSV with a column list, and left-out columns taking their DEFAULTs.
#[tokio::test]
async fn copy_into_row_tables() -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, balance bigint); \
             CREATE TABLE notes (body text, at date); \
             CREATE TABLE dflt (id int PRIMARY KEY, n int DEFAULT 7, label text DEFAULT 'x' || 'y', \
                 at timestamptz DEFAULT now(), r float8 DEFAULT random(), plain int); \
             CREATE TABLE dnn (id int PRIMARY KEY, must text NOT NULL, d int DEFAULT 1)",
        )
        .await?;
    let copy = |sql: &'static str, data: String| {
        let client = &client;
        async move {
            let sink = client.copy_in(sql).await?;
            futures::pin_mut!(sink);
            // Pieces that do not line up with rows.
            for piece in data.as_bytes().chunks(1000) {
                sink.send(bytes::Bytes::copy_from_slice(piece)).await?;
            }
            sink.finish().await
        }
    };
    let mut data = String::new();
    for i in 1..=20_000 {
        data.push_str(&format!("{i}\towner-{i}\t{}\n", i * 10));
    }
    assert_eq!(copy("COPY acct FROM STDIN", data).await?, 20_000);
    let row = client
        .query_one("SELECT count(*), sum(balance)::bigint FROM acct", &[])
        .await?;
    assert_eq!(row.get::<_, i64>(0), 20_000);
    assert_eq!(row.get::<_, i64>(1), 2_000_100_000);

    // A duplicate key (with a row already stored) fails the whole COPY.
    let err = copy(
        "COPY acct FROM STDIN",
        "30001\tnew\t1\n5\tagain\t1\n".to_string(),
    )
    .await
    .expect_err("duplicate");
    let db = err.as_db_error().context("a server error")?;
    assert_eq!(db.code(), &SqlState::UNIQUE_VIOLATION);
    assert_eq!(
        db.message(),
        "duplicate key value violates unique constraint \"acct_pkey\""
    );
    let err = copy("COPY acct FROM STDIN", "30002\t\\N\t1\n".to_string())
        .await
        .expect_err("not null");
    let db = err.as_db_error().context("a server error")?;
    assert_eq!(db.code(), &SqlState::NOT_NULL_VIOLATION);
    assert_eq!(
        db.message(),
        "null value in column \"owner\" of relation \"acct\" violates not-null constraint"
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM acct WHERE id > 30000", &[])
        .await?
        .get(0);
    assert_eq!(n, 0, "nothing of a failed COPY is there");

    // In a block: seen by the block, dropped by ROLLBACK, kept by COMMIT.
    client.batch_execute("BEGIN").await?;
    copy(
        "COPY acct (id, owner) FROM STDIN",
        "40001\tblock\n".to_string(),
    )
    .await?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM acct WHERE id = 40001", &[])
        .await?
        .get(0);
    assert_eq!(n, 1);
    client.batch_execute("ROLLBACK").await?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM acct WHERE id = 40001", &[])
        .await?
        .get(0);
    assert_eq!(n, 0);
    client.batch_execute("BEGIN").await?;
    copy(
        "COPY acct (id, owner) FROM STDIN",
        "40002\tkept\n".to_string(),
    )
    .await?;
    client.batch_execute("COMMIT").await?;
    let row = client
        .query_one("SELECT owner, balance FROM acct WHERE id = 40002", &[])
        .await?;
    assert_eq!(row.get::<_, String>(0), "kept");
    assert_eq!(row.get::<_, Option<i64>>(1), None);

    // A table without a key, CSV with a header and a column list.
    copy(
        "COPY notes (at, body) FROM STDIN WITH (FORMAT csv, HEADER true)",
        "at,body\n2024-01-02,\"one, two\"\n2024-01-03,\n".to_string(),
    )
    .await?;
    let rows = client
        .query("SELECT body, at::text AS d FROM notes ORDER BY d", &[])
        .await?;
    let got: Vec<(Option<String>, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [
            (Some("one, two".to_string()), "2024-01-02".to_string()),
            (None, "2024-01-03".to_string())
        ]
    );

    // Left-out columns take their DEFAULT (evaluated per row where it is volatile, with one
    // statement time for now()), or NULL without one; a given column keeps its value.
    let before: std::time::SystemTime = client.query_one("SELECT now()", &[]).await?.get(0);
    assert_eq!(
        copy("COPY dflt (id) FROM STDIN", "1\n2\n3\n".to_string()).await?,
        3
    );
    assert_eq!(
        copy("COPY dflt (n, id) FROM STDIN", "70\t4\n".to_string()).await?,
        1
    );
    let rows = client
        .query(
            "SELECT id, n, label, at, r, plain FROM dflt ORDER BY id",
            &[],
        )
        .await?;
    let ns: Vec<Option<i32>> = rows.iter().map(|r| r.get(1)).collect();
    assert_eq!(ns, [Some(7), Some(7), Some(7), Some(70)]);
    for r in &rows {
        assert_eq!(r.get::<_, Option<String>>(2).as_deref(), Some("xy"));
        assert_eq!(r.get::<_, Option<i32>>(5), None);
    }
    let ats: Vec<std::time::SystemTime> = rows.iter().map(|r| r.get(3)).collect();
    assert!(ats.iter().all(|t| *t >= before), "{ats:?} after {before:?}");
    assert!(
        ats[..3].iter().all(|t| *t == ats[0]),
        "one time per COPY: {ats:?}"
    );
    let mut rs: Vec<f64> = rows.iter().map(|r| r.get(4)).collect();
    assert!(rs.iter().all(|r| (0.0..1.0).contains(r)), "{rs:?}");
    rs.sort_by(f64::total_cmp);
    rs.dedup();
    assert_eq!(rs.len(), 4, "random() per row");
    // A left-out NOT NULL column without a default is PostgreSQL's 23502.
    let err = copy("COPY dnn (id) FROM STDIN", "1\n".to_string())
        .await
        .expect_err("23502");
    let db = err.as_db_error().context("a server error")?;
    assert_eq!(db.code(), &SqlState::NOT_NULL_VIOLATION);
    assert_eq!(
        db.message(),
        "null value in column \"must\" of relation \"dnn\" violates not-null constraint"
    );
    drop(client);
    stop_with_a_clean_log(&mut server).await
}

/// `SET TIME ZONE` changes how timestamptz values are shown (text results, as psql gets them),
/// with PostgreSQL 15.18's output for the same statements; a zone braid cannot read is 22023.
#[tokio::test]
async fn set_time_zone_shows_timestamptz_in_that_zone() -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE tz (id int PRIMARY KEY, at timestamptz); \
             INSERT INTO tz VALUES (1, '2024-01-02 12:00:00+00'), (2, '2024-07-01 23:30:00.5+00')",
        )
        .await?;
    let shown = |sql: &'static str| {
        let client = &client;
        async move {
            let mut out = Vec::new();
            for m in client.simple_query(sql).await? {
                if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                    out.push(r.get(0).unwrap_or("NULL").to_string());
                }
            }
            Ok::<_, tokio_postgres::Error>(out)
        }
    };
    let select = "SELECT at FROM tz ORDER BY id";
    assert_eq!(
        shown(select).await?,
        ["2024-01-02 12:00:00+00", "2024-07-01 23:30:00.5+00"]
    );
    client
        .batch_execute("SET TIME ZONE 'Europe/Berlin'")
        .await?;
    assert_eq!(
        shown(select).await?,
        ["2024-01-02 13:00:00+01", "2024-07-02 01:30:00.5+02"]
    );
    client
        .batch_execute("SET timezone = 'asia/kolkata'")
        .await?;
    assert_eq!(
        shown(select).await?,
        ["2024-01-02 17:30:00+05:30", "2024-07-02 05:00:00.5+05:30"]
    );
    client.batch_execute("SET TIME ZONE -7").await?;
    assert_eq!(
        shown(select).await?,
        ["2024-01-02 05:00:00-07", "2024-07-01 16:30:00.5-07"]
    );
    let err = client
        .batch_execute("SET TIME ZONE 'Mars/Olympus'")
        .await
        .expect_err("an unknown zone");
    let db = err.as_db_error().context("a server error")?;
    assert_eq!(db.code(), &SqlState::INVALID_PARAMETER_VALUE);
    assert_eq!(
        db.message(),
        "invalid value for parameter \"TimeZone\": \"Mars/Olympus\""
    );
    // The failed SET left the zone as it was; binary results stay instants.
    assert_eq!(shown(select).await?[0], "2024-01-02 05:00:00-07");
    let at: chrono::DateTime<chrono::Utc> = client
        .query_one("SELECT at FROM tz WHERE id = 1", &[])
        .await?
        .get(0);
    assert_eq!(at.to_rfc3339(), "2024-01-02T12:00:00+00:00");
    drop(client);
    stop_with_a_clean_log(&mut server).await
}

#[tokio::test]
async fn row_table_errors_carry_postgres_details() -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let mut client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE acct (region text, id int, owner text NOT NULL, PRIMARY KEY (region, id))",
        )
        .await?;
    let insert = client
        .prepare("INSERT INTO acct VALUES ($1, $2, $3)")
        .await?;
    client.execute(&insert, &[&"eu", &1i32, &"ann"]).await?;

    let err = client
        .execute(&insert, &[&"eu", &1i32, &"bob"])
        .await
        .expect_err("a duplicate key");
    let db = err.as_db_error().context("a server error")?;
    assert_eq!(db.code(), &SqlState::UNIQUE_VIOLATION);
    assert_eq!(
        db.message(),
        "duplicate key value violates unique constraint \"acct_pkey\""
    );
    assert_eq!(
        db.detail(),
        Some("Key (region, id)=(eu, 1) already exists.")
    );

    let err = client
        .execute("INSERT INTO acct VALUES ('us', 2, NULL)", &[])
        .await
        .expect_err("a NULL owner");
    let db = err.as_db_error().context("a server error")?;
    assert_eq!(db.code(), &SqlState::NOT_NULL_VIOLATION);
    assert_eq!(
        db.message(),
        "null value in column \"owner\" of relation \"acct\" violates not-null constraint"
    );
    assert_eq!(db.detail(), Some("Failing row contains (us, 2, null)."));

    // A transaction through the driver: its writes are visible inside, gone after rollback.
    let txn = client.transaction().await?;
    txn.execute(&insert, &[&"us", &3i32, &"cy"]).await?;
    let rows = txn
        .query(
            "SELECT owner FROM acct WHERE region = $1 AND id = $2",
            &[&"us", &3i32],
        )
        .await?;
    assert_eq!(rows.len(), 1);
    txn.rollback().await?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM acct", &[])
        .await?
        .get(0);
    assert_eq!(n, 1);
    drop(client);
    stop_with_a_clean_log(&mut server).await
}

/// COPY ... TO STDOUT sends what PostgreSQL 15 sends for the same rows (the expected text was
/// taken from PostgreSQL 15 running these statements), and its output loads back with COPY
/// FROM into an equal stream.
#[tokio::test]
async fn copy_to_stdout_matches_postgresql_and_reads_back() -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE STREAM s (id bigint, name text, ok boolean, at timestamptz, \
             score double precision, n numeric(10,2)) WITH (partitions = 1); \
             CREATE STREAM back (id bigint, name text, ok boolean, at timestamptz, \
             score double precision, n numeric(10,2)) WITH (partitions = 1); \
             INSERT INTO s VALUES (1, 'plain', true, '2024-05-01 12:00:00+00', 1.5, 12.30), \
             (2, E'tab\\there\\nnew\\\\line', false, NULL, NULL, NULL), \
             (3, '', NULL, '2024-05-01 12:00:00.5+00', -0.25, 0), \
             (4, NULL, true, NULL, 1e20, -5.5), \
             (5, 'a,b \"q\"', false, '1999-12-31 23:59:59.123456+00', 0.1, 100)",
        )
        .await?;
    let copy_out = |sql: &'static str| {
        let client = &client;
        async move {
            let stream = client.copy_out(sql).await?;
            futures::pin_mut!(stream);
            let mut out = Vec::new();
            while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
                out.extend_from_slice(&chunk?);
            }
            anyhow::Ok(String::from_utf8(out)?)
        }
    };
    let text = copy_out("COPY (SELECT * FROM s ORDER BY id) TO STDOUT").await?;
    assert_eq!(
        text,
        "1\tplain\tt\t2024-05-01 12:00:00+00\t1.5\t12.30\n\
         2\ttab\\there\\nnew\\\\line\tf\t\\N\t\\N\t\\N\n\
         3\t\t\\N\t2024-05-01 12:00:00.5+00\t-0.25\t0.00\n\
         4\t\\N\tt\t\\N\t1e+20\t-5.50\n\
         5\ta,b \"q\"\tf\t1999-12-31 23:59:59.123456+00\t0.1\t100.00\n"
    );
    assert_eq!(
        copy_out("COPY (SELECT id, name FROM s ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)")
            .await?,
        "id,name\n1,plain\n2,\"tab\there\nnew\\line\"\n3,\"\"\n4,\n5,\"a,b \"\"q\"\"\"\n"
    );
    assert_eq!(
        copy_out(
            "COPY (SELECT id, name FROM s ORDER BY id) TO STDOUT \
             WITH (FORMAT csv, NULL 'NULL', DELIMITER ';')"
        )
        .await?,
        "1;plain\n2;\"tab\there\nnew\\line\"\n3;\n4;NULL\n5;\"a,b \"\"q\"\"\"\n"
    );
    assert_eq!(
        copy_out("COPY s (id, ok) TO STDOUT WITH (DELIMITER '|', NULL '')").await?,
        "1|t\n2|f\n3|\n4|t\n5|f\n"
    );
    // The whole stream in text form loads back into an equal stream.
    let dump = copy_out("COPY s TO STDOUT").await?;
    let sink = client.copy_in("COPY back FROM STDIN").await?;
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from(dump)).await?;
    assert_eq!(sink.finish().await?, 5);
    let diff: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT * FROM s EXCEPT SELECT * FROM back) d",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(diff, 0, "the reloaded rows equal the originals");

    let err = copy_out("COPY nope TO STDOUT").await.expect_err("missing");
    let code = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code().cloned());
    assert_eq!(code, Some(SqlState::UNDEFINED_TABLE), "{err:?}");
    let err = client
        .batch_execute("COPY s TO '/tmp/braid-copy-out.txt'")
        .await
        .expect_err("COPY TO a file");
    assert_eq!(
        err.code(),
        Some(&SqlState::FEATURE_NOT_SUPPORTED),
        "{err:?}"
    );
    // The connection is still usable.
    let n: i64 = client
        .query_one("SELECT count(*) FROM s", &[])
        .await?
        .get(0);
    assert_eq!(n, 5);

    drop(client);
    stop_with_a_clean_log(&mut server).await
}

/// Stops the server (SIGTERM, exit 0) and checks it logged no ERROR or WARN line.
/// Output columns carry PostgreSQL's names (checked on PostgreSQL 15), through both
/// protocols and in COPY's CSV header: an unnamed expression is named after its function,
/// keyword or cast column, anything else is `?column?`; duplicates are allowed; a column keeps
/// its name beside an expression of the same name.
#[tokio::test]
async fn column_names_follow_postgresql() -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, at date); \
             INSERT INTO t VALUES (1, '2024-01-01'), (2, '2024-01-02')",
        )
        .await?;
    let cases: [(&str, &[&str]); 8] = [
        (
            "SELECT count(*), 1+1, 2+2, upper('a'), now() is null, '1'::int, coalesce(id, 0), \
             CASE WHEN id > 1 THEN 1 END, sum(id), (SELECT max(id) FROM t) FROM t GROUP BY id",
            &[
                "count", "?column?", "?column?", "upper", "?column?", "int4", "coalesce", "case",
                "sum", "max",
            ],
        ),
        ("SELECT at::text, at FROM t", &["at", "at"]),
        ("SELECT at::text FROM t ORDER BY at", &["at"]),
        (
            "SELECT extract(year from at), date '2024-01-01', 'x'::varchar(3), ARRAY[1], \
             trim(' a '), substring('abc' from 2), ceil(1.5) FROM t",
            &[
                "extract",
                "date",
                "varchar",
                "array",
                "btrim",
                "substring",
                "ceil",
            ],
        ),
        (
            "SELECT *, at::text, id + 1 FROM t",
            &["id", "at", "at", "?column?"],
        ),
        (
            "SELECT * FROM (SELECT count(*), max(id) FROM t) s",
            &["count", "max"],
        ),
        (
            "SELECT id + 1 AS next, id FROM t ORDER BY next",
            &["next", "id"],
        ),
        // A cast's type names the column over another cast's or a CASE's weak name, not over
        // a column's (PostgreSQL's FigureColname strengths).
        (
            "SELECT 2::float8::text, (CASE WHEN id > 1 THEN 1 END)::text, id::text::varchar, \
             date '2024-01-01'::text FROM t",
            &["text", "text", "id", "text"],
        ),
    ];
    for (sql, want) in cases {
        let stmt = client.prepare(sql).await?;
        let names: Vec<&str> = stmt.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, want, "extended: {sql}");
        let rows = client.query(&stmt, &[]).await?;
        assert!(!rows.is_empty(), "{sql}");
        let msgs = client.simple_query(sql).await?;
        let row = msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .context("a row")?;
        let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, want, "simple: {sql}");
    }
    // ORDER BY a name an expression gave its column sorts by that column.
    let rows = client
        .query("SELECT -id AS id2, id::text FROM t ORDER BY id2", &[])
        .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
    assert_eq!(ids, ["2", "1"]);
    // COPY's CSV header shows the same names.
    let out = client
        .copy_out("COPY (SELECT count(*), 1 + 1 FROM t) TO STDOUT WITH (FORMAT csv, HEADER true)")
        .await?;
    futures::pin_mut!(out);
    let mut text = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut out).await {
        text.extend_from_slice(&chunk?);
    }
    assert_eq!(String::from_utf8(text)?, "count,?column?\n2,2\n");
    drop(client);
    stop_with_a_clean_log(&mut server).await
}

async fn stop_with_a_clean_log(server: &mut BraidServer) -> anyhow::Result<()> {
    server.stop().await?;
    let bad = server.unexpected_log_lines();
    assert!(bad.is_empty(), "unexpected log lines: {bad:?}");
    Ok(())
}

/// COPY FROM STDIN into a table with a UNIQUE constraint and an index: the entries are written
/// with the rows (reads by index see them), a duplicate value fails the whole COPY with
/// PostgreSQL's 23505 naming the constraint, and CREATE UNIQUE INDEX fills from copied rows.
#[tokio::test]
async fn copy_into_a_table_with_indexes() -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE, city text); \
             CREATE INDEX u_city ON u (city)",
        )
        .await?;
    let copy = |data: String| {
        let client = &client;
        async move {
            let sink = client.copy_in("COPY u FROM STDIN").await?;
            futures::pin_mut!(sink);
            sink.send(bytes::Bytes::from(data)).await?;
            sink.finish().await
        }
    };
    let mut data = String::new();
    for i in 1..=1000 {
        data.push_str(&format!("{i}\tu{i}@x\tcity{}\n", i % 10));
    }
    assert_eq!(copy(data).await?, 1000);
    let n: i64 = client
        .query_one("SELECT count(*) FROM u WHERE city = 'city3'", &[])
        .await?
        .get(0);
    assert_eq!(n, 100);
    let id: i32 = client
        .query_one("SELECT id FROM u WHERE email = 'u777@x'", &[])
        .await?
        .get(0);
    assert_eq!(id, 777);

    let err = copy("2001\tnew@x\tx\n2002\tu5@x\tx\n".to_string())
        .await
        .expect_err("duplicate email");
    let db = err.as_db_error().context("a server error")?;
    assert_eq!(db.code(), &SqlState::UNIQUE_VIOLATION);
    assert_eq!(
        db.message(),
        "duplicate key value violates unique constraint \"u_email_key\""
    );
    assert_eq!(db.detail(), Some("Key (email)=(u5@x) already exists."));
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM u WHERE email = 'new@x' OR city = 'x'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(n, 0, "nothing of the failed COPY, rows or entries");

    client
        .batch_execute("CREATE UNIQUE INDEX u_city_id ON u (city, id)")
        .await?;
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM u WHERE city = 'city0' AND id <= 500",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(n, 50);
    drop(client);
    stop_with_a_clean_log(&mut server).await
}

/// Prepared reads and writes by whole primary key give PostgreSQL's answers whatever shape the
/// key takes: a text key, a composite key named out of order, a key fixed by a constant, a
/// WHERE with more than the key, a float key (where `-0 = 0`), two equalities on one key
/// column, NULL and out-of-range values, and a select list of columns or of expressions.
#[tokio::test]
async fn point_statements_by_key_match_postgresql() -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE kv (k text PRIMARY KEY, v int, note text); \
             INSERT INTO kv VALUES ('a', 1, 'x'), ('b', 2, NULL), ('', 3, 'empty'); \
             CREATE TABLE pair (a int, b text, v bigint, PRIMARY KEY (a, b)); \
             INSERT INTO pair VALUES (1, 'x', 10), (1, 'y', 11), (2, 'x', 20); \
             CREATE TABLE fl (f float8 PRIMARY KEY, v int); \
             INSERT INTO fl VALUES (0.0, 1), (1.5, 2); \
             CREATE TABLE small (s smallint PRIMARY KEY, v int); \
             INSERT INTO small VALUES (1, 10), (32767, 20)",
        )
        .await?;

    let by_text = client
        .prepare("SELECT v, note FROM kv WHERE k = $1")
        .await?;
    let get = |rows: Vec<tokio_postgres::Row>| -> Vec<(i32, Option<String>)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    assert_eq!(
        get(client.query(&by_text, &[&"a"]).await?),
        [(1, Some("x".into()))]
    );
    assert_eq!(get(client.query(&by_text, &[&"b"]).await?), [(2, None)]);
    assert_eq!(
        get(client.query(&by_text, &[&""]).await?),
        [(3, Some("empty".into()))]
    );
    assert!(client.query(&by_text, &[&"A"]).await?.is_empty());
    assert!(client.query(&by_text, &[&None::<&str>]).await?.is_empty());

    // Key columns named in the other order, and a column after them.
    let by_pair = client
        .prepare("SELECT v, a, b FROM pair WHERE b = $1 AND a = $2")
        .await?;
    let row = client.query_one(&by_pair, &[&"y", &1i32]).await?;
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i32>(1),
            row.get::<_, String>(2)
        ),
        (11, 1, "y".into())
    );
    assert!(client.query(&by_pair, &[&"y", &2i32]).await?.is_empty());

    // More than the key: the row is read, then the rest of the WHERE decides.
    let with_more = client
        .prepare("SELECT v FROM pair WHERE a = $1 AND b = 'x' AND v > $2")
        .await?;
    assert_eq!(
        client
            .query_one(&with_more, &[&2i32, &5i64])
            .await?
            .get::<_, i64>(0),
        20
    );
    assert!(client.query(&with_more, &[&2i32, &25i64]).await?.is_empty());

    // Two equalities on one key column: only a value both name.
    let twice = client
        .prepare("SELECT v FROM kv WHERE k = $1 AND k = $2")
        .await?;
    assert_eq!(
        client
            .query_one(&twice, &[&"a", &"a"])
            .await?
            .get::<_, i32>(0),
        1
    );
    assert!(client.query(&twice, &[&"a", &"b"]).await?.is_empty());

    // Float keys: -0 equals 0, as in PostgreSQL.
    let by_float = client.prepare("SELECT v FROM fl WHERE f = $1").await?;
    assert_eq!(
        client
            .query_one(&by_float, &[&-0.0f64])
            .await?
            .get::<_, i32>(0),
        1
    );
    assert_eq!(
        client
            .query_one(&by_float, &[&1.5f64])
            .await?
            .get::<_, i32>(0),
        2
    );

    // A smallint key compared with a bigint parameter: out of range names no row.
    let by_small = client
        .prepare("SELECT v FROM small WHERE s = $1::bigint")
        .await?;
    assert_eq!(
        client
            .query_one(&by_small, &[&32767i64])
            .await?
            .get::<_, i32>(0),
        20
    );
    assert!(client.query(&by_small, &[&70000i64]).await?.is_empty());

    // Expressions in the select list, and the whole row.
    let expr = client
        .prepare("SELECT v + v, upper(note), k || '!' FROM kv WHERE k = $1")
        .await?;
    let row = client.query_one(&expr, &[&"a"]).await?;
    assert_eq!(
        (
            row.get::<_, i32>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        ),
        (2, "X".into(), "a!".into())
    );
    let star = client
        .prepare("SELECT * FROM pair WHERE a = 1 AND b = $1")
        .await?;
    let row = client.query_one(&star, &[&"x"]).await?;
    assert_eq!(
        (
            row.get::<_, i32>(0),
            row.get::<_, String>(1),
            row.get::<_, i64>(2)
        ),
        (1, "x".into(), 10)
    );

    // Writes by key use the same paths.
    let bump = client
        .prepare("UPDATE pair SET v = v + $1 WHERE a = $2 AND b = $3 AND v < 100")
        .await?;
    assert_eq!(client.execute(&bump, &[&5i64, &1i32, &"x"]).await?, 1);
    assert_eq!(client.execute(&bump, &[&500i64, &1i32, &"x"]).await?, 1);
    assert_eq!(client.execute(&bump, &[&5i64, &1i32, &"x"]).await?, 0);
    assert_eq!(
        client
            .query_one(&by_pair, &[&"x", &1i32])
            .await?
            .get::<_, i64>(0),
        515
    );
    let remove = client.prepare("DELETE FROM kv WHERE k = $1").await?;
    assert_eq!(client.execute(&remove, &[&"b"]).await?, 1);
    assert_eq!(client.execute(&remove, &[&"b"]).await?, 0);
    assert!(client.query(&by_text, &[&"b"]).await?.is_empty());

    drop(client);
    stop_with_a_clean_log(&mut server).await
}

/// Integer overflow in the prepared fast paths (point UPDATE and SELECT by primary key,
/// prepared INSERT) fails with 22003 as in PostgreSQL, and leaves the row as it was.
#[tokio::test]
async fn prepared_integer_overflow_fails_and_changes_nothing() -> anyhow::Result<()> {
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE acc (aid int PRIMARY KEY, abalance int, total bigint); \
             INSERT INTO acc VALUES (1, 2147483000, 9223372036854775000), (2, 5, 5)",
        )
        .await?;
    let out_of_range = |err: tokio_postgres::Error, message: &str| -> anyhow::Result<()> {
        let db = err.as_db_error().context("a server error")?;
        assert_eq!(db.code(), &SqlState::NUMERIC_VALUE_OUT_OF_RANGE, "{db}");
        assert_eq!(db.message(), message);
        Ok(())
    };

    // pgbench's update: the parameter is typed integer from the column.
    let update = client
        .prepare("UPDATE acc SET abalance = abalance + $1 WHERE aid = $2")
        .await?;
    let err = client
        .execute(&update, &[&1000i32, &1i32])
        .await
        .expect_err("2147483000 + 1000 does not fit an integer");
    out_of_range(err, "integer out of range")?;
    let update_total = client
        .prepare("UPDATE acc SET total = total * $1 WHERE aid = $2")
        .await?;
    let err = client
        .execute(&update_total, &[&2i64, &1i32])
        .await
        .expect_err("doubling total does not fit a bigint");
    out_of_range(err, "bigint out of range")?;
    let row = client
        .query_one("SELECT abalance, total FROM acc WHERE aid = 1", &[])
        .await?;
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, i64>(1)),
        (2147483000, 9223372036854775000),
        "a failed UPDATE changes nothing"
    );

    // The same statements still work where the result fits.
    assert_eq!(client.execute(&update, &[&647i32, &1i32]).await?, 1);
    assert_eq!(client.execute(&update, &[&-10i32, &2i32]).await?, 1);
    let row = client
        .query_one("SELECT abalance FROM acc WHERE aid = 1", &[])
        .await?;
    assert_eq!(row.get::<_, i32>(0), i32::MAX);

    // A point SELECT and a prepared INSERT compute with the same checks.
    let select = client
        .prepare("SELECT abalance * $1, -abalance FROM acc WHERE aid = $2")
        .await?;
    let err = client
        .query(&select, &[&2i32, &1i32])
        .await
        .expect_err("i32::MAX * 2 does not fit an integer");
    out_of_range(err, "integer out of range")?;
    let row = client.query_one(&select, &[&3i32, &2i32]).await?;
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (-15, 5));
    let insert = client
        .prepare("INSERT INTO acc (aid, abalance) VALUES ($1, $2::int * 2::int)")
        .await?;
    let err = client
        .execute(&insert, &[&3i32, &i32::MAX])
        .await
        .expect_err("i32::MAX * 2 does not fit an integer");
    out_of_range(err, "integer out of range")?;
    assert_eq!(client.execute(&insert, &[&3i32, &21i32]).await?, 1);
    let n: i64 = client
        .query_one("SELECT count(*) FROM acc", &[])
        .await?
        .get(0);
    assert_eq!(n, 3, "only the INSERT that fits added a row");

    drop(client);
    stop_with_a_clean_log(&mut server).await
}

/// Intervals over the wire: binary results (PostgreSQL's microseconds, days, months), and
/// `interval * $1` types `$1` as double precision, as PostgreSQL does.
#[tokio::test]
async fn intervals_in_binary_and_interval_times_a_parameter() -> anyhow::Result<()> {
    use pg_interval::Interval;
    use tokio_postgres::types::Type;
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;
    let stmt = client
        .prepare("SELECT interval '1 mon 1 day' * $1, $1 * interval '1 hour'")
        .await?;
    assert_eq!(stmt.params(), &[Type::FLOAT8]);
    assert_eq!(
        stmt.columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect::<Vec<_>>(),
        [Type::INTERVAL, Type::INTERVAL]
    );
    let row = client.query_one(&stmt, &[&1.5f64]).await?;
    let hour = 3_600_000_000;
    // 1.5 months is 1 month and 15 days; 1.5 days is 1 day and 12 hours.
    assert_eq!(row.get::<_, Interval>(0), Interval::new(1, 16, 12 * hour));
    assert_eq!(row.get::<_, Interval>(1), Interval::new(0, 0, 3 * hour / 2));

    // An interval parameter is announced as interval and read from PostgreSQL's binary form.
    let stmt = client
        .prepare("SELECT $1::interval::text, timestamp '2026-01-01 00:00:00' + $1::interval")
        .await?;
    assert_eq!(stmt.params(), &[Type::INTERVAL]);
    let row = client
        .query_one(&stmt, &[&Interval::new(14, -3, 2 * hour + 1)])
        .await?;
    assert_eq!(
        row.get::<_, String>(0),
        "1 year 2 mons -3 days +02:00:00.000001"
    );
    assert_eq!(
        row.get::<_, chrono::NaiveDateTime>(1).to_string(),
        "2027-02-26 02:00:00.000001"
    );
    // As text, it is read as PostgreSQL reads interval text, errors included.
    let rows = client
        .simple_query("SELECT '1 day 02:00:00'::interval < interval '26:00:01'")
        .await?;
    let first = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(first.as_deref(), Some("t"));
    let err = client
        .query_one("SELECT $1::text::interval", &[&"1 fortnight"])
        .await
        .expect_err("not an interval");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "22007");
    assert_eq!(
        db.message(),
        "invalid input syntax for type interval: \"1 fortnight\""
    );
    drop(client);
    server.stop().await?;
    Ok(())
}

/// An interval column of a row table and of a stream: written from a binary parameter, read
/// back in binary, its text as PostgreSQL's; `RETURNING *` names its columns as PostgreSQL
/// does (`id`, not `t.id`), which drivers that read rows by name depend on.
#[tokio::test]
async fn interval_columns_and_returning_column_names() -> anyhow::Result<()> {
    use pg_interval::Interval;
    let mut server = BraidServer::start_binary(env!("CARGO_BIN_EXE_braid")).await?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE spans (id int PRIMARY KEY, d interval, note text);
             CREATE STREAM span_events (d interval, k text)",
        )
        .await?;
    let hour = 3_600_000_000;
    let rows = client
        .query(
            "INSERT INTO spans VALUES ($1, $2, 'x') RETURNING *",
            &[&1i32, &Interval::new(1, -2, 3 * hour)],
        )
        .await?;
    let names: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["id", "d", "note"]);
    assert_eq!(
        rows[0].get::<_, Interval>(1),
        Interval::new(1, -2, 3 * hour)
    );
    let rows = client
        .query(
            "UPDATE spans SET d = d * 2 WHERE id = 1 RETURNING *, d::text AS t",
            &[],
        )
        .await?;
    let names: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["id", "d", "note", "t"]);
    assert_eq!(rows[0].get::<_, String>(3), "2 mons -4 days +06:00:00");
    client
        .execute(
            "INSERT INTO span_events VALUES ($1, 'k')",
            &[&Interval::new(0, 1, hour / 2)],
        )
        .await?;
    let row = client
        .query_one("SELECT d, d::text FROM span_events", &[])
        .await?;
    assert_eq!(row.get::<_, Interval>(0), Interval::new(0, 1, hour / 2));
    assert_eq!(row.get::<_, String>(1), "1 day 00:30:00");
    // Kept on disk: the same values after a restart.
    drop(client);
    server.restart().await?;
    let client = server.connect().await?;
    let row = client
        .query_one("SELECT d::text FROM spans WHERE id = 1", &[])
        .await?;
    assert_eq!(row.get::<_, String>(0), "2 mons -4 days +06:00:00");
    let row = client
        .query_one("SELECT d::text FROM span_events", &[])
        .await?;
    assert_eq!(row.get::<_, String>(0), "1 day 00:30:00");
    drop(client);
    server.stop().await?;
    Ok(())
}
