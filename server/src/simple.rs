//! The simple query flow: one Query message, possibly several statements, each answered in
//! turn; the first error ends the string (and, inside a block, aborts the transaction).

use std::fmt::Debug;

use async_trait::async_trait;
use braid_planner::{Error, Output, Session};
use futures::Sink;
use pgwire::api::portal::Format;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::Response;
use pgwire::api::store::PortalStore;
use pgwire::api::ClientInfo;
use pgwire::api::ClientPortalStore;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::PgWireBackendMessage;

use crate::errors::to_pg;
use crate::query::{
    braid_planner_words, conn_state, ends_transaction, in_failed, respond, send_notices,
    QueryHandler,
};

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _guard = self.inflight.enter();
        self.refuse_if_shutting_down()?;
        let state = conn_state(&self.engine, client)?;
        let mut status = client.transaction_status();
        let mut responses = Vec::new();
        for sql in Session::split(query) {
            if in_failed(status) {
                // Whatever the block held will never commit; COMMIT now ends it as ROLLBACK.
                state.session.transaction_failed();
                if !ends_transaction(&sql) {
                    responses.push(Response::Error(Box::new(to_pg(
                        &Error::InFailedTransaction,
                    ))));
                    break;
                }
            }
            let mut timer = crate::metrics::statement(&sql);
            if braid_planner_words(&sql) == "DEALLOCATE" {
                // Protocol-level prepared statements live in pgwire's store, not the planner.
                let name = sql
                    .split_whitespace()
                    .last()
                    .unwrap_or("")
                    .trim_matches('"');
                if !name.eq_ignore_ascii_case("all") {
                    client.portal_store().rm_statement(name);
                }
            }
            let unplanned = state.session.unplanned_statements();
            let executed = state.session.execute(&sql).await;
            send_notices(client, &state.session).await?;
            if state.session.unplanned_statements() != unplanned {
                timer.unplanned();
            }
            let result = match executed {
                Ok(Output::CopyOut {
                    schema,
                    stream,
                    format,
                }) => {
                    crate::copy_out::send(
                        client,
                        schema,
                        stream,
                        &format,
                        state.session.time_zone(),
                    )
                    .await?
                }
                Ok(out) => respond(&state, out, &Format::UnifiedText, status).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(resp) => {
                    status = match &resp {
                        Response::TransactionStart(_) => TransactionStatus::Transaction,
                        Response::TransactionEnd(_) => TransactionStatus::Idle,
                        _ => status,
                    };
                    let copy = matches!(resp, Response::CopyIn(_));
                    responses.push(resp);
                    if copy {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "statement failed");
                    if ends_transaction(&sql) && responses.is_empty() {
                        // A failed COMMIT has ended the block (it rolled back), so the client
                        // must see the connection idle, as after PostgreSQL's failed COMMIT —
                        // not "in a failed block". pgwire would derive that from the status it
                        // had before this query; an error returned instead is sent with the
                        // status set here.
                        client.set_transaction_status(TransactionStatus::Idle);
                        return Err(crate::errors::to_pgwire(&e));
                    }
                    responses.push(Response::Error(Box::new(to_pg(&e))));
                    break;
                }
            }
        }
        if responses.is_empty() {
            responses.push(Response::EmptyQuery);
        }
        Ok(responses)
    }
}
