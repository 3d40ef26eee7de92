//! Reliability over loopback: the delivery promise across a reconnect,
//! liveness, slow readers, the per-address limit, and systemd's notify
//! protocol.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{assert_nothing_more, client_frame, http_get, json_body, metric, raw_upgrade, Client, Daemon, WAIT};
use serde_json::json;

/// Cut the TCP connection under a client without a close frame, as a phone
/// leaving Wi-Fi does.
fn cut(client: Client) {
    let stream = client.ws.get_ref().clone();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

#[test]
fn a_peer_back_within_the_grace_gets_what_was_sent_meanwhile_in_order() {
    smol::block_on(async {
        let daemon = Daemon::start(&["--reconnect-grace", "10"]);
        let (mut door, _) = Client::join(&daemon, "door", Some("s3cret")).await;
        let (mut bob, _) = Client::join(&daemon, "bob", None).await;
        let (mut carol, _) = Client::join(&daemon, "carol", None).await;
        bob.recv_type("peer-joined").await;
        // door takes its presence frames first, so nothing meant for it
        // before the cut is still unwritten and held ahead of bob's messages.
        door.recv_type("peer-joined").await;
        door.recv_type("peer-joined").await;
        cut(door);
        daemon.wait_for_log("peer door dropped off");
        for n in 0..5 {
            bob.send(json!({"type":"candidate","to":"door","n":n})).await;
        }
        // Frames of different sockets may be handled in either order: a
        // round trip makes bob's five come before carol's broadcast.
        bob.send(json!({"type":"peers"})).await;
        bob.recv_type("peers").await;
        carol.send(json!({"type":"chat","to":"*","text":"anyone?"})).await;
        assert_eq!(bob.recv().await, json!({"type":"chat","to":"*","text":"anyone?","from":"carol"}));

        let (mut door, welcome) = Client::join(&daemon, "door", Some("s3cret")).await;
        assert_eq!(welcome["peers"], json!(["bob", "carol"]));
        for n in 0..5 {
            assert_eq!(
                door.recv().await,
                json!({"type":"candidate","to":"door","n":n,"from":"bob"}),
                "message {n} in order"
            );
        }
        assert_eq!(door.recv().await, json!({"type":"chat","to":"*","text":"anyone?","from":"carol"}));
        // The room never heard door leave or join.
        assert_nothing_more(&mut door, &mut bob, "bob").await;
        assert_nothing_more(&mut door, &mut carol, "carol").await;
    });
}

#[test]
fn a_peer_not_back_within_the_grace_leaves_and_its_senders_are_told() {
    smol::block_on(async {
        // Two seconds: bob's offer must reach the daemon while door is away
        // (a margin of the whole grace after the log line), and the
        // peer-left comes within WAIT with room to spare even if the daemon
        // notices the end of the grace a quarter of it late.
        let grace = Duration::from_secs(2);
        let daemon = Daemon::start(&["--reconnect-grace", "2"]);
        let (door, _) = Client::join(&daemon, "door", Some("s3cret")).await;
        let (mut bob, _) = Client::join(&daemon, "bob", None).await;
        let started = Instant::now();
        cut(door);
        daemon.wait_for_log("peer door dropped off");
        bob.send(json!({"type":"offer","to":"door"})).await;
        assert_eq!(bob.recv().await, json!({"type":"peer-left","id":"door"}));
        // Measured from before the cut, so the grace cannot look longer than it was.
        let left_after = started.elapsed();
        let error = bob.expect_error("peer-unavailable").await;
        assert_eq!(error["ref"], json!({"type":"offer","to":"door"}));
        assert!(left_after >= grace, "door left {left_after:?} after the cut, before the {grace:?} grace ended");
        // The id is free again, for anyone.
        let (_thief, _) = Client::join(&daemon, "door", Some("other")).await;
    });
}

#[test]
fn abruptly_dropped_peers_free_their_connections_at_once_and_stay_held_as_away() {
    smol::block_on(async {
        // The grace (30 s) is far longer than every wait below (WAIT, 5 s),
        // so all of this happens while the 50 are away.
        let daemon = Daemon::start(&["--reconnect-grace", "30", "--max-connections-per-ip", "60"]);
        let (mut bystander, _) = Client::join(&daemon, "bystander", None).await;
        // Read the same way every time: the metrics request's own connection
        // is counted in each reading.
        let with_bystander_only = metric(daemon.addr, "intercomd_connections");
        let mut peers = Vec::new();
        for n in 0..50 {
            let (peer, _) = Client::join(&daemon, &format!("p{n}"), Some(&format!("t{n}"))).await;
            peers.push(peer);
            assert_eq!(bystander.recv().await, json!({"type":"peer-joined","id":format!("p{n}")}));
        }
        assert_eq!(
            metric(daemon.addr, "intercomd_connections"),
            with_bystander_only + 50,
            "each of the 50 peers holds one connection"
        );

        let cut_at = Instant::now();
        for peer in peers {
            cut(peer);
        }
        // Nobody can await a count going down: poll it, within WAIT.
        let deadline = cut_at + WAIT;
        let released_after = loop {
            let open = metric(daemon.addr, "intercomd_connections");
            if open == with_bystander_only {
                break cut_at.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "the 50 cut connections were not released within {WAIT:?} of the cut: intercomd_connections is \
                 {open}, {with_bystander_only} with only the bystander connected (a peer held as away for the \
                 reconnect grace must not hold its connection)"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        println!("the 50 cut connections were released {released_after:?} after the cut");

        // Still well within the grace, all 50 are held as away.
        let (_, _, body) = http_get(daemon.addr, "/api/peers", "");
        let mut listed: Vec<String> = json_body(&body)["peers"]
            .as_array()
            .expect("a peers list")
            .iter()
            .map(|peer| peer["id"].as_str().expect("an id").to_string())
            .collect();
        listed.sort();
        let mut expected: Vec<String> = (0..50).map(|n| format!("p{n}")).chain(["bystander".to_string()]).collect();
        expected.sort();
        assert_eq!(
            listed,
            expected,
            "{:?} after the cut, within the 30 s grace, every peer is still listed",
            cut_at.elapsed()
        );

        // Their slots are free: 50 more connections from this address fit
        // under the limit of 60 only if the 50 cut ones no longer count. Each
        // comes back with its token, as itself.
        let mut back = Vec::new();
        for n in 0..50 {
            let (peer, welcome) = Client::join(&daemon, &format!("p{n}"), Some(&format!("t{n}"))).await;
            assert_eq!(welcome["id"], format!("p{n}"), "{welcome}");
            back.push(peer);
        }
        assert!(cut_at.elapsed() < Duration::from_secs(30), "the test outlasted the grace it checks");
        // The room never heard them leave or come back.
        assert_nothing_more(&mut back[0], &mut bystander, "bystander").await;
    });
}

#[test]
fn a_socket_that_does_not_answer_pings_is_dropped() {
    smol::block_on(async {
        // Whole seconds: silent is pinged after about 1 s of silence and
        // dropped about 1 s later; even a quarter late each (liveness may be
        // checked by a periodic sweep), that is 2.5 s after its upgrade,
        // well within bob's WAIT for the peer-left. bob answers its own
        // pings at once, since it is reading all along.
        let daemon = Daemon::start(&["--ping-interval", "1", "--ping-timeout", "1", "--reconnect-grace", "0"]);
        // A half-open peer: it completed the handshake, then went silent
        // (never reads, so never answers a ping).
        let silent = raw_upgrade(daemon.addr, "id=silent");
        let (mut bob, welcome) = Client::join(&daemon, "bob", None).await;
        assert_eq!(welcome["peers"], json!(["silent"]));
        // bob reads, so its client answers pings; silent is dropped.
        assert_eq!(bob.recv().await, json!({"type":"peer-left","id":"silent"}));
        daemon.wait_for_log("peer silent dropped off");
        let (_, _, body) = http_get(daemon.addr, "/api/peers", "");
        assert_eq!(json_body(&body), json!({"peers":[{"id":"bob","room":"lobby"}]}), "bob, who answers, stays");
        drop(silent);
    });
}

#[test]
fn a_peer_that_never_reads_is_dropped_and_nobody_else_loses_a_message() {
    smol::block_on(async {
        let daemon = Daemon::start(&["--max-rate", "0", "--reconnect-grace", "0"]);
        // sink completes the handshake and then never reads a byte.
        let sink = raw_upgrade(daemon.addr, "id=sink&room=attic");
        let (mut talker, _) = Client::join(&daemon, "talker", None).await;
        let (mut a, _) = Client::join(&daemon, "a", None).await;
        let (mut b, _) = Client::join(&daemon, "b", None).await;
        a.recv_type("peer-joined").await;
        talker.recv_type("peer-joined").await;
        talker.recv_type("peer-joined").await;

        // Fill the sink's socket buffers and then its queue, while a and b
        // keep talking in between.
        let padding = "x".repeat(60_000);
        let mut sent = 0;
        let error = loop {
            talker.send(json!({"type":"blob","to":"sink","pad":padding})).await;
            sent += 1;
            a.send(json!({"type":"tick","to":"b","n":sent})).await;
            assert_eq!(
                b.recv().await,
                json!({"type":"tick","to":"b","n":sent,"from":"a"}),
                "a's message {sent} reached b"
            );
            // The talker's next message is an error once the sink is dropped.
            if sent % 16 == 0 {
                talker.send(json!({"type":"peers"})).await;
                let answer = talker.recv().await;
                if answer["type"] == "error" {
                    break answer;
                }
                assert_eq!(answer["type"], "peers", "{answer}");
            }
            assert!(sent < 2_000, "the sink was never dropped after {sent} messages of 60 KB");
        };
        assert_eq!(error["code"], "peer-unavailable", "{error}");
        assert_eq!(error["ref"]["to"], "sink");
        daemon.wait_for_log("peer sink dropped: its outgoing queue is full");
        // a and b never noticed.
        a.send(json!({"type":"tick","to":"b","n":"last"})).await;
        assert_eq!(b.recv().await, json!({"type":"tick","to":"b","n":"last","from":"a"}));
        drop(sink);
    });
}

/// A sender whose socket never runs dry (a client faster than the daemon,
/// as every client is on a Pi Zero) must not keep the one thread to itself:
/// the peers it sends to are written to as it goes, and none of them is
/// dropped as a slow reader. Here the flood is written in one piece, far
/// faster than the daemon can route it: many times `MAX_QUEUED_MESSAGES`
/// (256) of small messages.
#[test]
fn a_sender_faster_than_the_daemon_does_not_starve_the_peer_it_sends_to() {
    flood_and_receive_whole(4096, 150);
}

/// The same with large messages, each 60 KB: 24 of them are more than
/// `MAX_QUEUED_BYTES` (1 MiB) but fewer than `FRAMES_BEFORE_YIELD`.
#[test]
fn a_sender_of_large_messages_faster_than_the_daemon_does_not_starve_the_peer_it_sends_to() {
    flood_and_receive_whole(24, 60_000);
}

/// `count` messages of `pad` bytes and a little more, from a raw socket that
/// writes them all at once, to `b`, who must get every one, in order.
fn flood_and_receive_whole(count: usize, pad: usize) {
    smol::block_on(async {
        let daemon = Daemon::start(&["--max-rate", "0"]);
        let (mut b, _) = Client::join(&daemon, "b", None).await;
        let mut flooder = raw_upgrade(daemon.addr, "id=flooder");
        b.recv_type("peer-joined").await;
        let padding = "x".repeat(pad);
        let mut flood = Vec::new();
        for n in 0..count {
            let text = json!({"type":"tick","to":"b","n":n,"pad":padding}).to_string();
            flood.extend_from_slice(&client_frame(1, text.as_bytes(), true));
        }
        let writer = std::thread::spawn(move || {
            flooder.write_all(&flood).expect("the flood is written whole");
            flooder
        });
        for n in 0..count {
            let tick = b.recv().await;
            assert_eq!(tick["n"], n, "b's message {n} of {count}: {tick}");
            assert_eq!(tick["from"], "flooder");
        }
        let _flooder = writer.join().unwrap();
        assert!(!daemon.log().iter().any(|line| line.contains("dropped")), "nobody is dropped: {:?}", daemon.log());
        assert_eq!(metric(daemon.addr, "intercomd_peers_dropped_slow_total"), 0);
    });
}

#[test]
fn connections_per_address_are_limited() {
    let daemon = Daemon::start(&["--max-connections-per-ip", "3"]);
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(daemon.addr).unwrap()).collect();
    // Every accepted connection is counted before the next accept, so once
    // one of the three answers, all three are in.
    let mut first = held[0].try_clone().unwrap();
    first.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = [0u8; 12];
    first.set_read_timeout(Some(WAIT)).unwrap();
    first.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");

    let mut fourth = TcpStream::connect(daemon.addr).unwrap();
    fourth.set_read_timeout(Some(WAIT)).unwrap();
    let mut byte = [0u8; 1];
    let read = fourth.read(&mut byte);
    assert!(matches!(read, Ok(0) | Err(_)), "the fourth connection is closed at once: {read:?}");
    daemon.wait_for_log("per-address connection limit reached");

    drop(held);
    let deadline = Instant::now() + WAIT;
    loop {
        // Once the daemon has seen the three go, a new one is served again.
        let mut stream = TcpStream::connect(daemon.addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        if response.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the per-address count never went down");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = std::env::temp_dir().join(format!("intercomd-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut daemon =
        Daemon::start_with_env(&[], &[("NOTIFY_SOCKET", path.to_str().unwrap()), ("WATCHDOG_USEC", "2000000")]);
    let next = || {
        let mut buffer = [0u8; 256];
        let length = socket.recv(&mut buffer).expect("a notify datagram within the timeout");
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1", "keep-alives repeat (every second for WATCHDOG_USEC=2000000)");
    daemon.terminate();
    let mut seen = next();
    while seen == "WATCHDOG=1" {
        seen = next();
    }
    assert_eq!(seen, "STOPPING=1");
    assert!(daemon.wait_exit(WAIT).success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fragmented_messages_are_reassembled() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let (mut bob, _) = Client::join(&daemon, "bob", None).await;
        let mut raw = raw_upgrade(daemon.addr, "id=frag");
        bob.recv_type("peer-joined").await;
        let message = br#"{"type":"offer","to":"bob","sdp":"in three pieces"}"#;
        let (one, rest) = message.split_at(10);
        let (two, three) = rest.split_at(20);
        raw.write_all(&client_frame(1, one, false)).unwrap();
        raw.write_all(&client_frame(9, b"ping in between", true)).unwrap();
        raw.write_all(&client_frame(0, two, false)).unwrap();
        raw.write_all(&client_frame(0, three, true)).unwrap();
        assert_eq!(bob.recv().await, json!({"type":"offer","to":"bob","sdp":"in three pieces","from":"frag"}));
    });
}
