//! Webhooks and ntfy against the real daemon on loopback: a receiver of our
//! own (a std `TcpListener` on 127.0.0.1) reads each request byte for byte
//! after real calls between WebSocket peers; retries after a 500 and after
//! a refused connection; a target that never answers; no credentials in
//! the log; no connection at all without the flags.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Client, Daemon, WAIT};
use serde_json::{json, Value};

/// The daemon's bound on one attempt (`webhook::EXCHANGE_TIMEOUT`).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn run(test: impl std::future::Future<Output = ()>) {
    smol::block_on(test);
}

/// How the receiver answers one connection.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Read the request, then hold the connection and never answer.
    Hang,
}

/// A local HTTP server that hands every request it reads to the test and
/// answers by a script (200 once the script runs out).
struct Receiver {
    addr: SocketAddr,
    requests: mpsc::Receiver<(Instant, String)>,
}

impl Receiver {
    fn start(script: Vec<Answer>) -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    fn on(listener: TcpListener, script: Vec<Answer>) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let (sender, requests) = mpsc::channel();
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let request = read_request(&mut stream);
                if sender.send((Instant::now(), request)).is_err() {
                    return;
                }
                match script.next().unwrap_or(Answer::Status(200)) {
                    Answer::Status(status) => {
                        let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                    Answer::Hang => held.push(stream),
                }
            }
        });
        Receiver { addr, requests }
    }

    /// The next request, waiting at most `limit`.
    fn next_within(&self, limit: Duration) -> (Instant, String) {
        self.requests.recv_timeout(limit).unwrap_or_else(|_| panic!("no request arrived within {limit:?}"))
    }

    fn next(&self) -> String {
        self.next_within(WAIT).1
    }

    /// The next request's event, after checking its head byte for byte.
    fn next_event(&self, path: &str, authorization: Option<&str>) -> (Value, String) {
        let request = self.next();
        let (_, body) = request.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head in {request:?}"));
        assert_eq!(request, expected_request(self.addr, path, authorization, body));
        let event: Value = serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {body:?}"));
        (event, body.to_string())
    }
}

/// Read one request: the head, then `Content-Length` bytes of body.
fn read_request(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().unwrap());
            if bytes.len() >= end + 4 + length {
                break;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => bytes.extend_from_slice(&chunk[..read]),
        }
    }
    String::from_utf8(bytes).expect("a UTF-8 request")
}

fn expected_request(addr: SocketAddr, path: &str, authorization: Option<&str>, body: &str) -> String {
    let authorization = authorization.map(|value| format!("Authorization: {value}\r\n")).unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: intercomd/{VERSION}\r\n{authorization}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The event line the daemon writes, with the time it chose (presence
/// events have no `seq`).
fn line(event: &Value, fields: &str) -> String {
    let seq = if event["seq"].is_null() { String::new() } else { format!(r#""seq":{},"#, event["seq"]) };
    format!(r#"{{{seq}"event":{},"time":{},{fields}}}"#, event["event"], event["time"])
}

/// `caller` calls `callee` (call `call`), who answers; the caller hangs up.
async fn call(caller: &mut Client, (callee, callee_id): (&mut Client, &str), call: &str) {
    caller.send(json!({"type":"call-request","to":callee_id,"call":call,"media":"audio"})).await;
    let request = callee.recv_type("call-request").await;
    let caller_id = request["from"].as_str().unwrap().to_string();
    callee.send(json!({"type":"call-accept","to":caller_id,"call":call})).await;
    caller.recv_type("call-accept").await;
    caller.send(json!({"type":"hangup","to":callee_id,"call":call,"reason":"done"})).await;
    callee.recv_type("hangup").await;
}

async fn join_pair(daemon: &Daemon) -> (Client, Client) {
    let (mut door, _) = Client::join(daemon, "door", None).await;
    let (kitchen, _) = Client::join(daemon, "kitchen", None).await;
    door.recv_type("peer-joined").await;
    (door, kitchen)
}

fn wait_for_log_within(daemon: &Daemon, text: &str, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    while !daemon.log().iter().any(|line| line.contains(text)) {
        assert!(Instant::now() < deadline, "the daemon never logged {text:?} within {limit:?}: {:?}", daemon.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    Instant::now()
}

#[test]
fn every_event_is_posted_and_a_ring_pushed_to_ntfy_byte_for_byte() {
    run(async {
        let (hook, ntfy) = (Receiver::start(vec![]), Receiver::start(vec![]));
        let token = common::scratch_dir().join("token");
        std::fs::write(&token, "tk_sesame\n").unwrap();
        let webhook_url = format!("http://me:p%40ss@{}/api/webhook/door-id?x=1", hook.addr);
        let ntfy_url = format!("http://{}/door", ntfy.addr);
        let daemon = Daemon::start(&[
            "--webhook",
            &webhook_url,
            "--ntfy",
            &ntfy_url,
            "--ntfy-token-file",
            token.to_str().unwrap(),
            "--public-url",
            "https://intercom.lan:8443/",
            "--log-level",
            "debug",
        ]);
        let (mut door, mut kitchen) = join_pair(&daemon).await;
        call(&mut door, (&mut kitchen, "kitchen"), "c1").await;
        let (path, basic) = ("/api/webhook/door-id?x=1", Some("Basic bWU6cEBzcw=="));
        let (online, body) = hook.next_event(path, basic);
        assert_eq!(body, line(&online, r#""room":"lobby","peer":"door""#));
        assert_eq!(online["seq"], Value::Null, "presence is not numbered");
        let (online, body) = hook.next_event(path, basic);
        assert_eq!(body, line(&online, r#""room":"lobby","peer":"kitchen""#));
        let (ring, body) = hook.next_event(path, basic);
        assert_eq!(body, line(&ring, r#""room":"lobby","from":"door","to":"kitchen","call":"c1","media":"audio""#));
        assert_eq!(ring["seq"], 1);
        let (answered, _) = hook.next_event(path, basic);
        assert_eq!((answered["event"].as_str(), answered["by"].as_str()), (Some("answered"), Some("kitchen")));
        let (ended, _) = hook.next_event(path, basic);
        assert_eq!((ended["event"].as_str(), ended["seq"].as_u64()), (Some("ended"), Some(3)));

        let notification = r#"{"topic":"door","title":"door is calling kitchen","message":"Someone is at the door","priority":4,"tags":["bell"],"click":"https://intercom.lan:8443/"}"#;
        assert_eq!(ntfy.next(), expected_request(ntfy.addr, "/", Some("Bearer tk_sesame"), notification));
        // Only rings: the next notification is the next ring, not this
        // call's answer or end.
        call(&mut kitchen, (&mut door, "door"), "c2").await;
        let second = ntfy.next();
        assert!(second.ends_with(r#""title":"kitchen is calling door","message":"Someone is at the door","priority":4,"tags":["bell"],"click":"https://intercom.lan:8443/"}"#), "{second}");
        hook.next_event(path, basic); // the second ring
        drop((door, kitchen));
        let log = daemon.log().join("\n");
        for secret in ["tk_sesame", "p%40ss", "p@ss", "bWU6cEBzcw", "me:"] {
            assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
        }
        assert!(log.contains(&format!("webhook http://{}/api/webhook/door-id?x=1: every event", hook.addr)), "{log}");
        assert!(log.contains(&format!("ntfy http://{}/door: a notification on each ring", ntfy.addr)), "{log}");
    });
}

#[test]
fn a_500_is_retried_with_the_same_bytes() {
    run(async {
        // online, online, then the ring fails once.
        let hook = Receiver::start(vec![Answer::Status(200), Answer::Status(200), Answer::Status(500)]);
        let daemon = Daemon::start(&["--webhook", &format!("http://{}/hook", hook.addr)]);
        let (mut door, mut kitchen) = join_pair(&daemon).await;
        call(&mut door, (&mut kitchen, "kitchen"), "c1").await;
        hook.next();
        hook.next();
        let ring = hook.next();
        assert!(ring.contains(r#""event":"ring""#), "{ring}");
        let again = hook.next();
        assert_eq!(again, ring, "the retry carries the same bytes");
        for event in ["answered", "ended"] {
            let next = hook.next();
            assert!(next.contains(&format!(r#""event":"{event}""#)), "{next}");
        }
        daemon.wait_for_log("answered 500; retrying");
        daemon.wait_for_log("delivering again");
    });
}

#[test]
fn a_refused_connection_is_retried_once_the_target_listens() {
    run(async {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let daemon = Daemon::start(&["--webhook", &format!("http://127.0.0.1:{port}/hook")]);
        let (mut door, mut kitchen) = join_pair(&daemon).await;
        call(&mut door, (&mut kitchen, "kitchen"), "c1").await;
        daemon.wait_for_log("refused");
        // The first retry comes a second after the failure, the last 15 s
        // after it: plenty of time to start listening.
        let hook = Receiver::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), vec![]);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let (event, _) = hook.next_event_within("/hook", RETRIES);
            seen.push(format!("{} {}", event["seq"], event["event"].as_str().unwrap()));
        }
        assert_eq!(seen, ["null online", "null online", "1 ring", "2 answered", "3 ended"], "every event, in order");
        daemon.wait_for_log("delivering again");
        let warnings = daemon.log().iter().filter(|line| line.contains("WARN")).count();
        assert_eq!(warnings, 1, "one warning per failing spell: {:?}", daemon.log());
    });
}

/// Longest wait for a retried request: every retry delay, and a margin.
const RETRIES: Duration = Duration::from_secs(1 + 2 + 4 + 8 + 5);

impl Receiver {
    fn next_event_within(&self, path: &str, limit: Duration) -> (Value, String) {
        let (_, request) = self.next_within(limit);
        let (_, body) = request.split_once("\r\n\r\n").unwrap();
        assert_eq!(request, expected_request(self.addr, path, None, body));
        (serde_json::from_str(body).unwrap(), body.to_string())
    }
}

#[test]
fn a_target_that_never_answers_is_given_up_within_the_bound() {
    run(async {
        let hook = Receiver::start(vec![Answer::Hang]);
        let daemon = Daemon::start(&["--webhook", &format!("http://{}/hook", hook.addr)]);
        // Bystanders in another room talk all through the hang.
        let mut alice = Client::connect(&daemon, "id=alice&room=side").await;
        alice.recv().await;
        let (hung_at, first) = hook.next_within(WAIT);
        assert!(first.contains(r#""peer":"alice""#), "{first}");
        let mut bob = Client::connect(&daemon, "id=bob&room=side").await;
        bob.recv().await;
        alice.recv_type("peer-joined").await;
        let (mut door, mut kitchen) = join_pair(&daemon).await;
        call(&mut door, (&mut kitchen, "kitchen"), "c1").await;
        for n in 0..200 {
            alice.send(json!({"type":"chat","to":"bob","n":n})).await;
        }
        for n in 0..200 {
            assert_eq!(bob.recv().await, json!({"type":"chat","to":"bob","n":n,"from":"alice"}));
        }
        let warned_at = wait_for_log_within(&daemon, "no answer within 10s", EXCHANGE_TIMEOUT + WAIT);
        let waited = warned_at - hung_at;
        assert!(waited <= EXCHANGE_TIMEOUT + WAIT, "warned after {waited:?}");
        // The retry, then everything behind it, in order.
        let (_, again) = hook.next_within(RETRIES);
        assert_eq!(again, first);
        let mut seen = Vec::new();
        while seen.last().is_none_or(|last: &String| !last.ends_with("ended")) {
            let (event, _) = hook.next_event("/hook", None);
            seen.push(format!("{} {}", event["seq"], event["event"].as_str().unwrap()));
        }
        assert_eq!(seen, ["null online", "null online", "null online", "1 ring", "2 answered", "3 ended"]);
        daemon.wait_for_log("delivering again");
        alice.send(json!({"type":"chat","to":"bob","n":200})).await;
        assert_eq!(bob.recv().await["n"], 200);
    });
}

#[test]
fn the_notification_links_to_the_pages_by_default() {
    run(async {
        let ntfy = Receiver::start(vec![]);
        let daemon = Daemon::start(&["--ntfy", &format!("http://{}/door", ntfy.addr)]);
        let (mut door, mut kitchen) = join_pair(&daemon).await;
        call(&mut door, (&mut kitchen, "kitchen"), "c1").await;
        let request = ntfy.next();
        let body: Value = serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
        let click = body["click"].as_str().unwrap().to_string();
        let host = click
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_suffix(&format!(":{}/", daemon.addr.port())))
            .unwrap_or_else(|| panic!("http://<address>:<port>/ with --no-https, got {click}"));
        assert!(host == "localhost" || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()), "{click}");
        daemon.wait_for_log(&format!("opening {click}"));
        assert!(body.get("attach").is_none(), "a ring without a picture has no attachment");
    });
}

#[test]
fn a_rings_picture_is_the_notifications_attachment() {
    run(async {
        const STILL: &[u8] = include_bytes!("fixtures/still-16x12.jpg");
        let (hook, ntfy) = (Receiver::start(vec![]), Receiver::start(vec![]));
        let daemon = Daemon::start(&[
            "--ntfy",
            &format!("http://{}/door", ntfy.addr),
            "--webhook",
            &format!("http://{}/hook", hook.addr),
        ]);
        let (mut door, _) = Client::join(&daemon, "door", Some("t-door")).await;
        let (mut kitchen, _) = Client::join(&daemon, "kitchen", None).await;
        door.recv_type("peer-joined").await;
        let (status, answer) = common::upload_snapshot(&daemon, "id=door&token=t-door", STILL);
        assert_eq!(status, 201, "{answer}");
        let name = answer["snapshot"].as_str().unwrap();
        door.send(json!({"type":"call-request","to":"kitchen","call":"c1","snapshot":name})).await;
        kitchen.recv_type("call-request").await;
        let request = ntfy.next();
        let body: Value = serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
        // Plain http on the daemon's own port: what the phone's ntfy app can fetch.
        let attach = body["attach"].as_str().unwrap();
        let path = format!(":{}/snapshots/{name}", daemon.addr.port());
        assert!(attach.starts_with("http://") && attach.ends_with(&path), "{attach}");
        assert_eq!(body["filename"], "visitor.jpg");
        let (status, _, picture) = common::http_get(daemon.addr, &format!("/snapshots/{name}"), "");
        assert_eq!((status, picture.as_slice()), (200, STILL));
        // Webhooks get the picture's address in the ring event.
        let path = "/hook";
        let mut ring = hook.next_event(path, None).0;
        while ring["event"] != "ring" {
            ring = hook.next_event(path, None).0;
        }
        assert_eq!(ring["snapshot"], format!("/snapshots/{name}"));
    });
}

#[test]
fn without_the_flags_no_connection_is_opened() {
    run(async {
        let daemon = Daemon::start(&[]);
        let sockets = || {
            std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
                .unwrap()
                .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        };
        let before = sockets();
        let (mut door, mut kitchen) = join_pair(&daemon).await;
        call(&mut door, (&mut kitchen, "kitchen"), "c1").await;
        common::assert_nothing_more(&mut kitchen, &mut door, "door").await;
        assert_eq!(sockets(), before + 2, "the two peers' sockets and nothing else");
        let log = daemon.log().join("\n");
        assert!(!log.contains("webhook") && !log.contains("ntfy"), "{log}");
    });
}

#[test]
fn a_target_named_by_host_name_is_found_by_the_daemons_own_resolver() {
    run(async {
        // `localhost` comes from /etc/hosts (or, without it, RFC 6761),
        // read by `resolve`, not by the C library: the same path that a
        // static Pi binary takes for `http://homeassistant.lan:8123/...`.
        let hook = Receiver::start(vec![]);
        let port = hook.addr.port();
        let daemon = Daemon::start(&["--webhook", &format!("http://localhost:{port}/hook")]);
        let (_door, _kitchen) = join_pair(&daemon).await;
        let request = hook.next();
        let head = format!("POST /hook HTTP/1.1\r\nHost: localhost:{port}\r\n");
        assert!(request.starts_with(&head), "{request:?}");
        let body: Value = serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["event"], "online");
    });
}

#[test]
fn a_door_opened_from_a_call_is_posted_with_who_opened_it() {
    run(async {
        let receiver = Receiver::start(vec![]);
        let dir = common::scratch_dir();
        std::fs::write(dir.join("pin"), "2468\n").unwrap();
        let (url, pin) = (format!("http://{}/hook", receiver.addr), dir.join("pin").display().to_string());
        let daemon = Daemon::start(&["--webhook", &url, "--door-open", "door=/bin/true", "--door-pin-file", &pin]);
        let (mut door, _) = Client::join(&daemon, "door", Some("t-door")).await;
        let (mut kitchen, _) = Client::join(&daemon, "kitchen", Some("t-kitchen")).await;
        door.recv_type("peer-joined").await;
        door.send(json!({"type":"call-request","to":"kitchen","call":"c1","media":"video"})).await;
        kitchen.recv_type("call-request").await;
        kitchen.send(json!({"type":"call-accept","to":"door","call":"c1"})).await;
        door.recv_type("call-accept").await;
        let body = r#"{"door":"door","id":"kitchen","token":"t-kitchen","pin":"2468"}"#;
        let request = format!(
            "POST /api/door/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, _, _) = common::http_raw(daemon.addr, request.as_bytes());
        assert_eq!(status, 200);
        // online, online, ring, answered, then the door.
        let opened = loop {
            let (event, _) = receiver.next_event("/hook", None);
            if event["event"] == "door-opened" {
                break event;
            }
        };
        assert_eq!(
            (&opened["from"], &opened["by"], &opened["call"]),
            (&json!("door"), &json!("kitchen"), &json!("c1"))
        );
        assert!(opened["seq"].is_u64(), "a call event, numbered in the call log: {opened}");
        let _ = std::fs::remove_dir_all(dir);
    });
}
