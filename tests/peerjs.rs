//! The PeerJS-compatible endpoint over loopback: every message type and
//! error of the PeerServer protocol, the improvements over PeerServer
//! (same-token reconnect, held messages, a malformed frame is not fatal),
//! and the one router it shares with native peers.

mod common;

use std::time::Duration;

use common::{Client, Daemon};
use serde_json::{json, Value};

const KEY: &str = "peerjs";

async fn open(daemon: &Daemon, id: &str, token: &str) -> Client {
    let mut client = connect(daemon, id, token).await;
    let open = client.recv().await;
    assert_eq!(open, json!({"type": "OPEN"}), "{id} should get OPEN first");
    client
}

async fn connect(daemon: &Daemon, id: &str, token: &str) -> Client {
    let target = format!("/peerjs/peerjs?key={KEY}&id={id}&token={token}&version=1.5.5");
    Client::try_connect_to(daemon, &target, None).await.unwrap_or_else(|error| panic!("upgrade for {id}: {error}"))
}

async fn next(client: &mut Client) -> Value {
    client.recv().await
}

/// `sender` sends `receiver` a marker; the marker must be the next thing
/// `receiver` gets, so nothing else (a stray answer, a second EXPIRE) was
/// queued for it before.
async fn nothing_more(sender: &mut Client, receiver: &mut Client, receiver_id: &str) {
    sender.send(json!({"type": "CANDIDATE", "dst": receiver_id, "payload": "marker"})).await;
    let got = next(receiver).await;
    assert_eq!(got["payload"], "marker", "{receiver_id} got something unexpected: {got}");
}

#[test]
fn open_then_every_relayed_type_arrives_with_src_set_by_the_server() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut a = open(&daemon, "a", "ta").await;
        let mut b = open(&daemon, "b", "tb").await;
        for kind in ["OFFER", "ANSWER", "CANDIDATE", "LEAVE", "EXPIRE"] {
            let payload = json!({"kind": kind, "n": 1});
            a.send(json!({"type": kind, "dst": "b", "src": "forged", "payload": payload})).await;
            let got = next(&mut b).await;
            assert_eq!(got, json!({"type": kind, "src": "a", "dst": "b", "payload": payload}), "{kind}");
        }
        // Heartbeats keep a peer alive and are never answered.
        a.send(json!({"type": "HEARTBEAT"})).await;
        nothing_more(&mut b, &mut a, "a").await;
    });
}

#[test]
fn errors_id_taken_and_a_bad_key_end_the_connection() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let _a = open(&daemon, "a", "ta").await;

        let mut thief = connect(&daemon, "a", "other").await;
        let (code, before) = thief.expect_close().await;
        assert_eq!(before, [json!({"type": "ID-TAKEN", "payload": {"msg": "ID is taken"}})]);
        assert_eq!(code, 4002);

        for (target, says) in [
            ("/peerjs/peerjs?key=wrong&id=c&token=t".to_string(), "Invalid key provided"),
            (format!("/peerjs/peerjs?key={KEY}&token=t"), "No id, token, or key supplied to websocket server"),
            (format!("/peerjs/peerjs?key={KEY}&id=c"), "No id, token, or key supplied to websocket server"),
            (format!("/peerjs/peerjs?key={KEY}&id=a%20b&token=t"), "an id is 1 to 64 characters"),
        ] {
            let mut client = Client::try_connect_to(&daemon, &target, None).await.unwrap();
            let (code, before) = client.expect_close().await;
            assert_eq!(before.len(), 1, "{target}: {before:?}");
            assert_eq!(before[0]["type"], "ERROR", "{target}");
            assert!(before[0]["payload"]["msg"].as_str().unwrap().contains(says), "{target}: {before:?}");
            assert_eq!(code, 4000, "{target}");
        }
    });
}

#[test]
fn the_same_token_takes_the_id_back_at_once_and_gets_open_again() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut old = open(&daemon, "a", "ta").await;
        let mut b = open(&daemon, "b", "tb").await;
        // A Wi-Fi drop: the old socket still looks open to the server.
        let mut new = open(&daemon, "a", "ta").await;
        let (code, _) = old.expect_close().await;
        assert_eq!(code, 4001, "the old socket is replaced");
        b.send(json!({"type": "OFFER", "dst": "a", "payload": {"sdp": "v=0"}})).await;
        assert_eq!(next(&mut new).await["src"], "b", "messages reach the new socket");
    });
}

#[test]
fn a_malformed_frame_gets_an_error_and_the_relay_goes_on() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut a = open(&daemon, "a", "ta").await;
        let mut b = open(&daemon, "b", "tb").await;
        for (frame, says) in [
            ("{not json", "not valid JSON"),
            ("[1,2]", "JSON object"),
            (r#"{"dst":"b"}"#, "needs a string \"type\""),
            (r#"{"type":"OPEN","dst":"b"}"#, "is not relayed"),
            (r#"{"type":"OFFER","payload":{}}"#, "needs a \"dst\""),
        ] {
            a.send_text(frame).await;
            let error = next(&mut a).await;
            assert_eq!(error["type"], "ERROR", "{frame}: {error}");
            assert!(error["payload"]["msg"].as_str().unwrap().contains(says), "{frame}: {error}");
            a.send(json!({"type": "CANDIDATE", "dst": "b", "payload": {"after": frame}})).await;
            assert_eq!(next(&mut b).await["payload"]["after"], frame, "the relay still works after {frame}");
        }
    });
}

#[test]
fn a_dst_no_peer_can_have_expires_at_once_instead_of_an_error() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut a = open(&daemon, "a", "ta").await;
        a.send(json!({"type": "OFFER", "dst": "has space", "payload": {}})).await;
        assert_eq!(next(&mut a).await, json!({"type": "EXPIRE", "src": "has space", "dst": "a"}));
    });
}

#[test]
fn a_message_for_an_id_not_connected_is_held_then_expires() {
    smol::block_on(async {
        // Two seconds: "late" connects well within it, and the EXPIRE for
        // "never" comes within WAIT even if noticed a quarter late.
        let grace = Duration::from_secs(2);
        let daemon = Daemon::start(&["--reconnect-grace", "2"]);
        let mut a = open(&daemon, "a", "ta").await;
        // Held for an id that connects within the grace: delivered in order.
        a.send(json!({"type": "OFFER", "dst": "late", "payload": 1})).await;
        a.send(json!({"type": "CANDIDATE", "dst": "late", "payload": 2})).await;
        let mut late = open(&daemon, "late", "tl").await;
        assert_eq!(next(&mut late).await, json!({"type": "OFFER", "src": "a", "dst": "late", "payload": 1}));
        assert_eq!(next(&mut late).await["payload"], 2);
        // Held for an id that never comes: EXPIRE, once, after the grace.
        let sent = std::time::Instant::now();
        a.send(json!({"type": "OFFER", "dst": "never", "payload": 1})).await;
        a.send(json!({"type": "CANDIDATE", "dst": "never", "payload": 2})).await;
        let expired = next(&mut a).await;
        assert_eq!(expired, json!({"type": "EXPIRE", "src": "never", "dst": "a"}));
        // Measured from before the sends, so the grace cannot look longer than it was.
        let expired_after = sent.elapsed();
        assert!(expired_after >= grace, "expired {expired_after:?} after the sends, before the {grace:?} grace");
        nothing_more(&mut late, &mut a, "a").await;
    });
}

#[test]
fn what_is_held_is_bounded() {
    smol::block_on(async {
        let daemon = Daemon::start(&["--reconnect-grace", "30"]);
        let mut a = open(&daemon, "a", "ta").await;
        // MAX_HELD_MESSAGES (64) are held; the next expires at once.
        for n in 0..64 {
            a.send(json!({"type": "CANDIDATE", "dst": "ghost", "payload": n})).await;
        }
        a.send(json!({"type": "CANDIDATE", "dst": "ghost", "payload": 64})).await;
        assert_eq!(next(&mut a).await, json!({"type": "EXPIRE", "src": "ghost", "dst": "a"}));
        // MAX_PENDING_IDS (256) ids may wait; the next id expires at once.
        for n in 1..256 {
            a.send(json!({"type": "OFFER", "dst": format!("ghost{n}"), "payload": n})).await;
        }
        a.send(json!({"type": "OFFER", "dst": "one-too-many", "payload": 0})).await;
        assert_eq!(next(&mut a).await, json!({"type": "EXPIRE", "src": "one-too-many", "dst": "a"}));
        // The 64 held for ghost all arrive when it connects.
        let mut ghost = open(&daemon, "ghost", "tg").await;
        for n in 0..64 {
            assert_eq!(next(&mut ghost).await["payload"], n);
        }
    });
}

#[test]
fn peerjs_and_native_peers_share_one_router() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let (mut door, _) = Client::join(&daemon, "door", None).await;
        let mut app = open(&daemon, "app", "t").await;
        // One id space: a native peer cannot take a PeerJS peer's id.
        let mut taken = Client::try_connect(&daemon, "id=app", None).await.unwrap();
        assert_eq!(taken.expect_close().await.0, 4002);
        // Both listed in /api/peers.
        let peers = common::json_body(&common::http_get(daemon.addr, "/api/peers", "").2);
        assert_eq!(peers["peers"], json!([{"id": "app", "room": "peerjs"}, {"id": "door", "room": "lobby"}]));
        // Native to PeerJS: the whole message as the payload; and back.
        door.send(json!({"type": "chat", "to": "app", "text": "hi"})).await;
        assert_eq!(
            next(&mut app).await,
            json!({"type": "chat", "src": "door", "dst": "app", "payload": {"text": "hi"}})
        );
        app.send(json!({"type": "OFFER", "dst": "door", "payload": {"sdp": "v=0"}})).await;
        let got = door.recv_type("OFFER").await;
        assert_eq!((got["from"].as_str(), got["payload"]["sdp"].as_str()), (Some("app"), Some("v=0")));
        // A native sender to nobody still gets unknown-peer at once.
        door.send(json!({"type": "chat", "to": "nobody"})).await;
        door.expect_error("unknown-peer").await;
    });
}

#[test]
fn every_limit_applies_to_peerjs_peers() {
    smol::block_on(async {
        // --max-rate 1: a burst of two, and one message a second after it,
        // so the third of three sent back to back is over.
        let daemon = Daemon::start(&["--max-peers", "2", "--max-message-bytes", "1024", "--max-rate", "1"]);
        let (mut native, _) = Client::join(&daemon, "native", None).await;
        let mut a = open(&daemon, "a", "ta").await;
        // --max-peers: a third peer is refused in PeerJS terms.
        let mut full = connect(&daemon, "c", "tc").await;
        let (code, before) = full.expect_close().await;
        assert_eq!(code, 4005);
        assert_eq!(before[0]["type"], "ERROR");
        // --max-rate: the burst passes, in order; then ERROR for the one over.
        for n in 0..3 {
            a.send(json!({"type": "CANDIDATE", "dst": "native", "payload": n})).await;
        }
        for n in 0..2 {
            let got = native.recv_type("CANDIDATE").await;
            assert_eq!((got["from"].as_str(), &got["payload"]), (Some("a"), &json!(n)), "the burst, in order: {got}");
        }
        let error = next(&mut a).await;
        assert_eq!(error["type"], "ERROR");
        assert!(error["payload"]["msg"].as_str().unwrap().contains("messages per second"), "{error}");
        // The socket stays open: a still gets messages, and nothing more.
        native.send(json!({"type": "chat", "to": "a", "text": "still there?"})).await;
        assert_eq!(next(&mut a).await["payload"], json!({"text": "still there?"}));
        // --max-message-bytes: too large closes with 1009 after an ERROR.
        a.send(json!({"type": "OFFER", "dst": "native", "payload": "x".repeat(2000)})).await;
        let (code, before) = a.expect_close().await;
        assert_eq!(code, 1009);
        assert_eq!(before.last().unwrap()["type"], "ERROR");
    });
}

#[test]
fn http_endpoints_hand_out_ids_and_list_peers_only_with_discovery() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let (status, headers, body) = common::http_get(daemon.addr, "/peerjs/peerjs/id", "");
        assert_eq!(status, 200);
        assert!(common::header(&headers, "content-type").unwrap().starts_with("text/plain"));
        let id = String::from_utf8(body).unwrap();
        let id = id.as_str();
        assert!(intercomd::protocol::is_valid_name(id), "{id:?}");
        assert_eq!(common::http_get(daemon.addr, "/peerjs/wrong/id", "").0, 401);
        assert_eq!(common::http_get(daemon.addr, "/peerjs/peerjs/peers", "").0, 401, "no discovery by default");
        let about = common::json_body(&common::http_get(daemon.addr, "/peerjs", "").2);
        assert_eq!(about["name"], "PeerJS Server");
        assert!(!id.contains(char::is_whitespace), "the bare id, no newline: the client uses the body as it is");
        let _a = open(&daemon, id, "t").await;

        let daemon = Daemon::start(&["--peerjs-discovery", "--peerjs-path", "/apps/p2p", "--peerjs-key", "k1"]);
        let target = "/apps/p2p/peerjs?key=k1&id=x&token=t";
        let mut x = Client::try_connect_to(&daemon, target, None).await.unwrap();
        assert_eq!(x.recv().await["type"], "OPEN");
        let (_native, _) = Client::join(&daemon, "native", None).await;
        let (status, _, body) = common::http_get(daemon.addr, "/apps/p2p/k1/peers", "");
        assert_eq!(status, 200);
        assert_eq!(common::json_body(&body), json!(["x"]), "PeerJS ids only");
        assert_eq!(common::http_get(daemon.addr, "/peerjs/peerjs/id", "").0, 404, "the old path is gone");
    });
}
