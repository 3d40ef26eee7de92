//! Property tests (proptest) of everything that parses network input, and of
//! the router's invariants under random sequences of events. They run a
//! bounded number of cases, so CI time is bounded; a failure prints the
//! shrunk input, which becomes a regression case in the unit tests.

use std::time::{Duration, Instant};

use intercomd::codec::Codec;
use intercomd::http::{parse_head, parse_query, percent_decode, HeadError, MAX_HEAD_BYTES};
use intercomd::protocol::{is_valid_name, parse_inbound, ErrorCode, Hello, Inbound};
use intercomd::router::{Action, ConnId, Delivery, Limits, Router};
use intercomd::static_files::safe_segments;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Bytes that look like the start of a request as often as not.
fn head_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        ("(GET|POST|HEAD|PUT|G\\x00T) /[ -~]{0,40} HTTP/1\\.[019]\\r\\n([A-Za-z-]{1,12}: [ -~]{0,30}\\r\\n){0,6}(\\r\\n)?")
            .prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn head_parsing_never_panics_and_never_overreads(bytes in head_bytes()) {
        match parse_head(&bytes) {
            Ok(Some((request, length))) => {
                prop_assert!(length <= bytes.len() && length <= MAX_HEAD_BYTES);
                prop_assert!(request.path.starts_with('/'));
                prop_assert!(request.headers.iter().all(|(name, _)| *name == name.to_ascii_lowercase()));
            }
            Ok(None) => prop_assert!(bytes.len() < MAX_HEAD_BYTES),
            Err(_) => {}
        }
    }

    #[test]
    fn well_formed_heads_parse_back(
        path in "/[a-z0-9._~-]{0,20}",
        query in proptest::option::of("[a-z]=[a-z0-9%]{0,8}"),
        headers in proptest::collection::vec(("[A-Za-z][A-Za-z-]{0,10}", "[ -~]{0,20}"), 0..8),
        rest in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let target = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
        let mut raw = format!("GET {target} HTTP/1.1\r\n");
        for (name, value) in &headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        let head_length = raw.len();
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(&rest);
        let (request, length) = parse_head(&bytes).expect("well formed").expect("complete");
        prop_assert_eq!(length, head_length, "bytes after the head are not consumed");
        prop_assert_eq!(request.path, path);
        prop_assert_eq!(request.query, query);
        prop_assert_eq!(request.headers.len(), headers.len());
        for ((name, value), (parsed_name, parsed_value)) in headers.iter().zip(&request.headers) {
            prop_assert_eq!(&name.to_ascii_lowercase(), parsed_name);
            prop_assert_eq!(value.trim(), parsed_value.as_str());
        }
    }

    #[test]
    fn an_endless_head_is_too_large(line in "[A-Za-z]{1,8}: [a-z]{0,40}\r\n") {
        let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
        while bytes.len() <= MAX_HEAD_BYTES {
            bytes.extend_from_slice(line.as_bytes());
        }
        prop_assert_eq!(parse_head(&bytes).err(), Some(HeadError::TooLarge));
    }

    #[test]
    fn percent_encoding_round_trips(text in "\\PC{0,40}") {
        let encoded: String = text.bytes().map(|byte| format!("%{byte:02X}")).collect();
        prop_assert_eq!(percent_decode(&encoded, false), Some(text));
    }

    #[test]
    fn query_parsing_never_panics(query in "[ -~]{0,80}") {
        let pairs = parse_query(&query);
        if let Ok(hello) = Hello::from_query(&pairs) {
            prop_assert!(is_valid_name(&hello.room));
            prop_assert!(hello.id.as_deref().is_none_or(is_valid_name));
            prop_assert!(hello.token.is_none_or(|token| token.len() <= 128));
        }
    }

    #[test]
    fn no_path_segment_escapes(path in "/([a-zA-Z0-9.%/\\\\]|%2[eEfF]|%5[cC]|%00|%c0%ae){0,30}") {
        if let Ok(segments) = safe_segments(&path) {
            for segment in segments {
                prop_assert!(!segment.starts_with('.'), "{:?} from {:?}", segment, path);
                prop_assert!(!segment.contains(['/', '\\', '\0']), "{:?} from {:?}", segment, path);
            }
        }
    }

    #[test]
    fn message_decoding_agrees_with_a_json_value_and_stamping_owns_from(text in message_text()) {
        // The model: what the daemon did before it stopped decoding relayed
        // messages into a tree. Same verdicts, same errors, and a relayed
        // message reads as the same object with `from` set.
        let model = model_of(&text);
        match (parse_inbound(&text), model) {
            (Err(rejection), Err((code, message))) => {
                prop_assert_eq!(rejection.code, code);
                if let Some(message) = message {
                    prop_assert_eq!(rejection.message, message);
                }
            }
            (Ok(Inbound::Directed { to, message }), Ok(Some(mut object))) => {
                prop_assert_eq!(Some(&*to), object["to"].as_str());
                check_stamp(message.stamp("alice"), &mut object)?;
            }
            (Ok(Inbound::Broadcast { message }), Ok(Some(mut object))) => {
                prop_assert_eq!(object["to"].as_str(), Some("*"));
                check_stamp(message.stamp("alice"), &mut object)?;
            }
            (Ok(Inbound::Join { .. } | Inbound::Peers), Ok(None)) => {}
            (got, want) => prop_assert!(false, "{:?}: got {:?}, want {:?}", text, got, want),
        }
    }
}

/// The stamped text is the sent object with `from` set to `alice`.
fn check_stamp(stamped: String, object: &mut serde_json::Map<String, serde_json::Value>) -> Result<(), TestCaseError> {
    let stamped: serde_json::Value = serde_json::from_str(&stamped).expect("stamped JSON parses");
    object.insert("from".into(), "alice".into());
    prop_assert_eq!(stamped, serde_json::Value::Object(object.clone()));
    Ok(())
}

/// The verdict of decoding through `serde_json::Value`: `Ok(Some(object))`
/// for a message to relay, `Ok(None)` for one for the server, or the error
/// code (and, for bad JSON, the exact message).
#[allow(clippy::type_complexity)]
fn model_of(text: &str) -> Result<Option<serde_json::Map<String, serde_json::Value>>, (ErrorCode, Option<String>)> {
    use serde_json::Value;
    let value: Value =
        serde_json::from_str(text).map_err(|err| (ErrorCode::BadJson, Some(format!("not valid JSON: {err}"))))?;
    let Value::Object(object) = value else { return Err((ErrorCode::BadMessage, None)) };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        _ => return Err((ErrorCode::BadMessage, None)),
    };
    match (object.get("to"), kind.as_str()) {
        (Some(Value::String(_)), _) => Ok(Some(object)),
        (Some(_), _) => Err((ErrorCode::BadMessage, None)),
        (None, "join") => match object.get("room") {
            Some(Value::String(room)) if is_valid_name(room) => Ok(None),
            _ => Err((ErrorCode::InvalidRoom, None)),
        },
        (None, "peers") => Ok(None),
        (None, _) => Err((ErrorCode::BadMessage, None)),
    }
}

/// JSON-ish text: real messages, near misses, and noise.
fn message_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i32>().prop_map(serde_json::Value::from),
        "[a-z*~.-]{0,8}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("(type|to|from|room|[a-z]{1,4})", inner.clone(), 0..5)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            // A message to relay, with whatever else it carries.
            ("[a-z-]{1,8}", "([a-z]{1,4}|\\*)", proptest::collection::btree_map("(from|room|[a-z]{1,4})", inner, 0..4))
                .prop_map(|(kind, to, rest)| {
                    let mut object: serde_json::Map<_, _> = rest.into_iter().collect();
                    object.insert("type".into(), kind.into());
                    object.insert("to".into(), to.into());
                    serde_json::Value::Object(object)
                }),
        ]
    });
    prop_oneof![
        value.clone().prop_map(|value| value.to_string()),
        // Spaces and newlines between the tokens.
        value.clone().prop_map(|value| serde_json::to_string_pretty(&value).unwrap_or_default()),
        // Names written with escapes, which must be read as the names.
        value.prop_map(|value| value
            .to_string()
            .replace("\"from\"", "\"fr\\u006fm\"")
            .replace("\"to\"", "\"t\\u006f\"")),
        "\\PC{0,60}",
    ]
}

/// One event for the router model.
#[derive(Debug, Clone)]
enum Event {
    Connect {
        conn: u8,
        id: u8,
        room: u8,
        token: Option<u8>,
    },
    Send {
        conn: u8,
        text: String,
    },
    Join {
        conn: u8,
        room: u8,
    },
    Disconnect {
        conn: u8,
    },
    Drop {
        conn: u8,
    },
    /// Time passes, by this many seconds, and the router acts on what is due.
    Tick {
        seconds: u8,
    },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0..12u8, 0..8u8, 0..4u8, proptest::option::of(0..2u8)).prop_map(|(conn, id, room, token)| Event::Connect {
            conn,
            id,
            room,
            token
        }),
        (0..12u8, 0..8u8, prop_oneof![Just("*".to_string()), (0..8u8).prop_map(|id| format!("p{id}"))])
            .prop_map(|(conn, kind, to)| Event::Send { conn, text: format!(r#"{{"type":"t{kind}","to":"{to}"}}"#) }),
        (0..12u8, message_text()).prop_map(|(conn, text)| Event::Send { conn, text }),
        (0..12u8, 0..5u8).prop_map(|(conn, room)| Event::Join { conn, room }),
        (0..12u8).prop_map(|conn| Event::Disconnect { conn }),
        (0..12u8).prop_map(|conn| Event::Drop { conn }),
        (0..8u8).prop_map(|seconds| Event::Tick { seconds }),
    ]
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn the_router_keeps_its_limits_and_its_maps_in_step(events in proptest::collection::vec(event(), 1..80)) {
        let limits = Limits {
            max_peers: 6,
            max_rate: 0,
            max_rooms: 3,
            max_room_peers: 3,
            reconnect_grace: Duration::from_secs(10),
        };
        let mut router = Router::new(limits, Vec::new());
        let mut now = Instant::now();
        for event in events {
            match event {
                Event::Connect { conn, id, room, token } => {
                    let hello = Hello {
                        id: Some(format!("p{id}")),
                        room: format!("r{room}"),
                        token: token.map(|t| format!("t{t}")),
                    };
                    // Every third id speaks PeerJS: the invariants hold across codecs.
                    let codec = if id % 3 == 0 { Codec::PeerJs } else { Codec::Native };
                    let conn = ConnId(u64::from(conn));
                    let actions = match router.join(conn, codec, Ok(hello), now) {
                        Ok(joined) => joined.actions,
                        Err(refused) => {
                            let shape = matches!(refused.actions[..], [Action::Send { .. }, Action::Close { .. }]);
                            prop_assert!(shape, "a refusal is an error, then a close");
                            refused.actions
                        }
                    };
                    // The first thing the joining socket gets is its welcome
                    // (or its error): nothing can overtake it.
                    let welcome_first = matches!(actions[0], Action::Send { conn: to, .. } if to == conn);
                    prop_assert!(welcome_first, "the joining socket's frame comes first");
                }
                Event::Send { conn, text } => {
                    let _ = router.receive(ConnId(u64::from(conn)), &text, now);
                }
                Event::Join { conn, room } => {
                    let text = format!(r#"{{"type":"join","room":"r{room}"}}"#);
                    let _ = router.receive(ConnId(u64::from(conn)), &text, now);
                }
                Event::Disconnect { conn } => {
                    let _ = router.disconnect(ConnId(u64::from(conn)), Vec::<Delivery>::new());
                }
                Event::Drop { conn } => {
                    let _ = router.drop_abruptly(ConnId(u64::from(conn)), Vec::new(), now);
                }
                Event::Tick { seconds } => {
                    now += Duration::from_secs(u64::from(seconds));
                    let _ = router.expire_due(now);
                    prop_assert!(router.next_deadline().is_none_or(|due| due > now), "nothing due is left undone");
                }
            }
            prop_assert!(
                router.next_deadline().is_none_or(|due| due <= now + limits.reconnect_grace),
                "no deadline lies beyond one grace"
            );
            let peers = router.peer_list();
            prop_assert!(peers.len() <= limits.max_peers);
            prop_assert!(router.room_count() <= limits.max_rooms);
            let mut rooms: Vec<&String> = peers.iter().map(|(_, room)| room).collect();
            rooms.sort();
            rooms.dedup();
            prop_assert_eq!(rooms.len(), router.room_count(), "a room exists exactly while it has members");
            for room in rooms {
                let members = router.room_members(room);
                prop_assert!(members.len() <= limits.max_room_peers);
                let expected: Vec<String> =
                    peers.iter().filter(|(_, r)| r == room).map(|(id, _)| id.clone()).collect();
                prop_assert_eq!(members, expected);
            }
        }
    }
}
