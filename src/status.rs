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
    /// Where a phone that scans the status page's QR code goes (`onboard`).
    pub onboard: String,
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
    out.push_str("},\"onboard\":");
    push_json_string(&mut out, &daemon.onboard);
    out.push_str(",\"urls\":{\"http\":");
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
    let port = listen.port();
    phone_addresses(listen, machine)
        .iter()
        .map(|address| match address {
            IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}/"),
            IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}/"),
        })
        .collect()
}

/// The addresses of a listener a phone could use, IPv4 first: the machine's
/// when it listens on all of them, else the one it listens on.
fn phone_addresses(listen: SocketAddr, machine: &[IpAddr]) -> Vec<IpAddr> {
    let any = match listen.ip() {
        // `[::]` takes IPv4 as well; `0.0.0.0` only IPv4.
        IpAddr::V6(any) if any.is_unspecified() => true,
        IpAddr::V4(any) if any.is_unspecified() => false,
        one => return vec![one],
    };
    // IPv4 first, then IPv6, each once; a machine has a handful, so no sort.
    let mut addresses = Vec::new();
    for v6 in [false, true] {
        for address in machine.iter().filter(|a| a.is_ipv6() == v6 && reachable(a) && (any || !v6)) {
            if !addresses.contains(address) {
                addresses.push(*address);
            }
        }
    }
    addresses
}

/// Where a phone that scans the pages' QR code is sent, for a page asked for
/// by `host` (its `Host` header): the trust page in its onboarding mode
/// (`http://H:P/trust.html?onboard`, which goes on to the https intercom by
/// itself once the phone trusts the local CA) when the daemon made its own
/// CA; the https intercom with a certificate of the user's own; the plain
/// intercom without an HTTPS listener. H is the host the page was opened by,
/// unless that is loopback (the installer at the Pi itself): then the first
/// address a phone can use, if the machine has one.
pub fn onboard(host: Option<&str>, http: SocketAddr, https: Option<(u16, bool)>, machine: &[IpAddr]) -> String {
    let asked = host.map(host_name).filter(|name| !name.is_empty() && !is_loopback(name));
    let name = match asked {
        Some(name) => name.to_string(),
        None => match phone_addresses(http, machine).first() {
            Some(IpAddr::V4(v4)) => v4.to_string(),
            Some(IpAddr::V6(v6)) => format!("[{v6}]"),
            None => host.map_or_else(|| "localhost".to_string(), |host| host_name(host).to_string()),
        },
    };
    match https {
        Some((_, true)) => format!("http://{name}:{}/trust.html?onboard", http.port()),
        Some((port, false)) => format!("https://{name}:{port}/"),
        None => format!("http://{name}:{}/", http.port()),
    }
}

/// The host of a `Host` header: without its port, an IPv6 address keeping
/// its brackets.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    match host.strip_prefix('[') {
        Some(rest) => rest.find(']').map_or(host, |end| &host[..end + 2]),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    }
}

fn is_loopback(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>().is_ok_and(|address| address.is_loopback())
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

    #[test]
    fn a_scan_goes_to_the_trust_page_on_an_address_a_phone_can_use() {
        let machine: Vec<IpAddr> =
            ["fd00::5", "192.168.1.20", "127.0.0.1"].iter().map(|a| a.parse().unwrap()).collect();
        let any: SocketAddr = "[::]:8080".parse().unwrap();
        let own_ca = Some((8443, true));
        // The host the page was opened by, whatever its form.
        for (host, name) in [
            ("raspberrypi.local:8080", "raspberrypi.local"),
            ("raspberrypi.local", "raspberrypi.local"),
            ("192.168.1.20:8443", "192.168.1.20"),
            ("[fd00::5]:8080", "[fd00::5]"),
        ] {
            assert_eq!(onboard(Some(host), any, own_ca, &machine), format!("http://{name}:8080/trust.html?onboard"));
        }
        // Opened at the Pi itself: an address a phone can reach instead.
        for host in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "intercom.localhost", ""] {
            assert_eq!(
                onboard(Some(host), any, own_ca, &machine),
                "http://192.168.1.20:8080/trust.html?onboard",
                "{host}"
            );
        }
        assert_eq!(onboard(None, any, own_ca, &machine), "http://192.168.1.20:8080/trust.html?onboard");
        // Nothing better than loopback: loopback, as asked.
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(onboard(Some("127.0.0.1:8080"), lo, own_ca, &machine), "http://127.0.0.1:8080/trust.html?onboard");
        assert_eq!(onboard(Some("localhost:8080"), any, own_ca, &[]), "http://localhost:8080/trust.html?onboard");
        // A certificate of the user's own needs no trust page; no HTTPS, nothing to trust.
        assert_eq!(onboard(Some("pi.lan"), any, Some((443, false)), &machine), "https://pi.lan:443/");
        assert_eq!(onboard(Some("pi.lan"), any, None, &machine), "http://pi.lan:8080/");
    }
}
