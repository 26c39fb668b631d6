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
    let v: i64 = client.query_one("SELECT 41 + 1", &[]).await?.get(0);
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
