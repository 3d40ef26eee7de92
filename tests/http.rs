//! The HTTP front door against the real daemon on loopback: pages, API,
//! errors, path escapes and the WebSocket upgrade checks.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{header, http_get, http_method, http_raw, json_body, parse_response, Client, Daemon, WAIT};
use serde_json::json;

#[test]
fn pages_are_embedded_with_type_and_etag() {
    let daemon = Daemon::start(&[]);
    let (status, headers, body) = http_get(daemon.addr, "/", "");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("text/html; charset=utf-8"));
    assert!(String::from_utf8_lossy(&body).contains("<html"), "the intercom page");
    let etag = header(&headers, "etag").expect("an ETag").to_string();

    let (status, headers, body) = http_get(daemon.addr, "/", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!((status, body.len()), (304, 0));
    assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
    let (status, _, _) = http_get(daemon.addr, "/", "If-None-Match: \"something-else\"\r\n");
    assert_eq!(status, 200);

    let (status, headers, _) = http_get(daemon.addr, "/app.js", "");
    assert_eq!((status, header(&headers, "content-type")), (200, Some("text/javascript; charset=utf-8")));
    let (status, headers, _) = http_get(daemon.addr, "/style.css", "");
    assert_eq!((status, header(&headers, "content-type")), (200, Some("text/css; charset=utf-8")));
}

#[test]
fn head_sends_headers_only() {
    let daemon = Daemon::start(&[]);
    let (status, headers, body) = http_method(daemon.addr, "HEAD", "/", "");
    assert_eq!(status, 200);
    assert!(header(&headers, "content-length").unwrap().parse::<usize>().unwrap() > 0);
    assert!(body.is_empty());
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let daemon = Daemon::start(&[]);
    let mut stream = TcpStream::connect(daemon.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // Two requests in one write (pipelined), the second asks to close.
    stream
        .write_all(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut all = String::new();
    stream.read_to_string(&mut all).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 2, "{all}");
    assert_eq!(all.matches("ok\n").count(), 2, "{all}");
}

#[test]
fn ice_servers_default_custom_and_none() {
    let daemon = Daemon::start(&[]);
    let (status, headers, body) = http_get(daemon.addr, "/api/ice-servers", "");
    assert_eq!((status, header(&headers, "content-type")), (200, Some("application/json")));
    let servers = json_body(&body);
    let list = servers["iceServers"].as_array().unwrap();
    assert!(!list.is_empty());
    for server in list {
        assert!(server["urls"][0].as_str().unwrap().starts_with("stun:"), "{server}");
    }

    let daemon = Daemon::start(&["--stun", "stun:a.example:3478", "--stun", "stun:b.example"]);
    let (_, _, body) = http_get(daemon.addr, "/api/ice-servers", "");
    assert_eq!(json_body(&body), json!({"iceServers":[{"urls":["stun:a.example:3478"]},{"urls":["stun:b.example"]}]}));

    let daemon = Daemon::start(&["--no-stun"]);
    let (_, _, body) = http_get(daemon.addr, "/api/ice-servers", "");
    assert_eq!(json_body(&body), json!({"iceServers":[]}));
}

#[test]
fn peers_endpoint_matches_the_live_state() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let (_, _, body) = http_get(daemon.addr, "/api/peers", "");
        assert_eq!(json_body(&body), json!({"peers":[]}));
        let (door, _) = Client::join(&daemon, "door", None).await;
        let mut kitchen = Client::connect(&daemon, "id=kitchen&room=house").await;
        kitchen.recv().await;
        let (_, _, body) = http_get(daemon.addr, "/api/peers", "");
        assert_eq!(json_body(&body), json!({"peers":[{"id":"door","room":"lobby"},{"id":"kitchen","room":"house"}]}));
        drop(door);
        // The departure is an event the kitchen cannot see (another room),
        // so wait for the API to reflect it.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (_, _, body) = http_get(daemon.addr, "/api/peers", "");
            if json_body(&body) == json!({"peers":[{"id":"kitchen","room":"house"}]}) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "door never left /api/peers");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
}

#[test]
fn healthz_and_metrics() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let (status, _, body) = http_get(daemon.addr, "/healthz", "");
        assert_eq!((status, body.as_slice()), (200, b"ok\n".as_slice()));

        let (mut a, _) = Client::join(&daemon, "a", None).await;
        let (mut b, _) = Client::join(&daemon, "b", None).await;
        a.recv_type("peer-joined").await;
        a.send(json!({"type":"x","to":"b"})).await;
        b.recv().await;
        a.send_text("nope").await;
        a.expect_error("bad-json").await;
        let (status, headers, body) = http_get(daemon.addr, "/metrics", "");
        assert_eq!(status, 200);
        assert!(header(&headers, "content-type").unwrap().starts_with("text/plain; version=0.0.4"));
        let text = String::from_utf8(body).unwrap();
        for line in [
            "intercomd_peers 2",
            "intercomd_rooms 1",
            "intercomd_websockets 2",
            "intercomd_messages_routed_total 1",
            "intercomd_messages_rejected_total{reason=\"bad-json\"} 1",
            "intercomd_messages_rejected_total{reason=\"unknown-peer\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Three TCP connections open now: two sockets and this request.
        assert!(text.lines().any(|l| l == "intercomd_connections 3"), "{text}");
    });
}

#[test]
fn not_found_and_method_not_allowed() {
    let daemon = Daemon::start(&[]);
    let (status, _, _) = http_get(daemon.addr, "/nothing-here.html", "");
    assert_eq!(status, 404);
    let (status, headers, body) = http_get(daemon.addr, "/api/nothing", "");
    assert_eq!((status, header(&headers, "content-type")), (404, Some("application/json")));
    assert!(json_body(&body)["error"].is_string());
    let (status, headers, _) = http_method(daemon.addr, "POST", "/", "Content-Length: 0\r\n");
    assert_eq!((status, header(&headers, "allow")), (405, Some("GET, HEAD")));
    let (status, headers, _) = http_method(daemon.addr, "DELETE", "/api/peers", "");
    assert_eq!((status, header(&headers, "allow")), (405, Some("GET, HEAD")));
    let (status, _, _) = http_method(daemon.addr, "POST", "/ws", "");
    assert_eq!(status, 405);
}

#[test]
fn malformed_and_oversized_heads() {
    let daemon = Daemon::start(&[]);
    let (status, headers, _) = http_raw(daemon.addr, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n");
    assert_eq!((status, header(&headers, "connection")), (400, Some("close")));
    let (status, _, _) = http_raw(daemon.addr, b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n");
    assert_eq!(status, 400);
    let (status, _, _) = http_raw(daemon.addr, b"GET /%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 400);

    // A head of exactly the limit is read; one byte more is 431.
    let limit = 16 * 1024;
    let prefix = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ";
    let pad = limit - prefix.len() - 4;
    let (status, _, _) = http_raw(daemon.addr, format!("{prefix}{}\r\n\r\n", "a".repeat(pad)).as_bytes());
    assert_eq!(status, 200, "a head of exactly {limit} bytes");
    let (status, _, _) = http_raw(daemon.addr, format!("{prefix}{}\r\n\r\n", "a".repeat(pad + 1)).as_bytes());
    assert_eq!(status, 431);
    let many = "X: y\r\n".repeat(65);
    let (status, _, _) = http_raw(daemon.addr, format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
    assert_eq!(status, 431);
}

#[test]
fn no_path_escape_in_any_encoding() {
    // A --www tree with a secret next to it.
    let base = std::env::temp_dir().join(format!("intercomd-www-{}", std::process::id()));
    let www = base.join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(base.join("secret.txt"), "TOP SECRET").unwrap();
    std::fs::write(www.join("index.html"), "<html>disk page</html>").unwrap();
    std::fs::write(www.join("sub").join("note.txt"), "note").unwrap();
    std::fs::write(www.join(".hidden"), "hidden").unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), www.join("link.txt")).unwrap();
    let daemon = Daemon::start(&["--www", www.to_str().unwrap()]);

    let (status, _, body) = http_get(daemon.addr, "/", "");
    assert_eq!((status, body.as_slice()), (200, b"<html>disk page</html>".as_slice()));
    let (status, headers, _) = http_get(daemon.addr, "/sub/note.txt", "");
    assert_eq!((status, header(&headers, "content-type")), (200, Some("text/plain; charset=utf-8")));
    let (status, _, _) = http_get(daemon.addr, "/sub/", "");
    assert_eq!(status, 404, "a directory without index.html is not listed");

    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/sub/..%2F..%2Fsecret.txt",
        "/%252e%252e/secret.txt",
        "/..%5csecret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/secret.txt%00.html",
        "/link.txt",
        "/.hidden",
        "//etc/passwd",
    ] {
        let (status, _, body) =
            http_raw(daemon.addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
        assert!(matches!(status, 400 | 404), "{path}: {status}");
        assert!(!String::from_utf8_lossy(&body).contains("SECRET"), "{path} leaked the secret");
    }
    let _ = std::fs::remove_dir_all(&base);

    // The embedded pages have no files outside their table at all.
    let daemon = Daemon::start(&[]);
    let (status, _, _) = http_get(daemon.addr, "/%2e%2e/Cargo.toml", "");
    assert_eq!(status, 404);
}

#[test]
fn disk_pages_change_their_etag_when_edited() {
    let www = std::env::temp_dir().join(format!("intercomd-etag-{}", std::process::id()));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "one").unwrap();
    let daemon = Daemon::start(&["--www", www.to_str().unwrap()]);
    let (_, headers, _) = http_get(daemon.addr, "/", "");
    let first = header(&headers, "etag").unwrap().to_string();
    std::fs::write(www.join("index.html"), "two!").unwrap();
    let (status, headers, body) = http_get(daemon.addr, "/", &format!("If-None-Match: {first}\r\n"));
    assert_eq!((status, body.as_slice()), (200, b"two!".as_slice()));
    assert_ne!(header(&headers, "etag").unwrap(), first);
    let _ = std::fs::remove_dir_all(&www);
}

#[test]
fn upgrade_checks() {
    smol::block_on(async {
        let daemon = Daemon::start(&["--allow-origin", "https://panel.example"]);
        let (status, headers, _) = http_get(daemon.addr, "/ws", "");
        assert_eq!((status, header(&headers, "upgrade")), (426, Some("websocket")));
        let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
        let (status, _, _) = http_get(daemon.addr, "/ws", upgrade);
        assert_eq!(status, 400, "no key");
        let (status, _, _) = http_get(daemon.addr, "/ws", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
        assert_eq!(status, 426, "old version");

        let own = format!("http://{}", daemon.addr);
        assert!(Client::try_connect(&daemon, "id=a", Some(&own)).await.is_ok(), "the daemon's own pages");
        assert!(Client::try_connect(&daemon, "id=b", Some("https://panel.example")).await.is_ok(), "an allowed origin");
        assert!(Client::try_connect(&daemon, "id=c", None).await.is_ok(), "a native client");
        let refused = Client::try_connect(&daemon, "id=d", Some("http://evil.example")).await.err().expect("refused");
        assert!(refused.contains("403"), "{refused}");
    });
}

#[test]
fn the_101_is_ours_and_bytes_after_the_head_are_kept() {
    let daemon = Daemon::start(&[]);
    let mut stream = TcpStream::connect(daemon.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // The upgrade request and a first (masked) text frame in one write.
    let payload = br#"{"type":"peers"}"#;
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    let mut request = b"GET /ws?id=early HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec();
    request.extend_from_slice(&frame);
    stream.write_all(&request).unwrap();

    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read until the head, the welcome and the peers answer have arrived.
    while !String::from_utf8_lossy(&received).contains("\"type\":\"peers\"") {
        let read = stream.read(&mut chunk).expect("the daemon answered within the timeout");
        assert!(read > 0, "closed early: {:?}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..read]);
    }
    let (status, headers, _) = parse_response(&received);
    assert_eq!(status, 101);
    // The accept key of RFC 6455's own example.
    assert_eq!(header(&headers, "sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    assert!(String::from_utf8_lossy(&received).contains(r#"{"type":"peers","room":"lobby","peers":[]}"#));
}

#[test]
fn cors_only_for_allowed_origins() {
    let daemon = Daemon::start(&["--allow-origin", "https://panel.example"]);
    let (_, headers, _) = http_get(daemon.addr, "/api/ice-servers", "Origin: https://panel.example\r\n");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("https://panel.example"));
    assert_eq!(header(&headers, "vary"), Some("Origin"));
    let (_, headers, _) = http_get(daemon.addr, "/api/ice-servers", "Origin: https://evil.example\r\n");
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    let (_, headers, _) = http_get(daemon.addr, "/api/peers", "");
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    let (_, headers, _) = http_get(daemon.addr, "/", "Origin: https://panel.example\r\n");
    assert_eq!(header(&headers, "access-control-allow-origin"), None, "pages are not an API");
}

#[test]
fn pages_are_gzipped_for_browsers_and_plain_for_others() {
    let daemon = Daemon::start(&[]);
    let (status, plain_headers, plain) = http_get(daemon.addr, "/app.js", "");
    assert_eq!(status, 200);
    assert_eq!(header(&plain_headers, "content-encoding"), None);
    assert_eq!(header(&plain_headers, "vary"), Some("Accept-Encoding"));

    let (status, headers, gzipped) = http_get(daemon.addr, "/app.js", "Accept-Encoding: gzip, deflate, br\r\n");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    assert_eq!(header(&headers, "content-type"), Some("text/javascript; charset=utf-8"));
    assert!(gzipped.len() * 2 < plain.len(), "{} gzipped bytes for {} plain", gzipped.len(), plain.len());
    let inflated = miniz_oxide::inflate::decompress_to_vec(&gzipped[10..gzipped.len() - 8]).unwrap();
    assert_eq!(inflated, plain, "the same page either way");

    let gz_etag = header(&headers, "etag").unwrap().to_string();
    assert_ne!(Some(gz_etag.as_str()), header(&plain_headers, "etag"), "one strong ETag per representation");
    let (status, _, _) =
        http_get(daemon.addr, "/app.js", &format!("Accept-Encoding: gzip\r\nIf-None-Match: {gz_etag}\r\n"));
    assert_eq!(status, 304);
    let (_, headers, _) = http_get(daemon.addr, "/app.js", "Accept-Encoding: gzip;q=0, identity\r\n");
    assert_eq!(header(&headers, "content-encoding"), None, "gzip refused with q=0");
}
