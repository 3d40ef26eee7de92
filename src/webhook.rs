//! Webhooks and ntfy: every event POSTed as its JSON line to each
//! `--webhook` URL (Home Assistant's webhook trigger, Node-RED), and a phone
//! notification through ntfy (`--ntfy`) on every ring.
//!
//! A small HTTP/1.1 client of our own: one request per connection
//! (`Connection: close`, a `Content-Length` body), the status line read with
//! httparse. Plain http only: an https client (rustls' client side and
//! certificate verification) measured 143 KiB of binary, more than the
//! whole events issue's budget, so `config.rs` refuses https targets with a
//! message saying so (the client is in this file's history, commit
//! "webhook: POST each event ...", should the budget change).
//!
//! Invariants:
//! - Nothing here exists unless a flag asks for it: without `--webhook` and
//!   `--ntfy` there is no task, no timer and no socket.
//! - The router never waits for a target. Each target has one task and one
//!   queue of [`QUEUE`] events, filled by the feed without waiting; when a
//!   target is that far behind, further events are lost for it (and only
//!   for it) and counted in its `dropped`.
//! - One request in flight per target, events in order. Every attempt is
//!   bounded ([`CONNECT_TIMEOUT`], [`EXCHANGE_TIMEOUT`]); a failed one is
//!   retried after each of [`RETRY_DELAYS`] and then given up (`failed`), so
//!   a target that accepts and never answers holds its queue for at most
//!   about a minute per event. What is retried is decided by [`next_step`],
//!   pure.
//! - Logging: one warning when a target starts failing, one info line when
//!   it works again, nothing per event above debug. Credentials never reach
//!   the log: URLs are printed through `Url`'s `Display`, which leaves them
//!   out, and tokens are only ever written into the request.

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::Duration;

use log::{debug, info, warn};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Timer;

use crate::config::{Hooks, Ntfy};
use crate::events::{push_json_string, Kind};
use crate::feed::{Feed, Published, Subscription};
use crate::http::{percent_decode, Url};
use crate::resolve;
use crate::stream::with_timeout;

/// Events queued for one target. A target this far behind (down, or slow
/// through its retries) loses the events that do not fit, counted in its
/// `dropped`; a ring every few seconds for a minute still fits.
pub const QUEUE: usize = 32;
/// Time to resolve the host and open the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for one whole attempt: connect, TLS handshake, request, status line.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The pauses before each retry of a failed attempt; after the last retry
/// fails the event is given up for that target.
pub const RETRY_DELAYS: [Duration; 4] =
    [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4), Duration::from_secs(8)];
/// Longest response head read; a target is only asked for its status.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// What a notification says.
const NTFY_MESSAGE: &str = "Someone is at the door";

/// Where one target's requests go and what they carry.
pub struct Target {
    /// Where requests go (for ntfy, the server's root).
    url: Url,
    /// `webhook http://ha:8123/api/webhook/door` or `ntfy http://ntfy.lan/door`,
    /// without credentials: what the log calls it.
    label: String,
    /// The `Authorization` header's value, if any.
    authorization: Option<String>,
    kind: TargetKind,
}

enum TargetKind {
    /// Every event, its JSON as is.
    Webhook,
    /// Rings only, as ntfy's JSON publishing format. `pictures`: where the
    /// phone fetches a ring's picture from (`http://…/`), its attachment.
    Ntfy { topic: String, click: String, pictures: String },
}

impl Target {
    pub fn webhook(url: Url) -> Target {
        let authorization = url.userinfo.as_deref().map(basic);
        Target { label: format!("webhook {url}"), url, authorization, kind: TargetKind::Webhook }
    }

    /// `click`: the link the notification opens (the intercom page);
    /// `pictures`: the address its attachment is fetched from.
    pub fn ntfy(ntfy: &Ntfy, click: String, pictures: String) -> Target {
        let authorization = match &ntfy.token {
            Some(token) => Some(format!("Bearer {}", token.0)),
            None => ntfy.server.userinfo.as_deref().map(basic),
        };
        Target {
            label: format!("ntfy {}{}", ntfy.server, ntfy.topic),
            url: ntfy.server.clone(),
            authorization,
            kind: TargetKind::Ntfy { topic: ntfy.topic.clone(), click, pictures },
        }
    }

    /// The request body for this event, or `None` when the target does not
    /// want it.
    pub fn body(&self, published: &Published) -> Option<String> {
        match &self.kind {
            TargetKind::Webhook => Some(published.json.to_string()),
            TargetKind::Ntfy { topic, click, pictures } => {
                let event = &published.event;
                if event.kind != Kind::Ring {
                    return None;
                }
                let title = match event.to.as_deref() {
                    None | Some("*") => format!("{} rings", event.from),
                    Some(to) => format!("{} is calling {to}", event.from),
                };
                // Fields in the order ntfy's documentation lists them.
                let mut body = String::from("{\"topic\":");
                push_json_string(&mut body, topic);
                body.push_str(",\"title\":");
                push_json_string(&mut body, &title);
                body.push_str(",\"message\":");
                push_json_string(&mut body, NTFY_MESSAGE);
                body.push_str(",\"priority\":4,\"tags\":[\"bell\"],\"click\":");
                push_json_string(&mut body, click);
                if let Some(name) = &event.snapshot {
                    // The visitor, shown in the notification: the phone's
                    // ntfy app fetches it from the daemon.
                    body.push_str(",\"attach\":");
                    push_json_string(&mut body, &format!("{pictures}snapshots/{name}"));
                    body.push_str(",\"filename\":\"visitor.jpg\"");
                }
                body.push('}');
                Some(body)
            }
        }
    }

    /// The whole request: head and JSON body.
    pub fn request(&self, body: &str) -> Vec<u8> {
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: intercomd/{}\r\n",
            self.url.target,
            self.url.authority(),
            env!("CARGO_PKG_VERSION")
        );
        if let Some(authorization) = &self.authorization {
            head.push_str(&format!("Authorization: {authorization}\r\n"));
        }
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        let mut request = head.into_bytes();
        request.extend_from_slice(body.as_bytes());
        request
    }
}

/// `Basic <base64 of user:password>`, from the URL's (percent-encoded)
/// userinfo.
fn basic(userinfo: &str) -> String {
    let decoded = percent_decode(userinfo, false).unwrap_or_else(|| userinfo.to_string());
    format!("Basic {}", base64(decoded.as_bytes()))
}

/// Standard base64 with padding (RFC 4648), for Basic auth: twenty lines
/// rather than a crate.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &byte)| n | u32::from(byte) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// How an attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered with this status.
    Status(u16),
    /// No answer: refused, reset, timed out, not HTTP. Says what happened.
    Failed(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Status(status) => write!(f, "answered {status}"),
            Outcome::Failed(why) => f.write_str(why),
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Delivered,
    RetryAfter(Duration),
    GiveUp,
}

/// After attempt number `attempt` (0 for the first) ended in `outcome`:
/// a 2xx is delivered; no answer, a 5xx, 408 or 429 is retried after the
/// next of [`RETRY_DELAYS`] while there is one; anything else (a 4xx that
/// will not change by asking again, a redirect we do not follow) is given
/// up at once.
pub fn next_step(outcome: &Outcome, attempt: usize) -> Step {
    let retry = || RETRY_DELAYS.get(attempt).map_or(Step::GiveUp, |&delay| Step::RetryAfter(delay));
    match *outcome {
        Outcome::Status(200..=299) => Step::Delivered,
        Outcome::Status(408 | 429 | 500..=599) | Outcome::Failed(_) => retry(),
        Outcome::Status(_) => Step::GiveUp,
    }
}

/// The status of the response whose head starts `buffer`; `Ok(None)` while
/// the head is incomplete. Interim 1xx responses are skipped.
fn parse_status(buffer: &[u8]) -> Result<Option<u16>, &'static str> {
    let mut rest = buffer;
    loop {
        // Only the status line matters, but a head is only over at its
        // blank line (an interim response is followed by the real one).
        if !b"HTTP/".iter().zip(rest).all(|(want, got)| want == got) {
            return Err("an answer that is not HTTP/1.x");
        }
        let Some(end) = rest.windows(4).position(|window| window == b"\r\n\r\n") else {
            if buffer.len() >= MAX_RESPONSE_HEAD {
                return Err("a response head longer than 16 KiB");
            }
            return Ok(None);
        };
        let line = rest.split(|b| *b == b'\r').next().unwrap_or_default();
        let code = match line {
            [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'0' | b'1', b' ', a, b, c, ..]
                if [a, b, c].iter().all(|digit| digit.is_ascii_digit())
                    && matches!(line.get(12), None | Some(b' ')) =>
            {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err("an answer that is not HTTP/1.x"),
        };
        if (100..200).contains(&code) {
            rest = &rest[end + 4..];
            continue;
        }
        return Ok(Some(code));
    }
}

/// One attempt: connect, send `request`, read the status.
async fn exchange(url: &Url, request: &[u8]) -> Outcome {
    let attempt = async {
        let tcp = with_timeout(CONNECT_TIMEOUT, resolve::connect(&url.host, url.port))
            .await
            .ok_or_else(|| format!("no connection within {CONNECT_TIMEOUT:?}"))?
            .map_err(|error| error.to_string())?;
        let _ = tcp.set_nodelay(true);
        let mut stream = tcp;
        stream.write_all(request).await.map_err(|error| error.to_string())?;
        stream.flush().await.map_err(|error| error.to_string())?;
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let read = stream.read(&mut chunk).await.map_err(|error| error.to_string())?;
            if read == 0 {
                return Err("closed without an answer".to_string());
            }
            buffer.extend_from_slice(&chunk[..read]);
            if let Some(status) = parse_status(&buffer)? {
                return Ok(status);
            }
        }
    };
    match with_timeout(EXCHANGE_TIMEOUT, attempt).await {
        Some(Ok(status)) => Outcome::Status(status),
        Some(Err(why)) => Outcome::Failed(why),
        None => Outcome::Failed(format!("no answer within {EXCHANGE_TIMEOUT:?}")),
    }
}

/// One target's task: its queue, drained in order.
pub struct Worker {
    target: Target,
    subscription: Subscription,
}

impl Worker {
    /// Deliver events until the feed goes away.
    pub async fn run(self) {
        let Worker { target, subscription: Subscription { events, stats } } = self;
        // In a failing spell: warned once, quiet until it works again.
        let mut failing = false;
        while let Some(published) = events.recv().await {
            let Some(body) = target.body(&published) else { continue };
            let request = target.request(&body);
            let mut attempt = 0;
            loop {
                let outcome = exchange(&target.url, &request).await;
                let step = next_step(&outcome, attempt);
                let kind = published.event.kind.as_str();
                debug!("{}: {kind} event, attempt {}: {outcome}", target.label, attempt + 1);
                if step == Step::Delivered {
                    stats.delivered.set(stats.delivered.get() + 1);
                    stats.up.set(true);
                    if failing {
                        info!("{}: delivering again", target.label);
                        failing = false;
                    }
                    break;
                }
                stats.up.set(false);
                if !failing {
                    let next = if step == Step::GiveUp { "this event is given up" } else { "retrying" };
                    warn!("{}: {outcome}; {next} (no more warnings until it works again)", target.label);
                    failing = true;
                }
                match step {
                    Step::RetryAfter(delay) => {
                        Timer::after(delay).await;
                        attempt += 1;
                    }
                    _ => {
                        stats.failed.set(stats.failed.get() + 1);
                        break;
                    }
                }
            }
        }
    }
}

/// The workers the flags ask for, each subscribed to the feed: none without
/// `--webhook` or `--ntfy`. `ports`: the HTTPS and HTTP listeners' ports,
/// for the notification's link when `--public-url` is not given.
pub fn workers(hooks: &Hooks, feed: &RefCell<Feed>, ports: (Option<u16>, u16)) -> Vec<Worker> {
    let mut targets: Vec<Target> = hooks.webhooks.iter().cloned().map(Target::webhook).collect();
    if let Some(ntfy) = &hooks.ntfy {
        let addresses = crate::tls::interface_addresses();
        let click = match &hooks.public_url {
            Some(url) => url.to_string(),
            None => public_url(&addresses, ports),
        };
        // Plain http by default: a phone app does not trust the daemon's own
        // certificate authority, so it could not fetch over https.
        let pictures = match &hooks.public_url {
            Some(url) => url.to_string(),
            None => public_url(&addresses, (None, ports.1)),
        };
        let target = Target::ntfy(ntfy, click.clone(), pictures);
        info!("{}: a notification on each ring, opening {click}", target.label);
        targets.push(target);
    }
    targets
        .into_iter()
        .map(|target| {
            let subscription = feed.borrow_mut().subscribe(
                if matches!(target.kind, TargetKind::Webhook) { "webhook" } else { "ntfy" },
                target.url.to_string(),
                QUEUE,
            );
            if matches!(target.kind, TargetKind::Webhook) {
                info!("{}: every event", target.label);
            }
            Worker { target, subscription }
        })
        .collect()
}

/// The pages' address when `--public-url` is not given:
/// `https://<first LAN IPv4>:<https port>/`, or `http://…:<http port>/`
/// without HTTPS. Loopback and link-local addresses are not the LAN; with
/// none left, `localhost`.
pub fn public_url(addresses: &[IpAddr], (https_port, http_port): (Option<u16>, u16)) -> String {
    let host = addresses
        .iter()
        .find_map(|address| match address {
            IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified() => Some(v4.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "localhost".to_string());
    match https_port {
        Some(port) => format!("https://{host}:{port}/"),
        None => format!("http://{host}:{http_port}/"),
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::config::Secret;
    use crate::events::Event;

    fn published(kind: Kind, to: Option<&str>) -> Published {
        let event = Event {
            kind,
            unix_ms: 1_796_220_000_000,
            room: "home".into(),
            from: "door".into(),
            to: to.map(str::to_string),
            call: Some("c1".into()),
            by: None,
            reason: None,
            media: Some("audio".into()),
            snapshot: None,
            elapsed: None,
        };
        Published { seq: Some(3), json: Rc::from(event.to_json(Some(3))), event }
    }

    #[test]
    fn a_webhook_request_is_the_event_line_with_basic_auth_from_the_url() {
        let target = Target::webhook(Url::parse("http://me:p%40ss@ha:8123/api/webhook/door").unwrap());
        assert_eq!(target.label, "webhook http://ha:8123/api/webhook/door");
        let event = published(Kind::Answered, Some("kitchen"));
        let body = target.body(&event).unwrap();
        assert_eq!(body, &*event.json);
        let request = String::from_utf8(target.request(&body)).unwrap();
        assert_eq!(
            request,
            format!(
                "POST /api/webhook/door HTTP/1.1\r\nHost: ha:8123\r\nUser-Agent: intercomd/{}\r\n\
                 Authorization: Basic bWU6cEBzcw==\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                env!("CARGO_PKG_VERSION"),
                body.len()
            )
        );
    }

    #[test]
    fn ntfy_hears_of_rings_only() {
        let ntfy = Ntfy {
            server: Url::parse("http://ntfy.lan/").unwrap(),
            topic: "door".into(),
            token: Some(Secret("tk_x".into())),
        };
        let target = Target::ntfy(&ntfy, "https://10.0.0.2:8443/".into(), "http://10.0.0.2:8080/".into());
        assert_eq!(target.label, "ntfy http://ntfy.lan/door");
        assert_eq!(
            target.body(&published(Kind::Ring, Some("*"))).unwrap(),
            r#"{"topic":"door","title":"door rings","message":"Someone is at the door","priority":4,"tags":["bell"],"click":"https://10.0.0.2:8443/"}"#
        );
        let directed = target.body(&published(Kind::Ring, Some("kitchen"))).unwrap();
        assert!(directed.contains(r#""title":"door is calling kitchen""#), "{directed}");
        let mut pictured = published(Kind::Ring, Some("*"));
        pictured.event.snapshot = Some("0123456789abcdef0123456789abcdef.jpg".into());
        let with_picture = target.body(&pictured).unwrap();
        assert!(
            with_picture.ends_with(r#""click":"https://10.0.0.2:8443/","attach":"http://10.0.0.2:8080/snapshots/0123456789abcdef0123456789abcdef.jpg","filename":"visitor.jpg"}"#),
            "{with_picture}"
        );
        for kind in Kind::ALL.into_iter().filter(|kind| *kind != Kind::Ring) {
            assert_eq!(target.body(&published(kind, Some("kitchen"))), None, "{kind:?}");
        }
        let request = String::from_utf8(target.request("{}")).unwrap();
        assert!(request.starts_with("POST / HTTP/1.1\r\nHost: ntfy.lan\r\n"), "{request}");
        assert!(request.contains("\r\nAuthorization: Bearer tk_x\r\n"), "{request}");
    }

    #[test]
    fn what_is_retried_and_when() {
        let check = |outcome: Outcome, expected: [Step; 5]| {
            let got: Vec<Step> = (0..5).map(|attempt| next_step(&outcome, attempt)).collect();
            assert_eq!(got, expected, "{outcome:?}");
        };
        let retried = RETRY_DELAYS.map(Step::RetryAfter);
        let retried = [retried[0], retried[1], retried[2], retried[3], Step::GiveUp];
        for status in [200, 201, 204, 299] {
            check(Outcome::Status(status), [Step::Delivered; 5]);
        }
        for status in [500, 502, 503, 599, 408, 429] {
            check(Outcome::Status(status), retried);
        }
        check(Outcome::Failed("refused".into()), retried);
        for status in [301, 302, 400, 401, 403, 404, 405, 413, 100, 600] {
            check(Outcome::Status(status), [Step::GiveUp; 5]);
        }
        assert_eq!(RETRY_DELAYS.iter().sum::<Duration>(), Duration::from_secs(15));
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), Ok(Some(200)));
        assert_eq!(parse_status(b"HTTP/1.0 503 Busy\r\n\r\nbody"), Ok(Some(503)));
        assert_eq!(parse_status(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"), Ok(Some(204)));
        assert_eq!(parse_status(b"HTTP/1.1 100 Continue\r\n\r\n"), Ok(None));
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\nServer:"), Ok(None));
        assert_eq!(parse_status(b""), Ok(None));
        assert!(parse_status(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_status(b"SSH-2.0-OpenSSH").is_err(), "told apart before the head ends");
        let long = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_RESPONSE_HEAD));
        assert!(parse_status(long.as_bytes()).is_err());
    }

    #[test]
    fn base64_of_rfc4648() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn the_pages_address_is_the_first_lan_ipv4() {
        let addresses: Vec<IpAddr> = ["127.0.0.1", "::1", "169.254.3.4", "fe80::1", "192.168.1.20", "10.0.0.2"]
            .map(|a| a.parse().unwrap())
            .into();
        assert_eq!(public_url(&addresses, (Some(8443), 8080)), "https://192.168.1.20:8443/");
        assert_eq!(public_url(&addresses, (None, 8080)), "http://192.168.1.20:8080/");
        assert_eq!(public_url(&addresses[..4], (Some(443), 80)), "https://localhost:443/");
    }
}
