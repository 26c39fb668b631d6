//! The real binary under systemd's protocols, without systemd as PID 1: the unit files pass
//! `systemd-analyze`, sockets come through `systemd-socket-activate`, notifications arrive on a
//! datagram socket the test opens as `NOTIFY_SOCKET`, and signals come from `kill`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use braid_sqllogictest::free_port;

const BRAID: &str = env!("CARGO_BIN_EXE_braid");

fn temp_dir(tag: &str) -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "braid-sysd-{tag}-{}-{}",
        std::process::id(),
        free_port()?
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn conn_str(port: u16) -> String {
    format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=20")
}

async fn connect(port: u16) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(&conn_str(port), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn connect_retrying(port: u16) -> anyhow::Result<tokio_postgres::Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match connect(port).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e).context("connecting to braid"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn sigterm(child: &Child) -> anyhow::Result<()> {
    signal(child, "-TERM")
}

fn signal(child: &Child, sig: &str) -> anyhow::Result<()> {
    let st = Command::new("kill")
        .arg(sig)
        .arg(child.id().to_string())
        .status()?;
    anyhow::ensure!(st.success(), "kill {sig} failed");
    Ok(())
}

fn wait_exit(child: &mut Child, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("braid did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP/1.0 GET: status code and body.
fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .context("HTTP response has no body")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("HTTP status")?;
    Ok((code, body.to_string()))
}

/// Starts braid on fresh ports with stderr to `log`; returns (child, pg port, http port).
fn spawn_braid(
    dir: &Path,
    extra: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<(Child, u16, u16)> {
    let (pg, http) = (free_port()?, free_port()?);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("braid.log"))?;
    let mut cmd = Command::new(BRAID);
    cmd.arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{pg}"))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{http}"))
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok((cmd.spawn().context("starting braid")?, pg, http))
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("braid.log")).unwrap_or_default()
}

#[test]
fn unit_files_verify_and_exposure_is_low() -> anyhow::Result<()> {
    let units = manifest_dir().join("../systemd");
    let dir = temp_dir("units")?;
    for name in ["braid.service", "braid.socket", "braid-http.socket"] {
        let text = std::fs::read_to_string(units.join(name))?;
        // The unit names the installed path; verify checks that it is executable.
        let text = text.replace("/usr/local/bin/braid", BRAID);
        std::fs::write(dir.join(name), text)?;
    }
    for name in ["braid.service", "braid.socket", "braid-http.socket"] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.join(name))
            .output()
            .context("running systemd-analyze verify")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {name}: {}\n{stderr}",
            out.status
        );
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(dir.join("braid.service"))
        .output()
        .context("running systemd-analyze security")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let level: f64 = stdout
        .lines()
        .find_map(|l| l.split("Overall exposure level for braid.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no exposure level in:\n{stdout}"))?;
    eprintln!("systemd-analyze security --offline=true braid.service: exposure {level}");
    assert!(level <= 2.0, "exposure {level} is above 2.0:\n{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// systemd-socket-activate with both sockets named, HTTP first: braid must pick by name.
#[tokio::test]
async fn socket_activation_picks_sockets_by_name() -> anyhow::Result<()> {
    let dir = temp_dir("activate")?;
    let (pg, http) = (free_port()?, free_port()?);
    // Ports braid would bind on its own: nothing may listen there if the inherited sockets are used.
    let (own_pg, own_http) = (free_port()?, free_port()?);
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(format!("127.0.0.1:{http}"))
        .arg("-l")
        .arg(format!("127.0.0.1:{pg}"))
        .arg("--fdname=http:pg")
        .arg("-E")
        .arg("RUST_LOG=info")
        .arg(BRAID)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{own_pg}"))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{own_http}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("braid.log"))?)
        .spawn()
        .context("starting systemd-socket-activate")?;
    // The first connection makes systemd-socket-activate exec braid with the sockets.
    let client = connect_retrying(pg).await?;
    let v: i32 = client.query_one("SELECT 7", &[]).await?.try_get(0)?;
    assert_eq!(v, 7);
    let (code, body) = http_get(http, "/ready")?;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", own_pg)).is_err(),
        "braid bound its own PostgreSQL port although a socket was passed"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", own_http)).is_err());
    drop(client);
    sigterm(&child)?;
    let st = wait_exit(&mut child, Duration::from_secs(30))?;
    assert!(st.success(), "exit {st}; log:\n{}", read_log(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One unnamed socket is the PostgreSQL one; HTTP is bound from the configuration.
#[tokio::test]
async fn single_unnamed_socket_is_postgres() -> anyhow::Result<()> {
    let dir = temp_dir("activate1")?;
    let (pg, http) = (free_port()?, free_port()?);
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(format!("127.0.0.1:{pg}"))
        .arg(BRAID)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{http}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("braid.log"))?)
        .spawn()
        .context("starting systemd-socket-activate")?;
    let client = connect_retrying(pg).await?;
    let v: i32 = client.query_one("SELECT 8", &[]).await?.try_get(0)?;
    assert_eq!(v, 8);
    assert_eq!(http_get(http, "/health")?.0, 200);
    drop(client);
    sigterm(&child)?;
    let st = wait_exit(&mut child, Duration::from_secs(30))?;
    assert!(st.success(), "exit {st}; log:\n{}", read_log(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Datagrams received on the test's NOTIFY_SOCKET, with arrival times.
struct Notifications {
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notifications {
    fn listen(path: &Path) -> anyhow::Result<Notifications> {
        let sock = UnixDatagram::bind(path)?;
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).to_string();
                let now = Instant::now();
                let mut g = g.lock().unwrap_or_else(|e| e.into_inner());
                for line in text.lines() {
                    g.push((now, line.to_string()));
                }
            }
        });
        Ok(Notifications { got })
    }

    fn lines(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn wait_for(&self, what: &str, within: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((t, _)) = self.lines().iter().find(|(_, l)| l == what) {
                return Ok(*t);
            }
            if Instant::now() > deadline {
                bail!("no {what} within {within:?}; got {:?}", self.texts());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn texts(&self) -> Vec<String> {
        self.lines().into_iter().map(|(_, l)| l).collect()
    }
}

#[tokio::test]
async fn sd_notify_ready_status_watchdog_reload_stopping() -> anyhow::Result<()> {
    let dir = temp_dir("notify")?;
    // A first run leaves streams behind, so the second start has logs to recover.
    let (mut first, pg, _) = spawn_braid(&dir, &[], &[])?;
    let client = connect_retrying(pg).await?;
    for i in 0..3 {
        client
            .batch_execute(&format!(
                "CREATE STREAM s{i} (id bigint, v text) WITH (partitions = 2); \
                 INSERT INTO s{i} VALUES (1, 'a'), (2, 'b')"
            ))
            .await?;
    }
    drop(client);
    sigterm(&first)?;
    assert!(wait_exit(&mut first, Duration::from_secs(30))?.success());

    let sock_path = dir.join("notify.sock");
    let notes = Notifications::listen(&sock_path)?;
    let watchdog_usec = 400_000u64;
    let (mut child, pg, http) = spawn_braid(
        &dir,
        &[],
        &[
            ("NOTIFY_SOCKET", sock_path.display().to_string()),
            ("WATCHDOG_USEC", watchdog_usec.to_string()),
        ],
    )?;
    let ready_at = notes.wait_for("READY=1", Duration::from_secs(60))?;
    // READY=1 promises that the socket accepts and recovery is over.
    let client = connect(pg)
        .await
        .context("connecting right after READY=1")?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM s2", &[])
        .await?
        .try_get(0)?;
    assert_eq!(n, 2);
    assert_eq!(http_get(http, "/ready")?.0, 200);
    let lines = notes.lines();
    let before: Vec<&String> = lines
        .iter()
        .filter(|(t, _)| *t < ready_at)
        .map(|(_, l)| l)
        .collect();
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("STATUS=recovering: opened ") && l.ends_with("of 3 stream logs")),
        "a recovery STATUS with progress before READY: {before:?}"
    );
    assert!(
        before.iter().any(|l| l.starts_with("EXTEND_TIMEOUT_USEC=")),
        "recovery asks for more time: {before:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(t, l)| *t >= ready_at && l.starts_with("STATUS=serving on ")),
        "a serving STATUS: {:?}",
        notes.texts()
    );

    // Pings every WATCHDOG_USEC/2 = 200 ms: about 10 in 2 s.
    let window = Duration::from_secs(2);
    let from = Instant::now();
    tokio::time::sleep(window).await;
    let pings = notes
        .lines()
        .iter()
        .filter(|(t, l)| l == "WATCHDOG=1" && *t >= from && *t < from + window)
        .count();
    assert!(
        (6..=14).contains(&pings),
        "expected about 10 watchdog pings in {window:?}, got {pings}"
    );

    signal(&child, "-HUP")?;
    let reloading = notes.wait_for("RELOADING=1", Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !notes
        .lines()
        .iter()
        .any(|(t, l)| *t >= reloading && l == "READY=1")
    {
        anyhow::ensure!(Instant::now() < deadline, "no READY=1 after RELOADING=1");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        notes
            .texts()
            .iter()
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 carries MONOTONIC_USEC"
    );

    sigterm(&child)?;
    notes.wait_for("STOPPING=1", Duration::from_secs(10))?;
    assert!(wait_exit(&mut child, Duration::from_secs(30))?.success());
    drop(client);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn sigterm_while_inserting_keeps_every_acknowledged_row() -> anyhow::Result<()> {
    let dir = temp_dir("drain")?;
    let (mut child, pg, _) = spawn_braid(&dir, &[], &[])?;
    let setup = connect_retrying(pg).await?;
    setup
        .batch_execute("CREATE STREAM s (id bigint, v text) WITH (partitions = 2)")
        .await?;
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let client = connect(pg).await?;
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let id = w * 1_000_000 + i;
                match client
                    .execute("INSERT INTO s VALUES ($1, 'row')", &[&id])
                    .await
                {
                    Ok(1) => acked.push(id),
                    Ok(n) => return Err(anyhow::anyhow!("INSERT reported {n} rows")),
                    Err(e) => {
                        // The only acceptable failures: the server's shutdown notice, or the
                        // connection closing between statements.
                        let code = e.code().map(|c| c.code().to_string());
                        if code.as_deref().is_some_and(|c| c != "57P01") {
                            return Err(anyhow::anyhow!("unexpected error: {e}"));
                        }
                        return Ok(acked);
                    }
                }
            }
            Ok(acked)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sigterm(&child)?;
    let st = wait_exit(&mut child, Duration::from_secs(60))?;
    assert_eq!(st.code(), Some(0), "log:\n{}", read_log(&dir));
    let mut acked = BTreeSet::new();
    for w in writers {
        acked.extend(w.await??);
    }
    assert!(acked.len() > 10, "the writers got going: {}", acked.len());

    let (mut child, pg, _) = spawn_braid(&dir, &[], &[])?;
    let client = connect_retrying(pg).await?;
    let rows = client.query("SELECT id FROM s", &[]).await?;
    let stored = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<BTreeSet<i64>, _>>()?;
    let missing: Vec<_> = acked.difference(&stored).take(10).collect();
    assert!(missing.is_empty(), "acknowledged rows lost: {missing:?}");
    let n: i64 = client
        .query_one("SELECT count(*) FROM s", &[])
        .await?
        .try_get(0)?;
    assert_eq!(n as usize, stored.len(), "no row stored twice");
    sigterm(&child)?;
    assert!(wait_exit(&mut child, Duration::from_secs(30))?.success());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn scrape(http: u16) -> anyhow::Result<prometheus_parse::Scrape> {
    let (code, body) = http_get(http, "/metrics")?;
    anyhow::ensure!(code == 200, "/metrics answered {code}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).context("parsing /metrics as Prometheus text")
}

/// The value of a counter or gauge sample with the given labels (0 when absent).
fn sample(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.last().map(|b| b.count).unwrap_or_default(),
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_parse_and_move() -> anyhow::Result<()> {
    let dir = temp_dir("metrics")?;
    let (mut child, pg, http) = spawn_braid(&dir, &[], &[])?;
    let client = connect_retrying(pg).await?;
    assert_eq!(http_get(http, "/health")?, (200, "ok\n".to_string()));
    assert_eq!(http_get(http, "/ready")?.0, 200);
    let before = scrape(http)?;
    client
        .batch_execute("CREATE STREAM s (id bigint, v text) WITH (partitions = 2)")
        .await?;
    for i in 0..5i64 {
        client
            .execute("INSERT INTO s VALUES ($1, 'hello')", &[&i])
            .await?;
    }
    client
        .simple_query("INSERT INTO s VALUES (10, 'a'), (11, 'b')")
        .await?;
    let _ = client.simple_query("SELECT * FROM no_such_table").await;
    let after = scrape(http)?;
    let inserts = |s| sample(s, "braid_statements_total", &[("kind", "insert")]);
    assert_eq!(inserts(&after) - inserts(&before), 6.0);
    assert_eq!(
        sample(
            &after,
            "braid_stream_appended_rows_total",
            &[("stream", "s")]
        ),
        7.0
    );
    assert!(
        sample(
            &after,
            "braid_stream_appended_bytes_total",
            &[("stream", "s")]
        ) > 0.0
    );
    assert_eq!(
        sample(&after, "braid_errors_total", &[("sqlstate", "42P01")]),
        1.0
    );
    assert!(sample(&after, "braid_connections", &[]) >= 1.0);
    assert!(
        sample(&after, "braid_fsync_duration_seconds", &[]) > 0.0,
        "fsyncs were timed"
    );
    assert!(
        sample(
            &after,
            "braid_statement_duration_seconds",
            &[("kind", "insert")]
        ) >= 6.0,
        "latency histogram counts the inserts"
    );
    assert!(sample(&after, "braid_log_disk_bytes", &[]) > 0.0);
    drop(client);
    sigterm(&child)?;
    assert!(wait_exit(&mut child, Duration::from_secs(30))?.success());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Prepared INSERTs of rows and reads and writes by whole primary keys run from the plan made
/// at Parse (counted by `braid_statements_unplanned_total`); anything else, and bound values
/// that do not name whole keys, is planned again — with the same answers.
#[tokio::test]
async fn point_statements_run_without_planning() -> anyhow::Result<()> {
    let dir = temp_dir("unplanned")?;
    let (mut child, pg, http) = spawn_braid(&dir, &[], &[])?;
    let client = connect_retrying(pg).await?;
    client
        .batch_execute(
            "CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, balance bigint, \
             opened timestamptz DEFAULT now())",
        )
        .await?;
    let before = scrape(http)?;
    let insert = client
        .prepare("INSERT INTO acct (id, owner, balance) VALUES ($1, $2, $3)")
        .await?;
    for (id, owner, balance) in [(1, "ann", 100i64), (2, "bob", 50), (3, "cy", 0)] {
        assert_eq!(client.execute(&insert, &[&id, &owner, &balance]).await?, 1);
    }
    let dup = client
        .execute(&insert, &[&1i32, &"again", &0i64])
        .await
        .err()
        .and_then(|e| e.code().cloned());
    assert_eq!(dup, Some(tokio_postgres::error::SqlState::UNIQUE_VIOLATION));
    let select = client
        .prepare("SELECT owner, balance + $2 FROM acct WHERE id = $1")
        .await?;
    let row = client.query_one(&select, &[&2i32, &1i64]).await?;
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1)),
        ("bob".into(), 51)
    );
    assert!(client.query(&select, &[&9i32, &1i64]).await?.is_empty());
    // A key fixed by a constant (an integer, where the key is int and the constant is typed
    // integer too) reads by key as well.
    let by_constant = client
        .prepare("SELECT owner FROM acct WHERE id = 2")
        .await?;
    let row = client.query_one(&by_constant, &[]).await?;
    assert_eq!(row.get::<_, String>(0), "bob");
    // A NULL key names no key: planned, and no row, as in PostgreSQL.
    assert!(client
        .query(&select, &[&None::<i32>, &1i64])
        .await?
        .is_empty());
    let update = client
        .prepare("UPDATE acct SET balance = balance + $1 WHERE id = $2")
        .await?;
    assert_eq!(client.execute(&update, &[&25i64, &1i32]).await?, 1);
    assert_eq!(client.execute(&update, &[&25i64, &7i32]).await?, 0);
    let delete = client.prepare("DELETE FROM acct WHERE id = $1").await?;
    assert_eq!(client.execute(&delete, &[&3i32]).await?, 1);
    // Not by key: planned.
    let rich = client
        .query(
            "SELECT id FROM acct WHERE balance > $1 ORDER BY id",
            &[&60i64],
        )
        .await?;
    assert_eq!(
        rich.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(),
        [1]
    );
    let rows = client
        .query(
            "SELECT id, balance, opened <= now() AND opened > now() - interval '1 minute' \
             FROM acct ORDER BY id",
            &[],
        )
        .await?;
    let got: Vec<(i32, i64, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got, [(1, 125, true), (2, 50, true)]);
    let after = scrape(http)?;
    let unplanned = |kind| {
        sample(
            &after,
            "braid_statements_unplanned_total",
            &[("kind", kind)],
        ) - sample(
            &before,
            "braid_statements_unplanned_total",
            &[("kind", kind)],
        )
    };
    // Three inserts (the duplicate failed, and is not counted), three selects by key, two
    // updates and one delete.
    assert_eq!(unplanned("insert"), 3.0);
    assert_eq!(unplanned("select"), 3.0);
    assert_eq!(unplanned("update"), 2.0);
    assert_eq!(unplanned("delete"), 1.0);
    drop(client);
    sigterm(&child)?;
    assert!(wait_exit(&mut child, Duration::from_secs(30))?.success());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn max_connections_refuses_one_more_with_53300() -> anyhow::Result<()> {
    let dir = temp_dir("maxconn")?;
    let (mut child, pg, _) = spawn_braid(&dir, &["--max-connections", "2"], &[])?;
    let a = connect_retrying(pg).await?;
    let b = connect(pg).await?;
    let err = connect(pg)
        .await
        .err()
        .context("a third client is refused")?;
    let code = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error())
        .map(|e| e.code().code().to_string());
    assert_eq!(code.as_deref(), Some("53300"), "{err:?}");
    for c in [&a, &b] {
        let v: i32 = c.query_one("SELECT 1", &[]).await?.try_get(0)?;
        assert_eq!(v, 1, "the connected clients are unaffected");
    }
    drop(b);
    // The slot frees once the server sees the close.
    let c = connect_retrying(pg).await?;
    let v: i32 = c.query_one("SELECT 2", &[]).await?.try_get(0)?;
    assert_eq!(v, 2);
    drop((a, c));
    sigterm(&child)?;
    assert!(wait_exit(&mut child, Duration::from_secs(30))?.success());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Reads from `s` until the server closes it; errors if it stays open for `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => continue,
            Err(_) => bail!("the server kept the connection open for {within:?}"),
        }
    }
}

/// A StartupMessage for user postgres.
fn startup_message() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes());
    for s in ["user", "postgres", "database", "postgres", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

#[tokio::test]
async fn garbage_and_stalled_clients_are_cut_off_alone() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = temp_dir("stall")?;
    let (mut child, pg, _) = spawn_braid(&dir, &["--client-stall-timeout-secs", "1"], &[])?;
    let good = connect_retrying(pg).await?;

    // Not the protocol at all.
    let mut garbage = tokio::net::TcpStream::connect(("127.0.0.1", pg)).await?;
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    closed_within(&mut garbage, Duration::from_secs(5)).await?;

    // Connects and never says anything.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", pg)).await?;
    closed_within(&mut silent, Duration::from_secs(5)).await?;

    // Logs in, then stops in the middle of a Query message.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", pg)).await?;
    stalled.write_all(&startup_message()).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    // ReadyForQuery ('Z', length 5, status) ends the login.
    while !seen.windows(6).any(|w| w == [b'Z', 0, 0, 0, 5, b'I']) {
        let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed during login");
        seen.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    stalled.write_all(&[b'Q', 0, 0, 0, 100]).await?;
    stalled.write_all(b"SELECT").await?;
    let started = Instant::now();
    let other = async {
        // Meanwhile another client is served as usual.
        for _ in 0..10 {
            let v: i32 = good.query_one("SELECT 3", &[]).await?.try_get(0)?;
            anyhow::ensure!(v == 3);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    };
    let (closed, served) = tokio::join!(closed_within(&mut stalled, Duration::from_secs(6)), other);
    closed?;
    served?;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut off only after the timeout"
    );
    let v: i32 = good.query_one("SELECT 4", &[]).await?.try_get(0)?;
    assert_eq!(v, 4);
    drop(good);
    sigterm(&child)?;
    assert!(wait_exit(&mut child, Duration::from_secs(30))?.success());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn sighup_changes_log_level_without_dropping_connections() -> anyhow::Result<()> {
    let dir = temp_dir("sighup")?;
    let config = dir.join("braid.toml");
    let (pg, http) = (free_port()?, free_port()?);
    let write_config = |log: &str, max: usize| {
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\nlisten = \"127.0.0.1:{pg}\"\nhttp_listen = \"127.0.0.1:{http}\"\nlog = \"{log}\"\nmax_connections = {max}\n",
                dir.join("data").display()
            ),
        )
    };
    write_config("info", 10)?;
    let mut child = Command::new(BRAID)
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("braid.log"))?)
        .spawn()?;
    let client = connect_retrying(pg).await?;
    let _ = client.simple_query("SELEC 1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !read_log(&dir).contains("statement failed"),
        "debug lines are filtered at info"
    );

    write_config("debug", 20)?;
    signal(&child, "-HUP")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read_log(&dir).contains("configuration reloaded") {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no reload in the log:\n{}",
            read_log(&dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same connection keeps working, and now its failures are logged at debug.
    let _ = client.simple_query("SELEC 2").await;
    let v: i32 = client.query_one("SELECT 5", &[]).await?.try_get(0)?;
    assert_eq!(v, 5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = read_log(&dir);
    assert!(
        log.contains("statement failed"),
        "debug lines after reload:\n{log}"
    );
    assert!(log.contains("max_connections=20"), "{log}");

    // A restart-only setting is named, not applied.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)?.replace(
            &format!("http_listen = \"127.0.0.1:{http}\""),
            "http_listen = \"127.0.0.1:1\"",
        ),
    )?;
    signal(&child, "-HUP")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read_log(&dir).contains("only take effect after a restart") {
        anyhow::ensure!(
            Instant::now() < deadline,
            "restart-only change not named:\n{}",
            read_log(&dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(read_log(&dir).contains("settings=http_listen"));
    assert_eq!(http_get(http, "/health")?.0, 200, "HTTP stays where it was");
    let v: i32 = client.query_one("SELECT 6", &[]).await?.try_get(0)?;
    assert_eq!(v, 6);
    drop(client);
    sigterm(&child)?;
    assert!(wait_exit(&mut child, Duration::from_secs(30))?.success());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn journal_stream_gets_priority_prefixed_lines() -> anyhow::Result<()> {
    let dir = temp_dir("journal")?;
    let log = std::fs::File::create(dir.join("braid.log"))?;
    let meta = log.metadata()?;
    drop(log);
    let (mut child, pg, _) = spawn_braid(
        &dir,
        &[],
        &[("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))],
    )?;
    let client = connect_retrying(pg).await?;
    drop(client);
    sigterm(&child)?;
    assert!(wait_exit(&mut child, Duration::from_secs(30))?.success());
    let text = read_log(&dir);
    let ready = text
        .lines()
        .find(|l| l.contains("braid is ready to accept connections"))
        .context("ready line")?;
    assert!(ready.starts_with("<6>"), "{ready}");
    assert!(
        text.lines().all(|l| l.starts_with('<')),
        "every line has a priority:\n{text}"
    );
    assert!(
        !ready.contains(&chrono::Utc::now().format("%Y-%m-%d").to_string()),
        "no timestamp of our own: {ready}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn plain_stderr_gets_human_lines() -> anyhow::Result<()> {
    let dir = temp_dir("human")?;
    // JOURNAL_STREAM inherited but not describing stderr: human lines.
    let (mut child, pg, _) = spawn_braid(&dir, &[], &[("JOURNAL_STREAM", "1:2".to_string())])?;
    drop(connect_retrying(pg).await?);
    sigterm(&child)?;
    assert!(wait_exit(&mut child, Duration::from_secs(30))?.success());
    let text = read_log(&dir);
    let ready = text
        .lines()
        .find(|l| l.contains("braid is ready to accept connections"))
        .context("ready line")?;
    assert!(ready.contains(" INFO "), "{ready}");
    assert!(!ready.starts_with('<'), "{ready}");
    let _ = std::fs::remove_dir_all(&dir);
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
