//! The `braid` binary: reads settings, takes or binds its sockets, opens the engine on the
//! data directory (recovery), owns the accept loop and shuts down cleanly on SIGTERM/SIGINT:
//! stop accepting, let running statements finish within the drain timeout, close the logs,
//! exit 0. A second signal exits at once. SIGHUP reloads the configuration (`reload`).
//!
//! Under systemd (`systemd`): sockets may be inherited, and the service manager hears about
//! recovery progress, readiness, watchdog liveness, reloads and shutdown.

mod config;
mod conn;
mod copy;
mod copy_out;
mod encode;
mod errors;
mod extended;
mod http;
mod logging;
mod metrics;
mod params;
mod query;
mod reload;
mod simple;
mod startup;
mod systemd;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use braid_planner::stream::logcore::{LogCoreStreams, LogDurability, StorageFiles};
use braid_planner::{Engine, EngineOptions, Output, Session};
use clap::Parser;
use futures::StreamExt;
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

/// Planning a statement allocates and frees thousands of small objects (plans, expressions,
/// schemas, strings); glibc's allocator spent a fifth of a short query's server CPU on them
/// (`malloc_consolidate` runs on every allocation of 1 KiB or more after small frees), and 18%
/// of a single-row INSERT's. mimalloc's per-thread free lists cost far less. It is built with
/// `no_thp`: with transparent huge pages each fresh 2 MiB of its arenas was zeroed on first
/// touch, and COPY's per-chunk Arrow buffers touched fresh ones all the time (35% of COPY's
/// CPU in `clear_page_erms`; 1 M rows in 1.7 s against 0.9 s without).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::config::{Args, Config, Durability};
use crate::conn::Connections;
use crate::http::{HttpState, Phase};
use crate::metrics::{MeteredFs, MeteredLogs};
use crate::query::QueryHandler;
use crate::reload::Reloader;
use crate::startup::BraidStartup;
use crate::systemd::Inherited;

/// All pgwire handlers of the server.
struct Handlers {
    query: Arc<QueryHandler>,
    startup: Arc<BraidStartup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.query.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.query.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.query.clone()
    }
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

fn main() -> anyhow::Result<()> {
    // First, while this is the only thread: adopting inherited sockets clears LISTEN_*.
    let inherited = systemd::take_inherited_sockets();
    let args = Args::parse();
    let config = Config::load(args.clone())?;
    let log = logging::init(&config.log);
    let inherited = match inherited {
        Ok(i) => i,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::exit(2);
        }
    };
    let pg_check = match &inherited.pg {
        Some(l) => l.local_addr().map_err(anyhow::Error::from),
        None => Ok(config.listen),
    };
    if let Err(e) = config
        .check()
        .and(pg_check.and_then(|a| config.check_listen(a)))
    {
        // Logged once here; exiting without returning the error avoids printing it twice.
        tracing::error!("{e:#}");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("braid")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run(args, config, log, inherited));
    // Connection tasks still parked on idle clients must not delay the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = result {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// An inherited socket, or a freshly bound one.
async fn listener(
    inherited: Option<std::net::TcpListener>,
    addr: SocketAddr,
    what: &str,
) -> anyhow::Result<TcpListener> {
    match inherited {
        Some(l) => TcpListener::from_std(l)
            .with_context(|| format!("registering the inherited {what} socket")),
        None => TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for {what} on {addr}")),
    }
}

/// Number of stream log directories (`<data_dir>/log/<database>/<id>`), the denominator of
/// the recovery progress. Internal topics (`_commit`, the row store's commit log) are not
/// stream logs and are recovered by the row store, not counted here.
async fn count_stream_logs(data_dir: &Path) -> usize {
    let root = data_dir.join("log");
    tokio::task::spawn_blocking(move || {
        let Ok(dbs) = std::fs::read_dir(root) else {
            return 0;
        };
        dbs.flatten()
            .filter_map(|db| std::fs::read_dir(db.path()).ok())
            .map(|ids| {
                ids.flatten()
                    .filter(|e| {
                        e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('_')
                    })
                    .count()
            })
            .sum()
    })
    .await
    .unwrap_or(0)
}

/// How often recovery progress is reported, and how much more start time each report asks for.
const RECOVERY_REPORT_INTERVAL: Duration = Duration::from_secs(1);
const RECOVERY_EXTEND_BY: Duration = Duration::from_secs(10);

/// Reports recovery progress now and then every [`RECOVERY_REPORT_INTERVAL`] until aborted.
async fn report_recovery(opened: Arc<AtomicUsize>, total: usize) {
    let mut last = None;
    loop {
        let n = opened.load(Ordering::Relaxed);
        // Ask for more time only while recovery moves: one that hangs stops asking, and
        // systemd's start timeout fires.
        if last != Some(n) {
            systemd::notify_extend_timeout(RECOVERY_EXTEND_BY);
        }
        last = Some(n);
        systemd::notify_status(&format!("recovering: opened {n} of {total} stream logs"));
        tokio::time::sleep(RECOVERY_REPORT_INTERVAL).await;
    }
}

async fn run(
    args: Args,
    config: Config,
    log: logging::LogControl,
    inherited: Inherited,
) -> anyhow::Result<()> {
    // HTTP first, so /health answers and /ready says 503 during recovery.
    let http_state = Arc::new(HttpState::new(config.data_dir.join("log")));
    let http_listener = listener(inherited.http, config.http_listen, "HTTP").await?;
    let http_addr = http_listener.local_addr()?;
    tokio::spawn(http::serve(http_listener, http_state.clone()));
    let pg_listener = listener(inherited.pg, config.listen, "PostgreSQL").await?;
    let pg_addr = pg_listener.local_addr()?;

    let data_dir = config.data_dir.clone();
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(&data_dir))
        .await
        .context("creating the data directory")?
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let durability = match config.durability {
        Durability::Sync => LogDurability::Sync,
        Durability::Group { max_wait_us } => LogDurability::Group { max_wait_us },
        Durability::None => LogDurability::None,
    };
    let fs = MeteredFs::wrap(
        braid_storage::io::backend_from_env().context("opening the storage backend")?,
    );
    let files = Arc::new(StorageFiles::new(fs.clone()));
    let logs = MeteredLogs::new(Arc::new(LogCoreStreams::new(
        fs.clone(),
        &config.data_dir,
        durability,
    )));
    let engine_slot = logs.engine_slot();
    let total = count_stream_logs(&config.data_dir).await;
    // The first report goes out before recovery starts, the rest from a task.
    let mut report = Box::pin(report_recovery(logs.opened(), total));
    let _ = futures::poll!(report.as_mut());
    let progress = tokio::spawn(report);
    let opened = Engine::open(
        files,
        Arc::new(logs),
        &config.data_dir,
        EngineOptions {
            row_fs: Some(fs),
            row_durability: durability,
            ..EngineOptions::default()
        },
    )
    .await
    .with_context(|| format!("opening data directory {}", config.data_dir.display()));
    // Wait for the reporter to be gone, so that no "recovering" STATUS can follow READY=1.
    progress.abort();
    let _ = progress.await;
    let engine = opened?;
    let _ = engine_slot.set(engine.clone());

    let manager = Arc::new(ConnectionManager::new());
    let query = Arc::new(QueryHandler::new(engine.clone()));
    let inflight = query.inflight.clone();
    let handlers = Arc::new(Handlers {
        query,
        startup: Arc::new(BraidStartup::new(
            engine.clone(),
            manager.clone(),
            &config.auth.users,
        )),
        cancel: Arc::new(DefaultCancelHandler::new(manager)),
    });

    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut reloader = Reloader::new(args, config.clone(), log, pg_addr);
    let limits = reloader.limits.clone();
    let drain_timeout_secs = reloader.drain_timeout_secs.clone();
    let connections = Arc::new(Connections::default());

    // The watchdog pings only after the accept loop answered and the engine ran a query.
    let (heartbeat_tx, mut heartbeat_rx) = mpsc::channel::<oneshot::Sender<()>>(1);
    if let Some(interval) = systemd::watchdog_interval() {
        let session = engine
            .internal_session(
                braid_planner::catalog::DEFAULT_DATABASE,
                "braid-watchdog",
                0,
            )
            .context("opening the watchdog session")?;
        tokio::spawn(watchdog(interval, heartbeat_tx, session));
    }

    http_state.set_phase(Phase::Ready);
    tracing::info!(
        listen = %pg_addr,
        http = %http_addr,
        data_dir = %config.data_dir.display(),
        "braid is ready to accept connections"
    );
    systemd::notify_ready(&reloader.status());
    loop {
        tokio::select! {
            accepted = pg_listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    conn::spawn_connection(socket, peer, handlers.clone(), &connections, &limits);
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(reply) = heartbeat_rx.recv() => { let _ = reply.send(()); }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP received: reloading the configuration");
                reloader.reload();
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM received: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT received: shutting down"); break; }
        }
    }
    drop(pg_listener);
    http_state.set_phase(Phase::Stopping);
    systemd::notify_stopping("stopping: finishing running statements");
    inflight.shutting_down.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let drain_secs = drain_timeout_secs.load(Ordering::SeqCst);
    tokio::select! {
        _ = inflight.wait_idle() => {}
        _ = tokio::time::sleep(Duration::from_secs(drain_secs)) => {
            tracing::warn!(seconds = drain_secs, "drain timeout: abandoning running statements");
        }
        _ = sigterm.recv() => { tracing::warn!("second signal: exiting now"); std::process::exit(1); }
        _ = sigint.recv() => { tracing::warn!("second signal: exiting now"); std::process::exit(1); }
    }
    let drained = started.elapsed();
    systemd::notify_status("stopping: closing the logs");
    engine.close().await;
    tracing::info!(
        drain_ms = drained.as_millis() as u64,
        close_ms = (started.elapsed() - drained).as_millis() as u64,
        "braid stopped"
    );
    Ok(())
}

/// Pings systemd's watchdog at half its interval, but only when the server proves alive: the
/// accept loop answers a heartbeat and the engine plans and runs `SELECT 1`, both within half
/// an interval. A stuck loop or engine stops the pings and systemd restarts the service.
async fn watchdog(
    interval: Duration,
    heartbeat: mpsc::Sender<oneshot::Sender<()>>,
    session: Session,
) {
    let half = interval / 2;
    let mut tick = tokio::time::interval(half);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let probe = async {
            let (tx, rx) = oneshot::channel();
            heartbeat
                .send(tx)
                .await
                .context("the accept loop is gone")?;
            rx.await.context("the accept loop did not answer")?;
            match session.execute("SELECT 1").await? {
                Output::Rows { mut stream, .. } => {
                    while let Some(batch) = stream.next().await {
                        batch?;
                    }
                }
                _ => anyhow::bail!("SELECT 1 returned no rows"),
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(half, probe).await {
            Ok(Ok(())) => systemd::notify_watchdog(),
            Ok(Err(e)) => tracing::warn!("liveness probe failed, not pinging the watchdog: {e:#}"),
            Err(_) => tracing::warn!("liveness probe timed out, not pinging the watchdog"),
        }
    }
}
