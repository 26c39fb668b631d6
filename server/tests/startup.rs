//! Start-up behaviour of the real binary: refusing a non-loopback address without
//! authentication, SCRAM password login when users are configured, and a clean exit 0 on
//! SIGTERM.

use std::process::Command;

use anyhow::Context;
use braid_sqllogictest::free_port;

#[test]
fn refuses_non_loopback_listen_without_auth() -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--listen")
        .arg(format!("0.0.0.0:{}", free_port()?))
        .output()
        .context("running braid")?;
    assert!(!out.status.success(), "braid must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without authentication"),
        "message says why: {stderr}"
    );
    assert!(
        stderr.contains("[auth]"),
        "message says what to configure: {stderr}"
    );
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "braid-startup-{}-{}",
        std::process::id(),
        free_port()?
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

#[tokio::test]
async fn scram_password_login() -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let port = free_port()?;
    let config = dir.join("braid.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n\n[[auth.users]]\nname = \"postgres\"\npassword = \"s3cret\"\n",
            dir.join("data").display()
        ),
    )?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("--config")
        .arg(&config)
        .env("BRAID_HTTP_LISTEN", "127.0.0.1:0")
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting braid")?;
    let good = format!("host=127.0.0.1 port={port} user=postgres password=s3cret dbname=postgres");
    let bad = format!("host=127.0.0.1 port={port} user=postgres password=wrong dbname=postgres");
    let mut connected = None;
    for _ in 0..200 {
        match tokio_postgres::connect(&good, tokio_postgres::NoTls).await {
            Ok(c) => {
                connected = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let (client, conn) = connected.context("connecting with the right password")?;
    tokio::spawn(conn);
    let v: i32 = client.query_one("SELECT 41 + 1", &[]).await?.get(0);
    assert_eq!(v, 42);
    let err = tokio_postgres::connect(&bad, tokio_postgres::NoTls)
        .await
        .err()
        .context("a wrong password is refused")?;
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"), "{err}");
    drop(client);
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()?;
    assert!(status.success());
    let exit = child.wait()?;
    assert!(exit.success(), "braid exits 0 on SIGTERM, got {exit}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A frontend message: type byte, length (counting itself), body.
fn frontend(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Reads until `buf` ends with a whole ReadyForQuery message; returns how many reads it took.
fn read_until_ready(sock: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    use std::io::Read;
    let mut reads = 0;
    loop {
        // Whole messages only: ReadyForQuery ('Z', length 5, status) closes a round.
        let mut at = 0;
        let mut ready = false;
        while let Some(head) = buf.get(at..at + 5) {
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if buf.len() < at + 1 + len {
                break;
            }
            ready = head[0] == b'Z';
            at += 1 + len;
        }
        if ready && at == buf.len() {
            return Ok(reads);
        }
        let mut chunk = [0u8; 65536];
        let n = sock.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        reads += 1;
    }
}

/// A braid on a fresh data directory and a free port, with one raw connection that has
/// finished the startup handshake; stopped and removed when dropped.
struct RawSession {
    child: std::process::Child,
    dir: std::path::PathBuf,
    sock: std::net::TcpStream,
    /// Replies read by the last [`RawSession::round`].
    buf: Vec<u8>,
}

impl RawSession {
    fn start() -> anyhow::Result<RawSession> {
        use std::io::Write;
        let dir = tempfile_dir()?;
        let port = free_port()?;
        let child = Command::new(env!("CARGO_BIN_EXE_braid"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("BRAID_HTTP_LISTEN", "127.0.0.1:0")
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting braid")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let sock = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break Ok(s),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(e) => break Err(e),
            }
        };
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e).context("connecting");
            }
        };
        // From here an error drops `session`, which stops the server.
        let mut session = RawSession {
            child,
            dir,
            sock,
            buf: Vec::new(),
        };
        session.sock.set_nodelay(true)?;
        session
            .sock
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        let mut startup = 196608u32.to_be_bytes().to_vec();
        for kv in ["user", "postgres", "database", "postgres"] {
            startup.extend_from_slice(kv.as_bytes());
            startup.push(0);
        }
        startup.push(0);
        let mut msg = (startup.len() as u32 + 4).to_be_bytes().to_vec();
        msg.extend_from_slice(&startup);
        session.sock.write_all(&msg)?;
        session.buf.clear();
        read_until_ready(&mut session.sock, &mut session.buf)?;
        Ok(session)
    }

    /// Sends `messages` and reads the replies up to ReadyForQuery into `buf`; returns how
    /// many reads that took.
    fn round(&mut self, messages: &[u8]) -> anyhow::Result<usize> {
        use std::io::Write;
        self.sock.write_all(messages)?;
        self.buf.clear();
        read_until_ready(&mut self.sock, &mut self.buf)
    }

    /// The type bytes of the replies in `buf`, in order.
    fn kinds(&self) -> Vec<u8> {
        let mut at = 0;
        let mut k = Vec::new();
        while let Some(head) = self.buf.get(at..at + 5) {
            k.push(head[0]);
            at += 1 + u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        }
        k
    }
}

impl Drop for RawSession {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = self.sock.write_all(&frontend(b'X', &[]));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The replies to one extended-protocol round (Bind, Execute, Sync) leave the server in one
/// write, as PostgreSQL sends them: the client reads them all at once. A server that flushed
/// each reply separately is caught by the first read of some round holding only part of them.
#[test]
fn replies_to_a_round_arrive_together() -> anyhow::Result<()> {
    let mut s = RawSession::start()?;
    // A named statement with one parameter, returning one row.
    let mut parse = b"s1\0SELECT $1::int + 1\0".to_vec();
    parse.extend_from_slice(&0u16.to_be_bytes());
    let mut round = frontend(b'P', &parse);
    round.extend(frontend(b'S', &[]));
    s.round(&round)?;
    anyhow::ensure!(
        s.buf.first() == Some(&b'1'),
        "ParseComplete first: {:?}",
        s.buf
    );
    for i in 0..50u32 {
        let value = i.to_string();
        let mut bind = b"\0s1\0".to_vec();
        bind.extend_from_slice(&0u16.to_be_bytes()); // parameter formats: all text
        bind.extend_from_slice(&1u16.to_be_bytes());
        bind.extend_from_slice(&(value.len() as u32).to_be_bytes());
        bind.extend_from_slice(value.as_bytes());
        bind.extend_from_slice(&0u16.to_be_bytes()); // result formats: all text
        let mut round = frontend(b'B', &bind);
        round.extend(frontend(b'E', b"\0\0\0\0\0"));
        round.extend(frontend(b'S', &[]));
        let reads = s.round(&round)?;
        // BindComplete, DataRow, CommandComplete, ReadyForQuery.
        let kinds = s.kinds();
        anyhow::ensure!(kinds == b"2DCZ", "round {i}: replies {:?}", kinds);
        let expected = (i + 1).to_string();
        anyhow::ensure!(
            s.buf
                .windows(expected.len())
                .any(|w| w == expected.as_bytes()),
            "round {i}: the row holds {expected}"
        );
        anyhow::ensure!(reads == 1, "round {i}: replies came in {reads} reads");
    }
    Ok(())
}

/// A binary interval parameter of the wrong length is 22P03, as in PostgreSQL (`incorrect
/// binary data format in bind parameter 1`), not a dropped connection; the same connection then
/// binds a well-formed one. Sent as raw messages: a driver would not send malformed bytes.
#[test]
fn malformed_binary_interval_parameter_is_an_error() -> anyhow::Result<()> {
    let mut s = RawSession::start()?;
    // $1 typed interval (OID 1186) by the Parse message itself.
    let mut parse = b"s1\0SELECT $1::text\0".to_vec();
    parse.extend_from_slice(&1u16.to_be_bytes());
    parse.extend_from_slice(&1186u32.to_be_bytes());
    let bind = |value: &[u8]| {
        let mut b = b"\0s1\0".to_vec();
        b.extend_from_slice(&1u16.to_be_bytes()); // one parameter format: binary
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes()); // one parameter
        b.extend_from_slice(&(value.len() as u32).to_be_bytes());
        b.extend_from_slice(value);
        b.extend_from_slice(&0u16.to_be_bytes()); // results: text
        let mut round = frontend(b'B', &b);
        round.extend(frontend(b'E', b"\0\0\0\0\0"));
        round.extend(frontend(b'S', &[]));
        round
    };
    let mut round = frontend(b'P', &parse);
    round.extend(frontend(b'S', &[]));
    s.round(&round)?;
    anyhow::ensure!(
        s.buf.first() == Some(&b'1'),
        "ParseComplete first: {:?}",
        s.buf
    );
    s.round(&bind(&[1, 2, 3]))?;
    let text = String::from_utf8_lossy(&s.buf).into_owned();
    let kinds = s.kinds();
    // braid reads parameters at Execute, so BindComplete may come before the error.
    anyhow::ensure!(
        kinds.contains(&b'E') && !kinds.contains(&b'D'),
        "an ErrorResponse and no row: {text}"
    );
    anyhow::ensure!(text.contains("22P03"), "SQLSTATE 22P03: {text}");
    anyhow::ensure!(
        text.contains("incorrect binary data format in bind parameter 1"),
        "PostgreSQL's message: {text}"
    );
    // 1 day and 2 hours: microseconds, days, months, big-endian.
    let mut good = 7_200_000_000i64.to_be_bytes().to_vec();
    good.extend_from_slice(&1i32.to_be_bytes());
    good.extend_from_slice(&0i32.to_be_bytes());
    s.round(&bind(&good))?;
    let text = String::from_utf8_lossy(&s.buf);
    anyhow::ensure!(
        text.contains("1 day 02:00:00"),
        "the interval's text: {text}"
    );
    Ok(())
}
