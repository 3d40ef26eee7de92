//! Rooms over loopback: presence and broadcasts stay inside a room, `join`
//! moves presence, the room API matches the live state, and each room
//! limit gives its error.

mod common;

use common::{assert_nothing_more, header, http_get, http_method, json_body, Client, Daemon, WAIT};
use serde_json::{json, Value};

async fn join_room(daemon: &Daemon, id: &str, room: &str) -> (Client, Value) {
    let mut client = Client::connect(daemon, &format!("id={id}&room={room}&token=t-{id}")).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{id}: {welcome}");
    (client, welcome)
}

fn room_api(daemon: &Daemon, room: &str) -> Value {
    let (status, _, body) = http_get(daemon.addr, &format!("/api/rooms/{room}"), "");
    assert_eq!(status, 200);
    json_body(&body)
}

/// `/api/rooms/<room>` as soon as it equals `expected` (a departure nobody in
/// the room can observe takes a moment to reach the daemon).
fn wait_for_room_api(daemon: &Daemon, room: &str, expected: Value) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = room_api(daemon, room);
        if got == expected {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "/api/rooms/{room} stayed {got}, expected {expected}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn two_rooms_at_once_stay_separate() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let (mut a1, _) = join_room(&daemon, "a1", "attic").await;
        let (mut b1, _) = join_room(&daemon, "b1", "basement").await;
        let (mut a2, welcome) = join_room(&daemon, "a2", "attic").await;
        assert_eq!(welcome["peers"], json!(["a1"]), "only the attic is listed");
        let (mut b2, welcome) = join_room(&daemon, "b2", "basement").await;
        assert_eq!(welcome["peers"], json!(["b1"]));
        assert_eq!(a1.recv().await, json!({"type":"peer-joined","id":"a2"}));
        assert_eq!(b1.recv().await, json!({"type":"peer-joined","id":"b2"}));
        // Nobody in the attic heard of the basement, and the other way round.
        assert_nothing_more(&mut a2, &mut a1, "a1").await;
        assert_nothing_more(&mut b2, &mut b1, "b1").await;
        a2.leave().await;
        assert_eq!(a1.recv().await, json!({"type":"peer-left","id":"a2"}));
        assert_nothing_more(&mut b2, &mut b1, "b1").await;
    });
}

#[test]
fn broadcast_reaches_exactly_the_room_minus_its_sender() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let (mut sender, _) = join_room(&daemon, "s", "hall").await;
        let (mut x, _) = join_room(&daemon, "x", "hall").await;
        let (mut y, _) = join_room(&daemon, "y", "hall").await;
        let (mut outsider, _) = join_room(&daemon, "o", "garage").await;
        sender.recv_type("peer-joined").await;
        sender.recv_type("peer-joined").await;
        x.recv_type("peer-joined").await;

        sender.send(json!({"type":"room-share-start","to":"*","from":"spoof"})).await;
        let expected = json!({"type":"room-share-start","to":"*","from":"s"});
        assert_eq!(x.recv().await, expected);
        assert_eq!(y.recv().await, expected);
        // The sender and the other room got nothing before these markers.
        assert_nothing_more(&mut x, &mut sender, "s").await;
        assert_nothing_more(&mut x, &mut outsider, "o").await;
        // A room of one: the broadcast goes nowhere, without an error.
        outsider.send(json!({"type":"hello","to":"*"})).await;
        assert_nothing_more(&mut x, &mut outsider, "o").await;
    });
}

#[test]
fn join_moves_presence_both_ways() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let (mut mover, _) = join_room(&daemon, "m", "kitchen").await;
        let (mut k, _) = join_room(&daemon, "k", "kitchen").await;
        let (mut p, _) = join_room(&daemon, "p", "porch").await;
        mover.recv_type("peer-joined").await;
        mover.send(json!({"type":"join","room":"porch"})).await;
        assert_eq!(mover.recv().await, json!({"type":"peers","room":"porch","peers":["p"]}));
        assert_eq!(k.recv().await, json!({"type":"peer-left","id":"m"}));
        assert_eq!(p.recv().await, json!({"type":"peer-joined","id":"m"}));
        // Broadcasts follow the move.
        mover.send(json!({"type":"wave","to":"*"})).await;
        assert_eq!(p.recv().await, json!({"type":"wave","to":"*","from":"m"}));
        assert_nothing_more(&mut p, &mut k, "k").await;
        // Joining the room one is in changes nothing but answers the list.
        mover.send(json!({"type":"join","room":"porch"})).await;
        assert_eq!(mover.recv().await, json!({"type":"peers","room":"porch","peers":["p"]}));
        assert_nothing_more(&mut mover, &mut p, "p").await;
    });
}

#[test]
fn the_room_api_matches_the_live_state() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let (status, headers, body) = http_method(daemon.addr, "POST", "/api/rooms", "Content-Length: 0\r\n");
        assert_eq!((status, header(&headers, "content-type")), (201, Some("application/json")));
        let room = json_body(&body)["room"].as_str().unwrap().to_string();
        assert_eq!(room.len(), 26, "128 random bits: {room}");
        assert!(room.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{room}");
        let (_, _, other) = http_method(daemon.addr, "POST", "/api/rooms", "Content-Length: 0\r\n");
        assert_ne!(json_body(&other)["room"], room.as_str(), "fresh every time");

        assert_eq!(room_api(&daemon, &room), json!({"room":room,"peers":[]}));
        let (mut a, _) = join_room(&daemon, "a", &room).await;
        let (b, _) = join_room(&daemon, "b", &room).await;
        a.recv_type("peer-joined").await;
        assert_eq!(room_api(&daemon, &room), json!({"room":room,"peers":["a","b"]}));
        a.send(json!({"type":"join","room":"elsewhere"})).await;
        a.recv_type("peers").await;
        assert_eq!(room_api(&daemon, &room), json!({"room":room,"peers":["b"]}));
        assert_eq!(room_api(&daemon, "elsewhere"), json!({"room":"elsewhere","peers":["a"]}));
        b.leave().await;
        wait_for_room_api(&daemon, &room, json!({"room":room,"peers":[]}));

        let (status, _, body) = http_get(daemon.addr, "/api/rooms/not%2Fa%2Froom", "");
        assert_eq!(status, 400);
        assert!(json_body(&body)["error"].is_string());
        let (status, headers, _) = http_get(daemon.addr, "/api/rooms", "");
        assert_eq!((status, header(&headers, "allow")), (405, Some("POST")));
        let (status, _, _) = http_method(daemon.addr, "POST", &format!("/api/rooms/{room}"), "Content-Length: 0\r\n");
        assert_eq!(status, 405);
    });
}

#[test]
fn room_full_at_max_room_peers() {
    smol::block_on(async {
        let daemon = Daemon::start(&["--max-room-peers", "2"]);
        let (_a, _) = join_room(&daemon, "a", "call").await;
        let (_b, _) = join_room(&daemon, "b", "call").await;
        let mut c = Client::connect(&daemon, "id=c&room=call").await;
        let (code, before) = c.expect_close().await;
        assert_eq!(code, 4006);
        assert_eq!(before[0]["code"], "room-full");

        // A join into the full room is refused; the peer stays where it was.
        let (mut d, _) = join_room(&daemon, "d", "side").await;
        d.send(json!({"type":"join","room":"call"})).await;
        let error = d.expect_error("room-full").await;
        assert_eq!(error["ref"], json!({"type":"join"}));
        d.send(json!({"type":"peers"})).await;
        assert_eq!(d.recv().await, json!({"type":"peers","room":"side","peers":[]}));
    });
}

#[test]
fn server_full_at_max_rooms() {
    smol::block_on(async {
        let daemon = Daemon::start(&["--max-rooms", "2"]);
        let (_a, _) = join_room(&daemon, "a", "one").await;
        let (mut b, _) = join_room(&daemon, "b", "two").await;
        let (_b2, _) = join_room(&daemon, "b2", "two").await;
        b.recv_type("peer-joined").await;
        let mut c = Client::connect(&daemon, "id=c&room=three").await;
        let (code, before) = c.expect_close().await;
        assert_eq!(code, 4005);
        assert_eq!(before[0]["code"], "server-full");
        assert!(before[0]["message"].as_str().unwrap().contains("rooms"), "{}", before[0]);
        // An existing room still takes newcomers.
        let (_c, _) = join_room(&daemon, "c", "one").await;
        // b is not alone in "two", so a move to a new room would be a third.
        b.send(json!({"type":"join","room":"three"})).await;
        b.expect_error("server-full").await;
    });
}

#[test]
fn a_peer_leaving_mid_call_frees_its_slot() {
    smol::block_on(async {
        let daemon = Daemon::start(&["--max-room-peers", "2"]);
        let (mut a, _) = join_room(&daemon, "a", "call").await;
        let (mut b, _) = join_room(&daemon, "b", "call").await;
        a.recv_type("peer-joined").await;
        a.send(json!({"type":"offer","to":"b","sdp":"v=0"})).await;
        assert_eq!(b.recv().await["type"], "offer");
        b.send(json!({"type":"answer","to":"a","sdp":"v=0"})).await;
        assert_eq!(a.recv().await["type"], "answer");

        // b walks out of the call into another room: the slot is free at once.
        b.send(json!({"type":"join","room":"hall"})).await;
        b.recv_type("peers").await;
        assert_eq!(a.recv().await, json!({"type":"peer-left","id":"b"}));
        let (mut c, welcome) = join_room(&daemon, "c", "call").await;
        assert_eq!(welcome["peers"], json!(["a"]));
        assert_eq!(a.recv().await, json!({"type":"peer-joined","id":"c"}));

        // c hangs up by closing its socket: the slot is free again.
        c.ws.close(None).await.unwrap();
        assert_eq!(a.recv().await, json!({"type":"peer-left","id":"c"}));
        let (_d, welcome) = join_room(&daemon, "d", "call").await;
        assert_eq!(welcome["peers"], json!(["a"]));
    });
}
