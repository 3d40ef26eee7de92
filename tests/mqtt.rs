//! `--mqtt` against a real mosquitto on loopback (and fake brokers made of
//! a TcpListener): events with their exact payloads, Home Assistant
//! discovery, availability and the last will, reconnects, passwords, and
//! brokers that misbehave while peers keep talking; `--mqtt-door-open`: a
//! door opened by a publish (once at a time, never by a retained message),
//! its button in Home Assistant, and nothing subscribed without the flag.
//!
//! The subscriber is a small MQTT client written here with mqttbytes, so a
//! test knows when it is subscribed (SUBACK) and sees each message's retain
//! flag, topic and payload exactly.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{scratch_dir, upload_snapshot, Client, Daemon, WAIT};
use mqttbytes::v4::{self, Connect, Packet, PubAck, Publish, Subscribe};
use mqttbytes::QoS;
use serde_json::{json, Value};

/// Long enough for a reconnect: the daemon's backoff and timeouts are
/// seconds, and each wait here keeps a margin of several.
const RECONNECT_WAIT: Duration = Duration::from_secs(20);

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Wait (at most `limit`) until `done` holds, polling every 5 ms.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A mosquitto on `127.0.0.1:port`, killed when dropped.
struct Broker {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Broker {
    fn start(port: u16, extra: &str) -> Broker {
        let dir = scratch_dir();
        // As root, mosquitto would switch to the `mosquitto` user and could
        // not read the test's files.
        let user = if is_root() { "user root\n" } else { "" };
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n{user}{extra}"
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        // Debian puts the broker in /usr/sbin, which a user's PATH may lack.
        let binary =
            if std::path::Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto (apt-get install mosquitto mosquitto-clients)");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready, listening) = std::sync::mpsc::channel();
        let (lines, stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            // mosquitto names the socket before it binds it, and says
            // "running" once every listener is open: wait for both.
            let mut opening = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                opening |= line.contains("Opening ipv4 listen socket on port");
                if opening && line.contains(" running") {
                    let _ = ready.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        if listening.recv_timeout(WAIT).is_err() {
            let _ = child.kill();
            panic!("mosquitto did not open its socket within {WAIT:?}: {:?}", log.lock().unwrap());
        }
        Broker { child, port, dir }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

/// One message a subscriber got.
#[derive(Debug, Clone)]
struct Message {
    retain: bool,
    topic: String,
    payload: String,
    bytes: Vec<u8>,
}

impl Message {
    fn json(&self) -> Value {
        serde_json::from_str(&self.payload).unwrap_or_else(|err| panic!("{} is not JSON ({err}): {}", self.topic, self))
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", u8::from(self.retain), self.topic, self.payload)
    }
}

/// An MQTT client subscribed to `#` (QoS 1) that records every message.
struct Subscriber {
    messages: Arc<Mutex<Vec<Message>>>,
    stream: TcpStream,
}

impl Subscriber {
    fn connect(port: u16, login: Option<(&str, &str)>) -> Subscriber {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to mosquitto");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut connect = Connect::new(format!("test-{}", free_port()));
        if let Some((user, password)) = login {
            connect.set_login(user, password);
        }
        let mut out = BytesMut::new();
        connect.write(&mut out).unwrap();
        let mut subscribe = Subscribe::new("#", QoS::AtLeastOnce);
        subscribe.pkid = 1;
        subscribe.write(&mut out).unwrap();
        stream.write_all(&out).unwrap();
        let mut buffer = BytesMut::new();
        match read_packet(&mut stream, &mut buffer) {
            Packet::ConnAck(ack) => assert_eq!(ack.code, v4::ConnectReturnCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        assert!(matches!(read_packet(&mut stream, &mut buffer), Packet::SubAck(_)), "SUBACK");
        stream.set_read_timeout(None).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (record, mut reader) = (messages.clone(), stream.try_clone().unwrap());
        std::thread::spawn(move || loop {
            let packet = match try_read_packet(&mut reader, &mut buffer) {
                Some(packet) => packet,
                None => return,
            };
            if let Packet::Publish(publish) = packet {
                if publish.qos == QoS::AtLeastOnce {
                    let mut ack = BytesMut::new();
                    PubAck::new(publish.pkid).write(&mut ack).unwrap();
                    if reader.write_all(&ack).is_err() {
                        return;
                    }
                }
                record.lock().unwrap().push(Message {
                    retain: publish.retain,
                    topic: publish.topic.clone(),
                    payload: String::from_utf8_lossy(&publish.payload).into_owned(),
                    bytes: publish.payload.to_vec(),
                });
            }
        });
        Subscriber { messages, stream }
    }

    fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    fn on(&self, topic: &str) -> Vec<Message> {
        self.messages().into_iter().filter(|message| message.topic == topic).collect()
    }

    /// Wait until `count` messages arrived on `topic`; return them.
    fn wait_for(&self, topic: &str, count: usize, limit: Duration) -> Vec<Message> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.on(topic);
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{count} messages on {topic} did not arrive within {limit:?}; got:\n{}",
                self.messages().iter().map(|m| m.to_string()).collect::<Vec<_>>().join("\n")
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait until the latest message on `topic` is `payload`.
    fn wait_for_payload(&self, topic: &str, payload: &str, limit: Duration) {
        wait_until(limit, &format!("{topic} = {payload}"), || {
            self.on(topic).last().is_some_and(|message| message.payload == payload)
        });
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn try_read_packet(stream: &mut TcpStream, buffer: &mut BytesMut) -> Option<Packet> {
    loop {
        match v4::read(buffer, 1 << 20) {
            Ok(packet) => return Some(packet),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(error) => panic!("bad packet from the broker: {error:?}"),
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn read_packet(stream: &mut TcpStream, buffer: &mut BytesMut) -> Packet {
    try_read_packet(stream, buffer).expect("a packet within the read timeout")
}

/// The daemon's call log (its exact event lines), once it holds `count`.
fn call_log(daemon: &Daemon, count: usize) -> Vec<String> {
    let path = daemon.state_dir.as_ref().unwrap().join("events.jsonl");
    let mut lines = Vec::new();
    wait_until(WAIT, "the call log being saved", || {
        lines = std::fs::read_to_string(&path).unwrap_or_default().lines().map(str::to_string).collect();
        lines.len() >= count
    });
    lines
}

/// A ring from `door` to `kitchen`, answered, then hung up by the door.
async fn ring_answer_hang_up(door: &mut Client, kitchen: &mut Client, call: &str) {
    door.send(json!({"type":"call-request","to":"kitchen","call":call,"media":"audio"})).await;
    assert_eq!(kitchen.recv_type("call-request").await["call"], call);
    kitchen.send(json!({"type":"call-accept","to":"door","call":call})).await;
    assert_eq!(door.recv_type("call-accept").await["call"], call);
    door.send(json!({"type":"hangup","to":"kitchen","call":call,"reason":"done"})).await;
    assert_eq!(kitchen.recv_type("hangup").await["call"], call);
}

fn station_device() -> Value {
    json!({
        "identifiers": ["intercomd_station_door"],
        "name": "door",
        "manufacturer": "intercomd",
        "model": "door station",
        "via_device": "intercomd",
    })
}

fn origin() -> Value {
    json!({"name": "intercomd", "sw_version": env!("CARGO_PKG_VERSION")})
}

#[test]
fn a_ring_with_a_picture_shows_the_visitor_in_home_assistant() {
    const STILL: &[u8] = include_bytes!("fixtures/still-16x12.jpg");
    let broker = Broker::start(free_port(), "");
    let subscriber = Subscriber::connect(broker.port, None);
    let daemon = Daemon::start(&["--mqtt", &broker.url()]);
    daemon.wait_for_log(&format!("mqtt: connected to 127.0.0.1:{}", broker.port));
    let name = smol::block_on(async {
        let mut kitchen = Client::join_room(&daemon, "kitchen", "lobby").await;
        let mut door = Client::join_room(&daemon, "door", "lobby").await;
        kitchen.recv_type("peer-joined").await;
        let (status, answer) = upload_snapshot(&daemon, "id=door&token=t-door", STILL);
        assert_eq!(status, 201, "{answer}");
        let name = answer["snapshot"].as_str().unwrap().to_string();
        door.send(json!({"type":"call-request","to":"*","call":"c1","snapshot":name})).await;
        kitchen.recv_type("call-request").await;
        name
    });
    let pictures = subscriber.wait_for("intercomd/station/door/visitor", 1, WAIT);
    assert_eq!(pictures[0].bytes, STILL, "the JPEG itself, as Home Assistant's image entity wants it");
    // Retained: a subscriber that comes later (Home Assistant after a restart) gets it too.
    let later = Subscriber::connect(broker.port, None);
    let kept = later.wait_for("intercomd/station/door/visitor", 1, WAIT);
    assert!(kept[0].retain && kept[0].bytes == STILL, "the last visitor stays on the broker");
    let ring = subscriber.wait_for("intercomd/station/door/ring", 1, WAIT);
    assert_eq!(ring[0].json()["snapshot"], format!("/snapshots/{name}"));
    let all = subscriber.messages();
    let at = |topic: &str| all.iter().position(|message| message.topic == topic).unwrap();
    assert!(at("intercomd/station/door/visitor") < at("intercomd/station/door/ring"), "the picture before the ring");
}

#[test]
fn events_discovery_and_availability_reach_the_broker() {
    let broker = Broker::start(free_port(), "");
    let subscriber = Subscriber::connect(broker.port, None);
    let daemon = Daemon::start(&["--mqtt", &broker.url()]);
    daemon.wait_for_log(&format!("mqtt: connected to 127.0.0.1:{}", broker.port));
    subscriber.wait_for_payload("intercomd/status", "online", WAIT);
    subscriber.wait_for_payload("intercomd/online", r#"{"count":0,"peers":[]}"#, WAIT);
    // The kitchen stays online to the end.
    let _kitchen = smol::block_on(async {
        let (mut kitchen, _) = Client::join(&daemon, "kitchen", None).await;
        let (mut door, _) = Client::join(&daemon, "door", None).await;
        kitchen.recv_type("peer-joined").await;
        ring_answer_hang_up(&mut door, &mut kitchen, "c1").await;
        door.leave().await;
        kitchen
    });
    let events = subscriber.wait_for("intercomd/events", 6, WAIT);
    // Every event, in order, with the exact line: call events as the call
    // log has them, presence events as the documented shape.
    let log = call_log(&daemon, 3);
    let payloads: Vec<&str> = events.iter().map(|message| message.payload.as_str()).collect();
    assert_eq!(payloads[2..5], log[..], "call events are the call log's lines");
    let presence = |index: usize, kind: &str, peer: &str| {
        let time = events[index].json()["time"].as_str().unwrap().to_string();
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
        let line = format!(r#"{{"event":"{kind}","time":"{time}","room":"lobby","peer":"{peer}"}}"#);
        assert_eq!(events[index].payload, line);
    };
    presence(0, "online", "kitchen");
    presence(1, "online", "door");
    presence(5, "offline", "door");
    let kinds: Vec<Value> = events.iter().map(|message| message.json()["event"].clone()).collect();
    assert_eq!(kinds, ["online", "online", "ring", "answered", "ended", "offline"]);
    assert!(events.iter().all(|message| !message.retain));

    // Discovery: the station's configs came before its ring, whole.
    let all = subscriber.messages();
    let position = |topic: &str| all.iter().position(|message| message.topic == topic).unwrap();
    let ring_event = all.iter().position(|message| message.payload == log[0]).unwrap();
    let doorbell_topic = "homeassistant/event/intercomd/door_doorbell/config";
    let ringing_topic = "homeassistant/binary_sensor/intercomd/door_ringing/config";
    assert!(position(doorbell_topic) < ring_event && position(ringing_topic) < ring_event);
    assert_eq!(
        subscriber.on(doorbell_topic)[0].json(),
        json!({
            "name": "Doorbell",
            "unique_id": "intercomd_door_doorbell",
            "default_entity_id": "event.intercomd_door_doorbell",
            "device_class": "doorbell",
            "event_types": ["ring"],
            "state_topic": "intercomd/station/door/ring",
            "availability_topic": "intercomd/status",
            "device": station_device(),
            "origin": origin(),
        })
    );
    assert_eq!(
        subscriber.on(ringing_topic)[0].json(),
        json!({
            "name": "Ringing",
            "unique_id": "intercomd_door_ringing",
            "default_entity_id": "binary_sensor.intercomd_door_ringing",
            "state_topic": "intercomd/station/door/ringing",
            "payload_on": "ON",
            "payload_off": "OFF",
            "icon": "mdi:bell-ring",
            "availability_topic": "intercomd/status",
            "device": station_device(),
            "origin": origin(),
        })
    );
    assert_eq!(
        subscriber.on("homeassistant/sensor/intercomd/peers_online/config")[0].json(),
        json!({
            "name": "Peers online",
            "unique_id": "intercomd_peers_online",
            "default_entity_id": "sensor.intercomd_peers_online",
            "state_topic": "intercomd/online",
            "value_template": "{{ value_json.count }}",
            "json_attributes_topic": "intercomd/online",
            "state_class": "measurement",
            "icon": "mdi:account-multiple",
            "availability_topic": "intercomd/status",
            "device": {
                "identifiers": ["intercomd"],
                "name": "intercomd (intercomd)",
                "manufacturer": "intercomd",
                "model": "intercomd signaling daemon",
                "sw_version": env!("CARGO_PKG_VERSION"),
            },
            "origin": origin(),
        })
    );
    // Pictures of visitors are on by default: each station has an image entity.
    assert_eq!(
        subscriber.on("homeassistant/image/intercomd/door_visitor/config")[0].json(),
        json!({
            "name": "Visitor",
            "unique_id": "intercomd_door_visitor",
            "default_entity_id": "image.intercomd_door_visitor",
            "image_topic": "intercomd/station/door/visitor",
            "content_type": "image/jpeg",
            "icon": "mdi:doorbell-video",
            "availability_topic": "intercomd/status",
            "device": station_device(),
            "origin": origin(),
        })
    );
    assert!(subscriber.on("intercomd/station/door/visitor").is_empty(), "a ring without a picture shows none");
    // The doorbell's event: the ring's fields under event_type "ring".
    let mut doorbell = serde_json::from_str::<Value>(&log[0]).unwrap();
    doorbell.as_object_mut().unwrap().remove("event");
    doorbell["event_type"] = json!("ring");
    let rings = subscriber.on("intercomd/station/door/ring");
    assert_eq!(rings.len(), 1);
    assert_eq!(rings[0].json(), doorbell);
    assert!(!rings[0].retain);
    // Ringing: ON at the ring, OFF at the answer.
    let ringing: Vec<String> =
        subscriber.on("intercomd/station/door/ringing").into_iter().map(|message| message.payload).collect();
    assert_eq!(ringing, ["ON", "OFF"]);
    subscriber.wait_for_payload("intercomd/online", r#"{"count":1,"peers":[{"id":"kitchen","room":"lobby"}]}"#, WAIT);

    // A subscriber that comes later gets the retained state, and no event.
    let late = Subscriber::connect(broker.port, None);
    late.wait_for_payload("intercomd/online", r#"{"count":1,"peers":[{"id":"kitchen","room":"lobby"}]}"#, WAIT);
    for topic in ["intercomd/status", doorbell_topic, ringing_topic, "intercomd/station/door/ringing"] {
        let got = late.wait_for(topic, 1, WAIT);
        assert!(got[0].retain, "{} is retained", got[0]);
    }
    assert_eq!(late.on("intercomd/status")[0].payload, "online");
    assert_eq!(late.on("intercomd/station/door/ringing")[0].payload, "OFF");
    assert!(late.on("intercomd/events").is_empty() && late.on("intercomd/station/door/ring").is_empty());

    // The daemon dies: the broker publishes its will.
    drop(daemon);
    subscriber.wait_for_payload("intercomd/status", "offline", RECONNECT_WAIT);
    let after = Subscriber::connect(broker.port, None);
    let status = after.wait_for("intercomd/status", 1, WAIT);
    assert!(status[0].retain && status[0].payload == "offline", "{}", status[0]);
}

#[test]
fn the_daemon_reconnects_when_the_broker_restarts() {
    let port = free_port();
    let broker = Broker::start(port, "");
    let daemon = Daemon::start(&["--mqtt", &broker.url(), "--mqtt-prefix", "house/intercom"]);
    daemon.wait_for_log("mqtt: connected to");
    smol::block_on(async {
        let (mut kitchen, _) = Client::join(&daemon, "kitchen", None).await;
        let (mut door, _) = Client::join(&daemon, "door.1", None).await;
        kitchen.recv_type("peer-joined").await;
        door.send(json!({"type":"call-request","to":"kitchen","call":"c1","media":"audio"})).await;
        kitchen.recv_type("call-request").await;
        kitchen.send(json!({"type":"call-reject","to":"door.1","call":"c1","reason":"declined"})).await;
        door.recv_type("call-reject").await;
        call_log(&daemon, 2);

        // The broker goes away (and its retained messages with it:
        // persistence is off) and comes back on the same port.
        drop(broker);
        daemon.wait_for_log("mqtt: lost the connection to");
        let broker = Broker::start(port, "");
        let subscriber = Subscriber::connect(port, None);
        wait_until(RECONNECT_WAIT, "a second 'connected' line", || {
            daemon.log().iter().filter(|line| line.contains("mqtt: connected to")).count() == 2
        });
        // The station from the call log is announced again.
        // Ids that are not topic levels as they are get a hash of their own.
        let (sid, node) =
            (format!("door_1_{:08x}", fnv("door.1")), format!("house_intercom_{:08x}", fnv("house/intercom")));
        let config = subscriber.wait_for(&format!("homeassistant/event/{node}/{sid}_doorbell/config"), 1, WAIT);
        assert_eq!(config[0].json()["state_topic"], format!("house/intercom/station/{sid}/ring"));
        assert_eq!(config[0].json()["device"]["name"], "door.1");
        subscriber.wait_for_payload(&format!("house/intercom/station/{sid}/ringing"), "OFF", WAIT);
        subscriber.wait_for_payload("house/intercom/status", "online", WAIT);
        // Later events arrive.
        door.send(json!({"type":"call-request","to":"kitchen","call":"c2","media":"audio"})).await;
        kitchen.recv_type("call-request").await;
        // (An event the old broker never acknowledged may come first, again.)
        wait_until(WAIT, "the ring of c2 on house/intercom/events", || {
            subscriber
                .on("house/intercom/events")
                .iter()
                .any(|message| message.json()["call"] == "c2" && message.json()["event"] == "ring")
        });
        subscriber.wait_for(&format!("house/intercom/station/{sid}/ring"), 1, WAIT);
        subscriber.wait_for_payload(&format!("house/intercom/station/{sid}/ringing"), "ON", WAIT);
        drop(broker);
    });
}

fn fnv(id: &str) -> u32 {
    id.bytes().fold(0x811c_9dc5u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
}

#[test]
fn a_broker_with_a_password() {
    let dir = scratch_dir();
    let passwords = dir.join("passwords");
    let made = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&passwords)
        .args(["intercomd", "s3cret-Pa55"])
        .status()
        .expect("mosquitto_passwd");
    assert!(made.success());
    let broker = Broker::start(free_port(), &format!("allow_anonymous false\npassword_file {}\n", passwords.display()));
    let subscriber = Subscriber::connect(broker.port, Some(("intercomd", "s3cret-Pa55")));
    let password_file = dir.join("mqtt-password");
    std::fs::write(&password_file, "s3cret-Pa55\n").unwrap();
    // The file wins over the URL's password (and over the environment).
    let url = format!("mqtt://intercomd:url-Pa55@127.0.0.1:{}", broker.port);
    let daemon = Daemon::start_with_env(
        &["--mqtt", &url, "--mqtt-password-file", password_file.to_str().unwrap()],
        &[("INTERCOMD_MQTT_PASSWORD", "env-Pa55")],
    );
    daemon.wait_for_log(&format!("mqtt: connected to 127.0.0.1:{}", broker.port));
    smol::block_on(async {
        let (_kitchen, _) = Client::join(&daemon, "kitchen", None).await;
    });
    let events = subscriber.wait_for("intercomd/events", 1, WAIT);
    assert_eq!(events[0].json()["peer"], "kitchen");
    // A wrong password (from the environment, over the URL's): refused,
    // said once, and no password in the log either way.
    let wrong = Daemon::start_with_env(&["--mqtt", &url], &[("INTERCOMD_MQTT_PASSWORD", "env-Pa55")]);
    wrong.wait_for_log("mqtt: cannot connect to");
    for log in [daemon.log(), wrong.log()] {
        for line in &log {
            for secret in ["s3cret-Pa55", "url-Pa55", "env-Pa55"] {
                assert!(!line.contains(secret), "the log shows a password: {line}");
            }
        }
    }
    let refused = wrong.log().into_iter().find(|line| line.contains("mqtt: cannot connect to")).unwrap();
    assert!(refused.contains(&format!("127.0.0.1:{}", broker.port)) && refused.contains("WARN"), "{refused}");
    assert!(refused.contains("not authorized") || refused.contains("bad user name or password"), "{refused}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a fake broker does with each connection, in turn.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    Garbage,
    HalfConnack,
    Silent,
}

#[test]
fn brokers_that_misbehave_never_stall_the_peers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let record = accepted.clone();
    std::thread::spawn(move || {
        let script = [Misbehaviour::Garbage, Misbehaviour::HalfConnack, Misbehaviour::Silent];
        let mut held = Vec::new();
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let what = script[n % script.len()];
            record.lock().unwrap().push(what);
            // Read the CONNECT first, as a broker would.
            let mut buffer = BytesMut::new();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            assert!(matches!(try_read_packet(&mut stream, &mut buffer), Some(Packet::Connect(_))));
            match what {
                Misbehaviour::Garbage => {
                    let _ = stream.write_all(b"\xff\xfe this is not MQTT\r\n");
                    held.push(stream);
                }
                Misbehaviour::HalfConnack => {
                    let _ = stream.write_all(&[0x20, 0x02, 0x00]);
                    drop(stream);
                }
                Misbehaviour::Silent => held.push(stream),
            }
        }
    });
    let daemon = Daemon::start(&["--mqtt", &format!("mqtt://127.0.0.1:{port}"), "--log-level", "debug"]);
    smol::block_on(async {
        let (mut alice, _) = Client::join(&daemon, "alice", None).await;
        let (mut bob, _) = Client::join(&daemon, "bob", None).await;
        alice.recv_type("peer-joined").await;
        // Keep the pair talking until the fake broker has seen all three
        // misbehaviours and one more attempt: nothing lost, nothing late.
        let mut sent = 0u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while accepted.lock().unwrap().len() < 4 {
            assert!(Instant::now() < deadline, "the daemon stopped retrying: {:?}", accepted.lock().unwrap());
            for _ in 0..10 {
                alice.send(json!({"type":"chat","to":"bob","n":sent})).await;
                sent += 1;
            }
            for expected in sent - 10..sent {
                let got = bob.recv().await;
                assert_eq!((got["type"].as_str(), got["n"].as_u64()), (Some("chat"), Some(expected)), "{got}");
            }
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        bob.send(json!({"type":"chat","to":"alice","n":"still here"})).await;
        assert_eq!(alice.recv().await["n"], "still here");
    });
    let log = daemon.log();
    let mqtt: Vec<&String> = log.iter().filter(|line| line.contains("mqtt:")).collect();
    let warnings: Vec<&&String> = mqtt.iter().filter(|line| line.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "one warning, then quiet retries: {mqtt:#?}");
    assert!(warnings[0].contains("packet of type 15"), "{}", warnings[0]);
    let said = |text: &str| mqtt.iter().any(|line| line.contains("DEBUG") && line.contains(text));
    assert!(said("the broker closed the connection"), "{mqtt:#?}");
    assert!(said("no CONNACK within 5s"), "{mqtt:#?}");
    assert!(!log.iter().any(|line| line.contains("mqtt: connected")), "{mqtt:#?}");
}

#[test]
fn unacknowledged_events_are_sent_again_after_a_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (publishes, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            stream.set_read_timeout(Some(RECONNECT_WAIT)).unwrap();
            let mut buffer = BytesMut::new();
            assert!(matches!(try_read_packet(&mut stream, &mut buffer), Some(Packet::Connect(_))));
            stream.write_all(&[0x20, 0x02, 0x00, 0x00]).unwrap();
            // The first connection never acknowledges and ends after the
            // first event; the second acknowledges everything.
            while let Some(packet) = try_read_packet(&mut stream, &mut buffer) {
                let Packet::Publish(publish) = packet else { continue };
                if publish.qos == QoS::AtLeastOnce && n > 0 {
                    let mut ack = BytesMut::new();
                    PubAck::new(publish.pkid).write(&mut ack).unwrap();
                    stream.write_all(&ack).unwrap();
                }
                let event = publish.topic == "intercomd/events";
                let _ = publishes.send((n, publish));
                if event && n == 0 {
                    break;
                }
            }
        }
    });
    let daemon = Daemon::start(&["--mqtt", &format!("mqtt://127.0.0.1:{port}")]);
    daemon.wait_for_log("mqtt: connected to");
    smol::block_on(async {
        let (_kitchen, _) = Client::join(&daemon, "kitchen", None).await;
    });
    let mut first = None;
    let deadline = Instant::now() + RECONNECT_WAIT;
    loop {
        let (connection, publish) = received
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the event, then the same event again after the reconnect");
        if publish.topic != "intercomd/events" {
            continue;
        }
        match (connection, &first) {
            (0, None) => {
                assert!(!publish.dup && publish.qos == QoS::AtLeastOnce);
                first = Some(publish);
            }
            (1, Some(original)) => {
                assert!(publish.dup, "sent again with DUP");
                assert_eq!((publish.pkid, &publish.payload), (original.pkid, &original.payload));
                assert!(String::from_utf8_lossy(&publish.payload).contains(r#""event":"online","#));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    daemon.wait_for_log("mqtt: lost the connection to");
}

#[test]
fn without_mqtt_no_connection_is_opened() {
    // The same daemon with --mqtt holds one more socket: its broker's.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let with = Daemon::start(&["--mqtt", &format!("mqtt://127.0.0.1:{port}")]);
    let (_broker_side, _) = listener.accept().expect("the daemon with --mqtt connects");
    let without = Daemon::start(&[]);
    let sockets = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    };
    wait_until(WAIT, "the --mqtt daemon's socket", || sockets(with.pid()) == sockets(without.pid()) + 1);
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "only one daemon connected");
    assert!(!without.log().iter().any(|line| line.contains("mqtt")), "{:?}", without.log());
}

/// Publish `payload` on `topic` (QoS 1) as a client of its own, and return
/// once the broker acknowledged it: by then a retained one is stored, and
/// a live one is queued for every subscriber.
fn publish(port: u16, topic: &str, payload: &str, retain: bool) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to mosquitto");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut out = BytesMut::new();
    Connect::new(format!("publisher-{}", free_port())).write(&mut out).unwrap();
    let mut message = Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec());
    message.retain = retain;
    message.pkid = 1;
    message.write(&mut out).unwrap();
    stream.write_all(&out).unwrap();
    let mut buffer = BytesMut::new();
    assert!(matches!(read_packet(&mut stream, &mut buffer), Packet::ConnAck(_)), "CONNACK");
    assert!(matches!(read_packet(&mut stream, &mut buffer), Packet::PubAck(ack) if ack.pkid == 1), "PUBACK");
    let _ = stream.write_all(&[0xe0, 0x00]); // DISCONNECT
}

/// A door opener for the tests: a PIN file, and a command that appends a
/// line to `record` each time it runs and then, if `blocking`, waits until
/// the test calls [`DoorRig::release`] (it reads a line from a fifo).
struct DoorRig {
    dir: PathBuf,
    record: PathBuf,
    fifo: PathBuf,
    flags: Vec<String>,
}

impl DoorRig {
    fn new(blocking: bool) -> DoorRig {
        let dir = scratch_dir();
        let (record, fifo, script, pin) =
            (dir.join("record"), dir.join("release"), dir.join("open-door.sh"), dir.join("door.pin"));
        std::fs::write(&pin, "2468\n").unwrap();
        let wait = if blocking { format!("read line < {}\n", fifo.display()) } else { String::new() };
        std::fs::write(&script, format!("#!/bin/sh\necho \"opened $*\" >> {}\n{wait}", record.display())).unwrap();
        assert!(Command::new("chmod").arg("755").arg(&script).status().unwrap().success());
        assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let flags = [
            "--door-open".to_string(),
            format!("door={} relay", script.display()),
            "--door-pin-file".into(),
            pin.display().to_string(),
            // Far beyond any test: the command ends when the test says.
            "--door-open-timeout".into(),
            "120".into(),
        ];
        DoorRig { dir, record, fifo, flags: flags.to_vec() }
    }

    /// The daemon's flags: these, then the door's.
    fn daemon(&self, flags: &[&str]) -> Daemon {
        let mut all: Vec<&str> = flags.to_vec();
        all.extend(self.flags.iter().map(String::as_str));
        Daemon::start(&all)
    }

    /// The lines the command wrote: one per run.
    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(&self.record).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// Let the waiting command end (opening the fifo waits for its reader).
    fn release(&self) {
        let (fifo, (done, finished)) = (self.fifo.clone(), std::sync::mpsc::channel());
        std::thread::spawn(move || {
            let _ = std::fs::write(fifo, "go\n");
            let _ = done.send(());
        });
        finished.recv_timeout(RECONNECT_WAIT).expect("the door's command reads its fifo");
    }
}

impl Drop for DoorRig {
    fn drop(&mut self) {
        // A command a failed test left waiting ends too (on Linux, opening
        // a fifo for reading and writing never waits).
        if let Ok(mut fifo) = std::fs::OpenOptions::new().read(true).write(true).open(&self.fifo) {
            let _ = fifo.write_all(b"go\ngo\n");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const DOOR_TOPIC: &str = "intercomd/door/door/open";

/// The `door-opened` events on `<p>/events`.
fn door_openings(subscriber: &Subscriber) -> Vec<Value> {
    subscriber
        .on("intercomd/events")
        .iter()
        .map(Message::json)
        .filter(|event| event["event"] == "door-opened")
        .collect()
}

#[test]
fn a_door_opens_by_mqtt_once_at_a_time_and_never_by_a_retained_message() {
    let broker = Broker::start(free_port(), "");
    let subscriber = Subscriber::connect(broker.port, None);
    // Left on the broker before the daemon comes: handed to its subscription
    // with the retain flag, and ignored.
    publish(broker.port, DOOR_TOPIC, "OPEN", true);
    let rig = DoorRig::new(true);
    let daemon = rig.daemon(&["--mqtt", &broker.url(), "--mqtt-door-open"]);
    daemon.wait_for_log(&format!("mqtt: ignored a retained message on {DOOR_TOPIC}"));
    assert!(rig.runs().is_empty(), "a retained OPEN opened the door");
    let retained = daemon.log().into_iter().find(|line| line.contains("ignored a retained")).unwrap();
    assert!(retained.contains("WARN") && retained.contains("mosquitto_pub -r -n -t"), "{retained}");

    // Not the payload: logged and ignored.
    publish(broker.port, DOOR_TOPIC, "open", false);
    daemon.wait_for_log(&format!("mqtt: ignored \"open\" on {DOOR_TOPIC}: only OPEN opens door door"));
    assert!(rig.runs().is_empty());

    // OPEN: the command starts, and the event says who opened.
    publish(broker.port, DOOR_TOPIC, "OPEN", false);
    wait_until(WAIT, "a door-opened event", || !door_openings(&subscriber).is_empty());
    let event = &door_openings(&subscriber)[0];
    assert_eq!((&event["from"], &event["by"]), (&json!("door"), &json!("mqtt")), "{event}");
    assert!(event.get("call").is_none(), "{event}");
    wait_until(WAIT, "the command's record", || rig.runs().len() == 1);
    assert_eq!(rig.runs(), ["opened relay"]);

    // A second OPEN while it runs is refused, not queued.
    publish(broker.port, DOOR_TOPIC, "OPEN", false);
    daemon.wait_for_log(&format!("mqtt: OPEN on {DOOR_TOPIC} refused: the door is opening already"));
    rig.release();
    daemon.wait_for_log("door door opened by mqtt: ");
    assert_eq!(rig.runs().len(), 1, "the refused OPEN ran nothing");
    assert_eq!(door_openings(&subscriber).len(), 1);

    // Done: the door opens again.
    publish(broker.port, DOOR_TOPIC, "OPEN", false);
    wait_until(WAIT, "a second door-opened event", || door_openings(&subscriber).len() == 2);
    rig.release();
    wait_until(WAIT, "the second opening's log line", || {
        daemon.log().iter().filter(|line| line.contains("door door opened by mqtt: ")).count() == 2
    });
    assert_eq!(rig.runs().len(), 2);
    // The events are the call log's lines.
    let log = call_log(&daemon, 2);
    let lines: Vec<String> = subscriber
        .on("intercomd/events")
        .into_iter()
        .filter(|message| message.json()["event"] == "door-opened")
        .map(|message| message.payload)
        .collect();
    assert_eq!(lines, log);
    let mqtt: Vec<String> = daemon.log().into_iter().filter(|line| line.contains("mqtt:")).collect();
    assert!(!mqtt.iter().any(|line| line.contains("lost the connection")), "{mqtt:#?}");
}

#[test]
fn the_open_door_button_is_announced_with_mqtt_door_open() {
    let broker = Broker::start(free_port(), "");
    let subscriber = Subscriber::connect(broker.port, None);
    let rig = DoorRig::new(false);
    let daemon = rig.daemon(&["--mqtt", &broker.url(), "--mqtt-door-open"]);
    daemon.wait_for_log("mqtt: connected to");
    let button = subscriber.wait_for("homeassistant/button/intercomd/door_open_door/config", 1, WAIT);
    let late = Subscriber::connect(broker.port, None);
    assert!(late.wait_for("homeassistant/button/intercomd/door_open_door/config", 1, WAIT)[0].retain);
    assert_eq!(
        button[0].json(),
        json!({
            "name": "Open door",
            "unique_id": "intercomd_door_open_door",
            "default_entity_id": "button.intercomd_door_open_door",
            "command_topic": DOOR_TOPIC,
            "payload_press": "OPEN",
            "retain": false,
            "icon": "mdi:door-open",
            "availability_topic": "intercomd/status",
            "device": station_device(),
            "origin": origin(),
        })
    );
    // Pressing it is publishing its payload on its topic.
    publish(broker.port, DOOR_TOPIC, "OPEN", false);
    daemon.wait_for_log("door door opened by mqtt: ");
    assert_eq!(rig.runs(), ["opened relay"]);
}

#[test]
fn without_mqtt_door_open_a_publish_opens_nothing() {
    let broker = Broker::start(free_port(), "");
    let subscriber = Subscriber::connect(broker.port, None);
    let rig = DoorRig::new(false);
    let daemon = rig.daemon(&["--mqtt", &broker.url()]);
    daemon.wait_for_log("mqtt: connected to");
    subscriber.wait_for_payload("intercomd/status", "online", WAIT);
    publish(broker.port, DOOR_TOPIC, "OPEN", false);
    // The broker queues a PUBLISH for every subscriber before it answers the
    // publisher, so an OPEN for the daemon would be ahead of the PUBACK of
    // the daemon's next event: once that is counted, the OPEN would have
    // been handled.
    let _kitchen = smol::block_on(async { Client::join(&daemon, "kitchen", None).await });
    let delivered =
        format!("intercomd_event_sink_delivered_total{{sink=\"mqtt\",target=\"127.0.0.1:{}\"}}", broker.port);
    wait_until(WAIT, "the online event acknowledged", || common::metric(daemon.addr, &delivered) >= 1);
    subscriber.wait_for("intercomd/events", 1, WAIT);
    assert!(rig.runs().is_empty(), "the door opened");
    assert!(
        !daemon.log().iter().any(|line| line.contains(DOOR_TOPIC) || line.contains("opened by")),
        "{:?}",
        daemon.log()
    );
    assert!(
        !subscriber.messages().iter().any(|message| message.topic.starts_with("homeassistant/button/")),
        "no button without the flag"
    );
}

/// A broker of one connection, played by the test: it answers the CONNECT,
/// acknowledges every QoS 1 publish, hands every other packet the daemon
/// sends to `packets`, and writes to the daemon whatever the test asks.
struct FakeBroker {
    port: u16,
    packets: std::sync::mpsc::Receiver<Packet>,
    to_daemon: Arc<Mutex<Option<TcpStream>>>,
}

impl FakeBroker {
    fn start() -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (send, packets) = std::sync::mpsc::channel();
        let to_daemon = Arc::new(Mutex::new(None));
        let writer = to_daemon.clone();
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else { return };
            let mut buffer = BytesMut::new();
            assert!(matches!(try_read_packet(&mut stream, &mut buffer), Some(Packet::Connect(_))));
            stream.write_all(&[0x20, 0x02, 0x00, 0x00]).unwrap();
            *writer.lock().unwrap() = Some(stream.try_clone().unwrap());
            while let Some(packet) = try_read_packet(&mut stream, &mut buffer) {
                if let Packet::Publish(publish) = &packet {
                    if publish.qos == QoS::AtLeastOnce {
                        let mut ack = BytesMut::new();
                        PubAck::new(publish.pkid).write(&mut ack).unwrap();
                        writer.lock().unwrap().as_mut().unwrap().write_all(&ack).unwrap();
                    }
                }
                if send.send(packet).is_err() {
                    return;
                }
            }
        });
        FakeBroker { port, packets, to_daemon }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn send(&self, bytes: &[u8]) {
        self.to_daemon.lock().unwrap().as_mut().expect("the daemon connected").write_all(bytes).unwrap();
    }

    /// Close the daemon's connection (and take no other).
    fn hang_up(&self) {
        let _ =
            self.to_daemon.lock().unwrap().as_ref().expect("the daemon connected").shutdown(std::net::Shutdown::Both);
    }

    /// The next packet the daemon sent.
    fn next(&self) -> Packet {
        self.packets.recv_timeout(WAIT).expect("a packet from the daemon")
    }

    /// Packets until one for which `done` holds; all of them, that one last.
    fn until(&self, what: &str, mut done: impl FnMut(&Packet) -> bool) -> Vec<Packet> {
        let mut got = Vec::new();
        loop {
            let packet = self.packets.recv_timeout(WAIT).unwrap_or_else(|_| panic!("{what}: got only {got:?}"));
            let last = done(&packet);
            got.push(packet);
            if last {
                return got;
            }
        }
    }
}

fn is_event(packet: &Packet, event: &str) -> bool {
    matches!(packet, Packet::Publish(publish) if publish.topic == "intercomd/events"
        && String::from_utf8_lossy(&publish.payload).contains(&format!("\"event\":\"{event}\"")))
}

#[test]
fn a_refused_subscription_a_qos_1_open_and_an_oversized_message() {
    let broker = FakeBroker::start();
    let rig = DoorRig::new(false);
    let daemon = rig.daemon(&["--mqtt", &broker.url(), "--mqtt-door-open"]);
    // First after the CONNACK: the SUBSCRIBE, QoS 0, one topic per door.
    let Packet::Subscribe(subscribe) = broker.next() else { panic!("a SUBSCRIBE first") };
    let filters: Vec<(&str, QoS)> = subscribe.filters.iter().map(|f| (f.path.as_str(), f.qos)).collect();
    assert_eq!(filters, [(DOOR_TOPIC, QoS::AtMostOnce)]);
    let [high, low] = subscribe.pkid.to_be_bytes();
    broker.send(&[0x90, 0x03, high, low, 0x80]);
    daemon.wait_for_log(&format!("mqtt: the broker refused the subscription to {DOOR_TOPIC}"));

    // A message far past the limit is skipped as it arrives, and the
    // connection stays.
    let mut big = BytesMut::new();
    Publish::new(DOOR_TOPIC, QoS::AtMostOnce, vec![b'x'; 5000]).write(&mut big).unwrap();
    broker.send(&big);
    daemon.wait_for_log("mqtt: ignored a message of 5026 bytes (more than 512)");
    // A QoS 1 OPEN (a broker that ignores the granted QoS): acknowledged, and opens.
    let mut open = BytesMut::new();
    let mut message = Publish::new(DOOR_TOPIC, QoS::AtLeastOnce, b"OPEN".to_vec());
    message.pkid = 0x1234;
    message.write(&mut open).unwrap();
    broker.send(&open);
    let got = broker.until("the door-opened event", |packet| is_event(packet, "door-opened"));
    assert!(got.iter().any(|packet| matches!(packet, Packet::PubAck(ack) if ack.pkid == 0x1234)), "{got:?}");
    daemon.wait_for_log("door door opened by mqtt: ");
    assert_eq!(rig.runs(), ["opened relay"]);
    let log = daemon.log();
    let warnings: Vec<&String> = log.iter().filter(|line| line.contains("WARN") && line.contains("mqtt:")).collect();
    assert_eq!(warnings.len(), 1, "only the refused subscription: {warnings:#?}");
    assert!(!log.iter().any(|line| line.contains("lost the connection")), "{log:#?}");
}

#[test]
fn without_mqtt_door_open_nothing_is_subscribed() {
    let broker = FakeBroker::start();
    let rig = DoorRig::new(false);
    let daemon = rig.daemon(&["--mqtt", &broker.url()]);
    daemon.wait_for_log("mqtt: connected to");
    let _kitchen = smol::block_on(async { Client::join(&daemon, "kitchen", None).await });
    // Everything of the connect is written before the first event.
    let got = broker.until("the online event", |packet| is_event(packet, "online"));
    for packet in &got {
        let Packet::Publish(publish) = packet else { panic!("only PUBLISH, no SUBSCRIBE: {got:?}") };
        assert!(!publish.topic.starts_with("homeassistant/button/"), "{}", publish.topic);
    }
    assert_eq!(rig.runs().len(), 0);
}

#[test]
fn a_door_command_outlives_the_broker_connection() {
    let broker = FakeBroker::start();
    let rig = DoorRig::new(true);
    let daemon = rig.daemon(&["--mqtt", &broker.url(), "--mqtt-door-open"]);
    let Packet::Subscribe(subscribe) = broker.next() else { panic!("a SUBSCRIBE first") };
    let [high, low] = subscribe.pkid.to_be_bytes();
    broker.send(&[0x90, 0x03, high, low, 0x00]);
    let mut open = BytesMut::new();
    Publish::new(DOOR_TOPIC, QoS::AtMostOnce, b"OPEN".to_vec()).write(&mut open).unwrap();
    broker.send(&open);
    broker.until("the door-opened event", |packet| is_event(packet, "door-opened"));
    // The broker goes away (for good) while the command runs: the command
    // goes on, ends when it ends, and frees the door.
    broker.hang_up();
    daemon.wait_for_log("mqtt: lost the connection to");
    rig.release();
    daemon.wait_for_log("door door opened by mqtt: ");
    let line = daemon.log().into_iter().find(|line| line.contains("door door opened by mqtt: ")).unwrap();
    assert!(line.contains("exited 0"), "{line}");
    assert_eq!(rig.runs(), ["opened relay"]);
}
