//! Request to endpoint: which answer a request gets, or which WebSocket
//! codec it upgrades to. Pure: it reads the daemon's state through a
//! [`View`] and returns a `Response`; `conn.rs` does the reading and writing.
//!
//! Invariants:
//! - Every endpoint is in [`Endpoint::of`]; a path it does not know is a
//!   page (`static_files`), or a JSON 404 under `/api/`.
//! - Only the JSON API and the PeerJS HTTP endpoints carry CORS headers,
//!   and only for `--allow-origin` origins.

use std::net::{IpAddr, SocketAddr};

use crate::api;
use crate::codec::Codec;
use crate::config::Config;
use crate::feed::Feed;
use crate::http::{self, Request, Response};
use crate::hub::{self, Hub};
use crate::metrics::{self, Connections, Sockets};
use crate::peerjs;
use crate::protocol;
use crate::static_files;
use crate::status;

/// What `respond` may read.
pub struct View<'a> {
    pub config: &'a Config,
    pub hub: &'a Hub,
    pub feed: &'a Feed,
    pub connections: &'a Connections,
    /// The HTTPS listener's port and the local CA (DER), if there is one.
    pub https: Option<Https<'a>>,
    /// For the status page.
    pub started_unix_ms: u64,
    pub http_address: SocketAddr,
    /// The machine's addresses (asked only for the status page).
    pub interface_addresses: fn() -> Vec<IpAddr>,
}

pub struct Https<'a> {
    pub address: SocketAddr,
    pub port: u16,
    /// `None` with `--tls-cert`: the user's own CA is theirs to hand out.
    pub ca_der: Option<&'a [u8]>,
    /// The generated server certificate's names, its end and when it is
    /// renewed (Unix seconds); `None` with `--tls-cert`.
    pub generated: Option<(&'a [String], i64, i64)>,
}

/// The WebSocket endpoint `path` is, if any: `/ws` (native) or
/// `<--peerjs-path>/peerjs`.
pub fn websocket(path: &str, config: &Config) -> Option<Codec> {
    if path == "/ws" {
        return Some(Codec::Native);
    }
    (path.strip_prefix(config.peerjs.path.as_str()) == Some("/peerjs")).then_some(Codec::PeerJs)
}

/// Whether `request` asks for the live event stream (`GET /api/events`
/// with `Accept: text/event-stream`, as `EventSource` sends): `Ok` with
/// the sequence number to replay the log after (`Last-Event-ID`, else
/// `?since=`, else 0: the whole log), or the error to answer.
pub fn event_stream(request: &Request) -> Option<Result<u64, Response>> {
    let wanted = request.method == "GET"
        && request.path == "/api/events"
        && request.header("accept").is_some_and(|accept| accept.contains("text/event-stream"));
    if !wanted {
        return None;
    }
    Some(since(request).map(|since| since.unwrap_or(0)))
}

/// `POST /api/snapshots`: a picture of a visitor, read by `conn.rs` (the
/// one request whose body the daemon reads).
pub fn is_snapshot_upload(request: &Request) -> bool {
    request.method == "POST" && request.path == "/api/snapshots"
}

/// `POST /api/door/open`, which `conn.rs` answers (it reads a body and
/// waits for the door's command).
pub fn is_door_open(request: &Request) -> bool {
    request.method == "POST" && request.path == "/api/door/open"
}

/// `GET`/`HEAD /snapshots/<name>`: the name of a picture asked for, if it
/// is one this daemon makes (`snapshots::is_name`); `conn.rs` reads it.
pub fn snapshot_wanted(request: &Request) -> Option<&str> {
    let name = request.path.strip_prefix("/snapshots/")?;
    (matches!(request.method.as_str(), "GET" | "HEAD") && crate::snapshots::is_name(name)).then_some(name)
}

/// The answer for a picture: immutable under its name, never sniffed.
pub fn snapshot_response(bytes: Option<Vec<u8>>) -> Response {
    match bytes {
        Some(bytes) => Response::new(200, "image/jpeg", bytes)
            .with_header("Cache-Control", "private, max-age=31536000, immutable")
            .with_header("X-Content-Type-Options", "nosniff"),
        None => Response::text(404, "no such picture (the oldest are removed)"),
    }
}

/// The head of the event stream's response (CORS as for the rest of the
/// API): no length, so it ends when the connection does.
pub fn event_stream_head(request: &Request, config: &Config) -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n".to_vec();
    for (name, value) in with_cors(Response::new(200, "", Vec::new()), request, config).headers {
        if name.starts_with("Access-Control") || name == "Vary" {
            head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    head
}

/// The query parameter `name`, if given: `Some(None)` when its %-escapes
/// are broken or not UTF-8.
fn query_value(request: &Request, name: &str) -> Option<Option<String>> {
    let query = http::parse_query(request.query.as_deref().unwrap_or(""));
    query.into_iter().find(|(key, _)| key == name).map(|(_, value)| value)
}

/// `Last-Event-ID`, else `?since=`: a sequence number, if given.
fn since(request: &Request) -> Result<Option<u64>, Response> {
    let given = request
        .header("last-event-id")
        .map(str::to_string)
        .or_else(|| query_value(request, "since").map(Option::unwrap_or_default));
    match given {
        None => Ok(None),
        Some(text) => {
            text.trim().parse().map(Some).map_err(|_| {
                Response::json_error(400, "since (or Last-Event-ID) is the seq of an event: a whole number")
            })
        }
    }
}

/// The answer to a plain HTTP request (not a WebSocket upgrade), CORS
/// headers included.
pub fn respond(view: &View, request: &Request) -> Response {
    with_cors(answer(view, request), request, view.config)
}

fn answer(view: &View, request: &Request) -> Response {
    let method = request.method.as_str();
    let readable = matches!(method, "GET" | "HEAD");
    let not_allowed = |allow: &'static str| {
        Response::json_error(405, &format!("this endpoint takes {allow}")).with_header("Allow", allow)
    };
    let router = view.hub.router();
    match Endpoint::of(&request.path, &view.config.peerjs.path) {
        Some(Endpoint::Rooms) if method == "POST" => api::new_room(router),
        Some(Endpoint::Rooms) => not_allowed("POST"),
        Some(_) if !readable => not_allowed("GET, HEAD"),
        Some(Endpoint::IceServers) => api::ice_servers(&protocol::ice_servers(&view.config.stun_servers)),
        Some(Endpoint::Peers) => api::peers(router),
        Some(Endpoint::Room(room)) => match http::percent_decode(room, false) {
            Some(room) if protocol::is_valid_name(&room) => api::room(router, &room),
            _ => Response::json_error(400, "a room name is 1 to 64 characters of A-Z a-z 0-9 . _ ~ -"),
        },
        Some(Endpoint::Health) => api::healthz(),
        Some(Endpoint::Events) => match since(request) {
            Ok(since) => api::events(view.feed, since.unwrap_or(0)),
            Err(response) => response,
        },
        Some(Endpoint::Https) => {
            let onboard = onboard(view, request, &(view.interface_addresses)());
            match &view.https {
                Some(https) => api::https(Some(https.port), https.ca_der, &onboard),
                None => api::https(None, None, &onboard),
            }
        }
        Some(Endpoint::CaCertificate) => api::ca_certificate(view.https.as_ref().and_then(|https| https.ca_der)),
        Some(Endpoint::CaProfile) => api::ca_profile(view.https.as_ref().and_then(|https| https.ca_der)),
        Some(Endpoint::Qr) => match query_value(request, "text") {
            Some(Some(text)) if !text.is_empty() => api::qr(&text),
            Some(None) => Response::json_error(400, "text is not percent-encoded UTF-8"),
            _ => Response::json_error(400, "give the text to encode: /api/qr?text=<percent-encoded text>"),
        },
        Some(Endpoint::Metrics) => metrics::render(router, sockets(view.hub), view.connections, view.feed),
        Some(Endpoint::Status) => status(view, request),
        Some(Endpoint::Door) => api::door(view.hub.doors()),
        Some(Endpoint::PeerJs(rest)) => peerjs_http(view, rest),
        None if request.path.starts_with("/api/") => Response::json_error(404, "no such API endpoint"),
        None if readable => static_files::serve(request, view.config.www.as_deref()),
        None => Response::text(405, "pages take GET").with_header("Allow", "GET, HEAD"),
    }
}

/// What the hub counts that the router does not.
fn sockets(hub: &Hub) -> Sockets {
    Sockets {
        websockets: hub.websocket_count(),
        dropped_slow: hub.dropped_slow(),
        rings_suppressed: hub.rings_suppressed(),
        snapshots: hub.snapshot_usage(),
    }
}

/// Where a phone that scans the QR code of a page asked for by `request`
/// goes: `status::onboard`, given the machine's `addresses`.
fn onboard(view: &View, request: &Request, addresses: &[IpAddr]) -> String {
    let https = view.https.as_ref().map(|https| (https.port, https.ca_der.is_some()));
    status::onboard(request.header("host"), view.http_address, https, addresses)
}

/// `/api/status`: made only when asked.
fn status(view: &View, request: &Request) -> Response {
    let certificate = view.https.as_ref().map(|https| status::Certificate {
        ca_fingerprint: https.ca_der.map(api::fingerprint),
        names: https.generated.map_or(&[], |(names, _, _)| names),
        not_after: https.generated.map(|(_, not_after, _)| not_after),
        renews_at: https.generated.map(|(_, _, renews_at)| renews_at),
    });
    // Asked of the system once per document, for both uses.
    let addresses = (view.interface_addresses)();
    let daemon = status::Daemon {
        onboard: onboard(view, request, &addresses),
        started_unix_ms: view.started_unix_ms,
        now_unix_ms: hub::unix_ms_now(),
        http: view.http_address,
        https: view.https.as_ref().map(|https| https.address),
        addresses,
        certificate,
    };
    status::render(
        daemon,
        view.hub.router(),
        |conn| view.hub.link(conn),
        sockets(view.hub),
        view.connections,
        view.feed,
    )
}

/// Pages of an origin allowed by `--allow-origin` may read the JSON API
/// across origins; nobody else gets any CORS header, so other sites'
/// scripts cannot read it from a visitor's browser.
pub fn with_cors(response: Response, request: &Request, config: &Config) -> Response {
    let Some(origin) = request.header("origin") else { return response };
    let origin = origin.trim().to_ascii_lowercase();
    let api = request.path.starts_with("/api/") || peerjs_route(&request.path, &config.peerjs.path).is_some();
    if api && config.allowed_origins.contains(&origin) {
        response.with_header("Access-Control-Allow-Origin", origin).with_header("Vary", "Origin")
    } else {
        response
    }
}

enum Endpoint<'a> {
    IceServers,
    Peers,
    Rooms,
    /// `/api/rooms/<room>`, the name still percent-encoded.
    Room(&'a str),
    Health,
    /// `/api/events`: the call log (its live stream is `event_stream`).
    Events,
    Metrics,
    /// `/api/https`: the secure address and the local CA.
    Https,
    CaCertificate,
    /// `/api/status`: everything the status page shows.
    Status,
    /// The same certificate as an Apple configuration profile.
    CaProfile,
    /// `/api/qr?text=..`: a QR code as SVG.
    Qr,
    /// `/api/door`: the doors a call can open, and the proof it needs.
    Door,
    /// Under `--peerjs-path` (the WebSocket aside): what follows it.
    PeerJs(&'a str),
}

impl Endpoint<'_> {
    fn of<'p>(path: &'p str, peerjs_path: &str) -> Option<Endpoint<'p>> {
        if let Some(rest) = peerjs_route(path, peerjs_path) {
            return Some(Endpoint::PeerJs(rest));
        }
        match path {
            "/api/ice-servers" => Some(Endpoint::IceServers),
            "/api/peers" => Some(Endpoint::Peers),
            "/api/rooms" => Some(Endpoint::Rooms),
            "/healthz" => Some(Endpoint::Health),
            "/api/events" => Some(Endpoint::Events),
            "/metrics" => Some(Endpoint::Metrics),
            "/api/status" => Some(Endpoint::Status),
            "/api/https" => Some(Endpoint::Https),
            api::CA_CERTIFICATE_PATH => Some(Endpoint::CaCertificate),
            api::CA_PROFILE_PATH => Some(Endpoint::CaProfile),
            "/api/qr" => Some(Endpoint::Qr),
            "/api/door" => Some(Endpoint::Door),
            _ => path.strip_prefix("/api/rooms/").map(Endpoint::Room),
        }
    }
}

/// The part of `path` after `--peerjs-path`, when it is one of the PeerJS
/// HTTP endpoints: `""` (the server's description, not at the root),
/// `<key>/id` or `<key>/peers`.
fn peerjs_route<'p>(path: &'p str, peerjs_path: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(peerjs_path)?;
    if rest.is_empty() || rest == "/" {
        return (!peerjs_path.is_empty()).then_some("");
    }
    let rest = rest.strip_prefix('/')?;
    let (key, what) = rest.split_once('/')?;
    (!key.is_empty() && matches!(what, "id" | "peers")).then_some(rest)
}

/// The PeerJS HTTP endpoints (`rest` from `peerjs_route`).
fn peerjs_http(view: &View, rest: &str) -> Response {
    let config = &view.config.peerjs;
    let Some((key, what)) = rest.split_once('/') else {
        let body = serde_json::json!({
            "name": "PeerJS Server",
            "description": "intercomd: a PeerJS-compatible signaling endpoint on a LAN intercom",
            "website": "https://peerjs.com/",
        });
        return Response::json(200, body.to_string());
    };
    if key != config.key {
        return Response::text(401, "Invalid key provided");
    }
    let router = view.hub.router();
    match what {
        // The bare id: the client takes the whole body as the id, so it has
        // no trailing newline.
        "id" => Response::new(200, "text/plain; charset=utf-8", router.fresh_id().into_bytes())
            .with_header("Cache-Control", "no-store"),
        _ if !config.discovery => Response::text(401, "discovery is off (start intercomd with --peerjs-discovery)"),
        _ => {
            let ids = router.room_members(peerjs::ROOM);
            Response::json(200, serde_json::to_string(&ids).expect("strings serialize"))
                .with_header("Cache-Control", "no-store")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::liveness::Liveness;
    use crate::router::Limits;

    fn config(flags: &[&str]) -> Config {
        Config::from_args(flags).unwrap_or_else(|(message, _)| panic!("{message}"))
    }

    fn hub() -> Hub {
        let limits =
            Limits { max_peers: 10, max_rate: 0, max_rooms: 10, max_room_peers: 10, reconnect_grace: Duration::ZERO };
        let liveness = Liveness { interval: Duration::from_secs(20), timeout: Duration::from_secs(10) };
        Hub::new(limits, Vec::new(), liveness, std::rc::Rc::new(std::cell::RefCell::new(crate::feed::Feed::new())))
    }

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_string(), Some(query.to_string())),
            None => (target.to_string(), None),
        };
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Request { method: method.into(), path, query, minor_version: 1, headers }
    }

    /// What `respond` reads.
    fn view<'a>(
        config: &'a Config,
        hub: &'a Hub,
        (feed, connections): (&'a Feed, &'a Connections),
        https: Option<Https<'a>>,
    ) -> View<'a> {
        View {
            config,
            hub,
            feed,
            connections,
            https,
            started_unix_ms: 0,
            http_address: ([127, 0, 0, 1], 8080).into(),
            interface_addresses: Vec::new,
        }
    }

    /// `status content-type body` starts with `expected`.
    fn check(config: &Config, https: Option<Https>, method: &str, target: &str, expected: &str) {
        let hub = hub();
        let connections = Connections::default();
        let feed = Feed::new();
        let view = view(config, &hub, (&feed, &connections), https);
        let response = respond(&view, &request(method, target, &[]));
        let content_type = response.headers.iter().find(|(k, _)| *k == "Content-Type").map_or("", |(_, v)| v);
        let got = format!("{} {content_type} {}", response.status, String::from_utf8_lossy(&response.body));
        assert!(got.starts_with(expected), "{method} {target}: {got:?} does not start with {expected:?}");
    }

    #[test]
    fn every_endpoint_and_its_methods() {
        let config = config(&[]);
        let check = |method, target, expected| check(&config, None, method, target, expected);
        check("GET", "/healthz", "200 text/plain; charset=utf-8 ok");
        check("HEAD", "/healthz", "200 text/plain; charset=utf-8 ok");
        check("POST", "/healthz", r#"405 application/json {"error":"this endpoint takes GET, HEAD"}"#);
        check(
            "GET",
            "/api/ice-servers",
            r#"200 application/json {"iceServers":[{"urls":["stun:stun.l.google.com:19302"]},{"ur"#,
        );
        check("GET", "/api/peers", r#"200 application/json {"peers":[]}"#);
        check("GET", "/api/rooms", r#"405 application/json {"error":"this endpoint takes POST"}"#);
        check("GET", "/api/rooms/kitchen", r#"200 application/json {"room":"kitchen","peers":[]}"#);
        check(
            "GET",
            "/api/rooms/a%2Fb",
            r#"400 application/json {"error":"a room name is 1 to 64 characters of A-Z a-z"#,
        );
        check("GET", "/api/nothing", r#"404 application/json {"error":"no such API endpoint"}"#);
        check(
            "GET",
            "/api/https",
            r#"200 application/json {"ca":null,"caFingerprint":null,"mobileconfig":null,"onboard":"http://127.0.0.1:8080/","port":null}"#,
        );
        for path in ["/intercomd-ca.crt", "/intercomd-ca.mobileconfig"] {
            check(
                "GET",
                path,
                "404 text/plain; charset=utf-8 this intercom serves a certificate of its own (--tls-cert)",
            );
        }
        check(
            "GET",
            "/api/qr?text=hi",
            "200 image/svg+xml <svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 29 29\"",
        );
        check("HEAD", "/api/qr?text=hi", "200 image/svg+xml <svg");
        check("POST", "/api/qr?text=hi", r#"405 application/json {"error":"this endpoint takes GET, HEAD"}"#);
        check(
            "GET",
            "/metrics",
            "200 text/plain; version=0.0.4; charset=utf-8 # HELP intercomd_peers Peers connected now.",
        );
        check("DELETE", "/", "405 text/plain; charset=utf-8 pages take GET");
        check("GET", "/index.html", "200 text/html; charset=utf-8");
        check("GET", "/peerjs", r#"200 application/json {"description":"intercomd: a PeerJS-compatible signaling"#);
        check("GET", "/peerjs/wrong/id", "401 text/plain; charset=utf-8 Invalid key provided");
        check(
            "GET",
            "/peerjs/peerjs/peers",
            "401 text/plain; charset=utf-8 discovery is off (start intercomd with --peerjs-discovery)",
        );
        check("GET", "/peerjs/peerjs/other", "404 text/plain; charset=utf-8 not found");
    }

    #[test]
    fn the_https_endpoints_tell_the_port_and_the_ca() {
        let config = config(&[]);
        let der = [0x30u8, 0x03, 0x02, 0x01, 0x01];
        check(
            &config,
            Some(Https { address: ([127, 0, 0, 1], 8443).into(), port: 8443, ca_der: Some(&der), generated: None }),
            "GET",
            "/api/https",
            r#"200 application/json {"ca":"/intercomd-ca.crt","caFingerprint":"1B:65:F6:8A:52:2C:"#,
        );
        let profile = r#"200 application/x-apple-aspen-config <?xml version="1.0" encoding="UTF-8"?>"#;
        let https = Https { address: ([127, 0, 0, 1], 8443).into(), port: 8443, ca_der: Some(&der), generated: None };
        check(&config, Some(https), "GET", "/intercomd-ca.mobileconfig", profile);
        check(
            &config,
            Some(Https { address: ([127, 0, 0, 1], 8443).into(), port: 8443, ca_der: Some(&der), generated: None }),
            "GET",
            "/intercomd-ca.crt",
            "200 application/x-x509-ca-cert 0\u{3}\u{2}\u{1}\u{1}",
        );
    }

    #[test]
    fn qr_codes_up_to_the_limit_and_errors_past_it() {
        let config = config(&[]);
        let check = |target: &str, expected| check(&config, None, "GET", target, expected);
        let missing =
            r#"400 application/json {"error":"give the text to encode: /api/qr?text=<percent-encoded text>"}"#;
        check("/api/qr", missing);
        check("/api/qr?text=", missing);
        check("/api/qr?other=x", missing);
        check("/api/qr?text=%ff", r#"400 application/json {"error":"text is not percent-encoded UTF-8"}"#);
        // Percent-encoded UTF-8 counts in bytes: 128 two-byte characters are at the limit.
        let at_limit = "%C3%BC".repeat(crate::qr::MAX_QR_TEXT_BYTES / 2);
        check(&format!("/api/qr?text={at_limit}"), "200 image/svg+xml <svg");
        check(
            &format!("/api/qr?text={at_limit}a"),
            r#"400 application/json {"error":"the text is 257 bytes of UTF-8; a QR code here holds at most 256"}"#,
        );
        let hub = hub();
        let connections = Connections::default();
        let feed = Feed::new();
        let view = view(&config, &hub, (&feed, &connections), None);
        let response =
            respond(&view, &request("GET", "/api/qr?text=https%3A%2F%2F192.168.1.20%3A8443%2Ftrust.html", &[]));
        let header = |name| response.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        assert_eq!(header("Cache-Control").as_deref(), Some("public, max-age=31536000, immutable"));
        let expected = crate::qr::QrCode::encode(b"https://192.168.1.20:8443/trust.html").unwrap().to_svg();
        assert_eq!(&*response.body, expected.as_bytes(), "the text is the decoded query");
    }

    #[test]
    fn peerjs_ids_are_bare_and_discovery_lists_the_peerjs_room() {
        let config = config(&["--peerjs-path", "/pj/", "--peerjs-discovery"]);
        let mut hub = hub();
        let now = Instant::now();
        let (conn, _outbox) = hub.open(now, crate::outbox::tests::test_link());
        let hello = protocol::Hello { id: Some("app".into()), room: peerjs::ROOM.into(), token: Some("t".into()) };
        hub.join(conn, Codec::PeerJs, Ok(hello), now);
        let connections = Connections::default();
        let feed = Feed::new();
        let view = view(&config, &hub, (&feed, &connections), None);
        let id = respond(&view, &request("GET", "/pj/peerjs/id", &[]));
        assert_eq!(id.status, 200);
        assert!(protocol::is_valid_name(std::str::from_utf8(&id.body).unwrap()), "a bare id: {:?}", id.body);
        assert_eq!(&*respond(&view, &request("GET", "/pj/peerjs/peers", &[])).body, br#"["app"]"#);
        assert_eq!(respond(&view, &request("GET", "/peerjs/peerjs/id", &[])).status, 404, "the old path is a page");
    }

    #[test]
    fn events_as_json_or_as_a_stream() {
        let config = config(&[]);
        check(&config, None, "GET", "/api/events", r#"200 application/json {"events":[]}"#);
        check(&config, None, "GET", "/api/events?since=x", "400 application/json");
        check(&config, None, "POST", "/api/events", "405");
        let stream = |target: &str, headers: &[(&str, &str)]| event_stream(&request("GET", target, headers));
        let sse = [("accept", "text/event-stream")];
        assert!(stream("/api/events", &[]).is_none(), "plain GET is JSON");
        assert_eq!(stream("/api/events", &sse).unwrap().ok(), Some(0));
        assert_eq!(stream("/api/events?since=7", &sse).unwrap().ok(), Some(7));
        let resumed = [("accept", "text/event-stream"), ("last-event-id", "9")];
        assert_eq!(stream("/api/events?since=7", &resumed).unwrap().ok(), Some(9), "the browser's resume wins");
        assert_eq!(stream("/api/events?since=-1", &sse).unwrap().unwrap_err().status, 400);
        let head = event_stream_head(&request("GET", "/api/events", &sse), &config);
        assert!(String::from_utf8(head).unwrap().starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"));
    }

    #[test]
    fn websocket_endpoints() {
        let default = config(&[]);
        assert_eq!(websocket("/ws", &default), Some(Codec::Native));
        assert_eq!(websocket("/peerjs/peerjs", &default), Some(Codec::PeerJs));
        assert_eq!(websocket("/ws/", &default), None);
        assert_eq!(websocket("/peerjs", &default), None);
        let root = config(&["--peerjs-path", "/"]);
        assert_eq!(websocket("/peerjs", &root), Some(Codec::PeerJs), "PeerJS' own default path");
    }

    #[test]
    fn cors_only_for_the_api_and_only_to_allowed_origins() {
        let config = config(&["--allow-origin", "https://panel.example"]);
        let hub = hub();
        let connections = Connections::default();
        let feed = Feed::new();
        let view = view(&config, &hub, (&feed, &connections), None);
        let cors = |target: &str, origin: &str| {
            let response = respond(&view, &request("GET", target, &[("origin", origin)]));
            response.headers.iter().find(|(k, _)| *k == "Access-Control-Allow-Origin").map(|(_, v)| v.to_string())
        };
        assert_eq!(cors("/api/peers", "https://PANEL.example").as_deref(), Some("https://panel.example"));
        assert_eq!(cors("/peerjs/peerjs/id", "https://panel.example").as_deref(), Some("https://panel.example"));
        assert_eq!(cors("/api/peers", "https://evil.example"), None);
        assert_eq!(cors("/index.html", "https://panel.example"), None, "pages carry no CORS");
    }
}
