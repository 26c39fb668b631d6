//! One client connection from accept to close: the connection limit (one more client gets
//! SQLSTATE 53300 and nobody else notices), and the stall rules that keep a bad client from
//! holding a slot forever — the startup handshake must finish, and a message once begun must
//! keep arriving, within `client_stall_timeout_secs`. An idle client between messages is left
//! alone, as PostgreSQL does.
//!
//! The message loop is pgwire's own (`process_socket`), rewritten here to watch the read
//! buffer (pgwire offers no hook for a per-message timeout) and to send replies as PostgreSQL
//! does: held back until the loop is about to wait for the client ([`Corked`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::task::{ready, Context, Poll};

use futures::{SinkExt, StreamExt};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::ErrorInfo;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

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
    let Some(socket) = negotiated else {
        // A direct TLS handshake: braid has no TLS, and pgwire already said so.
        return Ok(());
    };
    let cork = Arc::new(AtomicBool::new(true));
    let socket = socket.into_parts();
    let mut parts = FramedParts::new(
        Corked {
            inner: socket.io,
            out: Vec::new(),
            written: 0,
            cork: cork.clone(),
        },
        socket.codec,
    );
    parts.read_buf = socket.read_buf;
    parts.write_buf = socket.write_buf;
    let mut socket = Framed::from_parts(parts);
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
    // One timer for the connection's life, not one per message: a fresh `sleep` in every
    // `select!` cost each statement a timer-wheel insert and removal.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let in_startup = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        // About to wait for the client (a startup message has no type byte, so there always):
        // send what the messages handled so far produced.
        if in_startup || !holds_message(socket.read_buffer()) {
            cork.store(false, Ordering::Relaxed);
            let flushed = socket.flush().await;
            cork.store(true, Ordering::Relaxed);
            flushed?;
        }
        let msg = tokio::select! {
            msg = socket.next() => msg,
            _ = &mut startup_deadline, if in_startup => {
                timed_out("startup");
                tracing::debug!("client did not finish startup in time: disconnecting");
                break;
            }
            _ = ticker.tick(), if !in_startup => {
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
    // The last replies (an error before closing, say) still go out.
    cork.store(false, Ordering::Relaxed);
    socket.flush().await
}

/// True when `buf` holds at least one whole frontend message (type byte, then a length that
/// counts itself), so reading the next message will not wait for the client.
fn holds_message(buf: &[u8]) -> bool {
    match buf.get(1..5) {
        Some(len) => {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            buf.len() > len
        }
        None => false,
    }
}

/// Most reply bytes held back before they are written anyway (a large result streams).
const CORK_BYTES_MAX: usize = 64 * 1024;

/// The client socket under pgwire's framing, with flushes held back while `cork` is set.
///
/// Why: pgwire flushes after every message it sends, so an extended-protocol round (Bind,
/// Execute, Sync) answered with BindComplete, DataRow, CommandComplete and ReadyForQuery took
/// four `send` calls — and up to four wake-ups of the client — where PostgreSQL makes one: it
/// buffers replies and flushes only before it waits to read. The connection loop does the same
/// by lifting the cork just before it waits for the next message; writes past
/// [`CORK_BYTES_MAX`] go out regardless, so a large result streams with backpressure.
struct Corked<S> {
    inner: S,
    out: Vec<u8>,
    /// Bytes at the start of `out` already written to `inner`.
    written: usize,
    cork: Arc<AtomicBool>,
}

impl<S: AsyncWrite + Unpin> Corked<S> {
    /// Writes everything held to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Corked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= CORK_BYTES_MAX {
            ready!(this.poll_drain(cx))?;
        }
        this.out.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.cork.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Corked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}
