//! Where log records go: the journal (native protocol, every `tracing` field a journal field)
//! when systemd connected stderr to it, else stderr as text or JSON lines.
//!
//! Nothing in mcp-relay logs request headers, so `Authorization` and bearer tokens never reach
//! a log; configuration is logged only through [`crate::config::file::redact_url`] and the
//! masked printer.

use std::{io::IsTerminal as _, os::unix::fs::MetadataExt as _};

use tracing_subscriber::{
    EnvFilter, Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt,
};

use crate::config::{LogConfig, LogFormat, LogTarget};

/// Where [`init`] sent the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSink {
    /// The systemd journal (native protocol, structured fields).
    Journal,
    /// Standard error, as text or JSON lines.
    Stderr(LogFormat),
}

/// The subscriber could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// `log.filter` (or `RUST_LOG`) is not a valid `EnvFilter` directive.
    #[error("`log.filter` / RUST_LOG: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber was already installed.
    #[error("installing the log subscriber: {0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
}

/// Whether stderr is the journal stream systemd set up: `JOURNAL_STREAM` is `<device>:<inode>`
/// of that stream, and it only counts while stderr still is it (systemd.exec(5)).
pub fn stderr_is_journal() -> bool {
    let Some(expected) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = expected.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Installs the process's log subscriber. `RUST_LOG`, when set, replaces `config.filter`.
/// A journal that cannot be reached falls back to stderr (and says so).
pub fn init(config: &LogConfig) -> Result<LogSink, LogError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::builder().parse(directives)?,
        _ => EnvFilter::builder().parse(&config.filter)?,
    };
    let want_journal = match config.target {
        LogTarget::Auto => stderr_is_journal(),
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
    };
    let (journal, journal_error) = if want_journal {
        match tracing_journald::layer() {
            Ok(layer) => (Some(layer.with_syslog_identifier("mcp-relay".into())), None),
            Err(err) => (None, Some(err)),
        }
    } else {
        (None, None)
    };
    let sink = match (&journal, config.format) {
        (Some(_), _) => LogSink::Journal,
        (None, format) => LogSink::Stderr(format),
    };
    let stderr = match sink {
        LogSink::Journal => None,
        LogSink::Stderr(LogFormat::Text) => Some(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .boxed(),
        ),
        LogSink::Stderr(LogFormat::Json) => Some(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_writer(std::io::stderr)
                .boxed(),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(journal)
        .with(stderr)
        .try_init()?;
    if let Some(err) = journal_error {
        tracing::warn!(error = %err, "the journal is not reachable; logging to stderr");
    }
    Ok(sink)
}
