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
    let peers = router
        .peer_list()
        .into_iter()
        .map(|(id, room)| PeerEntry { id, room })
        .collect();
    json(&PeersBody { peers })
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
        let _ = writeln!(out, "# HELP intercomd_{name} {help}\n# TYPE intercomd_{name} {kind}\nintercomd_{name} {value}");
    };
    metric(
        "peers",
        "gauge",
        "Peers connected now.",
        router.peer_count().to_string(),
    );
    metric(
        "rooms",
        "gauge",
        "Rooms with at least one peer.",
        router.room_count().to_string(),
    );
    metric(
        "connections",
        "gauge",
        "TCP connections open now (HTTP and WebSocket).",
        connections.open.to_string(),
    );
    metric(
        "websockets",
        "gauge",
        "WebSocket connections open now.",
        connections.websockets.to_string(),
    );
    metric(
        "connections_accepted_total",
        "counter",
        "TCP connections accepted.",
        connections.accepted.to_string(),
    );
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
    let _ = writeln!(
        out,
        "# HELP intercomd_messages_rejected_total Error messages sent, by code."
    );
    let _ = writeln!(out, "# TYPE intercomd_messages_rejected_total counter");
    for (code, count) in ErrorCode::ALL.iter().zip(router.stats.rejected) {
        let _ = writeln!(
            out,
            "intercomd_messages_rejected_total{{reason=\"{}\"}} {count}",
            code.as_str()
        );
    }
    Response::new(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        out.into_bytes(),
    )
    .with_header("Cache-Control", "no-store")
}

fn json(body: &impl Serialize) -> Response {
    Response::json(200, serde_json::to_string(body).unwrap_or_default())
        .with_header("Cache-Control", "no-store")
}
