//! SIGHUP: read the configuration again and apply what can change in a running server — the
//! log filter, `max_connections`, `client_stall_timeout_secs`, `drain_timeout_secs` — without
//! touching open connections. Settings that need a restart are named in the log and keep their
//! running values. A file that no longer parses changes nothing.
//!
//! systemd hears `RELOADING=1` before and `READY=1` after, so `systemctl reload` waits for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{Args, Config};
use crate::conn::Limits;
use crate::logging::LogControl;
use crate::systemd;

/// Everything a reload changes, shared with the parts of the server that read it.
pub struct Reloader {
    args: Args,
    /// The settings in effect (restart-only ones as the process started with them).
    running: Config,
    log: LogControl,
    /// The PostgreSQL address actually served (bound or inherited).
    serving: std::net::SocketAddr,
    pub limits: Arc<Limits>,
    pub drain_timeout_secs: Arc<AtomicU64>,
}

impl Reloader {
    pub fn new(
        args: Args,
        running: Config,
        log: LogControl,
        serving: std::net::SocketAddr,
    ) -> Self {
        let limits = Arc::new(Limits {
            max_connections: running.max_connections.into(),
            client_stall_timeout_secs: running.client_stall_timeout_secs.into(),
        });
        let drain_timeout_secs = Arc::new(AtomicU64::new(running.drain_timeout_secs));
        Reloader {
            args,
            running,
            log,
            serving,
            limits,
            drain_timeout_secs,
        }
    }

    /// Handles one SIGHUP.
    pub fn reload(&mut self) {
        systemd::notify_reloading();
        match self.apply() {
            Ok(()) => {}
            Err(e) => tracing::error!(
                "reloading the configuration failed, keeping the current settings: {e:#}"
            ),
        }
        systemd::notify_ready(&self.status());
    }

    /// The `STATUS=` line while serving.
    pub fn status(&self) -> String {
        format!(
            "serving on {}; max_connections={}",
            self.serving, self.running.max_connections
        )
    }

    fn apply(&mut self) -> anyhow::Result<()> {
        let new = Config::load(self.args.clone())?;
        new.check()?;
        let restart_only = self.running.restart_only_changes(&new);
        let old = self.running.live();
        let live = new.live();
        let filter = if old.log != live.log {
            Some(self.log.set_filter(&live.log)?)
        } else {
            None
        };
        self.limits
            .max_connections
            .store(live.max_connections, Ordering::SeqCst);
        self.limits
            .client_stall_timeout_secs
            .store(live.client_stall_timeout_secs, Ordering::SeqCst);
        self.drain_timeout_secs
            .store(live.drain_timeout_secs, Ordering::SeqCst);
        self.running.log = live.log;
        self.running.max_connections = live.max_connections;
        self.running.client_stall_timeout_secs = live.client_stall_timeout_secs;
        self.running.drain_timeout_secs = live.drain_timeout_secs;
        if !restart_only.is_empty() {
            tracing::warn!(
                settings = %restart_only.join(", "),
                "these settings changed in the configuration but only take effect after a restart"
            );
        }
        tracing::info!(
            log = filter.as_deref().unwrap_or("unchanged"),
            max_connections = self.running.max_connections,
            client_stall_timeout_secs = self.running.client_stall_timeout_secs,
            drain_timeout_secs = self.running.drain_timeout_secs,
            "configuration reloaded"
        );
        Ok(())
    }
}
