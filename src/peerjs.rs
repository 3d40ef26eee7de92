//! The PeerJS wire format: a second codec on the same router.
//!
//! Apps written against the PeerJS client library (npm `peerjs`) talk to a
//! PeerServer. This file speaks that server's protocol so such an app works
//! against intercomd unchanged: `new Peer(id, {host, port, path: '/peerjs'})`.
//! It only translates; peers, ids, rooms, limits, holding and bouncing are
//! the router's, shared with native peers. No I/O, no `.await`.
//!
//! The protocol (PeerServer 1.0, client 1.5; `../shared/FIELD-NOTES.md`):
//! - `GET {path}/{key}/id`: a fresh id, as text. `GET {path}/{key}/peers`:
//!   the ids, as a JSON array, when discovery is on.
//! - WebSocket `{path}/peerjs?key=K&id=ID&token=T`: the server answers
//!   `{"type":"OPEN"}`, or `ERROR` / `ID-TAKEN` and closes.
//! - Client frames `{type, dst, payload}`: `OFFER`, `ANSWER`, `CANDIDATE`,
//!   `LEAVE` and `EXPIRE` are relayed as `{type, src, dst, payload}` with
//!   `src` set by the server; `HEARTBEAT` only shows the client is alive.
//! - A message for an id that is not connected earns its sender
//!   `{"type":"EXPIRE","src":<dst>,"dst":<sender>}`.
//!
//! Where intercomd differs (README lists it for users): ids use the native
//! alphabet (`A-Z a-z 0-9 . _ ~ -`, no spaces); the same token takes an id
//! back at once, answered with `OPEN` again; a malformed frame gets an
//! `ERROR` and the relay goes on (the PeerJS client itself gives up on
//! any `ERROR`, but never sends such a frame); a `dst` no id here can be
//! gets `EXPIRE`, not `ERROR`; messages for an id that is away or not yet
//! connected are held for `--reconnect-grace`, bounded, then expire.

use serde_json::{json, Map, Value};

use crate::protocol::{
    is_valid_name, is_valid_token, query_value, ErrorCode, Hello, Inbound, Message, Reference, Rejection,
};

/// The room every PeerJS peer is in. PeerJS has no rooms; one shared room
/// keeps PeerJS ids visible to each other (discovery) and in `/api/peers`,
/// and its presence messages go only to native peers who join it.
pub const ROOM: &str = "peerjs";

/// The message types a client may relay to another.
const RELAYED: [&str; 5] = ["OFFER", "ANSWER", "CANDIDATE", "LEAVE", "EXPIRE"];

/// The hello of `GET {path}/peerjs?key=&id=&token=`. `key` is the
/// configured `--peerjs-key`.
pub fn hello_from_query(pairs: &[(String, Option<String>)], key: &str) -> Result<Hello, Rejection> {
    let get = |name: &str, code| query_value(pairs, name, code).map(|value| value.filter(|v| !v.is_empty()));
    if get("key", ErrorCode::InvalidToken)? != Some(key) {
        return Err(Rejection::new(ErrorCode::InvalidToken, "Invalid key provided"));
    }
    let (Some(id), Some(token)) = (get("id", ErrorCode::InvalidId)?, get("token", ErrorCode::InvalidToken)?) else {
        return Err(Rejection::new(ErrorCode::InvalidId, "No id, token, or key supplied to websocket server"));
    };
    if !is_valid_name(id) {
        return Err(Rejection::new(ErrorCode::InvalidId, "an id is 1 to 64 characters of A-Z a-z 0-9 . _ ~ -"));
    }
    if !is_valid_token(token) {
        return Err(Rejection::new(ErrorCode::InvalidToken, "a token is at most 128 bytes of printable characters"));
    }
    Ok(Hello { id: Some(id.to_string()), room: ROOM.to_string(), token: Some(token.to_string()) })
}

/// Decode one client frame. `Ok(None)`: nothing to do (`HEARTBEAT`).
pub fn parse_inbound(text: &str) -> Result<Option<Inbound<'static>>, Rejection> {
    let value: Value = serde_json::from_str(text)
        .map_err(|error| Rejection::new(ErrorCode::BadJson, format!("not valid JSON: {error}")))?;
    let Value::Object(mut frame) = value else {
        return Err(Rejection::new(ErrorCode::BadMessage, "a message is a JSON object"));
    };
    let kind = match frame.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        _ => return Err(Rejection::new(ErrorCode::BadMessage, "a message needs a string \"type\"")),
    };
    if kind == "HEARTBEAT" {
        return Ok(None);
    }
    if !RELAYED.contains(&kind.as_str()) {
        return Err(Rejection::new(ErrorCode::BadMessage, format!("message type {kind:?} is not relayed")));
    }
    let to = match frame.get("dst") {
        Some(Value::String(dst)) if is_valid_name(dst) => dst.clone(),
        // An id no peer can have here (PeerJS allows spaces, say): the peer
        // is unavailable (`EXPIRE`), which the client takes as such for that
        // one connection. An `ERROR` would make it give up on the server.
        Some(Value::String(dst)) => {
            let reference = Reference { kind: Some(kind), to: Some(dst.clone()) };
            return Err(
                Rejection::new(ErrorCode::UnknownPeer, format!("no peer can be called {dst:?}")).about(reference)
            );
        }
        _ => return Err(Rejection::new(ErrorCode::BadMessage, format!("{kind} needs a \"dst\" id"))),
    };
    // The router's form of a directed message; `src` is the server's to set.
    let mut message = Map::new();
    message.insert("type".into(), Value::String(kind));
    message.insert("to".into(), Value::String(to.clone()));
    message.insert("payload".into(), frame.remove("payload").unwrap_or(Value::Null));
    Ok(Some(Inbound::Directed { to: to.into(), message: Message::Object(message) }))
}

/// A directed message from `from` as a PeerJS client receives it. A native
/// sender's message without `payload` travels whole as the payload.
pub fn relay(message: &Map<String, Value>, from: &str) -> String {
    let payload = message.get("payload").cloned().unwrap_or_else(|| {
        let rest: Map<String, Value> = message
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "type" | "to" | "from"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Value::Object(rest)
    });
    json!({
        "type": message.get("type").cloned().unwrap_or(Value::Null),
        "src": from,
        "dst": message.get("to").cloned().unwrap_or(Value::Null),
        "payload": payload,
    })
    .to_string()
}

/// What a PeerJS client is told when something went wrong; `me` is its id
/// (empty before it has one).
pub fn error(rejection: &Rejection, me: &str) -> String {
    let about = rejection.reference.as_ref().and_then(|reference| reference.to.as_deref());
    match (rejection.code, about) {
        // The client turns EXPIRE into its `peer-unavailable` error.
        (ErrorCode::UnknownPeer | ErrorCode::PeerUnavailable, Some(to)) => {
            json!({"type": "EXPIRE", "src": to, "dst": me}).to_string()
        }
        (ErrorCode::IdTaken, _) => json!({"type": "ID-TAKEN", "payload": {"msg": "ID is taken"}}).to_string(),
        _ => json!({"type": "ERROR", "payload": {"msg": rejection.message}}).to_string(),
    }
}

/// The welcome: the client fires its `open` event on it.
pub fn open() -> String {
    r#"{"type":"OPEN"}"#.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        query.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect()
    }

    #[test]
    fn hello_needs_the_key_an_id_and_a_token() {
        let ok = hello_from_query(
            &pairs(&[("key", "peerjs"), ("id", "a"), ("token", "t1"), ("version", "1.5.5")]),
            "peerjs",
        );
        let hello = ok.unwrap();
        assert_eq!((hello.id.as_deref(), hello.room.as_str()), (Some("a"), ROOM));
        for (query, says) in [
            (&[("key", "other"), ("id", "a"), ("token", "t")][..], "Invalid key"),
            (&[("id", "a"), ("token", "t")], "Invalid key"),
            (&[("key", "peerjs"), ("token", "t")], "No id"),
            (&[("key", "peerjs"), ("id", "a")], "No id"),
            (&[("key", "peerjs"), ("id", "a b"), ("token", "t")], "an id is"),
        ] {
            let error = hello_from_query(&pairs(query), "peerjs").unwrap_err();
            assert!(error.message.contains(says), "{query:?}: {error:?}");
        }
    }

    #[test]
    fn frames_become_directed_messages_and_heartbeats_nothing() {
        assert_eq!(parse_inbound(r#"{"type":"HEARTBEAT"}"#).unwrap(), None);
        let Some(Inbound::Directed { to, message: Message::Object(message) }) =
            parse_inbound(r#"{"type":"OFFER","dst":"b","src":"forged","payload":{"sdp":"x"}}"#).unwrap()
        else {
            panic!("a directed message")
        };
        assert_eq!(to, "b");
        assert_eq!(Value::Object(message.clone()), json!({"type":"OFFER","to":"b","payload":{"sdp":"x"}}));
        let relayed: Value = serde_json::from_str(&relay(&message, "a")).unwrap();
        assert_eq!(relayed, json!({"type":"OFFER","src":"a","dst":"b","payload":{"sdp":"x"}}));
        for (frame, code) in [
            ("nope", ErrorCode::BadJson),
            ("[]", ErrorCode::BadMessage),
            (r#"{"dst":"b"}"#, ErrorCode::BadMessage),
            (r#"{"type":"OPEN","dst":"b"}"#, ErrorCode::BadMessage),
            (r#"{"type":"OFFER"}"#, ErrorCode::BadMessage),
            (r#"{"type":"OFFER","dst":7}"#, ErrorCode::BadMessage),
            (r#"{"type":"OFFER","dst":"with space"}"#, ErrorCode::UnknownPeer),
        ] {
            assert_eq!(parse_inbound(frame).unwrap_err().code, code, "{frame}");
        }
    }

    #[test]
    fn native_messages_reach_peerjs_clients_whole_in_the_payload() {
        let message = json!({"type":"chat","to":"pj","text":"hi"}).as_object().unwrap().clone();
        let relayed: Value = serde_json::from_str(&relay(&message, "door")).unwrap();
        assert_eq!(relayed, json!({"type":"chat","src":"door","dst":"pj","payload":{"text":"hi"}}));
    }

    #[test]
    fn errors_become_expire_id_taken_or_error() {
        let reference = Reference { kind: Some("OFFER".into()), to: Some("b".into()) };
        let gone = Rejection::new(ErrorCode::PeerUnavailable, "gone").about(reference);
        assert_eq!(error(&gone, "a"), r#"{"dst":"a","src":"b","type":"EXPIRE"}"#);
        let taken = Rejection::new(ErrorCode::IdTaken, "taken");
        assert_eq!(serde_json::from_str::<Value>(&error(&taken, "")).unwrap()["type"], "ID-TAKEN");
        let bad = Rejection::new(ErrorCode::BadJson, "not valid JSON");
        assert_eq!(error(&bad, "a"), r#"{"payload":{"msg":"not valid JSON"},"type":"ERROR"}"#);
    }
}
