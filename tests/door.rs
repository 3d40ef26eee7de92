//! The door opener over loopback (`--door-open`): the command, a script that
//! records every call, runs for whoever answered the door station's ring,
//! during the call and just after it, with the PIN or a device key; every
//! other request gets its clear refusal and opens nothing; a command that
//! hangs is killed at its limit; a bystander pair talks throughout.
//! The end of the 30 s window is decided in the pure core with made-up
//! time (`door.rs`); here a new ring replaces the window instead.

mod common;

use std::path::PathBuf;

use common::{assert_nothing_more, header, http_get, http_raw, json_body, parse_response, scratch_dir, Client, Daemon};
use serde_json::{json, Value};

const PIN: &str = "2468";

/// A recording opener: `record.sh` appends its arguments to `record`; with
/// `hold`, it first waits until the file `release` exists.
struct Opener {
    dir: PathBuf,
}

impl Opener {
    fn new(hold: bool) -> Opener {
        let dir = scratch_dir();
        let wait = if hold { "while [ ! -e \"$DIR/release\" ]; do sleep 0.05; done\n" } else { "" };
        let script =
            format!("#!/bin/sh\nDIR={}\n{wait}echo \"$*\" >> \"$DIR/record\"\necho relay pulsed\n", dir.display());
        let path = dir.join("record.sh");
        std::fs::write(&path, script).unwrap();
        std::process::Command::new("chmod").args(["+x", path.to_str().unwrap()]).status().unwrap();
        std::fs::write(dir.join("pin"), format!("{PIN}\n")).unwrap();
        Opener { dir }
    }

    fn flag(&self) -> String {
        format!("door={} gpio17 3s", self.dir.join("record.sh").display())
    }

    fn pin_file(&self) -> String {
        self.dir.join("pin").display().to_string()
    }

    /// The calls so far, one line each.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("record")).unwrap_or_default().lines().map(str::to_string).collect()
    }

    fn release(&self) {
        std::fs::write(self.dir.join("release"), "").unwrap();
    }
}

impl Drop for Opener {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(opener: &Opener, more: &[&str]) -> Daemon {
    let (flag, pin) = (opener.flag(), opener.pin_file());
    let mut flags = vec!["--door-open", &flag, "--door-pin-file", &pin];
    flags.extend_from_slice(more);
    Daemon::start(&flags)
}

/// `POST /api/door/open` with `body` as JSON; (status, headers, answer).
fn open(daemon: &Daemon, body: &Value) -> (u16, Vec<(String, String)>, Value) {
    let body = body.to_string();
    let raw = format!(
        "POST /api/door/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, headers, answer) = http_raw(daemon.addr, raw.as_bytes());
    (status, headers, json_body(&answer))
}

fn by_kitchen(pin: &str) -> Value {
    json!({"door": "door", "id": "kitchen", "token": "t-kitchen", "pin": pin})
}

fn events(daemon: &Daemon, kind: &str) -> Vec<Value> {
    let (_, _, body) = http_get(daemon.addr, "/api/events", "");
    json_body(&body)["events"].as_array().unwrap().iter().filter(|event| event["event"] == kind).cloned().collect()
}

/// The door rings the room `home`; kitchen answers. The other clients
/// given get the ring too and must take it.
async fn ring_and_answer(door: &mut Client, kitchen: &mut Client, others: &mut [&mut Client], call: &str) {
    door.send(json!({"type": "call-request", "to": "*", "call": call, "media": "video", "ring": "room"})).await;
    kitchen.recv_type("call-request").await;
    for other in others.iter_mut() {
        other.recv_type("call-request").await;
    }
    kitchen.send(json!({"type": "call-accept", "to": "door", "call": call, "media": "video"})).await;
    door.recv_type("call-accept").await;
}

/// A pair in another room that keeps talking: every message arrives, in order.
struct Bystanders {
    a: Client,
    b: Client,
    sent: u32,
}

impl Bystanders {
    async fn new(daemon: &Daemon) -> Bystanders {
        let a = Client::join_room(daemon, "by-a", "attic").await;
        let b = Client::join_room(daemon, "by-b", "attic").await;
        Bystanders { a, b, sent: 0 }
    }

    async fn talk(&mut self) {
        for _ in 0..5 {
            self.sent += 1;
            self.a.send(json!({"type": "chat", "to": "by-b", "n": self.sent})).await;
        }
        let mut got = 0;
        while got < 5 {
            let message = self.b.recv().await;
            if message["type"] == "chat" {
                got += 1;
                assert_eq!(message["n"], self.sent - 5 + got, "the bystanders' messages in order, none lost");
            }
        }
    }
}

#[test]
fn whoever_answered_opens_with_the_pin_during_the_call_and_just_after_it() {
    smol::block_on(async {
        let opener = Opener::new(false);
        let daemon = start(&opener, &[]);
        let mut talk = Bystanders::new(&daemon).await;
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        daemon.wait_for_log("door opener for door: whoever answers a door's ring, with the PIN");

        let (status, _, doors) = {
            let (status, headers, body) = http_get(daemon.addr, "/api/door", "");
            (status, headers, json_body(&body))
        };
        assert_eq!(status, 200);
        assert_eq!(doors, json!({"doors": ["door"], "needs": "pin", "window": 30}));

        ring_and_answer(&mut door, &mut kitchen, &mut [], "c1").await;
        let (status, _, answer) = open(&daemon, &by_kitchen(PIN));
        assert_eq!((status, &answer), (200, &json!({"opened": "door"})));
        assert_eq!(opener.calls(), vec!["gpio17 3s".to_string()], "the command ran once, with its arguments");
        // The door station is told, and the event names who opened it.
        let told = door.recv_type("door-opened").await;
        assert_eq!(told, json!({"type": "door-opened", "by": "kitchen", "call": "c1"}));
        let opened = events(&daemon, "door-opened");
        assert_eq!(opened.len(), 1, "{opened:?}");
        assert_eq!(
            (&opened[0]["from"], &opened[0]["by"], &opened[0]["call"]),
            (&json!("door"), &json!("kitchen"), &json!("c1"))
        );
        assert_eq!(opened[0]["room"], "home");
        daemon.wait_for_log("door door opened by kitchen (call c1): ");
        assert!(daemon.log().iter().any(|line| line.contains("exited 0") && line.contains("relay pulsed")));
        talk.talk().await;

        // The call ends: within the window the answerer still opens.
        kitchen.send(json!({"type": "hangup", "to": "door", "call": "c1"})).await;
        door.recv_type("hangup").await;
        let (status, _, _) = open(&daemon, &by_kitchen(PIN));
        assert_eq!(status, 200);
        assert_eq!(opener.calls().len(), 2);
        talk.talk().await;

        // A new ring of the door replaces the window: the old answer opens nothing.
        door.send(json!({"type": "call-request", "to": "kitchen", "call": "c2", "media": "video"})).await;
        kitchen.recv_type("call-request").await;
        let (status, _, answer) = open(&daemon, &by_kitchen(PIN));
        assert_eq!((status, answer["reason"].as_str()), (403, Some("not-your-call")), "{answer}");
        assert_eq!(opener.calls().len(), 2);
        assert!(!daemon.log().concat().contains(PIN), "the PIN never reaches the log");
        talk.talk().await;
    });
}

#[test]
fn everyone_else_gets_a_clear_refusal_and_nothing_opens() {
    smol::block_on(async {
        let opener = Opener::new(false);
        let daemon = start(&opener, &[]);
        let mut talk = Bystanders::new(&daemon).await;
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        let mut hall = Client::join_room(&daemon, "hall", "home").await;
        let mut gate = Client::join_room(&daemon, "gate", "home").await;

        // Nobody answered yet.
        let (status, _, answer) = open(&daemon, &by_kitchen(PIN));
        assert_eq!((status, answer["reason"].as_str()), (403, Some("not-your-call")), "{answer}");
        assert!(answer["error"].as_str().unwrap().contains("only whoever answered"), "{answer}");

        ring_and_answer(&mut door, &mut kitchen, &mut [&mut hall, &mut gate], "c1").await;
        // hall is in a call of its own, with gate.
        hall.send(json!({"type": "call-request", "to": "gate", "call": "h1", "media": "audio"})).await;
        gate.recv_type("call-request").await;
        gate.send(json!({"type": "call-accept", "to": "hall", "call": "h1", "media": "audio"})).await;
        hall.recv_type("call-accept").await;
        let refused = [
            // A peer of the same room in another call, with its own token and the right PIN.
            (json!({"door": "door", "id": "hall", "token": "t-hall", "pin": PIN}), 403, "not-your-call"),
            // A forged id: kitchen's name, hall's token.
            (json!({"door": "door", "id": "kitchen", "token": "t-hall", "pin": PIN}), 403, "not-your-call"),
            // A door nobody configured, and a peer that is no door.
            (json!({"door": "garage", "id": "kitchen", "token": "t-kitchen", "pin": PIN}), 404, "unknown-door"),
            (json!({"door": "gate", "id": "kitchen", "token": "t-kitchen", "pin": PIN}), 404, "unknown-door"),
        ];
        for (body, status, reason) in refused {
            let (got, _, answer) = open(&daemon, &body);
            assert_eq!((got, answer["reason"].as_str()), (status, Some(reason)), "{body}: {answer}");
        }
        talk.talk().await;
        // The answerer with a wrong PIN (the fourth failure from this
        // address: the fifth would pause it, `wrong_pins_pause_...`).
        let (status, _, answer) = open(&daemon, &by_kitchen("1357"));
        assert_eq!((status, answer["reason"].as_str()), (403, Some("wrong-pin")), "{answer}");
        assert_eq!(answer["error"], "wrong PIN or device key");

        // Malformed requests.
        let raw = |request: &str| parse_response(&raw_exchange(&daemon, request));
        let no_json = "POST /api/door/open HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(raw(no_json).0, 415);
        let not_object =
            "POST /api/door/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]";
        assert_eq!(raw(not_object).0, 400);
        let huge = format!(
            "POST /api/door/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            1025
        );
        assert_eq!(raw(&huge).0, 413);
        let chunked = "POST /api/door/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(raw(chunked).0, 411);
        assert!(opener.calls().is_empty(), "nothing opened: {:?}", opener.calls());
        talk.talk().await;
        assert_nothing_more(&mut door, &mut hall, "hall").await;
        let log = daemon.log().concat();
        assert!(!log.contains(PIN) && !log.contains("1357"), "no PIN in the log");
    });
}

/// The exchange of `http_raw`, raw, for requests `open` cannot make.
fn raw_exchange(daemon: &Daemon, request: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(daemon.addr).unwrap();
    socket.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    socket.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = socket.read_to_end(&mut response);
    response
}

#[test]
fn wrong_pins_pause_the_peer_and_its_address() {
    smol::block_on(async {
        let opener = Opener::new(false);
        let daemon = start(&opener, &[]);
        let mut talk = Bystanders::new(&daemon).await;
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        ring_and_answer(&mut door, &mut kitchen, &mut [], "c1").await;
        // door::MAX_FAILURES is 5: no PIN and three wrong ones are refused as wrong...
        let (status, _, answer) = open(&daemon, &json!({"door": "door", "id": "kitchen", "token": "t-kitchen"}));
        assert_eq!((status, answer["reason"].as_str()), (403, Some("wrong-pin")), "{answer}");
        for n in 1..4 {
            let (status, _, answer) = open(&daemon, &by_kitchen(&format!("000{n}")));
            assert_eq!((status, answer["reason"].as_str()), (403, Some("wrong-pin")), "{answer}");
        }
        // ...the fifth pauses: 429 with Retry-After, and then even the right PIN waits.
        let (status, headers, answer) = open(&daemon, &by_kitchen("0004"));
        assert_eq!((status, answer["reason"].as_str()), (429, Some("too-many-tries")), "{answer}");
        assert_eq!(header(&headers, "retry-after"), Some("300"));
        let (status, _, answer) = open(&daemon, &by_kitchen(PIN));
        assert_eq!(status, 429, "{answer}");
        assert!(opener.calls().is_empty());
        talk.talk().await;
        // The flood that follows gets the same answer, quickly, and disturbs nobody.
        for _ in 0..50 {
            assert_eq!(open(&daemon, &by_kitchen(PIN)).0, 429);
        }
        talk.talk().await;
        assert!(opener.calls().is_empty());
    });
}

#[test]
fn a_second_open_while_the_first_runs_is_refused_not_queued() {
    smol::block_on(async {
        let opener = Opener::new(true);
        let daemon = start(&opener, &[]);
        let mut talk = Bystanders::new(&daemon).await;
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        ring_and_answer(&mut door, &mut kitchen, &mut [], "c1").await;

        let addr_daemon = &daemon;
        std::thread::scope(|scope| {
            let first = scope.spawn(|| open(addr_daemon, &by_kitchen(PIN)));
            // The first has started once the door station hears of it.
            smol::block_on(door.recv_type("door-opened"));
            let (status, _, answer) = open(addr_daemon, &by_kitchen(PIN));
            assert_eq!((status, answer["reason"].as_str()), (409, Some("busy")), "{answer}");
            smol::block_on(talk.talk());
            opener.release();
            let (status, _, answer) = first.join().unwrap();
            assert_eq!((status, answer), (200, json!({"opened": "door"})));
        });
        assert_eq!(opener.calls().len(), 1, "one open ran, the refused one was not queued");
        // Free again.
        assert_eq!(open(&daemon, &by_kitchen(PIN)).0, 200);
        assert_eq!(opener.calls().len(), 2);
    });
}

#[test]
fn a_command_that_hangs_is_killed_at_its_limit_and_logged() {
    smol::block_on(async {
        let dir = scratch_dir();
        std::fs::write(dir.join("pin"), PIN).unwrap();
        let pin = dir.join("pin").display().to_string();
        let daemon =
            Daemon::start(&["--door-open", "door=/bin/sleep 600", "--door-pin-file", &pin, "--door-open-timeout", "1"]);
        let mut talk = Bystanders::new(&daemon).await;
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        ring_and_answer(&mut door, &mut kitchen, &mut [], "c1").await;
        let (status, _, answer) = open(&daemon, &by_kitchen(PIN));
        assert_eq!((status, answer["reason"].as_str()), (502, Some("opener-failed")), "{answer}");
        daemon.wait_for_log("door door: opening for kitchen (call c1): /bin/sleep still ran after 1s, killed");
        talk.talk().await;
        // Killed, so the door is free: the next try runs (and is killed) again.
        assert_eq!(open(&daemon, &by_kitchen(PIN)).0, 502);
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn a_device_key_opens_and_the_log_names_it_without_the_key() {
    smol::block_on(async {
        let opener = Opener::new(false);
        let keys = opener.dir.join("keys");
        std::fs::write(&keys, "# given by the installer\nhall-panel 0123456789abcdef0123\n").unwrap();
        let (flag, keys) = (opener.flag(), keys.display().to_string());
        let daemon = Daemon::start(&["--door-open", &flag, "--door-keys-file", &keys]);
        let (_, _, body) = http_get(daemon.addr, "/api/door", "");
        assert_eq!(json_body(&body)["needs"], "key");
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        ring_and_answer(&mut door, &mut kitchen, &mut [], "c1").await;
        let with = |key: &str| json!({"door": "door", "id": "kitchen", "token": "t-kitchen", "key": key});
        assert_eq!(open(&daemon, &with("0123456789abcdef0124")).0, 403);
        assert_eq!(open(&daemon, &by_kitchen("0123456789abcdef0123")).0, 403, "a key is no PIN");
        assert_eq!(open(&daemon, &with("0123456789abcdef0123")).0, 200);
        daemon.wait_for_log("door door opened by kitchen (call c1, device key hall-panel)");
        assert!(!daemon.log().concat().contains("0123456789abcdef"), "the key never reaches the log");
    });
}

#[test]
fn without_a_pin_it_is_said_at_every_start_and_the_answerer_alone_opens() {
    smol::block_on(async {
        let opener = Opener::new(false);
        let flag = opener.flag();
        let daemon = Daemon::start(&["--door-open", &flag, "--door-open-without-pin"]);
        daemon.wait_for_log("--door-open-without-pin: whoever answers a door's ring can open it");
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        let mut hall = Client::join_room(&daemon, "hall", "home").await;
        ring_and_answer(&mut door, &mut kitchen, &mut [&mut hall], "c1").await;
        let bare = |id: &str| json!({"door": "door", "id": id, "token": format!("t-{id}")});
        assert_eq!(open(&daemon, &bare("hall")).0, 403);
        assert_eq!(open(&daemon, &bare("kitchen")).0, 200);
        assert_eq!(opener.calls().len(), 1);
    });
}

#[test]
fn the_pin_can_come_from_the_environment_for_systemd() {
    smol::block_on(async {
        let opener = Opener::new(false);
        let flag = opener.flag();
        let daemon = Daemon::start_with_env(&["--door-open", &flag], &[("INTERCOMD_DOOR_PIN", "97531")]);
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        ring_and_answer(&mut door, &mut kitchen, &mut [], "c1").await;
        assert_eq!(open(&daemon, &by_kitchen(PIN)).0, 403);
        assert_eq!(open(&daemon, &by_kitchen("97531")).0, 200);
        assert!(!daemon.log().concat().contains("97531"));
    });
}

#[test]
fn a_daemon_without_door_open_has_no_door() {
    let daemon = Daemon::start(&[]);
    let (status, _, body) = http_get(daemon.addr, "/api/door", "");
    assert_eq!((status, json_body(&body)), (200, json!({"doors": []})));
    let (status, _, answer) = open(&daemon, &by_kitchen(PIN));
    assert_eq!(status, 404, "{answer}");
}

#[test]
fn the_flags_are_checked_at_start() {
    let opener = Opener::new(false);
    let flag = opener.flag();
    let pin = opener.pin_file();
    let bad_pin = opener.dir.join("short");
    std::fs::write(&bad_pin, "12\n").unwrap();
    let bad_pin = bad_pin.display().to_string();
    let cases: [(&[&str], &str); 7] = [
        (&["--door-open", &flag], "--door-open needs --door-pin-file (or $INTERCOMD_DOOR_PIN) or --door-keys-file"),
        (&["--door-pin-file", &pin], "--door-pin-file needs --door-open"),
        (&["--door-open", "door", "--door-pin-file", &pin], "expected ID=COMMAND"),
        (&["--door-open", "door=/nonexistent/relay", "--door-pin-file", &pin], "no such program"),
        (&["--door-open", &flag, "--door-pin-file", &bad_pin], "4 to 32 characters"),
        (&["--door-open", &flag, "--door-pin-file", &pin, "--door-open-without-pin"], "contradicts"),
        (&["--door-open", &flag, "--door-pin-file", &pin, "--mqtt-door-open"], "--mqtt-door-open needs --mqtt"),
    ];
    let binary = std::env::var("INTERCOMD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_intercomd").to_string());
    for (flags, says) in cases {
        let output = std::process::Command::new(&binary).args(flags).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?} should say {says:?}: {stderr}");
    }
}
