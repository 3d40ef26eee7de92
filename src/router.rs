//! Peers, rooms and routing decisions. No I/O, no `.await`, no clock of its
//! own (time comes in as an argument).
//!
//! The router answers every event with a list of [`Action`]s; the hub around
//! it (`hub.rs`) carries them out with `try_send` into each peer's bounded
//! queue. That split is what lets one slow phone never stall the building:
//! nothing in here can block, and every decision is a plain unit test.
//!
//! Invariants:
//! - `peers`, `ids` and `rooms` always agree: a peer id is in exactly one
//!   room, a room exists only while it has members, and each live connection
//!   maps to at most one peer.
//! - Every directed message either becomes a `Send` carrying a `Bounce` (so
//!   the hub can tell the sender if the target's queue is full), is held for
//!   a peer that is away (and delivered on its return or bounced when its
//!   grace ends), or becomes an error to its sender. Nothing is dropped
//!   silently.
//! - A peer that dropped off abruptly and holds a token stays in its room,
//!   *away*, for the reconnect grace: its id is kept, presence is unchanged,
//!   and messages for it are held in order, up to `MAX_HELD_MESSAGES`.
//! - Each peer speaks one `Codec`; everything sent to it is encoded for that
//!   codec here, so native and PeerJS peers share one id space, one set of
//!   limits and one delivery promise. Presence messages go to native peers
//!   only (PeerJS has none).
//! - A PeerJS peer's message for an id nobody holds is held for the
//!   reconnect grace too (`pending`, bounded by `MAX_PENDING_IDS` and the
//!   per-id bounds), as PeerServer does: an offer may race the other side's
//!   connect. Native senders get `unknown-peer` at once.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::peerjs;
use crate::protocol::{self, close, Codec, ErrorCode, Hello, Inbound, Reference, Rejection};

/// The hub's handle for one WebSocket connection. Ids are never reused
/// within a process, so a stale `ConnId` can never hit a newer peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the hub must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Queue `text` for `conn`. If the queue is full, the hub calls
    /// [`Router::undeliverable`] with the bounce.
    Send { conn: ConnId, text: Rc<str>, bounce: Option<Bounce> },
    /// Send a close frame with this code after what is already queued.
    Close { conn: ConnId, code: u16, reason: &'static str },
}

/// A message waiting for a peer: in its outbox, or held while it is away.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub text: Rc<str>,
    pub bounce: Option<Bounce>,
}

/// Messages held for one away peer; past this, senders get
/// `peer-unavailable` at once instead of waiting for the grace to end.
pub const MAX_HELD_MESSAGES: usize = 64;
/// Bytes held for one away peer (one message of any size always fits).
pub const MAX_HELD_BYTES: usize = 256 * 1024;
/// Ids not connected yet that may have messages from PeerJS senders waiting
/// at once; past this, such a message expires at once.
pub const MAX_PENDING_IDS: usize = 256;

/// Whom to tell, and about which message, when a directed message cannot be
/// queued for its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    pub sender: ConnId,
    pub reference: Reference,
}

/// The router's part of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Peers connected at once; the next gets `server-full` and 4005.
    pub max_peers: usize,
    /// Messages per second per peer (burst of twice that); 0 = no limit.
    pub max_rate: u32,
    /// Rooms with members at once; a peer that would open one more gets
    /// `server-full` (close 4005 on connect).
    pub max_rooms: usize,
    /// Peers in one room; the next gets `room-full` (close 4006 on connect).
    pub max_room_peers: usize,
    /// How long a peer that dropped off abruptly keeps its id and gets its
    /// messages held; zero turns holding off. The hub does the waiting.
    pub reconnect_grace: Duration,
}

/// A successful connect: what the new peer's welcome says, and what everyone
/// else must be told.
#[derive(Debug)]
pub struct Joined {
    pub id: String,
    pub room: String,
    /// The other peers of the room, sorted.
    pub peers: Vec<String>,
    pub actions: Vec<Action>,
}

/// A refused connect: the error to send, then the close code.
#[derive(Debug, PartialEq)]
pub struct Refused {
    pub rejection: Rejection,
    pub close_code: u16,
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Messages passed from one peer to another (a broadcast counts once per
    /// recipient).
    pub routed: u64,
    /// Errors sent, by code, in the order of `ErrorCode::ALL`.
    pub rejected: [u64; ErrorCode::ALL.len()],
}

impl Stats {
    fn count(&mut self, code: ErrorCode) {
        if let Some(index) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.rejected[index] += 1;
        }
    }
}

/// The registry of connected peers and their rooms.
pub struct Router {
    limits: Limits,
    /// Peer id -> its connection, room and token.
    peers: HashMap<String, Peer>,
    /// Connection -> peer id, for events that arrive by connection.
    ids: HashMap<ConnId, String>,
    /// Room name -> member ids, sorted so that lists are stable.
    rooms: HashMap<String, BTreeSet<String>>,
    /// Id nobody holds -> messages PeerJS senders sent it, waiting for it to
    /// connect within the reconnect grace.
    pending: HashMap<String, Pending>,
    pub stats: Stats,
}

struct Pending {
    since: Instant,
    /// In order: the message in the router's form, its sender's id, whom to
    /// tell if it expires.
    messages: Vec<(Map<String, Value>, String, Bounce)>,
    bytes: usize,
}

struct Peer {
    /// Its socket; while away, the socket it lost.
    conn: ConnId,
    /// Dropped off abruptly, within the reconnect grace.
    away: bool,
    room: String,
    /// Proof of identity for taking the id over after a reconnect.
    token: Option<String>,
    bucket: TokenBucket,
    /// Messages that arrived while away, in order.
    held: VecDeque<Delivery>,
    held_bytes: usize,
    /// Its wire format: how everything sent to it is encoded.
    codec: Codec,
}

impl Router {
    pub fn new(limits: Limits) -> Router {
        Router {
            limits,
            peers: HashMap::new(),
            ids: HashMap::new(),
            rooms: HashMap::new(),
            pending: HashMap::new(),
            stats: Stats::default(),
        }
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Every peer as (id, room), sorted by id.
    pub fn peer_list(&self) -> Vec<(String, String)> {
        let mut list: Vec<_> = self.peers.iter().map(|(id, peer)| (id.clone(), peer.room.clone())).collect();
        list.sort();
        list
    }

    /// A new connection asks to be `hello.id` in `hello.room`.
    pub fn connect(&mut self, conn: ConnId, hello: Hello, now: Instant) -> Result<Joined, Refused> {
        let mut actions = Vec::new();
        let id = match hello.id {
            Some(id) => id,
            None => self.fresh_id(),
        };
        let mut returning = None;
        if let Some(existing) = self.peers.get(&id) {
            let same_owner =
                matches!((&existing.token, &hello.token), (Some(old), Some(new)) if constant_time_eq(old, new));
            if !same_owner {
                return Err(self.refuse(
                    Rejection::new(ErrorCode::IdTaken, format!("the id {id:?} is in use; pick another")),
                    close::ID_TAKEN,
                ));
            }
            if existing.room != hello.room {
                if let Err(rejection) = self.admit(&hello.room, Some(&id)) {
                    let close_code = close_code_for(rejection.code);
                    return Err(self.refuse(rejection, close_code));
                }
            }
            // The same browser came back (a reconnect after a drop, a new
            // tab, or a reconnect before the old socket noticed it was
            // dead): the newer socket wins.
            if !existing.away {
                actions.push(Action::Close { conn: existing.conn, code: close::REPLACED, reason: "replaced" });
            }
            if existing.room == hello.room {
                // Same room: nobody else needs to hear about it, so a call
                // whose media survived a Wi-Fi blip is not torn down.
                let peer = self.peers.get_mut(&id).expect("just looked up");
                let old = std::mem::replace(&mut peer.conn, conn);
                peer.away = false;
                peer.token = hello.token;
                peer.codec = hello.codec;
                let held = std::mem::take(&mut peer.held);
                peer.held_bytes = 0;
                self.ids.remove(&old);
                self.ids.insert(conn, id.clone());
                let room = hello.room;
                let peers = self.rooms[&room].iter().filter(|member| **member != id).cloned().collect();
                actions.extend(held.into_iter().map(|delivery| delivery.to(conn)));
                return Ok(Joined { id, room, peers, actions });
            }
            returning = Some(self.remove(&id, &mut actions));
        } else if self.peers.len() >= self.limits.max_peers {
            return Err(self.refuse(
                Rejection::new(
                    ErrorCode::ServerFull,
                    format!("the server holds its limit of {} peers", self.limits.max_peers),
                ),
                close::SERVER_FULL,
            ));
        } else if let Err(rejection) = self.admit(&hello.room, None) {
            let close_code = close_code_for(rejection.code);
            return Err(self.refuse(rejection, close_code));
        }
        let room = hello.room;
        let peers = self.room_members(&room);
        let bucket = TokenBucket::new(self.limits.max_rate, now);
        let mut peer = returning.unwrap_or_else(|| Peer {
            conn,
            away: false,
            room: String::new(),
            token: None,
            bucket,
            held: VecDeque::new(),
            held_bytes: 0,
            codec: hello.codec,
        });
        peer.conn = conn;
        peer.away = false;
        peer.room = room.clone();
        peer.token = hello.token;
        peer.codec = hello.codec;
        peer.held_bytes = 0;
        let held = std::mem::take(&mut peer.held);
        let codec = peer.codec;
        self.insert(id.clone(), peer, &mut actions);
        actions.extend(held.into_iter().map(|delivery| delivery.to(conn)));
        // Messages PeerJS senders sent before this id existed.
        if let Some(pending) = self.pending.remove(&id) {
            for (message, from, bounce) in pending.messages {
                let text = encode(codec, message, &from);
                actions.push(Action::Send { conn, text, bounce: Some(bounce) });
            }
        }
        Ok(Joined { id, room, peers, actions })
    }

    /// A text frame arrived from `conn`.
    pub fn receive(&mut self, conn: ConnId, text: &str, now: Instant) -> Vec<Action> {
        let Some(from) = self.ids.get(&conn).cloned() else {
            return Vec::new();
        };
        let peer = self.peers.get_mut(&from).expect("ids and peers agree");
        let codec = peer.codec;
        let parse = |text: &str| match codec {
            Codec::Native => protocol::parse_inbound(text).map(Some),
            Codec::PeerJs => peerjs::parse_inbound(text),
        };
        if !peer.bucket.take(now) {
            let rejection = Rejection::new(
                ErrorCode::RateLimited,
                format!("more than {} messages per second; this one was dropped", self.limits.max_rate),
            );
            let reference = parse(text).ok().flatten().map(|inbound| inbound.reference());
            let rejection = match reference {
                Some(reference) => rejection.about(reference),
                None => rejection,
            };
            return vec![self.error_to(conn, rejection)];
        }
        let inbound = match parse(text) {
            Ok(Some(inbound)) => inbound,
            // A PeerJS heartbeat: the frame itself showed the peer is alive.
            Ok(None) => return Vec::new(),
            Err(rejection) => return vec![self.error_to(conn, rejection)],
        };
        match inbound {
            Inbound::Directed { to, message } => {
                let reference = Reference {
                    kind: message.get("type").and_then(|t| t.as_str()).map(str::to_string),
                    to: Some(to.clone()),
                };
                let mut actions = Vec::new();
                let bounce = Bounce { sender: conn, reference };
                let Some(target_codec) = self.peers.get(&to).map(|peer| peer.codec) else {
                    if codec == Codec::PeerJs {
                        self.hold_pending(to, message, from, bounce, now, &mut actions);
                        return actions;
                    }
                    let rejection = Rejection::new(ErrorCode::UnknownPeer, format!("no peer {to:?} is connected"))
                        .about(bounce.reference);
                    return vec![self.error_to(conn, rejection)];
                };
                self.stats.routed += 1;
                let text = encode(target_codec, message, &from);
                self.deliver(&to, text, Some(bounce), &mut actions);
                actions
            }
            Inbound::Broadcast { message } => {
                let room = &self.peers[&from].room;
                let others: Vec<String> = self.rooms[room].iter().filter(|member| **member != from).cloned().collect();
                let mut actions = Vec::new();
                // Encoded at most once per codec present in the room.
                let (mut native, mut peerjs) = (None, None);
                for member in &others {
                    let text = match self.peers[member].codec {
                        Codec::Native => native.get_or_insert_with(|| encode(Codec::Native, message.clone(), &from)),
                        Codec::PeerJs => peerjs.get_or_insert_with(|| encode(Codec::PeerJs, message.clone(), &from)),
                    }
                    .clone();
                    self.deliver(member, text, None, &mut actions);
                }
                self.stats.routed += others.len() as u64;
                actions
            }
            Inbound::Join { room } => {
                let mut actions = Vec::new();
                if self.peers[&from].room != room {
                    if let Err(rejection) = self.admit(&room, Some(&from)) {
                        let reference = Reference { kind: Some("join".into()), to: None };
                        return vec![self.error_to(conn, rejection.about(reference))];
                    }
                    let mut peer = self.remove(&from, &mut actions);
                    peer.room = room;
                    self.insert(from.clone(), peer, &mut actions);
                }
                actions.push(self.peers_of(conn, &from));
                actions
            }
            Inbound::Peers => vec![self.peers_of(conn, &from)],
        }
    }

    /// `conn` closed on purpose (a close frame, or we closed it): the peer
    /// leaves now. `unsent` is what its outbox still held; their senders
    /// are told.
    pub fn disconnect(&mut self, conn: ConnId, unsent: Vec<Delivery>) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(id) = self.ids.get(&conn).cloned() {
            self.remove(&id, &mut actions);
            self.bounce_all(unsent, &format!("{id:?} left before the message reached it"), &mut actions);
        }
        actions
    }

    /// `conn` broke without a close (Wi-Fi gone, ping timeout). A peer with
    /// a token is kept *away* for the reconnect grace: presence does not
    /// change and `unsent` plus anything sent meanwhile is held. Returns the
    /// id when the caller must call [`Router::expire`] after the grace.
    pub fn drop_abruptly(&mut self, conn: ConnId, unsent: Vec<Delivery>) -> (Vec<Action>, Option<String>) {
        let Some(id) = self.ids.get(&conn).cloned() else {
            return (Vec::new(), None);
        };
        let peer = self.peers.get_mut(&id).expect("ids and peers agree");
        if peer.token.is_none() || self.limits.reconnect_grace.is_zero() {
            // Without a token nobody can prove to be this peer again.
            return (self.disconnect(conn, unsent), None);
        }
        peer.away = true;
        for delivery in unsent.into_iter().rev() {
            peer.held_bytes += delivery.text.len();
            peer.held.push_front(delivery);
        }
        self.ids.remove(&conn);
        (Vec::new(), Some(id))
    }

    /// The reconnect grace of `id`, which dropped off from `conn`, is over.
    /// If it has not come back, it leaves and the senders of what was held
    /// for it get `peer-unavailable`.
    /// `None` if it came back meanwhile.
    pub fn expire(&mut self, id: &str, conn: ConnId) -> Option<Vec<Action>> {
        if !self.peers.get(id).is_some_and(|peer| peer.away && peer.conn == conn) {
            return None;
        }
        let mut actions = Vec::new();
        let peer = self.remove(id, &mut actions);
        let why = format!("{id:?} dropped off and did not come back within {:?}", self.limits.reconnect_grace);
        self.bounce_all(peer.held.into(), &why, &mut actions);
        Some(actions)
    }

    /// The hub could not queue a message for `target` because its queue is
    /// full: the target is not reading. Drop it (close 4008, everyone in its
    /// room hears `peer-left`) and tell the sender of that message and of
    /// every message its queue still held.
    pub fn undeliverable(&mut self, target: ConnId, failed: Delivery, unsent: Vec<Delivery>) -> Vec<Action> {
        let mut actions = Vec::new();
        let name = self.ids.get(&target).cloned();
        if let Some(id) = &name {
            self.remove(id, &mut actions);
            actions.push(Action::Close { conn: target, code: close::NOT_READING, reason: "not reading" });
        }
        let name = name.or_else(|| failed.bounce.as_ref().and_then(|bounce| bounce.reference.to.clone()));
        let why = format!("{:?} is not reading its messages and was disconnected", name.unwrap_or_default());
        self.bounce_all(std::iter::once(failed).chain(unsent).collect(), &why, &mut actions);
        actions
    }

    /// Tell each sender (that is still here) of these deliveries that they
    /// did not arrive: once per sender, about its first message, so a long
    /// queue turned back cannot flood (and so drop) its senders in turn.
    pub fn bounce_all(&mut self, deliveries: Vec<Delivery>, why: &str, actions: &mut Vec<Action>) {
        let mut told = BTreeSet::new();
        for bounce in deliveries.into_iter().filter_map(|delivery| delivery.bounce) {
            if self.ids.contains_key(&bounce.sender) && told.insert(bounce.sender) {
                let rejection = Rejection::new(ErrorCode::PeerUnavailable, why).about(bounce.reference);
                actions.push(self.error_to(bounce.sender, rejection));
            }
        }
    }

    /// Send to `id` now, or hold it while `id` is away.
    fn deliver(&mut self, id: &str, text: Rc<str>, bounce: Option<Bounce>, actions: &mut Vec<Action>) {
        let Some(peer) = self.peers.get_mut(id) else { return };
        if !peer.away {
            actions.push(Action::Send { conn: peer.conn, text, bounce });
            return;
        }
        let fits = peer.held.is_empty()
            || (peer.held.len() < MAX_HELD_MESSAGES && peer.held_bytes + text.len() <= MAX_HELD_BYTES);
        if fits {
            peer.held_bytes += text.len();
            peer.held.push_back(Delivery { text, bounce });
        } else {
            let why = format!("{id:?} is reconnecting and has {} messages waiting already", peer.held.len());
            self.bounce_all(vec![Delivery { text, bounce }], &why, actions);
        }
    }

    /// Count and encode an error for `conn`, in its peer's codec.
    pub fn error_to(&mut self, conn: ConnId, rejection: Rejection) -> Action {
        let codec = self.ids.get(&conn).map_or(Codec::Native, |id| self.peers[id].codec);
        self.error_as(conn, codec, rejection)
    }

    /// The same for a connection that may not be a peer (yet), whose codec
    /// the caller knows from the endpoint it came to.
    pub fn error_as(&mut self, conn: ConnId, codec: Codec, rejection: Rejection) -> Action {
        self.stats.count(rejection.code);
        let text = match codec {
            Codec::Native => protocol::error(&rejection),
            Codec::PeerJs => peerjs::error(&rejection, self.ids.get(&conn).map_or("", String::as_str)),
        };
        Action::Send { conn, text: text.into(), bounce: None }
    }

    /// Hold a PeerJS sender's message for `to`, which nobody holds, until
    /// `to` connects or the reconnect grace ends ([`Router::expire_pending`]).
    fn hold_pending(
        &mut self,
        to: String,
        message: Map<String, Value>,
        from: String,
        bounce: Bounce,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let size = message.get("payload").map_or(0, |payload| payload.to_string().len()) + 64;
        let room_for_id = self.pending.contains_key(&to) || self.pending.len() < MAX_PENDING_IDS;
        if self.limits.reconnect_grace.is_zero() || !room_for_id {
            let rejection =
                Rejection::new(ErrorCode::UnknownPeer, format!("no peer {to:?} is connected")).about(bounce.reference);
            actions.push(self.error_to(bounce.sender, rejection));
            return;
        }
        let pending =
            self.pending.entry(to.clone()).or_insert_with(|| Pending { since: now, messages: Vec::new(), bytes: 0 });
        let fits = pending.messages.is_empty()
            || (pending.messages.len() < MAX_HELD_MESSAGES && pending.bytes + size <= MAX_HELD_BYTES);
        if fits {
            pending.bytes += size;
            pending.messages.push((message, from, bounce));
            self.stats.routed += 1;
        } else {
            let why = format!("{to:?} is not connected and has {} messages waiting already", pending.messages.len());
            self.bounce_all(vec![Delivery { text: "".into(), bounce: Some(bounce) }], &why, actions);
        }
    }

    /// When the oldest message held for an id nobody holds expires.
    pub fn next_pending_expiry(&self) -> Option<Instant> {
        self.pending.values().map(|pending| pending.since + self.limits.reconnect_grace).min()
    }

    /// Messages held for ids that did not connect within the grace expire:
    /// their senders are told (PeerJS: `EXPIRE`).
    pub fn expire_pending(&mut self, now: Instant) -> Vec<Action> {
        let grace = self.limits.reconnect_grace;
        let due: Vec<String> =
            self.pending.iter().filter(|(_, pending)| pending.since + grace <= now).map(|(id, _)| id.clone()).collect();
        let mut actions = Vec::new();
        for id in due {
            let pending = self.pending.remove(&id).expect("just listed");
            let deliveries = pending
                .messages
                .into_iter()
                .map(|(_, _, bounce)| Delivery { text: "".into(), bounce: Some(bounce) })
                .collect();
            self.bounce_all(deliveries, &format!("nobody connected as {id:?} within {grace:?}"), &mut actions);
        }
        actions
    }

    /// Count a refusal that happens before a peer exists (bad hello).
    pub fn refuse(&mut self, rejection: Rejection, close_code: u16) -> Refused {
        self.stats.count(rejection.code);
        Refused { rejection, close_code }
    }

    fn peers_of(&self, conn: ConnId, id: &str) -> Action {
        let room = &self.peers[id].room;
        let others: Vec<String> = self.rooms[room].iter().filter(|member| *member != id).cloned().collect();
        Action::Send { conn, text: protocol::peers(room, &others).into(), bounce: None }
    }

    /// May a peer enter `room`? `mover` is the id of a peer leaving another
    /// room for it (a join or a takeover), whose old room may close.
    fn admit(&self, room: &str, mover: Option<&str>) -> Result<(), Rejection> {
        match self.rooms.get(room) {
            Some(members) if members.len() >= self.limits.max_room_peers => Err(Rejection::new(
                ErrorCode::RoomFull,
                format!("the room {room:?} holds its limit of {} peers", self.limits.max_room_peers),
            )),
            Some(_) => Ok(()),
            None => {
                // Moving out of a room where the mover is alone closes that
                // room, so the count does not grow.
                let frees_one = mover
                    .and_then(|id| self.peers.get(id))
                    .is_some_and(|peer| self.rooms.get(&peer.room).is_some_and(|members| members.len() == 1));
                if self.rooms.len() >= self.limits.max_rooms && !frees_one {
                    Err(Rejection::new(
                        ErrorCode::ServerFull,
                        format!("the server holds its limit of {} rooms", self.limits.max_rooms),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Members of `room`, sorted; empty for a room nobody is in.
    pub fn room_members(&self, room: &str) -> Vec<String> {
        self.rooms.get(room).map(|members| members.iter().cloned().collect()).unwrap_or_default()
    }

    /// Put `peer` into every map and tell its room it joined.
    fn insert(&mut self, id: String, peer: Peer, actions: &mut Vec<Action>) {
        self.announce(&peer.room, protocol::peer_joined(&id), actions);
        self.rooms.entry(peer.room.clone()).or_default().insert(id.clone());
        self.ids.insert(peer.conn, id.clone());
        self.peers.insert(id, peer);
    }

    /// Queue `text` (presence) for every native member of `room`.
    fn announce(&self, room: &str, text: String, actions: &mut Vec<Action>) {
        let Some(members) = self.rooms.get(room) else {
            return;
        };
        let text: Rc<str> = text.into();
        let present = members.iter().map(|member| &self.peers[member]);
        for peer in present.filter(|peer| !peer.away && peer.codec == Codec::Native) {
            actions.push(Action::Send { conn: peer.conn, text: text.clone(), bounce: None });
        }
    }

    /// Take `id` out of every map and tell its room it left.
    fn remove(&mut self, id: &str, actions: &mut Vec<Action>) -> Peer {
        let peer = self.peers.remove(id).expect("caller checked the peer exists");
        self.ids.remove(&peer.conn);
        if let Some(members) = self.rooms.get_mut(&peer.room) {
            members.remove(id);
            if members.is_empty() {
                self.rooms.remove(&peer.room);
            }
        }
        self.announce(&peer.room, protocol::peer_left(id), actions);
        peer
    }

    /// An id nobody holds: random, 10 characters of an unambiguous alphabet.
    pub fn fresh_id(&self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
        loop {
            let id: String = (0..10).map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char).collect();
            if !self.peers.contains_key(&id) {
                return id;
            }
        }
    }
}

/// A directed or broadcast message from `from`, as a peer speaking `codec`
/// receives it.
fn encode(codec: Codec, message: Map<String, Value>, from: &str) -> Rc<str> {
    match codec {
        Codec::Native => protocol::stamp(message, from).into(),
        Codec::PeerJs => peerjs::relay(&message, from).into(),
    }
}

impl Delivery {
    fn to(self, conn: ConnId) -> Action {
        Action::Send { conn, text: self.text, bounce: self.bounce }
    }
}

/// The close code that goes with a refusal on connect.
fn close_code_for(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::RoomFull => close::ROOM_FULL,
        ErrorCode::ServerFull => close::SERVER_FULL,
        _ => close::INVALID_HELLO,
    }
}

/// Compare secrets without an early exit, so the time taken does not tell
/// an attacker how much of a guessed token was right.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    difference == 0
}

/// Per-peer rate limit: `rate` tokens a second, at most `2 * rate` saved up.
struct TokenBucket {
    rate: u32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32, now: Instant) -> TokenBucket {
        TokenBucket { rate, tokens: 2.0 * f64::from(rate), last: now }
    }

    fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let burst = 2.0 * f64::from(self.rate);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    const LIMITS: Limits =
        Limits { max_peers: 3, max_rate: 0, max_rooms: 100, max_room_peers: 100, reconnect_grace: GRACE };

    fn hello(id: &str, room: &str, token: Option<&str>) -> Hello {
        Hello { id: Some(id.into()), room: room.into(), token: token.map(Into::into), codec: Codec::Native }
    }

    /// Render actions as short strings: `1<-{"type":..}` or `1 close 4001`.
    fn render(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|action| match action {
                Action::Send { conn, text, bounce } => {
                    format!("{}<-{}{}", conn.0, text, if bounce.is_some() { " (bounce)" } else { "" })
                }
                Action::Close { conn, code, .. } => format!("{} close {}", conn.0, code),
            })
            .collect()
    }

    fn router_with(peers: &[(u64, &str, &str)]) -> Router {
        let mut router = Router::new(LIMITS);
        for (conn, id, room) in peers {
            router.connect(ConnId(*conn), hello(id, room, Some("t")), Instant::now()).unwrap();
        }
        router
    }

    fn check(router: &mut Router, from: u64, text: &str, expected: &[&str]) {
        let actions = router.receive(ConnId(from), text, Instant::now());
        assert_eq!(render(&actions), expected, "after {text}");
    }

    #[test]
    fn connect_announces_to_the_room_only() {
        let mut router = router_with(&[(1, "bob", "lobby"), (2, "carol", "kitchen")]);
        let joined = router.connect(ConnId(3), hello("alice", "lobby", None), Instant::now()).unwrap();
        assert_eq!(joined.peers, ["bob"]);
        assert_eq!(render(&joined.actions), [r#"1<-{"type":"peer-joined","id":"alice"}"#]);
        assert_eq!(render(&router.disconnect(ConnId(3), Vec::new())), [r#"1<-{"type":"peer-left","id":"alice"}"#]);
        assert_eq!(router.room_count(), 2);
        assert!(router.disconnect(ConnId(3), Vec::new()).is_empty(), "a second disconnect is a no-op");
    }

    #[test]
    fn directed_messages_are_stamped_and_bounce_aware() {
        let mut router = router_with(&[(1, "alice", "lobby"), (2, "bob", "kitchen")]);
        check(
            &mut router,
            1,
            r#"{"type":"offer","to":"bob","from":"mallory","sdp":"v=0"}"#,
            &[r#"2<-{"from":"alice","sdp":"v=0","to":"bob","type":"offer"} (bounce)"#],
        );
        check(
            &mut router,
            1,
            r#"{"type":"offer","to":"zed"}"#,
            &[
                r#"1<-{"type":"error","code":"unknown-peer","message":"no peer \"zed\" is connected","ref":{"type":"offer","to":"zed"}}"#,
            ],
        );
        assert_eq!(router.stats.routed, 1);
    }

    #[test]
    fn broadcast_reaches_the_room_minus_the_sender() {
        let mut router = router_with(&[(1, "a", "lobby"), (2, "b", "lobby"), (3, "c", "kitchen")]);
        check(&mut router, 1, r#"{"type":"chat","to":"*"}"#, &[r#"2<-{"from":"a","to":"*","type":"chat"}"#]);
    }

    #[test]
    fn join_moves_presence_both_ways() {
        let mut router = router_with(&[(1, "a", "lobby"), (2, "b", "lobby"), (3, "c", "kitchen")]);
        check(
            &mut router,
            1,
            r#"{"type":"join","room":"kitchen"}"#,
            &[
                r#"2<-{"type":"peer-left","id":"a"}"#,
                r#"3<-{"type":"peer-joined","id":"a"}"#,
                r#"1<-{"type":"peers","room":"kitchen","peers":["c"]}"#,
            ],
        );
        check(&mut router, 2, r#"{"type":"peers"}"#, &[r#"2<-{"type":"peers","room":"lobby","peers":[]}"#]);
        check(
            &mut router,
            2,
            r#"{"type":"join","room":"attic"}"#,
            &[r#"2<-{"type":"peers","room":"attic","peers":[]}"#],
        );
        assert_eq!(router.room_count(), 2, "the emptied lobby is gone");
    }

    #[test]
    fn takeover_needs_the_same_token() {
        let mut router = router_with(&[(1, "door", "lobby"), (2, "bob", "lobby")]);
        let taken = router.connect(ConnId(3), hello("door", "lobby", Some("wrong")), Instant::now()).unwrap_err();
        assert_eq!((taken.rejection.code, taken.close_code), (ErrorCode::IdTaken, close::ID_TAKEN));
        let taken = router.connect(ConnId(3), hello("door", "lobby", None), Instant::now()).unwrap_err();
        assert_eq!(taken.rejection.code, ErrorCode::IdTaken);
        let joined = router.connect(ConnId(4), hello("door", "lobby", Some("t")), Instant::now()).unwrap();
        assert_eq!(joined.peers, ["bob"]);
        assert_eq!(render(&joined.actions), ["1 close 4001"], "a takeover in the same room is silent");
        assert!(router.disconnect(ConnId(1), Vec::new()).is_empty(), "the replaced socket no longer owns the id");
        check(
            &mut router,
            2,
            r#"{"type":"ring","to":"door"}"#,
            &[r#"4<-{"from":"bob","to":"door","type":"ring"} (bounce)"#],
        );
        let moved = router.connect(ConnId(5), hello("door", "porch", Some("t")), Instant::now()).unwrap();
        assert_eq!(
            render(&moved.actions),
            ["4 close 4001", r#"2<-{"type":"peer-left","id":"door"}"#],
            "a takeover into another room moves presence"
        );
    }

    #[test]
    fn server_full_at_the_limit() {
        let mut router = router_with(&[(1, "a", "lobby"), (2, "b", "lobby"), (3, "c", "lobby")]);
        let full = router.connect(ConnId(4), hello("d", "lobby", None), Instant::now()).unwrap_err();
        assert_eq!((full.rejection.code, full.close_code), (ErrorCode::ServerFull, close::SERVER_FULL));
        assert!(
            router.connect(ConnId(5), hello("c", "lobby", Some("t")), Instant::now()).is_ok(),
            "a takeover needs no free slot"
        );
    }

    #[test]
    fn random_ids_are_valid_and_unique() {
        let mut router = Router::new(Limits {
            max_peers: 100,
            max_rate: 0,
            max_rooms: 100,
            max_room_peers: 100,
            reconnect_grace: GRACE,
        });
        let mut seen = BTreeSet::new();
        for conn in 0..100 {
            let joined = router
                .connect(
                    ConnId(conn),
                    Hello { id: None, room: "lobby".into(), token: None, codec: Codec::Native },
                    Instant::now(),
                )
                .unwrap();
            assert!(protocol::is_valid_name(&joined.id));
            assert!(seen.insert(joined.id));
        }
    }

    #[test]
    fn undeliverable_drops_the_target_and_tells_the_sender() {
        let mut router = router_with(&[(1, "alice", "lobby"), (2, "bob", "lobby"), (3, "carol", "lobby")]);
        let actions = router.receive(ConnId(1), r#"{"type":"offer","to":"bob"}"#, Instant::now());
        let Action::Send { text, bounce, .. } = actions[0].clone() else { panic!() };
        assert_eq!(
            render(&router.undeliverable(ConnId(2), Delivery { text, bounce }, Vec::new())),
            [
                r#"1<-{"type":"peer-left","id":"bob"}"#,
                r#"3<-{"type":"peer-left","id":"bob"}"#,
                "2 close 4008",
                r#"1<-{"type":"error","code":"peer-unavailable","message":"\"bob\" is not reading its messages and was disconnected","ref":{"type":"offer","to":"bob"}}"#,
            ]
        );
    }

    #[test]
    fn rate_limit_allows_a_burst_of_twice_the_rate() {
        let mut router = Router::new(Limits {
            max_peers: 10,
            max_rate: 5,
            max_rooms: 100,
            max_room_peers: 100,
            reconnect_grace: GRACE,
        });
        let start = Instant::now();
        router.connect(ConnId(1), hello("a", "lobby", None), start).unwrap();
        router.connect(ConnId(2), hello("b", "lobby", None), start).unwrap();
        let send = |router: &mut Router, at: Instant| router.receive(ConnId(1), r#"{"type":"x","to":"b"}"#, at);
        for _ in 0..10 {
            assert!(render(&send(&mut router, start))[0].starts_with("2<-"));
        }
        assert!(render(&send(&mut router, start))[0].contains("rate-limited"));
        let later = start + Duration::from_millis(200);
        assert!(render(&send(&mut router, later))[0].starts_with("2<-"), "one token back after 1/5 s");
        assert!(render(&send(&mut router, later))[0].contains("rate-limited"));
    }

    #[test]
    fn room_limits() {
        let limits = Limits { max_peers: 10, max_rate: 0, max_rooms: 2, max_room_peers: 2, reconnect_grace: GRACE };
        let mut router = Router::new(limits);
        let now = Instant::now();
        router.connect(ConnId(1), hello("a", "one", None), now).unwrap();
        router.connect(ConnId(2), hello("b", "one", None), now).unwrap();
        let full = router.connect(ConnId(3), hello("c", "one", None), now).unwrap_err();
        assert_eq!((full.rejection.code, full.close_code), (ErrorCode::RoomFull, close::ROOM_FULL));
        router.connect(ConnId(3), hello("c", "two", None), now).unwrap();
        let too_many = router.connect(ConnId(4), hello("d", "three", None), now).unwrap_err();
        assert_eq!((too_many.rejection.code, too_many.close_code), (ErrorCode::ServerFull, close::SERVER_FULL));
        // A join into a full room is refused and leaves the peer where it was.
        check(
            &mut router,
            3,
            r#"{"type":"join","room":"one"}"#,
            &[
                r#"3<-{"type":"error","code":"room-full","message":"the room \"one\" holds its limit of 2 peers","ref":{"type":"join"}}"#,
            ],
        );
        // c is alone in "two": moving to a new room closes "two", so it fits.
        check(&mut router, 3, r#"{"type":"join","room":"four"}"#, &[r#"3<-{"type":"peers","room":"four","peers":[]}"#]);
        // b is not alone in "one": a new room would be a third.
        let actions = router.receive(ConnId(2), r#"{"type":"join","room":"five"}"#, now);
        assert!(render(&actions)[0].contains("server-full"), "{:?}", render(&actions));
        // Leaving frees the slot.
        router.disconnect(ConnId(1), Vec::new());
        router.connect(ConnId(5), hello("e", "one", None), now).unwrap();
        assert_eq!(router.room_members("one"), ["b", "e"]);
        assert_eq!(router.room_count(), 2);
    }

    #[test]
    fn an_abrupt_drop_holds_messages_until_the_return() {
        let mut router = router_with(&[(1, "door", "lobby"), (2, "bob", "lobby"), (3, "carol", "lobby")]);
        let unsent = vec![Delivery { text: "queued".into(), bounce: None }];
        let (actions, away) = router.drop_abruptly(ConnId(1), unsent);
        assert!(actions.is_empty(), "presence does not change: {:?}", render(&actions));
        assert_eq!(away.as_deref(), Some("door"));
        check(&mut router, 2, r#"{"type":"ring","to":"door","n":1}"#, &[]);
        check(&mut router, 3, r#"{"type":"chat","to":"*"}"#, &[r#"2<-{"from":"carol","to":"*","type":"chat"}"#]);
        check(&mut router, 2, r#"{"type":"ring","to":"door","n":2}"#, &[]);
        let back = router.connect(ConnId(4), hello("door", "lobby", Some("t")), Instant::now()).unwrap();
        assert_eq!(back.peers, ["bob", "carol"]);
        assert_eq!(
            render(&back.actions),
            [
                "4<-queued",
                r#"4<-{"from":"bob","n":1,"to":"door","type":"ring"} (bounce)"#,
                r#"4<-{"from":"carol","to":"*","type":"chat"}"#,
                r#"4<-{"from":"bob","n":2,"to":"door","type":"ring"} (bounce)"#,
            ],
            "what was queued, then what was held, in order; no close for the dead socket"
        );
        assert!(router.expire("door", ConnId(1)).is_none(), "it came back: the old grace ends quietly");
    }

    #[test]
    fn a_peer_that_does_not_return_leaves_and_its_senders_are_told() {
        let mut router = router_with(&[(1, "door", "lobby"), (2, "bob", "lobby")]);
        router.drop_abruptly(ConnId(1), Vec::new());
        check(&mut router, 2, r#"{"type":"ring","to":"door"}"#, &[]);
        check(&mut router, 2, r#"{"type":"ring","to":"door"}"#, &[]);
        let actions = router.expire("door", ConnId(1)).expect("still away");
        assert_eq!(
            render(&actions),
            [
                r#"2<-{"type":"peer-left","id":"door"}"#,
                r#"2<-{"type":"error","code":"peer-unavailable","message":"\"door\" dropped off and did not come back within 10s","ref":{"type":"ring","to":"door"}}"#,
            ],
            "one error per sender"
        );
        assert_eq!(router.peer_count(), 1);
    }

    #[test]
    fn no_token_no_grace() {
        let mut router = Router::new(LIMITS);
        router.connect(ConnId(1), hello("a", "lobby", None), Instant::now()).unwrap();
        router.connect(ConnId(2), hello("b", "lobby", None), Instant::now()).unwrap();
        let (actions, away) = router.drop_abruptly(ConnId(1), Vec::new());
        assert_eq!(away, None);
        assert_eq!(render(&actions), [r#"2<-{"type":"peer-left","id":"a"}"#]);
    }

    #[test]
    fn holding_is_bounded() {
        let mut router = router_with(&[(1, "door", "lobby"), (2, "bob", "lobby")]);
        router.drop_abruptly(ConnId(1), Vec::new());
        for _ in 0..MAX_HELD_MESSAGES {
            check(&mut router, 2, r#"{"type":"x","to":"door"}"#, &[]);
        }
        let actions = router.receive(ConnId(2), r#"{"type":"x","to":"door"}"#, Instant::now());
        assert!(render(&actions)[0].contains("peer-unavailable"), "{:?}", render(&actions));
        assert!(render(&actions)[0].contains("64 messages waiting"), "{:?}", render(&actions));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
        assert!(!constant_time_eq("", "a"));
    }
}
