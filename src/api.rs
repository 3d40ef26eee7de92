//! The JSON and text endpoints: `/api/ice-servers`, `/api/peers`,
//! `/api/rooms`, `/api/https`, `/api/events`, `/api/qr`, the CA download
//! (certificate and Apple configuration profile), `/healthz`. Each is a pure
//! function from state to a `Response`; `routes.rs` picks which one answers.

use serde::Serialize;

use crate::feed::Feed;
use crate::http::Response;
use crate::protocol::IceServer;
use crate::qr::QrCode;
use crate::router::Router;

#[derive(Serialize)]
struct IceServersBody<'a> {
    #[serde(rename = "iceServers")]
    ice_servers: &'a [IceServer],
}

/// `{"iceServers":[{"urls":["stun:.."]}]}`, ready for `new RTCPeerConnection`.
pub fn ice_servers(ice_servers: &[IceServer]) -> Response {
    json(&IceServersBody { ice_servers })
}

#[derive(Serialize)]
struct PeerEntry {
    id: String,
    room: String,
}

#[derive(Serialize)]
struct PeersBody {
    peers: Vec<PeerEntry>,
}

/// `{"peers":[{"id":"door","room":"lobby"}]}`, sorted by id.
pub fn peers(router: &Router) -> Response {
    let peers = router.peer_list().into_iter().map(|(id, room)| PeerEntry { id, room }).collect();
    json(&PeersBody { peers })
}

/// `{"events":[..]}`: the call log after `since`, oldest first (each event
/// exactly as the feed encoded it).
pub fn events(feed: &Feed, since: u64) -> Response {
    let events = feed.log_since(since);
    let mut body = String::with_capacity(16 + events.iter().map(|(_, json)| json.len() + 1).sum::<usize>());
    body.push_str("{\"events\":[");
    for (index, (_, json)) in events.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str(json);
    }
    body.push_str("]}");
    Response::json(200, body).with_header("Cache-Control", "no-store")
}

/// Where the local CA's certificate can be downloaded (DER, the form every
/// phone and desktop installer takes).
pub const CA_CERTIFICATE_PATH: &str = "/intercomd-ca.crt";

/// Where the same certificate can be downloaded as an Apple configuration
/// profile: the one-tap install iPhones and iPads expect.
pub const CA_PROFILE_PATH: &str = "/intercomd-ca.mobileconfig";

/// What a page needs to send people to the secure address: `{"port":8443,
/// "ca":"/intercomd-ca.crt","mobileconfig":"/intercomd-ca.mobileconfig",
/// "caFingerprint":"AB:CD:..","onboard":"http://192.168.1.20:8080/trust.html?onboard"}`;
/// `port` is null without an HTTPS listener, `ca`, `mobileconfig` and
/// `caFingerprint` are null unless the daemon made its own certificate
/// authority; `onboard` is where a phone that scans the pages' QR code goes
/// (`status::onboard`).
pub fn https(port: Option<u16>, ca_der: Option<&[u8]>, onboard: &str) -> Response {
    let body = serde_json::json!({
        "port": port,
        "ca": ca_der.map(|_| CA_CERTIFICATE_PATH),
        "mobileconfig": ca_der.map(|_| CA_PROFILE_PATH),
        "caFingerprint": ca_der.map(fingerprint),
        "onboard": onboard,
    });
    json(&body)
}

/// SHA-256 of a certificate, `AB:CD:..`, as browsers and phones show it.
pub fn fingerprint(der: &[u8]) -> String {
    sha256(der).iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":")
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The local CA's certificate as a download; 404 when there is none (with
/// `--tls-cert` the user's own CA is theirs to hand out).
pub fn ca_certificate(ca_der: Option<&[u8]>) -> Response {
    match ca_der {
        Some(der) => Response::new(200, "application/x-x509-ca-cert", der.to_vec())
            .with_header("Content-Disposition", "attachment; filename=\"intercomd-ca.crt\"")
            .with_header("Cache-Control", "no-cache"),
        None => {
            Response::text(404, "this intercom serves a certificate of its own (--tls-cert): no local CA to download")
        }
    }
}

/// The local CA as an Apple configuration profile (`.mobileconfig`), a
/// download; 404 when there is none, as for the certificate.
pub fn ca_profile(ca_der: Option<&[u8]>) -> Response {
    match ca_der {
        Some(der) => Response::new(200, "application/x-apple-aspen-config", profile(der).into_bytes())
            .with_header("Content-Disposition", "attachment; filename=\"intercomd-ca.mobileconfig\"")
            .with_header("Cache-Control", "no-cache"),
        None => ca_certificate(None),
    }
}

/// The configuration profile (an XML property list) whose one payload is
/// the CA's certificate, `com.apple.security.root`: installing it on iOS
/// adds the CA, and Settings, General, About, Certificate Trust Settings
/// then turns its trust on. The identifiers and UUIDs are derived from the
/// certificate's SHA-256, so the profile of the same CA installed again
/// replaces the first rather than sitting beside it. Nothing in it comes
/// from a client, so nothing needs escaping.
fn profile(der: &[u8]) -> String {
    let digest = sha256(der);
    let hex: String = digest[..8].iter().map(|byte| format!("{byte:02x}")).collect();
    let identifier = format!("local.intercomd.ca.{hex}");
    let short = fingerprint(der)[..11].to_string();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
<plist version=\"1.0\">\n<dict>\n\
<key>PayloadContent</key>\n<array>\n<dict>\n\
<key>PayloadCertificateFileName</key>\n<string>intercomd-ca.cer</string>\n\
<key>PayloadContent</key>\n<data>{certificate}</data>\n\
<key>PayloadDescription</key>\n<string>The certificate authority of this intercom</string>\n\
<key>PayloadDisplayName</key>\n<string>intercomd CA {short}</string>\n\
<key>PayloadIdentifier</key>\n<string>{identifier}.root</string>\n\
<key>PayloadType</key>\n<string>com.apple.security.root</string>\n\
<key>PayloadUUID</key>\n<string>{certificate_uuid}</string>\n\
<key>PayloadVersion</key>\n<integer>1</integer>\n\
</dict>\n</array>\n\
<key>PayloadDescription</key>\n<string>Lets this device open the intercom over HTTPS (SHA-256 {fingerprint})</string>\n\
<key>PayloadDisplayName</key>\n<string>intercomd CA {short}</string>\n\
<key>PayloadIdentifier</key>\n<string>{identifier}</string>\n\
<key>PayloadRemovalDisallowed</key>\n<false/>\n\
<key>PayloadType</key>\n<string>Configuration</string>\n\
<key>PayloadUUID</key>\n<string>{profile_uuid}</string>\n\
<key>PayloadVersion</key>\n<integer>1</integer>\n\
</dict>\n</plist>\n",
        certificate = base64(der),
        fingerprint = fingerprint(der),
        certificate_uuid = uuid(&digest[16..]),
        profile_uuid = uuid(&digest[..16]),
    )
}

/// 16 bytes as a UUID of RFC 9562's version 8 (made by the application's
/// own rule: here, from the CA's fingerprint), upper case as Apple writes them.
fn uuid(bytes: &[u8]) -> String {
    let mut bytes: [u8; 16] = bytes.try_into().expect("16 bytes");
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02X}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Standard base64 with padding (RFC 4648), for the plist's `<data>`.
/// Written out, like the base32 of room names: a dozen lines, where a
/// crate's generic encoder costs kilobytes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (i, byte)| group | u32::from(*byte) << (16 - 8 * i));
        for i in 0..4 {
            let sextet = if i <= chunk.len() { ALPHABET[(group >> (18 - 6 * i) & 63) as usize] } else { b'=' };
            text.push(char::from(sextet));
        }
    }
    text
}

/// `GET /api/qr?text=..`: the QR code of `text` as SVG, black on white. The
/// answer is a function of the query alone, so it is cached for good. The
/// SVG holds only path data (no text of the client's), so it is safe to
/// serve from this origin.
pub fn qr(text: &str) -> Response {
    match QrCode::encode(text.as_bytes()) {
        Ok(code) => Response::new(200, "image/svg+xml", code.to_svg().into_bytes())
            .with_header("Cache-Control", "public, max-age=31536000, immutable")
            .with_header("X-Content-Type-Options", "nosniff"),
        Err(error) => Response::json_error(400, &error.to_string()),
    }
}

/// Bytes of randomness in a fresh room name: 128 bits, so a room's name is
/// its access control (nobody guesses a link shared in a family chat).
const ROOM_NAME_BYTES: usize = 16;

/// `201 {"room":"<fresh name>"}`. Nothing is stored: a room exists while
/// someone is in it, so the name is all there is to hand out.
pub fn new_room(router: &Router) -> Response {
    loop {
        let name = match random_name() {
            Ok(name) => name,
            Err(err) => {
                log::error!("no randomness for a room name: {err}");
                return Response::json_error(500, "the system's random source failed");
            }
        };
        if router.room_members(&name).is_empty() {
            let body = serde_json::json!({ "room": name }).to_string();
            return Response::json(201, body)
                .with_header("Cache-Control", "no-store")
                .with_header("Location", format!("/api/rooms/{name}"));
        }
    }
}

/// A fresh room name from the system's random source.
fn random_name() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; ROOM_NAME_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(room_name(&bytes))
}

/// 26 characters of lower-case base32 (RFC 4648 alphabet, no padding): fits
/// the room alphabet and reads aloud without case mistakes. Written out
/// rather than taken from `data-encoding` (in the tree through tungstenite,
/// for base64): its generic encoder costs 6.6 KB of code for base32, this
/// loop a few hundred bytes; the known-answer tests below hold it to RFC 4648.
fn room_name(bytes: &[u8; ROOM_NAME_BYTES]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut name = String::with_capacity(26);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            name.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        name.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    name
}

#[derive(Serialize)]
struct RoomBody<'a> {
    room: &'a str,
    peers: Vec<String>,
}

/// `{"room":"<room>","peers":[..]}`, empty when nobody is in it.
pub fn room(router: &Router, room: &str) -> Response {
    json(&RoomBody { room, peers: router.room_members(room) })
}

pub fn healthz() -> Response {
    Response::text(200, "ok")
}

fn json(body: &impl Serialize) -> Response {
    Response::json(200, serde_json::to_string(body).unwrap_or_default()).with_header("Cache-Control", "no-store")
}

/// `/api/door`: `{"doors":["door",..],"needs":"pin"|"key"|"pin-or-key"|"nothing","window":30}`;
/// `{"doors":[]}` without `--door-open`. The pages show Open door from it.
pub fn door(doors: Option<&crate::door::Doors>) -> Response {
    let body = match doors {
        Some(doors) => serde_json::json!({
            "doors": doors.ids().collect::<Vec<_>>(),
            "needs": doors.needs().as_str(),
            "window": crate::door::OPEN_WINDOW.as_secs(),
        }),
        None => serde_json::json!({ "doors": [] }),
    };
    Response::json(200, body.to_string()).with_header("Cache-Control", "no-store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_rfc_4648_base32_in_lower_case() {
        assert_eq!(room_name(&[0; 16]), "a".repeat(26));
        assert_eq!(room_name(&[0xff; 16]), "77777777777777777777777774");
        // RFC 4648's test vector "foobar" (MZXW6YTBOI), padded with zeros.
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(b"foobar");
        assert_eq!(room_name(&bytes), "mzxw6ytboiaaaaaaaaaaaaaaaa");
        let counting: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(room_name(&counting), "aaaqeayeaudaocajbifqydiob4");
    }

    #[test]
    fn base64_is_rfc_4648() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn the_profile_holds_the_certificate_and_names_it_by_its_fingerprint() {
        let der = [0x30u8, 0x03, 0x02, 0x01, 0x01];
        let profile = profile(&der);
        // SHA-256 of the five bytes: 1B65F68A522C...
        let expected_parts = [
            "<key>PayloadContent</key>\n<data>MAMCAQE=</data>\n",
            "<key>PayloadType</key>\n<string>com.apple.security.root</string>\n",
            "<key>PayloadType</key>\n<string>Configuration</string>\n",
            "<key>PayloadDisplayName</key>\n<string>intercomd CA 1B:65:F6:8A</string>\n",
            "<key>PayloadIdentifier</key>\n<string>local.intercomd.ca.1b65f68a522c",
        ];
        for part in expected_parts {
            assert!(profile.contains(part), "{part:?} is not in {profile}");
        }
        assert_eq!(profile.matches("<key>PayloadVersion</key>\n<integer>1</integer>").count(), 2);
        let uuids: Vec<&str> =
            profile.split("<key>PayloadUUID</key>\n<string>").skip(1).map(|rest| &rest[..36]).collect();
        assert_eq!(uuids.len(), 2);
        assert_ne!(uuids[0], uuids[1], "the profile and its payload have UUIDs of their own");
        for uuid in &uuids {
            let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid}");
            assert_eq!(&uuid[14..15], "8", "version 8: {uuid}");
            assert!("89AB".contains(&uuid[19..20]), "RFC 9562 variant: {uuid}");
        }
        assert_eq!(profile, super::profile(&der), "the same CA gives the same profile");
        assert!(!super::profile(&[0x30, 0x00]).contains(uuids[1]), "another CA, other UUIDs");
    }

    #[test]
    fn room_names_are_long_valid_and_distinct() {
        let first = random_name().unwrap();
        let second = random_name().unwrap();
        assert_eq!(first.len(), 26);
        assert!(crate::protocol::is_valid_name(&first));
        assert_ne!(first, second);
    }
}
