//! The OS threads partition writers run on.
//!
//! A partition's writer spends its life waiting for `fdatasync`. With a backend that waits in
//! place (the blocking one: `Fs::waits_in_place`; io_uring's writers stay async tasks) it runs
//! on a thread that exists for that ([`io::wait_on_disk_here`]), with a single-threaded tokio runtime of its
//! own, so the blocking backend makes its system calls right there instead of handing each to
//! tokio's blocking pool (two thread wake-ups per call), and no async worker ever waits on the
//! disk. This is what a database's log writer does. Timed inside the writer, the pool's two
//! wake-ups had cost about 50 µs around a 120-130 µs `pwrite` + `fdatasync`. Over the wire on
//! this machine, 8 clients of pgbench's TPC-B-like transaction went from 5.0-5.4 k to
//! 6.1-6.3 k TPS and 16 clients of single-row INSERTs into an 8-partition stream from about
//! 21 k to 30-33 k rows/s; a lone appender in `braid-bench log` gains little (p50 145 µs
//! before, 135-144 µs after).
//!
//! A writer gets a thread of its own while there are fewer than [`WRITER_THREADS_MAX`]; past
//! that, writers share the least loaded thread, where one partition's `fdatasync` holds up the
//! others on it (as a full blocking pool would). Threads stay for the life of the process, so
//! opening and closing partitions does not start threads over and over.
//!
//! What must stay true: a writer task runs to its end on its thread (a panic in one ends that
//! task only; the runtime and the other writers on the thread carry on), and the receiver
//! [`spawn`] returns is answered when the task has ended.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::io;

/// Most writer threads; later writers share them. Enough that a server's streams and its
/// commit log each get their own at the sizes braid is run at, few enough to stay clear of a
/// service's task limit (`TasksMax`).
pub const WRITER_THREADS_MAX: usize = 64;

struct WriterThread {
    runtime: tokio::runtime::Handle,
    /// Writers running on the thread now.
    writers: Arc<AtomicUsize>,
}

struct Pool {
    threads: Vec<WriterThread>,
    /// Threads being started now (counted against the bound).
    starting: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    threads: Vec::new(),
    starting: 0,
});

/// Lowers a thread's writer count when its writer ends, however it ends.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Pick {
    Thread(tokio::runtime::Handle, Running),
    /// A slot was reserved: start a thread.
    Start,
    /// Every slot is a thread still starting: look again in a moment.
    Wait,
}

/// Runs `writer` on a writer thread; the receiver is answered when it has ended.
pub(crate) async fn spawn(
    writer: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<oneshot::Receiver<()>> {
    let (runtime, running) = loop {
        match pick() {
            Pick::Thread(rt, running) => break (rt, running),
            Pick::Start => break start_thread().await?,
            Pick::Wait => tokio::task::yield_now().await,
        }
    };
    let (ended, rx) = oneshot::channel();
    runtime.spawn(async move {
        let _running = running;
        writer.await;
        let _ = ended.send(());
    });
    Ok(rx)
}

/// An idle thread; else a slot for a new one while under [`WRITER_THREADS_MAX`]; else the
/// least loaded thread. A thread picked is counted as running one more writer.
fn pick() -> Pick {
    let mut pool = POOL.lock();
    let least = pool
        .threads
        .iter()
        .min_by_key(|t| t.writers.load(Ordering::Relaxed));
    let chosen = match least {
        Some(t) if t.writers.load(Ordering::Relaxed) == 0 => t,
        _ if pool.threads.len() + pool.starting < WRITER_THREADS_MAX => {
            pool.starting += 1;
            return Pick::Start;
        }
        Some(t) => t,
        None => return Pick::Wait,
    };
    chosen.writers.fetch_add(1, Ordering::Relaxed);
    Pick::Thread(chosen.runtime.clone(), Running(chosen.writers.clone()))
}

/// Starts a writer thread in the slot [`pick`] reserved, counted as running one writer.
async fn start_thread() -> std::io::Result<(tokio::runtime::Handle, Running)> {
    let started = launch().await;
    let mut pool = POOL.lock();
    pool.starting -= 1;
    let runtime = started?;
    let writers = Arc::new(AtomicUsize::new(1));
    pool.threads.push(WriterThread {
        runtime: runtime.clone(),
        writers: writers.clone(),
    });
    Ok((runtime, Running(writers)))
}

/// Starts a thread that drives a single-threaded runtime forever; returns its handle.
async fn launch() -> std::io::Result<tokio::runtime::Handle> {
    let (started, start) = oneshot::channel();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::thread::Builder::new()
        .name(format!("braid-log-{n}"))
        .spawn(move || {
            // Built on this thread: a runtime may be neither dropped nor blocked on inside
            // another one.
            // Timers only (group commit's wait): without an I/O driver the thread parks on a
            // futex instead of `epoll_wait`, and an appender wakes it without an `eventfd` write.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = started.send(Err(e));
                    return;
                }
            };
            io::wait_on_disk_here();
            let _ = started.send(Ok(runtime.handle().clone()));
            runtime.block_on(std::future::pending::<()>());
        })?;
    start
        .await
        .map_err(|_| std::io::Error::other("the writer thread ended before it started"))?
}
