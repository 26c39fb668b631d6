//! What the simple query, extended query and COPY flows share: the per-connection
//! [`braid_planner::Session`], the transaction-block rule, the in-flight statement count used
//! for draining, and turning a planner [`Output`] into a pgwire response. The flows themselves
//! are in `simple.rs`, `extended.rs` and `copy.rs`.
//!
//! Transaction blocks: the session keeps the block itself (held stream appends, the row-table
//! transaction); here the pgwire status is tracked and PostgreSQL's rule applied that after an
//! error inside a block every statement but ROLLBACK/COMMIT fails with 25P02, and the block's
//! writes are dropped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use braid_planner::{CopyLoad, Engine, Error, Output, Session};
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{CopyResponse, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::ClientInfo;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::PgWireBackendMessage;
use tokio::sync::Notify;

use crate::encode::{encode_batch, field_infos};
use crate::errors::{to_pg, to_pgwire};
use crate::extended::BraidParser;

/// Sends the NOTICEs the session's last statement raised, as PostgreSQL sends them: after
/// whatever the statement sent so far and before its CommandComplete (or ErrorResponse).
/// In a simple query of several statements pgwire sends the earlier statements' results only
/// when the whole string has run, so there a NOTICE arrives ahead of them.
pub(crate) async fn send_notices<C>(client: &mut C, session: &Session) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    PgWireError: From<C::Error>,
{
    for n in session.take_notices() {
        let mut info = ErrorInfo::new("NOTICE".into(), n.code.into(), n.message);
        info.detail = n.detail;
        client
            .feed(PgWireBackendMessage::NoticeResponse(info.into()))
            .await?;
    }
    Ok(())
}

/// Most COPY data one COPY statement may send (it is held, parsed, until the COPY ends, so
/// that a bad row leaves nothing appended).
pub(crate) const COPY_BYTES_MAX: usize = 1 << 30;

/// Counts running statements so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct Inflight {
    running: AtomicUsize,
    idle: Notify,
    pub shutting_down: AtomicBool,
}

impl Inflight {
    pub(crate) fn enter(self: &Arc<Self>) -> InflightGuard {
        self.running.fetch_add(1, Ordering::SeqCst);
        InflightGuard(self.clone())
    }

    /// Resolves once no statement is running.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub(crate) struct InflightGuard(Arc<Inflight>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Per-connection state, kept in pgwire's session extensions.
pub struct ConnState {
    pub(crate) session: Session,
    pub(crate) copy: parking_lot::Mutex<Option<PendingCopy>>,
}

pub(crate) struct PendingCopy {
    pub(crate) load: CopyLoad,
    /// Bytes received so far, against [`COPY_BYTES_MAX`].
    pub(crate) received: usize,
}

pub(crate) fn conn_state<C: ClientInfo>(
    engine: &Engine,
    client: &C,
) -> PgWireResult<Arc<ConnState>> {
    if let Some(s) = client.session_extensions().get::<ConnState>() {
        return Ok(s);
    }
    let (user, db) = crate::startup::user_and_database(client);
    let session = engine
        .session(&db, &user, client.pid_and_secret_key().0)
        .map_err(|e| to_pgwire(&e))?;
    Ok(client
        .session_extensions()
        .get_or_insert_with(|| ConnState {
            session,
            copy: parking_lot::Mutex::new(None),
        }))
}

/// The query handler shared by all connections.
pub struct QueryHandler {
    pub(crate) engine: Engine,
    pub(crate) parser: Arc<BraidParser>,
    pub inflight: Arc<Inflight>,
}

impl QueryHandler {
    pub fn new(engine: Engine) -> Self {
        QueryHandler {
            parser: Arc::new(BraidParser::new(engine.clone())),
            engine,
            inflight: Arc::new(Inflight::default()),
        }
    }

    pub(crate) fn refuse_if_shutting_down(&self) -> PgWireResult<()> {
        if self.inflight.shutting_down.load(Ordering::SeqCst) {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "57P01".into(),
                "terminating connection due to administrator command".into(),
            ))));
        }
        Ok(())
    }
}

/// True for statements allowed in a failed transaction block.
pub(crate) fn ends_transaction(sql: &str) -> bool {
    let w = braid_planner_words(sql);
    matches!(w.as_str(), "ROLLBACK" | "ABORT" | "COMMIT" | "END")
}

pub(crate) fn braid_planner_words(sql: &str) -> String {
    let t = sql.trim_start();
    t.split(|c: char| !c.is_alphanumeric())
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .to_ascii_uppercase()
}

pub(crate) fn in_failed(status: TransactionStatus) -> bool {
    matches!(status, TransactionStatus::Error)
}

/// Turns a planner output into a pgwire response.
pub(crate) async fn respond(
    state: &ConnState,
    output: Output,
    format: &Format,
    status: TransactionStatus,
) -> Result<Response, Error> {
    match output {
        Output::Rows {
            schema,
            mut stream,
            tag,
        } => {
            let fields: Arc<Vec<FieldInfo>> = Arc::new(field_infos(&schema, format));
            // Fetch the first batch before answering, so most execution errors arrive as a
            // plain ErrorResponse rather than after the row description.
            let first = match stream.next().await {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => return Err(Error::DataFusion(e)),
                None => None,
            };
            let f2 = fields.clone();
            let tz = state.session.time_zone();
            let head = futures::stream::iter(first.into_iter().map(Ok));
            let rows = head
                .chain(stream)
                .map(move |batch| match batch {
                    Ok(b) => match encode_batch(&b, &f2, tz) {
                        Ok(rows) => futures::stream::iter(rows.into_iter().map(Ok)).boxed(),
                        Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                    },
                    Err(e) => {
                        let info = to_pg(&Error::DataFusion(e));
                        futures::stream::once(
                            async move { Err(PgWireError::UserError(Box::new(info))) },
                        )
                        .boxed()
                    }
                })
                .flatten();
            let mut resp = QueryResponse::new(fields, rows);
            resp.set_command_tag(tag);
            Ok(Response::Query(resp))
        }
        Output::Command { tag, rows } => Ok(match tag.as_str() {
            "BEGIN" => Response::TransactionStart(Tag::new("BEGIN")),
            "COMMIT" if in_failed(status) => Response::TransactionEnd(Tag::new("ROLLBACK")),
            "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(&tag)),
            "INSERT" => Response::Execution(
                Tag::new("INSERT")
                    .with_oid(0)
                    .with_rows(rows.unwrap_or(0) as usize),
            ),
            "" => Response::EmptyQuery,
            _ => match rows {
                Some(n) => Response::Execution(Tag::new(&tag).with_rows(n as usize)),
                None => Response::Execution(Tag::new(&tag)),
            },
        }),
        // The connection sends COPY TO's data itself (see `copy_out`); never reaches here.
        Output::CopyOut { .. } => Err(Error::Unsupported(
            "COPY TO STDOUT is not available here".into(),
        )),
        Output::CopyIn(copy) => {
            let columns = copy.column_count();
            *state.copy.lock() = Some(PendingCopy {
                load: copy.start(),
                received: 0,
            });
            Ok(Response::CopyIn(CopyResponse::new(
                0,
                columns,
                futures::stream::empty(),
            )))
        }
    }
}
