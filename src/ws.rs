//! The WebSocket side: checking an upgrade request, and each socket's read
//! and write loops.
//!
//! We own the upgrade (the front door in `conn.rs` has already read the
//! head): check the headers and the Origin, write `101` with
//! `derive_accept_key`, then wrap the socket with `from_partially_read`, so
//! bytes the client sent right after its head are not lost.
//!
//! Each socket runs as one task with two halves polled together: the reader
//! hands frames to the hub; the writer drains the peer's outbox. Neither
//! half ever waits on another peer, and neither holds a timer: liveness and
//! the reconnect grace are the hub's (`hub::run_timers`). The task ends
//! when its socket does, and tells the hub how.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_sink::Sink;
use log::debug;
use smol::future::or;
use smol::stream::StreamExt;

use crate::codec::Codec;
use crate::http::{Request, Response};
use crate::hub::{unix_ms_now, Hub};
use crate::outbox::{Link, Outbox, Outgoing};
use crate::protocol::{close, ErrorCode, Hello, Rejection};
use crate::router::ConnId;
use crate::stream::{with_timeout, PolledWhenWoken, Stream};

/// tungstenite's read buffer, and the most it takes from the socket at a
/// time. It exists for every idle peer, so it is 256 bytes, not
/// tungstenite's 128 KiB default (138 KB of RSS per idle peer): a plain
/// socket is read 16 KiB at a time below it (`stream::READ_AHEAD_BYTES`) and
/// TLS by rustls, so a small chunk costs copies, not system calls. A larger
/// frame grows it to the frame's size. (1 KiB cost 0.75 KiB more per idle
/// peer, and no relay row of `benches/relay.rs` was faster for it.)
pub const READ_BUFFER_BYTES: usize = 256;
/// Queued messages are written to a socket together, in one write of up to
/// about this many bytes (more only for one large message): one system call
/// for a burst instead of one per message. tungstenite keeps a buffer of
/// this size for a socket that had such a burst, which is why it is not
/// larger: 32 KiB cut the kernel's time per 4 KB message in a burst by up to
/// half (each loopback write also wakes the reader), but the daemon's RSS
/// across ten minutes of churn and relay then grew 8.3% instead of 0.4%
/// (`benches/relay.rs --only churn`).
pub const WRITE_BATCH_BYTES: usize = 16 * 1024;
/// Frames a socket's reader handles in a row, its socket never running dry,
/// before it lets the other tasks run. Without it a client faster than the
/// daemon (every client, on a Pi Zero) keeps the reader going while the
/// writers it fills never run, and their peers are dropped as slow readers.
/// Counted from the reader's last wait, so a burst that the socket delivers
/// and then runs out of (16 messages in flight) is never cut in two; 32 stays
/// far below `MAX_QUEUED_MESSAGES`.
pub const FRAMES_BEFORE_YIELD: usize = 32;
/// The same in bytes: a quarter of `MAX_QUEUED_BYTES`, so a run of large
/// messages gives way before it could fill a queue.
pub const BYTES_BEFORE_YIELD: usize = 256 * 1024;
/// How long a close handshake may take before the socket is just dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// tungstenite's limits, sized on purpose for thousands of peers on a Pi.
pub fn websocket_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        // Frames collect until a batch is flushed (`write_batch`) or passes
        // this size; nothing waits in the buffer between batches.
        .write_buffer_size(WRITE_BATCH_BYTES)
        // A batch, one more message, a pong and a close frame at most.
        .max_write_buffer_size(WRITE_BATCH_BYTES + 2 * max_message_bytes + 1024)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// Check an upgrade request for a WebSocket endpoint. `Ok` carries the
/// `101` head to write; `Err` the response that refuses it.
pub fn check_upgrade(request: &Request, allowed_origins: &[String]) -> Result<Vec<u8>, Response> {
    if request.method != "GET" {
        return Err(Response::json_error(405, "the WebSocket endpoint takes GET").with_header("Allow", "GET"));
    }
    let is_upgrade = request.header_has_token("connection", "upgrade")
        && request.header("upgrade").is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return Err(Response::json_error(426, "this endpoint speaks WebSocket only")
            .with_header("Upgrade", "websocket")
            .with_header("Sec-WebSocket-Version", "13"));
    }
    if request.header("sec-websocket-version") != Some("13") {
        return Err(Response::json_error(426, "only WebSocket version 13 is supported")
            .with_header("Sec-WebSocket-Version", "13"));
    }
    let key = request.header("sec-websocket-key").unwrap_or_default();
    if !is_valid_key(key) {
        return Err(Response::json_error(400, "missing or malformed Sec-WebSocket-Key"));
    }
    if !origin_allowed(request.header("origin"), request.header("host"), allowed_origins) {
        return Err(Response::json_error(403, "this page's origin may not open the intercom WebSocket"));
    }
    let accept = derive_accept_key(key.as_bytes());
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes())
}

/// A key is 16 random bytes in base64: 24 characters ending in `==`.
fn is_valid_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Browsers always send `Origin` on a WebSocket; a missing one is a native
/// client (a door-station script, curl), which the Origin check is not
/// about. A page may connect when it was served by this daemon (its origin's
/// host is the `Host` it asked for) or when its origin was allowed by flag.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    let origin = origin.trim().to_ascii_lowercase();
    if allowed.contains(&origin) {
        return true;
    }
    let Some(authority) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else {
        return false;
    };
    host.is_some_and(|host| host.trim().eq_ignore_ascii_case(authority))
}

/// Why the reader stopped.
enum ReadEnd {
    /// The peer closed with a close frame: it left on purpose.
    Closed,
    /// The connection broke without a close (reset, EOF, protocol error).
    Broken,
    /// We refused the connection's input (too large, not UTF-8): an error
    /// and a close frame are queued for the writer.
    Refused,
}

/// Why the writer stopped.
enum WriteEnd {
    /// Our close frame went out (replaced, shutting down, not reading, not
    /// answering pings). The hub queued it, so it has already decided what
    /// the peer's departure means.
    CloseSent,
    /// The socket failed under a write.
    Failed,
}

/// What ended a socket first.
enum First {
    Read(ReadEnd),
    Wrote(WriteEnd),
}

/// What the HTTP phase hands on when a request upgrades to a WebSocket.
pub struct Upgrade {
    pub stream: Stream,
    /// Bytes the client sent after its request head.
    pub leftover: Vec<u8>,
    /// What the endpoint and query asked for.
    pub hello: Result<Hello, Rejection>,
    pub codec: Codec,
    /// Where it comes from, for the status page.
    pub link: Link,
}

/// Run one upgraded socket until it closes.
///
/// The upgrade comes boxed and is taken apart at once: an async function
/// keeps its arguments for as long as it runs (for a peer, hours), and the
/// upgrade is about 270 bytes where its box is 8.
pub async fn serve(hub: &RefCell<Hub>, max_message_bytes: usize, upgrade: Box<Upgrade>) {
    let Upgrade { stream, leftover, hello, codec, mut link } = *upgrade;
    let config = websocket_config(max_message_bytes);
    // Boxed so that the handshake's state is freed once it is done instead
    // of staying part of every idle peer's task.
    let handshake = Box::pin(WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config)));
    let socket = handshake.await;
    let now = Instant::now();
    link.since_unix_ms = unix_ms_now();
    let (conn, outbox) = hub.borrow_mut().open(now, link);
    hub.borrow_mut().join(conn, codec, hello, now);
    let (mut sender, mut receiver) = socket.split();

    let mut writing = pin!(write_loop(&mut sender, &outbox));
    // Read only when the socket woke the reader: every write the writer
    // makes would otherwise also cost a read that finds nothing.
    let reading = PolledWhenWoken::new(read_loop(hub, max_message_bytes, conn, &outbox, &mut receiver));
    let first = or(async { First::Read(reading.await) }, async { First::Wrote((&mut writing).await) }).await;
    let abrupt = match first {
        First::Read(ReadEnd::Closed) => false,
        First::Read(ReadEnd::Broken) | First::Wrote(WriteEnd::Failed) => true,
        First::Read(ReadEnd::Refused) => {
            // Let the error and the close frame go out.
            with_timeout(CLOSE_TIMEOUT, writing).await;
            false
        }
        First::Wrote(WriteEnd::CloseSent) => {
            // Wait for the peer's close reply so the close code reaches it
            // rather than a reset.
            with_timeout(CLOSE_TIMEOUT, async { while let Some(Ok(_)) = receiver.next().await {} }).await;
            false
        }
    };
    hub.borrow_mut().closed(conn, abrupt, Instant::now());
}

thread_local! {
    /// Frames and bytes handled by readers since a reader last waited or
    /// gave way. Kept here rather than in each reader, whose state every
    /// idle peer pays for: between two waits only one reader runs, so the
    /// count is that reader's run. (A reader that ends at the limit makes
    /// the next one give way once before it reads: harmless.)
    static RUN: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

async fn read_loop(
    hub: &RefCell<Hub>,
    max_message_bytes: usize,
    conn: ConnId,
    outbox: &Outbox,
    receiver: &mut WebSocketReceiver<Stream>,
) -> ReadEnd {
    let mut saw_close = false;
    // One wait only: giving way is a `Pending` of this same wait, so that
    // the reader's state, which every idle peer keeps, stays as small as a
    // reader that never gives way (a second `.await` made it 56 bytes larger).
    while let Some(result) = poll_fn(|cx| {
        let (frames, bytes) = RUN.get();
        if frames >= FRAMES_BEFORE_YIELD || bytes >= BYTES_BEFORE_YIELD {
            // The socket had more every time: let the writers this reader
            // has filled run before it goes on (see the constants).
            RUN.set((0, 0));
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let poll = receiver.poll_next(cx);
        if poll.is_pending() {
            RUN.set((0, 0));
        }
        poll
    })
    .await
    {
        let (frames, bytes) = RUN.get();
        match handle(hub, max_message_bytes, conn, outbox, result) {
            Handled::Frame(length) => RUN.set((frames + 1, bytes + length)),
            Handled::Close => saw_close = true,
            Handled::End(end) => return end,
        }
    }
    if saw_close {
        ReadEnd::Closed
    } else {
        ReadEnd::Broken
    }
}

/// What became of one frame.
enum Handled {
    /// Handled; its payload's length.
    Frame(usize),
    /// A close frame: tungstenite answers it by itself and the stream ends next.
    Close,
    /// The socket is done for.
    End(ReadEnd),
}

fn handle(
    hub: &RefCell<Hub>,
    max_message_bytes: usize,
    conn: ConnId,
    outbox: &Outbox,
    result: Result<Message, WsError>,
) -> Handled {
    let now = Instant::now();
    outbox.heard(now);
    match result {
        Ok(Message::Text(text)) => {
            hub.borrow_mut().receive(conn, text.as_str(), now);
            Handled::Frame(text.len())
        }
        Ok(Message::Binary(data)) => {
            hub.borrow_mut().reject(
                conn,
                Rejection::new(ErrorCode::BadMessage, "binary frames are not part of the protocol: send JSON text"),
            );
            Handled::Frame(data.len())
        }
        Ok(Message::Close(_)) => Handled::Close,
        // tungstenite answers pings by itself; a pong is proof of life,
        // which the outbox has already noted.
        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Handled::Frame(0),
        Err(WsError::Capacity(_)) => {
            let rejection =
                Rejection::new(ErrorCode::TooLarge, format!("messages are limited to {max_message_bytes} bytes"));
            hub.borrow_mut().fail(conn, rejection, close::TOO_LARGE);
            Handled::End(ReadEnd::Refused)
        }
        Err(WsError::Utf8(_)) => {
            let rejection = Rejection::new(ErrorCode::BadMessage, "a text frame was not valid UTF-8");
            hub.borrow_mut().fail(conn, rejection, close::INVALID_DATA);
            Handled::End(ReadEnd::Refused)
        }
        Err(error) => {
            debug!("websocket {} broke: {error}", conn.0);
            Handled::End(ReadEnd::Broken)
        }
    }
}

/// Drain the outbox into the socket until a close frame has gone out or the
/// socket fails. A peer dropped for not reading is given up on at once.
async fn write_loop(sender: &mut WebSocketSender<Stream>, outbox: &Outbox) -> WriteEnd {
    loop {
        // Each write is a boxed future of its own, made in its own
        // statement: this loop waits in `recv` nearly all of its life, and
        // its size is that of its largest wait, for every idle peer.
        let written = match outbox.recv().await {
            Outgoing::Text(text) => {
                let writing = Box::pin(race_abort(outbox, write_batch(sender, outbox, text)));
                writing.await
            }
            Outgoing::Ping => {
                let writing = Box::pin(race_abort(outbox, sender.send(Message::Ping(Default::default()))));
                writing.await
            }
            Outgoing::Close { code, reason } => {
                let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                let closing = Box::pin(with_timeout(CLOSE_TIMEOUT, sender.close(Some(frame))));
                closing.await;
                return WriteEnd::CloseSent;
            }
        };
        match written {
            Some(Ok(())) => {}
            // Aborted: the queue was cleared and a close is coming.
            None => continue,
            Some(Err(error)) => {
                debug!("websocket write failed: {error}");
                return WriteEnd::Failed;
            }
        }
    }
}

/// Write `first` and whatever else is queued behind it, up to
/// `WRITE_BATCH_BYTES`, then flush once.
async fn write_batch(sender: &mut WebSocketSender<Stream>, outbox: &Outbox, first: Rc<str>) -> Result<(), WsError> {
    let mut sender = Pin::new(sender);
    let mut batched = 0;
    let mut next = Some(first);
    while let Some(text) = next {
        batched += text.len();
        poll_fn(|cx| sender.as_mut().poll_ready(cx)).await?;
        sender.as_mut().start_send(Message::text(&*text))?;
        next = if batched < WRITE_BATCH_BYTES { outbox.next_text() } else { None };
    }
    poll_fn(|cx| sender.as_mut().poll_flush(cx)).await
}

/// `Some(output)`, or `None` if the outbox is aborted first.
async fn race_abort<T>(outbox: &Outbox, future: impl Future<Output = T>) -> Option<T> {
    or(async { Some(future.await) }, async {
        outbox.aborted().await;
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let allowed = vec!["https://panel.example".to_string()];
        let check = |origin, host| origin_allowed(origin, host, &allowed);
        assert!(check(None, Some("pi:8080")), "native clients send no Origin");
        assert!(check(Some("http://pi:8080"), Some("pi:8080")));
        assert!(check(Some("http://PI:8080"), Some("pi:8080")));
        assert!(check(Some("https://panel.example"), Some("pi:8080")));
        assert!(!check(Some("http://evil.example"), Some("pi:8080")));
        assert!(!check(Some("http://pi:8081"), Some("pi:8080")));
        assert!(!check(Some("null"), Some("pi:8080")));
        assert!(!check(Some("http://pi:8080"), None));
    }

    #[test]
    fn keys() {
        assert!(is_valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key("dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!is_valid_key("dGhlIHNhbXBsZSBub25j!Q=="));
        assert!(!is_valid_key(""));
    }
}
