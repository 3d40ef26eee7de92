//! Hostile input over loopback. Each case asserts the clear error (or the
//! clean refusal) and that a bystander pair on the same daemon keeps
//! exchanging messages without loss.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{client_frame, http_get, http_raw, json_body, raw_upgrade, Client, Daemon, WAIT};
use serde_json::{json, Value};

/// Two well-behaved peers that prove, after each attack, that the daemon
/// still routes for everyone else.
struct Bystanders {
    a: Client,
    b: Client,
    sent: u64,
}

impl Bystanders {
    async fn join(daemon: &Daemon) -> Bystanders {
        let (mut a, _) = Client::join(daemon, "bystander-a", None).await;
        let (b, _) = Client::join(daemon, "bystander-b", None).await;
        a.recv_type("peer-joined").await;
        Bystanders { a, b, sent: 0 }
    }

    /// A round of messages both ways, each checked in order.
    async fn still_talking(&mut self, after: &str) {
        for _ in 0..3 {
            self.sent += 1;
            let n = self.sent;
            self.a.send(json!({"type":"tick","to":"bystander-b","n":n})).await;
            self.b.send(json!({"type":"tock","to":"bystander-a","n":n})).await;
            let got = self.b.recv_type("tick").await;
            assert_eq!(got["n"], n, "after {after}: bystander-b lost a message");
            let got = self.a.recv_type("tock").await;
            assert_eq!(got["n"], n, "after {after}: bystander-a lost a message");
        }
    }
}

/// Read raw frames until a close frame; return its code and the text frames
/// before it. The server's frames are unmasked.
fn read_until_close(stream: &mut TcpStream) -> (u16, Vec<Value>) {
    let mut texts = Vec::new();
    loop {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).expect("a frame before the connection ended");
        let opcode = head[0] & 0x0f;
        let mut length = u64::from(head[1] & 0x7f);
        if length == 126 {
            let mut extended = [0u8; 2];
            stream.read_exact(&mut extended).unwrap();
            length = u64::from(u16::from_be_bytes(extended));
        } else if length == 127 {
            let mut extended = [0u8; 8];
            stream.read_exact(&mut extended).unwrap();
            length = u64::from_be_bytes(extended);
        }
        let mut payload = vec![0u8; length as usize];
        stream.read_exact(&mut payload).unwrap();
        match opcode {
            1 => texts.push(serde_json::from_slice(&payload).expect("server text is JSON")),
            8 => return (u16::from_be_bytes([payload[0], payload[1]]), texts),
            _ => {}
        }
    }
}

#[test]
fn bad_messages_get_errors_and_leave_everyone_talking() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut bystanders = Bystanders::join(&daemon).await;
        let (mut mallory, _) = Client::join(&daemon, "mallory", None).await;
        for (attack, code) in [
            ("{\"type\":", "bad-json"),
            ("nul", "bad-json"),
            ("\u{feff}{}", "bad-json"),
            ("42", "bad-message"),
            ("null", "bad-message"),
            ("[{\"type\":\"offer\"}]", "bad-message"),
            ("{}", "bad-message"),
            ("{\"type\":null,\"to\":\"bystander-a\"}", "bad-message"),
            ("{\"type\":\"offer\",\"to\":{\"id\":\"bystander-a\"}}", "bad-message"),
            ("{\"type\":\"offer\",\"to\":\"\"}", "unknown-peer"),
            ("{\"type\":\"join\",\"room\":7}", "invalid-room"),
            ("{\"type\":\"join\",\"room\":\"\"}", "invalid-room"),
            ("{\"type\":\"shutdown\"}", "bad-message"),
            (&format!("{}1{}", "[".repeat(200), "]".repeat(200)), "bad-json"),
        ] {
            mallory.send_text(attack).await;
            mallory.expect_error(code).await;
            bystanders.still_talking(attack).await;
        }
        mallory.ws.send(async_tungstenite::tungstenite::Message::binary(vec![0xff; 100])).await.unwrap();
        mallory.expect_error("bad-message").await;
        bystanders.still_talking("a binary frame").await;
        // And after all that, mallory itself is still served.
        mallory.send(json!({"type":"hello","to":"bystander-a"})).await;
        assert_eq!(bystanders.a.recv_type("hello").await["from"], "mallory");
    });
}

#[test]
fn invalid_utf8_is_an_error_then_close_1007() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut bystanders = Bystanders::join(&daemon).await;
        let mut raw = raw_upgrade(daemon.addr, "id=mallory");
        raw.write_all(&client_frame(1, b"{\"type\":\"x\",\"to\":\"bystander-a\",\"s\":\"\xc3\x28\"}", true)).unwrap();
        let (code, texts) = read_until_close(&mut raw);
        assert_eq!(code, 1007);
        let error = texts.iter().find(|t| t["type"] == "error").expect("an error before the close");
        assert_eq!(error["code"], "bad-message");
        bystanders.still_talking("invalid UTF-8").await;
    });
}

#[test]
fn an_oversize_frame_is_refused_before_its_payload_arrives() {
    smol::block_on(async {
        let daemon = Daemon::start(&["--max-message-bytes", "4096"]);
        let mut bystanders = Bystanders::join(&daemon).await;
        let mut raw = raw_upgrade(daemon.addr, "id=mallory");
        // A header announcing a 1 GiB text frame, and no payload at all.
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 30).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        raw.write_all(&header).unwrap();
        let (code, texts) = read_until_close(&mut raw);
        assert_eq!(code, 1009);
        assert_eq!(texts.last().unwrap()["code"], "too-large");
        bystanders.still_talking("a 1 GiB frame header").await;
    });
}

#[test]
fn an_oversize_message_in_small_fragments_is_refused() {
    smol::block_on(async {
        let daemon = Daemon::start(&["--max-message-bytes", "4096"]);
        let mut bystanders = Bystanders::join(&daemon).await;
        let mut raw = raw_upgrade(daemon.addr, "id=mallory");
        raw.write_all(&client_frame(1, &[b' '; 1000], false)).unwrap();
        for _ in 0..10 {
            if raw.write_all(&client_frame(0, &[b' '; 1000], false)).is_err() {
                break;
            }
        }
        let (code, texts) = read_until_close(&mut raw);
        assert_eq!(code, 1009);
        assert_eq!(texts.last().unwrap()["code"], "too-large");
        bystanders.still_talking("fragments adding up past the limit").await;
    });
}

#[test]
fn protocol_violations_end_only_the_violator() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut bystanders = Bystanders::join(&daemon).await;
        for (what, bytes) in [
            ("an unmasked client frame", vec![0x81, 0x02, b'{', b'}']),
            ("reserved bits set", {
                let mut frame = client_frame(1, b"{}", true);
                frame[0] |= 0x70;
                frame
            }),
            ("an unknown opcode", client_frame(3, b"??", true)),
            ("a continuation with nothing to continue", client_frame(0, b"{}", true)),
            ("a fragmented ping", client_frame(9, b"ping", false)),
            ("random bytes", (0..64u8).map(|i| i.wrapping_mul(151)).collect()),
        ] {
            let mut raw = raw_upgrade(daemon.addr, "id=mallory");
            raw.write_all(&bytes).unwrap();
            // The daemon drops the connection (with or without a close frame).
            let mut rest = Vec::new();
            let _ = raw.read_to_end(&mut rest);
            bystanders.still_talking(what).await;
            // mallory is gone from the registry (so the next case can use the id).
            let deadline = Instant::now() + WAIT;
            loop {
                let (_, _, body) = http_get(daemon.addr, "/api/peers", "");
                if !String::from_utf8_lossy(&body).contains("mallory") {
                    break;
                }
                assert!(Instant::now() < deadline, "after {what}, mallory was never removed");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
}

#[test]
fn a_ping_flood_is_answered_without_disturbing_anyone() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut bystanders = Bystanders::join(&daemon).await;
        let mut raw = raw_upgrade(daemon.addr, "id=flood");
        let ping = client_frame(9, b"are you there?", true);
        let flood: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 20_000).collect();
        raw.write_all(&flood).unwrap();
        bystanders.still_talking("20,000 pings").await;
        // The flooder is still connected and served.
        raw.write_all(&client_frame(1, br#"{"type":"hi","to":"bystander-a"}"#, true)).unwrap();
        assert_eq!(bystanders.a.recv_type("hi").await["from"], "flood");
    });
}

#[test]
fn a_thousand_connections_opened_and_dropped_abruptly() {
    smol::block_on(async {
        let daemon = Daemon::start(&["--max-connections-per-ip", "2000", "--reconnect-grace", "0"]);
        let mut bystanders = Bystanders::join(&daemon).await;
        let mut streams = Vec::new();
        for i in 0..1000 {
            let mut stream = TcpStream::connect(daemon.addr).unwrap();
            match i % 4 {
                // Half a request head.
                0 => stream.write_all(b"GET /api/peers HTTP/1.1\r\nHo").unwrap(),
                // A WebSocket upgrade, then gone.
                1 => {
                    let _ = write!(
                        stream,
                        "GET /ws?id=ghost{i} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                    );
                }
                // Garbage.
                2 => stream.write_all(&[0u8; 100]).unwrap(),
                // Nothing at all.
                _ => {}
            }
            streams.push(stream);
        }
        // Reset rather than close: linger 0 makes the kernel send RST.
        for stream in streams {
            let socket = socket_with_linger_zero(stream);
            drop(socket);
        }
        bystanders.still_talking("1,000 connections dropped").await;
        // The daemon lets go of every one of them.
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, _, body) = http_get(daemon.addr, "/metrics", "");
            let text = String::from_utf8(body).unwrap();
            // Two bystanders and this request.
            if text.lines().any(|line| line == "intercomd_connections 3") {
                break;
            }
            assert!(Instant::now() < deadline, "connections were not all released:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (_, _, body) = http_get(daemon.addr, "/api/peers", "");
        assert_eq!(json_body(&body)["peers"].as_array().unwrap().len(), 2, "no ghost peers remain");
    });
}

/// `SO_LINGER` 0 without unsafe code: std sets it through `set_linger`
/// (unstable), so go through rustix instead.
fn socket_with_linger_zero(stream: TcpStream) -> TcpStream {
    let _ = rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
    stream
}

#[test]
fn garbage_instead_of_a_head_and_a_head_that_never_ends() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut bystanders = Bystanders::join(&daemon).await;
        let (status, _, _) = http_raw(daemon.addr, b"\x00\x01\x02\x03 hello \xff\xfe\r\n\r\n");
        assert_eq!(status, 400);
        bystanders.still_talking("binary garbage").await;

        // A head that never ends: header lines forever. Cut off at the limit.
        let mut stream = TcpStream::connect(daemon.addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let line = b"X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut written = 0;
        while written < 64 * 1024 {
            if stream.write_all(line).is_err() {
                break;
            }
            written += line.len();
        }
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        assert!(response.starts_with(b"HTTP/1.1 431"), "{:?}", String::from_utf8_lossy(&response));
        bystanders.still_talking("an endless head").await;
    });
}

#[test]
fn a_picture_that_never_arrives_holds_up_nobody() {
    const STILL: &[u8] = include_bytes!("fixtures/still-16x12.jpg");
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut bystanders = Bystanders::join(&daemon).await;
        let (_door, _) = Client::join(&daemon, "door", Some("t-door")).await;
        // An upload that promises 90 KiB and sends ten bytes, then nothing.
        let mut stalled = TcpStream::connect(daemon.addr).unwrap();
        stalled
            .write_all(b"POST /api/snapshots?id=door&token=t-door HTTP/1.1\r\nHost: x\r\nContent-Length: 92160\r\n\r\n0123456789")
            .unwrap();
        bystanders.still_talking("an upload that stalls").await;
        // Another upload by the same peer goes through meanwhile.
        let (status, answer) = common::upload_snapshot(&daemon, "id=door&token=t-door", STILL);
        assert_eq!(status, 201, "{answer}");
        // And a flood of uploads without the token is refused before any body is read.
        for _ in 0..50 {
            let (status, _) = common::upload_snapshot(&daemon, "id=door&token=nope", &[0u8; 50_000]);
            assert_eq!(status, 403);
        }
        bystanders.still_talking("50 refused uploads").await;
        drop(stalled);
    });
}

#[test]
fn a_head_sent_too_slowly_is_cut_off() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut bystanders = Bystanders::join(&daemon).await;
        let mut stream = TcpStream::connect(daemon.addr).unwrap();
        let started = Instant::now();
        stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        // One byte now and then, never finishing: slowloris. The daemon
        // closes the connection at its 10 s head timeout.
        stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut byte = [0u8; 1];
        let closed_after = loop {
            bystanders.still_talking("a slowloris byte").await;
            if stream.write_all(b"X").is_err() {
                break started.elapsed();
            }
            match stream.read(&mut byte) {
                Ok(0) => break started.elapsed(),
                Ok(_) => panic!("the daemon answered an unfinished head"),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break started.elapsed(),
            }
            assert!(started.elapsed() < Duration::from_secs(20), "still open after 20 s");
        };
        assert!(closed_after >= Duration::from_secs(9), "cut off after {closed_after:?}, before the timeout");
    });
}

#[test]
fn a_ring_flood_makes_a_handful_of_events_and_odd_call_fields_make_none() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut bystanders = Bystanders::join(&daemon).await;
        let (mut mallory, _) = Client::join(&daemon, "mallory", None).await;
        let (mut victim, _) = Client::join(&daemon, "victim", None).await;
        // Every one is routed (the victim's page is the judge of what it
        // wants), but only the first six of the minute are announced.
        for n in 0..50 {
            mallory.send(json!({"type":"call-request","to":"victim","call":format!("c{n}"),"media":"audio"})).await;
            assert_eq!(victim.recv_type("call-request").await["call"], format!("c{n}"));
        }
        for odd in [json!("x".repeat(65)), json!("a b"), json!(7), json!(null), json!("")] {
            mallory.send(json!({"type":"call-request","to":"bystander-a","call":odd})).await;
            bystanders.a.recv_type("call-request").await;
        }
        bystanders.still_talking("a ring flood").await;
        let (_, _, body) = http_get(daemon.addr, "/api/events", "");
        let rings = json_body(&body)["events"].as_array().unwrap().len();
        assert_eq!(rings, 6, "{}", String::from_utf8_lossy(&body));
        assert_eq!(common::metric(daemon.addr, "intercomd_rings_suppressed_total"), 44);
    });
}
