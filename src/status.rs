//! `/api/status`: everything the status page shows, in one JSON document,
//! made only when someone asks (the page asks twice a second while it is
//! visible, and never while hidden). A pure function of what `routes` hands
//! it: it imports no socket, no certificate and no outbox.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::events::{push_json_string, rfc3339};
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

/// The status document. `link` says where an open socket comes from.
/// Written by hand, as the events are: serde's serializer for these shapes
/// cost 30 KiB of binary.
pub fn render(
    daemon: Daemon<'_>,
    router: &Router,
    link: impl Fn(ConnId) -> Option<Link>,
    sockets: Sockets,
    connections: &Connections,
    feed: &Feed,
) -> Response {
    let mut out = String::with_capacity(2048);
    let uptime = daemon.now_unix_ms.saturating_sub(daemon.started_unix_ms) / 1000;
    let _ = write!(
        out,
        "{{\"version\":\"{}\",\"started\":\"{}\",\"uptimeSeconds\":{uptime},\"listen\":{{\"http\":\"{}\",\"https\":",
        env!("CARGO_PKG_VERSION"),
        rfc3339(daemon.started_unix_ms),
        daemon.http,
    );
    match daemon.https {
        Some(https) => _ = write!(out, "\"{https}\""),
        None => out.push_str("null"),
    }
    out.push_str("},\"urls\":{\"http\":");
    strings(&mut out, urls("http", daemon.http, &daemon.addresses));
    out.push_str(",\"https\":");
    strings(&mut out, daemon.https.map_or_else(Vec::new, |https| urls("https", https, &daemon.addresses)));

    out.push_str("},\"peers\":[");
    for (index, peer) in router.peer_states().into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        push_json_string(&mut out, peer.id);
        out.push_str(",\"room\":");
        push_json_string(&mut out, peer.room);
        let _ = write!(out, ",\"protocol\":\"{}\",", peer.codec.name());
        match if peer.away { None } else { link(peer.conn) } {
            Some(link) => {
                let transport = if link.tls { "wss" } else { "ws" };
                let since = rfc3339(link.since_unix_ms);
                let _ =
                    write!(out, "\"transport\":\"{transport}\",\"address\":\"{}\",\"since\":\"{since}\"", link.address);
            }
            None => out.push_str("\"transport\":null,\"address\":null,\"since\":null"),
        }
        let _ = write!(out, ",\"away\":{}}}", peer.away);
    }
    out.push_str("],\"rooms\":[");
    for (index, (room, peers)) in router.room_sizes().into_iter().enumerate() {
        out.push_str(if index > 0 { ",{\"room\":" } else { "{\"room\":" });
        push_json_string(&mut out, room);
        let _ = write!(out, ",\"peers\":{peers}}}");
    }

    let (accepted, refused) = connections.totals();
    let _ = write!(
        out,
        "],\"counters\":{{\"peers\":{},\"rooms\":{},\"connections\":{},\"websockets\":{},\
         \"connectionsAccepted\":{accepted},\"connectionsRefused\":{refused},\"messagesRouted\":{},\
         \"messagesRefused\":{{",
        router.peer_count(),
        router.room_count(),
        connections.open(),
        sockets.websockets,
        router.stats.routed,
    );
    for (index, (code, count)) in ErrorCode::ALL.iter().zip(router.stats.rejected).enumerate() {
        let comma = if index > 0 { "," } else { "" };
        let _ = write!(out, "{comma}\"{}\":{count}", code.as_str());
    }
    let _ = write!(
        out,
        "}},\"peersDroppedSlow\":{},\"ringsSuppressed\":{},\"eventStreams\":{}}},\"certificate\":",
        sockets.dropped_slow,
        sockets.rings_suppressed,
        feed.stream_count(),
    );

    match daemon.certificate {
        None => out.push_str("null"),
        Some(certificate) => {
            out.push_str("{\"caFingerprint\":");
            optional(&mut out, certificate.ca_fingerprint);
            out.push_str(",\"names\":");
            strings(&mut out, certificate.names.to_vec());
            out.push_str(",\"notAfter\":");
            optional(&mut out, certificate.not_after.map(unix_seconds));
            out.push_str(",\"renewsAt\":");
            optional(&mut out, certificate.renews_at.map(unix_seconds));
            out.push('}');
        }
    }

    out.push_str(",\"sinks\":[");
    for (index, sink) in feed.sinks().enumerate() {
        let comma = if index > 0 { "," } else { "" };
        let _ = write!(out, "{comma}{{\"sink\":\"{}\",\"target\":", sink.name);
        push_json_string(&mut out, &sink.target);
        let _ = write!(
            out,
            ",\"up\":{},\"delivered\":{},\"failed\":{},\"dropped\":{}}}",
            sink.up.get(),
            sink.delivered.get(),
            sink.failed.get(),
            sink.dropped.get(),
        );
    }
    // The log holds each event as the JSON every consumer got.
    out.push_str("],\"events\":[");
    let log = feed.log();
    let skip = log.len().saturating_sub(RECENT_EVENTS);
    for (index, json) in log.skip(skip).enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(json);
    }
    out.push_str("]}");
    Response::json(200, out).with_header("Cache-Control", "no-store")
}

/// A JSON array of strings.
fn strings(out: &mut String, list: Vec<String>) {
    out.push('[');
    for (index, text) in list.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_json_string(out, text);
    }
    out.push(']');
}

/// A JSON string, or `null`.
fn optional(out: &mut String, text: Option<String>) {
    match text {
        Some(text) => push_json_string(out, &text),
        None => out.push_str("null"),
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
