//! Pictures of visitors over loopback: a connected peer uploads a still
//! with its token, rings with it, and the ring event names it; anything
//! else is refused with its reason and changes nothing; the store's bounds
//! hold and the pictures survive a restart.

mod common;

use common::{header, http_get, http_raw, json_body, scratch_dir, upload_snapshot as upload, Client, Daemon};
use serde_json::{json, Value};

const STILL: &[u8] = include_bytes!("fixtures/still-16x12.jpg");
const PROGRESSIVE: &[u8] = include_bytes!("fixtures/still-16x12-progressive.jpg");
const PNG: &[u8] = include_bytes!("fixtures/still-16x12.png");
const WIDE: &[u8] = include_bytes!("fixtures/still-641x10.jpg");
/// 54,058 bytes: two do not fit in 100 KiB.
const LARGE: &[u8] = include_bytes!("fixtures/still-640x480.jpg");

fn ring_events(daemon: &Daemon) -> Vec<Value> {
    let (_, _, body) = http_get(daemon.addr, "/api/events", "");
    json_body(&body)["events"].as_array().unwrap().iter().filter(|event| event["event"] == "ring").cloned().collect()
}

#[test]
fn a_ring_carries_its_callers_picture() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        door.recv_type("peer-joined").await;

        let (status, answer) = upload(&daemon, "id=door&token=t-door", STILL);
        assert_eq!(status, 201, "{answer}");
        let name = answer["snapshot"].as_str().unwrap().to_string();
        assert_eq!(answer["url"], format!("/snapshots/{name}"));
        assert_eq!(name.len(), 36, "128 random bits in hex, and .jpg: {name}");

        let (status, headers, body) = http_get(daemon.addr, &format!("/snapshots/{name}"), "");
        assert_eq!(status, 200);
        assert_eq!(body, STILL, "the very bytes");
        assert_eq!(header(&headers, "content-type"), Some("image/jpeg"));
        assert_eq!(header(&headers, "cache-control"), Some("private, max-age=31536000, immutable"));
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));

        // The picture goes with the ring; the rung page gets the name as sent.
        door.send(json!({"type":"call-request","to":"*","call":"c1","snapshot":name})).await;
        let rung = kitchen.recv_type("call-request").await;
        assert_eq!(rung["snapshot"], name);
        let rings = ring_events(&daemon);
        assert_eq!(rings[0]["snapshot"], format!("/snapshots/{name}"), "{rings:?}");

        // Only once, and only the caller's own.
        door.send(json!({"type":"call-request","to":"kitchen","call":"c2","snapshot":name})).await;
        kitchen.recv_type("call-request").await;
        let (status, mine) = upload(&daemon, "id=kitchen&token=t-kitchen", PROGRESSIVE);
        assert_eq!(status, 201, "a progressive JPEG is a JPEG too");
        door.send(json!({"type":"call-request","to":"kitchen","call":"c3","snapshot":mine["snapshot"]})).await;
        kitchen.recv_type("call-request").await;
        let rings = ring_events(&daemon);
        assert_eq!(rings.len(), 3);
        assert!(rings[1].get("snapshot").is_none() && rings[2].get("snapshot").is_none(), "{rings:?}");
    });
}

#[test]
fn anything_else_is_refused_and_changes_nothing() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let _door = Client::join_room(&daemon, "door", "home").await;
        let refused = [
            ("id=door&token=wrong", STILL, 403, "not the connected peer"),
            ("id=kitchen&token=t-kitchen", STILL, 403, "not the connected peer"),
            ("id=door", STILL, 400, "id and token are required"),
            ("id=door&token=t-door", PNG, 415, "not a JPEG"),
            ("id=door&token=t-door", WIDE, 415, "640 pixels"),
            ("id=door&token=t-door", &STILL[..STILL.len() - 10], 415, "truncated"),
        ];
        for (query, body, status, why) in refused {
            let (got, answer) = upload(&daemon, query, body);
            assert_eq!(got, status, "{query}: {answer}");
            assert!(answer["error"].as_str().unwrap().contains(why), "{query}: {answer}");
        }
        // 5 MiB is refused on its Content-Length, before a byte is read.
        let head = format!(
            "POST /api/snapshots?id=door&token=t-door HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            5 << 20
        );
        let (status, _, body) = http_raw(daemon.addr, head.as_bytes());
        assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
        let files = std::fs::read_dir(daemon.state_dir.as_ref().unwrap().join("snapshots"));
        assert!(files.map_or(true, |mut files| files.next().is_none()), "nothing was kept");
        // Each attempt with the right token counts: 6 a minute per peer.
        assert_eq!(upload(&daemon, "id=door&token=t-door", STILL).0, 201, "the 5th");
        assert_eq!(upload(&daemon, "id=door&token=t-door", STILL).0, 201, "the 6th");
        let (status, answer) = upload(&daemon, "id=door&token=t-door", STILL);
        assert_eq!((status, answer["error"].as_str()), (429, Some("too many pictures; a minute later, again")));
    });
}

#[test]
fn the_oldest_go_at_the_limit_and_the_rest_survive_a_restart() {
    smol::block_on(async {
        let dir = scratch_dir();
        let state = dir.display().to_string();
        let flags = ["--state-dir", state.as_str(), "--max-snapshots", "2"];
        let daemon = Daemon::start(&flags);
        let _door = Client::join_room(&daemon, "door", "home").await;
        let names: Vec<String> = (0..3)
            .map(|_| upload(&daemon, "id=door&token=t-door", STILL).1["snapshot"].as_str().unwrap().to_string())
            .collect();
        let status = |daemon: &Daemon, name: &str| http_get(daemon.addr, &format!("/snapshots/{name}"), "").0;
        assert_eq!(status(&daemon, &names[0]), 404, "the oldest went at the third");
        assert_eq!((status(&daemon, &names[1]), status(&daemon, &names[2])), (200, 200));
        drop(daemon);

        let daemon = Daemon::start(&flags);
        assert_eq!((status(&daemon, &names[1]), status(&daemon, &names[2])), (200, 200), "kept across a restart");
        drop(daemon);
        let daemon = Daemon::start(&["--state-dir", state.as_str(), "--max-snapshots", "1"]);
        assert_eq!((status(&daemon, &names[1]), status(&daemon, &names[2])), (404, 200), "the limit holds at start");
        drop(daemon);

        let daemon = Daemon::start(&["--state-dir", state.as_str(), "--no-snapshots"]);
        let _door = Client::join_room(&daemon, "door", "home").await;
        assert_eq!(upload(&daemon, "id=door&token=t-door", STILL).0, 404, "turned off");
        assert_eq!(status(&daemon, &names[2]), 404);
        drop(daemon);
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn the_size_limit_holds_at_the_limit() {
    smol::block_on(async {
        assert!(LARGE.len() * 2 > 100 * 1024 && LARGE.len() + 2 * STILL.len() <= 100 * 1024);
        let daemon = Daemon::start(&["--max-snapshot-bytes", "102400"]);
        let _door = Client::join_room(&daemon, "door", "home").await;
        let name = |(status, answer): (u16, Value)| {
            assert_eq!(status, 201, "{answer}");
            answer["snapshot"].as_str().unwrap().to_string()
        };
        let status = |name: &str| http_get(daemon.addr, &format!("/snapshots/{name}"), "").0;
        let first = name(upload(&daemon, "id=door&token=t-door", LARGE));
        let small = [STILL, STILL].map(|still| name(upload(&daemon, "id=door&token=t-door", still)));
        assert_eq!(status(&first), 200, "{} bytes: within 100 KiB", LARGE.len() + 2 * STILL.len());
        let second = name(upload(&daemon, "id=door&token=t-door", LARGE));
        assert_eq!(status(&first), 404, "the oldest went to make room");
        assert_eq!((status(&small[0]), status(&small[1]), status(&second)), (200, 200, 200));
        let on_disk: u64 = std::fs::read_dir(daemon.state_dir.as_ref().unwrap().join("snapshots"))
            .unwrap()
            .map(|entry| entry.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(on_disk as usize, LARGE.len() + 2 * STILL.len(), "what is on disk is what is kept");
    });
}

#[test]
fn a_store_that_cannot_write_says_so_once_and_nobody_else_notices() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        door.recv_type("peer-joined").await;
        // Where the directory should be, a file: every write fails, as on a
        // full or read-only card (and whoever runs the test, root included).
        let dir = daemon.state_dir.as_ref().unwrap().join("snapshots");
        std::fs::write(&dir, b"in the way").unwrap();
        for _ in 0..3 {
            let (status, answer) = upload(&daemon, "id=door&token=t-door", STILL);
            assert_eq!(status, 507, "{answer}");
        }
        let warnings = daemon.log().iter().filter(|line| line.contains("cannot keep a picture")).count();
        assert_eq!(warnings, 1, "one line for the failing spell: {:?}", daemon.log());
        // Rings still ring, without a picture.
        door.send(json!({"type":"call-request","to":"kitchen","call":"c1"})).await;
        assert_eq!(kitchen.recv_type("call-request").await["call"], "c1");
        std::fs::remove_file(&dir).unwrap();
        let (status, answer) = upload(&daemon, "id=door&token=t-door", STILL);
        assert_eq!(status, 201, "{answer}");
        daemon.wait_for_log("pictures are kept again");
    });
}
