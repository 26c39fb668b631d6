//! Everything braid says to or takes from systemd: sockets inherited through socket activation
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`) and state notifications over `NOTIFY_SOCKET`
//! (`READY=1`, `STATUS=`, `EXTEND_TIMEOUT_USEC=`, `WATCHDOG=1`, `RELOADING=1`, `STOPPING=1`).
//!
//! What must stay true:
//! - inherited descriptors are taken exactly once, before any other thread exists, and the
//!   `LISTEN_*` variables are removed right after, so nothing else can adopt them twice;
//! - without `NOTIFY_SOCKET` every notification is a no-op, so the same binary runs anywhere;
//! - a failed notification is logged at debug level and never stops the server: systemd
//!   notices a missing `READY=1` or `WATCHDOG=1` on its own.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::time::Duration;

use anyhow::{bail, Context};
use sd_notify::NotifyState;

/// The name (`FileDescriptorName=`) of the inherited PostgreSQL socket.
pub const FD_NAME_PG: &str = "pg";
/// The name of the inherited HTTP socket.
pub const FD_NAME_HTTP: &str = "http";

/// Listening sockets handed over by systemd.
#[derive(Debug, Default)]
pub struct Inherited {
    pub pg: Option<TcpListener>,
    pub http: Option<TcpListener>,
}

/// Takes the sockets systemd passed to this process, if any, and clears the `LISTEN_*`
/// variables. Must run before the async runtime starts any thread.
///
/// Sockets are told apart by `LISTEN_FDNAMES`: `pg` and `http`. A single socket whose name is
/// neither (no `FileDescriptorName=`, so systemd calls it `unknown`) is the PostgreSQL one.
pub fn take_inherited_sockets() -> anyhow::Result<Inherited> {
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .context("reading LISTEN_FDS and LISTEN_FDNAMES")?
        .collect();
    // Changing the environment is only sound while no other thread exists: this runs first
    // thing in `main`, before the runtime starts.
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let mut inherited = Inherited::default();
    let single = fds.len() == 1;
    for (fd, name) in fds {
        let listener = adopt_listener(fd, &name)?;
        let slot = match name.as_str() {
            FD_NAME_PG => &mut inherited.pg,
            FD_NAME_HTTP => &mut inherited.http,
            _ if single => &mut inherited.pg,
            other => bail!(
                "systemd passed a socket named {other:?}; name the sockets with \
                 FileDescriptorName={FD_NAME_PG} and FileDescriptorName={FD_NAME_HTTP}"
            ),
        };
        if slot.is_some() {
            bail!("systemd passed two sockets named {name:?}");
        }
        *slot = Some(listener);
    }
    Ok(inherited)
}

fn adopt_listener(fd: RawFd, name: &str) -> anyhow::Result<TcpListener> {
    // SAFETY: `listen_fds_with_names` returned `fd` because LISTEN_PID names this process and
    // the fd lies in the range systemd passed (3..3+LISTEN_FDS); nothing else in the process
    // owns it, and the variables were cleared above so it is adopted only once.
    #[allow(unsafe_code)]
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    // A datagram or Unix socket would fail here; say which unit setting is wrong.
    let addr = listener.local_addr().with_context(|| {
        format!("socket {name:?} (fd {fd}) from systemd is not a TCP socket: use ListenStream=")
    })?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("making the inherited socket {addr} non-blocking"))?;
    Ok(listener)
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// `READY=1` with a status line: recovery finished and the sockets accept.
pub fn notify_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A `STATUS=` line shown by `systemctl status`.
pub fn notify_status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Asks systemd for `by` more time before the start (or stop) timeout fires.
pub fn notify_extend_timeout(by: Duration) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

/// One watchdog ping.
pub fn notify_watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// `STOPPING=1`: shutdown began.
pub fn notify_stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// `RELOADING=1` with the monotonic time systemd 253+ requires to match it to the request.
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The watchdog interval systemd expects (`WATCHDOG_USEC`, if `WATCHDOG_PID` is unset or us).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}
