//! The one surface the router sees of a wire format. No I/O, no state.
//!
//! A peer speaks one `Codec`, chosen by the endpoint it connected to
//! (`routes.rs`). Everything that differs between the formats is a method
//! here: reading the upgrade query, parsing a client frame, and encoding a
//! welcome, a relayed message, an error and presence. The router calls these
//! and never matches on the codec itself, so a third format is a third arm
//! in this file and a file of its own, not a change to the router.
//!
//! Invariants:
//! - The formats themselves live in `protocol.rs` (native) and `peerjs.rs`;
//!   this file only chooses between them.
//! - Presence (`peer-joined`, `peer-left`) exists only in the native format.

use std::rc::Rc;

use crate::peerjs;
use crate::protocol::{self, Hello, IceServer, Inbound, Message, Rejection};

/// The wire format a peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `protocol.rs`: `GET /ws`, JSON objects with `to` and `from`.
    Native,
    /// The PeerServer protocol (`peerjs.rs`), under `--peerjs-path`.
    PeerJs,
}

/// What a welcome tells a peer that just joined.
pub struct Welcome<'a> {
    pub id: &'a str,
    pub room: &'a str,
    /// The other peers of its room, sorted.
    pub peers: &'a [String],
    pub ice_servers: &'a [IceServer],
}

impl Codec {
    /// Its name on the status page.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Native => "native",
            Codec::PeerJs => "peerjs",
        }
    }

    /// Validate the decoded query of the upgrade request. `peerjs_key` is
    /// `--peerjs-key`, which PeerJS clients must give.
    pub fn hello(self, query: &[(String, Option<String>)], peerjs_key: &str) -> Result<Hello, Rejection> {
        match self {
            Codec::Native => Hello::from_query(query),
            Codec::PeerJs => peerjs::hello_from_query(query, peerjs_key),
        }
    }

    /// Decode one text frame from a client. `Ok(None)`: a frame that only
    /// shows the client is alive (a PeerJS `HEARTBEAT`).
    pub fn parse(self, text: &str) -> Result<Option<Inbound<'_>>, Rejection> {
        match self {
            Codec::Native => protocol::parse_inbound(text).map(Some),
            Codec::PeerJs => peerjs::parse_inbound(text),
        }
    }

    /// The first frame a joined peer gets.
    pub fn welcome(self, welcome: &Welcome) -> Rc<str> {
        match self {
            Codec::Native => protocol::welcome(welcome.id, welcome.room, welcome.peers, welcome.ice_servers).into(),
            Codec::PeerJs => peerjs::open().into(),
        }
    }

    /// A directed or room-wide message from `from`, as this codec's peer
    /// receives it.
    pub fn relay(self, message: &Message, from: &str) -> Rc<str> {
        match self {
            Codec::Native => message.stamp(from).into(),
            Codec::PeerJs => peerjs::relay(&message.to_object(), from).into(),
        }
    }

    /// An error for a peer whose id is `me` (empty before it has one).
    pub fn error(self, rejection: &Rejection, me: &str) -> Rc<str> {
        match self {
            Codec::Native => protocol::error(rejection).into(),
            Codec::PeerJs => peerjs::error(rejection, me).into(),
        }
    }

    /// Whether this codec's peers hear who joins and leaves their room.
    pub fn carries_presence(self) -> bool {
        match self {
            Codec::Native => true,
            Codec::PeerJs => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn each_codec_speaks_its_own_format() {
        let welcome = Welcome { id: "door", room: "lobby", peers: &["bob".into()], ice_servers: &[] };
        assert_eq!(
            &*Codec::Native.welcome(&welcome),
            r#"{"type":"welcome","id":"door","room":"lobby","peers":["bob"],"iceServers":[]}"#
        );
        assert_eq!(&*Codec::PeerJs.welcome(&welcome), r#"{"type":"OPEN"}"#);
        // A native sender's message reaches a native peer as it was sent,
        // `from` first, and a PeerJS peer with the rest as its payload.
        let Ok(Some(Inbound::Directed { message, .. })) =
            Codec::Native.parse(r#"{"type":"chat","to":"b","text":"hi"}"#)
        else {
            panic!("a directed message")
        };
        assert_eq!(&*Codec::Native.relay(&message, "a"), r#"{"from":"a","type":"chat","to":"b","text":"hi"}"#);
        assert_eq!(
            &*Codec::PeerJs.relay(&message, "a"),
            r#"{"dst":"b","payload":{"text":"hi"},"src":"a","type":"chat"}"#
        );
        let bad = Rejection::new(ErrorCode::BadJson, "not valid JSON");
        assert_eq!(
            &*Codec::Native.error(&bad, "a"),
            r#"{"type":"error","code":"bad-json","message":"not valid JSON"}"#
        );
        assert_eq!(&*Codec::PeerJs.error(&bad, "a"), r#"{"payload":{"msg":"not valid JSON"},"type":"ERROR"}"#);
        assert_eq!(Codec::Native.parse(r#"{"type":"peers"}"#), Ok(Some(Inbound::Peers)));
        assert_eq!(Codec::PeerJs.parse(r#"{"type":"HEARTBEAT"}"#), Ok(None));
        assert!(Codec::Native.carries_presence());
        assert!(!Codec::PeerJs.carries_presence());
    }

    #[test]
    fn hello_reads_the_query_of_its_endpoint() {
        let query = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect::<Vec<_>>()
        };
        let native = Codec::Native.hello(&query(&[("id", "door")]), "peerjs").unwrap();
        assert_eq!((native.id.as_deref(), native.room.as_str()), (Some("door"), "lobby"));
        let peerjs =
            Codec::PeerJs.hello(&query(&[("key", "peerjs"), ("id", "app"), ("token", "t")]), "peerjs").unwrap();
        assert_eq!((peerjs.id.as_deref(), peerjs.room.as_str()), (Some("app"), peerjs::ROOM));
        assert!(Codec::PeerJs.hello(&query(&[("id", "app"), ("token", "t")]), "peerjs").is_err());
    }
}
