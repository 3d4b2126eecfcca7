//! Where the control plane listens: a TCP socket (loopback by default) or a Unix domain socket.

use std::{
    io,
    net::SocketAddr,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use tokio::net::{TcpListener, UnixListener};

/// Permissions of a Unix socket the control plane creates: owner only (grant more through the
/// directory or with `chmod` after start).
pub const UNIX_SOCKET_MODE: u32 = 0o600;

/// A bound control-plane listener.
#[derive(Debug)]
pub enum ControlListener {
    /// A TCP listener. Without a bearer token it must be bound to a loopback address.
    Tcp(TcpListener),
    /// A Unix domain socket bound at `path`, which is removed when the control plane stops.
    Unix {
        /// The bound socket.
        listener: UnixListener,
        /// Where it is bound (removed at stop).
        path: PathBuf,
    },
}

impl From<TcpListener> for ControlListener {
    fn from(listener: TcpListener) -> Self {
        Self::Tcp(listener)
    }
}

impl ControlListener {
    /// Binds a Unix domain socket at `path` with mode [`UNIX_SOCKET_MODE`]. A stale socket
    /// left there by a previous run is replaced; any other file there is an error. The socket
    /// file is removed when the control plane stops.
    pub fn bind_unix(path: &Path) -> io::Result<Self> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(UNIX_SOCKET_MODE))?;
        Ok(Self::Unix {
            listener,
            path: path.to_owned(),
        })
    }

    /// The TCP address, for a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix { .. } => None,
        }
    }

    /// What the listener is bound to, for logs: `127.0.0.1:50051` or `unix:/run/x.sock`.
    pub fn describe(&self) -> String {
        match self {
            Self::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "tcp:?".to_owned(), |a| a.to_string()),
            Self::Unix { path, .. } => format!("unix:{}", path.display()),
        }
    }

    /// Whether anyone on the network could reach it: a TCP listener on a non-loopback address.
    pub fn is_exposed(&self) -> bool {
        self.tcp_addr().is_some_and(|a| !a.ip().is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_other_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let first = ControlListener::bind_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, UNIX_SOCKET_MODE);
        drop(first);
        assert!(
            ControlListener::bind_unix(&path).is_ok(),
            "stale socket replaced"
        );
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, b"keep me").unwrap();
        assert!(ControlListener::bind_unix(&file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    }
}
