//! Startup and authentication. Without configured users every connection is trusted (the
//! server refuses to start on a non-loopback address in that case, see `config`); with users it
//! is SCRAM-SHA-256. Either way the connection is registered for CancelRequest and its session
//! opened on the database it asked for.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use braid_planner::Engine;
use futures::Sink;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata, AuthSource,
    DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::{
    ClientInfo, ConnectionHandle, ConnectionManager, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, METADATA_DATABASE, METADATA_USER,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::config::UserConfig;

/// SCRAM iterations for stored password verifiers.
const SCRAM_ITERATIONS: usize = 4096;

/// Parameters reported to every client after login.
pub fn server_parameters() -> DefaultServerParameterProvider {
    let mut p = DefaultServerParameterProvider::default();
    // Drivers parse the major version to pick features; report the PostgreSQL release whose
    // behaviour braid follows.
    p.server_version = "15.0".to_string();
    p.time_zone = "UTC".to_string();
    p.search_path = "\"$user\", public".to_string();
    p
}

#[derive(Debug)]
struct ConfigUsers {
    users: HashMap<String, String>,
}

#[async_trait]
impl AuthSource for ConfigUsers {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        let Some(password) = self.users.get(user) else {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28P01".into(),
                format!("password authentication failed for user \"{user}\""),
            ))));
        };
        let salt: Vec<u8> = rand_salt();
        let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        Ok(Password::new(Some(salt), salted))
    }
}

fn rand_salt() -> Vec<u8> {
    // The salt only needs to be unpredictable per login; the nanosecond clock mixed with the
    // address of a stack value is enough for that and avoids another dependency.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let x = &nanos as *const u128 as usize as u128;
    (nanos ^ (x << 17)).to_le_bytes().to_vec()
}

/// The startup handler: trust or SCRAM.
pub struct BraidStartup {
    engine: Engine,
    manager: Arc<ConnectionManager>,
    keys: RandomPidSecretKeyGenerator,
    params: DefaultServerParameterProvider,
    scram: Option<SASLAuthStartupHandler<DefaultServerParameterProvider>>,
}

impl BraidStartup {
    pub fn new(engine: Engine, manager: Arc<ConnectionManager>, users: &[UserConfig]) -> Self {
        let scram = (!users.is_empty()).then(|| {
            let source = ConfigUsers {
                users: users
                    .iter()
                    .map(|u| (u.name.clone(), u.password.clone()))
                    .collect(),
            };
            let mut scram = ScramAuth::new(Arc::new(source));
            scram.set_iterations(SCRAM_ITERATIONS);
            SASLAuthStartupHandler::new(Arc::new(server_parameters()))
                .with_scram(scram)
                .with_connection_manager(manager.clone())
        });
        BraidStartup {
            engine,
            manager,
            keys: RandomPidSecretKeyGenerator::default(),
            params: server_parameters(),
            scram,
        }
    }
}

#[async_trait]
impl StartupHandler for BraidStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(scram) = &self.scram {
            scram.on_startup(client, message).await?;
            if matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
                attach_session(&self.engine, client)?;
            }
            return Ok(());
        }
        if let PgWireFrontendMessage::Startup(ref startup) = message {
            protocol_negotiation(client, startup).await?;
            save_startup_parameters_to_metadata(client, startup);
            let (_, db) = user_and_database(client);
            if !self.engine.database_exists(&db) {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "FATAL".into(),
                    "3D000".into(),
                    format!("database \"{db}\" does not exist"),
                ))));
            }
            let (pid, secret) = self.keys.generate(client);
            client.set_pid_and_secret_key(pid, secret.clone());
            let (handle, guard) = self.manager.register(pid, secret);
            client
                .session_extensions()
                .insert::<Arc<ConnectionHandle>>(handle);
            client.session_extensions().insert(guard);
            attach_session(&self.engine, client)?;
            finish_authentication(client, &self.params).await?;
        }
        Ok(())
    }
}

/// Opens the connection's session as the client logs in, not at its first query: from then
/// on it counts as a user of its database (DROP DATABASE refuses a database in use), as a
/// PostgreSQL backend does from connection on. A database dropped since the startup check is
/// a FATAL 3D000.
fn attach_session<C: ClientInfo>(engine: &Engine, client: &C) -> PgWireResult<()> {
    crate::query::conn_state(engine, client).map_err(|e| match e {
        PgWireError::UserError(mut info) => {
            info.severity = "FATAL".into();
            PgWireError::UserError(info)
        }
        other => other,
    })?;
    Ok(())
}

/// The user and database a client asked for at startup; the database defaults to the user name,
/// as in PostgreSQL.
pub(crate) fn user_and_database<C: ClientInfo + ?Sized>(client: &C) -> (String, String) {
    let user = client
        .metadata()
        .get(METADATA_USER)
        .cloned()
        .unwrap_or_default();
    let db = client
        .metadata()
        .get(METADATA_DATABASE)
        .cloned()
        .unwrap_or_else(|| user.clone());
    (user, db)
}
