//! The accept loop, the HTTP front door, the connection cap and shutdown.
//!
//! `run` takes its listener and its stop signal from the caller, so `main`
//! binds the configured address and stops on SIGTERM, while tests bind
//! `127.0.0.1:0` and stop whenever they like.
//!
//! Invariants:
//! - Everything runs on one `LocalExecutor` on the calling thread; shared
//!   state is `Rc<Shared>` with `RefCell`s that are never borrowed across an
//!   `.await`.
//! - A connection's errors are logged in its own task and never reach the
//!   accept loop.
//! - Every wait on a client is bounded: the head by `HEAD_TIMEOUT`, a
//!   response by `WRITE_TIMEOUT`, a close by `CLOSE_TIMEOUT`, shutdown by
//!   `SHUTDOWN_GRACE`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_net::{TcpListener, TcpStream};
use futures_rustls::TlsAcceptor;
use log::{debug, info, warn};
use smol::channel::{self, Receiver};
use smol::future::or;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{LocalExecutor, Timer};

use crate::api::{self, ConnectionStats};
use crate::config::Config;
use crate::http::{self, HeadError, Request, Response, HEAD_TIMEOUT, MAX_HEAD_BYTES, WRITE_TIMEOUT};
use crate::hub::Hub;
use crate::peerjs;
use crate::protocol::{self, Codec, Hello, Rejection};
use crate::router::Limits;
use crate::static_files;
use crate::stream::Stream;
use crate::tls::{self, Certificates};
use crate::with_timeout;
use crate::ws;

/// TCP connections allowed on top of `--max-peers`, for page loads and API
/// calls while every peer slot is taken. Past `max_peers + this`, new
/// connections are closed at once (and counted in `/metrics`), so a flood of
/// connections costs the daemon a file descriptor each for an instant and
/// never starves the peers already connected.
pub const HTTP_CONNECTION_HEADROOM: usize = 256;
/// How long shutdown waits for sockets to take their 1001 close frame.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Pause after a failed `accept` (out of file descriptors), so the loop does
/// not spin while connections finish and free some.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Bytes asked of a socket per read while reading a request head.
const READ_CHUNK: usize = 2048;
/// How long, and how many bytes, `linger_close` waits for and discards.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// At most one warning per this interval about refused connections.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// State shared by every connection task.
pub struct Shared {
    pub config: Config,
    /// The router and every peer's outbox.
    pub hub: RefCell<Hub>,
    /// Counters for `/metrics`; `open` is also the connection cap's count.
    connections: Cell<ConnectionStats>,
    /// Open connections per client address, for `--max-connections-per-ip`.
    per_client: RefCell<HashMap<IpAddr, usize>>,
    /// When we last warned about the connection cap, to keep the log calm
    /// during a flood.
    last_cap_warning: Cell<Option<Instant>>,
    /// The HTTPS listener's certificate (swapped when renewed) and port.
    https: Option<HttpsState>,
}

struct HttpsState {
    certificates: RefCell<Certificates>,
    /// The port it listens on, for `/api/https` (the bound one, so that
    /// `--https-listen 127.0.0.1:0` in tests reports the real port).
    port: u16,
}

/// The sockets `run` serves: plain HTTP, and HTTPS with its certificate.
pub struct Listeners {
    pub http: TcpListener,
    pub https: Option<(TcpListener, Certificates)>,
}

impl Shared {
    fn new(config: Config, https: Option<HttpsState>) -> Shared {
        let limits = Limits {
            max_peers: config.max_peers,
            max_rate: config.max_rate,
            max_rooms: config.max_rooms,
            max_room_peers: config.max_room_peers,
            reconnect_grace: config.reconnect_grace,
        };
        let hub = Hub::new(limits, protocol::ice_servers(&config.stun_servers));
        Shared {
            config,
            hub: RefCell::new(hub),
            connections: Cell::new(ConnectionStats::default()),
            per_client: RefCell::new(HashMap::new()),
            last_cap_warning: Cell::new(None),
            https,
        }
    }

    fn update_connections(&self, change: impl FnOnce(&mut ConnectionStats)) {
        let mut stats = self.connections.get();
        change(&mut stats);
        self.connections.set(stats);
    }
}

/// Serve on the listeners until `shutdown` resolves, then close every
/// WebSocket with 1001 and return within `SHUTDOWN_GRACE`.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let Listeners { http, https } = listeners;
    info!("listening on http://{}", http.local_addr()?);
    let (https_listener, https_state) = match https {
        Some((listener, certificates)) => {
            let local = listener.local_addr()?;
            info!("listening on https://{local} ({})", certificates.summary);
            let state = HttpsState { certificates: RefCell::new(certificates), port: local.port() };
            (Some(listener), Some(state))
        }
        None => (None, None),
    };
    let shared = Rc::new(Shared::new(config, https_state));
    let executor = LocalExecutor::new();
    // Closed (not sent on) to tell idle HTTP connections to go.
    let (stop_sender, stop) = channel::bounded::<()>(1);
    // Each connection task holds a clone; once all are dropped, `recv` ends.
    let (alive, all_gone) = channel::bounded::<()>(1);

    executor
        .run(async {
            let serving = or(accept_loop(&executor, &shared, &http, false, &stop, &alive), expire_pending(&shared));
            let accepting = or(serving, async {
                match &https_listener {
                    Some(listener) => {
                        or(accept_loop(&executor, &shared, listener, true, &stop, &alive), renew_certificates(&shared))
                            .await
                    }
                    None => std::future::pending().await,
                }
            });
            or(accepting, shutdown).await;
            info!("shutting down: closing {} sockets", shared.hub.borrow().websocket_count());
            drop((http, https_listener));
            stop_sender.close();
            shared.hub.borrow_mut().shutdown();
            drop(alive);
            if with_timeout(SHUTDOWN_GRACE, all_gone.recv()).await.is_none() {
                warn!(
                    "{} connections still open after {:?}; dropping them",
                    shared.connections.get().open,
                    SHUTDOWN_GRACE
                );
            }
        })
        .await;
    Ok(())
}

/// Accept connections on one listener forever. Both listeners share one
/// connection cap and one per-address count.
async fn accept_loop<'a>(
    executor: &LocalExecutor<'a>,
    shared: &Rc<Shared>,
    listener: &TcpListener,
    tls: bool,
    stop: &Receiver<()>,
    alive: &channel::Sender<()>,
) {
    let max_connections = shared.config.max_peers + HTTP_CONNECTION_HEADROOM;
    loop {
        match listener.accept().await {
            Ok((stream, address)) => {
                let client = address.ip().to_canonical();
                if shared.connections.get().open >= max_connections {
                    refuse(shared, address, "connection limit");
                    continue;
                }
                let from_client = shared.per_client.borrow().get(&client).copied().unwrap_or(0);
                if from_client >= shared.config.max_connections_per_ip {
                    refuse(shared, address, "per-address connection limit");
                    continue;
                }
                shared.per_client.borrow_mut().insert(client, from_client + 1);
                shared.update_connections(|stats| {
                    stats.open += 1;
                    stats.accepted += 1;
                });
                let (shared, stop, alive) = (shared.clone(), stop.clone(), alive.clone());
                executor
                    .spawn(async move {
                        serve_connection(&shared, stream, tls, address, stop).await;
                        shared.update_connections(|stats| stats.open -= 1);
                        let mut per_client = shared.per_client.borrow_mut();
                        if let Some(count) = per_client.get_mut(&client) {
                            *count -= 1;
                            if *count == 0 {
                                per_client.remove(&client);
                            }
                        }
                        drop(alive);
                    })
                    .detach();
            }
            Err(error) => {
                warn!("accept failed: {error}");
                Timer::after(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Messages PeerJS senders sent to ids nobody holds wait for the reconnect
/// grace; this expires them. It sleeps on `pending_wake` while nothing is
/// held, so an idle daemon has no timer.
async fn expire_pending(shared: &Shared) {
    let wake = shared.hub.borrow().pending_wake.clone();
    while wake.recv().await.is_ok() {
        loop {
            let next = shared.hub.borrow().router.next_pending_expiry();
            let Some(at) = next else { break };
            Timer::at(at).await;
            shared.hub.borrow_mut().expire_pending(Instant::now());
        }
    }
}

/// Every `tls::CHECK_INTERVAL`, renew the generated certificate if it is
/// close to expiry or the machine's names or addresses changed. New
/// handshakes get the new certificate; open connections keep theirs.
async fn renew_certificates(shared: &Shared) {
    let Some(https) = &shared.https else { return std::future::pending().await };
    loop {
        Timer::after(tls::CHECK_INTERVAL).await;
        match https.certificates.borrow_mut().refresh() {
            Ok(Some(reason)) => info!("renewed the server certificate: {reason}"),
            Ok(None) => {}
            Err(error) => warn!("cannot renew the server certificate, keeping the old one: {error}"),
        }
    }
}

/// Close a new connection at once (dropping it does), count it, and warn
/// at most once per `WARN_INTERVAL` so a flood cannot flood the log.
fn refuse(shared: &Shared, address: SocketAddr, limit: &str) {
    shared.update_connections(|stats| stats.refused += 1);
    let now = Instant::now();
    let quiet = shared.last_cap_warning.get().is_some_and(|last| now.duration_since(last) < WARN_INTERVAL);
    if !quiet {
        shared.last_cap_warning.set(Some(now));
        warn!("{limit} reached ({} open): refusing {address} and any others for now", shared.connections.get().open);
    }
}

/// Why no request head could be read.
enum ReadFailure {
    /// The client closed, the socket failed, or we are stopping.
    Gone,
    Head(HeadError),
}

/// One TCP connection: requests until it closes, or the WebSocket it
/// upgrades to. The HTTP phase is boxed and freed before the WebSocket phase
/// starts, so an idle peer's task holds only what its socket needs (the
/// task's size is the largest of its states, and HTTP's are the larger).
async fn serve_connection(shared: &Rc<Shared>, tcp: TcpStream, tls: bool, address: SocketAddr, stop: Receiver<()>) {
    // Signaling is small and latency-bound: no Nagle delay.
    let _ = tcp.set_nodelay(true);
    let stream = if tls {
        let Some(https) = &shared.https else { return };
        let acceptor = TlsAcceptor::from(https.certificates.borrow().server_config.clone());
        // The handshake is part of the request head's time budget.
        match with_timeout(HEAD_TIMEOUT, Box::pin(acceptor.accept(tcp))).await {
            Some(Ok(stream)) => Stream::Tls(Box::new(stream)),
            Some(Err(error)) => {
                debug!("{address}: TLS handshake failed: {error}");
                return;
            }
            None => {
                debug!("{address}: no TLS handshake within {HEAD_TIMEOUT:?}");
                return;
            }
        }
    } else {
        Stream::Plain(tcp)
    };
    let upgrade = Box::pin(serve_http(shared, stream, address, stop.clone())).await;
    if let Some(Upgrade { stream, leftover, hello, codec }) = upgrade {
        Box::pin(ws::serve(shared, stream, leftover, hello, codec, stop)).await;
    }
}

/// What the HTTP phase hands on when a request upgrades to a WebSocket.
struct Upgrade {
    stream: Stream,
    /// Bytes the client sent after its request head.
    leftover: Vec<u8>,
    hello: Result<Hello, Rejection>,
    codec: Codec,
}

/// Answer requests until the connection closes (`None`) or upgrades.
async fn serve_http(shared: &Shared, mut stream: Stream, address: SocketAddr, stop: Receiver<()>) -> Option<Upgrade> {
    let mut buffer = Vec::new();
    loop {
        let head = with_timeout(
            HEAD_TIMEOUT,
            or(read_head(&mut stream, &mut buffer), async {
                let _ = stop.recv().await;
                Err(ReadFailure::Gone)
            }),
        )
        .await;
        let (request, length) = match head {
            Some(Ok(parsed)) => parsed,
            Some(Err(ReadFailure::Head(error))) => {
                let (status, text) = match error {
                    HeadError::Malformed => (400, "malformed request head"),
                    HeadError::TooLarge => (431, "request head too large"),
                };
                debug!("{address}: {text}");
                write_response(&mut stream, &Response::text(status, text), false, false).await;
                linger_close(stream).await;
                return None;
            }
            Some(Err(ReadFailure::Gone)) => return None,
            None => {
                debug!("{address}: no complete request head within {HEAD_TIMEOUT:?}");
                return None;
            }
        };
        buffer.drain(..length);

        let codec = if request.path == "/ws" {
            Some(Codec::Native)
        } else {
            let peerjs = &shared.config.peerjs;
            (request.path.strip_prefix(peerjs.path.as_str()) == Some("/peerjs")).then_some(Codec::PeerJs)
        };
        if let Some(codec) = codec {
            match ws::check_upgrade(&request, &shared.config) {
                Ok(switching) => {
                    with_timeout(WRITE_TIMEOUT, stream.write_all(&switching)).await?.ok()?;
                    buffer.shrink_to_fit();
                    let hello = match codec {
                        Codec::Native => ws::hello_from(&request),
                        Codec::PeerJs => ws::query_pairs(&request)
                            .and_then(|pairs| peerjs::hello_from_query(&pairs, &shared.config.peerjs.key)),
                    };
                    return Some(Upgrade { stream, leftover: buffer, hello, codec });
                }
                Err(response) => {
                    if response.status == 403 {
                        info!("{address}: WebSocket refused for origin {:?}", request.header("origin").unwrap_or(""));
                    }
                    write_response(&mut stream, &response, false, false).await;
                    linger_close(stream).await;
                    return None;
                }
            }
        }

        let keep_alive = request.keep_alive() && !request.has_body();
        let response = with_cors(respond(shared, &request), &request, &shared.config);
        if !write_response(&mut stream, &response, request.method == "HEAD", keep_alive).await {
            return None;
        }
        if !keep_alive {
            // An orderly end: TLS clients are owed a close_notify.
            let _ = with_timeout(WRITE_TIMEOUT, stream.close()).await;
            return None;
        }
    }
}

/// Read until `buffer` holds a complete head (or the limit is passed).
async fn read_head(stream: &mut Stream, buffer: &mut Vec<u8>) -> Result<(Request, usize), ReadFailure> {
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(parsed) = http::parse_head(buffer).map_err(ReadFailure::Head)? {
            return Ok(parsed);
        }
        let room = MAX_HEAD_BYTES + 1 - buffer.len().min(MAX_HEAD_BYTES);
        let read = stream.read(&mut chunk[..room.min(2048)]).await.map_err(|_| ReadFailure::Gone)?;
        if read == 0 {
            return Err(ReadFailure::Gone);
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// Close after an error response without losing it: closing a socket with
/// unread input makes the kernel send a reset, which can destroy the
/// response before the client reads it. So stop writing, then read and
/// discard what the client still sends, for a bounded time and amount.
async fn linger_close(mut stream: Stream) {
    let _ = with_timeout(WRITE_TIMEOUT, stream.close()).await;
    let mut sink = vec![0u8; READ_CHUNK];
    let mut left = LINGER_BYTES;
    with_timeout(LINGER_TIME, async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(read) => left = left.saturating_sub(read),
            }
        }
    })
    .await;
}

/// Write a whole response within `WRITE_TIMEOUT`. False if it failed.
async fn write_response(stream: &mut Stream, response: &Response, head_only: bool, keep_alive: bool) -> bool {
    let written = with_timeout(WRITE_TIMEOUT, async {
        stream.write_all(&response.head_bytes(keep_alive)).await?;
        if !head_only {
            stream.write_all(&response.body).await?;
        }
        stream.flush().await
    })
    .await;
    matches!(written, Some(Ok(())))
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
fn peerjs_http(shared: &Shared, rest: &str) -> Response {
    let config = &shared.config.peerjs;
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
    let hub = shared.hub.borrow();
    match what {
        // The bare id: the client takes the body as it is, newline and all.
        "id" => Response::new(200, "text/plain; charset=utf-8", hub.router.fresh_id().into_bytes())
            .with_header("Cache-Control", "no-store"),
        _ if !config.discovery => Response::text(401, "discovery is off (start intercomd with --peerjs-discovery)"),
        _ => {
            let ids = hub.router.room_members(peerjs::ROOM);
            Response::json(200, serde_json::to_string(&ids).expect("strings serialize"))
                .with_header("Cache-Control", "no-store")
        }
    }
}

/// Pick the answer for a plain HTTP request.
fn respond(shared: &Shared, request: &Request) -> Response {
    let method = request.method.as_str();
    let readable = matches!(method, "GET" | "HEAD");
    let not_allowed = |allow: &'static str| {
        Response::json_error(405, &format!("this endpoint takes {allow}")).with_header("Allow", allow)
    };
    match Endpoint::of(&request.path, &shared.config.peerjs.path) {
        Some(Endpoint::Rooms) if method == "POST" => api::new_room(&shared.hub.borrow().router),
        Some(Endpoint::Rooms) => not_allowed("POST"),
        Some(_) if !readable => not_allowed("GET, HEAD"),
        Some(Endpoint::IceServers) => api::ice_servers(&protocol::ice_servers(&shared.config.stun_servers)),
        Some(Endpoint::Peers) => api::peers(&shared.hub.borrow().router),
        Some(Endpoint::Room(room)) => match http::percent_decode(room, false) {
            Some(room) if protocol::is_valid_name(&room) => api::room(&shared.hub.borrow().router, &room),
            _ => Response::json_error(400, "a room name is 1 to 64 characters of A-Z a-z 0-9 . _ ~ -"),
        },
        Some(Endpoint::Health) => api::healthz(),
        Some(Endpoint::Https) => match &shared.https {
            Some(https) => api::https(Some(https.port), https.certificates.borrow().ca_der.as_deref()),
            None => api::https(None, None),
        },
        Some(Endpoint::CaCertificate) => match &shared.https {
            Some(https) => api::ca_certificate(https.certificates.borrow().ca_der.as_deref()),
            None => api::ca_certificate(None),
        },
        Some(Endpoint::Metrics) => {
            let hub = shared.hub.borrow();
            let mut stats = shared.connections.get();
            stats.websockets = hub.websocket_count();
            stats.dropped_slow = hub.dropped_slow;
            api::metrics(&hub.router, stats)
        }
        Some(Endpoint::PeerJs(rest)) => peerjs_http(shared, rest),
        None if request.path.starts_with("/api/") => Response::json_error(404, "no such API endpoint"),
        None if readable => static_files::serve(request, shared.config.www.as_deref()),
        None => Response::text(405, "pages take GET").with_header("Allow", "GET, HEAD"),
    }
}

/// Pages of an origin allowed by `--allow-origin` may read the JSON API
/// across origins; nobody else gets any CORS header, so other sites'
/// scripts cannot read it from a visitor's browser.
fn with_cors(response: Response, request: &Request, config: &Config) -> Response {
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
    Metrics,
    /// `/api/https`: the secure address and the local CA.
    Https,
    CaCertificate,
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
            "/metrics" => Some(Endpoint::Metrics),
            "/api/https" => Some(Endpoint::Https),
            api::CA_CERTIFICATE_PATH => Some(Endpoint::CaCertificate),
            _ => path.strip_prefix("/api/rooms/").map(Endpoint::Room),
        }
    }
}
