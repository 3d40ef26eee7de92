//! The JSON and text endpoints: `/api/ice-servers`, `/api/peers`,
//! `/healthz`, `/metrics`. Each is a pure function from state to a
//! `Response`; `server.rs` picks which one answers.

use std::fmt::Write as _;

use serde::Serialize;

use crate::http::Response;
use crate::protocol::{ErrorCode, IceServer};
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

/// Where the local CA's certificate can be downloaded (DER, the form every
/// phone and desktop installer takes).
pub const CA_CERTIFICATE_PATH: &str = "/intercomd-ca.crt";

/// What a page needs to send people to the secure address: `{"port":8443,
/// "ca":"/intercomd-ca.crt","caFingerprint":"AB:CD:.."}`; `port` is null
/// without an HTTPS listener, `ca` and `caFingerprint` are null unless the
/// daemon made its own certificate authority.
pub fn https(port: Option<u16>, ca_der: Option<&[u8]>) -> Response {
    let fingerprint = ca_der.map(|der| {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        digest.as_ref().iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":")
    });
    let body = serde_json::json!({
        "port": port,
        "ca": ca_der.map(|_| CA_CERTIFICATE_PATH),
        "caFingerprint": fingerprint,
    });
    json(&body)
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

/// 26 characters of lower-case base32 (RFC 4648 alphabet, no padding): fits
/// the room alphabet and reads aloud without case mistakes.
fn random_name() -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; ROOM_NAME_BYTES];
    getrandom::fill(&mut bytes)?;
    let mut name = String::with_capacity(26);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            name.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        name.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    Ok(name)
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

/// Connection counters kept by the accept loop.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnectionStats {
    /// TCP connections open now (HTTP and WebSocket).
    pub open: usize,
    /// WebSocket connections open now, joined or on their way out.
    pub websockets: usize,
    /// TCP connections accepted since start.
    pub accepted: u64,
    /// TCP connections refused because the connection limit was reached.
    pub refused: u64,
    /// Peers dropped because their outgoing queue stayed full.
    pub dropped_slow: u64,
}

/// Prometheus text format, version 0.0.4.
pub fn metrics(router: &Router, connections: ConnectionStats) -> Response {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ =
            writeln!(out, "# HELP intercomd_{name} {help}\n# TYPE intercomd_{name} {kind}\nintercomd_{name} {value}");
    };
    metric("peers", "gauge", "Peers connected now.", router.peer_count().to_string());
    metric("rooms", "gauge", "Rooms with at least one peer.", router.room_count().to_string());
    metric("connections", "gauge", "TCP connections open now (HTTP and WebSocket).", connections.open.to_string());
    metric("websockets", "gauge", "WebSocket connections open now.", connections.websockets.to_string());
    metric("connections_accepted_total", "counter", "TCP connections accepted.", connections.accepted.to_string());
    metric(
        "connections_refused_total",
        "counter",
        "TCP connections closed at once because the connection limit was reached.",
        connections.refused.to_string(),
    );
    metric(
        "messages_routed_total",
        "counter",
        "Messages passed from one peer to another.",
        router.stats.routed.to_string(),
    );
    metric(
        "peers_dropped_slow_total",
        "counter",
        "Peers disconnected because their outgoing queue stayed full.",
        connections.dropped_slow.to_string(),
    );
    let _ = writeln!(out, "# HELP intercomd_messages_rejected_total Error messages sent, by code.");
    let _ = writeln!(out, "# TYPE intercomd_messages_rejected_total counter");
    for (code, count) in ErrorCode::ALL.iter().zip(router.stats.rejected) {
        let _ = writeln!(out, "intercomd_messages_rejected_total{{reason=\"{}\"}} {count}", code.as_str());
    }
    Response::new(200, "text/plain; version=0.0.4; charset=utf-8", out.into_bytes())
        .with_header("Cache-Control", "no-store")
}

fn json(body: &impl Serialize) -> Response {
    Response::json(200, serde_json::to_string(body).unwrap_or_default()).with_header("Cache-Control", "no-store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_long_valid_and_distinct() {
        let first = random_name().unwrap();
        let second = random_name().unwrap();
        assert_eq!(first.len(), 26);
        assert!(crate::protocol::is_valid_name(&first));
        assert_ne!(first, second);
    }
}
