//! TLS at both planes and toward upstreams (issue 14, part 3), with a test CA made for each run
//! (rcgen) and the real binary:
//!
//! - the official Python SDK client (both eras) and TypeScript SDK client reach an MCP server
//!   through `https://` on mcp-relay, trusting only the test CA, and the relay reaches that
//!   server over `https://` too (`proxy.upstream_ca_file`);
//! - HTTP/2 is negotiated by ALPN on the data plane; a client that does not speak TLS is cut
//!   and counted;
//! - grpcurl reaches the control plane over TLS with a client certificate the test CA signed,
//!   and is refused without one or with one of another CA;
//! - SIGHUP after the certificate files were replaced: new connections get the new
//!   certificate, an open connection keeps working.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;
use support::{
    daemon_proc::{NotifySocket, PROC_WAIT, RelayProcess, addrs_of_ready_status, status_of},
    http::Client,
    peers::{Peer, grpcurl_raw, python, run_driver},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// A certificate authority of the test: its certificate (PEM file) and what it signs with.
struct Ca {
    pem: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        let pem = dir.join(format!("{name}.crt"));
        std::fs::write(&pem, cert.pem()).expect("write the CA");
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names` (server) or a client certificate (`client`), written
    /// to `<dir>/<file>.crt` and `.key`; returns the two paths and the certificate's DER.
    fn issue(
        &self,
        dir: &Path,
        file: &str,
        names: &[&str],
        client: bool,
    ) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let (crt, pem) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&crt, cert.pem()).expect("write the certificate");
        std::fs::write(&pem, key.serialize_pem()).expect("write the key");
        (crt, pem, cert.der().to_vec())
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A TLS connection to the relay's data plane at `addr` as `localhost`, trusting `ca`,
/// offering `alpn`; returns it with the protocol negotiated and the server's certificate.
async fn connect(
    addr: SocketAddr,
    ca: &Path,
    alpn: &[&[u8]],
) -> (TlsStream<TcpStream>, Option<Vec<u8>>, Vec<u8>) {
    let mut config =
        Arc::unwrap_or_clone(mcp_relay::tls::client_config(Some(ca)).expect("client config"));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().expect("server name"), tcp)
        .await
        .expect("TLS handshake with the relay");
    let (_, conn) = tls.get_ref();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let cert = conn.peer_certificates().expect("a server certificate")[0].to_vec();
    (tls, alpn, cert)
}

const MODERN_LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;

/// A 2026-07-28 `tools/list` request for `authority`.
fn modern_list(uri: &str) -> Request<Full<Bytes>> {
    Request::post(uri)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(Full::new(Bytes::from_static(MODERN_LIST.as_bytes())))
        .expect("request")
}

/// The tool names in a `tools/list` answer (JSON, or one SSE `data:` line).
fn tool_names(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data:").map(str::trim))
        .unwrap_or(text.trim());
    let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {text}"))
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The official Python SDK client driver over `https://`, trusting only `ca`.
async fn py_client(url: &str, mode: &str, ca: &Path) -> Value {
    let args = [
        "tests/peers/py_client.py",
        "--url",
        url,
        "--mode",
        mode,
        "--steps",
        "3",
        "--delay-ms",
        "20",
    ];
    run_driver(
        &python(),
        &args,
        &[("SSL_CERT_FILE", ca)],
        Duration::from_secs(90),
    )
    .await
}

/// The official TypeScript SDK client driver over `https://`, Node trusting `ca` besides its
/// own roots (`NODE_EXTRA_CA_CERTS`).
async fn ts_client(url: &str, ca: &Path) -> Value {
    let args = [
        "tests/peers/ts_client.mjs",
        url,
        "progress",
        r#"{"steps":3,"delay_ms":20}"#,
    ];
    run_driver(
        Path::new("node"),
        &args,
        &[("NODE_EXTRA_CA_CERTS", ca)],
        Duration::from_secs(90),
    )
    .await
}

async fn scrape(metrics: SocketAddr) -> String {
    let answer = Client::new()
        .send(
            http::Method::GET,
            &format!("http://{metrics}/metrics"),
            &[],
            "",
        )
        .await;
    String::from_utf8_lossy(&answer.into_body().collect().await.expect("body").to_bytes())
        .into_owned()
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_grpcurl_and_h2_over_tls_and_certificates_reloaded_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = Ca::new(d, "test-ca");
    let rogue = Ca::new(d, "rogue-ca");
    let (up_crt, up_key, _) = ca.issue(d, "upstream", &["127.0.0.1"], false);
    let (relay_crt, relay_key, first_der) =
        ca.issue(d, "relay", &["localhost", "127.0.0.1"], false);
    let (op_crt, op_key, _) = ca.issue(d, "operator", &[], true);
    let (rogue_crt, rogue_key, _) = rogue.issue(d, "intruder", &[], true);

    // The upstream: the official Python SDK server, itself over https.
    let upstream =
        Peer::py_server(&["--tls-cert", path(&up_crt), "--tls-key", path(&up_key)]).await;
    let file = d.join("relay.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_secs = 2\n\
             [proxy]\nupstream = \"https://127.0.0.1:{port}/mcp\"\nupstream_ca_file = \"{ca}\"\n\
             [tls]\ncert_file = \"{relay_crt}\"\nkey_file = \"{relay_key}\"\n\
             [admin_tls]\ncert_file = \"{relay_crt}\"\nkey_file = \"{relay_key}\"\nclient_ca_file = \"{ca}\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[log]\ntarget = \"stderr\"\n",
            port = upstream.port(),
            ca = path(&ca.pem),
            relay_crt = path(&relay_crt),
            relay_key = path(&relay_key),
        ),
    )
    .expect("write the configuration");
    let mut notify = NotifySocket::bind();
    let mut relay = RelayProcess::spawn(&notify, &["--config", path(&file)], &[]);
    let ready = notify.wait_for("READY=1", PROC_WAIT).await;
    let (data, admin, metrics) = addrs_of_ready_status(status_of(&ready).expect("STATUS="));
    let metrics = metrics.expect("a metrics listener");
    let url = format!("https://localhost:{}/mcp", data.port());

    // The official SDK clients, trusting the test CA only (Python) or besides Node's roots.
    for mode in ["legacy", "modern"] {
        let summary = py_client(&url, mode, &ca.pem).await;
        assert_eq!(summary["result_text"], "done 3", "{mode}: {summary}");
        assert_eq!(
            summary["progress"],
            serde_json::json!([1, 2, 3]),
            "{mode}: {summary}"
        );
    }
    let summary = ts_client(&url, &ca.pem).await;
    assert_eq!(summary["result_text"], "done 3", "{summary}");
    assert_eq!(
        summary["progress"],
        serde_json::json!([1, 2, 3]),
        "{summary}"
    );
    eprintln!("over TLS: Python SDK (legacy, modern) and TypeScript SDK clients called `progress`");

    // HTTP/2 by ALPN, then a request on it.
    let (tls, alpn, _) = connect(data, &ca.pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(
        alpn.as_deref(),
        Some(&b"h2"[..]),
        "the data plane prefers h2 by ALPN"
    );
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let response = h2
        .send_request(modern_list(&url))
        .await
        .expect("h2 request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("h2 body")
        .to_bytes();
    assert!(tool_names(&body).contains(&"progress".to_owned()));

    // A client speaking plain HTTP to the TLS port: closed, counted.
    let mut plain = TcpStream::connect(data).await.expect("connect");
    plain
        .write_all(b"POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer))
        .await
        .expect("the relay closes a plain-HTTP connection on its TLS listener")
        .ok();
    assert!(
        !answer.starts_with(b"HTTP/"),
        "no HTTP answer without TLS: {answer:?}"
    );
    let text = scrape(metrics).await;
    assert!(
        counter(&text, "mcp_relay_tls_handshake_failures_total") >= 1.0,
        "{text}"
    );

    // The control plane: grpcurl with the operator's certificate; without one, or with a
    // certificate of another CA, the handshake is refused.
    let target = format!("localhost:{}", admin.port());
    let tls_args = ["-cacert", path(&ca.pem)];
    let with_cert = [
        &tls_args[..],
        &["-cert", path(&op_crt), "-key", path(&op_key)],
    ]
    .concat();
    let call = |extra: &[&str]| {
        let mut args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        args.extend([
            "-d".into(),
            "{}".into(),
            "--".into(),
            "mcprelay.admin.v1.SessionService/ListSessions".into(),
        ]);
        args
    };
    let args = call(&with_cert);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = grpcurl_raw(&[&target], &refs).await;
    assert!(ok, "grpcurl with the operator's certificate: {err}");
    serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    for (what, extra) in [
        ("no client certificate", tls_args.to_vec()),
        (
            "a certificate of another CA",
            [
                &tls_args[..],
                &["-cert", path(&rogue_crt), "-key", path(&rogue_key)],
            ]
            .concat(),
        ),
    ] {
        let args = call(&extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = grpcurl_raw(&[&target], &refs).await;
        assert!(!ok, "grpcurl with {what} must be refused: {out}");
        eprintln!(
            "grpcurl with {what}: refused: {}",
            err.lines().last().unwrap_or_default()
        );
    }
    let (ok, _, err) = grpcurl_raw(&[&target], &["-plaintext", "list"]).await;
    assert!(!ok, "plaintext gRPC on the TLS control plane must fail");
    assert!(!err.is_empty());
    let text = scrape(metrics).await;
    assert!(
        counter(&text, "mcp_relay_admin_tls_refused_total") >= 3.0,
        "the refused control-plane handshakes are counted: {text}"
    );

    // Reload: an HTTP/1.1 keep-alive connection open across it.
    let (tls, alpn, before) = connect(data, &ca.pem, &[b"http/1.1"]).await;
    assert_eq!(before, first_der);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let list = || {
        let mut request = modern_list("/mcp");
        request.headers_mut().insert(
            "host",
            format!("localhost:{}", data.port()).parse().expect("host"),
        );
        request
    };
    let response = h1.send_request(list()).await.expect("h1 request");
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.expect("h1 body");

    let (_, _, second_der) = ca.issue(d, "relay", &["localhost", "127.0.0.1"], false);
    assert_ne!(first_der, second_der);
    relay.signal("HUP").await;
    let sent = Instant::now();
    loop {
        let (_, _, now) = connect(data, &ca.pem, &[b"http/1.1"]).await;
        if now == second_der {
            break;
        }
        assert_eq!(now, first_der);
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "the new certificate was not served within 10 s of SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "new connections got the new certificate {:?} after SIGHUP",
        sent.elapsed()
    );
    // The connection opened before the reload still serves requests.
    let response = h1
        .send_request(list())
        .await
        .expect("the old connection still works");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("h1 body")
        .to_bytes();
    assert!(tool_names(&body).contains(&"progress".to_owned()));
    // And the control plane took the new certificate too.
    let args = call(&with_cert);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(
        grpcurl_raw(&[&target], &refs).await.0,
        "grpcurl after the reload"
    );

    // A file replaced with garbage: SIGHUP refuses it, the running certificate stays.
    std::fs::write(&relay_crt, "not a certificate").expect("write");
    relay.signal("HUP").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !relay
        .stderr()
        .contains("SIGHUP: the configuration was refused")
    {
        assert!(
            Instant::now() < deadline,
            "the broken certificate was not refused: {}",
            relay.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, still) = connect(data, &ca.pem, &[b"http/1.1"]).await;
    assert_eq!(
        still, second_der,
        "a refused reload keeps the running certificate"
    );
    relay.signal("TERM").await;
    relay.exit(PROC_WAIT).await;
}

/// An `https://` upstream whose certificate the configured CA did not sign: `502`, and the
/// log names the TLS failure; no request reached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_an_untrusted_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = Ca::new(d, "test-ca");
    let rogue = Ca::new(d, "rogue-ca");
    let (up_crt, up_key, _) = rogue.issue(d, "upstream", &["127.0.0.1"], false);
    let log = d.join("requests.log");
    let upstream = Peer::py_server(&[
        "--tls-cert",
        path(&up_crt),
        "--tls-key",
        path(&up_key),
        "--request-log",
        path(&log),
    ])
    .await;
    let ca_file = ca.pem.clone();
    let daemon =
        support::start_proxy_with(&format!("https://127.0.0.1:{}/mcp", upstream.port()), |c| {
            c.proxy.upstream_ca_file = Some(ca_file);
        })
        .await;
    let answer = Client::new()
        .post_read(
            &support::proxy_url(&daemon),
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
            ],
            MODERN_LIST,
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
    assert!(!log.exists() || std::fs::read_to_string(&log).expect("log").is_empty());
    daemon.shutdown().await.expect("shut down");
}
