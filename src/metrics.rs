//! `/metrics`: the counters it reports, and the Prometheus text.
//!
//! Each number has one owner: the accept loop counts connections here
//! (`Connections`), the hub counts sockets and slow peers, the router
//! counts peers, rooms and messages. `render` only reads them.

use std::cell::Cell;
use std::fmt::Write as _;

use crate::http::Response;
use crate::protocol::ErrorCode;
use crate::router::Router;

/// TCP connections, counted by the accept loop.
#[derive(Debug, Default)]
pub struct Connections {
    /// Open now (HTTP and WebSocket); also the connection cap's count.
    open: Cell<usize>,
    /// Accepted since start.
    accepted: Cell<u64>,
    /// Closed at once because a connection limit was reached.
    refused: Cell<u64>,
}

impl Connections {
    pub fn open(&self) -> usize {
        self.open.get()
    }

    pub fn accepted(&self) {
        self.open.set(self.open.get() + 1);
        self.accepted.set(self.accepted.get() + 1);
    }

    pub fn closed(&self) {
        self.open.set(self.open.get() - 1);
    }

    pub fn refused(&self) {
        self.refused.set(self.refused.get() + 1);
    }
}

/// What the hub knows that the router does not.
pub struct Sockets {
    /// WebSocket connections open now, joined or on their way out.
    pub websockets: usize,
    /// Peers dropped because their outgoing queue stayed full.
    pub dropped_slow: u64,
}

/// Prometheus text format, version 0.0.4.
pub fn render(router: &Router, sockets: Sockets, connections: &Connections) -> Response {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: &dyn std::fmt::Display| {
        let _ =
            writeln!(out, "# HELP intercomd_{name} {help}\n# TYPE intercomd_{name} {kind}\nintercomd_{name} {value}");
    };
    metric("peers", "gauge", "Peers connected now.", &router.peer_count());
    metric("rooms", "gauge", "Rooms with at least one peer.", &router.room_count());
    metric("connections", "gauge", "TCP connections open now (HTTP and WebSocket).", &connections.open.get());
    metric("websockets", "gauge", "WebSocket connections open now.", &sockets.websockets);
    metric("connections_accepted_total", "counter", "TCP connections accepted.", &connections.accepted.get());
    metric(
        "connections_refused_total",
        "counter",
        "TCP connections closed at once because the connection limit was reached.",
        &connections.refused.get(),
    );
    metric("messages_routed_total", "counter", "Messages passed from one peer to another.", &router.stats.routed);
    metric(
        "peers_dropped_slow_total",
        "counter",
        "Peers disconnected because their outgoing queue stayed full.",
        &sockets.dropped_slow,
    );
    let _ = writeln!(out, "# HELP intercomd_messages_rejected_total Error messages sent, by code.");
    let _ = writeln!(out, "# TYPE intercomd_messages_rejected_total counter");
    for (code, count) in ErrorCode::ALL.iter().zip(router.stats.rejected) {
        let _ = writeln!(out, "intercomd_messages_rejected_total{{reason=\"{}\"}} {count}", code.as_str());
    }
    Response::new(200, "text/plain; version=0.0.4; charset=utf-8", out.into_bytes())
        .with_header("Cache-Control", "no-store")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::router::Limits;

    #[test]
    fn every_counter_is_reported_once_under_its_name() {
        let limits =
            Limits { max_peers: 1, max_rate: 0, max_rooms: 1, max_room_peers: 1, reconnect_grace: Duration::ZERO };
        let router = Router::new(limits, Vec::new());
        let connections = Connections::default();
        connections.accepted();
        connections.accepted();
        connections.closed();
        connections.refused();
        let response = render(&router, Sockets { websockets: 1, dropped_slow: 7 }, &connections);
        let text = String::from_utf8(response.body.to_vec()).unwrap();
        for line in [
            "intercomd_peers 0",
            "intercomd_connections 1",
            "intercomd_websockets 1",
            "intercomd_connections_accepted_total 2",
            "intercomd_connections_refused_total 1",
            "intercomd_peers_dropped_slow_total 7",
            "intercomd_messages_rejected_total{reason=\"bad-json\"} 0",
        ] {
            assert_eq!(text.lines().filter(|l| *l == line).count(), 1, "{line:?} in\n{text}");
        }
    }
}
