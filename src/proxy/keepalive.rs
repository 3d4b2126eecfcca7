//! Keep-alive comments on the SSE streams the proxy sends to clients. Load balancers, reverse
//! proxies and NATs cut a connection that carries nothing for their idle timeout (nginx's
//! `proxy_read_timeout` is 60 s by default, often lowered), and an MCP tool may work for longer
//! than that before its next event. After `proxy.sse_keepalive_secs` with nothing sent to the
//! client, the stream gets an SSE comment line ([`COMMENT`]): clients ignore comments (WHATWG
//! HTML, "Server-sent events", a line starting with `:`), so it changes nothing they see. It is
//! made at the client's side of the stream: never recorded in a replay window, never replayed,
//! never counted as an event, and it carries no id.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};

/// The keep-alive comment: one comment line and the blank line that ends its block.
pub const COMMENT: &[u8] = b": keep-alive\n\n";

/// The keep-alive clock of one client stream: due once `period` has passed since bytes last
/// went to the client.
#[derive(Debug)]
pub struct KeepAlive {
    period: Duration,
    last_sent: Instant,
    /// Armed at the first wait (so a body can be built outside a runtime).
    sleep: Option<Pin<Box<Sleep>>>,
}

impl KeepAlive {
    /// The clock of a stream opened now; `None` when `period` is zero (keep-alives off).
    pub fn new(period: Duration) -> Option<Self> {
        (!period.is_zero()).then(|| Self {
            period,
            last_sent: Instant::now(),
            sleep: None,
        })
    }

    /// Notes that bytes went to the client now.
    pub fn sent(&mut self) {
        self.last_sent = Instant::now();
    }

    /// Ready once the stream has been silent for the period (the comment is then taken as
    /// sent); else registers `cx` to be woken when it will be.
    pub fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let due = self.last_sent + self.period;
            if Instant::now() >= due {
                self.sent();
                return Poll::Ready(());
            }
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if sleep.deadline() != due {
                sleep.as_mut().reset(due);
            }
            std::task::ready!(sleep.as_mut().poll(cx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_period_turns_keep_alives_off() {
        assert!(KeepAlive::new(Duration::ZERO).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn it_is_due_after_a_period_of_silence_and_each_send_restarts_the_period() {
        let mut keepalive = KeepAlive::new(Duration::from_secs(15)).expect("on");
        let due = |k: &mut KeepAlive| {
            k.poll_due(&mut Context::from_waker(std::task::Waker::noop()))
                .is_ready()
        };
        assert!(!due(&mut keepalive));
        tokio::time::advance(Duration::from_secs(10)).await;
        keepalive.sent();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!due(&mut keepalive), "10 s after the last send");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(due(&mut keepalive), "15 s after the last send");
        assert!(!due(&mut keepalive), "the comment counts as sent");
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(due(&mut keepalive));
        // Waited for, it wakes its task at the deadline.
        tokio::time::timeout(
            Duration::from_secs(16),
            std::future::poll_fn(|cx| keepalive.poll_due(cx)),
        )
        .await
        .expect("woken when due");
    }
}
