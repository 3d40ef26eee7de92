//! Start the real daemon on loopback and talk to it over real sockets.
//!
//! The daemon is the built binary (`CARGO_BIN_EXE_intercomd`), or any other
//! build named by `INTERCOMD_BIN` (an ARM binary under qemu, say, through a
//! wrapper script). It listens on `127.0.0.1:0`; the port comes from its
//! "listening on" log line.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_net::TcpStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use serde_json::Value;
use smol::stream::StreamExt;

/// Every wait in these tests ends in a failure that says what did not happen.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct Daemon {
    pub addr: SocketAddr,
    /// The HTTPS listener's address, when the flags asked for one (tests
    /// run with `--no-https` unless they name an HTTPS flag).
    pub https_addr: Option<SocketAddr>,
    child: Child,
    /// Every line the daemon logged so far.
    log: Arc<Mutex<Vec<String>>>,
    /// The `--state-dir` made for it (removed when it is dropped), unless
    /// the test gave its own.
    pub state_dir: Option<PathBuf>,
}

/// A new, empty directory under the system's temporary directory.
pub fn scratch_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("intercomd-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Daemon {
    /// Start the daemon with these flags (plus `--listen 127.0.0.1:0`, and
    /// `--no-https` unless a flag is about HTTPS).
    pub fn start(flags: &[&str]) -> Daemon {
        Daemon::start_with_env(flags, &[])
    }

    /// The same, with extra environment variables.
    pub fn start_with_env(flags: &[&str], env: &[(&str, &str)]) -> Daemon {
        let binary = std::env::var("INTERCOMD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_intercomd").to_string());
        let wants_https =
            flags.iter().any(|flag| ["--https-listen", "--tls-cert", "--tls-key", "--no-https"].contains(flag));
        // Each daemon keeps its call log in a directory of its own, unless
        // the test names one.
        let state_dir = (!flags.contains(&"--state-dir")).then(scratch_dir);
        let state_flags = match &state_dir {
            Some(dir) => vec!["--state-dir".to_string(), dir.display().to_string()],
            None => Vec::new(),
        };
        let mut child = Command::new(&binary)
            .args(["--listen", "127.0.0.1:0"])
            .args(if wants_https { &[][..] } else { &["--no-https"][..] })
            .args(&state_flags)
            .args(flags)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {binary}: {err}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, port) = mpsc::channel();
        for pipe in
            [Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stdout.take().unwrap())]
        {
            let (log, found) = (log.clone(), found.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(addr) = line.split("listening on http://").nth(1) {
                        let _ = found.send(addr.trim().to_string());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let addr = match port.recv_timeout(WAIT) {
            Ok(addr) => addr.parse().expect("a socket address in the listening line"),
            Err(_) => {
                let _ = child.kill();
                panic!("the daemon did not log 'listening on' within {WAIT:?}; its log: {:?}", log.lock().unwrap());
            }
        };
        let mut daemon = Daemon { addr, https_addr: None, child, log, state_dir };
        if flags.contains(&"--https-listen") {
            daemon.wait_for_log("listening on https://");
            let line = daemon.log().into_iter().find(|line| line.contains("listening on https://")).unwrap();
            let addr = line.split("listening on https://").nth(1).unwrap().split(' ').next().unwrap();
            daemon.https_addr = Some(addr.parse().expect("a socket address in the https listening line"));
        }
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Wait (at most `WAIT`) until a logged line contains `text`. The log
    /// arrives through a pipe, so a line can trail the event it reports.
    pub fn wait_for_log(&self, text: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        while !self.log().iter().any(|line| line.contains(text)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon never logged {text:?}; its log: {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Send SIGTERM.
    pub fn terminate(&mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// Wait for the exit status, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "the daemon did not exit within {limit:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.state_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A plain HTTP exchange: send `raw` as is, read until the server closes.
/// Returns (status, headers with lower-case names, body).
pub fn http_raw(addr: SocketAddr, raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = StdTcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(raw).expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap_or_else(|err| {
        panic!("reading the response failed: {err}; got {:?}", String::from_utf8_lossy(&response))
    });
    parse_response(&response)
}

/// `GET path` with `Connection: close` and extra header lines.
pub fn http_get(addr: SocketAddr, path: &str, extra_headers: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_method(addr, "GET", path, extra_headers)
}

pub fn http_method(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra_headers: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra_headers}\r\n");
    http_raw(addr, raw.as_bytes())
}

pub fn parse_response(response: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {:?}", String::from_utf8_lossy(response)));
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    (status, headers, response[end + 4..].to_vec())
}

/// A value from `GET /metrics` (Prometheus text), e.g.
/// `metric(addr, "intercomd_connections")`. The request's own connection is
/// open while it is answered, so a connection count read this way includes
/// it: compare it with another count read the same way.
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (status, _, body) = http_get(addr, "/metrics", "");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "GET /metrics: {text}");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in /metrics:\n{text}"))
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

pub fn json_body(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|err| panic!("body is not JSON ({err}): {:?}", String::from_utf8_lossy(body)))
}

/// A WebSocket client of the native protocol.
pub struct Client {
    pub ws: WebSocketStream<TcpStream>,
}

impl Client {
    /// Open `/ws?query`; panics if the upgrade fails.
    pub async fn connect(daemon: &Daemon, query: &str) -> Client {
        Client::try_connect(daemon, query, None)
            .await
            .unwrap_or_else(|err| panic!("upgrade of /ws?{query} failed: {err}"))
    }

    pub async fn try_connect(daemon: &Daemon, query: &str, origin: Option<&str>) -> Result<Client, String> {
        Client::try_connect_to(daemon, &format!("/ws?{query}"), origin).await
    }

    /// Open the WebSocket at `target` (path and query), e.g. the PeerJS one.
    pub async fn try_connect_to(daemon: &Daemon, target: &str, origin: Option<&str>) -> Result<Client, String> {
        let mut request = format!("ws://{}{}", daemon.addr, target).into_client_request().unwrap();
        if let Some(origin) = origin {
            request.headers_mut().insert("Origin", origin.parse().unwrap());
        }
        let stream = TcpStream::connect(daemon.addr).await.map_err(|err| err.to_string())?;
        let (ws, _) = async_tungstenite::client_async(request, stream).await.map_err(|err| err.to_string())?;
        Ok(Client { ws })
    }

    /// Connect as `id` (with `token` if given) and return the welcome.
    pub async fn join(daemon: &Daemon, id: &str, token: Option<&str>) -> (Client, Value) {
        let query = match token {
            Some(token) => format!("id={id}&token={token}"),
            None => format!("id={id}"),
        };
        let mut client = Client::connect(daemon, &query).await;
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "{id} should be welcomed first, got {welcome}");
        (client, welcome)
    }

    /// Join `room` as `id` with the token `t-<id>`, and take the welcome.
    pub async fn join_room(daemon: &Daemon, id: &str, room: &str) -> Client {
        let mut client = Client::connect(daemon, &format!("id={id}&room={room}&token=t-{id}")).await;
        assert_eq!(client.recv().await["type"], "welcome", "{id} should be welcomed first");
        client
    }

    /// Leave on purpose: a close frame, then wait for the server's reply.
    pub async fn leave(mut self) {
        self.ws.close(None).await.expect("send a close frame");
        let drained = smol::future::or(
            async {
                while let Some(Ok(_)) = self.ws.next().await {}
                true
            },
            async {
                smol::Timer::after(WAIT).await;
                false
            },
        )
        .await;
        assert!(drained, "the server did not complete the close handshake within {WAIT:?}");
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.expect("send a text frame");
    }

    /// The next text message as JSON; panics after `WAIT` or on a close.
    pub async fn recv(&mut self) -> Value {
        match self.next_message().await {
            Message::Text(text) => {
                serde_json::from_str(text.as_str()).unwrap_or_else(|err| panic!("server sent non-JSON {text:?}: {err}"))
            }
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next message of `kind`, skipping presence messages of others.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] == kind {
                return message;
            }
            assert!(
                matches!(message["type"].as_str(), Some("peer-joined" | "peer-left")),
                "expected a {kind:?} message, got {message}"
            );
        }
    }

    /// The next error; asserts its code.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let error = self.recv_type("error").await;
        assert_eq!(error["code"], code, "wrong error: {error}");
        assert!(
            error["message"].as_str().is_some_and(|text| !text.is_empty()),
            "an error has a human message: {error}"
        );
        error
    }

    /// Read until the server's close frame and return its code. Text
    /// messages on the way are returned too, in order.
    pub async fn expect_close(&mut self) -> (u16, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            match self.next_message().await {
                Message::Close(frame) => {
                    // Drive the close handshake: our reply goes out on the next read.
                    let _ = smol::future::or(async { while let Some(Ok(_)) = self.ws.next().await {} }, async {
                        smol::Timer::after(WAIT).await;
                    })
                    .await;
                    let code = frame.map_or(u16::from(CloseCode::Status), |frame| u16::from(frame.code));
                    return (code, before);
                }
                Message::Text(text) => before.push(serde_json::from_str(text.as_str()).unwrap()),
                _ => {}
            }
        }
    }

    /// The next message other than a ping or pong (tungstenite answers
    /// the daemon's pings by itself).
    async fn next_message(&mut self) -> Message {
        loop {
            match self.next_frame().await {
                Message::Ping(_) | Message::Pong(_) => continue,
                message => return message,
            }
        }
    }

    async fn next_frame(&mut self) -> Message {
        let next = smol::future::or(async { Some(self.ws.next().await) }, async {
            smol::Timer::after(WAIT).await;
            None
        })
        .await;
        match next {
            Some(Some(Ok(message))) => message,
            Some(Some(Err(err))) => panic!("the WebSocket failed: {err}"),
            Some(None) => panic!("the WebSocket ended without a close frame"),
            None => panic!("nothing arrived within {WAIT:?}"),
        }
    }
}

/// Prove that `bystander` received nothing since its last read: `actor`
/// sends it a marker, which must be the very next thing it gets. (The daemon
/// handles one socket's frames in order, so whatever `actor` caused before
/// would have been queued for `bystander` ahead of the marker.)
pub async fn assert_nothing_more(actor: &mut Client, bystander: &mut Client, bystander_id: &str) {
    actor.send(serde_json::json!({"type": "marker", "to": bystander_id})).await;
    let next = bystander.recv().await;
    assert_eq!(next["type"], "marker", "{bystander_id} got something unexpected: {next}");
}

/// A WebSocket upgrade done by hand over a plain socket, for clients that
/// misbehave below the WebSocket layer (never read, never answer pings).
/// Returns the socket right after the `101` head.
pub fn raw_upgrade(addr: SocketAddr, query: &str) -> StdTcpStream {
    let mut stream = StdTcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET /ws?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the 101 head");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    stream
}

/// One masked client frame (`opcode` 1 = text, 2 = binary, 9 = ping, 0 =
/// continuation), with FIN set when `fin`.
pub fn client_frame(opcode: u8, payload: &[u8], fin: bool) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    frame
}

/// `POST /api/snapshots?<query>` with `body` as the picture: (status, JSON answer).
pub fn upload_snapshot(daemon: &Daemon, query: &str, body: &[u8]) -> (u16, Value) {
    let mut raw = format!(
        "POST /api/snapshots?{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
        daemon.addr,
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    let (status, _, body) = http_raw(daemon.addr, &raw);
    (status, json_body(&body))
}
