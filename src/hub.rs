//! The rim around the router: it owns every socket's outbox, carries out
//! the router's actions with `try_send`, and keeps the daemon's one timer.
//!
//! Socket tasks call in with events (a socket opened, a frame arrived, a
//! socket ended); the hub asks the router what to do and fills outboxes. It
//! holds no protocol logic and no peer state of its own (the router is the
//! only owner), and it never awaits, so it is only ever borrowed for the
//! length of one event. [`run_timers`] is the one task that acts on time:
//! it sleeps until the router's next deadline or the next liveness sweep,
//! whichever is first, and not at all while neither exists.
//!
//! Invariants:
//! - A full outbox is never waited on: its peer is aborted (close 4008) and
//!   the sender of the message that did not fit gets `peer-unavailable`.
//! - Every `ConnId` handed out by `open` is removed by `closed`, which the
//!   socket task calls exactly once on its way out.
//! - No socket task sleeps on a timer: the reconnect grace, held messages'
//!   expiry and liveness are all decided here, so a socket task ends the
//!   moment its socket does and frees everything it held.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info};
use smol::channel::{self, Receiver, Sender};
use smol::future::or;
use smol::Timer;

use crate::codec::Codec;
use crate::door::{Doors, Opening, Proof, Refusal};
use crate::events::{Calls, Clock, Event};
use crate::feed::Feed;
use crate::liveness::{Liveness, Verdict};
use crate::outbox::{Link, Outbox, SendError};
use crate::protocol::{self, close, Hello, IceServer, Rejection};
use crate::router::{Action, ConnId, ConnMap, Delivery, JoinKind, Limits, Router};
use crate::snapshots::Snapshots;

pub struct Hub {
    router: Router,
    /// The outgoing queue of every open WebSocket, joined or not.
    outboxes: ConnMap<Outbox>,
    next_conn: u64,
    liveness: Liveness,
    /// When the next liveness sweep is due; `None` while no socket is open.
    next_sweep: Option<Instant>,
    /// The deadline `run_timers` sleeps until (`None`: it sleeps on `wake`
    /// alone). An event that brings a sooner one nudges `wake`.
    armed: Option<Instant>,
    wake: Sender<()>,
    /// Taken by `run_timers`.
    wake_receiver: Option<Receiver<()>>,
    /// Peers dropped because their queue stayed full, for `/metrics`.
    dropped_slow: u64,
    /// The calls in progress, turned into events from what the router saw.
    calls: Calls,
    /// Where events go: the call log and every consumer's queue.
    feed: Rc<RefCell<Feed>>,
    /// `None` with `--no-snapshots`.
    snapshots: Option<Rc<RefCell<Snapshots>>>,
    /// `None` without `--door-open`.
    doors: Option<Doors>,
}

impl Hub {
    pub fn new(limits: Limits, ice_servers: Vec<IceServer>, liveness: Liveness, feed: Rc<RefCell<Feed>>) -> Hub {
        let (wake, wake_receiver) = channel::bounded(1);
        Hub {
            router: Router::new(limits, ice_servers),
            outboxes: ConnMap::default(),
            next_conn: 0,
            liveness,
            next_sweep: None,
            armed: None,
            wake,
            wake_receiver: Some(wake_receiver),
            dropped_slow: 0,
            calls: Calls::new(),
            feed,
            snapshots: None,
            doors: None,
        }
    }

    /// Pictures of visitors: a ring names its caller's picture, and the hub
    /// checks the picture is the caller's before the event says so.
    pub fn set_snapshots(&mut self, snapshots: Rc<RefCell<Snapshots>>) {
        self.snapshots = Some(snapshots);
    }

    /// Pictures of visitors kept, and their bytes (`None` without them).
    pub fn snapshot_usage(&self) -> Option<(usize, u64)> {
        self.snapshots.as_ref().map(|store| store.borrow().usage())
    }

    /// Rings not turned into events (a caller over `MAX_RINGS_PER_MINUTE`).
    pub fn rings_suppressed(&self) -> u64 {
        self.calls.suppressed
    }

    /// Publish what is left to publish (at shutdown).
    pub fn flush_events(&mut self) {
        self.publish(Instant::now());
    }

    /// Turn what the router saw, and rings that timed out by `now`, into
    /// events and publish them. Called at the end of every event the hub
    /// handles that can change peers or calls, and by the timer.
    fn publish(&mut self, now: Instant) {
        let seen = self.router.take_seen();
        let due = self.calls.next_deadline().is_some_and(|due| due <= now);
        if seen.is_empty() && !due {
            return;
        }
        let clock = clock(now);
        let mut events = Vec::new();
        for seen in seen {
            self.calls.observe(seen, clock, &mut events);
        }
        if due {
            self.calls.expire(clock, &mut events);
        }
        if let Some(doors) = &mut self.doors {
            let router = &self.router;
            for event in &events {
                doors.observe(event, now, |id| router.token_of(id));
            }
        }
        let mut feed = self.feed.borrow_mut();
        for mut event in events {
            if let Some(name) = event.snapshot.take() {
                let store = self.snapshots.as_ref().map(|store| store.borrow_mut());
                if store.is_some_and(|mut store| store.claim(&event.from, &name, now)) {
                    event.snapshot = Some(name);
                }
            }
            feed.publish(event);
        }
    }

    pub fn set_doors(&mut self, doors: Doors) {
        self.doors = Some(doors);
    }

    /// The door opener, to read (`GET /api/door`).
    pub fn doors(&self) -> Option<&Doors> {
        self.doors.as_ref()
    }

    /// `POST /api/door/open`: whether `peer` (proved by `token`, from
    /// `address`) may open `door` now with `proof`. The token is checked
    /// against the connected peer here, and against the answer in `Doors`.
    pub fn authorize_door(
        &mut self,
        door: &str,
        peer: &str,
        token: &str,
        address: IpAddr,
        proof: Proof<'_>,
        now: Instant,
    ) -> Result<Opening, Refusal> {
        let doors = self.doors.as_mut().ok_or(Refusal::UnknownDoor)?;
        // A peer that is not connected with this token proves nothing; it
        // counts as a failure like any other try without the right.
        let token = if self.router.proves(peer, token) { token } else { "" };
        doors.authorize(door, peer, token, address, proof, now)
    }

    /// `--mqtt-door-open`: a publish to the door's command topic.
    pub fn authorize_door_by_mqtt(&mut self, door: &str) -> Result<Opening, Refusal> {
        self.doors.as_mut().ok_or(Refusal::UnknownDoor)?.authorize_mqtt(door)
    }

    /// The door of `opening` is opening now: the event goes out, and the
    /// door station (if connected) is told.
    pub fn door_opening(&mut self, opening: &Opening) {
        let room = self.router.room_of(&opening.door).unwrap_or("").to_string();
        let text: Rc<str> = protocol::door_opened(&opening.by, opening.call.as_deref()).into();
        if let Some(action) = self.router.notice(&opening.door, text) {
            self.dispatch(vec![action]);
        }
        let event = Event::door_opened(&opening.door, &room, &opening.by, opening.call.as_deref(), unix_ms_now());
        self.feed.borrow_mut().publish(event);
    }

    /// The command of `door` ended: it may open again.
    pub fn door_finished(&mut self, door: &str) {
        if let Some(doors) = &mut self.doors {
            doors.finished(door);
        }
    }

    /// The router, to read (the API's peer and room lists, `/metrics`).
    /// Every change to it goes through the hub's own methods.
    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn websocket_count(&self) -> usize {
        self.outboxes.len()
    }

    /// Where the socket `conn` comes from, while it is open.
    pub fn link(&self, conn: ConnId) -> Option<Link> {
        self.outboxes.get(&conn).map(Outbox::link)
    }

    pub fn dropped_slow(&self) -> u64 {
        self.dropped_slow
    }

    /// A WebSocket from `link` was accepted at `now`: give it an id and an
    /// outbox.
    pub fn open(&mut self, now: Instant, link: Link) -> (ConnId, Outbox) {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let outbox = Outbox::new(now, link);
        self.outboxes.insert(conn, outbox.clone());
        if self.next_sweep.is_none() {
            // The first socket: nothing else is due before it is.
            self.next_sweep = Some(self.liveness.due(now, None));
            self.rearm();
        }
        (conn, outbox)
    }

    /// The connection asks to join, on an endpoint of `codec`, with the
    /// query of its upgrade request.
    pub fn join(&mut self, conn: ConnId, codec: Codec, hello: Result<Hello, Rejection>, now: Instant) {
        match self.router.join(conn, codec, hello, now) {
            Ok(joined) => {
                let count = self.router.peer_count();
                let (id, room) = (&joined.id, &joined.room);
                match joined.kind {
                    JoinKind::New => info!("peer {id} joined room {room} ({count} peers)"),
                    JoinKind::Returned => info!("peer {id} came back to room {room} ({count} peers)"),
                    JoinKind::Replaced => {
                        info!(
                            "peer {id} joined room {room} from a new connection, replacing the old one ({count} peers)"
                        )
                    }
                }
                self.dispatch(joined.actions);
            }
            Err(refused) => {
                let rejection = &refused.rejection;
                info!("connection refused: {} ({})", rejection.code.as_str(), rejection.message);
                self.dispatch(refused.actions);
            }
        }
        self.publish(now);
        self.rearm();
    }

    /// A text frame arrived at `now`.
    pub fn receive(&mut self, conn: ConnId, text: &str, now: Instant) {
        let actions = self.router.receive(conn, text, now);
        self.dispatch(actions);
        self.publish(now);
        self.rearm();
    }

    /// Send a non-fatal error to `conn`.
    pub fn reject(&mut self, conn: ConnId, rejection: Rejection) {
        let action = self.router.error_to(conn, rejection);
        self.dispatch(vec![action]);
    }

    /// Send a fatal error to `conn`, then close it with `close_code`.
    pub fn fail(&mut self, conn: ConnId, rejection: Rejection, close_code: u16) {
        let name = self.router.id_of(conn).map(str::to_string);
        let actions = self.router.fail(conn, rejection, close_code);
        if let Some(id) = name {
            info!("peer {id} closed: {} ({} peers)", close::reason(close_code), self.router.peer_count());
        }
        self.dispatch(actions);
        self.publish(Instant::now());
        self.rearm();
    }

    /// The socket task of `conn` is ending at `now`: `abrupt` when the
    /// socket broke without a close handshake (reset, EOF, no answer to a
    /// ping). A peer with a token is then held as away for the reconnect
    /// grace; otherwise it leaves, and what it never got is bounced.
    pub fn closed(&mut self, conn: ConnId, abrupt: bool, now: Instant) {
        let unsent = self.outboxes.remove(&conn).map(|outbox| outbox.take_all()).unwrap_or_default();
        if self.outboxes.is_empty() {
            self.next_sweep = None;
        }
        self.depart(conn, unsent, abrupt, now);
        self.publish(now);
        self.rearm();
    }

    /// `conn` is gone as a peer (its socket may still be closing).
    fn depart(&mut self, conn: ConnId, unsent: Vec<Delivery>, abrupt: bool, now: Instant) {
        let Some(id) = self.router.id_of(conn).map(str::to_string) else {
            // Never joined, or already replaced or dropped.
            return;
        };
        let actions = if abrupt {
            let (actions, away) = self.router.drop_abruptly(conn, unsent, now);
            match away {
                Some(_) => {
                    let grace = self.router.reconnect_grace();
                    info!("peer {id} dropped off; holding its id and messages for {grace:?}");
                }
                None => info!("peer {id} dropped off ({} peers)", self.router.peer_count()),
            }
            actions
        } else {
            let actions = self.router.disconnect(conn, unsent);
            info!("peer {id} left ({} peers)", self.router.peer_count());
            actions
        };
        self.dispatch(actions);
    }

    /// The daemon is stopping: every socket gets 1001 after what is queued.
    pub fn shutdown(&mut self) {
        for outbox in self.outboxes.values() {
            outbox.close(close::GOING_AWAY, close::reason(close::GOING_AWAY));
        }
    }

    /// When `run_timers` must next call `tick`.
    fn next_deadline(&self) -> Option<Instant> {
        [self.router.next_deadline(), self.next_sweep, self.calls.next_deadline()].into_iter().flatten().min()
    }

    /// Wake `run_timers` if a deadline sooner than the one it sleeps until
    /// has come up.
    fn rearm(&mut self) {
        let next = self.next_deadline();
        let sooner = match (next, self.armed) {
            (Some(next), Some(armed)) => next < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if sooner {
            self.armed = next;
            // Full means a nudge is already waiting.
            let _ = self.wake.try_send(());
        }
    }

    /// Act on every deadline up to `now`: expiries in the router, then the
    /// liveness sweep if due.
    fn tick(&mut self, now: Instant) {
        let expired = self.router.expire_due(now);
        for id in &expired.left {
            let grace = self.router.reconnect_grace();
            info!("peer {id} did not come back within {grace:?}; it left ({} peers)", self.router.peer_count());
        }
        self.dispatch(expired.actions);
        if self.next_sweep.is_some_and(|due| due <= now) {
            // Until the earliest socket is due, but not sooner than a
            // quarter period: sockets due at scattered moments share sweeps.
            let earliest = self.sweep(now);
            self.next_sweep = earliest.map(|due| due.max(now + self.liveness.sweep_every()));
        }
        self.publish(now);
    }

    /// Ping the sockets that have been silent for the ping interval; treat
    /// those that did not answer a ping within the timeout as dropped off.
    /// Returns when the earliest remaining socket is next due.
    fn sweep(&mut self, now: Instant) -> Option<Instant> {
        let mut silent = Vec::new();
        let mut earliest: Option<Instant> = None;
        for (conn, outbox) in &self.outboxes {
            let (heard, pinged) = outbox.last_heard();
            let pinged = match self.liveness.judge(heard, pinged, now) {
                Verdict::Alive => pinged,
                Verdict::Ping => {
                    outbox.ping(now);
                    Some(now)
                }
                Verdict::Silent => {
                    silent.push(*conn);
                    continue;
                }
            };
            let due = self.liveness.due(heard, pinged);
            earliest = Some(earliest.map_or(due, |earliest| earliest.min(due)));
        }
        for conn in silent {
            debug!("websocket {} did not answer a ping within {:?}", conn.0, self.liveness.timeout);
            let Some(outbox) = self.outboxes.get(&conn).cloned() else { continue };
            // Its socket is dead: what waits for it is held (or bounced)
            // now, rather than after a close frame nobody will read.
            let unsent = outbox.take_all();
            outbox.close(close::NOT_ANSWERING, close::reason(close::NOT_ANSWERING));
            self.depart(conn, unsent, true, now);
        }
        earliest
    }

    /// Carry out actions; a full queue turns into more actions (the slow
    /// peer is dropped, its room told, the sender told), handled in turn.
    fn dispatch(&mut self, actions: Vec<Action>) {
        let mut work: VecDeque<Action> = actions.into();
        while let Some(action) = work.pop_front() {
            match action {
                Action::Send { conn, text, bounce } => {
                    let delivery = Delivery { text, bounce };
                    let result = match self.outboxes.get(&conn) {
                        Some(outbox) => outbox.try_send(delivery),
                        None => Err(SendError::Closed(delivery)),
                    };
                    match result {
                        Ok(()) => {}
                        Err(SendError::Full(failed)) => {
                            self.dropped_slow += 1;
                            if let Some(id) = self.router.id_of(conn) {
                                info!("peer {id} dropped: its outgoing queue is full, it is not reading");
                            }
                            let unsent = self.outboxes.get(&conn).map(Outbox::abort).unwrap_or_default();
                            work.extend(self.router.undeliverable(conn, failed, unsent));
                        }
                        Err(SendError::Closed(failed)) => {
                            // The target is on its way out (replaced, closing):
                            // the router no longer routes to it, so this can
                            // only be a message raced with its departure.
                            debug!("message for closing connection {} bounced", conn.0);
                            let mut bounced = Vec::new();
                            self.router.bounce_all(
                                vec![failed],
                                "the peer disconnected before the message reached it",
                                &mut bounced,
                            );
                            work.extend(bounced);
                        }
                    }
                }
                Action::Close { conn, code, reason } => {
                    if let Some(outbox) = self.outboxes.get(&conn) {
                        outbox.close(code, reason);
                    }
                }
            }
        }
    }
}

/// `now` on both clocks: the wall clock only for the events' time stamps.
fn clock(now: Instant) -> Clock {
    Clock { at: now, unix_ms: unix_ms_now() }
}

/// The wall clock in Unix milliseconds (0 before 1970): for time stamps
/// people read, never for deadlines.
pub fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// The hub's one timer: sleep until the next deadline (an away peer's grace,
/// held messages' expiry, the liveness sweep), act on it, repeat. With no
/// deadline it waits for a nudge and nothing else, so a daemon with nobody
/// connected never wakes up.
pub async fn run_timers(hub: &RefCell<Hub>) {
    let Some(wake) = hub.borrow_mut().wake_receiver.take() else { return };
    loop {
        let next = {
            let mut hub = hub.borrow_mut();
            let next = hub.next_deadline();
            hub.armed = next;
            next
        };
        let nudged = async {
            // Never closed: the hub holds the sender.
            let _ = wake.recv().await;
        };
        match next {
            Some(at) => {
                or(
                    async {
                        Timer::at(at).await;
                    },
                    nudged,
                )
                .await
            }
            None => nudged.await,
        }
        hub.borrow_mut().tick(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outbox::tests::test_link;
    use crate::outbox::{Outgoing, MAX_QUEUED_MESSAGES};
    use crate::protocol::ErrorCode;

    const GRACE: Duration = Duration::from_secs(10);
    const LIVENESS: Liveness = Liveness { interval: Duration::from_secs(20), timeout: Duration::from_secs(10) };

    fn hub() -> Hub {
        let limits = Limits { max_peers: 10, max_rate: 0, max_rooms: 100, max_room_peers: 100, reconnect_grace: GRACE };
        Hub::new(limits, Vec::new(), LIVENESS, Rc::new(RefCell::new(Feed::new())))
    }

    fn hello(id: &str, token: Option<&str>) -> Result<Hello, Rejection> {
        Ok(Hello { id: Some(id.into()), room: "lobby".into(), token: token.map(Into::into) })
    }

    fn drain(outbox: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        while !outbox.is_empty() {
            match smol::block_on(outbox.recv()) {
                Outgoing::Text(text) => out.push(text.to_string()),
                Outgoing::Close { code, .. } => out.push(format!("close {code}")),
                Outgoing::Ping => out.push("ping".into()),
            }
        }
        out
    }

    /// Open a socket at `now`, join it as `id`, and take its welcome.
    fn joined(hub: &mut Hub, id: &str, token: Option<&str>, now: Instant) -> (ConnId, Outbox) {
        let (conn, outbox) = hub.open(now, test_link());
        hub.join(conn, Codec::Native, hello(id, token), now);
        drain(&outbox);
        (conn, outbox)
    }

    /// What the writer would take next, without waiting.
    fn next_now(outbox: &Outbox) -> Option<Outgoing> {
        smol::future::block_on(smol::future::poll_once(outbox.recv()))
    }

    #[test]
    fn a_full_queue_drops_the_slow_peer_and_tells_the_sender() {
        let mut hub = hub();
        let now = Instant::now();
        let (alice, alice_box) = joined(&mut hub, "alice", None, now);
        let (bob, bob_box) = joined(&mut hub, "bob", None, now);
        drain(&alice_box);
        for _ in 0..MAX_QUEUED_MESSAGES {
            hub.receive(alice, r#"{"type":"chat","to":"bob"}"#, now);
        }
        assert!(drain(&alice_box).is_empty(), "all fit");
        hub.receive(alice, r#"{"type":"chat","to":"bob"}"#, now);
        assert!(bob_box.is_aborted());
        let told = drain(&alice_box);
        assert_eq!(told.len(), 2, "{told:?}");
        assert!(told[0].contains("peer-left"));
        assert!(told[1].contains("peer-unavailable"));
        assert_eq!(smol::block_on(bob_box.recv()), Outgoing::Close { code: close::NOT_READING, reason: "not reading" });
        assert_eq!(hub.router().peer_count(), 1);
        assert_eq!(hub.dropped_slow(), 1);
        hub.closed(bob, false, now);
        hub.closed(alice, false, now);
        assert_eq!(hub.websocket_count(), 0);
        assert_eq!(hub.next_deadline(), None, "no socket, nothing away: no timer");
    }

    /// Let time pass up to `until` as `run_timers` would: a tick at every
    /// deadline on the way.
    fn advance(hub: &mut Hub, until: Instant) {
        while let Some(due) = hub.next_deadline().filter(|due| *due <= until) {
            hub.tick(due);
        }
    }

    #[test]
    fn an_abrupt_close_frees_the_socket_at_once_and_the_grace_ends_on_the_hubs_timer() {
        let mut hub = hub();
        let now = Instant::now();
        let (door, _door_box) = joined(&mut hub, "door", Some("t"), now);
        let (bob, bob_box) = joined(&mut hub, "bob", None, now);
        hub.closed(door, true, now);
        assert_eq!(hub.websocket_count(), 1, "the socket is gone");
        assert_eq!(hub.router().peer_count(), 2, "the peer is held as away");
        assert!(drain(&bob_box).is_empty(), "the room heard nothing");
        hub.receive(bob, r#"{"type":"ring","to":"door"}"#, now);
        bob_box.heard(now + GRACE / 2);
        advance(&mut hub, now + GRACE - Duration::from_millis(1));
        assert_eq!(hub.router().peer_count(), 2, "not before the grace ends");
        assert!(drain(&bob_box).is_empty());
        advance(&mut hub, now + GRACE);
        assert_eq!(hub.router().peer_count(), 1);
        let told = drain(&bob_box);
        assert!(told[0].contains("peer-left") && told[1].contains("peer-unavailable"), "{told:?}");
    }

    #[test]
    fn the_sweep_pings_the_silent_and_drops_who_does_not_answer() {
        let mut hub = hub();
        let start = Instant::now();
        let (quiet, quiet_box) = joined(&mut hub, "quiet", Some("t"), start);
        let (_chatty, chatty_box) = joined(&mut hub, "chatty", None, start);
        let (bob, bob_box) = joined(&mut hub, "bob", None, start);
        // The presence frames of the later joins.
        for outbox in [&quiet_box, &chatty_box] {
            drain(outbox);
        }
        assert_eq!(hub.next_deadline(), Some(start + LIVENESS.interval), "nothing to look at before that");
        // Just before the interval nobody is pinged; by the first sweep
        // after it, all three (silent since they joined) are.
        advance(&mut hub, start + LIVENESS.interval - Duration::from_millis(1));
        assert_eq!(next_now(&quiet_box), None);
        advance(&mut hub, start + LIVENESS.interval + LIVENESS.sweep_every());
        for outbox in [&quiet_box, &chatty_box, &bob_box] {
            assert_eq!(next_now(outbox), Some(Outgoing::Ping));
        }
        let (_, pinged) = quiet_box.last_heard();
        let pinged = pinged.expect("pinged");
        // chatty and bob answer; quiet does not, and gets a ring meanwhile.
        chatty_box.heard(pinged + Duration::from_secs(1));
        bob_box.heard(pinged + Duration::from_secs(1));
        hub.receive(bob, r#"{"type":"ring","to":"quiet"}"#, pinged);
        advance(&mut hub, pinged + LIVENESS.timeout - Duration::from_millis(1));
        assert_eq!(next_now(&quiet_box), Some(Outgoing::Text(r#"{"from":"bob","type":"ring","to":"quiet"}"#.into())));
        hub.receive(bob, r#"{"type":"ring","to":"quiet","n":2}"#, pinged);
        // By the first sweep after the timeout, quiet is given up on.
        let gone = pinged + LIVENESS.timeout + LIVENESS.sweep_every();
        advance(&mut hub, gone);
        assert_eq!(
            next_now(&quiet_box),
            Some(Outgoing::Close { code: close::NOT_ANSWERING, reason: "not answering pings" }),
            "what was queued for a dead socket is held, not written to it"
        );
        assert_eq!(next_now(&chatty_box), None, "an answer keeps a socket alive");
        assert_eq!(hub.router().peer_count(), 3, "quiet has a token: it is away, not gone");
        // The held ring reaches quiet when it comes back.
        let (back, back_box) = hub.open(gone, test_link());
        hub.join(back, Codec::Native, hello("quiet", Some("t")), gone);
        let got = drain(&back_box);
        assert!(got[0].contains("welcome") && got[1].contains(r#""n":2"#), "{got:?}");
        // The dead socket's task ends later; that changes nothing.
        hub.closed(quiet, true, gone);
        assert_eq!(hub.router().peer_count(), 3);
        assert!(drain(&bob_box).is_empty(), "the room never noticed");
    }

    #[test]
    fn the_timer_sleeps_while_nothing_is_due() {
        let mut hub = hub();
        let now = Instant::now();
        assert_eq!(hub.next_deadline(), None);
        let (conn, _outbox) = hub.open(now, test_link());
        assert_eq!(hub.next_deadline(), Some(now + LIVENESS.interval), "a socket is swept when it is due");
        assert!(hub.wake.is_full(), "the timer was nudged");
        hub.closed(conn, false, now);
        assert_eq!(hub.next_deadline(), None, "the last socket took the sweep with it");
    }

    #[test]
    fn a_fatal_error_goes_out_then_the_close() {
        let mut hub = hub();
        let now = Instant::now();
        let (conn, outbox) = hub.open(now, test_link());
        hub.join(conn, Codec::Native, hello("door", None), now);
        drain(&outbox);
        hub.fail(conn, Rejection::new(ErrorCode::TooLarge, "too big"), close::TOO_LARGE);
        assert_eq!(drain(&outbox), [r#"{"type":"error","code":"too-large","message":"too big"}"#]);
        assert_eq!(next_now(&outbox), Some(Outgoing::Close { code: close::TOO_LARGE, reason: "message too large" }));
        assert_eq!(hub.router().peer_count(), 0);
    }
}
