//! `/metrics`: the counters it reports, and the Prometheus text.
//!
//! Each number has one owner: the accept loop counts connections here
//! (`Connections`), the hub counts sockets and slow peers, the router
//! counts peers, rooms and messages. `render` only reads them.

use std::cell::Cell;
use std::fmt::Write as _;

use crate::events::Kind;
use crate::feed::{Feed, SinkStats};
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

    /// Accepted and refused since start.
    pub fn totals(&self) -> (u64, u64) {
        (self.accepted.get(), self.refused.get())
    }
}

/// What the hub knows that the router does not.
pub struct Sockets {
    /// WebSocket connections open now, joined or on their way out.
    pub websockets: usize,
    /// Peers dropped because their outgoing queue stayed full.
    pub dropped_slow: u64,
    /// Rings that made no event (`MAX_RINGS_PER_MINUTE`).
    pub rings_suppressed: u64,
    /// Pictures of visitors kept, and their bytes; `None` with
    /// `--no-snapshots` (no series then).
    pub snapshots: Option<(usize, u64)>,
}

/// A per-sink metric: name, type, help, and how to read it.
type SinkFamily = (&'static str, &'static str, &'static str, fn(&SinkStats) -> u64);

/// Prometheus text format, version 0.0.4.
pub fn render(router: &Router, sockets: Sockets, connections: &Connections, feed: &Feed) -> Response {
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
    metric(
        "rings_suppressed_total",
        "counter",
        "Rings that made no event because their caller rang too often.",
        &sockets.rings_suppressed,
    );
    metric("event_streams", "gauge", "Live event streams (GET /api/events) open now.", &feed.stream_count());
    if let Some((count, bytes)) = sockets.snapshots {
        metric("snapshots", "gauge", "Pictures of visitors kept in --state-dir.", &count);
        metric("snapshot_bytes", "gauge", "Bytes of the pictures of visitors kept.", &bytes);
    }
    let _ = writeln!(out, "# HELP intercomd_messages_rejected_total Error messages sent, by code.");
    let _ = writeln!(out, "# TYPE intercomd_messages_rejected_total counter");
    for (code, count) in ErrorCode::ALL.iter().zip(router.stats.rejected) {
        let _ = writeln!(out, "intercomd_messages_rejected_total{{reason=\"{}\"}} {count}", code.as_str());
    }
    let _ = writeln!(out, "# HELP intercomd_events_total Intercom events published, by kind.");
    let _ = writeln!(out, "# TYPE intercomd_events_total counter");
    for (kind, count) in Kind::ALL.iter().zip(feed.published) {
        let _ = writeln!(out, "intercomd_events_total{{event=\"{}\"}} {count}", kind.as_str());
    }
    let sinks: Vec<_> = feed.sinks().collect();
    let families: [SinkFamily; 4] = [
        ("event_sink_up", "gauge", "1 while the sink is connected (MQTT) or its last delivery worked (HTTP).", |s| {
            u64::from(s.up.get())
        }),
        ("event_sink_delivered_total", "counter", "Events the sink delivered.", |s| s.delivered.get()),
        ("event_sink_failed_total", "counter", "Events the sink gave up on after its retries.", |s| s.failed.get()),
        ("event_sink_dropped_total", "counter", "Events lost because the sink's queue was full.", |s| s.dropped.get()),
    ];
    for (name, kind, help, value) in families {
        if sinks.is_empty() {
            break;
        }
        let _ = writeln!(out, "# HELP intercomd_{name} {help}\n# TYPE intercomd_{name} {kind}");
        for sink in &sinks {
            let target = sink.target.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = writeln!(out, "intercomd_{name}{{sink=\"{}\",target=\"{target}\"}} {}", sink.name, value(sink));
        }
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
        let mut feed = Feed::new();
        let webhook = feed.subscribe("webhook", "http://hook.lan/\"x\"".into(), 1);
        webhook.stats.delivered.set(3);
        let sockets = Sockets { websockets: 1, dropped_slow: 7, rings_suppressed: 2, snapshots: Some((3, 4096)) };
        let response = render(&router, sockets, &connections, &feed);
        let text = String::from_utf8(response.body.to_vec()).unwrap();
        for line in [
            "intercomd_peers 0",
            "intercomd_connections 1",
            "intercomd_websockets 1",
            "intercomd_connections_accepted_total 2",
            "intercomd_connections_refused_total 1",
            "intercomd_peers_dropped_slow_total 7",
            "intercomd_messages_rejected_total{reason=\"bad-json\"} 0",
            "intercomd_events_total{event=\"ring\"} 0",
            "intercomd_rings_suppressed_total 2",
            "intercomd_snapshots 3",
            "intercomd_snapshot_bytes 4096",
            "intercomd_event_streams 0",
            "intercomd_event_sink_delivered_total{sink=\"webhook\",target=\"http://hook.lan/\\\"x\\\"\"} 3",
            "intercomd_event_sink_up{sink=\"webhook\",target=\"http://hook.lan/\\\"x\\\"\"} 0",
        ] {
            assert_eq!(text.lines().filter(|l| *l == line).count(), 1, "{line:?} in\n{text}");
        }
    }
}
