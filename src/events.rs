//! Intercom events, pure: what the router saw (peers coming and going, and
//! the call-control messages the pages send each other) turned into the
//! events a household cares about: `ring`, `answered`, `rejected`, `missed`,
//! `ended`, `online` and `offline`.
//!
//! The vocabulary (README's "Events" section is the user's copy):
//! - `call-request {call, media[, ring:"room"]}`, directed or to `"*"`: the
//!   first one with a new call id from a caller is a `ring`. Directed copies
//!   with the same id (a late joiner of a room ring) add to whom it rings.
//! - `call-accept {call}` from a rung peer: `answered` (the first only).
//! - `call-reject {call, reason}`: a directed ring ends `rejected`; a room
//!   ring ends when every peer it rang has replied (or left): `rejected` if
//!   one of them declined, else `missed`.
//! - `hangup {call, reason}` from the caller before an answer: `missed`
//!   (`cancelled`, or `no-answer` when the caller gave up); `glare` (both
//!   sides called at once, one call gives way) drops the ring silently.
//!   Either side's hangup after the answer: `ended`, with the duration.
//! - A caller that goes offline ends its calls (`missed`, `caller-left`, or
//!   `ended`); a rung peer that goes offline counts as a reply; a ring nobody
//!   ends within [`RING_TIMEOUT`] is `missed` (`timeout`).
//!
//! Nothing here waits or does I/O: [`Calls::observe`] and [`Calls::expire`]
//! take the time and return events, and the rim decides where they go.
//! A call is keyed by its caller and call id, so one peer cannot end or
//! answer another caller's call by reusing its id.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// A ring that nothing ends (no answer, no hangup, the caller still online)
/// is `missed` after this. Pages give up after 30 s and say so; this is the
/// safety net for a caller that does not.
pub const RING_TIMEOUT: Duration = Duration::from_secs(60);
/// Calls followed at once (ringing or answered). A ring past this evicts the
/// oldest call, which ends without an event: a flood of fake rings cannot
/// grow memory.
pub const MAX_OPEN_CALLS: usize = 64;
/// Rings one caller may start per minute that become events. Past it the
/// call-request is still routed, but raises no event (counted as
/// suppressed), so a misbehaving page cannot flood the house's phones.
pub const MAX_RINGS_PER_MINUTE: usize = 6;
/// Call ids, reasons and media longer than this are not call control.
const MAX_FIELD_LEN: usize = 64;

/// A moment, on both clocks: `at` for durations and deadlines, `unix_ms`
/// for the event's time stamp.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub at: Instant,
    pub unix_ms: u64,
}

/// What the router saw that may make an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A peer joined `room` (not a takeover, not a return within the grace).
    Online { id: String, room: String },
    /// A peer left `room` (or its grace ended).
    Offline { id: String, room: String },
    /// A call-control message was routed from `from` in `room` to `to` (a
    /// peer id, or `"*"`), reaching `recipients`.
    Call { from: String, room: String, to: String, recipients: Vec<String>, signal: Signal },
}

/// A call-control message, as far as events care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub kind: SignalKind,
    pub call: String,
    pub reason: Option<String>,
    pub media: Option<String>,
    /// `call-request`: the name of the caller's picture, uploaded just
    /// before (`POST /api/snapshots`).
    pub snapshot: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    Request,
    Accept,
    Reject,
    Hangup,
}

/// The call-control part of a message, if it is one: a `type` of
/// `call-request`, `call-accept`, `call-reject` or `hangup` with a `call`
/// id of 1 to 64 printable characters.
/// Whether a message of this `type` is call control, which `signal` reads.
pub fn is_signal_type(kind: &str) -> bool {
    matches!(kind, "call-request" | "call-accept" | "call-reject" | "hangup")
}

pub fn signal(message: &Map<String, Value>) -> Option<Signal> {
    let kind = match message.get("type")?.as_str()? {
        "call-request" => SignalKind::Request,
        "call-accept" => SignalKind::Accept,
        "call-reject" => SignalKind::Reject,
        "hangup" => SignalKind::Hangup,
        _ => return None,
    };
    let field =
        |name: &str| message.get(name).and_then(Value::as_str).filter(|text| is_plain(text)).map(str::to_string);
    let snapshot = if kind == SignalKind::Request { field("snapshot") } else { None };
    Some(Signal { kind, call: field("call")?, reason: field("reason"), media: field("media"), snapshot })
}

/// 1 to 64 printable ASCII characters: what a call id, a reason or a media
/// name can be in an event.
fn is_plain(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_FIELD_LEN && text.bytes().all(|b| b.is_ascii_graphic())
}

/// One intercom event. Its JSON (with the sequence number the call log
/// gives it) is [`Event::to_json`].
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: Kind,
    pub unix_ms: u64,
    /// The room it happened in.
    pub room: String,
    /// The caller; for `online`/`offline`, the peer.
    pub from: String,
    /// Whom the ring was for: a peer id or `"*"` (the whole room).
    pub to: Option<String>,
    pub call: Option<String>,
    /// Who answered, declined, or hung up.
    pub by: Option<String>,
    pub reason: Option<String>,
    pub media: Option<String>,
    /// `ring`: the name of the caller's picture (served at
    /// `/snapshots/<name>`), once the hub checked it is the caller's.
    pub snapshot: Option<String>,
    /// `answered`: time since the ring. `ended`: the call's duration.
    pub elapsed: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Ring,
    Answered,
    Rejected,
    Missed,
    Ended,
    Online,
    Offline,
    /// A door opened from a call (or by MQTT): `from` is the door station,
    /// `by` who opened it (`door.rs`).
    DoorOpened,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Ring,
        Kind::Answered,
        Kind::Rejected,
        Kind::Missed,
        Kind::Ended,
        Kind::Online,
        Kind::Offline,
        Kind::DoorOpened,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ring => "ring",
            Kind::Answered => "answered",
            Kind::Rejected => "rejected",
            Kind::Missed => "missed",
            Kind::Ended => "ended",
            Kind::Online => "online",
            Kind::Offline => "offline",
            Kind::DoorOpened => "door-opened",
        }
    }

    /// Events of a call (kept in the call log), as opposed to presence.
    pub fn is_call(self) -> bool {
        !matches!(self, Kind::Online | Kind::Offline)
    }
}

impl Event {
    /// `door` (in `room`) was opened by `by`, from `call` when there was one.
    pub fn door_opened(door: &str, room: &str, by: &str, call: Option<&str>, unix_ms: u64) -> Event {
        Event {
            kind: Kind::DoorOpened,
            unix_ms,
            room: room.to_string(),
            from: door.to_string(),
            to: None,
            call: call.map(str::to_string),
            by: Some(by.to_string()),
            reason: None,
            media: None,
            snapshot: None,
            elapsed: None,
        }
    }

    fn presence(kind: Kind, id: String, room: String, clock: Clock) -> Event {
        Event {
            kind,
            unix_ms: clock.unix_ms,
            room,
            from: id,
            to: None,
            call: None,
            by: None,
            reason: None,
            media: None,
            snapshot: None,
            elapsed: None,
        }
    }

    /// One line of JSON, fields in a fixed order:
    /// `{"seq":7,"event":"ring","time":"2026-12-02T14:02:03.120Z","room":..,"from":..,"to":..,"call":..,
    /// "by":..,"reason":..,"media":..,"after"|"duration":..}`; absent fields are left out (presence
    /// events have no `seq`: only call events are numbered, in the call log). Durations are
    /// in seconds with one decimal (enough for people, stable in tests).
    pub fn to_json(&self, seq: Option<u64>) -> String {
        let mut out = String::from("{");
        if let Some(seq) = seq {
            let _ = write!(out, "\"seq\":{seq},");
        }
        let _ = write!(out, "\"event\":\"{}\",\"time\":\"{}\"", self.kind.as_str(), rfc3339(self.unix_ms));
        let from = if self.kind.is_call() { "from" } else { "peer" };
        let text = [
            ("room", Some(&self.room)),
            (from, Some(&self.from)),
            ("to", self.to.as_ref()),
            ("call", self.call.as_ref()),
        ];
        let more = [("by", self.by.as_ref()), ("reason", self.reason.as_ref()), ("media", self.media.as_ref())];
        for (name, value) in text.into_iter().chain(more) {
            if let Some(value) = value {
                // Ids and rooms are plain already; call fields are checked
                // by `signal`; escaping anyway keeps the line JSON whatever
                // comes in.
                let _ = write!(out, ",\"{name}\":");
                push_json_string(&mut out, value);
            }
        }
        if let Some(name) = &self.snapshot {
            out.push_str(",\"snapshot\":");
            push_json_string(&mut out, &format!("/snapshots/{name}"));
        }
        if let Some(elapsed) = self.elapsed {
            let name = if self.kind == Kind::Answered { "after" } else { "duration" };
            let tenths = elapsed.as_secs() * 10 + u64::from(elapsed.subsec_millis() + 50) / 100;
            let _ = write!(out, ",\"{name}\":{}.{}", tenths / 10, tenths % 10);
        }
        out.push('}');
        out
    }
}

/// `text` as a JSON string: what every hand-written JSON of the events'
/// consumers uses (serde_json's `Value` would bring its whole serializer).
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `unix_ms` as RFC 3339 in UTC with milliseconds: `2026-12-02T14:02:03.120Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        unix_ms % 1000
    )
}

/// One call being followed.
struct Call {
    room: String,
    /// A peer id or `"*"`.
    to: String,
    media: Option<String>,
    snapshot: Option<String>,
    rang_at: Instant,
    /// Rung peers that have not replied yet.
    waiting: Vec<String>,
    /// The first rung peer that declined.
    declined_by: Option<String>,
    /// Who answered, and when.
    answered: Option<(String, Instant)>,
}

/// (caller, call id).
type Key = (String, String);

/// The calls followed, oldest first.
#[derive(Default)]
struct Table(Vec<(Key, Call)>);

impl Table {
    fn get(&self, key: &Key) -> Option<&Call> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, call)| call)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Call> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, call)| call)
    }

    fn remove(&mut self, key: &Key) {
        self.0.retain(|(k, _)| k != key);
    }
}

/// Take `id` out of `list`; whether it was there.
fn take(list: &mut Vec<String>, id: &str) -> bool {
    let before = list.len();
    list.retain(|item| item != id);
    list.len() != before
}

/// Rings remembered for `MAX_RINGS_PER_MINUTE`; when this many happened
/// within a minute (from many callers at once), further rings make no event.
const MAX_RECENT_RINGS: usize = 256;

/// The calls in progress, and what they have become.
#[derive(Default)]
pub struct Calls {
    /// By (caller, call id); a handful at a time, so a list.
    calls: Table,
    /// Ringing calls by when they time out, oldest first (every deadline is
    /// `rang_at + RING_TIMEOUT`, so appending keeps the order). Entries of
    /// calls that ended since are skipped when they come up.
    deadlines: Vec<(Instant, (String, String))>,
    /// Who rang when, over the last minute, for `MAX_RINGS_PER_MINUTE`
    /// (oldest first; at most `MAX_RECENT_RINGS`).
    recent_rings: Vec<(String, Instant)>,
    /// Rings not turned into events because of `MAX_RINGS_PER_MINUTE`.
    pub suppressed: u64,
}

impl Calls {
    pub fn new() -> Calls {
        Calls::default()
    }

    /// When [`Calls::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Rings still unanswered at `clock` past [`RING_TIMEOUT`] are missed.
    pub fn expire(&mut self, clock: Clock, events: &mut Vec<Event>) {
        // In time order: each was pushed at its ring, a minute ahead.
        let due = self.deadlines.partition_point(|(at, _)| *at <= clock.at);
        let expired: Vec<_> = self.deadlines.drain(..due).collect();
        for (_, key) in expired {
            let unanswered = self.calls.get(&key).is_some_and(|call| call.answered.is_none());
            if unanswered {
                self.finish_missed(&key, "timeout", clock, events);
            }
        }
    }

    /// Turn what the router saw into events, appended to `events`.
    pub fn observe(&mut self, seen: Seen, clock: Clock, events: &mut Vec<Event>) {
        match seen {
            Seen::Online { id, room } => events.push(Event::presence(Kind::Online, id, room, clock)),
            Seen::Offline { id, room } => {
                self.peer_gone(&id, clock, events);
                events.push(Event::presence(Kind::Offline, id, room, clock));
            }
            Seen::Call { from, room, to, recipients, signal } => match signal.kind {
                SignalKind::Request => self.request(from, room, to, recipients, signal, clock, events),
                SignalKind::Accept => {
                    let key = (to, signal.call);
                    let Some(call) = self.calls.get_mut(&key) else { return };
                    if call.answered.is_some() || !call.waiting.contains(&from) {
                        return;
                    }
                    call.answered = Some((from.clone(), clock.at));
                    call.waiting.clear();
                    let after = clock.at.duration_since(call.rang_at);
                    events.push(self.event(Kind::Answered, &key, Some(from), None, Some(after), clock));
                }
                SignalKind::Reject => {
                    let key = (to, signal.call);
                    let Some(call) = self.calls.get_mut(&key) else { return };
                    if call.answered.is_some() || !take(&mut call.waiting, &from) {
                        return;
                    }
                    let declined = signal.reason.as_deref().is_none_or(|reason| reason == "declined");
                    if call.to != "*" {
                        let reason = signal.reason.or_else(|| Some("declined".into()));
                        events.push(self.event(Kind::Rejected, &key, Some(from), reason, None, clock));
                        self.calls.remove(&key);
                    } else {
                        if declined && call.declined_by.is_none() {
                            call.declined_by = Some(from);
                        }
                        self.settle(&key, clock, events);
                    }
                }
                SignalKind::Hangup => self.hangup(from, to, signal, clock, events),
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        from: String,
        room: String,
        to: String,
        recipients: Vec<String>,
        signal: Signal,
        clock: Clock,
        events: &mut Vec<Event>,
    ) {
        let key = (from, signal.call);
        if let Some(call) = self.calls.get_mut(&key) {
            // A directed copy of a room ring for a late joiner.
            if call.answered.is_none() {
                for recipient in recipients {
                    if !call.waiting.contains(&recipient) {
                        call.waiting.push(recipient);
                    }
                }
            }
            return;
        }
        // A ring only counts once somebody was rung.
        if recipients.is_empty() {
            return;
        }
        let recent = &mut self.recent_rings;
        recent.retain(|(_, at)| clock.at.duration_since(*at) < Duration::from_secs(60));
        let rang = recent.iter().filter(|(caller, _)| *caller == key.0).count();
        if rang >= MAX_RINGS_PER_MINUTE || recent.len() >= MAX_RECENT_RINGS {
            self.suppressed += 1;
            return;
        }
        recent.push((key.0.clone(), clock.at));
        if self.calls.0.len() >= MAX_OPEN_CALLS {
            // Calls are added in time order: the first is the oldest.
            self.calls.0.remove(0);
        }
        let call = Call {
            room,
            to,
            media: signal.media,
            snapshot: signal.snapshot,
            rang_at: clock.at,
            waiting: recipients,
            declined_by: None,
            answered: None,
        };
        self.calls.0.push((key.clone(), call));
        self.deadlines.push((clock.at + RING_TIMEOUT, key.clone()));
        events.push(self.event(Kind::Ring, &key, None, None, None, clock));
    }

    fn hangup(&mut self, from: String, to: String, signal: Signal, clock: Clock, events: &mut Vec<Event>) {
        // The caller's hangup is keyed by itself, the callee's by the caller.
        let by_caller = (from.clone(), signal.call.clone());
        let key = if self.calls.get(&by_caller).is_some() { by_caller } else { (to, signal.call) };
        let Some(call) = self.calls.get(&key) else { return };
        let reason = signal.reason;
        match &call.answered {
            Some((by, _)) => {
                // `answered-elsewhere` goes from the door to the peers that
                // lost the race; it ends nothing.
                let party = from == key.0 || from == *by;
                if reason.as_deref() == Some("answered-elsewhere") || !party {
                    return;
                }
                self.finish_ended(&key, from, reason, clock, events);
            }
            None if from == key.0 => match reason.as_deref() {
                Some("glare") => {
                    self.calls.remove(&key);
                }
                Some("no-answer") => self.finish_missed(&key, "no-answer", clock, events),
                _ => self.finish_missed(&key, "cancelled", clock, events),
            },
            // A rung peer hanging up a ring is a reply.
            None => {
                if let Some(call) = self.calls.get_mut(&key) {
                    take(&mut call.waiting, &from);
                }
                self.settle(&key, clock, events);
            }
        }
    }

    /// A peer is gone: its calls end, and it no longer holds a ring open.
    fn peer_gone(&mut self, id: &str, clock: Clock, events: &mut Vec<Event>) {
        let keys: Vec<(String, String)> = self
            .calls
            .0
            .iter()
            .filter(|(key, call)| {
                key.0 == id
                    || call.waiting.iter().any(|w| w == id)
                    || call.answered.as_ref().is_some_and(|(by, _)| by == id)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            let Some(call) = self.calls.get_mut(&key) else { continue };
            if call.answered.is_some() {
                self.finish_ended(&key, id.to_string(), Some("left".into()), clock, events);
            } else if key.0 == id {
                self.finish_missed(&key, "caller-left", clock, events);
            } else {
                take(&mut call.waiting, id);
                self.settle(&key, clock, events);
            }
        }
    }

    /// A ring whose rung peers have all replied without an answer ends.
    fn settle(&mut self, key: &(String, String), clock: Clock, events: &mut Vec<Event>) {
        let Some(call) = self.calls.get(key) else { return };
        if call.answered.is_some() || !call.waiting.is_empty() {
            return;
        }
        match call.declined_by.clone() {
            Some(by) => {
                events.push(self.event(Kind::Rejected, key, Some(by), Some("declined".into()), None, clock));
                self.calls.remove(key);
            }
            None => self.finish_missed(key, "unanswered", clock, events),
        }
    }

    fn finish_missed(&mut self, key: &(String, String), reason: &str, clock: Clock, events: &mut Vec<Event>) {
        events.push(self.event(Kind::Missed, key, None, Some(reason.into()), None, clock));
        self.calls.remove(key);
    }

    fn finish_ended(
        &mut self,
        key: &(String, String),
        by: String,
        reason: Option<String>,
        clock: Clock,
        events: &mut Vec<Event>,
    ) {
        let Some(call) = self.calls.get(key) else { return };
        let duration = call.answered.as_ref().map(|(_, at)| clock.at.duration_since(*at));
        events.push(self.event(Kind::Ended, key, Some(by), reason, duration, clock));
        self.calls.remove(key);
    }

    fn event(
        &self,
        kind: Kind,
        key: &(String, String),
        by: Option<String>,
        reason: Option<String>,
        elapsed: Option<Duration>,
        clock: Clock,
    ) -> Event {
        let call = self.calls.get(key).expect("an event of a call that is followed");
        Event {
            kind,
            unix_ms: clock.unix_ms,
            room: call.room.clone(),
            from: key.0.clone(),
            to: Some(call.to.clone()),
            call: Some(key.1.clone()),
            by,
            reason,
            media: call.media.clone(),
            snapshot: if kind == Kind::Ring { call.snapshot.clone() } else { None },
            elapsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Synthetic time: `t(s)` is `s` seconds after a fixed start.
    struct Time(Instant);

    impl Time {
        fn at(&self, seconds: f64) -> Clock {
            Clock {
                at: self.0 + Duration::from_secs_f64(seconds),
                unix_ms: 1_796_220_000_000 + (seconds * 1000.0) as u64,
            }
        }
    }

    fn call(kind: SignalKind, from: &str, to: &str, recipients: &[&str], reason: Option<&str>) -> Seen {
        Seen::Call {
            from: from.into(),
            room: "home".into(),
            to: to.into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            signal: Signal {
                kind,
                call: "c1".into(),
                reason: reason.map(str::to_string),
                media: Some("video".into()),
                snapshot: None,
            },
        }
    }

    /// Feed `steps` (seconds, what was seen) and return the events as JSON
    /// lines without their time stamps' noise (seq is the index).
    fn check(steps: Vec<(f64, Seen)>, expected: &[&str]) {
        let time = Time(Instant::now());
        let mut calls = Calls::new();
        let mut events = Vec::new();
        for (seconds, seen) in steps {
            calls.expire(time.at(seconds), &mut events);
            calls.observe(seen, time.at(seconds), &mut events);
        }
        calls.expire(time.at(1000.0), &mut events);
        let got: Vec<String> = events
            .iter()
            .map(|event| {
                let json: Value = serde_json::from_str(&event.to_json(None)).unwrap();
                let mut object = json.as_object().unwrap().clone();
                for noise in ["seq", "time", "room", "call", "media"] {
                    object.remove(noise);
                }
                Value::Object(object).to_string()
            })
            .collect();
        assert_eq!(got, expected, "events");
    }

    use SignalKind::*;

    #[test]
    fn directed_ring_answered_then_ended() {
        check(
            vec![
                (0.0, call(Request, "door", "kitchen", &["kitchen"], None)),
                (4.25, call(Accept, "kitchen", "door", &["door"], None)),
                (64.25, call(Hangup, "kitchen", "door", &["door"], None)),
            ],
            &[
                r#"{"event":"ring","from":"door","to":"kitchen"}"#,
                r#"{"after":4.3,"by":"kitchen","event":"answered","from":"door","to":"kitchen"}"#,
                r#"{"by":"kitchen","duration":60.0,"event":"ended","from":"door","to":"kitchen"}"#,
            ],
        );
    }

    #[test]
    fn room_ring_first_accept_wins_and_losers_change_nothing() {
        check(
            vec![
                (0.0, call(Request, "door", "*", &["kitchen", "hall"], None)),
                (2.0, call(Accept, "hall", "door", &["door"], None)),
                (2.1, call(Accept, "kitchen", "door", &["door"], None)),
                (2.2, call(Hangup, "door", "kitchen", &["kitchen"], Some("answered-elsewhere"))),
                (10.0, call(Hangup, "door", "hall", &["hall"], None)),
            ],
            &[
                r#"{"event":"ring","from":"door","to":"*"}"#,
                r#"{"after":2.0,"by":"hall","event":"answered","from":"door","to":"*"}"#,
                r#"{"by":"door","duration":8.0,"event":"ended","from":"door","to":"*"}"#,
            ],
        );
    }

    #[test]
    fn directed_reject_ends_the_ring() {
        check(
            vec![
                (0.0, call(Request, "door", "kitchen", &["kitchen"], None)),
                (1.0, call(Reject, "kitchen", "door", &["door"], Some("busy"))),
                (2.0, call(Hangup, "door", "kitchen", &["kitchen"], None)),
            ],
            &[
                r#"{"event":"ring","from":"door","to":"kitchen"}"#,
                r#"{"by":"kitchen","event":"rejected","from":"door","reason":"busy","to":"kitchen"}"#,
            ],
        );
    }

    #[test]
    fn room_ring_ends_when_everyone_rung_replied() {
        // One declined, one is busy, one left: rejected, by the decliner.
        check(
            vec![
                (0.0, call(Request, "door", "*", &["a", "b"], None)),
                (0.5, call(Request, "door", "c", &["c"], None)),
                (1.0, call(Reject, "b", "door", &["door"], Some("busy"))),
                (2.0, call(Reject, "c", "door", &["door"], Some("declined"))),
                (3.0, Seen::Offline { id: "a".into(), room: "home".into() }),
            ],
            &[
                r#"{"event":"ring","from":"door","to":"*"}"#,
                r#"{"by":"c","event":"rejected","from":"door","reason":"declined","to":"*"}"#,
                r#"{"event":"offline","peer":"a"}"#,
            ],
        );
        // Nobody declined: missed.
        check(
            vec![
                (0.0, call(Request, "door", "*", &["a", "b"], None)),
                (1.0, call(Reject, "b", "door", &["door"], Some("busy"))),
                (2.0, call(Reject, "a", "door", &["door"], Some("media-error"))),
            ],
            &[
                r#"{"event":"ring","from":"door","to":"*"}"#,
                r#"{"event":"missed","from":"door","reason":"unanswered","to":"*"}"#,
            ],
        );
    }

    #[test]
    fn caller_cancels_gives_up_or_leaves() {
        check(
            vec![(0.0, call(Request, "door", "*", &["a"], None)), (3.0, call(Hangup, "door", "*", &["a"], None))],
            &[
                r#"{"event":"ring","from":"door","to":"*"}"#,
                r#"{"event":"missed","from":"door","reason":"cancelled","to":"*"}"#,
            ],
        );
        check(
            vec![
                (0.0, call(Request, "door", "*", &["a"], None)),
                (30.0, call(Hangup, "door", "*", &["a"], Some("no-answer"))),
            ],
            &[
                r#"{"event":"ring","from":"door","to":"*"}"#,
                r#"{"event":"missed","from":"door","reason":"no-answer","to":"*"}"#,
            ],
        );
        check(
            vec![
                (0.0, call(Request, "door", "a", &["a"], None)),
                (3.0, Seen::Offline { id: "door".into(), room: "home".into() }),
            ],
            &[
                r#"{"event":"ring","from":"door","to":"a"}"#,
                r#"{"event":"missed","from":"door","reason":"caller-left","to":"a"}"#,
                r#"{"event":"offline","peer":"door"}"#,
            ],
        );
    }

    #[test]
    fn glare_drops_the_ring_without_an_outcome() {
        check(
            vec![(0.0, call(Request, "a", "b", &["b"], None)), (0.1, call(Hangup, "a", "b", &["b"], Some("glare")))],
            &[r#"{"event":"ring","from":"a","to":"b"}"#],
        );
    }

    #[test]
    fn a_ring_nothing_ends_is_missed_at_the_timeout_and_not_before() {
        let time = Time(Instant::now());
        let mut calls = Calls::new();
        let mut events = Vec::new();
        calls.observe(call(Request, "door", "*", &["a"], None), time.at(0.0), &mut events);
        assert_eq!(calls.next_deadline(), Some(time.at(60.0).at));
        calls.expire(time.at(59.9), &mut events);
        assert_eq!(events.len(), 1);
        calls.expire(time.at(60.0), &mut events);
        assert_eq!(events[1].kind, Kind::Missed);
        assert_eq!(events[1].reason.as_deref(), Some("timeout"));
        assert_eq!(calls.next_deadline(), None);
        // An answered call is not timed out.
        calls.observe(call(Request, "door", "*", &["a"], None), time.at(100.0), &mut events);
        calls.observe(call(Accept, "a", "door", &["door"], None), time.at(101.0), &mut events);
        calls.expire(time.at(500.0), &mut events);
        assert_eq!(events.last().unwrap().kind, Kind::Answered);
        assert_eq!(calls.next_deadline(), None, "the stale deadline was skipped");
    }

    #[test]
    fn strangers_cannot_answer_or_end_someone_elses_call() {
        check(
            vec![
                (0.0, call(Request, "door", "kitchen", &["kitchen"], None)),
                // Not rung: its accept and reject mean nothing.
                (1.0, call(Accept, "mallory", "door", &["door"], None)),
                (1.0, call(Reject, "mallory", "door", &["door"], None)),
                (2.0, call(Accept, "kitchen", "door", &["door"], None)),
                // Not a party: its hangup ends nothing.
                (3.0, call(Hangup, "mallory", "door", &["door"], None)),
                (5.0, Seen::Offline { id: "kitchen".into(), room: "home".into() }),
            ],
            &[
                r#"{"event":"ring","from":"door","to":"kitchen"}"#,
                r#"{"after":2.0,"by":"kitchen","event":"answered","from":"door","to":"kitchen"}"#,
                r#"{"by":"kitchen","duration":3.0,"event":"ended","from":"door","reason":"left","to":"kitchen"}"#,
                r#"{"event":"offline","peer":"kitchen"}"#,
            ],
        );
    }

    #[test]
    fn rings_per_caller_are_limited_per_minute() {
        let time = Time(Instant::now());
        let mut calls = Calls::new();
        let mut events = Vec::new();
        for n in 0..MAX_RINGS_PER_MINUTE + 2 {
            let mut seen = call(Request, "door", "*", &["a"], None);
            if let Seen::Call { signal, .. } = &mut seen {
                signal.call = format!("c{n}");
            }
            calls.observe(seen, time.at(n as f64), &mut events);
        }
        assert_eq!(events.len(), MAX_RINGS_PER_MINUTE);
        assert_eq!(calls.suppressed, 2);
        // A minute after the first, one more may ring.
        let mut seen = call(Request, "door", "*", &["a"], None);
        if let Seen::Call { signal, .. } = &mut seen {
            signal.call = "later".into();
        }
        calls.observe(seen, time.at(60.0), &mut events);
        assert_eq!(events.len(), MAX_RINGS_PER_MINUTE + 1);
    }

    #[test]
    fn rings_from_many_callers_are_limited_per_minute_too() {
        let time = Time(Instant::now());
        let mut calls = Calls::new();
        let mut events = Vec::new();
        for n in 0..MAX_RECENT_RINGS + 3 {
            calls.observe(call(Request, &format!("p{n}"), "*", &["a"], None), time.at(0.1), &mut events);
        }
        assert_eq!(events.len(), MAX_RECENT_RINGS);
        assert_eq!(calls.suppressed, 3);
        calls.observe(call(Request, "late", "*", &["a"], None), time.at(60.1), &mut events);
        assert_eq!(events.len(), MAX_RECENT_RINGS + 1, "a minute later there is room again");
    }

    #[test]
    fn open_calls_are_bounded() {
        let time = Time(Instant::now());
        let mut calls = Calls::new();
        let mut events = Vec::new();
        for n in 0..MAX_OPEN_CALLS + 10 {
            let mut seen = call(Request, &format!("p{n}"), "*", &["a"], None);
            if let Seen::Call { signal, .. } = &mut seen {
                signal.call = format!("c{n}");
            }
            calls.observe(seen, time.at(n as f64 / 100.0), &mut events);
        }
        assert_eq!(calls.calls.0.len(), MAX_OPEN_CALLS);
        assert!(calls.calls.get(&("p0".to_string(), "c0".to_string())).is_none(), "the oldest went first");
    }

    #[test]
    fn signals_are_read_from_call_control_messages_only() {
        let parse = |text: &str| signal(serde_json::from_str::<Value>(text).unwrap().as_object().unwrap());
        assert_eq!(
            parse(r#"{"type":"call-request","to":"*","call":"ab12","media":"video","ring":"room"}"#),
            Some(Signal {
                kind: Request,
                call: "ab12".into(),
                reason: None,
                media: Some("video".into()),
                snapshot: None
            })
        );
        assert_eq!(
            parse(r#"{"type":"hangup","to":"a","call":"ab12","reason":"no-answer"}"#).unwrap().reason.as_deref(),
            Some("no-answer")
        );
        assert_eq!(parse(r#"{"type":"offer","to":"a","call":"ab12"}"#), None);
        assert_eq!(parse(r#"{"type":"call-accept","to":"a"}"#), None, "no call id");
        assert_eq!(parse(r#"{"type":"call-accept","to":"a","call":7}"#), None);
        let long = format!(r#"{{"type":"call-accept","to":"a","call":"{}"}}"#, "x".repeat(65));
        assert_eq!(parse(&long), None);
        assert_eq!(parse(r#"{"type":"call-accept","to":"a","call":"a b"}"#), None);
        let odd = parse(r#"{"type":"call-reject","to":"a","call":"c","reason":"\u0000"}"#).unwrap();
        assert_eq!(odd.reason, None, "a reason that is not plain text is left out");
    }

    #[test]
    fn json_has_a_fixed_order_and_an_rfc3339_time() {
        let event = Event {
            kind: Kind::Answered,
            unix_ms: 1_796_220_000_123,
            room: "home".into(),
            from: "door".into(),
            to: Some("*".into()),
            call: Some("c1".into()),
            by: Some("kitchen".into()),
            reason: None,
            media: Some("video".into()),
            snapshot: None,
            elapsed: Some(Duration::from_millis(4250)),
        };
        assert_eq!(
            event.to_json(Some(7)),
            r#"{"seq":7,"event":"answered","time":"2026-12-02T14:00:00.123Z","room":"home","from":"door","to":"*","call":"c1","by":"kitchen","media":"video","after":4.3}"#
        );
        let online =
            Event::presence(Kind::Online, "kitchen".into(), "home".into(), Clock { at: Instant::now(), unix_ms: 0 });
        assert_eq!(
            online.to_json(None),
            r#"{"event":"online","time":"1970-01-01T00:00:00.000Z","room":"home","peer":"kitchen"}"#
        );
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\u{1}d\u{e9}");
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "a\"b\\c\u{1}d\u{e9}");
        assert_eq!(out, "\"a\\\"b\\\\c\\u0001d\u{e9}\"");
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
    }
}
