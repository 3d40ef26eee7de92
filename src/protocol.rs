//! The native wire protocol: JSON text frames, their validation and their
//! encoding. No I/O, no state.
//!
//! Invariants:
//! - Every frame the server sends is built here, so the wire format lives in
//!   one file (a second protocol gets a second codec file, not a second router).
//! - A client's message is passed on unchanged (`to` included) except for
//!   `from`, which the server always sets itself.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::{Map, Value};

/// Longest peer id or room name, in bytes (they are ASCII).
pub const MAX_ID_LEN: usize = 64;
/// Longest reconnect token, in bytes.
pub const MAX_TOKEN_LEN: usize = 128;
/// The room a peer lands in when it names none.
pub const DEFAULT_ROOM: &str = "lobby";
/// `"to"` value that means every other peer of the sender's room.
pub const BROADCAST: &str = "*";

/// Error codes of SPEC, as sent in `{"type":"error","code":..}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadJson,
    BadMessage,
    TooLarge,
    UnknownPeer,
    IdTaken,
    InvalidId,
    InvalidRoom,
    InvalidToken,
    ServerFull,
    RoomFull,
    RateLimited,
    PeerUnavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadJson,
        ErrorCode::BadMessage,
        ErrorCode::TooLarge,
        ErrorCode::UnknownPeer,
        ErrorCode::IdTaken,
        ErrorCode::InvalidId,
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidToken,
        ErrorCode::ServerFull,
        ErrorCode::RoomFull,
        ErrorCode::RateLimited,
        ErrorCode::PeerUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad-json",
            ErrorCode::BadMessage => "bad-message",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::IdTaken => "id-taken",
            ErrorCode::InvalidId => "invalid-id",
            ErrorCode::InvalidRoom => "invalid-room",
            ErrorCode::InvalidToken => "invalid-token",
            ErrorCode::ServerFull => "server-full",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::PeerUnavailable => "peer-unavailable",
        }
    }
}

/// WebSocket close codes of SPEC.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const INVALID_DATA: u16 = 1007;
    pub const TOO_LARGE: u16 = 1009;
    pub const INVALID_HELLO: u16 = 4000;
    pub const REPLACED: u16 = 4001;
    pub const ID_TAKEN: u16 = 4002;
    pub const SERVER_FULL: u16 = 4005;
    pub const ROOM_FULL: u16 = 4006;
    pub const NOT_READING: u16 = 4008;
    pub const NOT_ANSWERING: u16 = 4009;

    /// The reason phrase sent in the close frame, and logged.
    pub fn reason(code: u16) -> &'static str {
        match code {
            GOING_AWAY => "server shutting down",
            INVALID_DATA => "invalid UTF-8",
            TOO_LARGE => "message too large",
            INVALID_HELLO => "invalid id, room or token",
            REPLACED => "replaced",
            ID_TAKEN => "id taken",
            SERVER_FULL => "server full",
            ROOM_FULL => "room full",
            NOT_READING => "not reading",
            NOT_ANSWERING => "not answering pings",
            _ => "",
        }
    }
}

/// The `ref` of an error: which message it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reference {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// A refusal: the error to send back and, for fatal ones, the close code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<Reference>,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Rejection {
        Rejection { code, message: message.into(), reference: None }
    }

    pub fn about(mut self, reference: Reference) -> Rejection {
        self.reference = Some(reference);
        self
    }
}

/// True for 1..=64 characters of `A-Z a-z 0-9 . _ ~ -`: the alphabet of
/// peer ids and room names, safe in URLs, logs and JSON without escaping.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ID_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// What a client asks for in `GET /ws?id=..&room=..&token=..` (or the
/// PeerJS endpoint's query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// `None`: the server picks a random id.
    pub id: Option<String>,
    pub room: String,
    pub token: Option<String>,
}

impl Hello {
    /// Validate the decoded query parameters of the upgrade request (a
    /// value is `None` where its %-escape was broken).
    pub fn from_query(pairs: &[(String, Option<String>)]) -> Result<Hello, Rejection> {
        let id = query_value(pairs, "id", ErrorCode::InvalidId)?.filter(|id| !id.is_empty());
        if let Some(id) = &id {
            if !is_valid_name(id) {
                return Err(Rejection::new(ErrorCode::InvalidId, "an id is 1 to 64 characters of A-Z a-z 0-9 . _ ~ -"));
            }
        }
        let room =
            query_value(pairs, "room", ErrorCode::InvalidRoom)?.filter(|room| !room.is_empty()).unwrap_or(DEFAULT_ROOM);
        if !is_valid_name(room) {
            return Err(Rejection::new(
                ErrorCode::InvalidRoom,
                "a room name is 1 to 64 characters of A-Z a-z 0-9 . _ ~ -",
            ));
        }
        let token = query_value(pairs, "token", ErrorCode::InvalidToken)?.filter(|token| !token.is_empty());
        if let Some(token) = token {
            if !is_valid_token(token) {
                return Err(Rejection::new(
                    ErrorCode::InvalidToken,
                    "a token is at most 128 bytes of printable characters",
                ));
            }
        }
        let (id, room, token) = (id.map(str::to_string), room.to_string(), token.map(str::to_string));
        Ok(Hello { id, room, token })
    }
}

/// The first value of `key` in a decoded query: `Ok(None)` when absent, an
/// error with `code` when its %-escape was broken (so a broken token is
/// `invalid-token`, not a puzzle about the id).
pub fn query_value<'q>(
    pairs: &'q [(String, Option<String>)],
    key: &str,
    code: ErrorCode,
) -> Result<Option<&'q str>, Rejection> {
    match pairs.iter().find(|(k, _)| k == key) {
        None => Ok(None),
        Some((_, Some(value))) => Ok(Some(value.as_str())),
        Some((_, None)) => Err(Rejection::new(code, format!("the {key} has a broken %-escape"))),
    }
}

/// At most `MAX_TOKEN_LEN` bytes, no control characters.
pub fn is_valid_token(token: &str) -> bool {
    token.len() <= MAX_TOKEN_LEN && !token.chars().any(char::is_control)
}

/// A client message, decoded just far enough to route it. It borrows the
/// frame it came in: a relayed message is passed on as the text the sender
/// sent, with `from` spliced in, never decoded into a tree and encoded again.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound<'a> {
    /// `"to":"<id>"`: passed to one peer with `from` stamped.
    Directed { to: Cow<'a, str>, message: Message<'a> },
    /// `"to":"*"`: passed to every other peer of the sender's room.
    Broadcast { message: Message<'a> },
    /// `{"type":"join","room":..}`: move to another room.
    Join { room: String },
    /// `{"type":"peers"}`: who is in my room.
    Peers,
}

/// A message to relay.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// A native client's object as it arrived: valid JSON, one object, a
    /// string `type`. `names_from` says it carries a `from` of its own,
    /// which the stamp replaces.
    Text { text: &'a str, kind: Cow<'a, str>, names_from: bool },
    /// An object the server built from another wire format (PeerJS).
    Object(Map<String, Value>),
}

impl Message<'_> {
    /// Its `type`.
    pub fn kind(&self) -> Option<&str> {
        match self {
            Message::Text { kind, .. } => Some(kind),
            Message::Object(object) => object.get("type").and_then(Value::as_str),
        }
    }

    /// The message as an object, for the rare reader that needs its fields
    /// (another codec's encoding, a call-control event).
    pub fn to_object(&self) -> Cow<'_, Map<String, Value>> {
        match self {
            // The text was checked by the same parser, so this cannot fail.
            Message::Text { text, .. } => Cow::Owned(serde_json::from_str(text).unwrap_or_default()),
            Message::Object(object) => Cow::Borrowed(object),
        }
    }

    /// The text passed on to a native peer: the message with `from` set.
    pub fn stamp(&self, from: &str) -> String {
        match self {
            Message::Text { text, names_from: false, .. } => splice_from(text, from),
            _ => stamp(self.to_object().into_owned(), from),
        }
    }
}

impl Inbound<'_> {
    pub fn reference(&self) -> Reference {
        match self {
            Inbound::Directed { to, message } => {
                Reference { kind: message.kind().map(str::to_string), to: Some(to.to_string()) }
            }
            Inbound::Broadcast { message } => {
                Reference { kind: message.kind().map(str::to_string), to: Some(BROADCAST.to_string()) }
            }
            Inbound::Join { .. } => Reference { kind: Some("join".into()), to: None },
            Inbound::Peers => Reference { kind: Some("peers".into()), to: None },
        }
    }
}

/// Decode one text frame from a client.
///
/// One pass of serde_json's parser over the whole frame, through the same
/// paths a `serde_json::Value` takes (so exactly the same frames are
/// refused, with the same messages), keeping only `type`, `to` and `room`
/// and whether there is a `from`: nothing else is copied or allocated.
pub fn parse_inbound(text: &str) -> Result<Inbound<'_>, Rejection> {
    let scanned: Scanned = serde_json::from_str(text)
        .map_err(|err| Rejection::new(ErrorCode::BadJson, format!("not valid JSON: {err}")))?;
    let Scanned::Object { kind, to, room, names_from } = scanned else {
        return Err(Rejection::new(ErrorCode::BadMessage, "a message is a JSON object"));
    };
    let reference = || Reference { kind: kind.as_str().map(str::to_string), to: to.as_str().map(str::to_string) };
    let kind = match &kind {
        Field::Str(kind) => kind.clone(),
        Field::Other => {
            return Err(Rejection::new(ErrorCode::BadMessage, "\"type\" must be a string").about(reference()));
        }
        Field::Absent => return Err(Rejection::new(ErrorCode::BadMessage, "a message needs a string \"type\"")),
    };
    // `to` stays in the message: the target gets the same object, so it can
    // tell a room-wide `"*"` from a message meant for it alone.
    match &to {
        Field::Str(to) if to == BROADCAST => {
            Ok(Inbound::Broadcast { message: Message::Text { text, kind, names_from } })
        }
        Field::Str(to) => Ok(Inbound::Directed { to: to.clone(), message: Message::Text { text, kind, names_from } }),
        Field::Other => Err(Rejection::new(ErrorCode::BadMessage, "\"to\" must be a string").about(reference())),
        Field::Absent => match &*kind {
            "join" => match room {
                Field::Str(room) if is_valid_name(&room) => Ok(Inbound::Join { room: room.into_owned() }),
                _ => Err(Rejection::new(
                    ErrorCode::InvalidRoom,
                    "join needs a \"room\" of 1 to 64 characters of A-Z a-z 0-9 . _ ~ -",
                )
                .about(reference())),
            },
            "peers" => Ok(Inbound::Peers),
            _ => Err(Rejection::new(
                ErrorCode::BadMessage,
                "a message without \"to\" is for the server, which knows only \"join\" and \"peers\"",
            )
            .about(reference())),
        },
    }
}

/// The text passed on to the target: the sender's object with `from` set.
pub fn stamp(mut message: Map<String, Value>, from: &str) -> String {
    message.insert("from".into(), Value::String(from.to_string()));
    Value::Object(message).to_string()
}

/// `{"from":"<from>",` and the rest of the sender's object as it sent it.
/// Only for a checked object that has no `from` of its own and at least
/// one member (its `type`); `from` is a peer id, which needs no escaping.
fn splice_from(text: &str, from: &str) -> String {
    debug_assert!(is_valid_name(from), "peer ids never need escaping");
    let rest = text.trim_start().strip_prefix('{').unwrap_or(text);
    let mut stamped = String::with_capacity(rest.len() + from.len() + 10);
    stamped.push_str("{\"from\":\"");
    stamped.push_str(from);
    stamped.push_str("\",");
    stamped.push_str(rest);
    stamped
}

/// What `parse_inbound` keeps of a frame.
enum Scanned<'a> {
    Object {
        kind: Field<'a>,
        to: Field<'a>,
        room: Field<'a>,
        names_from: bool,
    },
    /// Valid JSON, but not an object.
    NotObject,
}

/// One member's value, as far as routing cares. Duplicate keys: the last
/// wins, as in a `serde_json::Map` (and in a browser's `JSON.parse`).
#[derive(Default)]
enum Field<'a> {
    #[default]
    Absent,
    /// A string: borrowed from the frame unless it had escapes.
    Str(Cow<'a, str>),
    /// Any other JSON value.
    Other,
}

impl Field<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(text) => Some(text),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scanned<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = Scanned<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scanned<'de>, A::Error> {
                let (mut kind, mut to, mut room, mut names_from) = (Field::Absent, Field::Absent, Field::Absent, false);
                while let Some(key) = map.next_key::<Field>()? {
                    match key.as_str() {
                        Some("type") => kind = map.next_value()?,
                        Some("to") => to = map.next_value()?,
                        Some("room") => room = map.next_value()?,
                        name => {
                            names_from |= name == Some("from");
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(Scanned::Object { kind, to, room, names_from })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scanned<'de>, A::Error> {
                Skip.visit_seq(seq).map(|_| Scanned::NotObject)
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Scanned<'de>, E> {
                Ok(Scanned::NotObject)
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Scanned<'de>, E> {
                Ok(Scanned::NotObject)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Scanned<'de>, E> {
                Ok(Scanned::NotObject)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Scanned<'de>, E> {
                Ok(Scanned::NotObject)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Scanned<'de>, E> {
                Ok(Scanned::NotObject)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Scanned<'de>, E> {
                Ok(Scanned::NotObject)
            }
        }
        deserializer.deserialize_any(Top)
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Member;
        impl<'de> Visitor<'de> for Member {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Borrowed(text)))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Owned(text.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
                Skip.visit_map(map).map(|_| Field::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
                Skip.visit_seq(seq).map(|_| Field::Other)
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
        }
        deserializer.deserialize_any(Member)
    }
}

/// Any JSON value, checked exactly as a `serde_json::Value` would be (every
/// number converted, every escape decoded), and then forgotten. Not
/// `IgnoredAny`: that skips numbers and escapes without checking them, and
/// would let through frames that were refused before.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
    message: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a Reference>,
}

pub fn error(rejection: &Rejection) -> String {
    encode(&ErrorFrame {
        kind: "error",
        code: rejection.code.as_str(),
        message: &rejection.message,
        reference: rejection.reference.as_ref(),
    })
}

#[derive(Serialize)]
struct WelcomeFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    room: &'a str,
    peers: &'a [String],
    #[serde(rename = "iceServers")]
    ice_servers: &'a [IceServer],
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
}

/// One `{"urls":[url]}` per STUN server, ready for `new RTCPeerConnection`.
pub fn ice_servers(stun_servers: &[String]) -> Vec<IceServer> {
    stun_servers.iter().map(|url| IceServer { urls: vec![url.clone()] }).collect()
}

pub fn welcome(id: &str, room: &str, peers: &[String], ice_servers: &[IceServer]) -> String {
    encode(&WelcomeFrame { kind: "welcome", id, room, peers, ice_servers })
}

#[derive(Serialize)]
struct PresenceFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
}

pub fn peer_joined(id: &str) -> String {
    encode(&PresenceFrame { kind: "peer-joined", id })
}

#[derive(Serialize)]
struct DoorOpenedFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    by: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    call: Option<&'a str>,
}

/// To a door station whose door was opened: `{"type":"door-opened","by":..,"call":..}`.
pub fn door_opened(by: &str, call: Option<&str>) -> String {
    encode(&DoorOpenedFrame { kind: "door-opened", by, call })
}

pub fn peer_left(id: &str) -> String {
    encode(&PresenceFrame { kind: "peer-left", id })
}

#[derive(Serialize)]
struct PeersFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    peers: &'a [String],
}

pub fn peers(room: &str, peers: &[String]) -> String {
    encode(&PeersFrame { kind: "peers", room, peers })
}

fn encode(frame: &impl Serialize) -> String {
    // Serializing these structs cannot fail: every field is a string, a
    // number or a list of them.
    serde_json::to_string(frame).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&str, ErrorCode>) {
        match (parse_inbound(text), expected) {
            (Ok(inbound), Ok(want)) => assert_eq!(format!("{inbound:?}"), want, "{text}"),
            (Err(rejection), Err(code)) => {
                assert_eq!(rejection.code, code, "{text}: {rejection:?}")
            }
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn inbound_messages() {
        check(
            r#"{"type":"offer","to":"bob","sdp":"x"}"#,
            Ok(
                r#"Directed { to: "bob", message: Text { text: "{\"type\":\"offer\",\"to\":\"bob\",\"sdp\":\"x\"}", kind: "offer", names_from: false } }"#,
            ),
        );
        check(
            r#"{"type":"chat","to":"*"}"#,
            Ok(
                r#"Broadcast { message: Text { text: "{\"type\":\"chat\",\"to\":\"*\"}", kind: "chat", names_from: false } }"#,
            ),
        );
        check(r#"{"type":"join","room":"kitchen"}"#, Ok(r#"Join { room: "kitchen" }"#));
        check(r#"{"type":"peers"}"#, Ok("Peers"));
        check("{", Err(ErrorCode::BadJson));
        check("", Err(ErrorCode::BadJson));
        check("[1,2]", Err(ErrorCode::BadMessage));
        check("\"offer\"", Err(ErrorCode::BadMessage));
        check(r#"{"to":"bob"}"#, Err(ErrorCode::BadMessage));
        check(r#"{"type":7,"to":"bob"}"#, Err(ErrorCode::BadMessage));
        check(r#"{"type":"offer","to":7}"#, Err(ErrorCode::BadMessage));
        check(r#"{"type":"offer"}"#, Err(ErrorCode::BadMessage));
        check(r#"{"type":"join"}"#, Err(ErrorCode::InvalidRoom));
        check(r#"{"type":"join","room":"../etc"}"#, Err(ErrorCode::InvalidRoom));
    }

    #[test]
    fn stamping_replaces_a_spoofed_from() {
        let Ok(Inbound::Directed { message, .. }) = parse_inbound(r#"{"type":"chat","to":"bob","from":"mallory"}"#)
        else {
            panic!("should parse");
        };
        assert_eq!(message.stamp("alice"), r#"{"from":"alice","to":"bob","type":"chat"}"#);
        // Also when the key is written with an escape.
        let Ok(Inbound::Directed { message, .. }) = parse_inbound(r#"{"type":"chat","to":"bob","fr\u006fm":"x"}"#)
        else {
            panic!("should parse");
        };
        assert_eq!(message.stamp("alice"), r#"{"from":"alice","to":"bob","type":"chat"}"#);
    }

    #[test]
    fn a_message_is_passed_on_as_it_was_sent_with_from_first() {
        let check = |sent: &str, relayed: &str| {
            let Ok(Inbound::Directed { message, .. } | Inbound::Broadcast { message }) = parse_inbound(sent) else {
                panic!("{sent} should parse");
            };
            assert_eq!(message.stamp("alice"), relayed, "{sent}");
        };
        check(
            r#"{"type":"offer","to":"bob","sdp":"v=0\r\n"}"#,
            r#"{"from":"alice","type":"offer","to":"bob","sdp":"v=0\r\n"}"#,
        );
        check(" \n{ \"to\" : \"*\", \"type\":\"x\" } ", r#"{"from":"alice", "to" : "*", "type":"x" } "#);
        check(
            r#"{"type":"x","to":"bob","n":[1,{"from":"nested is not ours"}]}"#,
            r#"{"from":"alice","type":"x","to":"bob","n":[1,{"from":"nested is not ours"}]}"#,
        );
        // Escaped names and values are read for routing and passed on untouched.
        let Ok(Inbound::Directed { to, message }) = parse_inbound(r#"{"typ\u0065":"o\u0066fer","to":"b\u006fb"}"#)
        else {
            panic!("should parse");
        };
        assert_eq!((&*to, message.kind()), ("bob", Some("offer")));
        assert_eq!(message.stamp("alice"), r#"{"from":"alice","typ\u0065":"o\u0066fer","to":"b\u006fb"}"#);
    }

    #[test]
    fn the_same_frames_are_refused_as_by_a_json_value() {
        // What serde_json::Value refuses beyond the grammar, the scan
        // refuses too: numbers out of range, lone surrogates, depth.
        for text in [
            r#"{"type":"x","to":"b","n":1e400}"#,
            r#"{"type":"x","to":"b","s":"\ud800"}"#,
            &format!(r#"{{"type":"x","to":"b","deep":{}1{}}}"#, "[".repeat(200), "]".repeat(200)),
            r#"{"type":"x","to":"b"} {}"#,
            r#"{"type":"x","to":"b","c":"a	b"}"#,
        ] {
            let value = serde_json::from_str::<Value>(text).unwrap_err();
            let rejection = parse_inbound(text).unwrap_err();
            assert_eq!(rejection.code, ErrorCode::BadJson, "{text}");
            assert_eq!(rejection.message, format!("not valid JSON: {value}"), "{text}");
        }
    }

    #[test]
    fn names() {
        assert!(is_valid_name("door-1.front_~X"));
        assert!(is_valid_name(&"a".repeat(64)));
        assert!(!is_valid_name(&"a".repeat(65)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name("é"));
        assert!(!is_valid_name("a/b"));
    }

    #[test]
    fn hello_from_query() {
        let pairs =
            |list: &[(&str, &str)]| list.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect::<Vec<_>>();
        let hello = Hello::from_query(&pairs(&[("id", "door"), ("token", "s3cret")])).unwrap();
        assert_eq!(hello, Hello { id: Some("door".into()), room: "lobby".into(), token: Some("s3cret".into()) });
        assert_eq!(Hello::from_query(&[]).unwrap().id, None);
        let code = |list: &[(&str, &str)]| Hello::from_query(&pairs(list)).unwrap_err().code;
        assert_eq!(code(&[("id", "no spaces")]), ErrorCode::InvalidId);
        assert_eq!(code(&[("room", "a/b")]), ErrorCode::InvalidRoom);
        assert_eq!(code(&[("token", &"t".repeat(129))]), ErrorCode::InvalidToken);
        assert!(Hello::from_query(&pairs(&[("token", &"t".repeat(128))])).is_ok());
        // A broken %-escape is reported against the parameter it broke.
        let broken = |key: &str| Hello::from_query(&[(key.to_string(), None)]).unwrap_err();
        assert_eq!(broken("id").code, ErrorCode::InvalidId);
        assert_eq!(broken("room").code, ErrorCode::InvalidRoom);
        assert_eq!(broken("token").code, ErrorCode::InvalidToken);
        assert_eq!(broken("token").message, "the token has a broken %-escape");
        assert!(Hello::from_query(&[("version".into(), None)]).is_ok(), "other parameters are not read");
    }

    #[test]
    fn error_frames() {
        let rejection = Rejection::new(ErrorCode::UnknownPeer, "no peer \"zed\"")
            .about(Reference { kind: Some("offer".into()), to: Some("zed".into()) });
        assert_eq!(
            error(&rejection),
            r#"{"type":"error","code":"unknown-peer","message":"no peer \"zed\"","ref":{"type":"offer","to":"zed"}}"#
        );
    }
}
