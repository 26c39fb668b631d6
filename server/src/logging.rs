//! The log output on stderr: human-readable lines (timestamp, level, target) on a terminal or
//! in a file, journald lines when systemd connected stderr to the journal (`JOURNAL_STREAM`
//! names stderr's device and inode): a `<N>` syslog priority prefix and no timestamp, since
//! journald stamps each line itself. The level filter can be swapped at run time (SIGHUP).
//!
//! `RUST_LOG`, when set, wins over the configured filter, at start and on reload.

use std::fmt;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogControl {
    /// Applies `filter` (env-filter syntax) unless `RUST_LOG` overrides it. Returns the filter
    /// now in effect.
    pub fn set_filter(&self, filter: &str) -> anyhow::Result<String> {
        let effective = effective_filter(filter);
        let parsed = EnvFilter::try_new(&effective)
            .map_err(|e| anyhow::anyhow!("parsing log filter {effective:?}: {e}"))?;
        self.handle
            .reload(parsed)
            .map_err(|e| anyhow::anyhow!("changing the log filter: {e}"))?;
        Ok(effective)
    }
}

fn effective_filter(configured: &str) -> String {
    match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => f,
        _ => configured.to_string(),
    }
}

/// Whether stderr is the journal stream systemd set up for this service.
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // Compare with stderr itself: when stderr was redirected (a shell in ExecStart, a test
    // harness) the variable is inherited but no longer true.
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let file = std::fs::File::from(fd);
    file.metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Installs the global subscriber.
pub fn init(filter: &str) -> LogControl {
    let initial = EnvFilter::try_new(effective_filter(filter)).unwrap_or_else(|e| {
        eprintln!("invalid log filter {filter:?} ({e}); using \"info\"");
        EnvFilter::new("info")
    });
    let (filter_layer, handle) = reload::Layer::new(initial);
    let registry = tracing_subscriber::registry().with(filter_layer);
    if stderr_is_journal() {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .event_format(JournalFormat),
            )
            .init();
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init();
    }
    LogControl { handle }
}

/// `<priority>target: message key=value`, one line per event.
struct JournalFormat;

/// syslog priorities (sd-daemon(3)).
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(writer, "<{}>{}: ", priority(meta.level()), meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
