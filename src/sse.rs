//! The live event stream: `GET /api/events` as Server-Sent Events.
//!
//! The stream first replays the call log after the client's last event
//! (`Last-Event-ID`, which `EventSource` resends when it reconnects, or
//! `?since=`), then sends every event as it is published, each as
//! `id: <seq>` and `data: <event JSON>`. Subscribing and reading the log
//! happen in one borrow of the feed, so nothing falls between them.
//!
//! Invariants:
//! - A stream exists only while a client watches: its task holds the one
//!   timer (the heartbeat) and its place among `MAX_STREAMS`.
//! - A client that does not read is cut off when its queue fills (the feed
//!   closes it), and every write is bounded by `WRITE_TIMEOUT`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use log::debug;
use smol::channel::Receiver;
use smol::future::or;
use smol::io::AsyncWriteExt;

use crate::feed::{Feed, Queue, MAX_STREAMS};
use crate::http::{Response, WRITE_TIMEOUT};
use crate::stream::{with_timeout, Stream};

/// A comment line sent when nothing else was, so that a client that went
/// away is noticed (its write fails) and proxies keep the stream open.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// How long `EventSource` waits before reconnecting, in milliseconds.
const RETRY_MS: u32 = 2000;

/// A stream that has its place: its queue, and the logged events after
/// `since` to send first.
pub struct Opened {
    events: Rc<Queue>,
    backlog: Vec<(u64, Rc<str>)>,
}

/// Take a place among the streams (one borrow of the feed, so nothing falls
/// between the log and the queue), or the 503 to answer at `MAX_STREAMS`.
pub fn open(feed: &RefCell<Feed>, since: u64) -> Result<Opened, Response> {
    let mut feed = feed.borrow_mut();
    match feed.stream() {
        Some(events) => Ok(Opened { events, backlog: feed.log_since(since) }),
        None => {
            let message = format!("{MAX_STREAMS} event streams are open already; try again later");
            Err(Response::json_error(503, &message).with_header("Retry-After", "30"))
        }
    }
}

/// Serve the stream on `stream` until the client goes, does not read, or
/// the daemon stops (`stop` closes).
pub async fn serve(mut stream: Stream, opened: Opened, head: Vec<u8>, address: SocketAddr, stop: Receiver<()>) {
    let Opened { events, backlog } = opened;
    let mut first = head;
    let _ = write!(Text(&mut first), "retry: {RETRY_MS}\n\n");
    for (seq, json) in &backlog {
        frame(&mut first, Some(*seq), json);
    }
    drop(backlog);
    if !send(&mut stream, &first).await {
        return;
    }
    drop(first);
    debug!("{address}: event stream opened");
    loop {
        // `None`: the daemon is stopping, or the feed cut this stream off
        // (closed its queue) because the client did not read.
        let next = with_timeout(
            HEARTBEAT,
            or(events.recv(), async {
                let _ = stop.recv().await;
                None
            }),
        )
        .await;
        let mut bytes = Vec::new();
        match next {
            Some(None) => break,
            Some(Some(published)) => {
                frame(&mut bytes, published.seq, &published.json);
                // Whatever else is queued goes in the same write.
                while let Some(published) = events.try_recv() {
                    frame(&mut bytes, published.seq, &published.json);
                }
            }
            // Nothing for a while: the heartbeat.
            None => bytes.extend_from_slice(b":\n\n"),
        }
        if !send(&mut stream, &bytes).await {
            break;
        }
    }
    let _ = with_timeout(WRITE_TIMEOUT, stream.close()).await;
    debug!("{address}: event stream closed");
}

/// One event: `id: 7\ndata: {...}\n\n`. Presence has no `id:`, so it
/// leaves the browser's `Last-Event-ID` on the last logged event.
fn frame(bytes: &mut Vec<u8>, seq: Option<u64>, json: &str) {
    if let Some(seq) = seq {
        let _ = writeln!(Text(bytes), "id: {seq}");
    }
    let _ = write!(Text(bytes), "data: {json}\n\n");
}

async fn send(stream: &mut Stream, bytes: &[u8]) -> bool {
    let written = with_timeout(WRITE_TIMEOUT, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await;
    matches!(written, Some(Ok(())))
}

/// `fmt::Write` into a byte buffer.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}
