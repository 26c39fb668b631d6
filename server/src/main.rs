//! The `braid` binary: reads settings, opens the engine on the data directory, owns the TCP
//! accept loop (pgwire `process_socket` per connection) and shuts down cleanly on
//! SIGTERM/SIGINT: stop accepting, let running statements finish within the drain timeout,
//! close the logs, exit 0. A second signal exits at once.

mod config;
mod copy;
mod encode;
mod errors;
mod extended;
mod params;
mod query;
mod simple;
mod startup;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use braid_planner::stream::logcore::{open_storage, LogDurability};
use braid_planner::{Engine, EngineOptions};
use clap::Parser;
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::config::{Args, Config, Durability};
use crate::query::QueryHandler;
use crate::startup::BraidStartup;

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
    let args = Args::parse();
    let config = Config::load(args)?;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::new(f),
        _ => EnvFilter::new(&config.log),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = config.check() {
        // Logged once here; exiting without returning the error avoids printing it twice.
        tracing::error!("{e:#}");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("braid")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run(config));
    // Connection tasks still parked on idle clients must not delay the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = result {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let durability = match config.durability {
        Durability::Sync => LogDurability::Sync,
        Durability::Group { max_wait_us } => LogDurability::Group { max_wait_us },
        Durability::None => LogDurability::None,
    };
    let (files, logs) =
        open_storage(&config.data_dir, durability).context("opening the storage backend")?;
    let engine = Engine::open(files, logs, &config.data_dir, EngineOptions::default())
        .await
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;

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

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(config.listen),
        data_dir = %config.data_dir.display(),
        "braid is ready to accept connections"
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let handlers = handlers.clone();
                    tokio::spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = sigterm.recv() => { tracing::info!("SIGTERM received: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT received: shutting down"); break; }
        }
    }
    drop(listener);
    inflight.shutting_down.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let drain = Duration::from_secs(config.drain_timeout_secs);
    tokio::select! {
        _ = inflight.wait_idle() => {}
        _ = tokio::time::sleep(drain) => {
            tracing::warn!(seconds = config.drain_timeout_secs, "drain timeout: abandoning running statements");
        }
        _ = sigterm.recv() => { tracing::warn!("second signal: exiting now"); std::process::exit(1); }
        _ = sigint.recv() => { tracing::warn!("second signal: exiting now"); std::process::exit(1); }
    }
    let drained = started.elapsed();
    engine.close().await;
    tracing::info!(
        drain_ms = drained.as_millis() as u64,
        close_ms = (started.elapsed() - drained).as_millis() as u64,
        "braid stopped"
    );
    Ok(())
}
