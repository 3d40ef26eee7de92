//! The native WebSocket protocol against the real daemon on loopback: every
//! message kind and every error code of the first issue.

mod common;

use std::time::{Duration, Instant};

use common::{assert_nothing_more, Client, Daemon, WAIT};
use serde_json::json;

fn run(test: impl std::future::Future<Output = ()>) {
    smol::block_on(test);
}

#[test]
fn welcome_lists_the_room_and_the_ice_servers() {
    run(async {
        let daemon = Daemon::start(&["--stun", "stun:stun.example.org:3478"]);
        let (_bob, welcome) = Client::join(&daemon, "bob", None).await;
        assert_eq!(
            welcome,
            json!({"type":"welcome","id":"bob","room":"lobby","peers":[],"iceServers":[{"urls":["stun:stun.example.org:3478"]}]})
        );
        let (_alice, welcome) = Client::join(&daemon, "alice", None).await;
        assert_eq!(welcome["peers"], json!(["bob"]));
    });
}

#[test]
fn presence_joined_and_left() {
    run(async {
        let daemon = Daemon::start(&[]);
        let (mut bob, _) = Client::join(&daemon, "bob", None).await;
        let (alice, _) = Client::join(&daemon, "alice", None).await;
        assert_eq!(bob.recv().await, json!({"type":"peer-joined","id":"alice"}));
        drop(alice);
        assert_eq!(bob.recv().await, json!({"type":"peer-left","id":"alice"}));
    });
}

#[test]
fn a_closing_handshake_also_counts_as_leaving() {
    run(async {
        let daemon = Daemon::start(&[]);
        let (mut bob, _) = Client::join(&daemon, "bob", None).await;
        let (mut alice, _) = Client::join(&daemon, "alice", None).await;
        bob.recv_type("peer-joined").await;
        alice.ws.close(None).await.unwrap();
        assert_eq!(bob.recv().await, json!({"type":"peer-left","id":"alice"}));
    });
}

#[test]
fn directed_messages_get_a_server_stamped_from() {
    run(async {
        let daemon = Daemon::start(&[]);
        let (mut bob, _) = Client::join(&daemon, "bob", None).await;
        let (mut alice, _) = Client::join(&daemon, "alice", None).await;
        bob.recv_type("peer-joined").await;
        alice.send(json!({"type":"offer","to":"bob","sdp":"v=0\r\n","from":"mallory"})).await;
        assert_eq!(bob.recv().await, json!({"type":"offer","to":"bob","sdp":"v=0\r\n","from":"alice"}));
        // Types the server does not know pass through untouched.
        alice.send(json!({"type":"call-request","to":"bob","media":"video","nested":{"a":[1,2]}})).await;
        assert_eq!(
            bob.recv().await,
            json!({"type":"call-request","to":"bob","media":"video","nested":{"a":[1,2]},"from":"alice"})
        );
        bob.send(json!({"type":"answer","to":"alice","sdp":"x"})).await;
        assert_eq!(alice.recv().await, json!({"type":"answer","to":"alice","sdp":"x","from":"bob"}));
    });
}

#[test]
fn directed_messages_cross_rooms_and_broadcasts_do_not() {
    run(async {
        let daemon = Daemon::start(&[]);
        let (mut a, _) = Client::join(&daemon, "a", None).await;
        let (mut b, _) = Client::join(&daemon, "b", None).await;
        let mut c = Client::connect(&daemon, "id=c&room=kitchen").await;
        assert_eq!(c.recv().await["room"], "kitchen");
        a.recv_type("peer-joined").await;
        a.send(json!({"type":"chat","to":"*","text":"hi"})).await;
        assert_eq!(b.recv().await, json!({"type":"chat","to":"*","text":"hi","from":"a"}));
        a.send(json!({"type":"ring","to":"c"})).await;
        assert_eq!(c.recv().await, json!({"type":"ring","to":"c","from":"a"}), "a directed message reaches any room");
        assert_nothing_more(&mut b, &mut a, "a").await;
    });
}

#[test]
fn join_and_peers_messages() {
    run(async {
        let daemon = Daemon::start(&[]);
        let (mut a, _) = Client::join(&daemon, "a", None).await;
        let (mut b, _) = Client::join(&daemon, "b", None).await;
        a.recv_type("peer-joined").await;
        b.send(json!({"type":"peers"})).await;
        assert_eq!(b.recv().await, json!({"type":"peers","room":"lobby","peers":["a"]}));
        b.send(json!({"type":"join","room":"porch"})).await;
        assert_eq!(b.recv().await, json!({"type":"peers","room":"porch","peers":[]}));
        assert_eq!(a.recv().await, json!({"type":"peer-left","id":"b"}));
        a.send(json!({"type":"join","room":"porch"})).await;
        assert_eq!(a.recv().await, json!({"type":"peers","room":"porch","peers":["b"]}));
        assert_eq!(b.recv().await, json!({"type":"peer-joined","id":"a"}));
    });
}

#[test]
fn a_server_picked_id_when_none_is_given() {
    run(async {
        let daemon = Daemon::start(&[]);
        let mut anonymous = Client::connect(&daemon, "").await;
        let welcome = anonymous.recv().await;
        let id = welcome["id"].as_str().unwrap();
        assert!((1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        assert_eq!(welcome["room"], "lobby");
    });
}

#[test]
fn errors_for_bad_messages_keep_the_socket_open() {
    run(async {
        let daemon = Daemon::start(&[]);
        let (mut a, _) = Client::join(&daemon, "a", None).await;
        let (mut b, _) = Client::join(&daemon, "b", None).await;
        a.recv_type("peer-joined").await;
        a.send_text("{not json").await;
        a.expect_error("bad-json").await;
        a.send_text("[1,2,3]").await;
        a.expect_error("bad-message").await;
        a.send(json!({"to":"b"})).await;
        a.expect_error("bad-message").await;
        a.send(json!({"type":5,"to":"b"})).await;
        let error = a.expect_error("bad-message").await;
        assert_eq!(error["ref"]["to"], "b");
        a.send(json!({"type":"offer","to":["b"]})).await;
        a.expect_error("bad-message").await;
        a.send(json!({"type":"hello"})).await;
        assert_eq!(a.expect_error("bad-message").await["ref"], json!({"type":"hello"}));
        a.ws.send(async_tungstenite::tungstenite::Message::binary(vec![1u8, 2, 3])).await.unwrap();
        a.expect_error("bad-message").await;
        a.send(json!({"type":"offer","to":"zed"})).await;
        let error = a.expect_error("unknown-peer").await;
        assert_eq!(error["ref"], json!({"type":"offer","to":"zed"}));
        a.send(json!({"type":"join","room":"no/slashes"})).await;
        a.expect_error("invalid-room").await;
        // After all that, a's messages still flow both ways.
        a.send(json!({"type":"chat","to":"b"})).await;
        assert_eq!(b.recv().await, json!({"type":"chat","to":"b","from":"a"}));
        b.send(json!({"type":"chat","to":"a"})).await;
        assert_eq!(a.recv().await, json!({"type":"chat","to":"a","from":"b"}));
    });
}

#[test]
fn too_large_is_an_error_then_close_1009() {
    run(async {
        let daemon = Daemon::start(&["--max-message-bytes", "2048"]);
        let (mut a, _) = Client::join(&daemon, "a", None).await;
        let (mut b, _) = Client::join(&daemon, "b", None).await;
        a.recv_type("peer-joined").await;
        // Exactly at the limit passes.
        let at_limit = format!(r#"{{"type":"x","to":"b","pad":"{}"}}"#, "p".repeat(2048 - 30));
        assert_eq!(at_limit.len(), 2048);
        b.send_text(&at_limit.replace("\"to\":\"b\"", "\"to\":\"a\"")).await;
        assert_eq!(a.recv().await["from"], "b");
        let over = format!(r#"{{"type":"x","to":"a","pad":"{}"}}"#, "p".repeat(2048));
        b.send_text(&over).await;
        let (code, before) = b.expect_close().await;
        assert_eq!(code, 1009);
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(before[0]["code"], "too-large");
        assert_eq!(a.recv().await, json!({"type":"peer-left","id":"b"}));
    });
}

#[test]
fn invalid_hellos_get_an_error_and_close_4000() {
    run(async {
        let daemon = Daemon::start(&[]);
        for (query, code) in [
            ("id=has%20space", "invalid-id"),
            (&format!("id={}", "x".repeat(65)), "invalid-id"),
            ("id=a&room=bad%2Froom", "invalid-room"),
            (&format!("id=a&token={}", "t".repeat(129)), "invalid-token"),
            ("id=%zz", "invalid-id"),
        ] {
            let mut client = Client::connect(&daemon, query).await;
            let (close, before) = client.expect_close().await;
            assert_eq!(close, 4000, "{query}");
            assert_eq!(before.len(), 1, "{query}: {before:?}");
            assert_eq!(before[0]["code"], code, "{query}");
        }
        // The longest valid id and token are accepted.
        let query = format!("id={}&token={}", "x".repeat(64), "t".repeat(128));
        let mut client = Client::connect(&daemon, &query).await;
        assert_eq!(client.recv().await["type"], "welcome");
    });
}

#[test]
fn id_taken_without_the_token_and_takeover_with_it() {
    run(async {
        let daemon = Daemon::start(&[]);
        let (mut door, _) = Client::join(&daemon, "door", Some("s3cret")).await;
        let (mut bob, _) = Client::join(&daemon, "bob", None).await;
        door.recv_type("peer-joined").await;

        for query in ["id=door", "id=door&token=wrong"] {
            let mut thief = Client::connect(&daemon, query).await;
            let (close, before) = thief.expect_close().await;
            assert_eq!(close, 4002, "{query}");
            assert_eq!(before[0]["code"], "id-taken", "{query}");
        }

        let (mut door2, welcome) = Client::join(&daemon, "door", Some("s3cret")).await;
        assert_eq!(welcome["peers"], json!(["bob"]));
        let (close, _) = door.expect_close().await;
        assert_eq!(close, 4001, "the old socket is replaced");
        // The takeover was silent for bob, and messages now reach the new socket.
        bob.send(json!({"type":"ring","to":"door"})).await;
        assert_eq!(door2.recv().await, json!({"type":"ring","to":"door","from":"bob"}));
        assert_nothing_more(&mut door2, &mut bob, "bob").await;
    });
}

#[test]
fn server_full_at_max_peers() {
    run(async {
        let daemon = Daemon::start(&["--max-peers", "2"]);
        let (_a, _) = Client::join(&daemon, "a", None).await;
        let (_b, _) = Client::join(&daemon, "b", Some("t")).await;
        let mut c = Client::connect(&daemon, "id=c").await;
        let (close, before) = c.expect_close().await;
        assert_eq!(close, 4005);
        assert_eq!(before[0]["code"], "server-full");
        // A takeover needs no free slot.
        let (_b2, _) = Client::join(&daemon, "b", Some("t")).await;
    });
}

#[test]
fn rate_limited_beyond_the_burst() {
    run(async {
        // One message a second with a burst of two: the third of three sent
        // back to back is over unless a whole second passed between the
        // first and the third.
        let daemon = Daemon::start(&["--max-rate", "1"]);
        let (mut a, _) = Client::join(&daemon, "a", None).await;
        let (mut b, _) = Client::join(&daemon, "b", None).await;
        a.recv_type("peer-joined").await;
        for n in 0..3 {
            a.send(json!({"type":"x","to":"b","n":n})).await;
        }
        for n in 0..2 {
            assert_eq!(b.recv().await, json!({"type":"x","to":"b","n":n,"from":"a"}), "the burst, in order");
        }
        let error = a.expect_error("rate-limited").await;
        assert_eq!(error["ref"], json!({"type":"x","to":"b"}), "{error}");
        // The third never reached b: the answer to b's own request, handled
        // after a's three, is the next thing b gets.
        b.send(json!({"type":"peers"})).await;
        assert_eq!(b.recv().await["type"], "peers");
        // a's socket stays open: it still gets messages, and nothing more
        // (one error for the one message over).
        assert_nothing_more(&mut b, &mut a, "a").await;
        // And it is a rate, not a ban: once a token is back (after a
        // second), a is served again. A token coming back is no event, so
        // ask now and then, within WAIT.
        let deadline = Instant::now() + WAIT;
        loop {
            a.send(json!({"type":"peers"})).await;
            let answer = a.recv().await;
            if answer["type"] == "peers" {
                break;
            }
            assert_eq!(answer["code"], "rate-limited", "{answer}");
            assert!(Instant::now() < deadline, "a was still rate-limited {WAIT:?} after its burst");
            smol::Timer::after(Duration::from_millis(250)).await;
        }
    });
}

#[test]
fn info_log_has_no_line_per_message() {
    run(async {
        let daemon = Daemon::start(&[]);
        let (mut a, _) = Client::join(&daemon, "a", None).await;
        let (mut b, _) = Client::join(&daemon, "b", None).await;
        a.recv_type("peer-joined").await;
        daemon.wait_for_log("peer b joined");
        let lines_before = daemon.log().len();
        for _ in 0..50 {
            a.send(json!({"type":"candidate","to":"b"})).await;
            b.recv().await;
        }
        // A later event's line marks the end of what the messages logged.
        let (_c, _) = Client::join(&daemon, "c", None).await;
        daemon.wait_for_log("peer c joined");
        let log = daemon.log();
        assert_eq!(log.len(), lines_before + 1, "only the join of c was logged: {:?}", &log[lines_before..]);
    });
}
