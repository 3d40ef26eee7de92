//! Each socket's bounded outgoing queue, and the hub's one handle on that
//! socket: the hub fills it with `try_send`, the socket task drains it, and
//! the socket task notes in it when the socket was last heard from, which
//! the hub's liveness sweep reads.
//!
//! Single-threaded on purpose (`Rc<RefCell<..>>`, a bare `Waker`): the whole
//! daemon runs on one `LocalExecutor`, and a cross-thread channel would
//! allocate every slot up front, which costs real memory with thousands of
//! idle peers. This queue allocates only while it holds messages.
//!
//! Invariants:
//! - `try_send` never blocks and never grows the queue past its bound: a full
//!   queue is reported to the caller, who decides (the peer is dropped).
//! - After `close` or `abort` nothing more is accepted; the close frame goes
//!   out after whatever was queued before it (`close`) or at once (`abort`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::IpAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use crate::router::Delivery;

/// Messages waiting for one slow peer before it counts as not reading.
/// Signaling is bursty (a call setup is a dozen candidates), so 256 leaves
/// room for a phone that is busy for a moment without holding much memory.
pub const MAX_QUEUED_MESSAGES: usize = 256;
/// Bytes waiting for one peer before it counts as not reading. A single
/// message of any accepted size always fits into an empty queue.
pub const MAX_QUEUED_BYTES: usize = 1024 * 1024;

/// What the socket task should write next.
#[derive(Debug, PartialEq)]
pub enum Outgoing {
    Text(Rc<str>),
    /// A liveness probe; the peer's pong (or anything else) proves it alive.
    Ping,
    Close {
        code: u16,
        reason: &'static str,
    },
}

/// Why `try_send` refused a message (which it hands back).
#[derive(Debug, PartialEq)]
pub enum SendError {
    /// The bound is reached: the peer is not keeping up.
    Full(Delivery),
    /// The connection is closing; nothing more will be written.
    Closed(Delivery),
}

/// Where a socket comes from, for the status page: kept beside its queue,
/// 32 bytes per socket, read only when someone asks for `/api/status`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// The client's address.
    pub address: IpAddr,
    /// Over the HTTPS listener (`wss`).
    pub tls: bool,
    /// When the WebSocket opened, in Unix milliseconds.
    pub since_unix_ms: u64,
}

#[derive(Clone)]
pub struct Outbox {
    inner: Rc<RefCell<Inner>>,
}

struct Inner {
    queue: VecDeque<Delivery>,
    /// Sum of the lengths in `queue`.
    bytes: usize,
    /// Set once; sent after the queue drains.
    close: Option<(u16, &'static str)>,
    /// A ping to send before the next message.
    ping: bool,
    /// Set when the peer is dropped for not reading: the writer gives up on
    /// a write that may never finish.
    aborted: bool,
    /// The writer waiting in `recv`.
    recv_waker: Option<Waker>,
    /// The writer waiting for a write to finish, in `aborted()`.
    abort_waker: Option<Waker>,
    /// When the socket last delivered a frame of any kind.
    heard: Instant,
    /// When the liveness sweep last pinged it.
    pinged: Option<Instant>,
    link: Link,
}

impl Inner {
    fn pop_text(&mut self) -> Option<Rc<str>> {
        let Delivery { text, .. } = self.queue.pop_front()?;
        self.bytes -= text.len();
        if self.queue.is_empty() && self.queue.capacity() > 16 {
            // A burst is over: give its memory back, since most peers sit
            // idle for hours.
            self.queue = VecDeque::new();
        }
        Some(text)
    }
}

impl Outbox {
    /// The outbox of a socket from `link` opened at `now`.
    pub fn new(now: Instant, link: Link) -> Outbox {
        let inner = Inner {
            queue: VecDeque::new(),
            bytes: 0,
            close: None,
            ping: false,
            aborted: false,
            recv_waker: None,
            abort_waker: None,
            heard: now,
            pinged: None,
            link,
        };
        Outbox { inner: Rc::new(RefCell::new(inner)) }
    }

    /// The socket delivered a frame at `now`: it is alive.
    pub fn heard(&self, now: Instant) {
        self.inner.borrow_mut().heard = now;
    }

    /// Where the socket comes from.
    pub fn link(&self) -> Link {
        self.inner.borrow().link
    }

    /// When the socket was last heard from, and when it was last pinged.
    pub fn last_heard(&self) -> (Instant, Option<Instant>) {
        let inner = self.inner.borrow();
        (inner.heard, inner.pinged)
    }

    pub fn try_send(&self, delivery: Delivery) -> Result<(), SendError> {
        let mut inner = self.inner.borrow_mut();
        if inner.close.is_some() || inner.aborted {
            return Err(SendError::Closed(delivery));
        }
        let full = inner.queue.len() >= MAX_QUEUED_MESSAGES
            || (!inner.queue.is_empty() && inner.bytes + delivery.text.len() > MAX_QUEUED_BYTES);
        if full {
            return Err(SendError::Full(delivery));
        }
        inner.bytes += delivery.text.len();
        inner.queue.push_back(delivery);
        if let Some(waker) = inner.recv_waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Queue a close frame after what is already queued. The first close wins.
    pub fn close(&self, code: u16, reason: &'static str) {
        let mut inner = self.inner.borrow_mut();
        if inner.close.is_none() {
            inner.close = Some((code, reason));
        }
        if let Some(waker) = inner.recv_waker.take() {
            waker.wake();
        }
    }

    /// Queue a ping ahead of the next message (at most one is pending).
    pub fn ping(&self, now: Instant) {
        let mut inner = self.inner.borrow_mut();
        inner.ping = true;
        inner.pinged = Some(now);
        if let Some(waker) = inner.recv_waker.take() {
            waker.wake();
        }
    }

    /// Stop the writer even if it is stuck in a write to a peer that does
    /// not read, and hand back what was still queued. A `close` may follow.
    pub fn abort(&self) -> Vec<Delivery> {
        let mut inner = self.inner.borrow_mut();
        inner.aborted = true;
        for waker in [inner.recv_waker.take(), inner.abort_waker.take()].into_iter().flatten() {
            waker.wake();
        }
        drop(inner);
        self.take_all()
    }

    /// Everything still queued, in order; the queue is left empty.
    pub fn take_all(&self) -> Vec<Delivery> {
        let mut inner = self.inner.borrow_mut();
        inner.bytes = 0;
        std::mem::take(&mut inner.queue).into()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.borrow().queue.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next thing to write; waits while there is nothing.
    pub async fn recv(&self) -> Outgoing {
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.ping && !inner.aborted {
                inner.ping = false;
                return Poll::Ready(Outgoing::Ping);
            }
            if let Some(text) = inner.pop_text() {
                return Poll::Ready(Outgoing::Text(text));
            }
            if let Some((code, reason)) = inner.close {
                return Poll::Ready(Outgoing::Close { code, reason });
            }
            // Nothing to write: the writer sleeps, perhaps for hours, so the
            // queue's memory (a few deliveries' worth after the welcome) goes
            // back now rather than stay with every idle peer.
            inner.queue = VecDeque::new();
            inner.recv_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next queued message if there is one and nothing goes before it
    /// (a ping): what the writer adds to a write it is already making.
    pub fn next_text(&self) -> Option<Rc<str>> {
        let mut inner = self.inner.borrow_mut();
        if inner.ping || inner.aborted {
            return None;
        }
        inner.pop_text()
    }

    /// Resolves once `abort` has been called.
    pub async fn aborted(&self) {
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.aborted {
                return Poll::Ready(());
            }
            inner.abort_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    #[cfg(test)]
    pub fn is_aborted(&self) -> bool {
        self.inner.borrow().aborted
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn test_link() -> Link {
        Link { address: IpAddr::from([127, 0, 0, 1]), tls: false, since_unix_ms: 0 }
    }

    fn text(s: &str) -> Delivery {
        Delivery { text: s.into(), bounce: None }
    }

    #[test]
    fn bounded_by_count() {
        let outbox = Outbox::new(Instant::now(), test_link());
        for _ in 0..MAX_QUEUED_MESSAGES {
            outbox.try_send(text("x")).unwrap();
        }
        assert_eq!(outbox.try_send(text("x")), Err(SendError::Full(text("x"))));
        smol::block_on(outbox.recv());
        assert_eq!(outbox.try_send(text("x")), Ok(()), "one slot freed");
    }

    #[test]
    fn bounded_by_bytes_but_one_message_always_fits() {
        let outbox = Outbox::new(Instant::now(), test_link());
        outbox.try_send(text(&"x".repeat(MAX_QUEUED_BYTES + 1))).unwrap();
        assert_eq!(outbox.try_send(text("y")), Err(SendError::Full(text("y"))));
    }

    #[test]
    fn close_comes_after_what_was_queued() {
        let outbox = Outbox::new(Instant::now(), test_link());
        outbox.try_send(text("a")).unwrap();
        outbox.close(4001, "replaced");
        outbox.close(1001, "later closes lose");
        assert_eq!(outbox.try_send(text("b")), Err(SendError::Closed(text("b"))));
        smol::block_on(async {
            assert_eq!(outbox.recv().await, Outgoing::Text("a".into()));
            assert_eq!(outbox.recv().await, Outgoing::Close { code: 4001, reason: "replaced" });
        });
    }

    #[test]
    fn a_ping_goes_before_queued_messages() {
        let outbox = Outbox::new(Instant::now(), test_link());
        outbox.try_send(text("a")).unwrap();
        outbox.ping(Instant::now());
        smol::block_on(async {
            assert_eq!(outbox.recv().await, Outgoing::Ping);
            assert_eq!(outbox.recv().await, Outgoing::Text("a".into()));
        });
    }

    #[test]
    fn a_sleeping_writer_leaves_the_queue_without_memory() {
        let outbox = Outbox::new(Instant::now(), test_link());
        outbox.try_send(text("welcome")).unwrap();
        outbox.try_send(text("peers")).unwrap();
        let capacity = || outbox.inner.borrow().queue.capacity();
        assert!(capacity() > 0);
        smol::block_on(async {
            assert_eq!(outbox.recv().await, Outgoing::Text("welcome".into()));
            assert_eq!(outbox.next_text(), Some("peers".into()));
        });
        assert!(capacity() > 0, "kept while the writer is busy");
        use std::future::Future as _;
        use std::task::Context;
        let mut recv = std::pin::pin!(outbox.recv());
        let waker = std::task::Waker::noop();
        assert!(recv.as_mut().poll(&mut Context::from_waker(waker)).is_pending());
        assert_eq!(capacity(), 0, "given back when it sleeps");
        outbox.try_send(text("later")).unwrap();
        assert_eq!(recv.as_mut().poll(&mut Context::from_waker(waker)), Poll::Ready(Outgoing::Text("later".into())));
    }

    #[test]
    fn abort_discards_the_queue() {
        let outbox = Outbox::new(Instant::now(), test_link());
        outbox.try_send(text("a")).unwrap();
        outbox.ping(Instant::now());
        assert_eq!(outbox.abort(), [text("a")], "what was queued comes back");
        outbox.close(4008, "not reading");
        smol::block_on(async {
            outbox.aborted().await;
            assert_eq!(outbox.recv().await, Outgoing::Close { code: 4008, reason: "not reading" });
        });
    }
}
