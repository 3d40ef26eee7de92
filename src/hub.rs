//! The rim around the router: it owns every peer's outbox and carries out
//! the router's actions with `try_send`.
//!
//! Socket tasks call in with events (a peer connected, a frame arrived, a
//! socket ended); the hub asks the router what to do and fills outboxes. It
//! never awaits, so it is only ever borrowed for the length of one event.
//!
//! Invariants:
//! - A full outbox is never waited on: its peer is aborted (close 4008) and
//!   the sender of the message that did not fit gets `peer-unavailable`.
//! - Every `ConnId` handed out by `open` is removed by `close`, which the
//!   socket task calls exactly once on its way out.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use log::{debug, info};

use crate::outbox::{Outbox, SendError};
use smol::channel::{self, Receiver, Sender};

use crate::peerjs;
use crate::protocol::{self, close, Codec, Hello, IceServer, Rejection};
use crate::router::{Action, ConnId, Delivery, Limits, Router};

pub struct Hub {
    pub router: Router,
    /// The outgoing queue of every open WebSocket, joined or not.
    outboxes: HashMap<ConnId, Outbox>,
    /// Nudged when the router starts holding messages for an id nobody
    /// holds; the server's expiry task waits on `pending_wake` so that no
    /// timer runs while nothing is pending.
    wake: Sender<()>,
    pub pending_wake: Receiver<()>,
    /// Peer id of each joined connection, for log lines.
    names: HashMap<ConnId, String>,
    next_conn: u64,
    /// Sent in every welcome.
    ice_servers: Vec<IceServer>,
    /// Peers dropped because their queue stayed full, for `/metrics`.
    pub dropped_slow: u64,
    /// For log lines.
    reconnect_grace: Duration,
}

impl Hub {
    pub fn new(limits: Limits, ice_servers: Vec<IceServer>) -> Hub {
        let (wake, pending_wake) = channel::bounded(1);
        Hub {
            router: Router::new(limits),
            outboxes: HashMap::new(),
            wake,
            pending_wake,
            names: HashMap::new(),
            next_conn: 0,
            ice_servers,
            dropped_slow: 0,
            reconnect_grace: limits.reconnect_grace,
        }
    }

    /// A WebSocket was accepted: give it an id and an outbox.
    pub fn open(&mut self) -> (ConnId, Outbox) {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let outbox = Outbox::new();
        self.outboxes.insert(conn, outbox.clone());
        (conn, outbox)
    }

    pub fn websocket_count(&self) -> usize {
        self.outboxes.len()
    }

    /// The connection asks to join with the query of its upgrade request.
    /// Sends the welcome, or the error and the close code, in `codec` (the
    /// endpoint's: a refused connection is no peer whose codec is known).
    pub fn join(&mut self, conn: ConnId, codec: Codec, hello: Result<Hello, Rejection>, now: Instant) {
        let refused = match hello {
            Ok(hello) => match self.router.connect(conn, hello, now) {
                Ok(joined) => {
                    info!("peer {} joined room {} ({} peers)", joined.id, joined.room, self.router.peer_count());
                    let welcome = match codec {
                        Codec::PeerJs => peerjs::open(),
                        Codec::Native => protocol::welcome(&joined.id, &joined.room, &joined.peers, &self.ice_servers),
                    };
                    self.names.insert(conn, joined.id);
                    // The welcome goes first, before anything the actions
                    // below might queue for this connection.
                    self.dispatch(vec![Action::Send { conn, text: welcome.into(), bounce: None }]);
                    // Then what was held while it was away, in order.
                    self.dispatch(joined.actions);
                    return;
                }
                Err(refused) => refused,
            },
            Err(rejection) => self.router.refuse(rejection, close::INVALID_HELLO),
        };
        info!("connection refused: {} ({})", refused.rejection.code.as_str(), refused.rejection.message);
        let error = self.router.error_as(conn, codec, refused.rejection);
        self.close_with(conn, error, refused.close_code);
    }

    /// A text frame arrived.
    pub fn receive(&mut self, conn: ConnId, text: &str, now: Instant) {
        let actions = self.router.receive(conn, text, now);
        self.dispatch(actions);
        if self.router.next_pending_expiry().is_some() {
            // Full means the expiry task is already awake.
            let _ = self.wake.try_send(());
        }
    }

    /// Messages held for ids that never connected expire now.
    pub fn expire_pending(&mut self, now: Instant) {
        let actions = self.router.expire_pending(now);
        self.dispatch(actions);
    }

    /// Send a non-fatal error to `conn`.
    pub fn reject(&mut self, conn: ConnId, rejection: Rejection) {
        let action = self.router.error_to(conn, rejection);
        self.dispatch(vec![action]);
    }

    /// Send a fatal error to `conn`, then close it with `close_code`.
    pub fn fail(&mut self, conn: ConnId, rejection: Rejection, close_code: u16) {
        let error = self.router.error_to(conn, rejection);
        self.close_with(conn, error, close_code);
    }

    /// Queue `error`, then close `conn` with `close_code`.
    fn close_with(&mut self, conn: ConnId, error: Action, close_code: u16) {
        // What is queued still goes out, ahead of the error and the close.
        let mut actions = self.router.disconnect(conn, Vec::new());
        self.forget(conn, &format!("closed: {}", close_reason(close_code)));
        actions.insert(0, error);
        actions.push(Action::Close { conn, code: close_code, reason: close_reason(close_code) });
        self.dispatch(actions);
    }

    /// The socket task of `conn` is ending after a close: forget it, tell
    /// its room, and bounce what it never got.
    pub fn close(&mut self, conn: ConnId) {
        let unsent = self.outboxes.remove(&conn).map(|outbox| outbox.take_all()).unwrap_or_default();
        let actions = self.router.disconnect(conn, unsent);
        self.forget(conn, "left");
        self.dispatch(actions);
    }

    /// The socket of `conn` broke without a close. Returns the peer id if
    /// it is now away: the caller waits out the reconnect grace, then calls
    /// `expire`.
    pub fn close_abruptly(&mut self, conn: ConnId) -> Option<String> {
        let unsent = self.outboxes.remove(&conn).map(|outbox| outbox.take_all()).unwrap_or_default();
        let (actions, away) = self.router.drop_abruptly(conn, unsent);
        match &away {
            Some(id) => {
                self.names.remove(&conn);
                info!("peer {id} dropped off; holding its id and messages for {:?}", self.reconnect_grace);
            }
            None => self.forget(conn, "dropped off"),
        }
        self.dispatch(actions);
        away
    }

    /// The reconnect grace of `id` (away since `conn` broke) is over.
    pub fn expire(&mut self, id: &str, conn: ConnId) {
        // Nothing happens if it came back meanwhile.
        if let Some(actions) = self.router.expire(id, conn) {
            info!(
                "peer {id} did not come back within {:?}; it left ({} peers)",
                self.reconnect_grace,
                self.router.peer_count()
            );
            self.dispatch(actions);
        }
    }

    /// The daemon is stopping: every socket gets 1001 after what is queued.
    pub fn shutdown(&mut self) {
        for outbox in self.outboxes.values() {
            outbox.close(close::GOING_AWAY, "server shutting down");
        }
    }

    /// Drop the name of `conn` and log why it went, once per peer.
    fn forget(&mut self, conn: ConnId, why: &str) {
        if let Some(id) = self.names.remove(&conn) {
            info!("peer {id} {why} ({} peers)", self.router.peer_count());
        }
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
                            let unsent = self.outboxes.get(&conn).map(Outbox::abort).unwrap_or_default();
                            work.extend(self.router.undeliverable(conn, failed, unsent));
                            self.forget(conn, "dropped: its outgoing queue is full, it is not reading");
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
                    self.forget(conn, &format!("closed: {reason}"));
                }
            }
        }
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::INVALID_DATA => "invalid UTF-8",
        close::TOO_LARGE => "message too large",
        close::INVALID_HELLO => "invalid id, room or token",
        close::REPLACED => "replaced",
        close::ID_TAKEN => "id taken",
        close::SERVER_FULL => "server full",
        close::ROOM_FULL => "room full",
        close::NOT_READING => "not reading",
        close::NOT_ANSWERING => "not answering pings",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);
    use crate::outbox::{Outgoing, MAX_QUEUED_MESSAGES};

    fn hello(id: &str) -> Result<Hello, Rejection> {
        Ok(Hello { id: Some(id.into()), room: "lobby".into(), token: None, codec: Codec::Native })
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

    #[test]
    fn a_full_queue_drops_the_slow_peer_and_tells_the_sender() {
        let mut hub = Hub::new(
            Limits { max_peers: 10, max_rate: 0, max_rooms: 100, max_room_peers: 100, reconnect_grace: GRACE },
            Vec::new(),
        );
        let (alice, alice_box) = hub.open();
        let (bob, bob_box) = hub.open();
        hub.join(alice, Codec::Native, hello("alice"), Instant::now());
        hub.join(bob, Codec::Native, hello("bob"), Instant::now());
        drain(&alice_box);
        drain(&bob_box);
        for _ in 0..MAX_QUEUED_MESSAGES {
            hub.receive(alice, r#"{"type":"chat","to":"bob"}"#, Instant::now());
        }
        assert!(drain(&alice_box).is_empty(), "all fit");
        hub.receive(alice, r#"{"type":"chat","to":"bob"}"#, Instant::now());
        assert!(bob_box.is_aborted());
        let told = drain(&alice_box);
        assert_eq!(told.len(), 2, "{told:?}");
        assert!(told[0].contains("peer-left"));
        assert!(told[1].contains("peer-unavailable"));
        assert_eq!(smol::block_on(bob_box.recv()), Outgoing::Close { code: close::NOT_READING, reason: "not reading" });
        assert_eq!(hub.router.peer_count(), 1);
        hub.close(bob);
        hub.close(alice);
        assert_eq!(hub.websocket_count(), 0);
    }

    #[test]
    fn welcome_comes_first() {
        let mut hub = Hub::new(
            Limits { max_peers: 10, max_rate: 0, max_rooms: 100, max_room_peers: 100, reconnect_grace: GRACE },
            protocol::ice_servers(&["stun:s.example".into()]),
        );
        let (conn, outbox) = hub.open();
        hub.join(conn, Codec::Native, hello("door"), Instant::now());
        assert_eq!(
            drain(&outbox),
            [r#"{"type":"welcome","id":"door","room":"lobby","peers":[],"iceServers":[{"urls":["stun:s.example"]}]}"#]
        );
    }
}
