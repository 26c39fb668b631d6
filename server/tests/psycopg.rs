//! Runs the psycopg 3 driver test (`tests/psycopg/run.sh`), which installs psycopg[binary]
//! from PyPI into a virtualenv under the target directory.

use std::process::Command;

#[test]
fn psycopg_driver() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/psycopg/run.sh");
    let status = Command::new("bash")
        .arg(script)
        .env("BRAID_BIN", env!("CARGO_BIN_EXE_braid"))
        .status()
        .expect("running tests/psycopg/run.sh");
    assert!(status.success(), "psycopg driver test failed");
}
