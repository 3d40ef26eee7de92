//! One connection's HTTP life: the TLS handshake on the HTTPS listener,
//! request heads read within their time limit, responses written, keep-alive,
//! a lingering close after an error, and the hand-off of an upgraded socket
//! to `ws.rs`.
//!
//! Invariants:
//! - Every wait on a client is bounded: the handshake and each head by
//!   `HEAD_TIMEOUT`, a response by `WRITE_TIMEOUT`, the lingering close by
//!   `LINGER_TIME`.
//! - Bytes read past a head are kept: they belong to the next request or
//!   to the WebSocket.
//! - The HTTP phase is boxed and freed before the WebSocket phase starts,
//!   so an idle peer's task holds only what its socket needs (a future's
//!   size is that of its largest state, and HTTP's are the larger).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_net::TcpStream;
use log::{debug, info, warn};
use smol::channel::Receiver;
use smol::future::or;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::door::{Proof, Refusal};
use crate::events::push_json_string;
use crate::feed::Feed;
use crate::http::{self, HeadError, Request, Response, HEAD_TIMEOUT, MAX_HEAD_BYTES, WRITE_TIMEOUT};
use crate::hub::Hub;
use crate::jpeg;
use crate::metrics::Connections;
use crate::opener;
use crate::outbox::Link;
use crate::routes::{self, View};
use crate::snapshots::{self, Snapshots};
use crate::sse;
use crate::stream::{with_timeout, Stream, Tls};
use crate::tls::{self, Certificates};
use crate::ws::{self, Upgrade};

/// Bytes asked of a socket per read while reading a request head.
const READ_CHUNK: usize = 2048;
/// How long, and how many bytes, `linger_close` waits for and discards.
const LINGER_TIME: Duration = Duration::from_secs(1);
/// Time for a picture's body (at most 100 KiB) to arrive after its head.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
const LINGER_BYTES: usize = 64 * 1024;

/// What every connection task shares (behind one `Rc`, made by `server.rs`).
pub struct Shared {
    pub config: Config,
    /// The router and every socket's outbox.
    pub hub: RefCell<Hub>,
    /// The call log and the event consumers' queues (the hub publishes).
    pub feed: Rc<RefCell<Feed>>,
    /// Counted by the accept loop, reported by `/metrics`.
    pub connections: Connections,
    /// The HTTPS listener's certificate (swapped when renewed) and port.
    pub https: Option<HttpsState>,
    /// Pictures of visitors; `None` with `--no-snapshots`.
    pub snapshots: Option<Rc<RefCell<Snapshots>>>,
    /// For the status page: when the daemon started, and the plain
    /// listener's bound address.
    pub started_unix_ms: u64,
    pub http_address: SocketAddr,
}

pub struct HttpsState {
    pub certificates: RefCell<Certificates>,
    /// The port it listens on, for `/api/https` (the bound one, so that
    /// `--https-listen 127.0.0.1:0` in tests reports the real port).
    pub port: u16,
    pub address: SocketAddr,
}

/// Serve one TCP connection until it closes: requests, or the WebSocket it
/// upgrades to. `tls` for the HTTPS listener; `stop` closes when the daemon
/// shuts down, which ends a wait for the next request.
///
/// The socket comes boxed, and moves out of its box at once: an async
/// function keeps its arguments for as long as it runs, which for a peer is
/// hours, and a `TcpStream` is 120 bytes where a box is 8.
pub async fn serve(shared: &Shared, tcp: Box<TcpStream>, tls: bool, address: SocketAddr, stop: Receiver<()>) {
    let tcp = *tcp;
    // Signaling is small and latency-bound: no Nagle delay.
    let _ = tcp.set_nodelay(true);
    let stream = if tls {
        let Some(https) = &shared.https else { return };
        let config = https.certificates.borrow().server_config.clone();
        // The handshake is part of the request head's time budget.
        // Boxed: this task lives as long as the connection, and keeps room
        // for the largest thing it ever waits on.
        let handshake = Box::pin(with_timeout(HEAD_TIMEOUT, Tls::accept(tcp, config)));
        match handshake.await {
            Some(Ok(stream)) => stream,
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
        Stream::plain(tcp)
    };
    let http = Box::pin(serve_http(shared, stream, address, stop));
    let upgrade = http.await;
    if let Some(upgrade) = upgrade {
        let serving = Box::pin(ws::serve(&shared.hub, shared.config.max_message_bytes, upgrade));
        serving.await;
    }
}

/// Why no request head could be read.
enum ReadFailure {
    /// The client closed, the socket failed, or we are stopping.
    Gone,
    Head(HeadError),
}

/// Answer requests until the connection closes (`None`) or upgrades.
async fn serve_http(
    shared: &Shared,
    mut stream: Stream,
    address: SocketAddr,
    stop: Receiver<()>,
) -> Option<Box<Upgrade>> {
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

        if let Some(codec) = routes::websocket(&request.path, &shared.config) {
            match ws::check_upgrade(&request, &shared.config.allowed_origins) {
                Ok(switching) => {
                    with_timeout(WRITE_TIMEOUT, stream.write_all(&switching)).await?.ok()?;
                    buffer.shrink_to_fit();
                    let query = http::parse_query(request.query.as_deref().unwrap_or(""));
                    let hello = codec.hello(&query, &shared.config.peerjs.key);
                    let link = Link { address: address.ip().to_canonical(), tls: stream.is_tls(), since_unix_ms: 0 };
                    return Some(Box::new(Upgrade { stream, leftover: buffer, hello, codec, link }));
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

        if let Some(wanted) = routes::event_stream(&request) {
            match wanted.and_then(|since| sse::open(&shared.feed, since)) {
                Ok(opened) => {
                    let head = routes::event_stream_head(&request, &shared.config);
                    Box::pin(sse::serve(stream, opened, head, address, stop)).await;
                }
                Err(response) => {
                    write_response(&mut stream, &response, false, false).await;
                    linger_close(stream).await;
                }
            }
            return None;
        }

        if let Some(name) = routes::snapshot_wanted(&request) {
            let path = shared.snapshots.as_ref().and_then(|store| store.borrow().path(name));
            let bytes = match path {
                Some(path) => smol::unblock(move || std::fs::read(path).ok()).await,
                None => None,
            };
            let response = routes::snapshot_response(bytes);
            let keep_alive = request.keep_alive() && !request.has_body();
            if !write_response(&mut stream, &response, request.method == "HEAD", keep_alive).await || !keep_alive {
                return None;
            }
            continue;
        }

        if routes::is_snapshot_upload(&request) || routes::is_door_open(&request) {
            let response = if routes::is_door_open(&request) {
                open_door(shared, &request, &mut stream, &mut buffer, address).await
            } else {
                upload_snapshot(shared, &request, &mut stream, &mut buffer, address).await
            };
            let response = routes::with_cors(response, &request, &shared.config);
            let refused = response.status >= 400;
            if write_response(&mut stream, &response, false, false).await && refused {
                linger_close(stream).await;
            } else {
                let _ = with_timeout(WRITE_TIMEOUT, stream.close()).await;
            }
            return None;
        }

        let keep_alive = request.keep_alive() && !request.has_body();
        let response = respond(shared, &request);
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

/// `POST /api/snapshots?id=..&token=..` with a JPEG body: the caller
/// proves to be the connected peer `id` before a byte of the body is read,
/// then the body (exactly its `Content-Length`, at most `jpeg::MAX_BYTES`,
/// within `BODY_TIMEOUT`) must be a JPEG `jpeg::check` keeps. Answers 201
/// with the picture's name and URL, to send with the ring.
async fn upload_snapshot(
    shared: &Shared,
    request: &Request,
    stream: &mut Stream,
    buffer: &mut Vec<u8>,
    address: SocketAddr,
) -> Response {
    let Some(store) = &shared.snapshots else {
        return Response::json_error(404, "pictures are turned off (--no-snapshots)");
    };
    let query = http::parse_query(request.query.as_deref().unwrap_or(""));
    let field = |name: &str| query.iter().find(|(key, _)| key == name).and_then(|(_, value)| value.clone());
    let (Some(id), Some(token)) = (field("id"), field("token")) else {
        return Response::json_error(400, "id and token are required");
    };
    if !shared.hub.borrow().router().proves(&id, &token) {
        info!("{address}: a picture refused: not the connected peer {id:?} with its token");
        return Response::json_error(403, "not the connected peer with that id and token");
    }
    if !store.borrow_mut().allow(&id, Instant::now()) {
        return Response::json_error(429, "too many pictures; a minute later, again");
    }
    if request.header("transfer-encoding").is_some() {
        return Response::json_error(411, "send the picture with a Content-Length");
    }
    let length =
        match body_length(request, jpeg::MAX_BYTES, "larger than 100 KiB", "send the picture with a Content-Length") {
            Ok(length) => length,
            Err(response) => return response,
        };
    let body = match read_body(stream, buffer, length).await {
        Ok(body) => body,
        Err(response) => {
            debug!("{address}: a picture's body did not arrive whole within {BODY_TIMEOUT:?}");
            return response;
        }
    };
    if let Err(why) = jpeg::check(&body) {
        return Response::json_error(415, &format!("not a picture we keep: {why}"));
    }
    let admitted = match store.borrow_mut().admit(&id, body.len() as u64, Instant::now()) {
        Ok(admitted) => admitted,
        Err(error) => return Response::json_error(500, &format!("no random name: {error}")),
    };
    if let Err(error) = snapshots::write(&admitted, body).await {
        if store.borrow_mut().write_failed(&admitted.name) {
            warn!(
                "cannot keep a picture in {}: {error}; rings go without pictures until it works",
                admitted.path.display()
            );
        }
        return Response::json_error(507, "the daemon cannot store the picture now");
    }
    if store.borrow_mut().write_worked() {
        info!("pictures are kept again in {}", admitted.path.parent().unwrap_or(&admitted.path).display());
    }
    let name = &admitted.name;
    Response::json(201, format!(r#"{{"snapshot":"{name}","url":"/snapshots/{name}"}}"#))
}

/// The `Content-Length` of a request that must have one of at most `max`
/// bytes; or the answer: `413` saying `too_large`, `411` saying `missing`.
fn body_length(request: &Request, max: usize, too_large: &str, missing: &str) -> Result<usize, Response> {
    match request.header("content-length").map(|length| length.trim().parse::<usize>()) {
        Some(Ok(length)) if length > max => Err(Response::json_error(413, too_large)),
        Some(Ok(length)) => Ok(length),
        _ => Err(Response::json_error(411, missing)),
    }
}

/// The body of a request whose head said `length` bytes (what came with
/// the head is in `buffer`), within `BODY_TIMEOUT`; or the error to answer.
async fn read_body(stream: &mut Stream, buffer: &mut Vec<u8>, length: usize) -> Result<Vec<u8>, Response> {
    let mut body = std::mem::take(buffer);
    if body.len() > length {
        return Err(Response::json_error(400, "more bytes than the Content-Length"));
    }
    let read = with_timeout(BODY_TIMEOUT, async {
        let mut chunk = [0u8; READ_CHUNK];
        while body.len() < length {
            let want = (length - body.len()).min(READ_CHUNK);
            match stream.read(&mut chunk[..want]).await {
                Ok(0) | Err(_) => return false,
                Ok(read) => body.extend_from_slice(&chunk[..read]),
            }
        }
        true
    })
    .await;
    if read != Some(true) {
        return Err(Response::json_error(408, "the body did not arrive whole"));
    }
    Ok(body)
}

/// The largest body of `POST /api/door/open`: a door, an id, a token and a
/// PIN or device key, with room to spare.
pub const MAX_DOOR_REQUEST_BYTES: usize = 1024;

/// `POST /api/door/open` with `{"door":..,"id":..,"token":..,"pin"|"key":..}`
/// as JSON: the door opens for the peer that answered its current ring
/// (`door.rs` decides), and the answer waits for the door's command.
async fn open_door(
    shared: &Shared,
    request: &Request,
    stream: &mut Stream,
    buffer: &mut Vec<u8>,
    address: SocketAddr,
) -> Response {
    let Some(doors) = &shared.config.doors else {
        return Response::json_error(404, "no door opener here (start intercomd with --door-open)");
    };
    // JSON only: a page of another site cannot send it without a CORS
    // preflight, which the daemon does not answer.
    let json = request.header("content-type").is_some_and(|kind| kind.trim().starts_with("application/json"));
    if !json {
        return Response::json_error(415, "send a JSON body (Content-Type: application/json)");
    }
    let length = match body_length(
        request,
        MAX_DOOR_REQUEST_BYTES,
        "larger than 1 KiB",
        "send the body with a Content-Length",
    ) {
        Ok(length) => length,
        Err(response) => return response,
    };
    let body = match read_body(stream, buffer, length).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Response::json_error(400, "the body is not a JSON object");
    };
    let text = |name: &str| fields.get(name).and_then(serde_json::Value::as_str);
    let (Some(door), Some(id), Some(token)) = (text("door"), text("id"), text("token")) else {
        return Response::json_error(400, "door, id and token are required");
    };
    let proof = match (text("pin"), text("key")) {
        (Some(pin), _) => Proof::Pin(pin),
        (None, Some(key)) => Proof::Key(key),
        (None, None) => Proof::Nothing,
    };
    let granted =
        shared.hub.borrow_mut().authorize_door(door, id, token, address.ip().to_canonical(), proof, Instant::now());
    let opening = match granted {
        Ok(opening) => opening,
        Err(refusal) => {
            // The door, who and why; never the PIN or key.
            info!("{address}: door {door:?} not opened for {id:?}: {}", refusal.reason());
            let response = door_error(refusal.status(), &refusal.message(), refusal.reason());
            return match refusal {
                Refusal::Paused { retry_after } => {
                    response.with_header("Retry-After", retry_after.as_secs().max(1).to_string())
                }
                _ => response,
            };
        }
    };
    let outcome = opener::open(&shared.hub, &opening, doors.timeout).await;
    let failed = match &outcome {
        _ if outcome.succeeded() => {
            let mut body = String::from("{\"opened\":");
            push_json_string(&mut body, &opening.door);
            body.push('}');
            return Response::json(200, body);
        }
        opener::Outcome::Exited { status, .. } => format!("the door's opener failed ({status})"),
        opener::Outcome::Killed { .. } => "the door's opener did not finish in time".to_string(),
        opener::Outcome::NotStarted(_) => "the door's opener could not be started".to_string(),
    };
    door_error(502, &failed, "opener-failed")
}

/// `{"error":"<text>","reason":"<reason>"}` with `status`.
fn door_error(status: u16, text: &str, reason: &str) -> Response {
    let mut body = String::from("{\"error\":");
    push_json_string(&mut body, text);
    body.push_str(",\"reason\":");
    push_json_string(&mut body, reason);
    body.push('}');
    Response::json(status, body)
}

/// The answer to `request`, with every borrow closed before it is written.
fn respond(shared: &Shared, request: &Request) -> Response {
    let hub = shared.hub.borrow();
    let certificates = shared.https.as_ref().map(|https| (https.address, https.certificates.borrow()));
    let https = certificates.as_ref().map(|(address, certificates)| routes::Https {
        address: *address,
        port: address.port(),
        ca_der: certificates.ca_der.as_deref(),
        generated: certificates.generated(),
    });
    let feed = shared.feed.borrow();
    let view = View {
        config: &shared.config,
        hub: &hub,
        feed: &feed,
        connections: &shared.connections,
        https,
        started_unix_ms: shared.started_unix_ms,
        http_address: shared.http_address,
        interface_addresses: tls::interface_addresses,
    };
    routes::respond(&view, request)
}

/// Read until `buffer` holds a complete head (or the limit is passed).
async fn read_head(stream: &mut Stream, buffer: &mut Vec<u8>) -> Result<(Request, usize), ReadFailure> {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        if let Some(parsed) = http::parse_head(buffer).map_err(ReadFailure::Head)? {
            return Ok(parsed);
        }
        let room = MAX_HEAD_BYTES + 1 - buffer.len().min(MAX_HEAD_BYTES);
        let read = stream.read(&mut chunk[..room.min(READ_CHUNK)]).await.map_err(|_| ReadFailure::Gone)?;
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
