//! COPY FROM STDIN: each CopyData payload goes to the COPY's parser as it arrives (bounded in
//! total); at CopyDone the parsed rows are appended durably and the command completes with the
//! row count only after the log acknowledged them.

use std::fmt::Debug;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::copy::CopyHandler;
use pgwire::api::results::Tag;
use pgwire::api::ClientInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::response::CommandComplete;
use pgwire::messages::PgWireBackendMessage;

use crate::errors::{error_info, to_pgwire};
use crate::query::{conn_state, QueryHandler, COPY_BYTES_MAX};

#[async_trait]
impl CopyHandler for QueryHandler {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let state = conn_state(&self.engine, client)?;
        let len = copy_data.data.len();
        let sender = {
            let mut pending = state.copy.lock();
            match pending.as_mut() {
                Some(p) if p.received + len > COPY_BYTES_MAX => {
                    *pending = None;
                    return Err(PgWireError::UserError(Box::new(error_info(
                        "54000",
                        format!("COPY data exceeds {COPY_BYTES_MAX} bytes; split it into several COPY statements"),
                    ))));
                }
                Some(p) => {
                    p.received += len;
                    p.load.sender()
                }
                None => None,
            }
        };
        if let Some(tx) = sender {
            // A closed channel means the parser stopped on bad data; CopyDone reports why.
            let _ = tx.send(copy_data.data).await;
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _guard = self.inflight.enter();
        let state = conn_state(&self.engine, client)?;
        let pending = state.copy.lock().take();
        let Some(p) = pending else {
            return Err(PgWireError::UserError(Box::new(error_info(
                "08P01",
                "CopyDone without a COPY in progress",
            ))));
        };
        let rows = p.load.finish().await.map_err(|e| to_pgwire(&e))?;
        let tag = Tag::new("COPY").with_rows(rows as usize);
        futures::SinkExt::send(
            client,
            PgWireBackendMessage::CommandComplete(CommandComplete::from(tag)),
        )
        .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Ok(state) = conn_state(&self.engine, client) {
            *state.copy.lock() = None;
        }
        PgWireError::UserError(Box::new(error_info(
            "57014",
            format!("COPY from stdin failed: {}", fail.message),
        )))
    }
}
