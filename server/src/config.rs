//! Settings: embedded defaults, then a TOML file (`--config`), then `BRAID_*` environment
//! variables and command-line flags (clap handles the last two; they win).
//!
//! SIGHUP reloads the file (see `reload`): [`Config::live`] is the part that changes without a
//! restart, and [`Config::restart_only_changes`] names what does not.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;

/// braid: a PostgreSQL-compatible server for streams, tables, documents and time series.
#[derive(Debug, Clone, Parser)]
#[command(name = "braid", version, about)]
pub struct Args {
    /// Directory holding the catalog and all data (created if missing).
    #[arg(long, env = "BRAID_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to accept PostgreSQL connections on.
    #[arg(long, env = "BRAID_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// TOML configuration file; flags and BRAID_* variables override its values.
    #[arg(long, env = "BRAID_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax, e.g. `info` or `braid=debug`); RUST_LOG wins.
    #[arg(long, env = "BRAID_LOG")]
    pub log: Option<String>,
    /// Seconds running statements get to finish after SIGTERM/SIGINT before the server exits.
    #[arg(long, env = "BRAID_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Log durability: `sync` (fdatasync before acknowledging, the default), `group:<us>`
    /// (wait up to <us> microseconds to batch more writes into one fdatasync) or `none`
    /// (UNSAFE: acknowledged writes can be lost on power failure).
    #[arg(long, env = "BRAID_DURABILITY")]
    pub durability: Option<String>,
    /// Address of the HTTP endpoints `/metrics`, `/health` and `/ready` (port 0 = any free port).
    #[arg(long, env = "BRAID_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Most client connections at once; one more gets SQLSTATE 53300.
    #[arg(long, env = "BRAID_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a client may take to finish the startup handshake, or stay silent in the middle
    /// of a message, before it is disconnected.
    #[arg(long, env = "BRAID_CLIENT_STALL_TIMEOUT_SECS")]
    pub client_stall_timeout_secs: Option<u64>,
}

/// One password user (SCRAM-SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserConfig {
    pub name: String,
    pub password: String,
}

/// The `[auth]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AuthConfig {
    /// Users allowed to log in with a password. When empty, loopback connections are trusted.
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub log: Option<String>,
    pub drain_timeout_secs: Option<u64>,
    pub durability: Option<String>,
    pub http_listen: Option<SocketAddr>,
    pub max_connections: Option<usize>,
    pub client_stall_timeout_secs: Option<u64>,
    #[serde(default)]
    pub auth: AuthConfig,
}

/// Effective settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub log: String,
    pub drain_timeout_secs: u64,
    pub durability: Durability,
    pub http_listen: SocketAddr,
    pub max_connections: usize,
    pub client_stall_timeout_secs: u64,
    pub auth: AuthConfig,
}

/// The settings a reload applies to a running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConfig {
    pub log: String,
    pub max_connections: usize,
    pub client_stall_timeout_secs: u64,
    pub drain_timeout_secs: u64,
}

/// Default address of the HTTP endpoints (the port of postgres_exporter, which braid replaces).
pub const DEFAULT_HTTP_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9187);

/// When the log acknowledges a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Sync,
    Group { max_wait_us: u64 },
    None,
}

fn parse_durability(s: &str) -> anyhow::Result<Durability> {
    let s = s.trim().to_ascii_lowercase();
    Ok(match s.as_str() {
        "sync" => Durability::Sync,
        "none" => Durability::None,
        _ => match s
            .strip_prefix("group:")
            .or_else(|| s.strip_prefix("group("))
        {
            Some(rest) => {
                let us: u64 = rest
                    .trim_end_matches(')')
                    .trim_end_matches("us")
                    .parse()
                    .with_context(|| {
                        format!("reading the group commit wait in durability = '{s}'")
                    })?;
                Durability::Group { max_wait_us: us }
            }
            None => bail!("durability must be 'sync', 'group:<microseconds>' or 'none', got '{s}'"),
        },
    })
}

impl Config {
    /// Merges defaults, the config file and the command line / environment.
    pub fn load(args: Args) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let durability = match args.durability.or(file.durability) {
            Some(d) => parse_durability(&d)?,
            None => Durability::Sync,
        };
        let default_listen: SocketAddr = ([127, 0, 0, 1], 5432).into();
        Ok(Config {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./braid-data")),
            listen: args.listen.or(file.listen).unwrap_or(default_listen),
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            drain_timeout_secs: args
                .drain_timeout_secs
                .or(file.drain_timeout_secs)
                .unwrap_or(30),
            durability,
            http_listen: args
                .http_listen
                .or(file.http_listen)
                .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.into()),
            max_connections: args.max_connections.or(file.max_connections).unwrap_or(100),
            client_stall_timeout_secs: args
                .client_stall_timeout_secs
                .or(file.client_stall_timeout_secs)
                .unwrap_or(30),
            auth: file.auth,
        })
    }

    /// The settings a SIGHUP applies without a restart.
    pub fn live(&self) -> LiveConfig {
        LiveConfig {
            log: self.log.clone(),
            max_connections: self.max_connections,
            client_stall_timeout_secs: self.client_stall_timeout_secs,
            drain_timeout_secs: self.drain_timeout_secs,
        }
    }

    /// Names of the settings that differ in `new` but only take effect after a restart.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.data_dir != new.data_dir {
            changed.push("data_dir");
        }
        if self.listen != new.listen {
            changed.push("listen");
        }
        if self.http_listen != new.http_listen {
            changed.push("http_listen");
        }
        if self.durability != new.durability {
            changed.push("durability");
        }
        if self.auth != new.auth {
            changed.push("auth");
        }
        changed
    }

    /// Refuses settings that would expose the server without authentication.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        if self.client_stall_timeout_secs == 0 {
            bail!("client_stall_timeout_secs must be at least 1");
        }
        self.check_listen(self.listen)
    }

    /// Refuses to serve `addr` (configured or inherited from systemd) without authentication
    /// unless it is a loopback address.
    pub fn check_listen(&self, addr: SocketAddr) -> anyhow::Result<()> {
        if !addr.ip().is_loopback() && self.auth.users.is_empty() {
            bail!(
                "refusing to listen on {} without authentication: add users under [auth] in the \
                 config file (e.g. [[auth.users]] name = \"postgres\" password = \"...\"), or \
                 listen on a loopback address such as 127.0.0.1",
                addr
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example shipped in `systemd/` must stay a valid configuration file.
    #[test]
    fn example_config_file_parses() -> anyhow::Result<()> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/braid.toml");
        let args = Args::parse_from(["braid", "--config", &path.display().to_string()]);
        let config = Config::load(args)?;
        config.check()?;
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/braid"));
        assert_eq!(config.http_listen, SocketAddr::from(DEFAULT_HTTP_LISTEN));
        assert_eq!(config.durability, Durability::Sync);
        Ok(())
    }

    #[test]
    fn restart_only_changes_are_named() -> anyhow::Result<()> {
        let old = Config::load(Args::parse_from(["braid"]))?;
        let mut new = old.clone();
        new.max_connections += 1;
        new.log = "debug".into();
        assert!(old.restart_only_changes(&new).is_empty());
        new.http_listen = ([127, 0, 0, 1], 1).into();
        new.durability = Durability::None;
        assert_eq!(
            old.restart_only_changes(&new),
            vec!["http_listen", "durability"]
        );
        Ok(())
    }
}
