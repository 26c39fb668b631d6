//! Client test: the real `psql` binary (PostgreSQL 15's, from `$BRAID_PG_BIN` or
//! `/usr/lib/postgresql/15/bin`, else the one on PATH) against the real `braid` binary — the
//! describe commands `\d`, `\dt`, `\di`, `\d table`, `\d index`, `\d` of a missing
//! relation, `\dn` and `\dt schema.*` print what they print against PostgreSQL 15, and
//! `psql -d name` connects to a database made by CREATE DATABASE.
//!
//! `BRAID_BIN=<path>` runs it against another `braid` build.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use braid_sqllogictest::{postgres_bin_dir, BraidServer};

/// The psql to run: PostgreSQL 15's, else whatever `psql` is on PATH.
fn psql_binary() -> PathBuf {
    let pg15 = postgres_bin_dir().join("psql");
    if pg15.exists() {
        pg15
    } else {
        PathBuf::from("psql")
    }
}

/// Runs `psql -c <command>` against the server; returns stdout, or fails with stderr.
fn psql(server: &BraidServer, command: &str) -> anyhow::Result<(String, String)> {
    psql_on(server, "postgres", command)
}

/// Runs `psql -d <database> -c <command>` against the server.
fn psql_on(
    server: &BraidServer,
    database: &str,
    command: &str,
) -> anyhow::Result<(String, String)> {
    let out = Command::new(psql_binary())
        .args(["-X", "-h", "127.0.0.1", "-U", "postgres", "-d", database])
        .arg("-p")
        .arg(server.port.to_string())
        .arg("-c")
        .arg(command)
        // Plain output whatever the environment asks for: no pager, no locale-dependent text.
        .env("PAGER", "")
        .env("PSQL_PAGER", "")
        .env("LC_ALL", "C")
        .env_remove("PSQLRC")
        .output()
        .with_context(|| format!("running psql -c '{command}'"))?;
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// psql's output of `command`, which must succeed without a message on stderr.
fn describe(server: &BraidServer, command: &str) -> anyhow::Result<String> {
    describe_on(server, "postgres", command)
}

/// psql's output of `command` run on `database`, which must succeed without a message on
/// stderr.
fn describe_on(server: &BraidServer, database: &str, command: &str) -> anyhow::Result<String> {
    let (stdout, stderr) = psql_on(server, database, command)?;
    if !stderr.is_empty() {
        bail!("psql -c '{command}' printed on stderr:\n{stderr}\nstdout:\n{stdout}");
    }
    Ok(stdout)
}

#[tokio::test]
async fn psql_describe_commands() -> anyhow::Result<()> {
    let binary = std::env::var("BRAID_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_braid").into());
    let mut server = BraidServer::start_binary(binary).await?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE t (id integer PRIMARY KEY, b text UNIQUE, c bigint NOT NULL DEFAULT 7, \
               d character(84), e timestamp with time zone DEFAULT now(), f jsonb); \
             CREATE INDEX t_c_idx ON t (c); \
             CREATE UNIQUE INDEX t_d_e_idx ON t (d, e); \
             CREATE TABLE u (a int); \
             CREATE STREAM s (k text, v bigint NOT NULL) WITH (partitions = 4)",
        )
        .await
        .context("creating the tables")?;

    // The expected texts are PostgreSQL 15's psql output for the same tables (the stream
    // shows as a table).
    let out = describe(&server, r"\d")?;
    assert_eq!(
        out,
        "        List of relations\n \
         Schema | Name | Type  |  Owner   \n\
         --------+------+-------+----------\n \
         public | s    | table | postgres\n \
         public | t    | table | postgres\n \
         public | u    | table | postgres\n\
         (3 rows)\n\n",
        "\\d"
    );
    assert_eq!(
        describe(&server, r"\dt")?,
        out,
        "\\dt lists the same tables"
    );

    assert_eq!(
        describe(&server, r"\di")?,
        "               List of relations\n \
         Schema |   Name    | Type  |  Owner   | Table \n\
         --------+-----------+-------+----------+-------\n \
         public | t_b_key   | index | postgres | t\n \
         public | t_c_idx   | index | postgres | t\n \
         public | t_d_e_idx | index | postgres | t\n \
         public | t_pkey    | index | postgres | t\n\
         (4 rows)\n\n",
        "\\di"
    );

    assert_eq!(
        describe(&server, r"\d t")?,
        "                          Table \"public.t\"\n \
         Column |           Type           | Collation | Nullable | Default \n\
         --------+--------------------------+-----------+----------+---------\n \
         id     | integer                  |           | not null | \n \
         b      | text                     |           |          | \n \
         c      | bigint                   |           | not null | 7\n \
         d      | character(84)            |           |          | \n \
         e      | timestamp with time zone |           |          | now()\n \
         f      | jsonb                    |           |          | \n\
         Indexes:\n    \
         \"t_pkey\" PRIMARY KEY, btree (id)\n    \
         \"t_b_key\" UNIQUE CONSTRAINT, btree (b)\n    \
         \"t_c_idx\" btree (c)\n    \
         \"t_d_e_idx\" UNIQUE, btree (d, e)\n\n",
        "\\d t"
    );

    assert_eq!(
        describe(&server, r"\d u")?,
        "                 Table \"public.u\"\n \
         Column |  Type   | Collation | Nullable | Default \n\
         --------+---------+-----------+----------+---------\n \
         a      | integer |           |          | \n\n",
        "\\d u"
    );

    assert_eq!(
        describe(&server, r"\d s")?,
        "                 Table \"public.s\"\n \
         Column |  Type  | Collation | Nullable | Default \n\
         --------+--------+-----------+----------+---------\n \
         k      | text   |           |          | \n \
         v      | bigint |           | not null | \n\n",
        "\\d s (a stream)"
    );

    assert_eq!(
        describe(&server, r"\d t_pkey")?,
        "        Index \"public.t_pkey\"\n \
         Column |  Type   | Key? | Definition \n\
         --------+---------+------+------------\n \
         id     | integer | yes  | id\n\
         primary key, btree, for table \"public.t\"\n\n",
        "\\d t_pkey"
    );

    assert_eq!(
        describe(&server, r"\d t_d_e_idx")?,
        "               Index \"public.t_d_e_idx\"\n \
         Column |           Type           | Key? | Definition \n\
         --------+--------------------------+------+------------\n \
         d      | character(84)            | yes  | d\n \
         e      | timestamp with time zone | yes  | e\n\
         unique, btree, for table \"public.t\"\n\n",
        "\\d t_d_e_idx"
    );

    // PostgreSQL 15 lists template0 and template1 too, and its locale is the one initdb ran
    // in; braid has the one database, compares text bytewise (C) and stores UTF8.
    assert_eq!(
        describe(&server, r"\l")?,
        "                                          List of databases\n   \
         Name   |  Owner   | Encoding | Collate | Ctype | ICU Locale | Locale Provider | Access privileges \n\
         ----------+----------+----------+---------+-------+------------+-----------------+-------------------\n \
         postgres | postgres | UTF8     | C       | C     |            | libc            | \n\
         (1 row)\n\n",
        "\\l"
    );

    // No row for the name: psql's own message, on stderr, and no server error.
    let (stdout, stderr) = psql(&server, r"\d nosuchtable")?;
    assert_eq!(stdout, "", "\\d nosuchtable prints nothing on stdout");
    assert_eq!(
        stderr, "Did not find any relation named \"nosuchtable\".\n",
        "\\d nosuchtable"
    );

    drop(client);
    server.stop().await?;
    let bad = server.unexpected_log_lines();
    assert!(bad.is_empty(), "unexpected server log lines: {bad:?}");
    Ok(())
}

/// `\dn` and `\dt s.*` print what PostgreSQL 15 prints for a schema and its table, and
/// `psql -d name` reaches a database made by CREATE DATABASE, whose tables are its own.
#[tokio::test]
async fn psql_schemas_and_databases() -> anyhow::Result<()> {
    let binary = std::env::var("BRAID_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_braid").into());
    let mut server = BraidServer::start_binary(binary).await?;
    describe(&server, "CREATE SCHEMA s")?;
    describe(&server, "CREATE TABLE s.t (id int)")?;
    describe(&server, "CREATE DATABASE shop")?;
    assert_eq!(
        describe(&server, r"\dn")?,
        "      List of schemas\n  \
         Name  |       Owner       \n\
         --------+-------------------\n \
         public | pg_database_owner\n \
         s      | postgres\n\
         (2 rows)\n\n",
        "\\dn"
    );
    assert_eq!(
        describe(&server, r"\dt s.*")?,
        "        List of relations\n \
         Schema | Name | Type  |  Owner   \n\
         --------+------+-------+----------\n \
         s      | t    | table | postgres\n\
         (1 row)\n\n",
        "\\dt s.*"
    );
    describe_on(&server, "shop", "CREATE TABLE t (a int)")?;
    describe_on(&server, "shop", "INSERT INTO t VALUES (1)")?;
    assert_eq!(
        describe_on(&server, "shop", "SELECT current_database(), count(*) FROM t")?,
        " current_database | count \n------------------+-------\n shop             |     1\n(1 row)\n\n"
    );
    let (_, stderr) = psql(&server, "SELECT * FROM t")?;
    assert!(
        stderr.contains("relation \"t\" does not exist"),
        "postgres sees shop's table: {stderr}"
    );
    let (_, stderr) = psql_on(&server, "nosuch", "SELECT 1")?;
    assert!(
        stderr.contains("FATAL:  database \"nosuch\" does not exist"),
        "{stderr}"
    );
    server.stop().await?;
    let bad = server.unexpected_log_lines();
    assert!(bad.is_empty(), "unexpected server log lines: {bad:?}");
    Ok(())
}
