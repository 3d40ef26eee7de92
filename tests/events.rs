//! Intercom events over loopback: real peers ring, answer and hang up
//! through the daemon; `/api/events` and its live stream report it, the call
//! log survives a restart, and the stream's limit holds.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use common::{http_get, json_body, metric, Client, Daemon, WAIT};
use serde_json::{json, Value};

/// Send `message` from `from` and wait until `to` has it: by then the daemon
/// has made whatever event it makes of it.
async fn pass(from: &mut Client, to: &mut Client, message: Value) {
    let kind = message["type"].as_str().unwrap().to_string();
    from.send(message).await;
    to.recv_type(&kind).await;
}

/// The call log, without the parts that change from run to run.
fn events(daemon: &Daemon) -> Vec<Value> {
    let (status, headers, body) = http_get(daemon.addr, "/api/events", "");
    assert_eq!(status, 200);
    assert_eq!(common::header(&headers, "content-type"), Some("application/json"));
    json_body(&body)["events"].as_array().unwrap().iter().map(stable).collect()
}

/// An event without its time (checked for shape) and its durations
/// (checked for being numbers).
fn stable(event: &Value) -> Value {
    let mut event = event.as_object().unwrap().clone();
    let time = event.remove("time").unwrap();
    let time = time.as_str().unwrap();
    assert!(time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "RFC 3339 time: {time}");
    for seconds in ["after", "duration"] {
        if let Some(value) = event.get(seconds) {
            assert!(value.as_f64().is_some_and(|s| (0.0..60.0).contains(&s)), "{seconds}: {value}");
            event.insert(seconds.into(), json!("n"));
        }
    }
    Value::Object(event)
}

#[test]
fn a_directed_call_rings_is_answered_and_ends() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        door.recv_type("peer-joined").await;
        let request = json!({"type":"call-request","to":"kitchen","call":"c1","media":"video"});
        pass(&mut door, &mut kitchen, request).await;
        pass(&mut kitchen, &mut door, json!({"type":"call-accept","to":"door","call":"c1","media":"video"})).await;
        pass(&mut kitchen, &mut door, json!({"type":"hangup","to":"door","call":"c1"})).await;
        let call = json!({"room":"home","from":"door","to":"kitchen","call":"c1","media":"video"});
        let with = |fields: Value| {
            let mut event = call.clone();
            event.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
            event
        };
        assert_eq!(
            events(&daemon),
            vec![
                with(json!({"seq":1,"event":"ring"})),
                with(json!({"seq":2,"event":"answered","by":"kitchen","after":"n"})),
                with(json!({"seq":3,"event":"ended","by":"kitchen","duration":"n"})),
            ],
            "presence is neither logged nor numbered"
        );
        let (_, _, body) = http_get(daemon.addr, "/api/events?since=2", "");
        assert_eq!(json_body(&body)["events"].as_array().unwrap().len(), 1);
        assert_eq!(metric(daemon.addr, "intercomd_events_total{event=\"ring\"}"), 1);
        assert_eq!(metric(daemon.addr, "intercomd_events_total{event=\"online\"}"), 2);
    });
}

#[test]
fn a_room_ring_nobody_answers_is_missed_when_the_caller_leaves() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut hall = Client::join_room(&daemon, "hall", "home").await;
        let mut door = Client::join_room(&daemon, "door", "home").await;
        hall.recv_type("peer-joined").await;
        let ring = json!({"type":"call-request","to":"*","call":"r1","media":"video","ring":"room"});
        pass(&mut door, &mut hall, ring).await;
        door.leave().await;
        hall.recv_type("peer-left").await;
        let kinds: Vec<(Value, Value)> =
            events(&daemon).iter().map(|event| (event["event"].clone(), event["reason"].clone())).collect();
        assert_eq!(kinds, vec![(json!("ring"), Value::Null), (json!("missed"), json!("caller-left"))]);
    });
}

/// A client of the live stream, over a plain socket.
struct Stream {
    reader: BufReader<TcpStream>,
}

impl Stream {
    fn open(daemon: &Daemon, extra_headers: &str) -> Stream {
        let mut socket = TcpStream::connect(daemon.addr).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        write!(socket, "GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{extra_headers}\r\n")
            .unwrap();
        let mut reader = BufReader::new(socket);
        let head = Stream::block(&mut reader);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"), "{head}");
        let mut stream = Stream { reader };
        assert_eq!(stream.next_block(), "retry: 2000\n");
        stream
    }

    /// Lines up to the next blank line.
    fn block(reader: &mut BufReader<TcpStream>) -> String {
        let mut block = String::new();
        loop {
            let mut line = String::new();
            let read =
                reader.read_line(&mut line).unwrap_or_else(|err| panic!("the stream stalled: {err}; so far {block:?}"));
            assert!(read > 0, "the stream ended; so far {block:?}");
            if line == "\n" || line == "\r\n" {
                return block;
            }
            block.push_str(&line);
        }
    }

    fn next_block(&mut self) -> String {
        Stream::block(&mut self.reader)
    }

    /// The next event: (its id, if it has one; the event without its time).
    fn next(&mut self) -> (Option<u64>, Value) {
        let block = self.next_block();
        let (id, data) = match block.strip_prefix("id: ") {
            Some(rest) => {
                let (id, data) = rest.split_once('\n').unwrap();
                (Some(id.parse().unwrap()), data)
            }
            None => (None, block.as_str()),
        };
        let data = data.strip_prefix("data: ").unwrap_or_else(|| panic!("data: {block:?}")).trim_end();
        (id, stable(&serde_json::from_str(data).unwrap()))
    }
}

#[test]
fn the_live_stream_replays_the_log_then_follows_and_resumes_where_it_left() {
    smol::block_on(async {
        let daemon = Daemon::start(&[]);
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut hall = Client::join_room(&daemon, "hall", "home").await;
        door.recv_type("peer-joined").await;
        let ring = json!({"type":"call-request","to":"hall","call":"c1","media":"audio"});
        pass(&mut door, &mut hall, ring).await;
        let mut stream = Stream::open(&daemon, "");
        assert_eq!(stream.next().1["event"], "ring", "the log first");
        pass(&mut hall, &mut door, json!({"type":"call-reject","to":"door","call":"c1","reason":"declined"})).await;
        let (seq, rejected) = stream.next();
        let seq = seq.unwrap();
        assert_eq!(
            rejected,
            json!({"seq":seq,"event":"rejected","room":"home","from":"door","to":"hall","call":"c1","by":"hall",
                   "reason":"declined","media":"audio"})
        );
        let _kitchen = Client::join_room(&daemon, "kitchen", "home").await;
        let (id, online) = stream.next();
        assert_eq!(online, json!({"event":"online","room":"home","peer":"kitchen"}), "presence is live");
        assert_eq!(id, None, "and leaves the browser's Last-Event-ID on the last logged event");
        // A browser that reconnects sends the last id it saw.
        let mut resumed = Stream::open(&daemon, &format!("Last-Event-ID: {}\r\n", seq - 1));
        assert_eq!(resumed.next().0, Some(seq), "only what it missed from the log");
        assert_eq!(metric(daemon.addr, "intercomd_event_streams"), 2);
    });
}

#[test]
fn the_call_log_survives_a_restart() {
    smol::block_on(async {
        let state = common::scratch_dir();
        let state_flag = state.to_str().unwrap();
        let mut daemon = Daemon::start(&["--state-dir", state_flag]);
        {
            let mut door = Client::join_room(&daemon, "door", "home").await;
            let mut hall = Client::join_room(&daemon, "hall", "home").await;
            door.recv_type("peer-joined").await;
            pass(&mut door, &mut hall, json!({"type":"call-request","to":"*","call":"r1","media":"video"})).await;
            pass(&mut door, &mut hall, json!({"type":"hangup","to":"*","call":"r1"})).await;
        }
        let before = events(&daemon);
        assert_eq!(before.len(), 2, "{before:?}");
        daemon.terminate();
        assert!(daemon.wait_exit(WAIT).success());
        let saved = std::fs::read_to_string(state.join("events.jsonl")).unwrap();
        assert_eq!(saved.lines().count(), 2, "one event per line: {saved}");
        assert!(!state.join("events.jsonl.tmp").exists());
        let daemon = Daemon::start(&["--state-dir", state_flag]);
        assert_eq!(events(&daemon), before);
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut hall = Client::join_room(&daemon, "hall", "home").await;
        door.recv_type("peer-joined").await;
        pass(&mut door, &mut hall, json!({"type":"call-request","to":"hall","call":"c2","media":"video"})).await;
        let after = events(&daemon);
        let last_seq = before.last().unwrap()["seq"].as_u64().unwrap();
        assert_eq!(after[2]["seq"].as_u64().unwrap(), last_seq + 1, "numbers carry on: {after:?}");
        drop(daemon);
        std::fs::remove_dir_all(&state).unwrap();
    });
}

#[test]
fn a_broken_call_log_is_skipped_line_by_line_and_an_unwritable_one_is_kept_in_memory() {
    smol::block_on(async {
        let state = common::scratch_dir();
        std::fs::write(
            state.join("events.jsonl"),
            "{\"seq\":4,\"event\":\"ring\",\"from\":\"door\"}\n\u{0}\u{0}garbage\n{\"seq\":5,\"event\":\"missed\"}\n",
        )
        .unwrap();
        let daemon = Daemon::start(&["--state-dir", state.to_str().unwrap()]);
        let (_, _, body) = http_get(daemon.addr, "/api/events", "");
        let seqs: Vec<u64> =
            json_body(&body)["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, vec![4, 5]);
        daemon.wait_for_log("skipped 1 lines");
        drop(daemon);
        // A state directory that is a file: nothing can be saved there.
        let blocked = state.join("blocked");
        std::fs::write(&blocked, "").unwrap();
        let daemon = Daemon::start(&["--state-dir", blocked.to_str().unwrap()]);
        let mut door = Client::join_room(&daemon, "door", "home").await;
        let mut hall = Client::join_room(&daemon, "hall", "home").await;
        door.recv_type("peer-joined").await;
        pass(&mut door, &mut hall, json!({"type":"call-request","to":"hall","call":"c1","media":"video"})).await;
        daemon.wait_for_log("cannot save the call log");
        assert_eq!(events(&daemon).len(), 1, "kept in memory");
        pass(&mut door, &mut hall, json!({"type":"hangup","to":"hall","call":"c1"})).await;
        assert_eq!(events(&daemon).len(), 2);
        drop(daemon);
        std::fs::remove_dir_all(&state).unwrap();
    });
}

#[test]
fn live_streams_are_limited() {
    let daemon = Daemon::start(&[]);
    let streams: Vec<Stream> = (0..32).map(|_| Stream::open(&daemon, "")).collect();
    let (status, headers, body) = http_get(daemon.addr, "/api/events", "Accept: text/event-stream\r\n");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(common::header(&headers, "retry-after"), Some("30"));
    assert!(json_body(&body)["error"].as_str().unwrap().contains("32 event streams"));
    drop(streams);
    // Closed streams give their places back once the daemon notices (its
    // next write to them fails): an event makes it write.
    let deadline = std::time::Instant::now() + WAIT;
    smol::block_on(async {
        let mut n = 0;
        while metric(daemon.addr, "intercomd_event_streams") > 0 {
            assert!(std::time::Instant::now() < deadline, "the closed streams were never let go");
            let _ = Client::join_room(&daemon, &format!("p{n}"), "home").await;
            n += 1;
        }
    });
    Stream::open(&daemon, "");
}
