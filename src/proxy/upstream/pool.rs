//! The upstream client's connections: the idle pool (most recently used first, closed past the
//! idle timeout or when the upstream closes them, reaped by a task while any is idle), one
//! connection driven by the task using it, and the response body that gives its connection back
//! to the pool when read to its end.

use super::*;

/// The idle connections, most recently used last.
#[derive(Debug)]
pub(super) struct Pool {
    idle: Mutex<Vec<(Conn, Instant)>>,
    /// How long a connection may stay idle before it is closed instead of reused.
    idle_timeout: Duration,
    /// Whether the reaper task runs (started with the first connection pooled).
    reaper: AtomicBool,
    /// Where closed idle connections are counted (`upstream_idle_closed`).
    stats: Arc<ProxyStats>,
}

impl Pool {
    pub(super) fn new(idle_timeout: Duration, stats: Arc<ProxyStats>) -> Self {
        Self {
            idle: Mutex::default(),
            idle_timeout,
            reaper: AtomicBool::default(),
            stats,
        }
    }

    /// How often the reaper polls: a quarter of the idle timeout, between 10 ms and
    /// [`REAP_PERIOD`].
    fn reap_period(&self) -> Duration {
        (self.idle_timeout / 4).clamp(Duration::from_millis(10), REAP_PERIOD)
    }

    /// The most recently used idle connection that is not past the idle timeout (those passed
    /// over are closed and counted).
    pub(super) fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.lock();
        let mut closed = 0;
        let mut found = None;
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < self.idle_timeout && !conn.sender.is_closed() {
                found = Some(conn);
                break;
            }
            closed += 1;
        }
        drop(idle);
        self.count_closed(closed);
        found
    }

    /// Adds `closed` idle connections to `upstream_idle_closed`.
    fn count_closed(&self, closed: usize) {
        if closed > 0 {
            self.stats
                .upstream_idle_closed
                .fetch_add(closed as u64, Ordering::Relaxed);
        }
    }

    pub(super) fn put(self: &Arc<Self>, conn: Conn) {
        {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push((conn, Instant::now()));
            }
        }
        if !self.reaper.swap(true, Ordering::Relaxed) {
            // On the runtime that drives this pool's connections (the caller's).
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(reap_every_period(Arc::downgrade(self)))),
                Err(_) => self.reaper.store(false, Ordering::Relaxed),
            }
        }
    }

    /// Runs each idle connection's I/O once (no waker: the next period polls again), closing
    /// those the upstream closed and those idle past the idle timeout. Returns how many closed.
    fn reap(&self) -> usize {
        let mut cx = Context::from_waker(Waker::noop());
        let mut idle = self.idle.lock();
        let before = idle.len();
        idle.retain_mut(|(conn, since)| {
            if since.elapsed() >= self.idle_timeout {
                return false;
            }
            conn.poll_driver(&mut cx);
            conn.driver.is_some() && !conn.sender.is_closed()
        });
        before - idle.len()
    }
}

/// The reaper of one pool: [`Pool::reap`] every [`Pool::reap_period`], until the pool is gone.
async fn reap_every_period(pool: Weak<Pool>) {
    let period = match pool.upgrade() {
        Some(pool) => pool.reap_period(),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let closed = pool.reap();
        pool.count_closed(closed);
        if closed > 0 {
            tracing::debug!(
                closed,
                "closed idle upstream connections the upstream closed"
            );
        }
    }
}

type Driver = Pin<Box<http1::Connection<QuickAckStream, Full<Bytes>>>>;

/// One upstream connection: the handle requests are sent through, and the future that does its
/// I/O, polled by whoever holds the connection (`None` once it ended).
pub(super) struct Conn {
    pub(super) sender: SendRequest<Full<Bytes>>,
    pub(super) driver: Option<Driver>,
    /// Its place in the process-wide bound, held as long as the socket.
    pub(super) _place: ConnPlace,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("open", &self.driver.is_some())
            .finish()
    }
}

impl Conn {
    /// Runs the connection's I/O as far as it goes now.
    fn poll_driver(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = self.driver.as_mut()
            && let Poll::Ready(ended) = driver.as_mut().poll(cx)
        {
            if let Err(err) = ended {
                tracing::debug!(error = %ErrorChain(&err), "upstream connection ended");
            }
            self.driver = None;
        }
    }

    /// Resolves when the connection can take a request (at once for an idle one; a closed one
    /// errors).
    pub(super) async fn ready(&mut self) -> hyper::Result<()> {
        std::future::poll_fn(|cx| {
            self.poll_driver(cx);
            self.sender.poll_ready(cx)
        })
        .await
    }

    /// Awaits `exchange` while running the connection's I/O.
    pub(super) async fn drive<T>(&mut self, exchange: impl Future<Output = T>) -> T {
        let mut exchange = pin!(exchange);
        std::future::poll_fn(|cx| {
            self.poll_driver(cx);
            exchange.as_mut().poll(cx)
        })
        .await
    }
}

/// The body of an upstream response. Reading it runs its connection's I/O; read to the end, the
/// connection returns to the pool if it can take another request; dropped before, it closes.
pub struct UpstreamBody {
    pub(super) inner: Incoming,
    pub(super) conn: Option<Conn>,
    pub(super) pool: Arc<Pool>,
    /// The request outstanding at its endpoint until this body is read to its end or dropped.
    pub(super) outstanding: Option<crate::proxy::route::Outstanding>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// Keeps `outstanding` (the request counted at its endpoint) until the body ends.
    pub fn hold(&mut self, outstanding: crate::proxy::route::Outstanding) {
        self.outstanding = Some(outstanding);
    }

    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut conn) = self.conn.take() {
            conn.poll_driver(cx);
            if conn.driver.is_some() && matches!(conn.sender.poll_ready(cx), Poll::Ready(Ok(()))) {
                Pool::put(&self.pool, conn);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        // Twice at most: the first read of the body is what asks the connection for it.
        for _ in 0..2 {
            if let Some(conn) = this.conn.as_mut() {
                conn.poll_driver(cx);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) => {
                    this.outstanding = None;
                    this.release(cx);
                    return Poll::Ready(None);
                }
                Poll::Ready(frame) => return Poll::Ready(frame),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
