//! `/api/status`: everything the status page shows, in one JSON document,
//! made only when someone asks (the page asks twice a second while it is
//! visible, and never while hidden). A pure function of what `routes` hands
//! it: it imports no socket, no certificate and no outbox.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use serde_json::Value;

use crate::events::rfc3339;
use crate::feed::Feed;
use crate::http::Response;
use crate::metrics::{Connections, Sockets};
use crate::outbox::Link;
use crate::protocol::ErrorCode;
use crate::router::{ConnId, Router};

/// The call log's newest events the status page lists.
pub const RECENT_EVENTS: usize = 10;

/// What the status page reads that the router, the feed and the counters
/// do not hold.
pub struct Daemon<'a> {
    pub started_unix_ms: u64,
    pub now_unix_ms: u64,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    /// The machine's addresses, without loopback and link-local ones.
    pub addresses: Vec<IpAddr>,
    pub certificate: Option<Certificate<'a>>,
}

/// The HTTPS certificate, as far as the daemon made it.
pub struct Certificate<'a> {
    /// SHA-256 of the local CA, `None` with `--tls-cert`.
    pub ca_fingerprint: Option<String>,
    /// The names in the generated server certificate, its end and when it
    /// is renewed (Unix seconds); empty and `None` with `--tls-cert`.
    pub names: &'a [String],
    pub not_after: Option<i64>,
    pub renews_at: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    version: &'static str,
    started: String,
    uptime_seconds: u64,
    listen: Listen,
    /// Where a phone on the LAN opens the pages.
    urls: Urls,
    peers: Vec<Peer<'a>>,
    rooms: Vec<Room<'a>>,
    counters: Counters,
    certificate: Option<CertificateBody<'a>>,
    sinks: Vec<Sink<'a>>,
    /// Newest last, exactly as the call log holds them.
    events: Vec<Value>,
}

#[derive(Serialize)]
struct Listen {
    http: String,
    https: Option<String>,
}

#[derive(Serialize)]
struct Urls {
    http: Vec<String>,
    https: Vec<String>,
}

#[derive(Serialize)]
struct Peer<'a> {
    id: &'a str,
    room: &'a str,
    /// `native` or `peerjs`.
    protocol: &'static str,
    /// `ws` or `wss`; `null` while away.
    transport: Option<&'static str>,
    address: Option<String>,
    since: Option<String>,
    away: bool,
}

#[derive(Serialize)]
struct Room<'a> {
    room: &'a str,
    peers: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Counters {
    peers: usize,
    rooms: usize,
    connections: usize,
    websockets: usize,
    connections_accepted: u64,
    connections_refused: u64,
    messages_routed: u64,
    /// By error code.
    messages_refused: BTreeMap<&'static str, u64>,
    peers_dropped_slow: u64,
    rings_suppressed: u64,
    event_streams: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CertificateBody<'a> {
    ca_fingerprint: Option<String>,
    names: &'a [String],
    not_after: Option<String>,
    renews_at: Option<String>,
}

#[derive(Serialize)]
struct Sink<'a> {
    sink: &'static str,
    target: &'a str,
    up: bool,
    delivered: u64,
    failed: u64,
    dropped: u64,
}

/// The status document. `link` says where an open socket comes from.
pub fn render(
    daemon: Daemon<'_>,
    router: &Router,
    link: impl Fn(ConnId) -> Option<Link>,
    sockets: Sockets,
    connections: &Connections,
    feed: &Feed,
) -> Response {
    let peers = router
        .peer_states()
        .into_iter()
        .map(|peer| {
            let link = if peer.away { None } else { link(peer.conn) };
            Peer {
                id: peer.id,
                room: peer.room,
                protocol: peer.codec.name(),
                transport: link.as_ref().map(|link| if link.tls { "wss" } else { "ws" }),
                address: link.as_ref().map(|link| link.address.to_string()),
                since: link.as_ref().map(|link| rfc3339(link.since_unix_ms)),
                away: peer.away,
            }
        })
        .collect();
    let rooms = router.room_sizes().into_iter().map(|(room, peers)| Room { room, peers }).collect();
    let counters = Counters {
        peers: router.peer_count(),
        rooms: router.room_count(),
        connections: connections.open(),
        websockets: sockets.websockets,
        connections_accepted: connections.totals().0,
        connections_refused: connections.totals().1,
        messages_routed: router.stats.routed,
        messages_refused: ErrorCode::ALL.iter().map(|code| code.as_str()).zip(router.stats.rejected).collect(),
        peers_dropped_slow: sockets.dropped_slow,
        rings_suppressed: sockets.rings_suppressed,
        event_streams: feed.stream_count(),
    };
    let certificate = daemon.certificate.map(|certificate| CertificateBody {
        ca_fingerprint: certificate.ca_fingerprint,
        names: certificate.names,
        not_after: certificate.not_after.map(unix_seconds),
        renews_at: certificate.renews_at.map(unix_seconds),
    });
    let sinks = feed
        .sinks()
        .map(|sink| Sink {
            sink: sink.name,
            target: &sink.target,
            up: sink.up.get(),
            delivered: sink.delivered.get(),
            failed: sink.failed.get(),
            dropped: sink.dropped.get(),
        })
        .collect();
    let log = feed.log();
    let skip = log.len().saturating_sub(RECENT_EVENTS);
    // The log holds the JSON every consumer got; anything else is a bug
    // upstream, and is left out rather than breaking the page.
    let events = log.skip(skip).filter_map(|json| serde_json::from_str(json).ok()).collect();
    let body = Body {
        version: env!("CARGO_PKG_VERSION"),
        started: rfc3339(daemon.started_unix_ms),
        uptime_seconds: daemon.now_unix_ms.saturating_sub(daemon.started_unix_ms) / 1000,
        listen: Listen { http: daemon.http.to_string(), https: daemon.https.map(|address| address.to_string()) },
        urls: Urls {
            http: urls("http", daemon.http, &daemon.addresses),
            https: daemon.https.map_or_else(Vec::new, |https| urls("https", https, &daemon.addresses)),
        },
        peers,
        rooms,
        counters,
        certificate,
        sinks,
        events,
    };
    match serde_json::to_string(&body) {
        Ok(json) => Response::json(200, json).with_header("Cache-Control", "no-store"),
        Err(_) => Response::json_error(500, "the status could not be encoded"),
    }
}

fn unix_seconds(seconds: i64) -> String {
    rfc3339(u64::try_from(seconds).unwrap_or(0) * 1000)
}

/// The pages' addresses on a listener: on each of the machine's addresses
/// that a phone could use (IPv4 first) when it listens on all of them, else
/// the one it listens on.
fn urls(scheme: &str, listen: SocketAddr, machine: &[IpAddr]) -> Vec<String> {
    let mut addresses: Vec<IpAddr> = match listen.ip() {
        // `[::]` takes IPv4 as well; `0.0.0.0` only IPv4.
        IpAddr::V6(any) if any.is_unspecified() => machine.iter().copied().filter(reachable).collect(),
        IpAddr::V4(any) if any.is_unspecified() => {
            machine.iter().copied().filter(|a| a.is_ipv4() && reachable(a)).collect()
        }
        one => vec![one],
    };
    addresses.sort_by_key(|address| (address.is_ipv6(), *address));
    addresses.dedup();
    let port = listen.port();
    addresses
        .iter()
        .map(|address| match address {
            IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}/"),
            IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}/"),
        })
        .collect()
}

/// An address a phone on the LAN could use: not loopback, not link-local.
fn reachable(address: &IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_the_addresses_a_phone_can_use() {
        let addresses: Vec<IpAddr> =
            ["fd00::5", "192.168.1.20", "127.0.0.1", "fe80::1", "169.254.3.4", "::1", "192.168.1.20"]
                .iter()
                .map(|address| address.parse().unwrap())
                .collect();
        let any: SocketAddr = "[::]:8080".parse().unwrap();
        assert_eq!(urls("http", any, &addresses), ["http://192.168.1.20:8080/", "http://[fd00::5]:8080/"]);
        let v4: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        assert_eq!(urls("https", v4, &addresses), ["https://192.168.1.20:8443/"]);
        let one: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(urls("http", one, &addresses), ["http://127.0.0.1:8080/"], "the one address it listens on");
    }
}
