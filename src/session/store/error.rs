//! Why a store operation failed: a kind to act on, and the backend's own error as the cause.

use std::{error::Error, fmt};

/// The cause of a [`StoreError`]: the backend's own error (e.g. a `redis::RedisError`), or a
/// message where there is none (an answer that did not come in time, a setting refused).
pub type StoreErrorSource = Box<dyn Error + Send + Sync + 'static>;

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The store could not be reached: connection refused or lost, no answer in time. The
    /// worker then probes it until it answers.
    Unreachable,
    /// The store answered with an error (a refused command, a failed script).
    Rejected,
    /// The store answered, but not in a shape the proxy reads (another type or number of
    /// answers than asked for).
    BadAnswer,
    /// A setting of the store cannot be used; `key` names it (`store.url`, …).
    Config {
        /// The configuration key, e.g. `store.url`.
        key: &'static str,
    },
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable => f.write_str("unreachable"),
            Self::Rejected => f.write_str("rejected"),
            Self::BadAnswer => f.write_str("unexpected answer"),
            Self::Config { key } => write!(f, "bad setting {key}"),
        }
    }
}

/// A store operation failed. The worker retries; the data plane never sees this on its hot
/// path.
///
/// `Display` is short and stable, `session store <backend>: <operation>: <kind>` (e.g.
/// `session store redis: writing a batch: unreachable`), and never carries the cause's text
/// (a server's message, a URL): the cause is [`Error::source`]. The alternate form (`{:#}`)
/// appends the chain of causes, for logs only.
#[derive(Debug)]
pub struct StoreError {
    /// Which backend failed, e.g. `memory` or `redis`.
    pub backend: &'static str,
    /// What the store was asked to do, e.g. `writing a batch`.
    pub operation: &'static str,
    /// What kind of failure it is.
    pub kind: StoreErrorKind,
    /// The backend's own error, or a message.
    pub source: StoreErrorSource,
}

impl StoreError {
    /// A failure of `backend` doing `operation`, of `kind`, caused by `source`.
    pub fn new(
        backend: &'static str,
        operation: &'static str,
        kind: StoreErrorKind,
        source: impl Into<StoreErrorSource>,
    ) -> Self {
        Self {
            backend,
            operation,
            kind,
            source: source.into(),
        }
    }

    /// Whether the store could not be reached ([`StoreErrorKind::Unreachable`]), as opposed to
    /// answering with an error.
    pub fn is_unreachable(&self) -> bool {
        self.kind == StoreErrorKind::Unreachable
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session store {}: {}: {}",
            self.backend, self.operation, self.kind
        )?;
        if f.alternate() {
            let mut cause: Option<&(dyn Error + 'static)> = Some(&*self.source);
            while let Some(c) = cause {
                write!(f, ": {c}")?;
                cause = c.source();
            }
        }
        Ok(())
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_display_is_short_and_the_alternate_form_carries_the_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by 10.0.0.1");
        let err = StoreError::new("redis", "writing a batch", StoreErrorKind::Unreachable, io);
        assert_eq!(
            err.to_string(),
            "session store redis: writing a batch: unreachable"
        );
        assert_eq!(
            format!("{err:#}"),
            "session store redis: writing a batch: unreachable: refused by 10.0.0.1"
        );
        assert!(err.is_unreachable());
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("refused by 10.0.0.1")
        );

        let config = StoreError::new(
            "redis",
            "opening",
            StoreErrorKind::Config { key: "store.url" },
            "required when store.backend is redis",
        );
        assert_eq!(
            config.to_string(),
            "session store redis: opening: bad setting store.url"
        );
        assert!(!config.is_unreachable());
    }
}
