//! MQTT with Home Assistant discovery (`--mqtt`): every event goes to a
//! broker, and the door stations that ring appear in Home Assistant; with
//! `--mqtt-door-open`, a publish to a door's command topic opens it.
//!
//! One task ([`run`]), started by `server::run` only when `--mqtt` is
//! given: without the flag there is no connection, no queue and no timer.
//! It speaks MQTT 3.1.1 on the daemon's own socket, with `mqttbytes`
//! encoding what it sends; what it receives (CONNACK, PUBACK, PINGRESP,
//! and with `--mqtt-door-open` SUBACK and PUBLISH) is decoded here
//! ([`parse`]).
//!
//! What goes where (`<p>` is `--mqtt-prefix`, `<d>` is
//! `--mqtt-discovery-prefix`, `<node>` and `<sid>` are the prefix and the
//! station's id made safe for topics, see [`topic_id`]):
//! - `<p>/events`: every event's JSON line as the call log has it, QoS 1,
//!   not retained.
//! - `<p>/status`: `online`, retained; the broker publishes `offline`
//!   (retained, the last will) when the daemon's connection dies.
//! - `<p>/online`: who is online, `{"count":N,"peers":[{"id":..,"room":..}]}`,
//!   retained, updated on `online` and `offline` events and at connect.
//! - `<p>/station/<sid>/ring`: a door station's ring for its Home Assistant
//!   `event` entity, `{"event_type":"ring",...}`, QoS 1, not retained.
//! - `<p>/station/<sid>/ringing`: `ON` from a ring until it is answered,
//!   rejected or missed, then `OFF`, retained.
//! - `<d>/<component>/<node>/<object>/config`: discovery, retained. A
//!   station (a peer that rings) is announced before its first ring event,
//!   and every station in the call log again at every (re)connect.
//! - Only with `--mqtt-door-open`, the one topic the daemon subscribes to,
//!   per `--door-open` door: `<p>/door/<sid>/open`. [`OPEN`] published
//!   there (not retained) opens that door, as the door's Home Assistant
//!   `button` ("Open door", announced at every connect) does.
//!
//! Opening by MQTT (see `door.rs`: no call and no PIN, whoever may publish
//! to the broker is trusted):
//! - The subscription is QoS 0: an open is at most once. A lost press is
//!   pressed again; a door that opens twice, or late, cannot be taken back
//!   (and with a clean session QoS 1 would redeliver nothing anyway). A QoS 1
//!   message from a broker that ignores the granted QoS is acknowledged and
//!   handled the same.
//! - A retained message never opens: a broker hands it to every new
//!   subscription, so it would open the door at every reconnect. One
//!   warning says how to clear it.
//! - A message longer than [`MAX_INCOMING_BYTES`] is skipped as it arrives,
//!   never buffered; only `OPEN` opens, anything else is logged and
//!   ignored.
//! - Each open (`opener::open`) runs in this task beside the connection
//!   ([`Opens`]), so keep-alive and events go on while a command runs, and a
//!   broker that goes away neither cuts the command short nor leaves its
//!   door marked as opening. A door that is opening refuses (the hub's
//!   `Refusal::Busy`, logged); nothing is queued.
//!
//! Invariants:
//! - The router never waits for MQTT: events reach this task through the
//!   feed's bounded queue ([`QUEUE`]); it is the only thing read here.
//! - Every wait on the broker is bounded ([`CONNECT_TIMEOUT`],
//!   [`RESPONSE_TIMEOUT`], [`WRITE_TIMEOUT`], [`ACK_TIMEOUT`]); a broker
//!   that breaks one, or sends what is not MQTT, is left, and the task
//!   reconnects after a backoff ([`BACKOFF_MIN`] doubling to
//!   [`BACKOFF_MAX`], with jitter).
//! - A QoS 1 publish stays in flight (at most [`MAX_IN_FLIGHT`]) until its
//!   PUBACK; after a reconnect the unacknowledged ones are sent again with
//!   DUP set, before anything new. Retained state (status, discovery,
//!   ringing, who is online) is QoS 0 and published whole again at every
//!   connect, so a lost copy is never stale for long.
//! - No borrow of the hub or the feed spans an `.await`.
//! - The password is never logged: the broker is named by `Mqtt::target`.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use async_net::TcpStream;
use bytes::{Buf, Bytes, BytesMut};
use log::{debug, info, warn};
use mqttbytes::v4::{Connect, LastWill, Login, PingReq, Publish, Subscribe, SubscribeFilter};
use mqttbytes::QoS;
use serde_json::Value;
use smol::future::or;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Timer;

use crate::config::{Doors, Mqtt};
use crate::events::{push_json_string, Kind};
use crate::feed::{Feed, Published, Subscription};
use crate::hub::Hub;
use crate::opener;
use crate::resolve;
use crate::stream::with_timeout;

/// Events waiting for the broker (while it is away, or while the in-flight
/// window is full). Past it the feed drops new events for MQTT and counts
/// them in `dropped`; the call log and the other consumers still get them.
pub const QUEUE: usize = 256;
/// QoS 1 publishes sent and not yet acknowledged. At it, no more events are
/// taken from the queue until a PUBACK frees a place.
pub const MAX_IN_FLIGHT: usize = 32;
/// The keep-alive sent in CONNECT: after this long without sending, a
/// PINGREQ goes out (the broker gives up on us after one and a half times
/// this, and then publishes the last will).
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Time to resolve the broker's name and open the TCP connection; past it,
/// the attempt failed and the backoff starts.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the broker has to answer CONNECT with CONNACK, and PINGREQ with
/// PINGRESP; past it the connection is dropped and the task reconnects.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one write to the broker may take; past it, the connection is
/// dropped and the task reconnects (what was in flight is sent again).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the broker has to acknowledge a QoS 1 publish; past it the
/// connection is dropped and the publish is sent again after a reconnect.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// The first pause before reconnecting; it doubles after each failed
/// attempt and starts over after a successful CONNACK.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest pause between attempts. Each pause is drawn between half
/// its value and its value, so daemons restarted together spread out.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Door stations announced to Home Assistant. A peer ringing past it still
/// has its events published, but gets no device (one warning): a page that
/// rings under ever new ids cannot fill Home Assistant with devices.
pub const MAX_STATIONS: usize = 64;
/// The longest message taken on a door's command topic (its remaining
/// length: topic, packet id and payload). Our longest topic is 212 bytes (a
/// 128-byte prefix, `/door/`, a 73-byte door id, `/open`); a longer message
/// is skipped as its bytes arrive, never buffered. Also the longest SUBACK
/// taken (510 doors).
pub const MAX_INCOMING_BYTES: usize = 512;
/// The payload that opens a door (Home Assistant's button is told to send
/// it); anything else is ignored.
pub const OPEN: &str = "OPEN";
/// QoS 1 publishes one event can make (the event, and a station's ring).
const MAX_PUBLISHES_PER_EVENT: usize = 2;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 256;

/// Publish the feed's events to the broker of `config`, forever: connect,
/// announce, publish, and reconnect with backoff when the broker goes away.
/// With `doors` that allow it (`--mqtt-door-open`), also subscribe to their
/// command topics and open them. Never returns (it is one arm of
/// `server::run`'s `or` chain).
pub async fn run(
    config: &Mqtt,
    doors: Option<&Doors>,
    subscription: Subscription,
    hub: &RefCell<Hub>,
    feed: &RefCell<Feed>,
    pictures: Option<PathBuf>,
) {
    let target = config.target();
    let doors = doors.filter(|doors| doors.mqtt);
    let door_ids = doors.map_or_else(Vec::new, |doors| doors.stations.iter().map(|(id, _)| id.clone()).collect());
    let mut session = Session {
        config,
        client_id: format!("intercomd-{:08x}", fastrand::u32(..)),
        subscription: &subscription,
        hub,
        feed,
        announcer: Announcer::new(config, pictures.is_some(), door_ids),
        pictures,
        in_flight: Vec::new(),
        next_packet_id: 1,
        connected: false,
        door_timeout: doors.map_or(Duration::ZERO, |doors| doors.timeout),
        suback: None,
        warned_retained: false,
    };
    let opens = Opens { running: RefCell::new(Vec::new()), waker: Cell::new(None) };
    let connections = async {
        let mut backoff = BACKOFF_MIN;
        // Whether the last warning still stands: failed retries after it are
        // logged at debug only.
        let mut quiet = false;
        loop {
            let why = session.connection(&target, &opens).await;
            subscription.stats.up.set(false);
            if matches!(why, Lost::QueueClosed) {
                return std::future::pending().await;
            }
            if session.connected {
                warn!("mqtt: lost the connection to {target}: {why}; reconnecting");
                backoff = BACKOFF_MIN;
                quiet = true;
            } else if !quiet {
                warn!("mqtt: cannot connect to {target}: {why}; retrying every {BACKOFF_MIN:?} to {BACKOFF_MAX:?}");
                quiet = true;
            } else {
                debug!("mqtt: cannot connect to {target}: {why}");
            }
            // Between half the backoff and all of it, in whole milliseconds: no
            // floating point (which would pull libm into the 32-bit ARM build).
            let pause = backoff / 2 + Duration::from_millis(fastrand::u64(..=backoff.as_millis() as u64 / 2));
            backoff = (backoff * 2).min(BACKOFF_MAX);
            Timer::after(pause).await;
        }
    };
    // The doors opening run beside the connections, through reconnects and
    // backoff alike.
    or(connections, opens.drive()).await
}

/// The doors opening because of a publish: each `opener::open` runs here to
/// its end, beside the connections of [`run`], on this task. At most one per
/// door (the hub refuses a door that is opening), so at most as many as
/// there are doors; empty without `--mqtt-door-open`.
struct Opens<'a> {
    running: RefCell<Vec<Pin<Box<dyn Future<Output = ()> + 'a>>>>,
    /// The waker of [`Opens::drive`], woken when an open is added, so it is
    /// polled (and its command started) at once.
    waker: Cell<Option<Waker>>,
}

impl<'a> Opens<'a> {
    fn start(&self, open: Pin<Box<dyn Future<Output = ()> + 'a>>) {
        self.running.borrow_mut().push(open);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Poll every open until it ends, then drop it; never returns. (An
    /// open borrows the hub only between its own awaits, never this list.)
    async fn drive(&self) {
        std::future::poll_fn(|cx| {
            self.waker.set(Some(cx.waker().clone()));
            self.running.borrow_mut().retain_mut(|open| open.as_mut().poll(cx).is_pending());
            Poll::Pending
        })
        .await
    }
}

/// Why a connection ended (or never was).
enum Lost {
    /// The broker refused us, closed, or broke a rule.
    Broker(&'static str),
    /// The broker sent a packet of this type, which a publisher never gets.
    Unexpected(u8),
    /// A socket call failed (what, and the error).
    Io(&'static str, io::Error),
    /// A wait on the broker ran out (what, and its limit).
    Timeout(&'static str, Duration),
    /// The feed is gone (never, while the daemon runs).
    QueueClosed,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Broker(why) => f.write_str(why),
            Lost::Unexpected(kind) => {
                write!(f, "the broker sent a packet of type {kind}, which a publisher never gets")
            }
            Lost::Io(what, error) => write!(f, "{what}{error}"),
            Lost::Timeout(what, limit) => write!(f, "{what} {limit:?}"),
            Lost::QueueClosed => f.write_str("the event queue closed"),
        }
    }
}

/// Why the broker refused a CONNECT, by CONNACK return code (MQTT 3.1.1,
/// 3.2.2.3); `None` for codes it does not define.
fn refusal(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "the broker refused: MQTT 3.1.1 not supported",
        2 => "the broker refused: client id rejected",
        3 => "the broker refused: server unavailable",
        4 => "the broker refused: bad user name or password",
        5 => "the broker refused: not authorized",
        _ => return None,
    })
}

/// What a broker sends us.
#[derive(Debug, PartialEq)]
enum Incoming {
    /// CONNACK accepting the connection (a refusal is an error).
    ConnAck,
    /// PUBACK of this packet id.
    PubAck(u16),
    PingResp,
    /// SUBACK of this packet id: a return code per topic, in the order of
    /// the SUBSCRIBE (0, 1 or 2 granted, 0x80 refused).
    SubAck(u16, Vec<u8>),
    /// A message on a topic we subscribed to.
    Publish(Received),
    /// A QoS 0 PUBLISH with this remaining length, past
    /// [`MAX_INCOMING_BYTES`]: its header is taken, and its rest is dropped
    /// as it arrives.
    TooLarge(usize),
}

/// A PUBLISH from the broker.
#[derive(Debug, PartialEq)]
struct Received {
    topic: String,
    payload: Vec<u8>,
    /// Sent because it was retained, at our subscription.
    retain: bool,
    /// QoS 1: the packet id to acknowledge.
    packet_id: Option<u16>,
}

/// What came from the broker and is not decoded yet.
#[derive(Default)]
struct Input {
    buffer: BytesMut,
    /// Bytes of a too-large PUBLISH still to come, to be dropped.
    skip: usize,
}

/// The next whole packet of `input` (taken out of it), if there is one.
/// Only what a broker sends us is decoded: CONNACK, PUBACK and PINGRESP
/// (whose remaining lengths are fixed: 2, 2 and 0), and, when we
/// `subscribe`, SUBACK and PUBLISH (at most [`MAX_INCOMING_BYTES`] held;
/// QoS 0 or 1). Any other packet, a malformed one or a refusing CONNACK is
/// an error.
fn parse(input: &mut Input, subscribe: bool) -> Result<Option<Incoming>, Lost> {
    let dropped = input.skip.min(input.buffer.len());
    input.buffer.advance(dropped);
    input.skip -= dropped;
    if input.skip > 0 {
        return Ok(None);
    }
    let buffer = &mut input.buffer;
    let Some(&first) = buffer.first() else { return Ok(None) };
    let kind = first >> 4;
    // 2 CONNACK, 4 PUBACK, 13 PINGRESP; 3 PUBLISH and 9 SUBACK.
    let length = match kind {
        2 | 4 => 2,
        13 => 0,
        3 | 9 if subscribe => return parse_variable(input, first),
        _ => return Err(Lost::Unexpected(kind)),
    };
    let Some(&remaining) = buffer.get(1) else { return Ok(None) };
    if usize::from(remaining) != length {
        return Err(Lost::Broker("the broker sent a malformed packet (wrong remaining length)"));
    }
    if buffer.len() < 2 + length {
        return Ok(None);
    }
    let body = [buffer.get(2).copied().unwrap_or(0), buffer.get(3).copied().unwrap_or(0)];
    buffer.advance(2 + length);
    Ok(Some(match kind {
        2 if body[1] == 0 => Incoming::ConnAck,
        2 => return Err(Lost::Broker(refusal(body[1]).unwrap_or("the broker sent a malformed packet (CONNACK code)"))),
        4 => Incoming::PubAck(u16::from_be_bytes(body)),
        _ => Incoming::PingResp,
    }))
}

/// A PUBLISH or a SUBACK (first byte `first`), whose remaining length is
/// variable.
fn parse_variable(input: &mut Input, first: u8) -> Result<Option<Incoming>, Lost> {
    let buffer = &mut input.buffer;
    // The remaining length: 1 to 4 bytes of 7 bits, least significant first.
    let mut length = 0;
    let mut header = 1;
    loop {
        let Some(&byte) = buffer.get(header) else { return Ok(None) };
        length |= usize::from(byte & 0x7f) << (7 * (header - 1));
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header == 5 {
            return Err(Lost::Broker("the broker sent a malformed packet (remaining length)"));
        }
    }
    let publish = first >> 4 == 3;
    let retain = first & 1 == 1;
    let qos = (first >> 1) & 3;
    if publish && qos > 1 {
        return Err(Lost::Broker("the broker sent a QoS 2 message; we subscribed at QoS 0"));
    }
    if length > MAX_INCOMING_BYTES {
        // A QoS 1 message cannot be acknowledged without reading its topic.
        if !publish || qos > 0 {
            return Err(Lost::Broker("the broker sent a packet longer than we take"));
        }
        buffer.advance(header);
        input.skip = length;
        return Ok(Some(Incoming::TooLarge(length)));
    }
    if buffer.len() < header + length {
        return Ok(None);
    }
    let packet = buffer.split_to(header + length);
    let body = &packet[header..];
    let u16_at = |at: usize| body.get(at..at + 2).map(|two| u16::from_be_bytes([two[0], two[1]]));
    if !publish {
        match (u16_at(0), body.get(2..)) {
            (Some(packet_id), Some(codes))
                if !codes.is_empty() && codes.iter().all(|code| matches!(code, 0 | 1 | 2 | 0x80)) =>
            {
                return Ok(Some(Incoming::SubAck(packet_id, codes.to_vec())));
            }
            _ => return Err(Lost::Broker("the broker sent a malformed packet (SUBACK)")),
        }
    }
    // The topic (its length first), QoS 1's packet id, the payload.
    let topic_end = u16_at(0).map_or(usize::MAX, |length| 2 + usize::from(length));
    let packet_id = if qos == 1 { u16_at(topic_end).filter(|id| *id != 0) } else { None };
    let payload_start = topic_end.saturating_add(if qos == 1 { 2 } else { 0 });
    let topic = body.get(2..topic_end).and_then(|topic| std::str::from_utf8(topic).ok());
    match (topic, body.get(payload_start..)) {
        (Some(topic), Some(payload)) if packet_id.is_some() == (qos == 1) => Ok(Some(Incoming::Publish(Received {
            topic: topic.to_string(),
            payload: payload.to_vec(),
            retain,
            packet_id,
        }))),
        _ => Err(Lost::Broker("the broker sent a malformed packet (PUBLISH)")),
    }
}

/// A QoS 1 publish waiting for its PUBACK.
struct InFlight {
    publish: Publish,
    sent: Instant,
    /// One of the feed's events (counted in `delivered` when acknowledged),
    /// not a station's ring.
    event: bool,
}

/// What lasts from one connection to the next.
struct Session<'a> {
    config: &'a Mqtt,
    client_id: String,
    subscription: &'a Subscription,
    hub: &'a RefCell<Hub>,
    feed: &'a RefCell<Feed>,
    announcer: Announcer,
    /// Oldest first; at most `MAX_IN_FLIGHT`.
    in_flight: Vec<InFlight>,
    next_packet_id: u16,
    /// The last connection got its CONNACK.
    connected: bool,
    /// Where the pictures of visitors are (`None` with `--no-snapshots`).
    pictures: Option<PathBuf>,
    /// `--door-open-timeout`, for the doors opened by MQTT.
    door_timeout: Duration,
    /// The SUBSCRIBE of this connection awaiting its SUBACK: its packet id
    /// and when it was sent.
    suback: Option<(u16, Instant)>,
    /// Warned that a retained message on a door's topic was ignored (later
    /// ones are logged at debug).
    warned_retained: bool,
}

enum Wake {
    Read(io::Result<usize>),
    Event(Option<Rc<Published>>),
    Due,
}

impl<'a> Session<'a> {
    /// One connection's life: connect and send CONNECT (with the last
    /// will); at the CONNACK announce and resend what was in flight; then
    /// publish events and keep the connection alive until it breaks.
    /// `connected` tells whether the CONNACK came.
    async fn connection(&mut self, target: &str, opens: &Opens<'a>) -> Lost {
        self.connected = false;
        let config = self.config;
        let stream = match with_timeout(CONNECT_TIMEOUT, resolve::connect(&config.host, config.port)).await {
            Some(Ok(stream)) => stream,
            Some(Err(error)) => return Lost::Io("", error),
            None => return Lost::Timeout("no TCP connection within", CONNECT_TIMEOUT),
        };
        let _ = stream.set_nodelay(true);
        match self.serve(stream, target, opens).await {
            Err(lost) => lost,
            Ok(never) => match never {},
        }
    }

    async fn serve(&mut self, mut stream: TcpStream, target: &str, opens: &Opens<'a>) -> Result<Infallible, Lost> {
        let config = self.config;
        self.suback = None;
        let subscriber = !self.announcer.doors.is_empty();
        let mut connect = Connect::new(self.client_id.as_str());
        connect.keep_alive = KEEP_ALIVE.as_secs() as u16;
        connect.clean_session = true;
        connect.last_will = Some(LastWill::new(status_topic(config), "offline", QoS::AtLeastOnce, true));
        if let Some(user) = &config.user {
            connect.login = Some(Login::new(user.as_str(), config.password.as_deref().unwrap_or_default()));
        }
        let mut out = BytesMut::new();
        connect.write(&mut out).map_err(|_| Lost::Broker("cannot encode CONNECT"))?;
        let mut input = Input::default();
        let mut last_write = Instant::now();
        // Since when the CONNECT or a PINGREQ waits for its answer.
        let mut asked = Some(last_write);
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            if !out.is_empty() {
                match with_timeout(WRITE_TIMEOUT, stream.write_all(&out)).await {
                    Some(Ok(())) => {}
                    Some(Err(error)) => return Err(Lost::Io("write failed: ", error)),
                    None => return Err(Lost::Timeout("a write took longer than", WRITE_TIMEOUT)),
                }
                out.clear();
                last_write = Instant::now();
            }
            while let Some(packet) = parse(&mut input, subscriber)? {
                match packet {
                    Incoming::ConnAck if !self.connected => {
                        info!("mqtt: connected to {target}");
                        self.connected = true;
                        self.subscription.stats.up.set(true);
                        asked = None;
                        self.announce(&mut out)?;
                    }
                    Incoming::PubAck(packet_id) if self.connected => self.acknowledged(packet_id),
                    Incoming::PingResp if self.connected => asked = None,
                    Incoming::SubAck(packet_id, codes) if self.suback.is_some_and(|(id, _)| id == packet_id) => {
                        self.suback = None;
                        self.subscribed(&codes)?;
                    }
                    Incoming::Publish(received) if self.connected => self.received(received, opens, &mut out),
                    Incoming::TooLarge(length) if self.connected => {
                        info!("mqtt: ignored a message of {length} bytes (more than {MAX_INCOMING_BYTES})");
                    }
                    _ => return Err(Lost::Broker("the broker sent a packet out of turn")),
                }
            }
            if !out.is_empty() {
                continue;
            }
            let mut deadline = asked.map_or(last_write + KEEP_ALIVE, |sent| sent + RESPONSE_TIMEOUT);
            // Before the CONNACK, what is in flight waits for the resend.
            if let Some(oldest) = self.in_flight.first().filter(|_| self.connected) {
                deadline = deadline.min(oldest.sent + ACK_TIMEOUT);
            }
            if let Some((_, sent)) = self.suback {
                deadline = deadline.min(sent + RESPONSE_TIMEOUT);
            }
            let room = self.connected && self.in_flight.len() + MAX_PUBLISHES_PER_EVENT <= MAX_IN_FLIGHT;
            let events = &self.subscription.events;
            let wake = or(async { Wake::Read(stream.read(&mut chunk).await) }, async {
                or(
                    async {
                        if room {
                            Wake::Event(events.recv().await)
                        } else {
                            std::future::pending().await
                        }
                    },
                    async {
                        Timer::at(deadline).await;
                        Wake::Due
                    },
                )
                .await
            })
            .await;
            match wake {
                Wake::Read(Ok(0)) => return Err(Lost::Broker("the broker closed the connection")),
                Wake::Read(Ok(n)) => input.buffer.extend_from_slice(&chunk[..n]),
                Wake::Read(Err(error)) => return Err(Lost::Io("read failed: ", error)),
                Wake::Event(None) => return Err(Lost::QueueClosed),
                Wake::Event(Some(published)) => {
                    let peers = matches!(published.event.kind, Kind::Online | Kind::Offline)
                        .then(|| self.hub.borrow().router().peer_list());
                    // A ring's picture, read off the daemon's thread (at most 100 KiB).
                    let picture = match (&self.pictures, &published.event.snapshot) {
                        (Some(dir), Some(name)) if published.event.kind == Kind::Ring => {
                            let path = dir.join(name);
                            smol::unblock(move || std::fs::read(path)).await.ok()
                        }
                        _ => None,
                    };
                    for message in self.announcer.on_event(&published, peers.as_deref(), picture) {
                        self.encode(message, &mut out)?;
                    }
                }
                Wake::Due => {
                    let now = Instant::now();
                    if asked.is_some_and(|sent| now >= sent + RESPONSE_TIMEOUT) {
                        let what = if self.connected { "no PINGRESP within" } else { "no CONNACK within" };
                        return Err(Lost::Timeout(what, RESPONSE_TIMEOUT));
                    }
                    if self.connected && self.in_flight.first().is_some_and(|oldest| now >= oldest.sent + ACK_TIMEOUT) {
                        return Err(Lost::Timeout("no PUBACK within", ACK_TIMEOUT));
                    }
                    if self.suback.is_some_and(|(_, sent)| now >= sent + RESPONSE_TIMEOUT) {
                        return Err(Lost::Timeout("no SUBACK within", RESPONSE_TIMEOUT));
                    }
                    if asked.is_none() && now >= last_write + KEEP_ALIVE {
                        let _ = PingReq.write(&mut out);
                        asked = Some(now);
                    }
                }
            }
        }
    }

    /// After a CONNACK: the doors' SUBSCRIBE (with `--mqtt-door-open`),
    /// everything retained, then what was in flight (marked DUP), into `out`.
    fn announce(&mut self, out: &mut BytesMut) -> Result<(), Lost> {
        if !self.announcer.doors.is_empty() {
            let topics = self.announcer.doors.iter().map(|id| self.announcer.door_topic(id));
            let mut subscribe = Subscribe::new_many(topics.map(|topic| SubscribeFilter::new(topic, QoS::AtMostOnce)));
            subscribe.pkid = self.packet_id();
            subscribe.write(out).map_err(|_| Lost::Broker("cannot encode SUBSCRIBE"))?;
            self.suback = Some((subscribe.pkid, Instant::now()));
        }
        let stations: Vec<String> = self.feed.borrow().log().filter_map(|line| ringer(line)).collect();
        let peers = self.hub.borrow().router().peer_list();
        for message in self.announcer.on_connect(stations, &peers) {
            self.encode(message, out)?;
        }
        let now = Instant::now();
        for waiting in &mut self.in_flight {
            waiting.publish.dup = true;
            waiting.sent = now;
            waiting.publish.write(out).map_err(|_| Lost::Broker("cannot encode PUBLISH"))?;
        }
        Ok(())
    }

    /// Encode `message` into `out`; a QoS 1 one gets a packet id and joins
    /// the in-flight window.
    fn encode(&mut self, message: Message, out: &mut BytesMut) -> Result<(), Lost> {
        let mut publish = Publish::from_bytes(message.topic, message.qos, message.payload);
        publish.retain = message.retain;
        if message.qos == QoS::AtLeastOnce {
            publish.pkid = self.packet_id();
        }
        publish.write(out).map_err(|_| Lost::Broker("cannot encode PUBLISH"))?;
        if message.qos == QoS::AtLeastOnce {
            self.in_flight.push(InFlight { publish, sent: Instant::now(), event: message.event });
        }
        Ok(())
    }

    /// A packet id not in flight (1 to 65535).
    fn packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            let subscribing = self.suback.is_some_and(|(waiting, _)| waiting == id);
            if !subscribing && !self.in_flight.iter().any(|waiting| waiting.publish.pkid == id) {
                return id;
            }
        }
    }

    fn acknowledged(&mut self, packet_id: u16) {
        let Some(at) = self.in_flight.iter().position(|waiting| waiting.publish.pkid == packet_id) else {
            debug!("mqtt: PUBACK for packet {packet_id}, which is not in flight");
            return;
        };
        if self.in_flight.remove(at).event {
            let delivered = &self.subscription.stats.delivered;
            delivered.set(delivered.get() + 1);
        }
    }

    /// The SUBACK of the doors' topics: each refused one (the broker's ACL,
    /// most likely) gets a warning, as MQTT cannot open that door.
    fn subscribed(&self, codes: &[u8]) -> Result<(), Lost> {
        let doors = &self.announcer.doors;
        if codes.len() != doors.len() {
            return Err(Lost::Broker("the broker sent a malformed packet (SUBACK codes)"));
        }
        for (id, _) in doors.iter().zip(codes).filter(|(_, code)| **code == 0x80) {
            let topic = self.announcer.door_topic(id);
            warn!("mqtt: the broker refused the subscription to {topic}: MQTT cannot open door {id} (see the broker's ACL)");
        }
        Ok(())
    }

    /// A message on a door's command topic: [`OPEN`] (live, not retained)
    /// opens that door, unless it is opening already; anything else is
    /// logged and ignored. A QoS 1 message is acknowledged into `out`.
    fn received(&mut self, received: Received, opens: &Opens<'a>, out: &mut BytesMut) {
        if let Some(packet_id) = received.packet_id {
            let [high, low] = packet_id.to_be_bytes();
            out.extend_from_slice(&[0x40, 0x02, high, low]);
        }
        let topic = &received.topic;
        let Some(door) = self.announcer.door_at(topic).map(str::to_string) else {
            debug!("mqtt: ignored a message on {topic}, which is no door's command topic");
            return;
        };
        if received.retain {
            // Once: the same message comes back at every reconnect.
            if !self.warned_retained {
                warn!("mqtt: ignored a retained message on {topic}: only a live {OPEN} opens a door (clear it with mosquitto_pub -r -n -t {topic})");
                self.warned_retained = true;
            }
            return;
        }
        if received.payload != OPEN.as_bytes() {
            let start = String::from_utf8_lossy(&received.payload[..received.payload.len().min(32)]);
            info!("mqtt: ignored {start:?} on {topic}: only {OPEN} opens door {door}");
            return;
        }
        let granted = self.hub.borrow_mut().authorize_door_by_mqtt(&door);
        match granted {
            Ok(opening) => {
                let (hub, limit) = (self.hub, self.door_timeout);
                opens.start(Box::pin(async move {
                    opener::open(hub, &opening, limit).await;
                }));
            }
            // Busy: the door is opening already. Nothing is queued.
            Err(refusal) => info!("mqtt: {OPEN} on {topic} refused: {}", refusal.message()),
        }
    }
}

/// The caller of a `ring` line of the call log.
fn ringer(line: &str) -> Option<String> {
    let value: Value = serde_json::from_str(line).ok()?;
    if value.get("event")?.as_str()? != "ring" {
        return None;
    }
    value.get("from")?.as_str().map(str::to_string)
}

/// One PUBLISH to make.
struct Message {
    topic: String,
    payload: Bytes,
    retain: bool,
    qos: QoS,
    /// One of the feed's events, counted as delivered when acknowledged.
    event: bool,
}

impl Message {
    /// Retained state, QoS 0 (published again at every connect).
    fn state(topic: String, payload: impl Into<Bytes>) -> Message {
        Message { topic, payload: payload.into(), retain: true, qos: QoS::AtMostOnce, event: false }
    }
}

/// A door station: a peer that rang.
struct Station {
    /// Its peer id.
    id: String,
    /// Its id made safe for topics and object ids.
    sid: String,
    /// Its rings not yet answered, rejected or missed (call ids, oldest
    /// first, at most `events::MAX_OPEN_CALLS`).
    ringing: Vec<String>,
}

/// What Home Assistant is told, and the state that needs (pure: events in,
/// messages out).
struct Announcer {
    prefix: String,
    discovery_prefix: String,
    /// `--mqtt-prefix` made safe as a node id and unique-id prefix.
    node: String,
    /// In the order they were first seen; a list, as there are at most
    /// `MAX_STATIONS` (smaller code than a map).
    stations: Vec<Station>,
    /// Warned that `MAX_STATIONS` is reached.
    warned_full: bool,
    /// Pictures of visitors are kept: each station gets an `image` entity.
    pictures: bool,
    /// The doors MQTT may open (`--mqtt-door-open`; else empty), by door
    /// station id, in the order of `--door-open`: each gets its command
    /// topic and an "Open door" button.
    doors: Vec<String>,
}

fn status_topic(config: &Mqtt) -> String {
    format!("{}/status", config.prefix)
}

impl Announcer {
    fn new(config: &Mqtt, pictures: bool, doors: Vec<String>) -> Announcer {
        Announcer {
            pictures,
            doors,
            prefix: config.prefix.clone(),
            discovery_prefix: config.discovery_prefix.clone(),
            node: topic_id(&config.prefix),
            stations: Vec::new(),
            warned_full: false,
        }
    }

    /// Everything retained, after a (re)connect: availability, the daemon's
    /// sensor, who is online, every station (those of `log_stations`, the
    /// callers in the call log, too) with its ringing state, and the doors'
    /// buttons.
    fn on_connect(&mut self, log_stations: Vec<String>, peers: &[(String, String)]) -> Vec<Message> {
        for id in log_stations {
            self.add_station(&id);
        }
        let mut messages = vec![
            Message::state(format!("{}/status", self.prefix), "online"),
            Message::state(self.config_topic("sensor", "peers_online"), self.online_config()),
            self.online_list(peers),
        ];
        let ids: Vec<String> = self.stations.iter().map(|station| station.id.clone()).collect();
        for id in ids {
            messages.extend(self.station_configs(&id));
            messages.push(self.ringing_state(&id));
        }
        messages.extend(self.doors.iter().map(|id| self.door_button(id)));
        messages
    }

    /// The messages one event makes.
    fn on_event(
        &mut self,
        published: &Published,
        peers: Option<&[(String, String)]>,
        picture: Option<Vec<u8>>,
    ) -> Vec<Message> {
        let event = &published.event;
        let mut messages = Vec::new();
        let the_event = Message {
            topic: format!("{}/events", self.prefix),
            payload: Bytes::copy_from_slice(published.json.as_bytes()),
            retain: false,
            qos: QoS::AtLeastOnce,
            event: true,
        };
        match event.kind {
            Kind::Ring => {
                let known = self.station(&event.from).is_some();
                if !known && self.add_station(&event.from) {
                    messages.extend(self.station_configs(&event.from));
                }
                if let (Some(station), Some(call)) =
                    (self.stations.iter_mut().find(|station| station.id == event.from), &event.call)
                {
                    station.ringing.push(call.clone());
                    if station.ringing.len() > crate::events::MAX_OPEN_CALLS {
                        station.ringing.remove(0);
                    }
                    messages.push(self.ringing_state(&event.from));
                    if let Some(picture) = picture.filter(|_| self.pictures) {
                        // The visitor, retained: Home Assistant shows the last one.
                        messages.push(Message::state(self.station_topic(&event.from, "visitor"), picture));
                    }
                    messages.push(the_event);
                    messages.push(self.station_ring(&event.from, &published.json));
                    return messages;
                }
            }
            Kind::Answered | Kind::Rejected | Kind::Missed => {
                if let (Some(station), Some(call)) =
                    (self.stations.iter_mut().find(|station| station.id == event.from), &event.call)
                {
                    let before = station.ringing.len();
                    station.ringing.retain(|ringing| ringing != call);
                    if before > 0 && station.ringing.is_empty() {
                        messages.push(self.ringing_state(&event.from));
                    }
                }
            }
            Kind::Ended | Kind::DoorOpened => {}
            Kind::Online | Kind::Offline => {
                messages.push(the_event);
                if let Some(peers) = peers {
                    messages.push(self.online_list(peers));
                }
                return messages;
            }
        }
        messages.push(the_event);
        messages
    }

    /// Follow `id` as a station; false when `MAX_STATIONS` are followed.
    fn add_station(&mut self, id: &str) -> bool {
        if self.station(id).is_some() {
            return true;
        }
        if self.stations.len() >= MAX_STATIONS {
            if !self.warned_full {
                warn!("mqtt: {MAX_STATIONS} door stations announced already; {id} and later ones get no device");
                self.warned_full = true;
            }
            return false;
        }
        self.stations.push(Station { id: id.to_string(), sid: topic_id(id), ringing: Vec::new() });
        true
    }

    fn station(&self, id: &str) -> Option<&Station> {
        self.stations.iter().find(|station| station.id == id)
    }

    /// A station known to be followed.
    fn followed(&self, id: &str) -> &Station {
        self.station(id).expect("a followed station")
    }

    fn config_topic(&self, component: &str, object: &str) -> String {
        format!("{}/{component}/{}/{object}/config", self.discovery_prefix, self.node)
    }

    fn station_topic(&self, id: &str, leaf: &str) -> String {
        format!("{}/station/{}/{leaf}", self.prefix, self.followed(id).sid)
    }

    /// Where [`OPEN`] opens door `id`: `<p>/door/<sid>/open`.
    fn door_topic(&self, id: &str) -> String {
        format!("{}/door/{}/open", self.prefix, topic_id(id))
    }

    /// The door whose command topic `topic` is.
    fn door_at(&self, topic: &str) -> Option<&str> {
        self.doors.iter().map(String::as_str).find(|id| self.door_topic(id) == topic)
    }

    /// A door's "Open door" button, on its station's device (which exists
    /// before the station first rings, then with only this button).
    fn door_button(&self, id: &str) -> Message {
        let sid = topic_id(id);
        let unique_id = format!("{}_{sid}_open_door", self.node);
        let button = Json::new()
            .str("name", "Open door")
            .str("unique_id", &unique_id)
            .str("default_entity_id", &entity_id("button", &unique_id))
            .str("command_topic", &self.door_topic(id))
            .str("payload_press", OPEN)
            .raw("retain", "false")
            .str("icon", "mdi:door-open");
        Message::state(
            self.config_topic("button", &format!("{sid}_open_door")),
            self.common(button, &self.station_device(id)),
        )
    }

    /// A door station as a device, hanging off the daemon's.
    fn station_device(&self, id: &str) -> String {
        Json::new()
            .list("identifiers", &[format!("{}_station_{}", self.node, topic_id(id)).as_str()])
            .str("name", id)
            .str("manufacturer", "intercomd")
            .str("model", "door station")
            .str("via_device", &self.node)
            .end()
    }

    /// The daemon as a device: what stations hang off (`via_device`) and
    /// what the online sensor belongs to.
    fn daemon_device(&self) -> String {
        Json::new()
            .list("identifiers", &[self.node.as_str()])
            .str("name", &format!("intercomd ({})", self.prefix))
            .str("manufacturer", "intercomd")
            .str("model", "intercomd signaling daemon")
            .str("sw_version", env!("CARGO_PKG_VERSION"))
            .end()
    }

    /// The end of every discovery payload: availability, device, origin.
    fn common(&self, json: Json, device: &str) -> String {
        json.str("availability_topic", &format!("{}/status", self.prefix))
            .raw("device", device)
            .raw("origin", concat!(r#"{"name":"intercomd","sw_version":""#, env!("CARGO_PKG_VERSION"), r#""}"#))
            .end()
    }

    /// The sensor of who is online: the count as state, the list as
    /// attributes.
    fn online_config(&self) -> String {
        let unique_id = format!("{}_peers_online", self.node);
        let topic = format!("{}/online", self.prefix);
        let json = Json::new()
            .str("name", "Peers online")
            .str("unique_id", &unique_id)
            .str("default_entity_id", &entity_id("sensor", &unique_id))
            .str("state_topic", &topic)
            .str("value_template", "{{ value_json.count }}")
            .str("json_attributes_topic", &topic)
            .str("state_class", "measurement")
            .str("icon", "mdi:account-multiple");
        self.common(json, &self.daemon_device())
    }

    fn online_list(&self, peers: &[(String, String)]) -> Message {
        let mut list = format!("{{\"count\":{},\"peers\":[", peers.len());
        for (n, (id, room)) in peers.iter().enumerate() {
            if n > 0 {
                list.push(',');
            }
            list.push_str(&Json::new().str("id", id).str("room", room).end());
        }
        list.push_str("]}");
        Message::state(format!("{}/online", self.prefix), list)
    }

    /// A station's two entities: its doorbell `event` and its `ringing`
    /// binary sensor, on a device of its own.
    fn station_configs(&self, id: &str) -> Vec<Message> {
        let sid = &self.followed(id).sid;
        let device = self.station_device(id);
        let doorbell_id = format!("{}_{sid}_doorbell", self.node);
        let ringing_id = format!("{}_{sid}_ringing", self.node);
        let doorbell = Json::new()
            .str("name", "Doorbell")
            .str("unique_id", &doorbell_id)
            .str("default_entity_id", &entity_id("event", &doorbell_id))
            .str("device_class", "doorbell")
            .list("event_types", &["ring"])
            .str("state_topic", &self.station_topic(id, "ring"));
        let ringing = Json::new()
            .str("name", "Ringing")
            .str("unique_id", &ringing_id)
            .str("default_entity_id", &entity_id("binary_sensor", &ringing_id))
            .str("state_topic", &self.station_topic(id, "ringing"))
            .str("payload_on", "ON")
            .str("payload_off", "OFF")
            .str("icon", "mdi:bell-ring");
        let mut configs = vec![
            Message::state(self.config_topic("event", &format!("{sid}_doorbell")), self.common(doorbell, &device)),
            Message::state(
                self.config_topic("binary_sensor", &format!("{sid}_ringing")),
                self.common(ringing, &device),
            ),
        ];
        if self.pictures {
            let visitor_id = format!("{}_{sid}_visitor", self.node);
            let visitor = Json::new()
                .str("name", "Visitor")
                .str("unique_id", &visitor_id)
                .str("default_entity_id", &entity_id("image", &visitor_id))
                .str("image_topic", &self.station_topic(id, "visitor"))
                .str("content_type", "image/jpeg")
                .str("icon", "mdi:doorbell-video");
            configs.push(Message::state(
                self.config_topic("image", &format!("{sid}_visitor")),
                self.common(visitor, &device),
            ));
        }
        configs
    }

    fn ringing_state(&self, id: &str) -> Message {
        let on = !self.followed(id).ringing.is_empty();
        Message::state(self.station_topic(id, "ringing"), if on { "ON" } else { "OFF" })
    }

    /// The doorbell event: the ring's line with `"event":"ring"` turned
    /// into `"event_type":"ring"` (its other fields as they are). The line
    /// is `Event::to_json`'s flat object, where the pattern can only be
    /// that key: a `"` inside a string is escaped.
    fn station_ring(&self, id: &str, json: &str) -> Message {
        Message {
            topic: self.station_topic(id, "ring"),
            payload: json.replacen(r#""event":"ring""#, r#""event_type":"ring""#, 1).into(),
            retain: false,
            qos: QoS::AtLeastOnce,
            event: false,
        }
    }
}

/// A JSON object written field by field: keys are plain, values escaped.
struct Json(String);

impl Json {
    fn new() -> Json {
        Json(String::from("{"))
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "\"{key}\":");
    }

    fn str(mut self, key: &str, value: &str) -> Json {
        self.key(key);
        push_json_string(&mut self.0, value);
        self
    }

    fn list(mut self, key: &str, values: &[&str]) -> Json {
        self.key(key);
        self.0.push('[');
        for (n, value) in values.iter().enumerate() {
            if n > 0 {
                self.0.push(',');
            }
            push_json_string(&mut self.0, value);
        }
        self.0.push(']');
        self
    }

    /// `json` as the value, as it is.
    fn raw(mut self, key: &str, json: &str) -> Json {
        self.key(key);
        self.0.push_str(json);
        self
    }

    fn end(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// A peer id or a prefix as a topic level, node id and object id, which
/// Home Assistant wants as `[A-Za-z0-9_-]+`. An id that already is one is
/// kept; any other has its other characters replaced by `_` and a hash of
/// the whole id appended, so `door.1` and `door_1` stay two stations.
pub fn topic_id(id: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !id.is_empty() && id.chars().all(plain) {
        return id.to_string();
    }
    let mut hash: u32 = 0x811c_9dc5;
    for byte in id.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    let cleaned: String = id.chars().map(|c| if plain(c) { c } else { '_' }).collect();
    format!("{cleaned}_{hash:08x}")
}

/// `default_entity_id`: the domain and an object id of lower-case letters,
/// digits and `_`, as Home Assistant's entity ids are.
fn entity_id(domain: &str, unique_id: &str) -> String {
    let object: String =
        unique_id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    format!("{domain}.{object}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use serde_json::json;

    fn config() -> Mqtt {
        Mqtt::new("mqtt://broker", None, "intercomd", "homeassistant").unwrap()
    }

    fn published(seq: u64, kind: Kind, from: &str, call: &str) -> Published {
        let event = Event {
            kind,
            unix_ms: 1_796_220_000_000,
            room: "lobby".into(),
            from: from.into(),
            to: kind.is_call().then(|| "kitchen".into()),
            call: kind.is_call().then(|| call.into()),
            by: None,
            reason: None,
            media: None,
            snapshot: None,
            elapsed: None,
        };
        let json = event.to_json(Some(seq)).into();
        Published { seq: Some(seq), event, json }
    }

    fn topics(messages: &[Message]) -> Vec<(String, String, bool, QoS)> {
        messages
            .iter()
            .map(|m| (m.topic.clone(), String::from_utf8_lossy(&m.payload).into_owned(), m.retain, m.qos))
            .collect()
    }

    #[test]
    fn ids_become_topic_levels_without_collisions() {
        assert_eq!(topic_id("door"), "door");
        assert_eq!(topic_id("front_door-2"), "front_door-2");
        assert_eq!(topic_id("door.1"), format!("door_1_{:08x}", fnv("door.1")));
        assert_ne!(topic_id("door.1"), topic_id("door_1"));
        assert_ne!(topic_id("a.b"), topic_id("a~b"));
        assert!(topic_id("house/intercom").chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        assert_eq!(entity_id("event", "intercomd_Front-Door_doorbell"), "event.intercomd_front_door_doorbell");
    }

    fn fnv(id: &str) -> u32 {
        id.bytes().fold(0x811c_9dc5u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
    }

    #[test]
    fn a_first_ring_announces_the_station_before_the_event() {
        let mut announcer = Announcer::new(&config(), false, Vec::new());
        let ring = published(1, Kind::Ring, "door", "c1");
        let got = topics(&announcer.on_event(&ring, None, None));
        let names: Vec<&str> = got.iter().map(|(topic, ..)| topic.as_str()).collect();
        assert_eq!(
            names,
            [
                "homeassistant/event/intercomd/door_doorbell/config",
                "homeassistant/binary_sensor/intercomd/door_ringing/config",
                "intercomd/station/door/ringing",
                "intercomd/events",
                "intercomd/station/door/ring",
            ]
        );
        assert_eq!(got[2].1, "ON");
        assert!(got[2].2, "ringing is retained");
        assert_eq!((got[3].1.as_str(), got[3].2, got[3].3), (&*ring.json, false, QoS::AtLeastOnce));
        let doorbell: Value = serde_json::from_str(&got[4].1).unwrap();
        assert_eq!(doorbell["event_type"], "ring");
        assert_eq!(doorbell["from"], "door");
        assert!(doorbell.get("event").is_none());
        // A second ring: no new configs.
        let again = topics(&announcer.on_event(&published(2, Kind::Ring, "door", "c2"), None, None));
        assert_eq!(again.len(), 3);
        // Ringing stays on until both rings are over.
        let missed = topics(&announcer.on_event(&published(3, Kind::Missed, "door", "c1"), None, None));
        assert_eq!(missed.len(), 1, "only the event: c2 still rings");
        let answered = topics(&announcer.on_event(&published(4, Kind::Answered, "door", "c2"), None, None));
        assert_eq!(answered[0].0, "intercomd/station/door/ringing");
        assert_eq!(answered[0].1, "OFF");
        assert_eq!(answered[1].0, "intercomd/events");
        let ended = topics(&announcer.on_event(&published(5, Kind::Ended, "door", "c2"), None, None));
        assert_eq!(ended.len(), 1);
    }

    #[test]
    fn a_ring_with_a_picture_shows_the_visitor_before_the_event() {
        let mut announcer = Announcer::new(&config(), true, Vec::new());
        let ring = published(1, Kind::Ring, "door", "c1");
        let got = topics(&announcer.on_event(&ring, None, Some(vec![0xFF, 0xD8, 0xFF, 0xD9])));
        let names: Vec<&str> = got.iter().map(|(topic, ..)| topic.as_str()).collect();
        assert_eq!(
            names,
            [
                "homeassistant/event/intercomd/door_doorbell/config",
                "homeassistant/binary_sensor/intercomd/door_ringing/config",
                "homeassistant/image/intercomd/door_visitor/config",
                "intercomd/station/door/ringing",
                "intercomd/station/door/visitor",
                "intercomd/events",
                "intercomd/station/door/ring",
            ]
        );
        let image: Value = serde_json::from_str(&got[2].1).unwrap();
        assert_eq!(image["image_topic"], "intercomd/station/door/visitor");
        assert_eq!(image["content_type"], "image/jpeg");
        assert_eq!(image["default_entity_id"], "image.intercomd_door_visitor");
        assert_eq!((got[4].2, got[4].3), (true, QoS::AtMostOnce), "the last visitor is retained");
        // Without a picture, nothing on the visitor topic.
        let again = topics(&announcer.on_event(&published(2, Kind::Ring, "door", "c2"), None, None));
        assert!(again.iter().all(|(topic, ..)| topic != "intercomd/station/door/visitor"));
    }

    #[test]
    fn presence_updates_the_online_list() {
        let mut announcer = Announcer::new(&config(), true, Vec::new());
        let peers = [("door".to_string(), "lobby".to_string()), ("kitchen".to_string(), "lobby".to_string())];
        let got = topics(&announcer.on_event(&published(1, Kind::Online, "kitchen", ""), Some(&peers), None));
        assert_eq!(got[0].0, "intercomd/events");
        assert_eq!(got[1].0, "intercomd/online");
        assert_eq!(
            serde_json::from_str::<Value>(&got[1].1).unwrap(),
            json!({"count":2,"peers":[{"id":"door","room":"lobby"},{"id":"kitchen","room":"lobby"}]})
        );
        assert!(got[1].2);
    }

    #[test]
    fn a_connect_announces_every_station_of_the_log() {
        let mut announcer = Announcer::new(&config(), true, Vec::new());
        let got = topics(&announcer.on_connect(vec!["door".into(), "gate.2".into(), "door".into()], &[]));
        let names: Vec<&str> = got.iter().map(|(topic, ..)| topic.as_str()).collect();
        let gate = topic_id("gate.2");
        assert_eq!(names.len(), 3 + 2 * 4, "{names:?}");
        assert!(names.contains(&format!("homeassistant/image/intercomd/{gate}_visitor/config").as_str()));
        assert_eq!(names[0], "intercomd/status");
        assert_eq!(got[0].1, "online");
        assert_eq!(names[1], "homeassistant/sensor/intercomd/peers_online/config");
        assert!(names.contains(&format!("intercomd/station/{gate}/ringing").as_str()));
        assert!(got.iter().all(|(_, _, retain, qos)| *retain && *qos == QoS::AtMostOnce));
    }

    #[test]
    fn stations_are_bounded() {
        let mut announcer = Announcer::new(&config(), true, Vec::new());
        for n in 0..MAX_STATIONS {
            assert!(announcer.add_station(&format!("door{n}")));
        }
        let got = topics(&announcer.on_event(&published(1, Kind::Ring, "one-too-many", "c1"), None, None));
        assert_eq!(got.len(), 1, "only the event: {got:?}");
        assert_eq!(got[0].0, "intercomd/events");
    }

    #[test]
    fn only_what_a_broker_sends_a_publisher_is_decoded() {
        let check = |bytes: &[u8]| parse(&mut Input { buffer: BytesMut::from(bytes), skip: 0 }, false);
        assert!(matches!(check(&[0x20, 0x02, 0x00, 0x00]), Ok(Some(Incoming::ConnAck))));
        assert!(matches!(check(&[0x40, 0x02, 0x00, 0x07]), Ok(Some(Incoming::PubAck(7)))));
        assert!(matches!(check(&[0xd0, 0x00]), Ok(Some(Incoming::PingResp))));
        assert!(matches!(check(&[0x40, 0x02, 0x00]), Ok(None)), "half a packet waits for the rest");
        assert!(matches!(check(&[0x20]), Ok(None)));
        assert!(check(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        assert!(check(&[0x30, 0x02, 0x00, 0x00]).is_err(), "a PUBLISH we never subscribed to");
        assert!(check(&[0x90, 0x03, 0x00, 0x01, 0x00]).is_err(), "a SUBACK of no SUBSCRIBE");
        assert!(check(&[0x20, 0x02, 0x00, 0x09]).is_err(), "an unknown return code");
        assert!(check(&[0x20, 0x00]).is_err(), "CONNACK without its body");
        assert!(check(&[0x40, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err(), "a malformed length");
        assert!(check(&[0x40, 0xff, 0x01]).is_err(), "longer than any packet a broker sends us");
    }

    /// `publish` as the broker would send it.
    fn wire(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> BytesMut {
        let mut publish = Publish::new(topic, qos, payload.to_vec());
        publish.retain = retain;
        if qos != QoS::AtMostOnce {
            publish.pkid = 7;
        }
        let mut out = BytesMut::new();
        publish.write(&mut out).unwrap();
        out
    }

    fn input(bytes: &[u8]) -> Input {
        Input { buffer: BytesMut::from(bytes), skip: 0 }
    }

    const TOPIC: &str = "intercomd/door/door/open";

    #[test]
    fn a_subscriber_also_decodes_suback_and_publish() {
        let check = |bytes: &[u8]| parse(&mut input(bytes), true);
        // The CONNACK, PUBACK and PINGRESP as before.
        assert!(matches!(check(&[0x20, 0x02, 0x00, 0x00]), Ok(Some(Incoming::ConnAck))));
        assert!(matches!(check(&[0xd0, 0x00]), Ok(Some(Incoming::PingResp))));
        assert_eq!(check(&[0x90, 0x04, 0x00, 0x05, 0x00, 0x80]).ok(), Some(Some(Incoming::SubAck(5, vec![0, 0x80]))));
        assert!(check(&[0x90, 0x03, 0x00, 0x05, 0x03]).is_err(), "an unknown SUBACK code");
        assert!(check(&[0x90, 0x02, 0x00, 0x05]).is_err(), "a SUBACK without codes");
        let live = Received { topic: TOPIC.into(), payload: b"OPEN".to_vec(), retain: false, packet_id: None };
        assert_eq!(check(&wire(TOPIC, b"OPEN", QoS::AtMostOnce, false)).ok(), Some(Some(Incoming::Publish(live))));
        let Ok(Some(Incoming::Publish(retained))) = check(&wire(TOPIC, b"OPEN", QoS::AtMostOnce, true)) else {
            panic!("a retained message")
        };
        assert!(retained.retain && retained.packet_id.is_none());
        let Ok(Some(Incoming::Publish(qos1))) = check(&wire(TOPIC, b"PRESS", QoS::AtLeastOnce, false)) else {
            panic!("a QoS 1 message")
        };
        assert_eq!((qos1.packet_id, &qos1.payload[..]), (Some(7), &b"PRESS"[..]));
        assert!(check(&wire(TOPIC, b"OPEN", QoS::ExactlyOnce, false)).is_err(), "QoS 2: never subscribed");
        // A message a byte at a time waits for its last byte.
        let whole = wire(TOPIC, b"OPEN", QoS::AtLeastOnce, false);
        let mut partial = input(&[]);
        for (n, byte) in whole.iter().enumerate() {
            partial.buffer.extend_from_slice(&[*byte]);
            let got = parse(&mut partial, true).unwrap_or_else(|lost| panic!("{lost}"));
            assert_eq!(got.is_some(), n + 1 == whole.len(), "after {} bytes", n + 1);
        }
        assert!(partial.buffer.is_empty());
        // Malformed: a topic longer than the packet, no packet id, not UTF-8.
        assert!(check(&[0x30, 0x04, 0x00, 0x09, b'a', b'b']).is_err());
        assert!(check(&[0x32, 0x03, 0x00, 0x01, b'a']).is_err());
        assert!(check(&[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00]).is_err(), "packet id 0");
        assert!(check(&[0x30, 0x03, 0x00, 0x01, 0xff]).is_err());
        assert!(check(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err(), "a length of five bytes");
    }

    #[test]
    fn a_message_too_long_is_skipped_not_buffered() {
        let long = wire(TOPIC, &[b'x'; 2000], QoS::AtMostOnce, false);
        let length = long.len() - 3; // a first byte and two length bytes
        let mut next = long.clone();
        next.extend_from_slice(&wire(TOPIC, b"OPEN", QoS::AtMostOnce, false));
        // As it arrives, 100 bytes at a time: the header is enough to know.
        let mut got = Vec::new();
        let mut held = 0;
        let mut arriving = input(&[]);
        for piece in next.chunks(100) {
            arriving.buffer.extend_from_slice(piece);
            while let Some(packet) = parse(&mut arriving, true).unwrap_or_else(|lost| panic!("{lost}")) {
                got.push(packet);
            }
            held = held.max(arriving.buffer.len());
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], Incoming::TooLarge(length));
        assert!(matches!(&got[1], Incoming::Publish(open) if open.payload == b"OPEN"));
        assert!(held <= 100, "never more than one piece held: {held}");
        // At the limit it is taken; a QoS 1 message past it cannot be acknowledged.
        let at_limit = wire(TOPIC, &vec![b'x'; MAX_INCOMING_BYTES - 2 - TOPIC.len()], QoS::AtMostOnce, false);
        assert!(matches!(parse(&mut input(&at_limit), true), Ok(Some(Incoming::Publish(_)))));
        assert!(parse(&mut input(&wire(TOPIC, &[b'x'; 600], QoS::AtLeastOnce, false)), true).is_err());
        assert!(parse(&mut input(&[0x90, 0x81, 0x04]), true).is_err(), "a SUBACK past the limit");
    }

    #[test]
    fn doors_get_a_command_topic_and_an_open_door_button() {
        let mut announcer = Announcer::new(&config(), false, vec!["door".into(), "gate.2".into()]);
        let gate = topic_id("gate.2");
        assert_eq!(announcer.door_topic("door"), TOPIC);
        assert_eq!(announcer.door_at(TOPIC), Some("door"));
        assert_eq!(announcer.door_at(&format!("intercomd/door/{gate}/open")), Some("gate.2"));
        assert_eq!(announcer.door_at("intercomd/door/gate.2/open"), None);
        assert_eq!(announcer.door_at("intercomd/door/door/open/x"), None);
        let got = topics(&announcer.on_connect(Vec::new(), &[]));
        let names: Vec<&str> = got.iter().map(|(topic, ..)| topic.as_str()).collect();
        assert_eq!(
            names[3..],
            [
                "homeassistant/button/intercomd/door_open_door/config",
                format!("homeassistant/button/intercomd/{gate}_open_door/config").as_str()
            ]
        );
        assert!(got.iter().all(|(_, _, retain, qos)| *retain && *qos == QoS::AtMostOnce));
        let button: Value = serde_json::from_str(&got[3].1).unwrap();
        assert_eq!(
            button,
            json!({
                "name": "Open door",
                "unique_id": "intercomd_door_open_door",
                "default_entity_id": "button.intercomd_door_open_door",
                "command_topic": "intercomd/door/door/open",
                "payload_press": "OPEN",
                "retain": false,
                "icon": "mdi:door-open",
                "availability_topic": "intercomd/status",
                "device": {
                    "identifiers": ["intercomd_station_door"],
                    "name": "door",
                    "manufacturer": "intercomd",
                    "model": "door station",
                    "via_device": "intercomd",
                },
                "origin": {"name": "intercomd", "sw_version": env!("CARGO_PKG_VERSION")},
            })
        );
        // The button is on the same device as the station's doorbell.
        let ring = topics(&announcer.on_event(&published(1, Kind::Ring, "door", "c1"), None, None));
        let doorbell: Value = serde_json::from_str(&ring[0].1).unwrap();
        assert_eq!(doorbell["device"], button["device"]);
    }

    #[test]
    fn a_door_opened_event_goes_to_the_events_topic() {
        let mut announcer = Announcer::new(&config(), false, vec!["door".into()]);
        let event = Event::door_opened("door", "lobby", "mqtt", None, 1_796_220_000_000);
        let json = event.to_json(Some(9)).into();
        let got = topics(&announcer.on_event(&Published { seq: Some(9), event, json }, None, None));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].0.as_str(), got[0].2, got[0].3), ("intercomd/events", false, QoS::AtLeastOnce));
        let line: Value = serde_json::from_str(&got[0].1).unwrap();
        assert_eq!(
            line,
            json!({"seq":9,"event":"door-opened","time":"2026-12-02T14:00:00.000Z","room":"lobby","from":"door","by":"mqtt"})
        );
    }
}
