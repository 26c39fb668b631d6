//! Runs the psycopg 3 driver test (`tests/psycopg/run.sh`), which installs psycopg[binary]
//! from PyPI into a virtualenv under the target directory.

use std::process::Command;

#[test]
fn psycopg_driver() {
    let script = manifest_dir().join("tests/psycopg/run.sh");
    let status = Command::new("bash")
        .arg(script)
        .env("BRAID_BIN", env!("CARGO_BIN_EXE_braid"))
        .status()
        .expect("running tests/psycopg/run.sh");
    assert!(status.success(), "psycopg driver test failed");
}

/// This package's directory. Cargo sets `CARGO_MANIFEST_DIR` when it runs a test; the value
/// compiled in may name another checkout that shares the target directory (cargo reuses a
/// test binary across checkouts of the same workspace).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
