//! TLS with rustls (ring provider) at both planes and toward upstreams (issue 14, part 3).
//!
//! - **Server side** ([`ServerTls`]): a certificate chain and its key from PEM files, for the
//!   data plane (`[tls]`, ALPN `h2` then `http/1.1`) and the control plane (`[admin_tls]`,
//!   ALPN `h2`, optionally requiring client certificates signed by `client_ca_file`: mTLS).
//!   The files are read again on [`ServerTls::reload`] (SIGHUP): connections accepted after
//!   it use the new certificate, open ones keep theirs (nothing is dropped); files that fail
//!   to load leave the running certificate in place.
//! - **Client side** ([`client_config`]): `https://` upstream endpoints are verified against
//!   the system's roots (rustls-native-certs, read once per process), or only against the
//!   CAs of `proxy.upstream_ca_file` when it is set; ALPN `http/1.1` (upstreams stay
//!   HTTP/1.1).
//!
//! Key formats: PKCS#8, PKCS#1 (RSA) and SEC1 (EC), PEM; certificates PEM, leaf first
//! (RFC 7468 labels, as `openssl` and `rcgen` write them).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::{CryptoProvider, ring},
    server::WebPkiClientVerifier,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

/// ALPN protocols the data plane offers, in preference order (RFC 7301; h2 over TLS as
/// RFC 9113 §3.2 names it).
pub const DATA_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the control plane: gRPC runs over HTTP/2 only.
pub const ADMIN_ALPN: &[&[u8]] = &[b"h2"];

/// A TLS setting that cannot be used, naming the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file could not be read or holds no PEM certificate.
    #[error("certificate file {}: {message}", path.display())]
    Certificates {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A key file could not be read or holds no PEM private key.
    #[error("private key file {}: {message}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, a CA
    /// certificate it cannot use, …).
    #[error("{0}")]
    Rustls(String),
}

/// TLS of one listener (`[tls]` or `[admin_tls]`): all paths, PEM.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, leaf first. Empty (with `key_file`): plain TCP. Default empty.
    pub cert_file: PathBuf,
    /// The certificate's private key. Default empty.
    pub key_file: PathBuf,
    /// When set (control plane only), clients must present a certificate that chains to one
    /// of these CAs (mTLS); the handshake fails otherwise. Default empty: none asked.
    #[serde(skip_serializing_if = "path_is_empty")]
    pub client_ca_file: PathBuf,
    /// Control plane only: TLS handshakes in progress at once; more connections are closed at
    /// once (counted in `mcp_relay_admin_tls_refused_total`). Default 256. (The data plane's
    /// are bounded by `proxy.max_connections`.)
    pub max_handshakes: usize,
    /// Control plane only: handshakes in progress from one client address (one address
    /// holding sockets open cannot lock operators out). Default 8.
    pub max_handshakes_per_address: usize,
    /// Control plane only: seconds a client has for its handshake. Default 5. (The data
    /// plane's: `proxy.header_read_timeout_secs` from accept.)
    #[serde(rename = "handshake_timeout_secs")]
    #[serde_as(as = "serde_with::DurationSeconds<u64>")]
    pub handshake_timeout: std::time::Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            max_handshakes: 256,
            max_handshakes_per_address: 8,
            handshake_timeout: std::time::Duration::from_secs(5),
        }
    }
}

fn path_is_empty(path: &Path) -> bool {
    path.as_os_str().is_empty()
}

impl TlsConfig {
    /// Whether TLS is configured (a certificate file is named).
    pub fn enabled(&self) -> bool {
        !path_is_empty(&self.cert_file)
    }

    /// Whether client certificates are required.
    pub fn requires_client_certificates(&self) -> bool {
        !path_is_empty(&self.client_ca_file)
    }

    /// Whether it is the default (nothing to serialize).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(ring::default_provider()))
        .clone()
}

/// The certificates of the PEM file at `path` (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |message: String| TlsError::Certificates {
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Root certificates from the PEM file at `path`.
fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::Certificates {
            path: path.to_owned(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// A rustls server configuration from `config`'s files, offering `alpn`. Errors: a file
/// that cannot be read or parsed, a key that does not match the certificate.
pub fn server_config(config: &TlsConfig, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let certs = read_certificates(&config.cert_file)?;
    let key = read_key(&config.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = if config.requires_client_certificates() {
        let roots = read_roots(&config.client_ca_file)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Rustls(format!("client_ca_file: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(format!("certificate and key: {e}")))?;
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(server)
}

/// One listener's TLS: the configuration from the files, swapped whole by
/// [`ServerTls::reload`]; each handshake takes the one current when it starts.
#[derive(Debug)]
pub struct ServerTls {
    config: TlsConfig,
    alpn: &'static [&'static [u8]],
    current: ArcSwap<ServerConfig>,
}

impl ServerTls {
    /// Loads `config`'s files for a listener offering `alpn`. Errors: see [`server_config`].
    pub fn load(config: &TlsConfig, alpn: &'static [&'static [u8]]) -> Result<Arc<Self>, TlsError> {
        let current = server_config(config, alpn)?;
        Ok(Arc::new(Self {
            config: config.clone(),
            alpn,
            current: ArcSwap::from_pointee(current),
        }))
    }

    /// Reads the files again; on success new handshakes use them. On error the running
    /// certificate stays and the error is returned (for the log).
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.config, self.alpn)?;
        self.current.store(Arc::new(fresh));
        Ok(())
    }

    /// Whether clients must present a certificate (`client_ca_file`).
    pub fn requires_client_certificates(&self) -> bool {
        self.config.requires_client_certificates()
    }

    /// Its settings.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}

/// The rustls client configuration for `https://` upstreams: roots from `ca_file` when it is
/// set (only those), else the system's (loaded once per process; certificates it cannot
/// parse are skipped with a warning). Errors: `ca_file` unreadable or without a usable CA.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca_file {
        Some(path) => read_roots(path)?,
        None => system_roots().as_ref().clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn system_roots() -> &'static Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for err in &found.errors {
            tracing::warn!(error = %err, "reading the system's root certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, skipped) = roots.add_parsable_certificates(found.certs);
        if skipped > 0 {
            tracing::warn!(
                added,
                skipped,
                "system root certificates rustls cannot use were skipped"
            );
        }
        if added == 0 {
            tracing::warn!(
                "no system root certificates: https:// upstreams need proxy.upstream_ca_file"
            );
        }
        Arc::new(roots)
    })
}

/// The bytes of a connection, either side: TCP, or TLS over it (a data-plane client's
/// connection with `[tls]`, an `https://` upstream's).
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, client or server side.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Transport {
    /// The TCP socket under it (for socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The control plane serves [`Transport`]s (TLS ones) with tonic: the peer's addresses go
/// into each request as for plain TCP.
impl tonic::transport::server::Connected for Transport {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.tcp().local_addr().ok(),
            remote_addr: self.tcp().peer_addr().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn self_signed(dir: &Path, name: &str) -> TlsConfig {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        TlsConfig {
            cert_file: write(dir, &format!("{name}.crt"), &cert.pem()),
            key_file: write(dir, &format!("{name}.key"), &key.serialize_pem()),
            ..TlsConfig::default()
        }
    }

    #[test]
    fn bad_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = self_signed(dir.path(), "a");
        assert!(server_config(&good, DATA_ALPN).is_ok());

        let missing = TlsConfig {
            cert_file: dir.path().join("nope.crt"),
            ..good.clone()
        };
        let err = server_config(&missing, DATA_ALPN).unwrap_err().to_string();
        assert!(err.contains("nope.crt"), "{err}");

        let empty = TlsConfig {
            cert_file: write(dir.path(), "empty.crt", "not pem\n"),
            ..good.clone()
        };
        let err = server_config(&empty, DATA_ALPN).unwrap_err().to_string();
        assert!(
            err.contains("empty.crt") && err.contains("no PEM certificate"),
            "{err}"
        );

        // The key of another certificate.
        let other = self_signed(dir.path(), "b");
        let mismatched = TlsConfig {
            key_file: other.key_file,
            ..good.clone()
        };
        let err = server_config(&mismatched, DATA_ALPN)
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificate and key"), "{err}");

        let no_key = TlsConfig {
            key_file: good.cert_file.clone(),
            ..good
        };
        let err = server_config(&no_key, DATA_ALPN).unwrap_err().to_string();
        assert!(err.contains("private key file"), "{err}");
    }

    #[test]
    fn a_failed_reload_keeps_the_running_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = self_signed(dir.path(), "a");
        let tls = ServerTls::load(&config, DATA_ALPN).expect("load");
        let before = tls.current.load_full();
        std::fs::write(&config.cert_file, "garbage").expect("write");
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.current.load_full()));
        // A new pair at the same paths is taken.
        let fresh = self_signed(dir.path(), "a");
        assert_eq!(fresh.cert_file, config.cert_file);
        tls.reload().expect("reload");
        assert!(!Arc::ptr_eq(&before, &tls.current.load_full()));
        assert_eq!(
            tls.current.load().alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn upstream_roots_come_from_the_ca_file_only_when_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = self_signed(dir.path(), "ca");
        assert!(client_config(Some(&ca.cert_file)).is_ok());
        let err = client_config(Some(&dir.path().join("none.pem")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("none.pem"), "{err}");
        assert!(client_config(None).is_ok());
    }
}
