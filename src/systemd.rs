//! Talking to systemd (sd_notify(3), sd_listen_fds(3)) through the `sd-notify` and `listenfd`
//! crates: readiness, status lines, the watchdog, stopping, and socket activation.
//!
//! Everything here is a no-op when the daemon was not started by systemd: notifications need
//! `NOTIFY_SOCKET`, the watchdog needs `WATCHDOG_USEC`, activation needs `LISTEN_FDS` for this
//! process (`LISTEN_PID`).

use std::{net::TcpListener, time::Duration};

use sd_notify::NotifyState;

use crate::config::SystemdConfig;

/// Sends notifications to the service manager, when there is one. Failures are logged, never
/// fatal: a daemon that serves but cannot tell systemd is still better than one that exits.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// A notifier that sends when `NOTIFY_SOCKET` is set.
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(err) = sd_notify::notify(states) {
            tracing::warn!(error = %err, "could not notify systemd");
        }
    }

    /// `READY=1` with a `STATUS=` line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A `STATUS=` line (shown by `systemctl status`).
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `STOPPING=1` with a `STATUS=` line, and `EXTEND_TIMEOUT_USEC=` so the stop timeout
    /// covers the drain even when `TimeoutStopSec=` is shorter.
    pub fn stopping(&self, status: &str, drain: Duration) {
        let usec = u32::try_from(drain.as_micros()).unwrap_or(u32::MAX);
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status(status),
            NotifyState::ExtendTimeoutUsec(usec),
        ]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` (sd_watchdog_enabled(3)), when the
/// unit enabled the watchdog for this process and the configuration allows it.
pub fn watchdog_interval(config: &SystemdConfig) -> Option<Duration> {
    if !config.watchdog {
        return None;
    }
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// Listening sockets handed over by systemd (`ListenStream=` in a `.socket` unit).
#[derive(Debug, Default)]
pub struct Activated {
    /// The data plane's socket (`FileDescriptorName=data`, or the first one).
    pub data: Option<TcpListener>,
    /// The control plane's socket (`FileDescriptorName=admin`, or the second one).
    pub admin: Option<TcpListener>,
    /// The metrics socket (`FileDescriptorName=metrics`, or the third one).
    pub metrics: Option<TcpListener>,
}

/// The sockets systemd passed could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// A passed descriptor could not be inspected or taken.
    #[error("socket activation: {0}")]
    Io(#[from] std::io::Error),
    /// More sockets were passed than the daemon uses.
    #[error("socket activation: {count} sockets passed, at most 3 (data, admin, metrics) are used")]
    TooMany {
        /// How many were passed (`LISTEN_FDS`).
        count: usize,
    },
    /// A passed socket is not a listening TCP socket.
    #[error("socket activation: socket {index} is not a listening TCP socket")]
    NotTcp {
        /// Its position among the passed sockets (0-based).
        index: usize,
    },
    /// Two passed sockets carry the same name.
    #[error("socket activation: `{name}` named twice in LISTEN_FDNAMES")]
    Duplicate {
        /// The repeated name (`LISTEN_FDNAMES`).
        name: String,
    },
}

impl Activated {
    /// Takes the sockets passed by systemd, matched by `FileDescriptorName=` (`data`, `admin`,
    /// `metrics`) when every socket has one of those names, else by position.
    ///
    /// Call it first thing in `main`, before any thread starts: it unsets `LISTEN_FDS` and
    /// `LISTEN_PID` so children do not inherit them, which is only sound single-threaded.
    pub fn take_from_env() -> Result<Self, ActivationError> {
        let names = std::env::var("LISTEN_FDNAMES").ok();
        let mut fds = listenfd::ListenFd::from_env();
        let count = fds.len();
        if count == 0 {
            return Ok(Self::default());
        }
        if count > 3 {
            return Err(ActivationError::TooMany { count });
        }
        let names: Vec<String> = names
            .map(|n| n.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        let by_name = names.len() == count
            && names
                .iter()
                .all(|n| matches!(n.as_str(), "data" | "admin" | "metrics"));
        let mut activated = Self::default();
        for index in 0..count {
            let listener = fds
                .take_tcp_listener(index)?
                .ok_or(ActivationError::NotTcp { index })?;
            let role = if by_name {
                names[index].as_str()
            } else {
                ["data", "admin", "metrics"][index]
            };
            let slot = match role {
                "data" => &mut activated.data,
                "admin" => &mut activated.admin,
                _ => &mut activated.metrics,
            };
            if slot.is_some() {
                return Err(ActivationError::Duplicate {
                    name: role.to_owned(),
                });
            }
            *slot = Some(listener);
        }
        Ok(activated)
    }
}
