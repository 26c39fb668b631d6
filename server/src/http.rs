//! The HTTP endpoints on their own address (`--http-listen`): `/metrics` (Prometheus text),
//! `/health` (the process answers) and `/ready` (recovery finished and the PostgreSQL socket
//! accepts). The listener starts before recovery so that `/health` answers and `/ready` says
//! 503 while the logs are replayed.
//!
//! What must stay true: nothing here touches the engine or blocks a runtime thread; the log
//! size for `/metrics` is measured on the blocking pool.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::{log_disk_bytes, METRICS};

/// Where the server is in its life, as `/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Recovering = 0,
    Ready = 1,
    Stopping = 2,
}

/// What the endpoints read.
#[derive(Debug)]
pub struct HttpState {
    phase: AtomicU8,
    /// `<data_dir>/log`, measured for `braid_log_disk_bytes`.
    log_dir: PathBuf,
}

impl HttpState {
    pub fn new(log_dir: PathBuf) -> Self {
        HttpState {
            phase: AtomicU8::new(Phase::Recovering as u8),
            log_dir,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Recovering,
            1 => Phase::Ready,
            _ => Phase::Stopping,
        }
    }
}

/// Most time a client gets to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP on `listener` until the process exits.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, state.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

async fn respond(
    req: Request<Incoming>,
    state: Arc<HttpState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET and HEAD\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            let bytes = log_disk_bytes(state.log_dir.clone()).await;
            text(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                METRICS.encode(bytes),
            )
        }
        "/health" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/ready" => match state.phase() {
            Phase::Ready => text(StatusCode::OK, PLAIN, "ready\n".into()),
            Phase::Recovering => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                "recovering\n".into(),
            ),
            Phase::Stopping => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "stopping\n".into()),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /metrics, /health or /ready\n".into(),
        ),
    })
}
