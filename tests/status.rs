//! `/api/status`, the status page's one source, over loopback: who is
//! online and from where, rooms, the counters moving with traffic, the
//! certificate, the event sinks and the recent events, and the same origin
//! rules as the rest of `/api`.

mod common;

use common::{http_get, http_raw, json_body, Client, Daemon};
use serde_json::{json, Value};

fn status(daemon: &Daemon) -> Value {
    let (code, headers, body) = http_get(daemon.addr, "/api/status", "");
    assert_eq!(code, 200);
    assert_eq!(common::header(&headers, "content-type"), Some("application/json"));
    assert_eq!(common::header(&headers, "cache-control"), Some("no-store"), "a status is never cached");
    json_body(&body)
}

fn peer<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["peers"].as_array().unwrap().iter().find(|peer| peer["id"] == id)
}

#[test]
fn status_shows_the_daemon_its_peers_and_rooms() {
    smol::block_on(async {
        let daemon = Daemon::start(&["--peerjs-path", "/peerjs"]);
        let empty = status(&daemon);
        assert_eq!(empty["version"], env!("CARGO_PKG_VERSION"));
        assert!(empty["uptimeSeconds"].as_u64().is_some());
        assert!(empty["started"].as_str().unwrap().ends_with('Z'), "{}", empty["started"]);
        assert_eq!(empty["listen"], json!({"http": daemon.addr.to_string(), "https": null}));
        // It listens on loopback only, so that is the one address to offer.
        assert_eq!(empty["urls"], json!({"http": [format!("http://{}/", daemon.addr)], "https": []}));
        assert_eq!(empty["peers"], json!([]));
        assert_eq!(empty["rooms"], json!([]));
        assert_eq!(empty["certificate"], Value::Null, "no HTTPS listener, no certificate");
        assert_eq!(empty["sinks"], json!([]));

        let mut kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let _hall = Client::join_room(&daemon, "hall", "upstairs").await;
        let mut app = Client::try_connect_to(&daemon, "/peerjs/peerjs?key=peerjs&id=app&token=t", None).await.unwrap();
        assert_eq!(app.recv().await["type"], "OPEN");
        assert_eq!(kitchen.recv().await["type"], "peer-joined");

        let now = status(&daemon);
        let mut ids: Vec<_> = now["peers"].as_array().unwrap().iter().map(|peer| peer["id"].to_string()).collect();
        ids.sort();
        assert_eq!(
            ids,
            ["\"app\"", "\"door\"", "\"hall\"", "\"kitchen\""],
            "everyone, once (in any order: the page sorts)"
        );
        let kitchen_row = peer(&now, "kitchen").unwrap();
        assert_eq!(kitchen_row["room"], "home");
        assert_eq!(kitchen_row["protocol"], "native");
        assert_eq!(kitchen_row["transport"], "ws");
        assert_eq!(kitchen_row["address"], "127.0.0.1");
        assert_eq!(kitchen_row["away"], false);
        assert!(kitchen_row["since"].as_str().unwrap() >= now["started"].as_str().unwrap(), "joined after the start");
        assert_eq!(peer(&now, "app").unwrap()["protocol"], "peerjs");
        let mut rooms = now["rooms"].as_array().unwrap().clone();
        rooms.sort_by_key(|room| room["room"].to_string());
        assert_eq!(
            json!(rooms),
            json!([{"room": "home", "peers": 2}, {"room": "peerjs", "peers": 1}, {"room": "upstairs", "peers": 1}])
        );
        assert_eq!(now["counters"]["peers"], 4);
        assert_eq!(now["counters"]["rooms"], 3);
        assert_eq!(now["counters"]["websockets"], 4);

        // Traffic moves the counters: a relayed message, a refused one.
        let routed = now["counters"]["messagesRouted"].as_u64().unwrap();
        door.send(json!({"type": "chat", "to": "kitchen", "text": "hi"})).await;
        assert_eq!(kitchen.recv_type("chat").await["from"], "door");
        door.send_text("not json").await;
        door.expect_error("bad-json").await;
        let after = status(&daemon);
        assert_eq!(after["counters"]["messagesRouted"].as_u64().unwrap(), routed + 1);
        assert_eq!(after["counters"]["messagesRefused"]["bad-json"], 1);
        assert_eq!(after["counters"]["messagesRefused"]["unknown-peer"], 0, "every reason is listed");
        assert!(after["counters"]["connectionsAccepted"].as_u64().unwrap() >= 5);

        // A ring is an event, and the newest events are listed.
        door.send(json!({"type": "call-request", "to": "kitchen", "call": "c1", "media": "audio"})).await;
        assert_eq!(kitchen.recv_type("call-request").await["from"], "door");
        let rung = status(&daemon);
        let events = rung["events"].as_array().unwrap();
        let last = events.last().expect("the ring is in the recent events");
        assert_eq!((last["event"].as_str(), last["from"].as_str()), (Some("ring"), Some("door")));

        // Who leaves is gone from the list at once.
        kitchen.leave().await;
        let left = status(&daemon);
        assert!(peer(&left, "kitchen").is_none(), "{}", left["peers"]);
        let home = left["rooms"].as_array().unwrap().iter().find(|room| room["room"] == "home").cloned();
        assert_eq!(home, Some(json!({"room": "home", "peers": 1})));
    });
}

#[test]
fn status_names_the_event_sinks_and_keeps_the_api_origin_rules() {
    // A webhook target that refuses connections: listed, and not up.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let hook = format!("http://127.0.0.1:{port}/hook");
    let daemon = Daemon::start(&["--webhook", &hook, "--allow-origin", "https://panel.example"]);
    let body = status(&daemon);
    assert_eq!(
        body["sinks"],
        json!([{"sink": "webhook", "target": hook, "up": false, "delivered": 0, "failed": 0, "dropped": 0}])
    );

    let (_, headers, _) = http_get(daemon.addr, "/api/status", "Origin: https://evil.example\r\n");
    assert_eq!(common::header(&headers, "access-control-allow-origin"), None, "other sites' scripts cannot read it");
    let (_, headers, _) = http_get(daemon.addr, "/api/status", "Origin: https://panel.example\r\n");
    assert_eq!(common::header(&headers, "access-control-allow-origin"), Some("https://panel.example"));
    let (code, _, _) = common::http_method(daemon.addr, "POST", "/api/status", "");
    assert_eq!(code, 405);
}

/// The pages' QR codes send a phone to the trust page on the host the page
/// was opened by (`/api/https` and `/api/status` say where); opened at the Pi
/// itself, to an address a phone can use, which for a daemon on loopback
/// only is that one address.
#[test]
fn a_scan_goes_to_the_trust_page_on_the_host_the_page_was_opened_by() {
    let daemon = Daemon::start(&["--https-listen", "127.0.0.1:0"]);
    let port = daemon.addr.port();
    for path in ["/api/https", "/api/status"] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: raspberrypi.local:{port}\r\nConnection: close\r\n\r\n");
        let (code, _, body) = http_raw(daemon.addr, raw.as_bytes());
        assert_eq!(code, 200, "{path}");
        assert_eq!(
            json_body(&body)["onboard"],
            format!("http://raspberrypi.local:{port}/trust.html?onboard"),
            "{path}"
        );
        let (_, _, body) = http_get(daemon.addr, path, "");
        assert_eq!(json_body(&body)["onboard"], format!("http://127.0.0.1:{port}/trust.html?onboard"), "{path}");
    }
    // Without HTTPS there is nothing to trust: the plain intercom.
    let plain = Daemon::start(&[]);
    let (_, _, body) = http_get(plain.addr, "/api/https", "");
    assert_eq!(json_body(&body)["onboard"], format!("http://127.0.0.1:{}/", plain.addr.port()));
}
