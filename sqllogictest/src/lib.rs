//! Test support: start the real `braid` binary on a temporary data directory and a free port,
//! connect to it with tokio-postgres, restart it gracefully or SIGKILL it, and check its log
//! for unexpected ERROR/WARN lines. Used by the sqllogictest runner (`tests/sqllogictests.rs`)
//! and by the driver tests in `server/tests/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a starting server gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping server gets to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the `braid` binary: `$BRAID_BIN`, else `target/<profile>/braid` beside the test
/// executable, built with cargo only if it is missing. (Building it from inside a test would
/// resolve features differently from the outer `cargo test --workspace` and rebuild DataFusion,
/// so an existing binary is trusted: run `cargo build -p braid-server` or test with
/// `--workspace` after changing the server.)
pub fn braid_binary() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    if let Ok(p) = std::env::var("BRAID_BIN") {
        return Ok(PathBuf::from(p));
    }
    BUILT
        .get_or_init(|| build_braid().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn build_braid() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the test executable")?;
    // target/<profile>/deps/<test> -> target/<profile>/braid
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("locating the target directory")?;
    if profile_dir.join("braid").exists() {
        return Ok(profile_dir.join("braid"));
    }
    let target_dir = profile_dir
        .parent()
        .context("locating the target directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-q",
        "-p",
        "braid-server",
        "--bin",
        "braid",
        "--target-dir",
    ])
    .arg(target_dir)
    // Any package directory of the workspace will do; the one cargo gives the running test
    // is this checkout's, where the compiled-in one may be another's sharing the target dir.
    .current_dir(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    );
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().context("building the braid binary")?;
    if !status.success() {
        bail!("cargo build -p braid-server failed");
    }
    let candidate = profile_dir.join("braid");
    if !candidate.exists() {
        bail!(
            "braid binary not found at {}; set BRAID_BIN",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// Connects with `conn_str`; the connection task runs in the background. A server's refusal
/// (a missing database, say) stays a `tokio_postgres::Error` under the context, so callers can
/// read its SQLSTATE.
async fn connect_with(conn_str: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
        .await
        .context("connecting to the server")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A free TCP port on 127.0.0.1 (bound and released; a small race is accepted).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(l.local_addr()?.port())
}

/// A running `braid` process.
#[derive(Debug)]
pub struct BraidServer {
    binary: PathBuf,
    pub data_dir: PathBuf,
    pub port: u16,
    log_path: PathBuf,
    child: Option<Child>,
    /// Keeps the temporary directory alive (removed on drop).
    _temp: Option<tempfile::TempDir>,
    starts: u32,
}

impl BraidServer {
    /// Starts a server on a fresh temporary data directory.
    pub async fn start() -> anyhow::Result<BraidServer> {
        Self::start_binary(braid_binary()?).await
    }

    /// Starts `binary` (e.g. `env!("CARGO_BIN_EXE_braid")`) on a fresh temporary data directory.
    pub async fn start_binary(binary: impl Into<PathBuf>) -> anyhow::Result<BraidServer> {
        let temp = tempfile::Builder::new()
            .prefix("braid-test-")
            .tempdir()
            .context("creating a temporary data directory")?;
        let data_dir = temp.path().join("data");
        let mut s = BraidServer {
            binary: binary.into(),
            log_path: temp.path().join("braid.log"),
            data_dir,
            port: free_port()?,
            child: None,
            _temp: Some(temp),
            starts: 0,
        };
        s.spawn().await?;
        Ok(s)
    }

    /// The connection string for tokio-postgres.
    pub fn conn_str(&self) -> String {
        self.conn_str_to("postgres")
    }

    /// The connection string for tokio-postgres to database `db`.
    pub fn conn_str_to(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname='{}' connect_timeout=10",
            self.port,
            db.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .context("opening the server log")?;
        let child = Command::new(&self.binary)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .env("BRAID_HTTP_LISTEN", "127.0.0.1:0")
            .env(
                "RUST_LOG",
                std::env::var("BRAID_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!(
                        "braid exited during start-up with {status}; log:\n{}",
                        self.log()
                    );
                }
            }
            if let Ok((client, conn)) =
                tokio_postgres::connect(&self.conn_str(), tokio_postgres::NoTls).await
            {
                drop(client);
                drop(conn);
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "braid did not accept connections within {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens a connection; the connection task runs in the background.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.connect_to("postgres").await
    }

    /// Opens a connection to database `db`.
    pub async fn connect_to(&self, db: &str) -> anyhow::Result<tokio_postgres::Client> {
        connect_with(&self.conn_str_to(db)).await
    }

    /// SIGTERM and wait for a clean exit (status 0).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .context("sending SIGTERM")?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!(
                        "braid exited with {status} after SIGTERM; log:\n{}",
                        self.log()
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("braid did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL (no chance to flush anything) and reap.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("sending SIGKILL")?;
            child.wait().context("reaping the killed server")?;
        }
        Ok(())
    }

    /// Graceful stop, then start on the same data directory and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    /// SIGKILL, then start on the same data directory and port.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn().await
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// ERROR and WARN lines in the log (tracing's level column).
    pub fn unexpected_log_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for BraidServer {
    fn drop(&mut self) {
        // For debugging a test: BRAID_TEST_PRINT_LOG=1 shows the server log on stderr.
        if std::env::var("BRAID_TEST_PRINT_LOG").is_ok_and(|v| v == "1") {
            eprintln!(
                "--- braid log ({})\n{}",
                self.data_dir.display(),
                self.log()
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where PostgreSQL's programs are: `$BRAID_PG_BIN`, else PostgreSQL 15's Debian location.
pub fn postgres_bin_dir() -> PathBuf {
    std::env::var_os("BRAID_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// A temporary PostgreSQL cluster (the reference the SQL tests are checked against): `initdb`
/// into a temporary directory, started with `pg_ctl` on a free port on 127.0.0.1, trust
/// authentication, `fsync=off` (nothing here needs durability across a machine crash).
///
/// PostgreSQL refuses to run as root, so when the tests run as root every program runs as the
/// user `$BRAID_PG_USER` (default `postgres`) through `runuser`.
#[derive(Debug)]
pub struct PostgresServer {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    pub port: u16,
    run_as: Option<String>,
    running: bool,
    _temp: tempfile::TempDir,
}

impl PostgresServer {
    /// Creates and starts a fresh cluster.
    pub async fn start() -> anyhow::Result<PostgresServer> {
        let temp = tempfile::Builder::new()
            .prefix("braid-pg-")
            .tempdir()
            .context("creating a temporary directory for PostgreSQL")?;
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let run_as =
            is_root.then(|| std::env::var("BRAID_PG_USER").unwrap_or_else(|_| "postgres".into()));
        if run_as.is_some() {
            // The cluster's user must be able to create its directories in here.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o777))
                .context("opening the temporary directory to the PostgreSQL user")?;
        }
        let socket_dir = temp.path().join("sock");
        let mut s = PostgresServer {
            data_dir: temp.path().join("data"),
            log_path: temp.path().join("postgres.log"),
            socket_dir,
            port: free_port()?,
            run_as,
            running: false,
            _temp: temp,
        };
        s.run("mkdir", &["-p", &s.socket_dir.display().to_string()], false)?;
        let data = s.data_dir.display().to_string();
        s.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            true,
        )?;
        s.pg_ctl_start()?;
        Ok(s)
    }

    /// Runs `program` (from [`postgres_bin_dir`] when `pg`) as the cluster's user.
    fn run(&self, program: &str, args: &[&str], pg: bool) -> anyhow::Result<()> {
        let program = if pg {
            postgres_bin_dir().join(program).display().to_string()
        } else {
            program.to_string()
        };
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", &program]);
                c
            }
            None => Command::new(&program),
        };
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?} failed with {}:\n{}{}\nlog:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(())
    }

    fn pg_ctl_start(&mut self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c timezone=UTC",
            self.port,
            self.socket_dir.display()
        );
        let data = self.data_dir.display().to_string();
        let log = self.log_path.display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
            true,
        )?;
        self.running = true;
        Ok(())
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> anyhow::Result<()> {
        if !self.running {
            return Ok(());
        }
        let data = self.data_dir.display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", mode, "-w", "stop"], true)?;
        self.running = false;
        Ok(())
    }

    /// The connection string for tokio-postgres.
    pub fn conn_str(&self) -> String {
        self.conn_str_to("postgres")
    }

    /// The connection string for tokio-postgres to database `db`.
    pub fn conn_str_to(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname='{}' connect_timeout=10",
            self.port,
            db.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }

    /// Opens a connection; the connection task runs in the background.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.connect_to("postgres").await
    }

    /// Opens a connection to database `db`.
    pub async fn connect_to(&self, db: &str) -> anyhow::Result<tokio_postgres::Client> {
        connect_with(&self.conn_str_to(db)).await
    }

    /// A clean shutdown (`pg_ctl stop -m fast`).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Clean shutdown, then start on the same data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_stop("fast")?;
        self.pg_ctl_start()
    }

    /// `pg_ctl stop -m immediate` (no checkpoint: the next start runs crash recovery, as after
    /// a SIGKILL), then start again.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_stop("immediate")?;
        self.pg_ctl_start()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop("immediate");
    }
}
