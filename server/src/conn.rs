//! One client connection from accept to close: the connection limit (one more client gets
//! SQLSTATE 53300 and nobody else notices), and the stall rules that keep a bad client from
//! holding a slot forever — the startup handshake must finish, and a message once begun must
//! keep arriving, within `client_stall_timeout_secs`. An idle client between messages is left
//! alone, as PostgreSQL does.
//!
//! The message loop is pgwire's own (`process_socket`), rewritten here only to watch the read
//! buffer: pgwire offers no hook for a per-message timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::ErrorInfo;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::net::TcpStream;

use crate::metrics::METRICS;

/// Connection settings a reload may change while clients are connected.
#[derive(Debug)]
pub struct Limits {
    pub max_connections: AtomicUsize,
    pub client_stall_timeout_secs: AtomicU64,
}

impl Limits {
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs(
            self.client_stall_timeout_secs
                .load(Ordering::Relaxed)
                .max(1),
        )
    }
}

/// Open connections, shared by the accept loop and the connection tasks.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicUsize,
}

/// Holds a connection slot until dropped.
pub struct Slot(Arc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        METRICS.connections.dec();
    }
}

impl Connections {
    /// Takes a slot unless `max` are taken.
    pub fn try_enter(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let taken = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            });
        taken.ok().map(|_| {
            METRICS.connections.inc();
            Slot(self.clone())
        })
    }
}

/// Hands an accepted socket to its own task: served, or refused with 53300 when full.
pub fn spawn_connection<H>(
    socket: TcpStream,
    peer: SocketAddr,
    handlers: Arc<H>,
    connections: &Arc<Connections>,
    limits: &Limits,
) where
    H: PgWireServerHandlers + Send + Sync + 'static,
{
    let _ = socket.set_nodelay(true);
    let stall = limits.stall_timeout();
    let max = limits.max_connections.load(Ordering::Relaxed);
    METRICS.connections_accepted.inc();
    match connections.try_enter(max) {
        Some(slot) => {
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = serve(socket, handlers, stall).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        None => {
            tracing::info!(%peer, max_connections = max, "refusing a connection: too many clients");
            METRICS
                .connections_rejected
                .get_or_create(&vec![("reason", "too_many".to_string())])
                .inc();
            tokio::spawn(async move {
                // Bounded like any other client: a stalled refused client must not linger.
                let _ = tokio::time::timeout(stall, refuse(socket, handlers)).await;
            });
        }
    }
}

fn timed_out(phase: &str) {
    METRICS
        .connections_timed_out
        .get_or_create(&vec![("phase", phase.to_string())])
        .inc();
}

/// Answers the startup message with FATAL 53300, as PostgreSQL does when full. A cancel
/// request is still honoured: it is how a client gets a slot back from a runaway query.
async fn refuse<H: PgWireServerHandlers>(
    socket: TcpStream,
    handlers: Arc<H>,
) -> std::io::Result<()> {
    let Some(mut framed) = negotiate_tls::<()>(socket, None).await? else {
        return Ok(());
    };
    match framed.next().await {
        Some(Ok(PgWireFrontendMessage::CancelRequest(cancel))) => {
            handlers.cancel_handler().on_cancel_request(cancel).await;
            return Ok(());
        }
        Some(Ok(PgWireFrontendMessage::Startup(_))) => {}
        _ => return Ok(()),
    }
    METRICS.error("53300");
    let info = ErrorInfo::new(
        "FATAL".into(),
        "53300".into(),
        "sorry, too many clients already".into(),
    );
    framed
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await?;
    framed.close().await
}

/// pgwire's message loop with the stall rules.
async fn serve<H: PgWireServerHandlers>(
    socket: TcpStream,
    handlers: Arc<H>,
    stall: Duration,
) -> std::io::Result<()> {
    let startup_deadline = tokio::time::sleep(stall);
    tokio::pin!(startup_deadline);
    let negotiated = tokio::select! {
        _ = &mut startup_deadline => {
            timed_out("startup");
            return Ok(());
        }
        s = negotiate_tls(socket, None) => s?,
    };
    let Some(mut socket) = negotiated else {
        // A direct TLS handshake: braid has no TLS, and pgwire already said so.
        return Ok(());
    };
    let startup_handler = handlers.startup_handler();
    let simple_query_handler = handlers.simple_query_handler();
    let extended_query_handler = handlers.extended_query_handler();
    let copy_handler = handlers.copy_handler();
    let cancel_handler = handlers.cancel_handler();
    let error_handler = handlers.error_handler();
    // Check the read buffer several times per timeout, so a stall is caught soon after it
    // lasted the full timeout.
    let tick = (stall / 4).max(Duration::from_millis(50));
    // Bytes of an unfinished message and since when that count has not grown.
    let mut partial: Option<(usize, Instant)> = None;
    loop {
        let in_startup = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let msg = tokio::select! {
            msg = socket.next() => msg,
            _ = &mut startup_deadline, if in_startup => {
                timed_out("startup");
                tracing::debug!("client did not finish startup in time: disconnecting");
                break;
            }
            _ = tokio::time::sleep(tick), if !in_startup => {
                let buffered = socket.read_buffer().len();
                partial = match partial {
                    _ if buffered == 0 => None,
                    Some((n, since)) if n == buffered => {
                        if since.elapsed() >= stall {
                            timed_out("message");
                            tracing::debug!(buffered, "client stalled mid-message: disconnecting");
                            break;
                        }
                        Some((n, since))
                    }
                    _ => Some((buffered, Instant::now())),
                };
                continue;
            }
        };
        partial = None;
        let Some(Ok(msg)) = msg else {
            // End of stream, or bytes that are not the protocol: pgwire's codec refused them.
            break;
        };
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let is_extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(is_extended_query) => is_extended_query,
            _ => msg.is_extended_query(),
        };
        let is_cancel_request = matches!(msg, PgWireFrontendMessage::CancelRequest(_));
        if let Err(mut e) = process_message(
            msg,
            &mut socket,
            startup_handler.clone(),
            simple_query_handler.clone(),
            extended_query_handler.clone(),
            copy_handler.clone(),
            cancel_handler.clone(),
        )
        .await
        {
            error_handler.on_error(&socket, &mut e);
            let is_fatal = e.is_fatal();
            process_error(&mut socket, e, is_extended_query).await?;
            if is_fatal {
                break;
            }
        }
        if is_cancel_request {
            break;
        }
    }
    Ok(())
}
