//! A legacy-era MCP client for stream-survival tests: raw HTTP through the proxy, SSE parsed with
//! the crate's own parser (so CRLF upstreams work), connections cut at chosen points and streams
//! resumed with `GET` + `Last-Event-ID`, exactly as a resuming client does.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::{Response, body::Incoming};
use mcp_relay::sse::SseParser;
use serde_json::Value;

use super::http::Client;

/// How long one read may wait.
const WAIT: Duration = Duration::from_secs(20);

/// One SSE event as the client saw it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The `id` the proxy gave it.
    pub id: Option<String>,
    /// The event data parsed as JSON (`Null` if empty, such as a priming event).
    pub data: Value,
}

/// An MCP session opened through the proxy.
pub struct Session {
    pub http: Client,
    pub url: String,
    pub session_id: String,
    pub protocol_version: &'static str,
}

impl Session {
    /// `initialize` + `notifications/initialized` at `url` (protocol 2025-11-25).
    pub async fn initialize(url: &str) -> Self {
        let http = Client::new();
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"stream-client","version":"1"}}}"#;
        let response = http.post(url, &[], init).await;
        assert_eq!(response.status(), StatusCode::OK, "initialize");
        let session_id = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("the proxy assigned a session id")
            .to_owned();
        // Drain the answer (JSON or SSE).
        let _ = response.into_body().collect().await;
        let session = Self {
            http,
            url: url.to_owned(),
            session_id,
            protocol_version: "2025-11-25",
        };
        let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let r = session.post(note).await;
        assert!(r.status().is_success(), "initialized: {}", r.status());
        session
    }

    /// POSTs a JSON-RPC message in the session.
    pub async fn post(&self, body: &str) -> Response<Incoming> {
        let headers = [
            ("mcp-session-id", self.session_id.as_str()),
            ("mcp-protocol-version", self.protocol_version),
        ];
        self.http.post(&self.url, &headers, body.to_owned()).await
    }

    /// Resumes a stream: `GET` + `Last-Event-ID`.
    pub async fn resume(&self, last_event_id: &str) -> Response<Incoming> {
        let headers = [
            ("mcp-session-id", self.session_id.as_str()),
            ("mcp-protocol-version", self.protocol_version),
            ("accept", "text/event-stream"),
            ("last-event-id", last_event_id),
        ];
        self.http
            .send(Method::GET, &self.url, &headers, Bytes::new())
            .await
    }

    /// Reads the SSE answer to a request, cutting the connection after each count of events in
    /// `cuts` (per connection, in order) and resuming with the last id seen, until the
    /// JSON-RPC response to `request_id` arrives or the proxy ends the stream for good.
    /// Returns every event seen, in order, and the number of resumptions made.
    pub async fn follow(
        &self,
        first: Response<Incoming>,
        request_id: u64,
        mut cuts: impl Iterator<Item = usize>,
    ) -> (Vec<Event>, usize) {
        if first.status() != StatusCode::OK {
            let answer = super::http::read_full(first).await;
            panic!(
                "stream request answered {}: {}",
                answer.status,
                answer.text()
            );
        }
        let mut events: Vec<Event> = Vec::new();
        let mut response = first;
        let mut resumptions = 0;
        loop {
            let cut = cuts.next();
            let mut reader = EventReader::new(response);
            let mut on_this_connection = 0;
            let mut answered = false;
            while cut != Some(on_this_connection) {
                let Some(event) = reader.next().await else {
                    break;
                };
                on_this_connection += 1;
                answered |= event.data["id"].as_u64() == Some(request_id)
                    && event.data.get("method").is_none();
                events.push(event);
                if answered {
                    return (events, resumptions);
                }
            }
            drop(reader);
            let last = events
                .iter()
                .rev()
                .find_map(|e| e.id.clone())
                .expect("an event id to resume from");
            resumptions += 1;
            response = self.resume(&last).await;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "resumption after {last} refused"
            );
            assert!(resumptions < 100, "too many resumptions");
        }
    }
}

/// Reads events (blocks with data) from an SSE body.
pub struct EventReader {
    body: Incoming,
    parser: SseParser,
}

impl EventReader {
    pub fn new(response: Response<Incoming>) -> Self {
        Self {
            body: response.into_body(),
            parser: SseParser::new(1 << 20),
        }
    }

    /// The next event; `None` when the stream ends (or breaks).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(block) = self.parser.next_block().expect("well-formed SSE") {
                if !block.has_data() {
                    continue;
                }
                let data = block.data();
                let data = if data.iter().all(u8::is_ascii_whitespace) {
                    Value::Null
                } else {
                    serde_json::from_slice(&data).expect("event data is JSON")
                };
                return Some(Event {
                    id: block.id().map(str::to_owned),
                    data,
                });
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("SSE bytes within the wait");
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.push(&data);
                    }
                }
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// The `progress` values of the notifications among `events`, in order.
pub fn progress_values(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.data["method"] == "notifications/progress")
        .map(|e| e.data["params"]["progress"].as_f64().expect("progress") as u64)
        .collect()
}

/// How many JSON-RPC responses to `request_id` are among `events`.
pub fn responses_to(events: &[Event], request_id: u64) -> usize {
    events
        .iter()
        .filter(|e| e.data["id"].as_u64() == Some(request_id) && e.data.get("method").is_none())
        .count()
}
