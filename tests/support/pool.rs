//! Routes and pools in the integration tests: the daemon in-process with `[[routes]]` only,
//! 2026-07-28 requests written by hand, per-endpoint numbers read back from `/metrics`, and
//! the official TypeScript SDK client driver (`tests/peers/ts_client.mjs`).

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use ::http::{StatusCode, Uri};
use mcp_relay::{
    config::{Config, RouteConfig},
    daemon::Daemon,
};
use serde_json::Value;
use tokio::process::Command;

use super::{
    http::{Answer, Client},
    peers::repo_root,
};

/// The modern protocol version.
pub const MODERN: &str = "2026-07-28";

/// A route at `path` to the endpoint URLs `urls`, no overrides (what `--route` gives).
pub fn route(path: &str, urls: &[String]) -> RouteConfig {
    RouteConfig::new(path, urls.iter().cloned())
}

/// Starts mcp-relay on `127.0.0.1:0` (both planes) serving only `routes` (no
/// `proxy.upstream`), letting `tune` adjust the configuration first.
pub async fn start_routes(routes: Vec<RouteConfig>, tune: impl FnOnce(&mut Config)) -> Daemon {
    super::start_proxy_with("http://127.0.0.1:1/mcp", |config| {
        config.proxy.upstream = Uri::default();
        config.routes = routes;
        tune(config);
    })
    .await
}

/// The URL of `path` on a running proxy's data plane.
pub fn url_of(daemon: &Daemon, path: &str) -> String {
    format!("http://{}{path}", daemon.data_addr())
}

/// A 2026-07-28 `tools/call echo(text)` as a modern client writes it: the version in the
/// header and in `_meta` with the client's capabilities (the SDK server requires both), the
/// mirrored `Mcp-Method` and `Mcp-Name` headers. Returns `Ok` when the answer is `200` with the
/// echoed text, else a description of what came back.
pub async fn modern_echo(client: &Client, url: &str, id: u64, text: &str) -> Result<(), String> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {
            "name": "echo",
            "arguments": { "text": text },
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    })
    .to_string();
    let headers = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ];
    let answer = client.post_read(url, &headers, &body).await;
    let echoed = (answer.status == StatusCode::OK)
        .then(|| answer_text(&answer))
        .flatten();
    if echoed.as_deref() == Some(text) && id_of(&answer) == Some(id) {
        Ok(())
    } else {
        Err(format!(
            "{} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ))
    }
}

/// The JSON-RPC message of an answer: the JSON body, or the last `data:` of an SSE body.
pub fn message_of(answer: &Answer) -> Option<Value> {
    let text = std::str::from_utf8(&answer.body).ok()?;
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Some(v);
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .next_back()
}

fn answer_text(answer: &Answer) -> Option<String> {
    message_of(answer)?["result"]["content"][0]["text"]
        .as_str()
        .map(str::to_owned)
}

fn id_of(answer: &Answer) -> Option<u64> {
    message_of(answer)?["id"].as_u64()
}

/// The value of series `name` labelled with `endpoint` (and `route` when given) in the
/// Prometheus text `metrics`.
pub fn metric(metrics: &str, name: &str, route: Option<&str>, endpoint: &str) -> Option<f64> {
    let endpoint_label = format!("endpoint=\"{endpoint}\"");
    let route_label = route.map(|r| format!("route=\"{r}\""));
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once("} ")?;
        let ours = labels.split(',').any(|l| l == endpoint_label)
            && route_label
                .as_ref()
                .is_none_or(|r| labels.split(',').any(|l| l == r));
        ours.then(|| value.trim().parse().ok()).flatten()
    })
}

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `timeout`.
/// Returns how long it took.
pub async fn poll_until(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// The endpoint URL the proxy's session `session_id` is pinned to, while it is live.
pub fn session_endpoint(daemon: &Daemon, session_id: &str) -> Option<String> {
    daemon
        .manager()
        .sessions()
        .iter()
        .find(|s| s.id().as_str() == session_id)
        .map(|s| s.upstream().to_owned())
}

/// Runs the TypeScript SDK client driver (`tests/peers/ts_client.mjs`) against `url`, calling
/// `tool` with `arguments` (JSON) when given; returns its JSON summary. Panics when it fails or
/// takes longer than 90 s.
pub async fn run_ts_client(url: &str, tool: Option<(&str, &str)>) -> Value {
    let mut args = vec![url];
    if let Some((name, arguments)) = tool {
        args.extend([name, arguments]);
    }
    run_node("tests/peers/ts_client.mjs", &args).await
}

/// Runs the TypeScript SDK tool policy driver (`tests/peers/ts_policy_client.mjs`) against
/// `url`: lists tools, calls `allowed`, then `denied`; returns its JSON summary.
pub async fn run_ts_policy_client(url: &str, allowed: &str, denied: &str) -> Value {
    run_node("tests/peers/ts_policy_client.mjs", &[url, allowed, denied]).await
}

/// Runs the node script `script` (a path from the repository root) with `args`; returns the
/// last JSON line it printed. Panics when it fails or takes longer than 90 s.
async fn run_node(script: &str, args: &[&str]) -> Value {
    let url = args.first().copied().unwrap_or_default();
    let mut cmd = Command::new("node");
    cmd.current_dir(repo_root()).arg(script).args(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 90 s"))
        .expect("spawn node");
    assert!(
        output.status.success(),
        "{script} against {url} failed ({}); its error is above",
        output.status
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line from {script}: {text}"));
    serde_json::from_str(line).expect("node driver JSON")
}

/// The `tools` names of a driver's summary.
pub fn tool_names(summary: &Value) -> Vec<String> {
    summary["tools"]
        .as_array()
        .expect("tools array")
        .iter()
        .map(|t| t.as_str().expect("tool name").to_owned())
        .collect()
}
