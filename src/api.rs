//! The JSON and text endpoints: `/api/ice-servers`, `/api/peers`,
//! `/api/rooms`, `/api/https`, `/api/events`, the CA download, `/healthz`. Each is a pure
//! function from state to a `Response`; `routes.rs` picks which one answers.

use serde::Serialize;

use crate::feed::Feed;
use crate::http::Response;
use crate::protocol::IceServer;
use crate::router::Router;

#[derive(Serialize)]
struct IceServersBody<'a> {
    #[serde(rename = "iceServers")]
    ice_servers: &'a [IceServer],
}

/// `{"iceServers":[{"urls":["stun:.."]}]}`, ready for `new RTCPeerConnection`.
pub fn ice_servers(ice_servers: &[IceServer]) -> Response {
    json(&IceServersBody { ice_servers })
}

#[derive(Serialize)]
struct PeerEntry {
    id: String,
    room: String,
}

#[derive(Serialize)]
struct PeersBody {
    peers: Vec<PeerEntry>,
}

/// `{"peers":[{"id":"door","room":"lobby"}]}`, sorted by id.
pub fn peers(router: &Router) -> Response {
    let peers = router.peer_list().into_iter().map(|(id, room)| PeerEntry { id, room }).collect();
    json(&PeersBody { peers })
}

/// `{"events":[..]}`: the call log after `since`, oldest first (each event
/// exactly as the feed encoded it).
pub fn events(feed: &Feed, since: u64) -> Response {
    let events = feed.log_since(since);
    let mut body = String::with_capacity(16 + events.iter().map(|(_, json)| json.len() + 1).sum::<usize>());
    body.push_str("{\"events\":[");
    for (index, (_, json)) in events.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str(json);
    }
    body.push_str("]}");
    Response::json(200, body).with_header("Cache-Control", "no-store")
}

/// Where the local CA's certificate can be downloaded (DER, the form every
/// phone and desktop installer takes).
pub const CA_CERTIFICATE_PATH: &str = "/intercomd-ca.crt";

/// What a page needs to send people to the secure address: `{"port":8443,
/// "ca":"/intercomd-ca.crt","caFingerprint":"AB:CD:.."}`; `port` is null
/// without an HTTPS listener, `ca` and `caFingerprint` are null unless the
/// daemon made its own certificate authority.
pub fn https(port: Option<u16>, ca_der: Option<&[u8]>) -> Response {
    let fingerprint = ca_der.map(fingerprint);
    let body = serde_json::json!({
        "port": port,
        "ca": ca_der.map(|_| CA_CERTIFICATE_PATH),
        "caFingerprint": fingerprint,
    });
    json(&body)
}

/// SHA-256 of a certificate, as `AB:CD:..`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":")
}

/// The local CA's certificate as a download; 404 when there is none (with
/// `--tls-cert` the user's own CA is theirs to hand out).
pub fn ca_certificate(ca_der: Option<&[u8]>) -> Response {
    match ca_der {
        Some(der) => Response::new(200, "application/x-x509-ca-cert", der.to_vec())
            .with_header("Content-Disposition", "attachment; filename=\"intercomd-ca.crt\"")
            .with_header("Cache-Control", "no-cache"),
        None => {
            Response::text(404, "this intercom serves a certificate of its own (--tls-cert): no local CA to download")
        }
    }
}

/// Bytes of randomness in a fresh room name: 128 bits, so a room's name is
/// its access control (nobody guesses a link shared in a family chat).
const ROOM_NAME_BYTES: usize = 16;

/// `201 {"room":"<fresh name>"}`. Nothing is stored: a room exists while
/// someone is in it, so the name is all there is to hand out.
pub fn new_room(router: &Router) -> Response {
    loop {
        let name = match random_name() {
            Ok(name) => name,
            Err(err) => {
                log::error!("no randomness for a room name: {err}");
                return Response::json_error(500, "the system's random source failed");
            }
        };
        if router.room_members(&name).is_empty() {
            let body = serde_json::json!({ "room": name }).to_string();
            return Response::json(201, body)
                .with_header("Cache-Control", "no-store")
                .with_header("Location", format!("/api/rooms/{name}"));
        }
    }
}

/// A fresh room name from the system's random source.
fn random_name() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; ROOM_NAME_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(room_name(&bytes))
}

/// 26 characters of lower-case base32 (RFC 4648 alphabet, no padding): fits
/// the room alphabet and reads aloud without case mistakes. Written out
/// rather than taken from `data-encoding` (in the tree through tungstenite,
/// for base64): its generic encoder costs 6.6 KB of code for base32, this
/// loop a few hundred bytes; the known-answer tests below hold it to RFC 4648.
fn room_name(bytes: &[u8; ROOM_NAME_BYTES]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut name = String::with_capacity(26);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            name.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        name.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    name
}

#[derive(Serialize)]
struct RoomBody<'a> {
    room: &'a str,
    peers: Vec<String>,
}

/// `{"room":"<room>","peers":[..]}`, empty when nobody is in it.
pub fn room(router: &Router, room: &str) -> Response {
    json(&RoomBody { room, peers: router.room_members(room) })
}

pub fn healthz() -> Response {
    Response::text(200, "ok")
}

fn json(body: &impl Serialize) -> Response {
    Response::json(200, serde_json::to_string(body).unwrap_or_default()).with_header("Cache-Control", "no-store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_rfc_4648_base32_in_lower_case() {
        assert_eq!(room_name(&[0; 16]), "a".repeat(26));
        assert_eq!(room_name(&[0xff; 16]), "77777777777777777777777774");
        // RFC 4648's test vector "foobar" (MZXW6YTBOI), padded with zeros.
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(b"foobar");
        assert_eq!(room_name(&bytes), "mzxw6ytboiaaaaaaaaaaaaaaaa");
        let counting: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(room_name(&counting), "aaaqeayeaudaocajbifqydiob4");
    }

    #[test]
    fn room_names_are_long_valid_and_distinct() {
        let first = random_name().unwrap();
        let second = random_name().unwrap();
        assert_eq!(first.len(), 26);
        assert!(crate::protocol::is_valid_name(&first));
        assert_ne!(first, second);
    }
}
