//! Peers, rooms and routing decisions. No I/O, no `.await`, no clock of its
//! own (time comes in as an argument, so every decision that depends on it
//! is a unit test with made-up `Instant`s).
//!
//! The router answers every event with a list of [`Action`]s; the hub around
//! it (`hub.rs`) carries them out with `try_send` into each peer's bounded
//! queue. That split is what lets one slow phone never stall the building:
//! nothing in here can block, and every decision is a plain unit test.
//!
//! Invariants:
//! - The router is the only owner of peer state: `peers`, `ids` and `rooms`
//!   always agree (a peer id is in exactly one room, a room exists only while
//!   it has members, each live connection maps to at most one peer), and no
//!   other part of the daemon keeps a copy.
//! - A join's first action is the joining connection's welcome (or, for a
//!   refused one, its error and then its close): nothing can reach a
//!   socket ahead of it.
//! - Every directed message either becomes a `Send` carrying a `Bounce` (so
//!   the hub can tell the sender if the target's queue is full), is held for
//!   a peer that is away (and delivered on its return or bounced when its
//!   grace ends), or becomes an error to its sender. Nothing is dropped
//!   silently.
//! - A peer that dropped off abruptly and holds a token stays in its room,
//!   *away*, for the reconnect grace: its id is kept, presence is unchanged,
//!   and messages for it are held in order, up to `MAX_HELD_MESSAGES`.
//! - Every moment the router must act on by itself (an away peer's grace
//!   ends, messages held for an id nobody holds expire) is in `deadlines`;
//!   [`Router::next_deadline`] tells the hub when to call
//!   [`Router::expire_due`]. With nothing away and nothing pending the set
//!   is empty, so an idle daemon has no timer.
//! - Each peer speaks one `Codec`; everything sent to it is encoded through
//!   that codec's methods, so native and PeerJS peers share one id space,
//!   one set of limits and one delivery promise. Presence goes only to
//!   codecs that carry it.
//! - A PeerJS peer's message for an id nobody holds is held for the
//!   reconnect grace too (`pending`, bounded by `MAX_PENDING_IDS` and the
//!   per-id bounds), as PeerServer does: an offer may race the other side's
//!   connect. Native senders get `unknown-peer` at once.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::codec::{Codec, Welcome};
use crate::events::{self, Seen};
use crate::protocol::{self, close, ErrorCode, Hello, IceServer, Inbound, Message, Reference, Rejection};

/// The hub's handle for one WebSocket connection. Ids are never reused
/// within a process, so a stale `ConnId` can never hit a newer peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A map keyed by connection: looked up for every message (the sender's id,
/// the target's outbox), so hashed by one multiplication instead of
/// SipHash. SipHash is there to stop keys chosen to collide; these are
/// counted up by the daemon, so no client chooses them.
pub type ConnMap<V> = HashMap<ConnId, V, BuildHasherDefault<ConnIdHasher>>;

/// Fibonacci hashing of a `ConnId`: the multiplier spreads consecutive
/// numbers over the high bits hashbrown tags with and the low bits it
/// indexes by.
#[derive(Default)]
pub struct ConnIdHasher(u64);

impl Hasher for ConnIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is reached through `ConnId`'s `Hash`; anything
        // else is folded in a byte at a time, correctly if slowly.
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

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
    /// messages held; zero turns holding off.
    pub reconnect_grace: Duration,
}

/// How a successful join came about, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// An id nobody held.
    New,
    /// An away peer came back with its token within the grace.
    Returned,
    /// The same id and token from a new socket while the old one was still
    /// open: the old one is closed with 4001.
    Replaced,
}

/// A successful join.
#[derive(Debug)]
pub struct Joined {
    pub id: String,
    pub room: String,
    pub kind: JoinKind,
    /// The welcome first, then what the room and the peer must be told.
    pub actions: Vec<Action>,
}

/// A refused join.
#[derive(Debug, PartialEq)]
pub struct Refused {
    pub rejection: Rejection,
    /// The error, then the close frame.
    pub actions: Vec<Action>,
}

/// What [`Router::expire_due`] decided.
#[derive(Debug, Default)]
pub struct Expired {
    /// Away peers whose grace ended: they left.
    pub left: Vec<String>,
    pub actions: Vec<Action>,
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
    /// Sent in every native welcome.
    ice_servers: Vec<IceServer>,
    /// Peer id -> its connection, room and token.
    peers: HashMap<String, Peer>,
    /// Connection -> peer id, for events that arrive by connection.
    ids: ConnMap<Rc<str>>,
    /// Room name -> member ids, sorted so that lists are stable.
    rooms: HashMap<String, Members>,
    /// Id nobody holds -> messages PeerJS senders sent it, waiting for it to
    /// connect within the reconnect grace.
    pending: HashMap<String, Pending>,
    /// When each away peer's grace ends and each `pending` entry expires,
    /// earliest first. Entries are removed as soon as they no longer apply
    /// (the peer came back, the id connected), so the first one is always
    /// real. A sorted `VecDeque` rather than a `BTreeSet`: every deadline is
    /// `now + grace`, so a new one nearly always goes at the back, and the
    /// code is a fraction of a B-tree's.
    deadlines: VecDeque<(Instant, Due)>,
    /// What happened that may make an intercom event (presence changes and
    /// routed call-control messages), for the hub to take after each call.
    seen: Vec<Seen>,
    pub stats: Stats,
}

/// A room's member ids, sorted. A sorted `Vec`, not a `BTreeSet`: a room
/// holds a handful of peers, and a B-tree's first node is about 280 bytes
/// where two ids take 48 (every idle peer's room pays for it).
#[derive(Debug, Default)]
struct Members(Vec<String>);

impl Members {
    fn insert(&mut self, id: &str) {
        if let Err(at) = self.0.binary_search_by(|member| member.as_str().cmp(id)) {
            self.0.insert(at, id.to_string());
        }
    }

    fn remove(&mut self, id: &str) {
        if let Ok(at) = self.0.binary_search_by(|member| member.as_str().cmp(id)) {
            self.0.remove(at);
        }
    }

    fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Something the router must do at a deadline.
#[derive(Debug)]
enum Due {
    /// The reconnect grace of this away peer ends.
    Away(String),
    /// Messages held for this id, which nobody holds, expire.
    Pending(String),
}

struct Pending {
    /// When its messages expire.
    until: Instant,
    /// In order: the message in the router's form, its sender's id, whom to
    /// tell if it expires.
    messages: Vec<(Map<String, Value>, String, Bounce)>,
    bytes: usize,
}

/// A peer as the status page shows it.
pub struct PeerState<'a> {
    pub id: &'a str,
    pub room: &'a str,
    pub codec: Codec,
    /// Its socket; while away, the one it lost.
    pub conn: ConnId,
    /// Dropped off abruptly and within its grace.
    pub away: bool,
}

struct Peer {
    /// Its socket; while away, the socket it lost.
    conn: ConnId,
    /// Dropped off abruptly: away until this moment, the end of its grace.
    away_until: Option<Instant>,
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
    pub fn new(limits: Limits, ice_servers: Vec<IceServer>) -> Router {
        Router {
            limits,
            ice_servers,
            peers: HashMap::new(),
            ids: ConnMap::default(),
            rooms: HashMap::new(),
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            seen: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Take what was seen since the last call (see [`Seen`]).
    pub fn take_seen(&mut self) -> Vec<Seen> {
        std::mem::take(&mut self.seen)
    }

    /// Note a routed call-control message for the events; `recipients`
    /// are the room's others for a broadcast (`None`: just `to`). Anything
    /// else (nearly every message) costs one look at its `type`.
    fn see_call(&mut self, from: &str, to: &str, recipients: Option<&[String]>, message: &Message) {
        if !message.kind().is_some_and(events::is_signal_type) {
            return;
        }
        if let Some(signal) = events::signal(&message.to_object()) {
            let room = self.peers[from].room.clone();
            let recipients = recipients.map_or_else(|| vec![to.to_string()], <[String]>::to_vec);
            let (from, to) = (from.to_string(), to.to_string());
            self.seen.push(Seen::Call { from, room, to, recipients, signal });
        }
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn reconnect_grace(&self) -> Duration {
        self.limits.reconnect_grace
    }

    /// The id `conn` joined as, while it holds it.
    pub fn id_of(&self, conn: ConnId) -> Option<&str> {
        self.ids.get(&conn).map(|id| &**id)
    }

    /// Whether `token` proves to be the peer `id`, connected now (not away):
    /// the same token it joined with, compared in constant time. A peer
    /// without a token can prove nothing.
    pub fn proves(&self, id: &str, token: &str) -> bool {
        self.peers.get(id).is_some_and(|peer| {
            peer.away_until.is_none()
                && peer.token.as_ref().is_some_and(|own| bool::from(own.as_bytes().ct_eq(token.as_bytes())))
        })
    }

    /// The token `id` joined with, while it is connected (the door opener
    /// binds an answer to it).
    pub fn token_of(&self, id: &str) -> Option<String> {
        self.peers.get(id).filter(|peer| peer.away_until.is_none()).and_then(|peer| peer.token.clone())
    }

    /// The room `id` is in, while it holds the id.
    pub fn room_of(&self, id: &str) -> Option<&str> {
        self.peers.get(id).map(|peer| peer.room.as_str())
    }

    /// A frame from the daemon itself (`text`, native wire format) for the
    /// native peer `id`, if it is connected now; nothing for a PeerJS peer
    /// or an away one.
    pub fn notice(&self, id: &str, text: Rc<str>) -> Option<Action> {
        let peer = self.peers.get(id).filter(|peer| peer.away_until.is_none() && peer.codec == Codec::Native)?;
        Some(Action::Send { conn: peer.conn, text, bounce: None })
    }

    /// Every peer, in no particular order, for the status page (which sorts
    /// them: each sort here is code of its own in the binary, and this one and
    /// `room_sizes`' were most of the status page's cost).
    pub fn peer_states(&self) -> Vec<PeerState<'_>> {
        self.peers
            .iter()
            .map(|(id, peer)| PeerState {
                id,
                room: &peer.room,
                codec: peer.codec,
                conn: peer.conn,
                away: peer.away_until.is_some(),
            })
            .collect()
    }

    /// Every room and how many peers are in it, in no particular order.
    pub fn room_sizes(&self) -> Vec<(&str, usize)> {
        self.rooms.iter().map(|(room, members)| (room.as_str(), members.len())).collect()
    }

    /// Every peer as (id, room), sorted by id.
    pub fn peer_list(&self) -> Vec<(String, String)> {
        let mut list: Vec<_> = self.peers.iter().map(|(id, peer)| (id.clone(), peer.room.clone())).collect();
        list.sort();
        list
    }

    /// A new connection on an endpoint of `codec` asks to join with the
    /// query of its upgrade request. The first action is its welcome, or
    /// (refused) its error followed by its close.
    pub fn join(
        &mut self,
        conn: ConnId,
        codec: Codec,
        hello: Result<Hello, Rejection>,
        now: Instant,
    ) -> Result<Joined, Refused> {
        let hello = hello.map_err(|rejection| self.refuse(conn, codec, rejection, close::INVALID_HELLO))?;
        let id = match hello.id {
            Some(id) => id,
            None => self.fresh_id(),
        };
        let mut actions = Vec::new();
        let mut kind = JoinKind::New;
        let mut returning = None;
        if let Some(existing) = self.peers.get(&id) {
            let same_owner = matches!(
                (&existing.token, &hello.token),
                (Some(old), Some(new)) if bool::from(old.as_bytes().ct_eq(new.as_bytes()))
            );
            if !same_owner {
                let rejection = Rejection::new(ErrorCode::IdTaken, format!("the id {id:?} is in use; pick another"));
                return Err(self.refuse(conn, codec, rejection, close::ID_TAKEN));
            }
            if existing.room != hello.room {
                if let Err(rejection) = self.admit(&hello.room, Some(&id)) {
                    let close_code = close_code_for(rejection.code);
                    return Err(self.refuse(conn, codec, rejection, close_code));
                }
            }
            // The same browser came back (a reconnect after a drop, a new
            // tab, or a reconnect before the old socket noticed it was
            // dead): the newer socket wins.
            match existing.away_until {
                Some(until) => {
                    forget_deadline(&mut self.deadlines, until, |due| matches!(due, Due::Away(away) if *away == id));
                    kind = JoinKind::Returned;
                }
                None => {
                    actions.push(Action::Close { conn: existing.conn, code: close::REPLACED, reason: "replaced" });
                    kind = JoinKind::Replaced;
                }
            }
            if existing.room == hello.room {
                // Same room: nobody else needs to hear about it, so a call
                // whose media survived a Wi-Fi blip is not torn down.
                let peer = self.peers.get_mut(&id).expect("just looked up");
                let old = std::mem::replace(&mut peer.conn, conn);
                peer.away_until = None;
                peer.token = hello.token;
                peer.codec = codec;
                let held = std::mem::take(&mut peer.held);
                peer.held_bytes = 0;
                self.ids.remove(&old);
                self.ids.insert(conn, id.as_str().into());
                let room = hello.room;
                actions.insert(0, Action::Send { conn, text: self.welcome(codec, &id, &room), bounce: None });
                actions.extend(held.into_iter().map(|delivery| delivery.to(conn)));
                return Ok(Joined { id, room, kind, actions });
            }
            returning = Some(self.remove(&id, &mut actions));
        } else if self.peers.len() >= self.limits.max_peers {
            let rejection = Rejection::new(
                ErrorCode::ServerFull,
                format!("the server holds its limit of {} peers", self.limits.max_peers),
            );
            return Err(self.refuse(conn, codec, rejection, close::SERVER_FULL));
        } else if let Err(rejection) = self.admit(&hello.room, None) {
            let close_code = close_code_for(rejection.code);
            return Err(self.refuse(conn, codec, rejection, close_code));
        }
        let room = hello.room;
        // Before it is in the room, so the list is of the others.
        actions.insert(0, Action::Send { conn, text: self.welcome(codec, &id, &room), bounce: None });
        let mut peer = returning.unwrap_or_else(|| Peer {
            conn,
            away_until: None,
            room: String::new(),
            token: None,
            bucket: TokenBucket::new(self.limits.max_rate, now),
            held: VecDeque::new(),
            held_bytes: 0,
            codec,
        });
        peer.conn = conn;
        peer.away_until = None;
        peer.room = room.clone();
        peer.token = hello.token;
        peer.codec = codec;
        peer.held_bytes = 0;
        let held = std::mem::take(&mut peer.held);
        self.insert(id.clone(), peer, &mut actions);
        actions.extend(held.into_iter().map(|delivery| delivery.to(conn)));
        // Messages PeerJS senders sent before this id existed.
        if let Some(pending) = self.pending.remove(&id) {
            forget_deadline(&mut self.deadlines, pending.until, |due| matches!(due, Due::Pending(to) if *to == id));
            for (message, from, bounce) in pending.messages {
                actions.push(Action::Send {
                    conn,
                    text: codec.relay(&Message::Object(message), &from),
                    bounce: Some(bounce),
                });
            }
        }
        Ok(Joined { id, room, kind, actions })
    }

    /// The welcome of `id` into `room`, in `codec`.
    fn welcome(&self, codec: Codec, id: &str, room: &str) -> Rc<str> {
        let peers: Vec<String> = self.room_members(room).into_iter().filter(|member| member != id).collect();
        codec.welcome(&Welcome { id, room, peers: &peers, ice_servers: &self.ice_servers })
    }

    /// A text frame arrived from `conn`.
    pub fn receive(&mut self, conn: ConnId, text: &str, now: Instant) -> Vec<Action> {
        // A counted reference, not a copy of the id: this runs per message.
        let Some(sender) = self.ids.get(&conn).cloned() else {
            return Vec::new();
        };
        let from = &*sender;
        let peer = self.peers.get_mut(from).expect("ids and peers agree");
        let codec = peer.codec;
        if !peer.bucket.take(now) {
            let rejection = Rejection::new(
                ErrorCode::RateLimited,
                format!("more than {} messages per second; this one was dropped", self.limits.max_rate),
            );
            let reference = codec.parse(text).ok().flatten().map(|inbound| inbound.reference());
            let rejection = match reference {
                Some(reference) => rejection.about(reference),
                None => rejection,
            };
            return vec![self.error_to(conn, rejection)];
        }
        let inbound = match codec.parse(text) {
            Ok(Some(inbound)) => inbound,
            // A PeerJS heartbeat: the frame itself showed the peer is alive.
            Ok(None) => return Vec::new(),
            Err(rejection) => return vec![self.error_to(conn, rejection)],
        };
        match inbound {
            Inbound::Directed { to, message } => {
                let reference = Reference { kind: message.kind().map(str::to_string), to: Some(to.to_string()) };
                let mut actions = Vec::new();
                let bounce = Bounce { sender: conn, reference };
                let Some(target_codec) = self.peers.get(&*to).map(|peer| peer.codec) else {
                    if codec == Codec::PeerJs {
                        let message = message.to_object().into_owned();
                        self.hold_pending(to.into_owned(), message, from.to_string(), bounce, now, &mut actions);
                        return actions;
                    }
                    let rejection = Rejection::new(ErrorCode::UnknownPeer, format!("no peer {to:?} is connected"))
                        .about(bounce.reference);
                    return vec![self.error_to(conn, rejection)];
                };
                self.stats.routed += 1;
                self.see_call(from, &to, None, &message);
                let text = target_codec.relay(&message, from);
                self.deliver(&to, text, Some(bounce), &mut actions);
                actions
            }
            Inbound::Broadcast { message } => {
                let room = &self.peers[from].room;
                let others: Vec<String> = self.rooms[room].iter().filter(|member| *member != from).cloned().collect();
                let mut actions = Vec::new();
                // Encoded at most once per codec present in the room.
                let mut encoded: Vec<(Codec, Rc<str>)> = Vec::new();
                for member in &others {
                    let member_codec = self.peers[member].codec;
                    let text = match encoded.iter().find(|(codec, _)| *codec == member_codec) {
                        Some((_, text)) => text.clone(),
                        None => {
                            let text = member_codec.relay(&message, from);
                            encoded.push((member_codec, text.clone()));
                            text
                        }
                    };
                    self.deliver(member, text, None, &mut actions);
                }
                self.stats.routed += others.len() as u64;
                self.see_call(from, protocol::BROADCAST, Some(&others), &message);
                actions
            }
            Inbound::Join { room } => {
                let mut actions = Vec::new();
                if self.peers[from].room != room {
                    if let Err(rejection) = self.admit(&room, Some(from)) {
                        let reference = Reference { kind: Some("join".into()), to: None };
                        return vec![self.error_to(conn, rejection.about(reference))];
                    }
                    let mut peer = self.remove(from, &mut actions);
                    peer.room = room;
                    self.insert(from.to_string(), peer, &mut actions);
                }
                actions.push(self.peers_of(conn, from));
                actions
            }
            Inbound::Peers => vec![self.peers_of(conn, from)],
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

    /// `conn` broke without a close (Wi-Fi gone, ping timeout) at `now`. A
    /// peer with a token is kept *away* until `now` plus the reconnect
    /// grace: presence does not change and `unsent` plus anything sent
    /// meanwhile is held. Returns the id when it is away.
    pub fn drop_abruptly(
        &mut self,
        conn: ConnId,
        unsent: Vec<Delivery>,
        now: Instant,
    ) -> (Vec<Action>, Option<String>) {
        let Some(id) = self.ids.get(&conn).map(|id| id.to_string()) else {
            return (Vec::new(), None);
        };
        let peer = self.peers.get_mut(&id).expect("ids and peers agree");
        if peer.token.is_none() || self.limits.reconnect_grace.is_zero() {
            // Without a token nobody can prove to be this peer again.
            return (self.disconnect(conn, unsent), None);
        }
        let until = now + self.limits.reconnect_grace;
        peer.away_until = Some(until);
        for delivery in unsent.into_iter().rev() {
            peer.held_bytes += delivery.text.len();
            peer.held.push_front(delivery);
        }
        self.ids.remove(&conn);
        add_deadline(&mut self.deadlines, until, Due::Away(id.clone()));
        (Vec::new(), Some(id))
    }

    /// When [`Router::expire_due`] next has something to do; `None` while
    /// nobody is away and nothing is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(at, _)| *at)
    }

    /// Act on every deadline up to `now`: away peers whose grace ended leave
    /// (their room hears `peer-left`, the senders of what was held for them
    /// get `peer-unavailable`), and messages held for ids that never
    /// connected expire (their PeerJS senders get `EXPIRE`).
    pub fn expire_due(&mut self, now: Instant) -> Expired {
        let mut expired = Expired::default();
        while let Some((first, _)) = self.deadlines.front() {
            if *first > now {
                break;
            }
            let (at, due) = self.deadlines.pop_front().expect("just looked");
            match due {
                Due::Away(id) => {
                    if self.peers.get(&id).is_none_or(|peer| peer.away_until != Some(at)) {
                        continue;
                    }
                    let grace = self.limits.reconnect_grace;
                    let peer = self.remove(&id, &mut expired.actions);
                    let why = format!("{id:?} dropped off and did not come back within {grace:?}");
                    self.bounce_all(peer.held.into(), &why, &mut expired.actions);
                    expired.left.push(id);
                }
                Due::Pending(id) => {
                    let Some(pending) = self.pending.remove(&id) else { continue };
                    let deliveries = pending
                        .messages
                        .into_iter()
                        .map(|(_, _, bounce)| Delivery { text: "".into(), bounce: Some(bounce) })
                        .collect();
                    let why = format!("nobody connected as {id:?} within {:?}", self.limits.reconnect_grace);
                    self.bounce_all(deliveries, &why, &mut expired.actions);
                }
            }
        }
        expired
    }

    /// The hub could not queue a message for `target` because its queue is
    /// full: the target is not reading. Drop it (close 4008, everyone in its
    /// room hears `peer-left`) and tell the sender of that message and of
    /// every message its queue still held.
    pub fn undeliverable(&mut self, target: ConnId, failed: Delivery, unsent: Vec<Delivery>) -> Vec<Action> {
        let mut actions = Vec::new();
        let name = self.ids.get(&target).map(|id| id.to_string());
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
        if peer.away_until.is_none() {
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
        let codec = self.ids.get(&conn).map_or(Codec::Native, |id| self.peers[&**id].codec);
        self.error_as(conn, codec, &rejection)
    }

    /// The same for a connection that may not be a peer (yet), whose codec
    /// the caller knows from the endpoint it came to.
    fn error_as(&mut self, conn: ConnId, codec: Codec, rejection: &Rejection) -> Action {
        self.stats.count(rejection.code);
        let text = codec.error(rejection, self.ids.get(&conn).map_or("", |id| &**id));
        Action::Send { conn, text, bounce: None }
    }

    /// A fatal error for `conn` (too large, not UTF-8): the error, then
    /// what its departure means to others, then the close frame. What is
    /// already queued for it still goes out first.
    pub fn fail(&mut self, conn: ConnId, rejection: Rejection, close_code: u16) -> Vec<Action> {
        let error = self.error_to(conn, rejection);
        let mut actions = self.disconnect(conn, Vec::new());
        actions.insert(0, error);
        actions.push(Action::Close { conn, code: close_code, reason: close::reason(close_code) });
        actions
    }

    /// Count a refused join; its actions are the error and the close.
    fn refuse(&mut self, conn: ConnId, codec: Codec, rejection: Rejection, close_code: u16) -> Refused {
        let error = self.error_as(conn, codec, &rejection);
        let close = Action::Close { conn, code: close_code, reason: close::reason(close_code) };
        Refused { rejection, actions: vec![error, close] }
    }

    /// Hold a PeerJS sender's message for `to`, which nobody holds, until
    /// `to` connects or the reconnect grace ends.
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
        if !self.pending.contains_key(&to) {
            let until = now + self.limits.reconnect_grace;
            add_deadline(&mut self.deadlines, until, Due::Pending(to.clone()));
            self.pending.insert(to.clone(), Pending { until, messages: Vec::new(), bytes: 0 });
        }
        let pending = self.pending.get_mut(&to).expect("just made sure");
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
        self.seen.push(Seen::Online { id: id.clone(), room: peer.room.clone() });
        self.rooms.entry(peer.room.clone()).or_default().insert(&id);
        self.ids.insert(peer.conn, id.as_str().into());
        self.peers.insert(id, peer);
    }

    /// Queue `text` (presence) for every present member of `room` whose
    /// codec carries presence.
    fn announce(&self, room: &str, text: String, actions: &mut Vec<Action>) {
        let Some(members) = self.rooms.get(room) else {
            return;
        };
        let text: Rc<str> = text.into();
        let present = members.iter().map(|member| &self.peers[member]);
        for peer in present.filter(|peer| peer.away_until.is_none() && peer.codec.carries_presence()) {
            actions.push(Action::Send { conn: peer.conn, text: text.clone(), bounce: None });
        }
    }

    /// Take `id` out of every map (its deadline too, if away) and tell its
    /// room it left.
    fn remove(&mut self, id: &str, actions: &mut Vec<Action>) -> Peer {
        let peer = self.peers.remove(id).expect("caller checked the peer exists");
        self.ids.remove(&peer.conn);
        if let Some(until) = peer.away_until {
            forget_deadline(&mut self.deadlines, until, |due| matches!(due, Due::Away(away) if away == id));
        }
        if let Some(members) = self.rooms.get_mut(&peer.room) {
            members.remove(id);
            if members.is_empty() {
                self.rooms.remove(&peer.room);
            }
        }
        self.announce(&peer.room, protocol::peer_left(id), actions);
        self.seen.push(Seen::Offline { id: id.to_string(), room: peer.room.clone() });
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

impl Delivery {
    fn to(self, conn: ConnId) -> Action {
        Action::Send { conn, text: self.text, bounce: self.bounce }
    }
}

/// Put a deadline in its place: after every one that is not later.
fn add_deadline(deadlines: &mut VecDeque<(Instant, Due)>, at: Instant, due: Due) {
    let index = deadlines.partition_point(|(other, _)| *other <= at);
    deadlines.insert(index, (at, due));
}

/// Take out the deadline at `at` that `is` recognizes, if it is there.
fn forget_deadline(deadlines: &mut VecDeque<(Instant, Due)>, at: Instant, is: impl Fn(&Due) -> bool) {
    if let Some(index) = deadlines.iter().position(|(other, due)| *other == at && is(due)) {
        deadlines.remove(index);
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
        self.last = self.last.max(now);
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

    #[test]
    fn consecutive_connections_spread_over_the_buckets_and_the_tags() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<ConnIdHasher>::default();
        let hashes: Vec<u64> = (1000..2024).map(|n| build.hash_one(ConnId(n))).collect();
        let buckets: BTreeSet<u64> = hashes.iter().map(|hash| hash & 1023).collect();
        assert_eq!(buckets.len(), 1024, "1,024 consecutive ids fill 1,024 buckets");
        let tags: BTreeSet<u64> = hashes.iter().map(|hash| hash >> 57).collect();
        assert!(tags.len() > 120, "hashbrown's 7-bit tags vary too: {} of 128", tags.len());
    }

    #[test]
    fn members_stay_sorted_and_unique() {
        let mut members = Members::default();
        for id in ["kitchen", "door", "porch", "door"] {
            members.insert(id);
        }
        assert_eq!(members.iter().collect::<Vec<_>>(), ["door", "kitchen", "porch"]);
        members.remove("kitchen");
        members.remove("nobody");
        assert_eq!(members.iter().collect::<Vec<_>>(), ["door", "porch"]);
        assert_eq!(members.len(), 2);
        members.remove("door");
        members.remove("porch");
        assert!(members.is_empty());
    }

    const GRACE: Duration = Duration::from_secs(10);

    const LIMITS: Limits =
        Limits { max_peers: 3, max_rate: 0, max_rooms: 100, max_room_peers: 100, reconnect_grace: GRACE };

    fn limits(max_peers: usize, max_rate: u32, max_rooms: usize, max_room_peers: usize) -> Limits {
        Limits { max_peers, max_rate, max_rooms, max_room_peers, reconnect_grace: GRACE }
    }

    /// A hello on the endpoint of a codec.
    struct Ask(Codec, Hello);

    fn hello(id: &str, room: &str, token: Option<&str>) -> Ask {
        Ask(Codec::Native, Hello { id: Some(id.into()), room: room.into(), token: token.map(Into::into) })
    }

    fn peerjs_hello(id: &str, token: &str) -> Ask {
        Ask(Codec::PeerJs, Hello { id: Some(id.into()), room: "peerjs".into(), token: Some(token.into()) })
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

    /// Join at `now` and return the rendered actions after the welcome,
    /// which must come first.
    fn join_at(router: &mut Router, conn: u64, Ask(codec, hello): Ask, now: Instant) -> Result<Vec<String>, Refused> {
        let joined = router.join(ConnId(conn), codec, Ok(hello), now)?;
        let rendered = render(&joined.actions);
        assert!(rendered[0].starts_with(&format!("{conn}<-")), "the welcome comes first: {rendered:?}");
        assert!(rendered[0].contains("welcome") || rendered[0].contains("OPEN"), "{rendered:?}");
        Ok(rendered[1..].to_vec())
    }

    fn join(router: &mut Router, conn: u64, hello: Ask) -> Result<Vec<String>, Refused> {
        join_at(router, conn, hello, Instant::now())
    }

    fn router_with(peers: &[(u64, &str, &str)]) -> Router {
        let mut router = Router::new(LIMITS, Vec::new());
        for (conn, id, room) in peers {
            join(&mut router, *conn, hello(id, room, Some("t"))).unwrap();
        }
        router
    }

    fn check(router: &mut Router, from: u64, text: &str, expected: &[&str]) {
        let actions = router.receive(ConnId(from), text, Instant::now());
        assert_eq!(render(&actions), expected, "after {text}");
    }

    #[test]
    fn the_welcome_is_the_first_action_of_every_join() {
        let mut router = Router::new(LIMITS, protocol::ice_servers(&["stun:s.example".into()]));
        let now = Instant::now();
        let joined = router.join(ConnId(1), Codec::Native, Ok(hello("bob", "lobby", Some("t")).1), now).unwrap();
        assert_eq!(
            render(&joined.actions),
            [
                r#"1<-{"type":"welcome","id":"bob","room":"lobby","peers":[],"iceServers":[{"urls":["stun:s.example"]}]}"#
            ]
        );
        assert_eq!(joined.kind, JoinKind::New);
        let joined = router.join(ConnId(2), Codec::Native, Ok(hello("door", "lobby", Some("t")).1), now).unwrap();
        assert_eq!(
            render(&joined.actions),
            [
                r#"2<-{"type":"welcome","id":"door","room":"lobby","peers":["bob"],"iceServers":[{"urls":["stun:s.example"]}]}"#,
                r#"1<-{"type":"peer-joined","id":"door"}"#,
            ]
        );
        // Back after a drop, with messages held: welcome, then what was held.
        router.drop_abruptly(ConnId(2), Vec::new(), now);
        check(&mut router, 1, r#"{"type":"ring","to":"door"}"#, &[]);
        let joined = router.join(ConnId(3), Codec::Native, Ok(hello("door", "lobby", Some("t")).1), now).unwrap();
        assert_eq!(joined.kind, JoinKind::Returned);
        let rendered = render(&joined.actions);
        assert!(rendered[0].starts_with(r#"3<-{"type":"welcome","id":"door""#), "{rendered:?}");
        assert_eq!(rendered[1], r#"3<-{"from":"bob","type":"ring","to":"door"} (bounce)"#);
        // A PeerJS peer's welcome is OPEN; a takeover closes the old socket.
        router.join(ConnId(4), Codec::PeerJs, Ok(peerjs_hello("app", "p").1), now).unwrap();
        let joined = router.join(ConnId(5), Codec::PeerJs, Ok(peerjs_hello("app", "p").1), now).unwrap();
        assert_eq!(joined.kind, JoinKind::Replaced);
        assert_eq!(render(&joined.actions), [r#"5<-{"type":"OPEN"}"#, "4 close 4001"]);
    }

    #[test]
    fn a_refused_join_gets_its_error_then_its_close_in_its_codec() {
        let mut router = router_with(&[(1, "door", "lobby")]);
        let now = Instant::now();
        let refused = router.join(ConnId(2), Codec::Native, Ok(hello("door", "lobby", Some("x")).1), now).unwrap_err();
        assert_eq!(refused.rejection.code, ErrorCode::IdTaken);
        assert_eq!(
            render(&refused.actions),
            [
                r#"2<-{"type":"error","code":"id-taken","message":"the id \"door\" is in use; pick another"}"#,
                "2 close 4002"
            ]
        );
        let bad = Rejection::new(ErrorCode::InvalidToken, "Invalid key provided");
        let refused = router.join(ConnId(3), Codec::PeerJs, Err(bad), now).unwrap_err();
        assert_eq!(
            render(&refused.actions),
            [r#"3<-{"payload":{"msg":"Invalid key provided"},"type":"ERROR"}"#, "3 close 4000"]
        );
        assert_eq!(router.peer_count(), 1);
    }

    #[test]
    fn connect_announces_to_the_room_only() {
        let mut router = router_with(&[(1, "bob", "lobby"), (2, "carol", "kitchen")]);
        let joined = join(&mut router, 3, hello("alice", "lobby", None)).unwrap();
        assert_eq!(joined, [r#"1<-{"type":"peer-joined","id":"alice"}"#]);
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
    fn broadcast_reaches_the_room_minus_the_sender_once_per_codec() {
        let mut router = router_with(&[(1, "a", "lobby"), (2, "b", "lobby"), (3, "c", "kitchen")]);
        check(&mut router, 1, r#"{"type":"chat","to":"*"}"#, &[r#"2<-{"from":"a","type":"chat","to":"*"}"#]);
        let mut router = router_with(&[(1, "a", "peerjs"), (2, "b", "peerjs")]);
        join(&mut router, 3, peerjs_hello("app", "p")).unwrap();
        let actions = router.receive(ConnId(1), r#"{"type":"chat","to":"*"}"#, Instant::now());
        assert_eq!(
            render(&actions),
            [r#"3<-{"dst":"*","payload":{},"src":"a","type":"chat"}"#, r#"2<-{"from":"a","type":"chat","to":"*"}"#]
        );
    }

    #[test]
    fn presence_goes_only_to_codecs_that_carry_it() {
        let mut router = router_with(&[(1, "native", "peerjs")]);
        assert_eq!(
            join(&mut router, 2, peerjs_hello("app", "p")).unwrap(),
            [r#"1<-{"type":"peer-joined","id":"app"}"#]
        );
        assert_eq!(
            join(&mut router, 3, peerjs_hello("app2", "p")).unwrap(),
            [r#"1<-{"type":"peer-joined","id":"app2"}"#]
        );
        assert_eq!(render(&router.disconnect(ConnId(1), Vec::new())), Vec::<String>::new(), "PeerJS has no presence");
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
        let taken = join(&mut router, 3, hello("door", "lobby", Some("wrong"))).unwrap_err();
        assert_eq!(taken.rejection.code, ErrorCode::IdTaken);
        assert_eq!(render(&taken.actions)[1], "3 close 4002");
        let taken = join(&mut router, 3, hello("door", "lobby", None)).unwrap_err();
        assert_eq!(taken.rejection.code, ErrorCode::IdTaken);
        let joined = router.join(ConnId(4), Codec::Native, Ok(hello("door", "lobby", Some("t")).1), Instant::now());
        let rendered = render(&joined.unwrap().actions);
        assert!(rendered[0].contains(r#""peers":["bob"]"#), "{rendered:?}");
        assert_eq!(rendered[1..], ["1 close 4001"], "a takeover in the same room is silent");
        assert!(router.disconnect(ConnId(1), Vec::new()).is_empty(), "the replaced socket no longer owns the id");
        assert!(router.proves("door", "t"), "its token proves the id");
        assert!(!router.proves("door", "wrong") && !router.proves("door", "") && !router.proves("bob", ""));
        assert!(!router.proves("nobody", "t"));
        check(
            &mut router,
            2,
            r#"{"type":"ring","to":"door"}"#,
            &[r#"4<-{"from":"bob","type":"ring","to":"door"} (bounce)"#],
        );
        let moved = join(&mut router, 5, hello("door", "porch", Some("t"))).unwrap();
        assert_eq!(
            moved,
            ["4 close 4001", r#"2<-{"type":"peer-left","id":"door"}"#],
            "a takeover into another room moves presence"
        );
    }

    #[test]
    fn server_full_at_the_limit() {
        let mut router = router_with(&[(1, "a", "lobby"), (2, "b", "lobby"), (3, "c", "lobby")]);
        let full = join(&mut router, 4, hello("d", "lobby", None)).unwrap_err();
        assert_eq!(full.rejection.code, ErrorCode::ServerFull);
        assert_eq!(render(&full.actions)[1], "4 close 4005");
        assert!(join(&mut router, 5, hello("c", "lobby", Some("t"))).is_ok(), "a takeover needs no free slot");
    }

    #[test]
    fn random_ids_are_valid_and_unique() {
        let mut router = Router::new(limits(100, 0, 100, 100), Vec::new());
        let mut seen = BTreeSet::new();
        for conn in 0..100 {
            let hello = Hello { id: None, room: "lobby".into(), token: None };
            let joined = router.join(ConnId(conn), Codec::Native, Ok(hello), Instant::now()).unwrap();
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
    fn a_fatal_error_goes_out_before_the_departure_and_the_close() {
        let mut router = router_with(&[(1, "alice", "lobby"), (2, "bob", "lobby")]);
        let actions = router.fail(ConnId(1), Rejection::new(ErrorCode::TooLarge, "too big"), close::TOO_LARGE);
        assert_eq!(
            render(&actions),
            [
                r#"1<-{"type":"error","code":"too-large","message":"too big"}"#,
                r#"2<-{"type":"peer-left","id":"alice"}"#,
                "1 close 1009",
            ]
        );
    }

    #[test]
    fn rate_limit_allows_a_burst_of_twice_the_rate() {
        let mut router = Router::new(limits(10, 5, 100, 100), Vec::new());
        let start = Instant::now();
        join_at(&mut router, 1, hello("a", "lobby", None), start).unwrap();
        join_at(&mut router, 2, hello("b", "lobby", None), start).unwrap();
        let send = |router: &mut Router, at: Instant| router.receive(ConnId(1), r#"{"type":"x","to":"b"}"#, at);
        for _ in 0..10 {
            assert!(render(&send(&mut router, start))[0].starts_with("2<-"));
        }
        let limited = render(&send(&mut router, start));
        assert!(limited[0].contains("rate-limited"), "{limited:?}");
        assert!(limited[0].contains(r#""ref":{"type":"x","to":"b"}"#), "{limited:?}");
        let later = start + Duration::from_millis(200);
        assert!(render(&send(&mut router, later))[0].starts_with("2<-"), "one token back after 1/5 s");
        assert!(render(&send(&mut router, later))[0].contains("rate-limited"));
    }

    #[test]
    fn the_bucket_refills_at_the_rate_up_to_twice_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(4, start);
        let taken = |bucket: &mut TokenBucket, at: Instant, n: usize| (0..n).filter(|_| bucket.take(at)).count();
        assert_eq!(taken(&mut bucket, start, 20), 8, "a full bucket holds a burst of twice the rate");
        assert_eq!(taken(&mut bucket, start + Duration::from_millis(500), 20), 2, "4 a second: 2 in half a second");
        assert_eq!(taken(&mut bucket, start + Duration::from_secs(3600), 20), 8, "an hour saves up only the burst");
        let then = start + Duration::from_secs(3600);
        assert_eq!(taken(&mut bucket, then - Duration::from_secs(10), 1), 0, "a clock that goes back gives nothing");
        assert_eq!(taken(&mut bucket, then + Duration::from_millis(250), 20), 1, "nor owes anything");
        let mut unlimited = TokenBucket::new(0, start);
        assert_eq!(taken(&mut unlimited, start, 10_000), 10_000, "rate 0: no limit");
    }

    #[test]
    fn room_limits() {
        let mut router = Router::new(limits(10, 0, 2, 2), Vec::new());
        join(&mut router, 1, hello("a", "one", None)).unwrap();
        join(&mut router, 2, hello("b", "one", None)).unwrap();
        let full = join(&mut router, 3, hello("c", "one", None)).unwrap_err();
        assert_eq!((full.rejection.code, render(&full.actions)[1].as_str()), (ErrorCode::RoomFull, "3 close 4006"));
        join(&mut router, 3, hello("c", "two", None)).unwrap();
        let too_many = join(&mut router, 4, hello("d", "three", None)).unwrap_err();
        assert_eq!(
            (too_many.rejection.code, render(&too_many.actions)[1].as_str()),
            (ErrorCode::ServerFull, "4 close 4005")
        );
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
        let actions = router.receive(ConnId(2), r#"{"type":"join","room":"five"}"#, Instant::now());
        assert!(render(&actions)[0].contains("server-full"), "{:?}", render(&actions));
        // Leaving frees the slot.
        router.disconnect(ConnId(1), Vec::new());
        join(&mut router, 5, hello("e", "one", None)).unwrap();
        assert_eq!(router.room_members("one"), ["b", "e"]);
        assert_eq!(router.room_count(), 2);
    }

    #[test]
    fn an_abrupt_drop_holds_messages_until_the_return() {
        let mut router = router_with(&[(1, "door", "lobby"), (2, "bob", "lobby"), (3, "carol", "lobby")]);
        let now = Instant::now();
        let unsent = vec![Delivery { text: "queued".into(), bounce: None }];
        let (actions, away) = router.drop_abruptly(ConnId(1), unsent, now);
        assert!(actions.is_empty(), "presence does not change: {:?}", render(&actions));
        assert_eq!(away.as_deref(), Some("door"));
        assert_eq!(router.next_deadline(), Some(now + GRACE));
        check(&mut router, 2, r#"{"type":"ring","to":"door","n":1}"#, &[]);
        check(&mut router, 3, r#"{"type":"chat","to":"*"}"#, &[r#"2<-{"from":"carol","type":"chat","to":"*"}"#]);
        check(&mut router, 2, r#"{"type":"ring","to":"door","n":2}"#, &[]);
        let back = join_at(&mut router, 4, hello("door", "lobby", Some("t")), now + GRACE / 2).unwrap();
        assert_eq!(
            back,
            [
                "4<-queued",
                r#"4<-{"from":"bob","type":"ring","to":"door","n":1} (bounce)"#,
                r#"4<-{"from":"carol","type":"chat","to":"*"}"#,
                r#"4<-{"from":"bob","type":"ring","to":"door","n":2} (bounce)"#,
            ],
            "what was queued, then what was held, in order; no close for the dead socket"
        );
        assert_eq!(router.next_deadline(), None, "it came back: its grace no longer has a deadline");
        let expired = router.expire_due(now + GRACE);
        assert!(expired.left.is_empty() && expired.actions.is_empty());
    }

    #[test]
    fn the_grace_ends_at_its_deadline_and_not_before() {
        let mut router = router_with(&[(1, "door", "lobby"), (2, "bob", "lobby")]);
        let dropped = Instant::now();
        router.drop_abruptly(ConnId(1), Vec::new(), dropped);
        check(&mut router, 2, r#"{"type":"ring","to":"door"}"#, &[]);
        check(&mut router, 2, r#"{"type":"ring","to":"door"}"#, &[]);
        let early = router.expire_due(dropped + GRACE - Duration::from_millis(1));
        assert!(early.left.is_empty() && early.actions.is_empty(), "still within the grace");
        assert_eq!(router.peer_count(), 2);
        let expired = router.expire_due(dropped + GRACE);
        assert_eq!(expired.left, ["door"]);
        assert_eq!(
            render(&expired.actions),
            [
                r#"2<-{"type":"peer-left","id":"door"}"#,
                r#"2<-{"type":"error","code":"peer-unavailable","message":"\"door\" dropped off and did not come back within 10s","ref":{"type":"ring","to":"door"}}"#,
            ],
            "one error per sender"
        );
        assert_eq!(router.peer_count(), 1);
        assert_eq!(router.next_deadline(), None, "nothing is left to wait for");
    }

    #[test]
    fn deadlines_come_in_order_and_each_peer_has_its_own() {
        let mut router = router_with(&[(1, "a", "lobby"), (2, "b", "lobby"), (3, "c", "lobby")]);
        let start = Instant::now();
        router.drop_abruptly(ConnId(2), Vec::new(), start + Duration::from_secs(3));
        router.drop_abruptly(ConnId(1), Vec::new(), start);
        assert_eq!(router.next_deadline(), Some(start + GRACE));
        assert_eq!(router.expire_due(start + GRACE).left, ["a"]);
        assert_eq!(router.next_deadline(), Some(start + GRACE + Duration::from_secs(3)));
        // b comes back into another room: its deadline goes with it.
        join_at(&mut router, 4, hello("b", "attic", Some("t")), start + GRACE).unwrap();
        assert_eq!(router.next_deadline(), None);
        assert!(router.expire_due(start + GRACE * 10).left.is_empty());
        assert_eq!(router.room_members("attic"), ["b"]);
    }

    #[test]
    fn no_token_no_grace() {
        let mut router = Router::new(LIMITS, Vec::new());
        join(&mut router, 1, hello("a", "lobby", None)).unwrap();
        join(&mut router, 2, hello("b", "lobby", None)).unwrap();
        let (actions, away) = router.drop_abruptly(ConnId(1), Vec::new(), Instant::now());
        assert_eq!(away, None);
        assert_eq!(render(&actions), [r#"2<-{"type":"peer-left","id":"a"}"#]);
        assert_eq!(router.next_deadline(), None);
    }

    #[test]
    fn holding_is_bounded() {
        let mut router = router_with(&[(1, "door", "lobby"), (2, "bob", "lobby")]);
        router.drop_abruptly(ConnId(1), Vec::new(), Instant::now());
        for _ in 0..MAX_HELD_MESSAGES {
            check(&mut router, 2, r#"{"type":"x","to":"door"}"#, &[]);
        }
        let actions = router.receive(ConnId(2), r#"{"type":"x","to":"door"}"#, Instant::now());
        assert!(render(&actions)[0].contains("peer-unavailable"), "{:?}", render(&actions));
        assert!(render(&actions)[0].contains("64 messages waiting"), "{:?}", render(&actions));
    }

    #[test]
    fn a_peerjs_message_for_nobody_waits_for_the_grace_then_expires() {
        let mut router = Router::new(LIMITS, Vec::new());
        let start = Instant::now();
        join_at(&mut router, 1, peerjs_hello("a", "ta"), start).unwrap();
        let offer = r#"{"type":"OFFER","dst":"late","payload":1}"#;
        assert!(router.receive(ConnId(1), offer, start).is_empty(), "held, not refused");
        assert_eq!(router.next_deadline(), Some(start + GRACE));
        // It connects in time: the message is delivered after its welcome.
        let late = join_at(&mut router, 2, peerjs_hello("late", "tl"), start + GRACE / 2).unwrap();
        assert_eq!(late, [r#"2<-{"dst":"late","payload":1,"src":"a","type":"OFFER"} (bounce)"#]);
        assert_eq!(router.next_deadline(), None);
        // One that never connects: EXPIRE, once, at the deadline.
        let sent = start + GRACE;
        router.receive(ConnId(1), r#"{"type":"OFFER","dst":"never","payload":1}"#, sent);
        router.receive(ConnId(1), r#"{"type":"CANDIDATE","dst":"never","payload":2}"#, sent);
        assert!(router.expire_due(sent + GRACE - Duration::from_millis(1)).actions.is_empty());
        let expired = router.expire_due(sent + GRACE);
        assert_eq!(render(&expired.actions), [r#"1<-{"dst":"a","src":"never","type":"EXPIRE"}"#]);
        assert!(expired.left.is_empty(), "nobody left: nobody was there");
        assert_eq!(router.next_deadline(), None);
    }

    #[test]
    fn pending_ids_are_bounded() {
        let mut router = Router::new(limits(10, 0, 100, 100), Vec::new());
        let now = Instant::now();
        join_at(&mut router, 1, peerjs_hello("a", "ta"), now).unwrap();
        for n in 0..MAX_PENDING_IDS {
            let text = format!(r#"{{"type":"OFFER","dst":"nobody{n}","payload":1}}"#);
            assert!(router.receive(ConnId(1), &text, now).is_empty());
        }
        let over = router.receive(ConnId(1), r#"{"type":"OFFER","dst":"one-more","payload":1}"#, now);
        assert_eq!(render(&over), [r#"1<-{"dst":"a","src":"one-more","type":"EXPIRE"}"#]);
    }
}
