//! Helpers for durable-session tests: the Redis the suite runs against (required, never
//! skipped), a private `redis-server` a test may stop, real `mcp-relay` processes persisting to
//! Redis, a TCP switch standing in for a load balancer, and the Python SDK client driver that
//! pauses inside its session (`tests/peers/py_session_client.py`).

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mcp_relay::{
    config::Config,
    daemon::Daemon,
    session::store::{self, SessionStore, StoreBackend, StoreConfig},
};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::{
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::{
    daemon_proc::{NotifySocket, PROC_WAIT, RelayProcess, addrs_of_ready_status, status_of},
    peers::{HeldClient, hold_script},
};

/// The environment variable naming the Redis the tests use (`scripts/redis-for-tests.sh`
/// prints one).
pub const REDIS_URL_ENV: &str = "MCP_RELAY_TEST_REDIS_URL";

/// The Redis URL from [`REDIS_URL_ENV`]; panics when it is unset (the suite needs Redis and
/// never passes by skipping).
pub fn redis_url() -> String {
    match std::env::var(REDIS_URL_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{REDIS_URL_ENV} is not set. These tests need a real Redis: run \
             `export {REDIS_URL_ENV}=$(bash scripts/redis-for-tests.sh)` (scripts/test.sh does)."
        ),
    }
}

/// A raw connection to `url`, for inspecting what the proxy wrote; panics when Redis does not
/// answer `PING`.
pub async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("a valid Redis URL");
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| panic!("Redis at {url} did not answer within 5 s"))
    .unwrap_or_else(|e| panic!("Redis at {url} is unreachable: {e}"));
    let mut ping = conn.clone();
    let pong: String = redis::cmd("PING")
        .query_async(&mut ping)
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} does not answer PING: {e}"));
    assert_eq!(pong, "PONG");
    conn
}

/// The suite's Redis, checked reachable: its URL.
pub async fn require_redis() -> String {
    let url = redis_url();
    redis_conn(&url).await;
    url
}

/// A key prefix no other test (or run) uses, so tests share one Redis without seeing each
/// other's keys.
pub fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("mcp-relay-test:{test}:{}-{nanos}:", std::process::id())
}

/// The store settings of a Redis store at `url` under `prefix`.
pub fn redis_config(url: &str, prefix: &str) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Redis,
        url: Some(url.to_owned()),
        key_prefix: prefix.to_owned(),
        timeout: Duration::from_secs(1),
    }
}

/// A Redis store at `url` under `prefix`.
pub fn redis_store(url: &str, prefix: &str) -> Arc<dyn SessionStore> {
    store::open(&redis_config(url, prefix)).expect("open the Redis store")
}

/// Every key under `prefix` with its remaining TTL in ms (`PTTL`: -1 means none).
pub async fn keys_with_ttl(url: &str, prefix: &str) -> Vec<(String, i64)> {
    let mut conn = redis_conn(url).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut out = Vec::new();
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        out.push((key, ttl));
    }
    out.sort();
    out
}

/// The persisted upstream event id of `stream` in `session`, read straight from Redis (the
/// field `pos:<stream>` holds `<seq>:<upstream id>`).
pub async fn persisted_position(
    url: &str,
    prefix: &str,
    session: &str,
    stream: &str,
) -> Option<String> {
    let mut conn = redis_conn(url).await;
    let position: Option<String> = redis::cmd("HGET")
        .arg(format!("{prefix}streams:{session}"))
        .arg(format!("pos:{stream}"))
        .query_async(&mut conn)
        .await
        .expect("HGET");
    position.map(|p| {
        p.split_once(':')
            .map(|(_seq, id)| id.to_owned())
            .expect("a position <seq>:<upstream id>")
    })
}

/// A `tools/call` of the Python SDK test server's `progress` tool with request id (and progress
/// token) `id`.
pub fn progress_call(id: u64, steps: u64, delay_ms: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"progress","arguments":{{"steps":{steps},"delay_ms":{delay_ms}}},"_meta":{{"progressToken":{id}}}}}}}"#
    )
}

/// The stream and the upstream event id embedded in a client event id
/// `<stream>:<seq>:<upstream id>`.
pub fn upstream_part(client_id: &str) -> (&str, &str) {
    let mut parts = client_id.splitn(3, ':');
    let stream = parts.next().expect("stream");
    let _seq = parts.next().expect("seq");
    (stream, parts.next().expect("an upstream id"))
}

/// The sequence number in a Python SDK test server event id `<request id>/<seq>`.
pub fn py_seq(upstream_id: &str) -> u64 {
    upstream_id
        .rsplit_once('/')
        .and_then(|(_, seq)| seq.parse().ok())
        .expect("a py_server event id")
}

/// Waits (bounded: 5 s) until Redis holds a position of `stream` at or after `upstream_id` (the
/// proxy reads on ahead of a client); panics when it does not.
pub async fn wait_persisted(
    redis: &str,
    prefix: &str,
    session: &str,
    stream: &str,
    upstream_id: &str,
) {
    for _ in 0..200 {
        if let Some(persisted) = persisted_position(redis, prefix, session, stream).await
            && py_seq(&persisted) >= py_seq(upstream_id)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{upstream_id} was not persisted for stream {stream} within 5 s");
}

/// Waits (bounded: 5 s, polling every 25 ms) until Redis holds the record of `session`
/// (`{prefix}session:{session}`); panics when it does not.
pub async fn wait_session_saved(redis_url: &str, prefix: &str, session: &str) {
    let key = format!("{prefix}session:{session}");
    let mut conn = redis_conn(redis_url).await;
    for _ in 0..200 {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        if exists {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the record of session {session} ({key}) was not saved within 5 s");
}

/// Starts an in-process mcp-relay in front of `upstream` on `127.0.0.1:0`, persisting to
/// `store`, letting `tune` adjust the configuration first (a replica, or a restarted proxy,
/// is another call with a store on the same Redis and prefix).
pub async fn start_daemon(
    upstream: &str,
    store: Arc<dyn SessionStore>,
    tune: impl FnOnce(&mut Config),
) -> Daemon {
    let mut config = Config::new(upstream.parse().expect("upstream URL"));
    config.shutdown_grace = Duration::from_secs(1);
    config.worker.flush_interval = Duration::from_millis(50);
    tune(&mut config);
    let data = TcpListener::bind("127.0.0.1:0").await.expect("bind data");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    Daemon::start_with_store(config, data, admin, store)
        .await
        .expect("start mcp-relay")
}

/// A `redis-server` of the test's own on a free loopback port, which the test may stop and
/// start again on the same port to simulate an outage. It keeps its data across the stop (an
/// append-only file, fsynced on every write, in a temporary directory), as a production Redis
/// does. Killed when dropped.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers.
    pub async fn start() -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            l.local_addr().expect("local addr").port()
        };
        let dir = tempfile::tempdir().expect("a directory for redis-server");
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.start_again().await;
        server
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts it on its port and waits until it answers `PING` (bounded).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redis-server (Debian package redis-server)");
        self.child = Some(child);
        let url = self.url();
        let client = redis::Client::open(url.as_str()).expect("URL");
        for _ in 0..200 {
            if let Ok(Ok(mut conn)) = tokio::time::timeout(
                Duration::from_millis(500),
                client.get_multiplexed_async_connection(),
            )
            .await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "redis-server on port {} did not answer within 5 s",
            self.port
        );
    }

    /// Kills it (as a crash would: what it acknowledged is on disk) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }
}

/// A real `mcp-relay serve` process persisting sessions to Redis.
pub struct Relay {
    pub process: RelayProcess,
    pub notify: NotifySocket,
    pub data: SocketAddr,
    pub metrics: SocketAddr,
}

impl Relay {
    /// Starts `mcp-relay serve` in front of `upstream` with the Redis store at `redis_url`
    /// under `prefix`, on `listen` (or a free port), and waits until it is ready.
    pub async fn start(
        upstream: &str,
        redis_url: &str,
        prefix: &str,
        listen: Option<SocketAddr>,
    ) -> Self {
        let notify = NotifySocket::bind();
        let listen = listen.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        let args = [
            "--upstream",
            upstream,
            "--listen",
            &listen,
            "--admin-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--shutdown-grace-secs",
            "1",
            "--log-target",
            "stderr",
        ];
        let env = [
            ("MCP_RELAY_STORE__BACKEND", "redis"),
            ("MCP_RELAY_STORE__URL", redis_url),
            ("MCP_RELAY_STORE__KEY_PREFIX", prefix),
            ("MCP_RELAY_WORKER__FLUSH_INTERVAL_MS", "50"),
            ("MCP_RELAY_WORKER__RECORD_TTL_SECS", "600"),
            ("RUST_LOG", "mcp_relay=info"),
        ];
        let process = RelayProcess::spawn(&notify, &args, &env);
        let mut relay_notify = notify;
        let ready = relay_notify.wait_for("READY=1", PROC_WAIT).await;
        let status = status_of(&ready).expect("a STATUS= line with READY=1");
        let (data, _admin, metrics) = addrs_of_ready_status(status);
        Self {
            process,
            notify: relay_notify,
            data,
            metrics: metrics.expect("a metrics listener"),
        }
    }

    /// The MCP endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.data)
    }

    /// `SIGKILL`: the process dies with whatever it had not flushed.
    pub async fn kill(mut self) {
        self.process.signal("KILL").await;
        self.process.exit(PROC_WAIT).await;
    }

    /// `SIGTERM`: drains and flushes, then exits.
    pub async fn terminate(mut self) {
        self.process.signal("TERM").await;
        let status = self.process.exit(PROC_WAIT).await;
        assert!(status.success(), "mcp-relay exited with {status}");
    }

    /// One sample of its Prometheus text, e.g. `mcp_relay_sessions`; 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let http = super::http::Client::new();
        let response = http
            .send(
                http::Method::GET,
                &format!("http://{}/metrics", self.metrics),
                &[],
                bytes::Bytes::new(),
            )
            .await;
        let text = super::http::read_full(response).await.text().to_owned();
        text.lines()
            .find_map(|l| {
                let (key, value) = l.split_once(' ')?;
                (key == name).then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0.0)
    }
}

/// A TCP switch in front of proxy replicas, as a load balancer: each new connection goes to the
/// current backend; [`Switch::route_to`] moves new connections and closes the open ones, so a
/// client's next request lands on the other replica.
pub struct Switch {
    addr: SocketAddr,
    state: Arc<Mutex<(SocketAddr, CancellationToken)>>,
    task: JoinHandle<()>,
}

impl Switch {
    pub async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind switch");
        let addr = listener.local_addr().expect("switch addr");
        let state = Arc::new(Mutex::new((backend, CancellationToken::new())));
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let (backend, cut) = state.lock().clone();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(backend).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            () = cut.cancelled() => {}
                        }
                    });
                }
            }
        });
        Self { addr, state, task }
    }

    /// The MCP endpoint URL through the switch.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Sends new connections to `backend` and closes every open one.
    pub fn route_to(&self, backend: SocketAddr) {
        let mut state = self.state.lock();
        state.1.cancel();
        *state = (backend, CancellationToken::new());
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.state.lock().1.cancel();
        self.task.abort();
    }
}

/// The Python SDK client driver paused (`HOLD`) inside its session
/// (`tests/peers/py_session_client.py`).
pub struct SessionClient {
    held: HeldClient,
    /// The `Mcp-Session-Id` the client received.
    pub session_id: String,
}

impl SessionClient {
    /// Starts `tests/peers/py_session_client.py` against `url` and waits until it has made its
    /// first tool call and paused.
    pub async fn hold(url: &str) -> Self {
        let held = hold_script(
            "py_session_client.py",
            &["--url", url],
            Duration::from_secs(60),
        )
        .await;
        let session_id = held
            .session_id
            .clone()
            .expect("the client received a session id");
        Self { held, session_id }
    }

    /// Lets the driver go on in its session (and close it) and returns its JSON summary;
    /// panics if any of its requests failed.
    pub async fn release(self) -> Value {
        self.held.release_within(Duration::from_secs(90)).await
    }
}
