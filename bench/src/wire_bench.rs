//! `braid-bench wire`: event ingest and two queries over the PostgreSQL wire protocol, the
//! `braid` server against PostgreSQL 15, both started by the run, side by side on one machine.
//!
//! The run starts the release `braid` binary on a fresh data directory and PostgreSQL 15 (its
//! defaults: `fsync=on`, `synchronous_commit=on`) on another, both in one temporary directory on
//! the same disk, each on a free loopback port. It then, for each system in turn:
//! - loads `rows` generated events (`id bigint, ts timestamptz, key text, payload jsonb` of
//!   ≈ 200 bytes) with one `COPY events FROM STDIN` (text format) through tokio-postgres;
//! - loads the first `insert_rows` of the same events into a second, empty table with `clients`
//!   concurrent connections, each running a prepared single-row `INSERT` per event;
//! - times `SELECT count(*)` and a filter selecting ≈ 1% of the COPY-loaded rows by time
//!   (braid: `_timestamp`, a seek in the log; PostgreSQL: `ts`, through its index), a few
//!   repetitions each, interleaved, median reported.
//!
//! What must stay true for the ratios to mean anything: both systems get byte-identical COPY
//! text and the same parameter values, in the same order, from the same client process; both
//! acknowledge a write only once it is durable (braid's default `sync` durability, PostgreSQL's
//! `synchronous_commit=on`); both data directories are on the same file system; neither server
//! is tuned. Both stay running for the whole run (the idle one costs next to nothing).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::SinkExt;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::log_bench::{mem_total, mount_of};
use crate::measure::{print_table, si};
use crate::WireArgs;

/// First event's `ts` (2026-11-01T00:00:00Z, in µs since the epoch); event `i` is `i` ms later.
const TS_BASE_US: i64 = 1_793_491_200_000_000;
/// Distinct values of the `key` column (the braid stream's partition key).
const KEYS: u64 = 100_000;
/// Bytes per COPY data message sent by the client.
const COPY_CHUNK_BYTES: usize = 1 << 20;
/// How long a server gets to accept connections after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the whole `wire` benchmark. Both servers are stopped at the end, on error and on
/// Ctrl-C / SIGTERM (their guards' `Drop` runs when the run's future is dropped).
pub fn run(args: &WireArgs) -> anyhow::Result<()> {
    run_until_signal(run_all(args))
}

/// Runs a side-by-side benchmark on its own runtime until it ends or SIGINT / SIGTERM arrives;
/// either way the run's future is dropped, so the server guards it owns stop both servers.
pub(crate) fn run_until_signal(
    bench: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("install a SIGTERM handler")?;
        tokio::select! {
            r = bench => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted (SIGINT): stopped both servers"),
            _ = term.recv() => bail!("terminated (SIGTERM): stopped both servers"),
        }
    })
}

/// The effective settings of one run.
#[derive(Debug, Clone, Copy)]
struct Settings {
    rows: u64,
    insert_rows: u64,
    clients: usize,
    reps: usize,
}

async fn run_all(args: &WireArgs) -> anyhow::Result<()> {
    let s = if args.quick {
        Settings {
            rows: 100_000,
            insert_rows: 10_000,
            clients: args.clients.max(1),
            reps: 3,
        }
    } else {
        Settings {
            rows: args.rows.max(100),
            insert_rows: args.insert_rows.min(args.rows).max(args.clients as u64),
            clients: args.clients.max(1),
            reps: args.reps.max(1),
        }
    };
    let env = RunEnv::prepare(
        args.braid_bin.as_ref(),
        &args.pg_bin,
        args.dir.as_ref(),
        "wire-",
    )?;
    let (braid_bin, base, tmp, device, fs_type) = (
        &env.braid_bin,
        &env.base,
        &env.tmp,
        &env.device,
        &env.fs_type,
    );
    let postgres = args.pg_bin.join("postgres");

    println!("# braid-bench wire");
    println!();
    println!(
        "dir: {} ({device}, {fs_type}); cores: {}; memory: {}; kernel: {}; load average at start: {}",
        base.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        load_average(),
    );
    println!(
        "braid: {} (built {}), durability sync (default); PostgreSQL: {} ({}), defaults",
        braid_bin.display(),
        modified_ago(braid_bin),
        command_output(Command::new(&postgres).arg("--version"))
            .unwrap_or_else(|e| format!("? ({e})")),
        args.pg_bin.display(),
    );
    println!(
        "COPY rows: {}; INSERT rows: {} by {} clients; query repetitions: {} (median, after a warm-up)",
        s.rows, s.insert_rows, s.clients, s.reps
    );

    let t = Instant::now();
    let events = Events::generate(s.rows);
    println!(
        "data: {} events, COPY text {:.1} MB ({:.0} B/row), payload {:.0} B/row on average (generated in {:.1} s)",
        s.rows,
        events.copy_text.len() as f64 / 1e6,
        events.copy_text.len() as f64 / s.rows as f64,
        events.payload_bytes as f64 / s.rows as f64,
        t.elapsed().as_secs_f64()
    );
    println!();

    let braid = BraidServer::start(braid_bin, &tmp.path().join("braid")).await?;
    let pg = PgServer::start(&args.pg_bin, &args.pg_user, &tmp.path().join("pg")).await?;
    let systems = [
        System {
            name: "braid",
            conninfo: braid.conninfo(),
            kind: Kind::Braid,
        },
        System {
            name: "PostgreSQL",
            conninfo: pg.conninfo(),
            kind: Kind::Postgres,
        },
    ];

    for sys in &systems {
        let c = connect(&sys.conninfo).await?;
        let ddl = match sys.kind {
            Kind::Braid => format!(
                "CREATE STREAM events (id bigint, ts timestamptz, key text, payload jsonb) \
                 WITH (partitions = 8, partition_key = 'key'); \
                 CREATE STREAM events_ins (id bigint, ts timestamptz, key text, payload jsonb) \
                 WITH (partitions = {}, partition_key = 'key')",
                args.insert_partitions
            ),
            Kind::Postgres => {
                "CREATE TABLE events (id bigint, ts timestamptz, key text, payload jsonb); \
                 CREATE INDEX events_ts ON events (ts); \
                 CREATE TABLE events_ins (id bigint, ts timestamptz, key text, payload jsonb); \
                 CREATE INDEX events_ins_ts ON events_ins (ts)"
                    .to_string()
            }
        };
        c.batch_execute(&ddl)
            .await
            .with_context(|| format!("create the tables on {}", sys.name))?;
    }

    // 1. COPY.
    let mut copy = Vec::new();
    for sys in &systems {
        let r = copy_load(sys, &events.copy_text).await?;
        eprintln!(
            "{:>10} COPY: {} rows in {:.2} s = {} rows/s",
            sys.name,
            r.rows,
            r.seconds,
            si(r.rows as f64 / r.seconds)
        );
        copy.push(r);
    }

    // 2. Concurrent single-row prepared INSERTs.
    let insert_events = Arc::new(events.rows_for_insert(s.insert_rows));
    let mut insert = Vec::new();
    for sys in &systems {
        let r = insert_load(sys, insert_events.clone(), s.clients).await?;
        eprintln!(
            "{:>10} INSERT ×{}: {} rows in {:.2} s = {} rows/s (p50 {:.0} µs, p99 {:.0} µs)",
            sys.name,
            s.clients,
            r.rows,
            r.seconds,
            si(r.rows as f64 / r.seconds),
            r.p50_us,
            r.p99_us
        );
        insert.push(r);
    }

    let disk: Vec<u64> = [braid.data_dir(), pg.data_dir()]
        .iter()
        .map(|d| dir_bytes(d))
        .collect();

    // 3. Queries over the COPY-loaded rows.
    let queries = run_queries(&systems, &s).await?;

    println!("## Ingest");
    println!();
    let header = [
        "phase",
        "rows",
        "braid rows/s",
        "PostgreSQL rows/s",
        "braid / PostgreSQL",
        "braid s",
        "PostgreSQL s",
        "notes",
    ];
    let mut lines = Vec::new();
    if let [b, p] = copy.as_slice() {
        lines.push(vec![
            "COPY FROM STDIN (text)".into(),
            b.rows.to_string(),
            si(b.rows as f64 / b.seconds),
            si(p.rows as f64 / p.seconds),
            format!(
                "{:.2}",
                (b.rows as f64 / b.seconds) / (p.rows as f64 / p.seconds)
            ),
            format!("{:.2}", b.seconds),
            format!("{:.2}", p.seconds),
            format!(
                "{:.0} / {:.0} MB/s of COPY text",
                events.copy_text.len() as f64 / b.seconds / 1e6,
                events.copy_text.len() as f64 / p.seconds / 1e6
            ),
        ]);
    }
    if let [b, p] = insert.as_slice() {
        lines.push(vec![
            format!("INSERT ×{} clients (prepared, 1 row)", s.clients),
            b.rows.to_string(),
            si(b.rows as f64 / b.seconds),
            si(p.rows as f64 / p.seconds),
            format!(
                "{:.2}",
                (b.rows as f64 / b.seconds) / (p.rows as f64 / p.seconds)
            ),
            format!("{:.2}", b.seconds),
            format!("{:.2}", p.seconds),
            format!(
                "p50/p99 µs: braid {:.0}/{:.0}, PostgreSQL {:.0}/{:.0}",
                b.p50_us, b.p99_us, p.p50_us, p.p99_us
            ),
        ]);
    }
    print_table(&header, &lines);
    println!();
    if let [b, p] = disk.as_slice() {
        println!(
            "on disk after both loads: braid data dir {:.0} MB, PostgreSQL data dir {:.0} MB (incl. WAL and catalog)",
            *b as f64 / 1e6,
            *p as f64 / 1e6
        );
        println!();
    }

    print_queries(
        &format!("Queries (over the {} COPY-loaded rows)", s.rows),
        &queries,
    );

    println!("## Targets (issue 4)");
    println!();
    if let ([bc, pc], [bi, pi]) = (copy.as_slice(), insert.as_slice()) {
        let x = (bc.rows as f64 / bc.seconds) / (pc.rows as f64 / pc.seconds);
        println!(
            "- braid COPY ≥ 3× PostgreSQL COPY: {} vs {} rows/s = {:.2}× — {}",
            si(bc.rows as f64 / bc.seconds),
            si(pc.rows as f64 / pc.seconds),
            x,
            verdict(x >= 3.0)
        );
        let x = (bi.rows as f64 / bi.seconds) / (pi.rows as f64 / pi.seconds);
        println!(
            "- braid {} concurrent single-row INSERTs ≥ 1.5× PostgreSQL: {} vs {} rows/s = {:.2}× — {}",
            s.clients,
            si(bi.rows as f64 / bi.seconds),
            si(pi.rows as f64 / pi.seconds),
            x,
            verdict(x >= 1.5)
        );
    }
    println!();

    // Stop both (the guards would, too) and report what braid logged at WARN or ERROR.
    let problems = braid.stop()?;
    pg.stop();
    if problems.is_empty() {
        println!("braid logged no WARN or ERROR lines.");
    } else {
        println!(
            "braid logged {} WARN/ERROR lines, first: {}",
            problems.len(),
            problems.join(" | ")
        );
    }
    Ok(())
}

/// What every side-by-side run needs before it starts the servers: the braid binary, and a
/// fresh temporary directory on the disk to measure, reachable by PostgreSQL's user.
pub(crate) struct RunEnv {
    pub braid_bin: PathBuf,
    /// The directory the temporary directory is made in (canonical).
    pub base: PathBuf,
    /// Both servers' data directories go inside; removed on drop.
    pub tmp: tempfile::TempDir,
    pub device: String,
    pub fs_type: String,
}

impl RunEnv {
    /// Finds the braid binary (`--braid-bin`, else `$CARGO_TARGET_DIR/release/braid`, else
    /// `<repo>/target/release/braid`) and PostgreSQL, and makes the run's directory in `dir`
    /// (default `<repo>/target/braid-bench`). Warns when that is on tmpfs, where fsync is free.
    pub(crate) fn prepare(
        braid_bin: Option<&PathBuf>,
        pg_bin: &Path,
        dir: Option<&PathBuf>,
        prefix: &str,
    ) -> anyhow::Result<RunEnv> {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let braid_bin = match braid_bin {
            Some(b) => b.clone(),
            None => std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo.join("target"))
                .join("release/braid"),
        };
        if !braid_bin.is_file() {
            bail!(
                "no braid binary at {}: build it with `cargo build --release -p braid-server` (same CARGO_TARGET_DIR) or pass --braid-bin",
                braid_bin.display()
            );
        }
        let postgres = pg_bin.join("postgres");
        if !postgres.is_file() {
            bail!("no PostgreSQL at {}: pass --pg-bin DIR", postgres.display());
        }

        let base = dir
            .cloned()
            .unwrap_or_else(|| repo.join("target/braid-bench"));
        std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
        let base = base
            .canonicalize()
            .with_context(|| format!("resolve {}", base.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&base)
            .with_context(|| format!("create a temporary directory in {}", base.display()))?;
        // PostgreSQL's user must be able to reach its data directory inside.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod {}", tmp.path().display()))?;
        }
        let (device, fs_type) = mount_of(tmp.path());
        if fs_type == "tmpfs" || fs_type == "ramfs" {
            eprintln!(
                "warning: {} is on {fs_type}: fsync is free there, pass --dir on a real disk",
                base.display()
            );
        }
        Ok(RunEnv {
            braid_bin,
            base,
            tmp,
            device,
            fs_type,
        })
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Braid,
    Postgres,
}

#[derive(Debug)]
struct System {
    name: &'static str,
    conninfo: String,
    kind: Kind,
}

// ---------------------------------------------------------------------------------------------
// The data.

/// One generated event. `ts` is `TS_BASE_US + id` ms, so the last 1% of ids is the last 1% of
/// `ts`.
#[derive(Debug, Clone)]
struct Event {
    id: i64,
    ts: DateTime<Utc>,
    key: String,
    payload: String,
}

/// Every event as COPY text (built once, shared byte for byte by both systems).
#[derive(Debug)]
struct Events {
    copy_text: Bytes,
    payload_bytes: u64,
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn pick<'a>(options: &[&'a str], h: u64) -> &'a str {
    options
        .get((h % options.len() as u64) as usize)
        .copied()
        .unwrap_or("")
}

/// Event `i`: a web-analytics style record whose JSON payload is ≈ 200 bytes, needs no escaping
/// in COPY text format, and varies from row to row.
fn event(i: u64) -> Event {
    let h = splitmix64(i);
    let h2 = splitmix64(h);
    let user = h % KEYS;
    let key = format!("user-{user:06}");
    let payload = format!(
        r#"{{"user":"{key}","action":"{}","page":"/products/{:05}","device":"{}","country":"{}","amount":{}.{:02},"session":"{:016x}","referrer":"https://www.example.com/search?q=item{:05}","seq":{i}}}"#,
        pick(
            &[
                "view",
                "click",
                "add_to_cart",
                "purchase",
                "search",
                "login"
            ],
            h >> 17
        ),
        (h >> 23) % 100_000,
        pick(&["mobile", "desktop", "tablet"], h >> 29),
        pick(&["DE", "US", "FR", "JP", "BR", "IN", "GB", "NL"], h >> 31),
        (h2 >> 7) % 1000,
        (h2 >> 19) % 100,
        h2,
        (h2 >> 37) % 100_000,
    );
    let ts =
        DateTime::<Utc>::from_timestamp_micros(TS_BASE_US + i as i64 * 1000).unwrap_or_default();
    Event {
        id: i as i64,
        ts,
        key,
        payload,
    }
}

impl Events {
    fn generate(rows: u64) -> Events {
        let mut text = BytesMut::with_capacity(rows as usize * 300);
        let mut payload_bytes = 0;
        for i in 0..rows {
            let e = event(i);
            payload_bytes += e.payload.len() as u64;
            // RFC 3339 with `T` and `Z`: both PostgreSQL and Arrow's cast parse it.
            let line = format!(
                "{}\t{}\t{}\t{}\n",
                e.id,
                e.ts.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
                e.key,
                e.payload
            );
            text.put_slice(line.as_bytes());
        }
        Events {
            copy_text: text.freeze(),
            payload_bytes,
        }
    }

    /// The first `n` events as parameter values (the same rows COPY loads first).
    fn rows_for_insert(&self, n: u64) -> Vec<Event> {
        (0..n).map(event).collect()
    }
}

/// A JSON document as a parameter, sent in binary as whatever type the server announced for
/// the placeholder: PostgreSQL says `jsonb` (version byte 1, then the text), braid says `text`
/// (it stores `jsonb` as text). The bytes are built once, so the client's cost is the same for
/// both systems.
#[derive(Debug)]
struct JsonText<'a>(&'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1);
        }
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSONB | Type::JSON | Type::TEXT | Type::VARCHAR)
    }

    to_sql_checked!();
}

// ---------------------------------------------------------------------------------------------
// The phases.

pub(crate) async fn connect(conninfo: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .with_context(|| format!("connect to {conninfo}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection to the server failed: {e}");
        }
    });
    Ok(client)
}

#[derive(Debug)]
struct Load {
    rows: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
}

/// One `COPY events FROM STDIN` of all rows, in 1 MiB data messages; timed from the COPY
/// statement to its CommandComplete (which both systems send only once the rows are durable).
async fn copy_load(sys: &System, text: &Bytes) -> anyhow::Result<Load> {
    let client = connect(&sys.conninfo).await?;
    let t0 = Instant::now();
    let sink = client
        .copy_in("COPY events (id, ts, key, payload) FROM STDIN")
        .await
        .with_context(|| format!("start COPY on {}", sys.name))?;
    futures::pin_mut!(sink);
    let mut at = 0;
    while at < text.len() {
        let end = (at + COPY_CHUNK_BYTES).min(text.len());
        // Cut after a newline so no message splits a row (neither server needs it; it keeps
        // the messages alike).
        let end = match text
            .get(end..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            Some(nl) if end < text.len() => end + nl + 1,
            _ => end,
        };
        sink.send(text.slice(at..end))
            .await
            .with_context(|| format!("send COPY data to {}", sys.name))?;
        at = end;
    }
    let rows = sink
        .finish()
        .await
        .with_context(|| format!("finish COPY on {}", sys.name))?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(Load {
        rows,
        seconds,
        p50_us: 0.0,
        p99_us: 0.0,
    })
}

/// `clients` connections, each preparing the single-row INSERT and then running it for every
/// `clients`-th event; timed from the moment all are prepared to the last acknowledgement.
async fn insert_load(
    sys: &System,
    events: Arc<Vec<Event>>,
    clients: usize,
) -> anyhow::Result<Load> {
    let sql = "INSERT INTO events_ins (id, ts, key, payload) VALUES ($1, $2, $3, $4)";
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let client = connect(&sys.conninfo).await?;
        let statement = client
            .prepare(sql)
            .await
            .with_context(|| format!("prepare the INSERT on {}", sys.name))?;
        let events = events.clone();
        let barrier = barrier.clone();
        let name = sys.name;
        tasks.push(tokio::spawn(async move {
            let mut latencies_ns = Vec::with_capacity(events.len() / clients + 1);
            barrier.wait().await;
            for e in events.iter().skip(c).step_by(clients) {
                let t = Instant::now();
                let n = client
                    .execute(&statement, &[&e.id, &e.ts, &e.key, &JsonText(&e.payload)])
                    .await
                    .with_context(|| format!("INSERT on {name}"))?;
                latencies_ns.push(t.elapsed().as_nanos() as u64);
                if n != 1 {
                    bail!("INSERT on {name} reported {n} rows, expected 1");
                }
            }
            Ok::<_, anyhow::Error>(latencies_ns)
        }));
    }
    barrier.wait().await;
    let t0 = Instant::now();
    let mut latencies = Vec::with_capacity(events.len());
    for t in tasks {
        latencies.extend(t.await.context("join an INSERT client")??);
    }
    let seconds = t0.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |q: f64| -> f64 {
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(rank - 1).copied().unwrap_or(0) as f64 / 1e3
    };
    Ok(Load {
        rows: latencies.len() as u64,
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

/// One timed query, on both systems.
#[derive(Debug)]
pub(crate) struct QueryRow {
    pub label: String,
    pub braid_sql: String,
    pub pg_sql: String,
    pub braid_ms: f64,
    pub pg_ms: f64,
    pub braid_result: String,
    pub pg_result: String,
    pub plans: String,
    /// One of the issue's targets (braid must be faster).
    pub target: bool,
}

/// Prints the timed queries under `title`: a table of times and answers, then each query's
/// SQL (once when both systems ran the same text) and braid's plans.
pub(crate) fn print_queries(title: &str, queries: &[QueryRow]) {
    println!("## {title}");
    println!();
    let header = [
        "query",
        "braid ms",
        "PostgreSQL ms",
        "braid / PostgreSQL time",
        "braid result",
        "PostgreSQL result",
    ];
    let lines: Vec<Vec<String>> = queries
        .iter()
        .map(|q| {
            vec![
                q.label.clone(),
                format!("{:.1}", q.braid_ms),
                format!("{:.1}", q.pg_ms),
                format!("{:.2}", q.braid_ms / q.pg_ms.max(1e-6)),
                q.braid_result.clone(),
                q.pg_result.clone(),
            ]
        })
        .collect();
    print_table(&header, &lines);
    println!();
    for q in queries {
        if q.braid_sql == q.pg_sql {
            println!("- {}: `{}`", q.label, q.braid_sql);
        } else {
            println!(
                "- {}: braid `{}`; PostgreSQL `{}`",
                q.label, q.braid_sql, q.pg_sql
            );
        }
        if !q.plans.is_empty() {
            println!("  plans: {}", q.plans);
        }
    }
    println!();
}

/// The values of the first row of a simple-query result, joined with `, `.
pub(crate) fn first_row(messages: &[SimpleQueryMessage]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// All rows of a simple-query result (EXPLAIN output), one line each.
pub(crate) fn all_rows(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .collect()
}

/// Times the query pairs, braid and PostgreSQL interleaved repetition by repetition, after one
/// untimed warm-up each. PostgreSQL's table gets an (untimed) `VACUUM ANALYZE` first, as
/// autovacuum would give it shortly after a bulk load.
async fn run_queries(systems: &[System; 2], s: &Settings) -> anyhow::Result<Vec<QueryRow>> {
    let [braid_sys, pg_sys] = systems;
    let braid = connect(&braid_sys.conninfo).await?;
    let pg = connect(&pg_sys.conninfo).await?;
    let t = Instant::now();
    pg.batch_execute("VACUUM ANALYZE events")
        .await
        .context("VACUUM ANALYZE on PostgreSQL")?;
    eprintln!(
        "PostgreSQL VACUUM ANALYZE events (untimed): {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // braid's `_timestamp` is the append time: the threshold that leaves ≈ 1% of the rows is
    // read back from the data (records appended together share a timestamp, so it selects a
    // little more than 1%). PostgreSQL filters `ts`, whose last 1% is known by construction.
    let one_pct = (s.rows / 100).max(1);
    let row = braid
        .query_one(
            &format!(
                "SELECT _timestamp FROM events ORDER BY _timestamp DESC LIMIT 1 OFFSET {}",
                one_pct - 1
            ),
            &[],
        )
        .await
        .context("find braid's 1% _timestamp threshold")?;
    let append_ts: DateTime<Utc> = row.try_get(0).context("read _timestamp")?;
    let append_ts = append_ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let ts_cut =
        DateTime::<Utc>::from_timestamp_micros(TS_BASE_US + (s.rows - one_pct) as i64 * 1000)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();

    let pairs: Vec<(String, String, String)> = vec![
        (
            "count(*)".into(),
            "SELECT count(*) FROM events".into(),
            "SELECT count(*) FROM events".into(),
        ),
        (
            "≈1% by time: braid _timestamp (seek) vs PostgreSQL ts (index)".into(),
            format!("SELECT count(*), max(id) FROM events WHERE _timestamp >= '{append_ts}'"),
            format!("SELECT count(*), max(id) FROM events WHERE ts >= '{ts_cut}'"),
        ),
        (
            "1% by ts column (braid: no index, full scan)".into(),
            format!("SELECT count(*), max(id) FROM events WHERE ts >= '{ts_cut}'"),
            format!("SELECT count(*), max(id) FROM events WHERE ts >= '{ts_cut}'"),
        ),
    ];

    let mut out = Vec::new();
    for (label, braid_sql, pg_sql) in pairs {
        let mut plans = Vec::new();
        let b_plan = all_rows(&braid.simple_query(&format!("EXPLAIN {braid_sql}")).await?);
        if let Some(scan) = b_plan.iter().find(|l| l.contains("StreamScanExec")) {
            plans.push(format!(
                "braid `{}`",
                scan.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
        let p_plan = all_rows(&pg.simple_query(&format!("EXPLAIN {pg_sql}")).await?);
        let p_nodes: Vec<String> = p_plan
            .iter()
            .filter(|l| l.contains("Scan") || l.contains("Aggregate"))
            .map(|l| {
                l.trim()
                    .trim_start_matches("->")
                    .trim()
                    .split("  (")
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        if !p_nodes.is_empty() {
            plans.push(format!("PostgreSQL `{}`", p_nodes.join(" ← ")));
        }
        let (mut b_ms, mut p_ms) = (Vec::new(), Vec::new());
        let (mut b_res, mut p_res) = (String::new(), String::new());
        for rep in 0..=s.reps {
            let t = Instant::now();
            let r = braid
                .simple_query(&braid_sql)
                .await
                .with_context(|| format!("braid: {braid_sql}"))?;
            let bt = t.elapsed().as_secs_f64() * 1e3;
            b_res = first_row(&r);
            let t = Instant::now();
            let r = pg
                .simple_query(&pg_sql)
                .await
                .with_context(|| format!("PostgreSQL: {pg_sql}"))?;
            let pt = t.elapsed().as_secs_f64() * 1e3;
            p_res = first_row(&r);
            if rep > 0 {
                b_ms.push(bt);
                p_ms.push(pt);
            }
        }
        let (bm, pm) = (median(&mut b_ms), median(&mut p_ms));
        eprintln!("{label}: braid {bm:.1} ms ({b_res}), PostgreSQL {pm:.1} ms ({p_res})");
        out.push(QueryRow {
            label,
            braid_sql,
            pg_sql,
            braid_ms: bm,
            pg_ms: pm,
            braid_result: b_res,
            pg_result: p_res,
            plans: plans.join("; "),
            target: false,
        });
    }
    if let Some(first) = out.first() {
        if first.braid_result != s.rows.to_string() || first.pg_result != s.rows.to_string() {
            bail!(
                "row counts after COPY differ from the {} rows sent: braid {}, PostgreSQL {}",
                s.rows,
                first.braid_result,
                first.pg_result
            );
        }
    }
    Ok(out)
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// The servers.

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(l.local_addr()?.port())
}

pub(crate) fn command_output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) fn modified_ago(path: &Path) -> String {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or("?".into(), |d| format!("{} min ago", d.as_secs() / 60))
}

/// Bytes allocated on disk under `dir` (`st_blocks`, so sparse preallocation counts as used).
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Retries connecting until the server accepts or `START_TIMEOUT` passes.
async fn wait_ready(
    conninfo: &str,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match tokio_postgres::connect(conninfo, NoTls).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!("no connection to {conninfo} after {START_TIMEOUT:?}: {e}")
            }
            Err(_) => {
                alive()?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The braid server as a child process in its own process group (so a Ctrl-C at the terminal
/// reaches the benchmark, which stops it, rather than both at once). Dropping it stops it.
#[derive(Debug)]
pub(crate) struct BraidServer {
    child: Option<Child>,
    data_dir: PathBuf,
    log: PathBuf,
    port: u16,
}

impl BraidServer {
    pub(crate) async fn start(bin: &Path, data_dir: &Path) -> anyhow::Result<BraidServer> {
        use std::os::unix::process::CommandExt;
        let port = free_port()?;
        let log = data_dir.with_extension("log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(bin)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env_remove("RUST_LOG")
            .env_remove("BRAID_DURABILITY")
            .env("BRAID_HTTP_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut server = BraidServer {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            log,
            port,
        };
        let log = server.log.clone();
        let conninfo = server.conninfo();
        let child = server.child.as_mut();
        let mut child = child;
        wait_ready(&conninfo, || match child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => bail!(
                "braid exited at start ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
            _ => Ok(()),
        })
        .await?;
        eprintln!(
            "braid listening on 127.0.0.1:{port}, data dir {}",
            server.data_dir.display()
        );
        Ok(server)
    }

    pub(crate) fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The server's process id (`None` once stopped).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server with SIGTERM (it drains and exits 0) and returns its WARN/ERROR lines.
    pub(crate) fn stop(mut self) -> anyhow::Result<Vec<String>> {
        let status = self.terminate();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let problems = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(|l| l.to_string())
            .collect();
        match status {
            Some(s) if !s.success() => {
                bail!("braid exited with {s}; log in {}", self.log.display())
            }
            _ => Ok(problems),
        }
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("braid did not stop within 40 s of SIGTERM; killing it");
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for BraidServer {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// PostgreSQL, initialised and started with `pg_ctl` as a non-root user on a fresh data
/// directory (its defaults; only the port, the listen address and the socket directory are
/// set). Dropping it stops it (`pg_ctl stop -m fast`).
#[derive(Debug)]
pub(crate) struct PgServer {
    bin: PathBuf,
    /// `Some(user)` when running as root: every PostgreSQL tool runs through `runuser -u`.
    user: Option<String>,
    data_dir: PathBuf,
    port: u16,
    running: bool,
}

impl PgServer {
    pub(crate) async fn start(
        bin: &Path,
        wanted_user: &str,
        data_dir: &Path,
    ) -> anyhow::Result<PgServer> {
        let root = command_output(Command::new("id").arg("-u"))? == "0";
        let user = if root {
            let user = if Command::new("id")
                .arg("-u")
                .arg(wanted_user)
                .output()?
                .status
                .success()
            {
                wanted_user.to_string()
            } else {
                let fallback = "braidbench";
                if !Command::new("id")
                    .arg("-u")
                    .arg(fallback)
                    .output()?
                    .status
                    .success()
                {
                    command_output(
                        Command::new("useradd")
                            .args([
                                "--system",
                                "--no-create-home",
                                "--shell",
                                "/usr/sbin/nologin",
                            ])
                            .arg(fallback),
                    )?;
                }
                fallback.to_string()
            };
            Some(user)
        } else {
            None
        };
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("create {}", data_dir.display()))?;
        if let Some(u) = &user {
            command_output(Command::new("chown").arg(format!("{u}:")).arg(data_dir))?;
        }
        let mut server = PgServer {
            bin: bin.to_path_buf(),
            user,
            data_dir: data_dir.to_path_buf(),
            port: free_port()?,
            running: false,
        };
        command_output(server.tool("initdb").arg("-D").arg(data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]))
        .context("initdb")?;
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            server.port,
            data_dir.display()
        );
        server.running = true;
        command_output(
            server
                .tool("pg_ctl")
                .arg("-D")
                .arg(data_dir)
                .arg("-o")
                .arg(options)
                .arg("-l")
                .arg(data_dir.join("server.log"))
                .args(["-w", "-t", "60", "start"]),
        )
        .context("pg_ctl start")?;
        let conninfo = server.conninfo();
        wait_ready(&conninfo, || Ok(())).await?;
        let c = connect(&conninfo).await?;
        let mut settings = Vec::new();
        for name in [
            "fsync",
            "synchronous_commit",
            "wal_level",
            "shared_buffers",
            "max_wal_size",
        ] {
            let v = first_row(&c.simple_query(&format!("SHOW {name}")).await?);
            settings.push(format!("{name}={v}"));
        }
        eprintln!(
            "PostgreSQL listening on 127.0.0.1:{}, data dir {} ({})",
            server.port,
            data_dir.display(),
            settings.join(", ")
        );
        println!("PostgreSQL settings: {}", settings.join(", "));
        Ok(server)
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(u).arg("--").arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    pub(crate) fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub(crate) fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if !std::mem::replace(&mut self.running, false) {
            return;
        }
        let r = command_output(
            self.tool("pg_ctl")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "fast", "-w", "stop"]),
        );
        if let Err(e) = r {
            eprintln!("stopping PostgreSQL failed: {e:#}");
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
