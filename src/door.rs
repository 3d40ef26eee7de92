//! The door opener, pure: who may open which door, decided from the call
//! events and the proof a request carries, with time passed in.
//!
//! A door (`--door-open ID=COMMAND`) opens for the peer that answered the
//! door station's current ring, while that call lasts and for
//! [`OPEN_WINDOW`] after it ends, over the same token it answered with, and
//! only with a proof that it belongs to the household: the PIN
//! (`--door-pin-file`), a device key (`--door-keys-file`), or nothing at
//! all when the installer said so (`--door-open-without-pin`). A peer id is
//! no proof: anyone on the LAN can take a free name and answer a room-wide
//! ring first.
//!
//! Failed tries are counted per peer id and per address (an IPv6 address
//! by its /64, which one machine can fill with addresses of its own):
//! [`MAX_FAILURES`] within [`FAILURE_WINDOW`] pause that peer or address
//! for [`PAUSE`]. The tables are bounded ([`MAX_TRACKED`]); when one is
//! full of paused entries, newcomers are refused too (the door fails
//! closed).
//!
//! Opening by MQTT (`--mqtt-door-open`) needs no call: whoever may publish
//! to the broker is trusted, which README states with its risk.
//!
//! Nothing here waits or does I/O; the hub runs the command
//! (`door_command`) and calls [`Doors::finished`].

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::events::{Event, Kind};

/// How long after the call with the door ends its answerer may still open.
pub const OPEN_WINDOW: Duration = Duration::from_secs(30);
/// Failed tries (wrong proof, or no right to open) per peer id and per
/// address within [`FAILURE_WINDOW`] before a [`PAUSE`].
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a peer or an address that failed [`MAX_FAILURES`] times is
/// refused. With a 4-digit PIN, trying every one from one address takes
/// about a week.
pub const PAUSE: Duration = Duration::from_secs(5 * 60);
/// Peers and addresses remembered for their failures, each.
pub const MAX_TRACKED: usize = 64;
/// Bytes of a command's output that reach the log.
pub const MAX_OUTPUT_BYTES: usize = 512;

/// What a request to open offers as proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof<'a> {
    Pin(&'a str),
    Key(&'a str),
    Nothing,
}

/// Why a door did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `--door-open` for this id.
    UnknownDoor,
    /// Not the peer (with its token) that answered this door's current
    /// ring, or too long after that call ended.
    NotYours,
    /// The PIN or device key is wrong, or missing.
    WrongProof,
    /// This peer or address failed too often; try again after the pause.
    Paused { retry_after: Duration },
    /// The door's command is running now.
    Busy,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::UnknownDoor => 404,
            Refusal::NotYours | Refusal::WrongProof => 403,
            Refusal::Paused { .. } => 429,
            Refusal::Busy => 409,
        }
    }

    /// The machine-readable reason, in the answer's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownDoor => "unknown-door",
            Refusal::NotYours => "not-your-call",
            Refusal::WrongProof => "wrong-pin",
            Refusal::Paused { .. } => "too-many-tries",
            Refusal::Busy => "busy",
        }
    }

    pub fn message(self) -> String {
        match self {
            Refusal::UnknownDoor => "no door opener for that door station".into(),
            Refusal::NotYours => format!(
                "only whoever answered the door's ring may open it, during the call and {} s after",
                OPEN_WINDOW.as_secs()
            ),
            Refusal::WrongProof => "wrong PIN or device key".into(),
            Refusal::Paused { retry_after } => {
                format!("too many failed tries: wait {} s", retry_after.as_secs().max(1))
            }
            Refusal::Busy => "the door is opening already".into(),
        }
    }
}

/// A door to open now: the hub runs `command` and then calls
/// [`Doors::finished`] with `door`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    pub door: String,
    pub command: Vec<String>,
    /// Who opened it: a peer id, or `mqtt`.
    pub by: String,
    /// The call it was opened from (none by MQTT).
    pub call: Option<String>,
    /// The device key's name, when one was the proof.
    pub key: Option<String>,
}

/// Who may open a door now: the answer to its current ring.
#[derive(Debug, Clone)]
struct Grant {
    call: String,
    by: String,
    /// The answerer's token when it answered (a later holder of the same
    /// id has another, or none).
    token: Option<String>,
    /// When the call ended; `None` while it lasts.
    ended: Option<Instant>,
}

struct Station {
    id: String,
    command: Vec<String>,
    running: bool,
    grant: Option<Grant>,
}

/// Failures of one peer id or address.
#[derive(Debug, Clone)]
struct Failures<K> {
    key: K,
    /// Within `FAILURE_WINDOW`, oldest first (at most `MAX_FAILURES`).
    at: Vec<Instant>,
    paused_until: Option<Instant>,
}

/// A bounded table of failures.
struct Tracker<K> {
    entries: Vec<Failures<K>>,
}

impl<K: PartialEq + Clone> Tracker<K> {
    fn new() -> Self {
        Tracker { entries: Vec::new() }
    }

    fn forget_old(&mut self, now: Instant) {
        self.entries.retain_mut(|entry| {
            entry.at.retain(|at| now.saturating_duration_since(*at) < FAILURE_WINDOW);
            if entry.paused_until.is_some_and(|until| until <= now) {
                entry.paused_until = None;
            }
            !entry.at.is_empty() || entry.paused_until.is_some()
        });
    }

    /// `Some(wait)` while `key` may not try.
    fn paused(&mut self, key: &K, now: Instant) -> Option<Duration> {
        self.forget_old(now);
        if let Some(entry) = self.entries.iter().find(|entry| entry.key == *key) {
            return entry.paused_until.map(|until| until - now);
        }
        // A newcomer when every place is taken by a pause: fail closed.
        if self.entries.len() >= MAX_TRACKED && self.entries.iter().all(|entry| entry.paused_until.is_some()) {
            return self.entries.iter().filter_map(|entry| entry.paused_until).min().map(|until| until - now);
        }
        None
    }

    /// One more failure of `key`; whether it is paused now.
    fn fail(&mut self, key: &K, now: Instant) -> bool {
        self.forget_old(now);
        let index = match self.entries.iter().position(|entry| entry.key == *key) {
            Some(index) => index,
            None => {
                if self.entries.len() >= MAX_TRACKED {
                    // Make room: the entry with the oldest failure that is not paused.
                    let Some(oldest) = self
                        .entries
                        .iter()
                        .enumerate()
                        .filter(|(_, entry)| entry.paused_until.is_none())
                        .min_by_key(|(_, entry)| entry.at.first().copied())
                        .map(|(index, _)| index)
                    else {
                        return true;
                    };
                    self.entries.remove(oldest);
                }
                self.entries.push(Failures { key: key.clone(), at: Vec::new(), paused_until: None });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        entry.at.push(now);
        if entry.at.len() >= MAX_FAILURES {
            entry.at.clear();
            entry.paused_until = Some(now + PAUSE);
            return true;
        }
        false
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// An address as failures count it: IPv4 whole, IPv6 by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin([u8; 8], bool);

impl From<IpAddr> for Origin {
    fn from(address: IpAddr) -> Origin {
        match address {
            IpAddr::V4(v4) => {
                let mut bytes = [0; 8];
                bytes[..4].copy_from_slice(&v4.octets());
                Origin(bytes, false)
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Origin::from(IpAddr::V4(v4)),
                None => {
                    let mut bytes = [0; 8];
                    bytes.copy_from_slice(&v6.octets()[..8]);
                    Origin(bytes, true)
                }
            },
        }
    }
}

/// Every door, its grant and whether it is opening; the failures.
pub struct Doors {
    stations: Vec<Station>,
    /// From `--door-pin-file`.
    pin: Option<String>,
    /// From `--door-keys-file`: (name, key).
    keys: Vec<(String, String)>,
    without_proof: bool,
    peers: Tracker<String>,
    origins: Tracker<Origin>,
}

impl std::fmt::Debug for Doors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the PIN or the keys.
        f.debug_struct("Doors").field("doors", &self.ids().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

/// What a page needs to know to offer the button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Pin,
    Key,
    PinOrKey,
    Nothing,
}

impl Needs {
    pub fn as_str(self) -> &'static str {
        match self {
            Needs::Pin => "pin",
            Needs::Key => "key",
            Needs::PinOrKey => "pin-or-key",
            Needs::Nothing => "nothing",
        }
    }
}

impl Doors {
    /// `stations`: (door station id, command words), from `--door-open`;
    /// the proofs from `--door-pin-file`, `--door-keys-file` and
    /// `--door-open-without-pin`.
    pub fn new(
        stations: &[(String, Vec<String>)],
        pin: Option<String>,
        keys: Vec<(String, String)>,
        without_proof: bool,
    ) -> Doors {
        Doors {
            stations: stations
                .iter()
                .map(|(id, command)| Station { id: id.clone(), command: command.clone(), running: false, grant: None })
                .collect(),
            pin,
            keys,
            without_proof,
            peers: Tracker::new(),
            origins: Tracker::new(),
        }
    }

    /// The door station ids, in the order of the flags.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.stations.iter().map(|station| station.id.as_str())
    }

    /// What proof a request must carry.
    pub fn needs(&self) -> Needs {
        match (self.pin.is_some(), !self.keys.is_empty()) {
            (true, true) => Needs::PinOrKey,
            (true, false) => Needs::Pin,
            (false, true) => Needs::Key,
            (false, false) => Needs::Nothing,
        }
    }

    /// Follow the door stations' calls. `token_of` gives the token a peer
    /// holds now (asked only for the answerer of a door's ring).
    pub fn observe(&mut self, event: &Event, now: Instant, token_of: impl Fn(&str) -> Option<String>) {
        let Some(station) = self.stations.iter_mut().find(|station| station.id == event.from) else { return };
        let Some(call) = &event.call else { return };
        match event.kind {
            // A new ring is the current one: the last answer gives no more right.
            Kind::Ring => station.grant = None,
            Kind::Answered => {
                if let Some(by) = &event.by {
                    station.grant =
                        Some(Grant { call: call.clone(), by: by.clone(), token: token_of(by), ended: None });
                }
            }
            Kind::Ended => {
                if let Some(grant) = station.grant.as_mut().filter(|grant| grant.call == *call) {
                    grant.ended.get_or_insert(now);
                }
            }
            _ => {}
        }
    }

    /// Whether `peer` (holding `token`, from `address`) may open `door` at
    /// `now` with `proof`. `Ok` marks the door as opening.
    pub fn authorize(
        &mut self,
        door: &str,
        peer: &str,
        token: &str,
        address: IpAddr,
        proof: Proof<'_>,
        now: Instant,
    ) -> Result<Opening, Refusal> {
        let origin = Origin::from(address);
        let Some(index) = self.stations.iter().position(|station| station.id == door) else {
            return Err(Refusal::UnknownDoor);
        };
        let paused = [self.peers.paused(&peer.to_string(), now), self.origins.paused(&origin, now)];
        if let Some(retry_after) = paused.into_iter().flatten().max() {
            return Err(Refusal::Paused { retry_after });
        }
        let station = &self.stations[index];
        let yours = station.grant.as_ref().is_some_and(|grant| {
            grant.by == peer
                && grant.token.as_deref().is_some_and(|own| equal(own.as_bytes(), token.as_bytes()))
                && grant.ended.is_none_or(|ended| now.saturating_duration_since(ended) <= OPEN_WINDOW)
        });
        let key = if !yours { None } else { self.check(proof) };
        let Some(key) = key else {
            let refusal = if yours { Refusal::WrongProof } else { Refusal::NotYours };
            let paused_peer = self.peers.fail(&peer.to_string(), now);
            let paused_origin = self.origins.fail(&origin, now);
            if paused_peer || paused_origin {
                return Err(Refusal::Paused { retry_after: PAUSE });
            }
            return Err(refusal);
        };
        let station = &mut self.stations[index];
        if station.running {
            return Err(Refusal::Busy);
        }
        station.running = true;
        let call = station.grant.as_ref().map(|grant| grant.call.clone());
        Ok(Opening { door: door.to_string(), command: station.command.clone(), by: peer.to_string(), call, key })
    }

    /// The proof, checked: `Some(key name)` when it holds (`Some(None)`
    /// for the PIN or when none is needed).
    fn check(&self, proof: Proof<'_>) -> Option<Option<String>> {
        if self.without_proof {
            return Some(None);
        }
        match proof {
            Proof::Pin(pin) => {
                let own = self.pin.as_ref()?;
                equal(own.as_bytes(), pin.as_bytes()).then_some(None)
            }
            Proof::Key(key) => {
                // Every key is compared, so the time says nothing of which.
                let mut found = None;
                for (name, own) in &self.keys {
                    if equal(own.as_bytes(), key.as_bytes()) {
                        found = Some(name.clone());
                    }
                }
                found.map(Some)
            }
            Proof::Nothing => None,
        }
    }

    /// `--mqtt-door-open`: a publish to the command topic opens `door`,
    /// unless it is opening already.
    pub fn authorize_mqtt(&mut self, door: &str) -> Result<Opening, Refusal> {
        let station = self.stations.iter_mut().find(|station| station.id == door).ok_or(Refusal::UnknownDoor)?;
        if station.running {
            return Err(Refusal::Busy);
        }
        station.running = true;
        Ok(Opening {
            door: door.to_string(),
            command: station.command.clone(),
            by: "mqtt".into(),
            call: None,
            key: None,
        })
    }

    /// `door`'s command ended (or was killed).
    pub fn finished(&mut self, door: &str) {
        if let Some(station) = self.stations.iter_mut().find(|station| station.id == door) {
            station.running = false;
        }
    }

    /// Peers and addresses remembered for failures, for the tests of the bound.
    #[cfg(test)]
    pub fn tracked(&self) -> (usize, usize) {
        (self.peers.len(), self.origins.len())
    }
}

/// Equal bytes, in a time that depends only on the lengths (the length of
/// the PIN is no secret worth the code).
fn equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn doors(pin: Option<&str>, keys: &[(&str, &str)], without_proof: bool) -> Doors {
        let stations = [
            ("door".to_string(), vec!["/bin/true".to_string()]),
            ("gate".to_string(), vec!["/bin/echo".to_string(), "gate".to_string()]),
        ];
        let keys = keys.iter().map(|(name, key)| (name.to_string(), key.to_string())).collect();
        Doors::new(&stations, pin.map(str::to_string), keys, without_proof)
    }

    fn event(kind: Kind, from: &str, call: &str, by: Option<&str>) -> Event {
        Event {
            kind,
            unix_ms: 0,
            room: "lobby".into(),
            from: from.into(),
            to: Some("*".into()),
            call: Some(call.into()),
            by: by.map(str::to_string),
            reason: None,
            media: None,
            snapshot: None,
            elapsed: None,
        }
    }

    const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20));
    const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 66));
    const TOKEN: &str = "kitchen-token";

    fn tokens(id: &str) -> Option<String> {
        (id == "kitchen").then(|| TOKEN.to_string())
    }

    /// `door` rang c1 at `t0` and kitchen answered.
    fn answered(doors: &mut Doors, t0: Instant) {
        doors.observe(&event(Kind::Ring, "door", "c1", None), t0, tokens);
        doors.observe(&event(Kind::Answered, "door", "c1", Some("kitchen")), t0, tokens);
    }

    #[test]
    fn the_answerer_opens_during_the_call_and_within_the_window_after_it() {
        let t0 = Instant::now();
        let mut doors = doors(Some("2468"), &[], false);
        answered(&mut doors, t0);
        let opening = doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("2468"), t0).unwrap();
        assert_eq!(opening.command, vec!["/bin/true".to_string()]);
        assert_eq!((opening.by.as_str(), opening.call.as_deref()), ("kitchen", Some("c1")));
        // A second open while the first runs is refused, not queued.
        assert_eq!(doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("2468"), t0), Err(Refusal::Busy));
        doors.finished("door");
        doors.observe(&event(Kind::Ended, "door", "c1", Some("kitchen")), t0 + Duration::from_secs(60), tokens);
        let at_edge = t0 + Duration::from_secs(60) + OPEN_WINDOW;
        assert!(doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("2468"), at_edge).is_ok());
        doors.finished("door");
        let after = at_edge + Duration::from_millis(1);
        assert_eq!(doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("2468"), after), Err(Refusal::NotYours));
    }

    #[test]
    fn nobody_else_opens() {
        let t0 = Instant::now();
        let mut doors = doors(Some("2468"), &[], false);
        // Before any answer: nobody.
        doors.observe(&event(Kind::Ring, "door", "c1", None), t0, tokens);
        assert_eq!(doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("2468"), t0), Err(Refusal::NotYours));
        doors.observe(&event(Kind::Answered, "door", "c1", Some("kitchen")), t0, tokens);
        // Another peer, the right PIN.
        assert_eq!(doors.authorize("door", "hall", TOKEN, OTHER, Proof::Pin("2468"), t0), Err(Refusal::NotYours));
        // The same name with another token (it left, someone took the name).
        assert_eq!(doors.authorize("door", "kitchen", "other", OTHER, Proof::Pin("2468"), t0), Err(Refusal::NotYours));
        // Another door station.
        assert_eq!(doors.authorize("gate", "kitchen", TOKEN, HOME, Proof::Pin("2468"), t0), Err(Refusal::NotYours));
        assert_eq!(doors.authorize("nope", "kitchen", TOKEN, HOME, Proof::Pin("2468"), t0), Err(Refusal::UnknownDoor));
        // The answerer, without the PIN or with a wrong one (a fresh table:
        // kitchen has failed three times above, the counting has its own test).
        let mut doors = self::doors(Some("2468"), &[], false);
        answered(&mut doors, t0);
        assert_eq!(doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Nothing, t0), Err(Refusal::WrongProof));
        assert_eq!(doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("2469"), t0), Err(Refusal::WrongProof));
        // A new ring of the door ends the old answer's right.
        doors.observe(&event(Kind::Ring, "door", "c2", None), t0, tokens);
        assert_eq!(doors.authorize("door", "kitchen", TOKEN, OTHER, Proof::Pin("2468"), t0), Err(Refusal::NotYours));
    }

    #[test]
    fn a_device_key_opens_and_says_which() {
        let t0 = Instant::now();
        let mut doors = doors(None, &[("hall-panel", "k1k1k1k1k1k1k1k1"), ("tablet", "k2k2k2k2k2k2k2k2")], false);
        assert_eq!(doors.needs(), Needs::Key);
        answered(&mut doors, t0);
        assert_eq!(doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("1234"), t0), Err(Refusal::WrongProof));
        let opening = doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Key("k2k2k2k2k2k2k2k2"), t0).unwrap();
        assert_eq!(opening.key.as_deref(), Some("tablet"));
    }

    #[test]
    fn without_proof_the_answerer_alone_still_opens() {
        let t0 = Instant::now();
        let mut doors = doors(None, &[], true);
        assert_eq!(doors.needs(), Needs::Nothing);
        answered(&mut doors, t0);
        assert_eq!(doors.authorize("door", "hall", "x", HOME, Proof::Nothing, t0), Err(Refusal::NotYours));
        assert!(doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Nothing, t0).is_ok());
    }

    #[test]
    fn failures_pause_the_peer_and_the_address_and_the_pause_ends() {
        let t0 = Instant::now();
        let mut doors = doors(Some("2468"), &[], false);
        answered(&mut doors, t0);
        for n in 1..MAX_FAILURES {
            let at = t0 + Duration::from_secs(n as u64);
            assert_eq!(
                doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("0000"), at),
                Err(Refusal::WrongProof)
            );
        }
        let fifth = t0 + Duration::from_secs(MAX_FAILURES as u64);
        assert_eq!(
            doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("0000"), fifth),
            Err(Refusal::Paused { retry_after: PAUSE })
        );
        // Paused: even the right PIN, from this peer or from this address under another name.
        let later = fifth + Duration::from_secs(1);
        let paused = Err(Refusal::Paused { retry_after: PAUSE - Duration::from_secs(1) });
        assert_eq!(doors.authorize("door", "kitchen", TOKEN, OTHER, Proof::Pin("2468"), later), paused);
        assert_eq!(doors.authorize("door", "hall", "t", HOME, Proof::Pin("2468"), later), paused);
        // After the pause the right PIN opens (the call still lasts).
        assert!(doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("2468"), fifth + PAUSE).is_ok());
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let t0 = Instant::now();
        let mut doors = doors(Some("2468"), &[], false);
        answered(&mut doors, t0);
        let mut at = t0;
        for _ in 0..3 * MAX_FAILURES {
            assert_eq!(
                doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("0000"), at),
                Err(Refusal::WrongProof)
            );
            at += FAILURE_WINDOW / (MAX_FAILURES as u32 - 1) + Duration::from_millis(1);
        }
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Origin::from(a), Origin::from(b));
        assert_ne!(Origin::from(a), Origin::from(c));
        let mapped: IpAddr = "::ffff:192.168.1.20".parse().unwrap();
        assert_eq!(Origin::from(mapped), Origin::from(HOME));
    }

    #[test]
    fn the_tables_stay_bounded_and_fail_closed_when_full_of_pauses() {
        let t0 = Instant::now();
        let mut doors = doors(Some("2468"), &[], false);
        answered(&mut doors, t0);
        // Many names and addresses, each failing once: bounded.
        for n in 0..4 * MAX_TRACKED {
            let address = IpAddr::V4(Ipv4Addr::new(10, 0, (n / 256) as u8, (n % 256) as u8));
            let _ = doors.authorize("door", &format!("p{n}"), "t", address, Proof::Pin("0"), t0);
        }
        assert_eq!(doors.tracked(), (MAX_TRACKED, MAX_TRACKED));
        // Every place paused: a newcomer is refused as well.
        let mut doors = self::doors(Some("2468"), &[], false);
        answered(&mut doors, t0);
        for n in 0..MAX_TRACKED {
            let address = IpAddr::V4(Ipv4Addr::new(10, 1, 0, n as u8));
            for _ in 0..MAX_FAILURES {
                let _ = doors.authorize("door", &format!("p{n}"), "t", address, Proof::Pin("0"), t0);
            }
        }
        assert!(matches!(
            doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("2468"), t0),
            Err(Refusal::Paused { .. })
        ));
        assert!(doors.authorize("door", "kitchen", TOKEN, HOME, Proof::Pin("2468"), t0 + PAUSE).is_ok());
    }

    #[test]
    fn mqtt_opens_any_configured_door_once_at_a_time() {
        let mut doors = doors(Some("2468"), &[], false);
        let opening = doors.authorize_mqtt("gate").unwrap();
        assert_eq!((opening.by.as_str(), opening.call), ("mqtt", None));
        assert_eq!(doors.authorize_mqtt("gate"), Err(Refusal::Busy));
        assert_eq!(doors.authorize_mqtt("nope"), Err(Refusal::UnknownDoor));
        doors.finished("gate");
        assert!(doors.authorize_mqtt("gate").is_ok());
    }

    #[test]
    fn equal_compares_whole_values() {
        assert!(equal(b"2468", b"2468"));
        assert!(!equal(b"2468", b"2469"));
        assert!(!equal(b"2468", b"24680"));
        assert!(!equal(b"", b"0"));
    }
}
