//! Where events go: the call log (kept in memory, saved to `--state-dir`)
//! and every consumer's bounded queue (the live streams of `/api/events`,
//! MQTT, webhooks, ntfy).
//!
//! Invariants:
//! - Publishing never waits: each consumer has a bounded [`Queue`], pushed
//!   to without waiting. A full queue of a delivery sink (MQTT, a webhook) loses
//!   that event for that sink and counts it; a full live stream is a
//!   client that is not reading, and is cut off (it reconnects with
//!   `Last-Event-ID` and catches up from the log).
//! - The call log holds call events only (presence comes and goes too
//!   often to be history), at most [`MAX_LOG_EVENTS`] and [`MAX_LOG_BYTES`],
//!   oldest dropped first.
//! - The file is replaced whole, through a temporary file, `fsync` and a
//!   rename, so a power cut leaves the old log or the new one, never half
//!   of one. Writing happens off the daemon's thread (smol's blocking pool),
//!   at most one write at a time, and only after an event: a daemon nobody
//!   rings never touches the disk.

use std::cell::{Cell, RefCell};
use std::fs;
use std::future::poll_fn;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

use log::{info, warn};
use serde_json::Value;
use smol::channel::{self, Receiver, Sender};

use crate::events::{Event, Kind};

/// Call events kept in the log; older ones are dropped.
pub const MAX_LOG_EVENTS: usize = 500;
/// Bytes of JSON the log may hold (and so the file's size), whatever the
/// count: an event is 150 to 300 bytes, so this is rarely what bounds it.
pub const MAX_LOG_BYTES: usize = 256 * 1024;
/// The call log's file in `--state-dir`: one JSON event per line.
pub const LOG_FILE: &str = "events.jsonl";
/// Live streams (`GET /api/events` as Server-Sent Events) open at once;
/// the next one gets 503.
pub const MAX_STREAMS: usize = 32;
/// Events queued for one live stream before it counts as not reading.
pub const STREAM_QUEUE: usize = 64;

/// An event with its place in the sequence, encoded once for everyone.
#[derive(Debug)]
pub struct Published {
    /// Its number in the call log; `None` for presence, which is not kept.
    pub seq: Option<u64>,
    pub event: Event,
    /// [`Event::to_json`] of it.
    pub json: Rc<str>,
}

/// A consumer's counters, for `/metrics` (and the consumer's own health).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// `mqtt`, `webhook`, `ntfy`.
    pub name: &'static str,
    /// Which one of its kind (a webhook's URL without credentials).
    pub target: String,
    /// Events it delivered.
    pub delivered: Cell<u64>,
    /// Deliveries that failed for good (after the retries).
    pub failed: Cell<u64>,
    /// Events lost because its queue was full.
    pub dropped: Cell<u64>,
    /// Connected (MQTT) or last delivery succeeded (HTTP).
    pub up: Cell<bool>,
}

/// A consumer's end of its queue.
pub struct Subscription {
    pub events: Rc<Queue>,
    pub stats: Rc<SinkStats>,
}

/// One consumer's bounded queue of events. Single-threaded, so a `RefCell`
/// and one waker rather than a thread-safe channel: the feed pushes, the
/// consumer's task awaits [`Queue::recv`]. The feed drops its end when the
/// consumer has dropped its own (`Rc` count 1).
pub struct Queue {
    inner: RefCell<QueueInner>,
}

struct QueueInner {
    /// Oldest first; at most `capacity`.
    events: Vec<Rc<Published>>,
    capacity: usize,
    closed: bool,
    waker: Option<Waker>,
}

impl Queue {
    fn new(capacity: usize) -> Rc<Queue> {
        let inner = QueueInner { events: Vec::new(), capacity, closed: false, waker: None };
        Rc::new(Queue { inner: RefCell::new(inner) })
    }

    /// Queue `event`; false when the queue is full (or closed).
    fn push(&self, event: Rc<Published>) -> bool {
        let mut inner = self.inner.borrow_mut();
        if inner.closed || inner.events.len() >= inner.capacity {
            return false;
        }
        inner.events.push(event);
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
        true
    }

    /// No more events: [`Queue::recv`] returns what is queued, then `None`.
    fn close(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.closed = true;
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    /// The oldest queued event, if there is one.
    pub fn try_recv(&self) -> Option<Rc<Published>> {
        let mut inner = self.inner.borrow_mut();
        (!inner.events.is_empty()).then(|| inner.events.remove(0))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.borrow().events.len()
    }

    #[cfg(test)]
    fn is_closed(&self) -> bool {
        self.inner.borrow().closed
    }

    /// The next event; `None` once the queue is closed and empty.
    pub async fn recv(&self) -> Option<Rc<Published>> {
        poll_fn(|cx| {
            if let Some(event) = self.try_recv() {
                return Poll::Ready(Some(event));
            }
            let mut inner = self.inner.borrow_mut();
            if inner.closed {
                return Poll::Ready(None);
            }
            inner.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

struct Sink {
    queue: Rc<Queue>,
    /// A delivery sink's counters; `None` for a live stream, which is cut
    /// off (not counted as a loss) when full.
    stats: Option<Rc<SinkStats>>,
}

pub struct Feed {
    /// Call events (sequence number, JSON line), oldest first.
    log: Vec<(u64, Rc<str>)>,
    log_bytes: usize,
    next_seq: u64,
    sinks: Vec<Sink>,
    /// Where the log is saved; `None` in tests of the hub alone.
    path: Option<PathBuf>,
    /// Events published since start, by kind (in `Kind::ALL` order).
    pub published: [u64; Kind::ALL.len()],
    /// Nudges `save` after the log changed.
    dirty: Sender<()>,
    /// Taken by `save`.
    dirty_receiver: Option<Receiver<()>>,
}

impl Feed {
    /// An empty feed that saves nothing.
    pub fn new() -> Feed {
        let (dirty, dirty_receiver) = channel::bounded(1);
        Feed {
            log: Vec::new(),
            log_bytes: 0,
            next_seq: 1,
            sinks: Vec::new(),
            path: None,
            published: [0; Kind::ALL.len()],
            dirty,
            dirty_receiver: Some(dirty_receiver),
        }
    }

    /// The feed of a daemon whose state is in `dir`: the call log as it was
    /// saved (lines that are not events are skipped with a warning; a
    /// missing file is an empty log).
    pub fn load(dir: &Path) -> Feed {
        let mut feed = Feed::new();
        let path = dir.join(LOG_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mut skipped = 0;
                for line in text.lines() {
                    let seq = serde_json::from_str::<Value>(line)
                        .ok()
                        .filter(|value| value.get("event").is_some_and(Value::is_string))
                        .and_then(|value| value.get("seq").and_then(Value::as_u64));
                    match seq {
                        Some(seq) if seq >= feed.next_seq => {
                            feed.next_seq = seq + 1;
                            feed.keep(seq, line.into());
                        }
                        _ => skipped += 1,
                    }
                }
                if skipped > 0 {
                    warn!("{}: skipped {skipped} lines that are not events in order", path.display());
                }
                info!("call log: {} events from {}", feed.log.len(), path.display());
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => warn!("cannot read the call log {}: {error}; starting with an empty one", path.display()),
        }
        feed.path = Some(path);
        feed
    }

    /// The call log, oldest first.
    pub fn log(&self) -> impl DoubleEndedIterator<Item = &Rc<str>> + ExactSizeIterator {
        self.log.iter().map(|(_, json)| json)
    }

    /// The logged events after `seq`, oldest first.
    pub fn log_since(&self, seq: u64) -> Vec<(u64, Rc<str>)> {
        let first = self.log.partition_point(|(logged, _)| *logged <= seq);
        self.log[first..].to_vec()
    }

    /// The sequence number of the last call event (0: none yet).
    #[cfg(test)]
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Every delivery sink's counters (not the live streams').
    pub fn sinks(&self) -> impl Iterator<Item = &SinkStats> {
        self.sinks.iter().filter_map(|sink| sink.stats.as_deref())
    }

    /// Live streams open now.
    pub fn stream_count(&self) -> usize {
        self.sinks.iter().filter(|sink| sink.stats.is_none()).count()
    }

    /// A delivery sink (MQTT, a webhook): every event from now on, through
    /// a queue of `capacity`; what does not fit is counted in `dropped`.
    pub fn subscribe(&mut self, name: &'static str, target: String, capacity: usize) -> Subscription {
        let events = Queue::new(capacity);
        let stats = Rc::new(SinkStats { name, target, ..SinkStats::default() });
        self.sinks.push(Sink { queue: events.clone(), stats: Some(stats.clone()) });
        Subscription { events, stats }
    }

    /// A live stream, or `None` at [`MAX_STREAMS`]. Its queue closes when
    /// it falls [`STREAM_QUEUE`] events behind.
    pub fn stream(&mut self) -> Option<Rc<Queue>> {
        if self.stream_count() >= MAX_STREAMS {
            return None;
        }
        let events = Queue::new(STREAM_QUEUE);
        self.sinks.push(Sink { queue: events.clone(), stats: None });
        Some(events)
    }

    /// Give a call event the next sequence number and keep it; queue every
    /// event for every consumer. Only what is kept is numbered, so the
    /// numbers carry on across restarts (the next is one past the log's
    /// last) and a stream's `Last-Event-ID` always names a logged event.
    pub fn publish(&mut self, event: Event) {
        let seq = event.kind.is_call().then(|| {
            self.next_seq += 1;
            self.next_seq - 1
        });
        let json: Rc<str> = event.to_json(seq).into();
        if let Some(index) = Kind::ALL.iter().position(|kind| *kind == event.kind) {
            self.published[index] += 1;
        }
        if let Some(seq) = seq {
            self.keep(seq, json.clone());
            if self.path.is_some() {
                // Full means a save is already due, which will see this one.
                let _ = self.dirty.try_send(());
            }
        }
        let published = Rc::new(Published { seq, event, json });
        self.sinks.retain(|sink| {
            // A consumer that is gone.
            if Rc::strong_count(&sink.queue) == 1 {
                return false;
            }
            match (sink.queue.push(published.clone()), &sink.stats) {
                (true, _) => true,
                (false, Some(stats)) => {
                    stats.dropped.set(stats.dropped.get() + 1);
                    true
                }
                // A live stream that is not reading: cut off.
                (false, None) => {
                    sink.queue.close();
                    false
                }
            }
        });
    }

    fn keep(&mut self, seq: u64, json: Rc<str>) {
        self.log_bytes += json.len() + 1;
        self.log.push((seq, json));
        // The oldest go; a few hundred short entries move down, once per
        // call event.
        let mut drop = 0;
        while drop < self.log.len() && (self.log.len() - drop > MAX_LOG_EVENTS || self.log_bytes > MAX_LOG_BYTES) {
            self.log_bytes -= self.log[drop].1.len() + 1;
            drop += 1;
        }
        self.log.drain(..drop);
    }

    /// The log as the file's bytes.
    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.log_bytes);
        for (_, line) in &self.log {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        bytes
    }

    /// No more events will come (the daemon is stopping): `save` writes
    /// what it has not written yet, then returns.
    pub fn close(&self) {
        self.dirty.close();
    }
}

/// Save the call log whenever it changed, one write at a time, off the
/// daemon's thread. Waits on a channel in between: no timer, no wakeup.
/// Returns after [`Feed::close`], once the last change is written; the
/// daemon awaits that, so a write is never cut off by the exit.
pub async fn save(feed: Rc<RefCell<Feed>>) {
    let (dirty, path) = {
        let mut feed = feed.borrow_mut();
        match (feed.dirty_receiver.take(), feed.path.clone()) {
            (Some(dirty), Some(path)) => (dirty, path),
            _ => return,
        }
    };
    let mut failing = false;
    while dirty.recv().await.is_ok() {
        let bytes = feed.borrow().snapshot();
        let target = path.clone();
        // Off the daemon's thread (an SD card can take a good part of a
        // second to sync), on smol's blocking pool: the daemon's thread goes
        // on routing.
        match smol::unblock(move || write_atomically(&target, &bytes)).await {
            Ok(()) if failing => {
                info!("call log saved to {} again", path.display());
                failing = false;
            }
            Ok(()) => {}
            // Once per failing spell: a full SD card must not fill the
            // journal too.
            Err(error) if !failing => {
                warn!("cannot save the call log to {}: {error}; it is kept in memory", path.display());
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Replace `path` with `bytes`: a temporary file beside it, written and
/// synced, renamed over it, and the directory synced, so that after a power
/// cut the file is the old one or the new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: Kind, from: &str) -> Event {
        Event {
            kind,
            unix_ms: 1_796_220_000_000,
            room: "home".into(),
            from: from.into(),
            to: Some("*".into()),
            call: Some("c1".into()),
            by: None,
            reason: None,
            media: None,
            snapshot: None,
            elapsed: None,
        }
    }

    #[test]
    fn the_log_keeps_call_events_within_both_bounds() {
        let mut feed = Feed::new();
        feed.publish(event(Kind::Online, "kitchen"));
        assert_eq!(feed.log().len(), 0, "presence is not history");
        for n in 0..MAX_LOG_EVENTS + 5 {
            feed.publish(event(Kind::Ring, &format!("door{n}")));
        }
        assert_eq!(feed.log().len(), MAX_LOG_EVENTS);
        assert!(feed.log().next().unwrap().contains("\"seq\":6,"), "the oldest went first");
        assert_eq!(feed.last_seq(), MAX_LOG_EVENTS as u64 + 5, "presence has no number");
        let big = "d".repeat(60);
        let mut feed = Feed::new();
        for _ in 0..MAX_LOG_EVENTS {
            feed.publish(event(Kind::Ring, &big).clone());
            let mut with_long_room = event(Kind::Ring, &big);
            with_long_room.room = "r".repeat(1000);
            feed.publish(with_long_room);
        }
        assert!(feed.log_bytes <= MAX_LOG_BYTES);
        assert_eq!(feed.snapshot().len(), feed.log_bytes);
        assert!(feed.log().len() < MAX_LOG_EVENTS);
    }

    #[test]
    fn a_full_sink_loses_events_and_counts_them_a_full_stream_is_cut_off() {
        let mut feed = Feed::new();
        let sink = feed.subscribe("webhook", "http://hook".into(), 2);
        let stream = feed.stream().unwrap();
        for _ in 0..STREAM_QUEUE + 1 {
            feed.publish(event(Kind::Ring, "door"));
        }
        assert_eq!(sink.stats.dropped.get(), STREAM_QUEUE as u64 - 1);
        assert_eq!(sink.events.len(), 2);
        assert_eq!(feed.stream_count(), 0, "the stream that did not read is gone");
        assert_eq!(stream.len(), STREAM_QUEUE, "it keeps what it had queued");
        assert!(stream.is_closed());
        let first = smol::block_on(stream.recv()).unwrap();
        assert_eq!(first.seq, Some(1), "oldest first");
        while stream.try_recv().is_some() {}
        assert!(smol::block_on(stream.recv()).is_none(), "closed and drained: the end");
        drop(sink);
        feed.publish(event(Kind::Ring, "door"));
        assert_eq!(feed.sinks().count(), 0, "a sink whose task ended is let go");
    }

    #[test]
    fn streams_are_bounded() {
        let mut feed = Feed::new();
        let streams: Vec<_> = (0..MAX_STREAMS).map(|_| feed.stream().unwrap()).collect();
        assert!(feed.stream().is_none());
        drop(streams);
        feed.publish(event(Kind::Online, "kitchen"));
        assert!(feed.stream().is_some(), "closed streams free their places");
    }

    #[test]
    fn the_log_survives_a_restart_and_skips_what_is_not_an_event() {
        let dir = std::env::temp_dir().join(format!("intercomd-feed-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut feed = Feed::load(&dir);
        feed.publish(event(Kind::Ring, "door"));
        feed.publish(event(Kind::Missed, "door"));
        write_atomically(&dir.join(LOG_FILE), &feed.snapshot()).unwrap();
        assert!(!dir.join("events.jsonl.tmp").exists());
        let mut text = fs::read_to_string(dir.join(LOG_FILE)).unwrap();
        text.push_str("not json\n{\"seq\":1,\"event\":\"ring\"}\n{\"seq\":9}\n");
        fs::write(dir.join(LOG_FILE), text).unwrap();
        let feed = Feed::load(&dir);
        assert_eq!(feed.log().len(), 2);
        assert_eq!(feed.last_seq(), 2);
        assert_eq!(feed.log_since(1).len(), 1);
        assert_eq!(feed.log_since(0).len(), 2);
        assert_eq!(feed.log_since(2).len(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
