//! The extended query flow: Parse plans the statement once (DataFusion infers parameter
//! types), Bind decodes parameters, Describe reports types, Execute runs the plan with the
//! bound values.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use braid_planner::{Engine, Error, Output, Prepared};
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, Response,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::ClientInfo;
use pgwire::api::{ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::PgWireBackendMessage;

use crate::encode::field_infos;
use crate::errors::to_pgwire;
use crate::params::{decode_params, param_pg_type};
use crate::query::{conn_state, ends_transaction, in_failed, respond, QueryHandler};

/// Parses and plans statements for the extended protocol.
pub struct BraidParser {
    engine: Engine,
}

impl BraidParser {
    pub fn new(engine: Engine) -> Self {
        BraidParser { engine }
    }
}

#[async_trait]
impl QueryParser for BraidParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let state = conn_state(&self.engine, client)?;
        state
            .session
            .prepare(sql)
            .await
            .map(Some)
            .map_err(|e| to_pgwire(&e))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .param_types()
            .iter()
            .map(|t| param_pg_type(t.as_ref()))
            .collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match stmt.result_schema() {
            Some(s) => field_infos(&s, column_format.unwrap_or(&Format::UnifiedText)),
            None => Vec::new(),
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = Prepared;
    type QueryParser = BraidParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _guard = self.inflight.enter();
        self.refuse_if_shutting_down()?;
        let state = conn_state(&self.engine, client)?;
        let status = client.transaction_status();
        let prepared = &portal.statement.statement;
        let mut timer = crate::metrics::statement(&prepared.sql);
        if in_failed(status) {
            // Whatever the block held will never commit; COMMIT now ends it as ROLLBACK.
            state.session.transaction_failed();
            if !ends_transaction(&prepared.sql) {
                return Err(to_pgwire(&Error::InFailedTransaction));
            }
        }
        let params = decode_params(portal, &prepared.param_types(), &state.session.time_zone())?;
        let unplanned = state.session.unplanned_statements();
        let executed = state.session.execute_prepared(prepared, params).await;
        crate::query::send_notices(client, &state.session).await?;
        let out = match executed {
            Ok(out) => out,
            Err(e) => {
                if ends_transaction(&prepared.sql) {
                    // A failed COMMIT has ended the block: idle, as in PostgreSQL (pgwire's
                    // error path keeps an idle status idle).
                    client.set_transaction_status(TransactionStatus::Idle);
                }
                return Err(to_pgwire(&e));
            }
        };
        if state.session.unplanned_statements() != unplanned {
            timer.unplanned();
        }
        if let Output::CopyOut {
            schema,
            stream,
            format,
        } = out
        {
            return crate::copy_out::send(
                client,
                schema,
                stream,
                &format,
                state.session.time_zone(),
            )
            .await?
            .map_err(|e| to_pgwire(&e));
        }
        respond(&state, out, &portal.result_column_format, status)
            .await
            .map_err(|e| to_pgwire(&e))
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let inferred = self.parser.get_parameter_types(&target.statement)?;
        let n = inferred.len().max(target.parameter_types.len());
        let params = (0..n)
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| inferred.get(i).cloned())
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        let fields = self.parser.get_result_schema(&target.statement, None)?;
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self.parser.get_result_schema(
            &target.statement.statement,
            Some(&target.result_column_format),
        )?;
        Ok(DescribePortalResponse::new(fields))
    }
}
