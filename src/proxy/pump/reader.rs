//! A legacy stream's client side: the body of the client connection reading the stream's
//! window through its reader, driving the pump inline while it waits, and whether an event
//! completes a `POST` stream.

use super::*;
use crate::proxy::keepalive::{self, KeepAlive};

/// Whether an event carries the JSON-RPC response (result or error) to `request_id` (raw JSON
/// text of the POST's id; `None`, as for a GET stream, answers `false`). A POST stream is
/// complete once its response went by. Cheap for notifications: their data is parsed only if it
/// could hold an `"id"` key.
pub fn is_response_to(block: &SseBlock, request_id: Option<&RawValue>) -> bool {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        method: Option<serde::de::IgnoredAny>,
    }
    let Some(request_id) = request_id else {
        return false;
    };
    if !block.has_data() {
        return false;
    }
    let data = block.data();
    // A response has a top-level "id" key; most events (progress and other notifications)
    // have no "id" anywhere and need no parse. Data with any escape (a key could be spelled
    // with \u) is parsed.
    static ID_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"id\""));
    if ID_KEY.find(&data).is_none() && memchr::memchr(b'\\', &data).is_none() {
        return false;
    }
    match serde_json::from_slice::<Peek>(&data) {
        Ok(peek) => peek.method.is_none() && peek.id.is_some_and(|id| id.get() == request_id.get()),
        Err(_) => false,
    }
}

/// The body of a client connection reading a legacy stream through reader `reader`, driving
/// `pump` (the stream's pump, when this reader started it) while it waits for events. When the
/// connection goes away the reader detaches (the pump moves to a task and lingers); if the
/// stream ends without its upstream being complete, the client gets a `retry:` hint so it
/// resumes with `Last-Event-ID`.
pub fn reader_body(
    tracker: Arc<EventTracker>,
    reader: u64,
    pump: Option<InlinePump>,
    streams: Arc<LegacyStreams>,
) -> axum::body::Body {
    struct ReaderState {
        tracker: Arc<EventTracker>,
        reader: u64,
        appended: watch::Receiver<u64>,
        ready: std::collections::VecDeque<Bytes>,
        done: bool,
        pump: Option<InlinePump>,
        /// When the client is due a keep-alive comment (`None`: off).
        keepalive: Option<KeepAlive>,
        streams: Arc<LegacyStreams>,
    }
    impl Drop for ReaderState {
        fn drop(&mut self) {
            self.tracker.detach(self.reader);
            self.streams.manager.stream_changed(&self.tracker);
            self.streams
                .stats
                .streams_open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stats = &streams.stats;
    ProxyStats::incr(&stats.streams_opened);
    ProxyStats::incr(&stats.streams_open);
    let state = ReaderState {
        appended: tracker.appended(),
        tracker,
        reader,
        ready: std::collections::VecDeque::new(),
        done: false,
        pump,
        keepalive: KeepAlive::new(streams.sse_keepalive),
        streams,
    };
    let events = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(bytes) = st.ready.pop_front() {
                if let Some(keepalive) = &mut st.keepalive {
                    keepalive.sent();
                }
                return Some((Ok::<_, Infallible>(bytes), st));
            }
            if st.done {
                return None;
            }
            st.appended.borrow_and_update();
            match st.tracker.read(st.reader) {
                // Everything ready goes out as one frame: one write, not one per event.
                Read::Events(events) if events.len() == 1 => st.ready.extend(events),
                Read::Events(events) => {
                    let mut joined = BytesMut::with_capacity(events.iter().map(Bytes::len).sum());
                    for event in &events {
                        joined.extend_from_slice(event);
                    }
                    st.ready.push_back(joined.freeze());
                }
                Read::Wait => {
                    // Nothing for the client for the keep-alive period: a comment (never in
                    // the window, so never replayed).
                    let keepalive = std::future::poll_fn(|cx| match &mut st.keepalive {
                        Some(keepalive) => keepalive.poll_due(cx),
                        None => Poll::Pending,
                    });
                    match st.pump.as_mut() {
                        // Drive the pump until it records something (it then publishes:
                        // `appended` changes) or ends.
                        Some(pump) => {
                            tokio::select! {
                                biased;
                                () = std::future::poll_fn(|cx| pump.poll(cx)) => st.pump = None,
                                changed = st.appended.changed() => {
                                    if changed.is_err() {
                                        st.done = true;
                                    }
                                }
                                () = keepalive => {
                                    st.ready.push_back(Bytes::from_static(keepalive::COMMENT));
                                    ProxyStats::incr(&st.streams.stats.keepalives_sent);
                                }
                            }
                        }
                        None => {
                            tokio::select! {
                                changed = st.appended.changed() => {
                                    if changed.is_err() {
                                        st.done = true;
                                    }
                                }
                                () = keepalive => {
                                    st.ready.push_back(Bytes::from_static(keepalive::COMMENT));
                                    ProxyStats::incr(&st.streams.stats.keepalives_sent);
                                }
                            }
                        }
                    }
                }
                Read::End(UpstreamState::Complete) | Read::Replaced => st.done = true,
                Read::End(_) => {
                    st.ready
                        .push_back(Bytes::from(format!("retry: {RESUME_RETRY_MS}\n\n")));
                    st.done = true;
                }
            }
        }
    });
    axum::body::Body::from_stream(events)
}
