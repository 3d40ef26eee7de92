//! HTTPS over loopback: the generated certificate authority and server
//! certificate, what they hold, how they survive restarts and renew, wss end
//! to end, a certificate of the user's own, and clear errors for bad files.
//!
//! Each client here trusts exactly one certificate authority (the one under
//! test), so a handshake that succeeds proves the chain, the names and the
//! CA's `CA:true`; the certificates' fields are also read back with
//! x509-parser.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_net::TcpStream;
use async_tungstenite::tungstenite::Message;
use common::{Daemon, WAIT};
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::stream::StreamExt as _;
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// `future`, or a panic saying what did not happen within `limit`.
async fn within<T>(limit: Duration, what: &str, future: impl std::future::Future<Output = T>) -> T {
    smol::future::or(future, async {
        smol::Timer::after(limit).await;
        panic!("{what} did not finish within {limit:?}");
    })
    .await
}

/// A fresh empty directory under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("intercomd-https-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start(state_dir: &Path) -> Daemon {
    Daemon::start(&["--https-listen", "127.0.0.1:0", "--state-dir", state_dir.to_str().unwrap()])
}

fn read_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A client that trusts only `ca`.
fn connector(ca: CertificateDer<'static>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn handshake(connector: &TlsConnector, addr: SocketAddr, name: &str) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    within(WAIT, "the TLS handshake", connector.connect(server_name, tcp)).await
}

/// One GET over TLS; the status code and body.
async fn get(stream: &mut TlsStream<TcpStream>, path: &str) -> (u16, Vec<u8>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within(WAIT, "the HTTPS response", stream.read_to_end(&mut response)).await.unwrap();
    let split = response.windows(4).position(|window| window == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

fn host_name() -> String {
    String::from_utf8(Command::new("uname").arg("-n").output().unwrap().stdout).unwrap().trim().to_ascii_lowercase()
}

#[test]
fn the_generated_ca_is_trusted_by_host_name_and_by_ip_address() {
    smol::block_on(async {
        let dir = temp_dir("names");
        let daemon = start(&dir);
        let https = daemon.https_addr.expect("an https listener");
        let trusting = connector(read_cert(&dir.join("ca.crt")));
        let host = host_name();
        for name in ["localhost", "127.0.0.1", host.as_str(), format!("{host}.local").as_str()] {
            let mut stream = handshake(&trusting, https, name)
                .await
                .unwrap_or_else(|error| panic!("handshake as {name:?} with only the generated CA trusted: {error}"));
            assert_eq!(get(&mut stream, "/healthz").await, (200, b"ok\n".to_vec()), "as {name}");
        }
        // A name the certificate does not hold, and a client that trusts
        // another CA, are both refused: the tests above could fail.
        assert!(handshake(&trusting, https, "elsewhere.example").await.is_err(), "a name not in the certificate");
        let other_ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let stranger = connector(other_ca.cert.der().clone());
        assert!(handshake(&stranger, https, "localhost").await.is_err(), "a client that trusts another CA");
        // Plain HTTP still works beside it.
        assert_eq!(common::http_get(daemon.addr, "/healthz", "").0, 200);
    });
}

#[test]
fn certificates_hold_what_phones_require_and_keys_are_private() {
    let dir = temp_dir("fields");
    let _daemon = start(&dir);
    let ca_der = read_cert(&dir.join("ca.crt"));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let constraints = ca.basic_constraints().unwrap().expect("the CA has basic constraints").value;
    assert!(constraints.ca, "the CA is marked CA:true");
    assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());

    let chain: Vec<_> = CertificateDer::pem_file_iter(dir.join("server.crt")).unwrap().map(Result::unwrap).collect();
    assert_eq!(chain.len(), 2, "server.crt is the server certificate then the CA");
    assert_eq!(chain[1], ca_der);
    let (_, server) = X509Certificate::from_der(&chain[0]).unwrap();
    assert!(!server.is_ca());
    assert_eq!(server.issuer(), ca.subject());
    let eku = server.extended_key_usage().unwrap().expect("an extended key usage").value;
    assert!(
        eku.server_auth && !eku.client_auth && !eku.code_signing && eku.other.is_empty(),
        "serverAuth only: {eku:?}"
    );
    let validity = server.validity();
    let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) as f64 / 86_400.0;
    assert!(days <= 825.0, "valid for {days} days, more than 825");
    assert!(days >= 800.0, "valid for only {days} days");
    let names: Vec<String> = server
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => dns.to_string(),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()).to_string(),
                _ => std::net::IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()).to_string(),
            },
            other => format!("{other:?}"),
        })
        .collect();
    let host = host_name();
    for name in ["localhost", "127.0.0.1", "::1", &host, &format!("{host}.local")] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }

    for key in ["ca.key", "server.key"] {
        let mode = std::fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key} has mode {mode:o}");
    }
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the state directory has mode {mode:o}");
}

#[test]
fn wss_works_end_to_end_through_the_generated_certificate() {
    smol::block_on(async {
        let dir = temp_dir("wss");
        let daemon = start(&dir);
        let https = daemon.https_addr.unwrap();
        let trusting = connector(read_cert(&dir.join("ca.crt")));
        let mut sockets = Vec::new();
        for id in ["alice", "bob"] {
            let stream = handshake(&trusting, https, "localhost").await.unwrap();
            let url = format!("wss://localhost:{}/ws?id={id}", https.port());
            let (socket, _) = async_tungstenite::client_async(url, stream).await.expect("a WebSocket over TLS");
            sockets.push(socket);
        }
        let [mut alice, mut bob] = <[_; 2]>::try_from(sockets).ok().unwrap();
        for socket in [&mut alice, &mut bob] {
            let welcome = next_json(socket).await;
            assert_eq!(welcome["type"], "welcome");
        }
        assert_eq!(next_json(&mut alice).await["type"], "peer-joined");
        let offer = r#"{"type":"offer","to":"bob","sdp":"v=0"}"#;
        alice.send(Message::text(offer)).await.unwrap();
        let got = next_json(&mut bob).await;
        assert_eq!(
            (got["type"].as_str(), got["from"].as_str(), got["sdp"].as_str()),
            (Some("offer"), Some("alice"), Some("v=0"))
        );
        // Both listeners share one router: a plain-http peer reaches a wss one.
        let (mut carol, _) = common::Client::join(&daemon, "carol", None).await;
        carol.send(serde_json::json!({"type": "chat", "to": "bob", "text": "hi"})).await;
        let got = loop {
            let message = next_json(&mut bob).await;
            if message["type"] == "chat" {
                break message;
            }
        };
        assert_eq!(got["from"], "carol");
    });
}

#[test]
fn the_status_tells_wss_from_ws_and_shows_the_certificate() {
    smol::block_on(async {
        let dir = temp_dir("status");
        let daemon = start(&dir);
        let https = daemon.https_addr.unwrap();
        let stream = handshake(&connector(read_cert(&dir.join("ca.crt"))), https, "localhost").await.unwrap();
        let url = format!("wss://localhost:{}/ws?id=panel", https.port());
        let (mut panel, _) = async_tungstenite::client_async(url, stream).await.expect("a WebSocket over TLS");
        assert_eq!(next_json(&mut panel).await["type"], "welcome");
        let (_phone, _) = common::Client::join(&daemon, "phone", None).await;

        let (_, _, body) = common::http_get(daemon.addr, "/api/status", "");
        let status = common::json_body(&body);
        let transport = |id: &str| {
            let peers = status["peers"].as_array().unwrap();
            peers.iter().find(|peer| peer["id"] == id).map(|peer| peer["transport"].clone())
        };
        assert_eq!(transport("panel"), Some(Value::from("wss")));
        assert_eq!(transport("phone"), Some(Value::from("ws")));
        assert_eq!(status["listen"]["https"], https.to_string());
        assert_eq!(status["urls"]["https"], serde_json::json!([format!("https://{https}/")]));
        let (_, _, body) = common::http_get(daemon.addr, "/api/https", "");
        let certificate = &status["certificate"];
        assert_eq!(certificate["caFingerprint"], common::json_body(&body)["caFingerprint"]);
        let names: Vec<_> =
            certificate["names"].as_array().unwrap().iter().map(|name| name.as_str().unwrap()).collect();
        assert!(names.contains(&"localhost") && names.contains(&"127.0.0.1"), "{names:?}");
        let (renews, ends) = (certificate["renewsAt"].as_str().unwrap(), certificate["notAfter"].as_str().unwrap());
        assert!(renews < ends, "renewed before it ends: {renews} {ends}");
    });
}

async fn next_json<S>(socket: &mut async_tungstenite::WebSocketStream<S>) -> Value
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    loop {
        let message = within(WAIT, "a WebSocket message over TLS", socket.next()).await.unwrap().unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[test]
fn a_restart_serves_the_same_certificate_and_renewal_keeps_the_ca() {
    smol::block_on(async {
        let dir = temp_dir("restart");
        let presented = |daemon: &Daemon, trusting: TlsConnector| {
            let https = daemon.https_addr.unwrap();
            async move {
                let stream = handshake(&trusting, https, "localhost").await.unwrap();
                stream.get_ref().1.peer_certificates().unwrap()[0].clone()
            }
        };
        let mut daemon = start(&dir);
        let ca = read_cert(&dir.join("ca.crt"));
        let first = presented(&daemon, connector(ca.clone())).await;
        daemon.terminate();
        daemon.wait_exit(Duration::from_secs(5));

        let mut daemon = start(&dir);
        assert_eq!(read_cert(&dir.join("ca.crt")), ca, "the CA is kept");
        assert_eq!(
            presented(&daemon, connector(ca.clone())).await,
            first,
            "the same server certificate after a restart"
        );
        assert!(
            !daemon.log().iter().any(|line| line.contains("made a")),
            "nothing made on a restart: {:?}",
            daemon.log()
        );
        daemon.terminate();
        daemon.wait_exit(Duration::from_secs(5));

        // The record says the certificate expires in ten days, then that it
        // names other addresses: each restart renews it, signed by the same
        // CA, so devices that trust the CA need do nothing.
        let record_path = dir.join("server.json");
        let mut record: Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        record["not_after"] = (now + 10 * 86_400).into();
        std::fs::write(&record_path, record.to_string()).unwrap();
        let mut daemon = start(&dir);
        daemon.wait_for_log("made a server certificate");
        let renewed = presented(&daemon, connector(ca.clone())).await;
        assert_ne!(renewed, first, "renewed before it expires");
        daemon.terminate();
        daemon.wait_exit(Duration::from_secs(5));

        let mut record: Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
        record["names"] = serde_json::json!(["192.0.2.99", "localhost"]);
        std::fs::write(&record_path, record.to_string()).unwrap();
        let daemon = start(&dir);
        daemon.wait_for_log("made a server certificate");
        let again = presented(&daemon, connector(ca.clone())).await;
        assert_ne!(again, renewed, "renewed when the addresses changed");
        assert_eq!(read_cert(&dir.join("ca.crt")), ca, "the CA is kept through renewals");
    });
}

#[test]
fn the_plain_http_page_offers_the_https_port_and_the_ca_certificate() {
    let dir = temp_dir("api");
    let daemon = start(&dir);
    let (status, _, body) = common::http_get(daemon.addr, "/api/https", "");
    assert_eq!(status, 200);
    let info = common::json_body(&body);
    assert_eq!(info["port"], daemon.https_addr.unwrap().port());
    assert_eq!(info["ca"], "/intercomd-ca.crt");
    let ca = read_cert(&dir.join("ca.crt"));
    let digest = ring::digest::digest(&ring::digest::SHA256, &ca);
    let fingerprint: Vec<String> = digest.as_ref().iter().map(|byte| format!("{byte:02X}")).collect();
    assert_eq!(info["caFingerprint"], fingerprint.join(":"));

    let (status, headers, body) = common::http_get(daemon.addr, "/intercomd-ca.crt", "");
    assert_eq!(status, 200);
    assert_eq!(common::header(&headers, "content-type"), Some("application/x-x509-ca-cert"));
    let disposition = common::header(&headers, "content-disposition").unwrap_or("");
    assert!(disposition.contains("filename=\"intercomd-ca.crt\""), "{disposition}");
    assert_eq!(body, ca.to_vec(), "the download is the CA certificate, DER");

    let plain = Daemon::start(&[]);
    let info = common::json_body(&common::http_get(plain.addr, "/api/https", "").2);
    assert_eq!(info["port"], Value::Null, "no HTTPS listener with --no-https");
    assert_eq!(common::http_get(plain.addr, "/intercomd-ca.crt", "").0, 404);
}

/// What Python's plistlib reads in a configuration profile: its types and
/// version, and each payload's type and certificate bytes (hex).
const READ_PROFILE: &str = r#"
import json, plistlib, sys
profile = plistlib.load(open(sys.argv[1], "rb"))
print(json.dumps({
    "type": profile["PayloadType"],
    "version": profile["PayloadVersion"],
    "identifier": profile["PayloadIdentifier"],
    "uuid": profile["PayloadUUID"],
    "name": profile["PayloadDisplayName"],
    "payloads": [
        {"type": p["PayloadType"], "version": p["PayloadVersion"], "uuid": p["PayloadUUID"],
         "identifier": p["PayloadIdentifier"], "certificate": p["PayloadContent"].hex()}
        for p in profile["PayloadContent"]
    ],
}))
"#;

#[test]
fn iphones_get_the_ca_as_a_configuration_profile_holding_exactly_its_certificate() {
    let dir = temp_dir("profile");
    let daemon = start(&dir);
    let info = common::json_body(&common::http_get(daemon.addr, "/api/https", "").2);
    assert_eq!(info["mobileconfig"], "/intercomd-ca.mobileconfig");
    let (status, headers, profile) = common::http_get(daemon.addr, "/intercomd-ca.mobileconfig", "");
    assert_eq!(status, 200);
    assert_eq!(common::header(&headers, "content-type"), Some("application/x-apple-aspen-config"));
    let disposition = common::header(&headers, "content-disposition").unwrap_or("");
    assert!(disposition.contains("filename=\"intercomd-ca.mobileconfig\""), "{disposition}");
    let certificate = common::http_get(daemon.addr, "/intercomd-ca.crt", "").2;

    let file = dir.join("downloaded.mobileconfig");
    std::fs::write(&file, &profile).unwrap();
    let output = match Command::new("python3").arg("-c").arg(READ_PROFILE).arg(&file).output() {
        Ok(output) => output,
        Err(error) => {
            panic!("python3 did not run ({error}): install python3 (apt-get install python3; tests/run-all.sh does)")
        }
    };
    assert!(output.status.success(), "plistlib refused the profile: {output:?}\n{}", String::from_utf8_lossy(&profile));
    let read: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(read["type"], "Configuration");
    assert_eq!(read["version"], 1);
    let fingerprint = info["caFingerprint"].as_str().unwrap();
    assert_eq!(read["name"], format!("intercomd CA {}", &fingerprint[..11]));
    let payloads = read["payloads"].as_array().unwrap();
    assert_eq!(payloads.len(), 1, "one payload: {read}");
    assert_eq!(payloads[0]["type"], "com.apple.security.root");
    assert_eq!(payloads[0]["version"], 1);
    let hex: String = certificate.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(payloads[0]["certificate"], hex, "the payload is the CA's certificate, byte for byte");
    assert_eq!(certificate, read_cert(&dir.join("ca.crt")).to_vec());

    // The same CA after a restart: the same identifiers, so iOS replaces
    // the profile it has rather than adding a second.
    drop(daemon);
    let again = start(&dir);
    let second = common::http_get(again.addr, "/intercomd-ca.mobileconfig", "").2;
    assert_eq!(second, profile, "the same CA, the same profile");
    assert_ne!(read["uuid"], payloads[0]["uuid"]);
}

/// A certificate of the user's own: a CA and a server certificate for
/// localhost made here, as a person would bring from their own CA.
fn own_certificate(dir: &Path) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "home CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (dir.join("own.crt"), dir.join("own.key"));
    std::fs::write(&cert_path, cert.pem() + &ca_cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path, ca_cert.der().clone())
}

#[test]
fn a_user_supplied_certificate_is_served() {
    smol::block_on(async {
        let dir = temp_dir("own");
        let (cert, key, ca) = own_certificate(&dir);
        let state = dir.join("state");
        let daemon = Daemon::start(&[
            "--https-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ]);
        let mut stream = handshake(&connector(ca), daemon.https_addr.unwrap(), "localhost").await.unwrap();
        assert_eq!(get(&mut stream, "/healthz").await, (200, b"ok\n".to_vec()));
        assert!(!state.exists(), "nothing generated with --tls-cert");
        let info = common::json_body(&common::http_get(daemon.addr, "/api/https", "").2);
        assert_eq!(info["ca"], Value::Null);
        assert_eq!(info["mobileconfig"], Value::Null);
        assert_eq!(common::http_get(daemon.addr, "/intercomd-ca.crt", "").0, 404);
        assert_eq!(common::http_get(daemon.addr, "/intercomd-ca.mobileconfig", "").0, 404);
    });
}

#[test]
fn bad_or_missing_key_files_stop_the_start_with_a_clear_error() {
    let dir = temp_dir("bad");
    let (cert, key, _) = own_certificate(&dir);
    let (other_cert, other_key, _) = {
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        own_certificate(&other)
    };
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let missing = dir.join("missing.key");
    let binary = std::env::var("INTERCOMD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_intercomd").to_string());
    let path = |p: &Path| p.to_str().unwrap().to_string();
    for (cert, key, blamed, says) in [
        (&cert, &missing, &missing, "No such file"),
        (&cert, &garbage, &garbage, "no usable PEM private key"),
        (&missing, &key, &missing, "No such file"),
        (&garbage, &key, &garbage, "no PEM certificate"),
        (&cert, &other_key, &other_key, "does not fit the certificate"),
    ] {
        let output = Command::new(&binary)
            .args(["--listen", "127.0.0.1:0", "--https-listen", "127.0.0.1:0"])
            .args(["--tls-cert", &path(cert), "--tls-key", &path(key)])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{cert:?} {key:?}: {stderr}");
        let error =
            stderr.lines().find(|line| line.contains("ERROR")).unwrap_or_else(|| panic!("no error line: {stderr}"));
        assert!(
            error.contains(&path(blamed)) && error.contains(says),
            "{error:?} should name {blamed:?} and say {says:?}"
        );
        assert!(!stderr.contains("listening on"), "nothing started: {stderr}");
    }
    drop(other_cert);

    // A state directory that cannot be made.
    let blocker = dir.join("file");
    std::fs::write(&blocker, "").unwrap();
    let output = Command::new(&binary)
        .args(["--listen", "127.0.0.1:0", "--https-listen", "127.0.0.1:0", "--state-dir"])
        .arg(blocker.join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot make the state directory"), "{stderr}");
}

#[test]
fn garbage_or_plain_http_on_the_https_port_is_dropped_and_disturbs_nobody() {
    smol::block_on(async {
        let dir = temp_dir("garbage");
        let daemon = start(&dir);
        let https = daemon.https_addr.unwrap();
        let (mut a, _) = common::Client::join(&daemon, "a", None).await;
        let (mut b, _) = common::Client::join(&daemon, "b", None).await;
        a.recv_type("peer-joined").await;
        for bytes in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0], &[0u8; 4096]]
        {
            let mut stream = TcpStream::connect(https).await.unwrap();
            stream.write_all(bytes).await.unwrap();
            let mut rest = Vec::new();
            // The daemon ends the connection (a TLS alert at most): no hang.
            let _ = within(WAIT, "the daemon to drop a bad TLS client", stream.read_to_end(&mut rest)).await;
            assert!(rest.len() < 64, "at most an alert back, got {} bytes", rest.len());
        }
        common::assert_nothing_more(&mut a, &mut b, "b").await;
        let mut stream = handshake(&connector(read_cert(&dir.join("ca.crt"))), https, "localhost").await.unwrap();
        assert_eq!(get(&mut stream, "/healthz").await, (200, b"ok\n".to_vec()), "the HTTPS listener still serves");
    });
}

/// A TCP stream that sends at most `chunk` bytes per write, each in its own
/// segment: every TLS record reaches the daemon in pieces.
struct Trickle {
    tcp: TcpStream,
    chunk: usize,
}

impl smol::io::AsyncRead for Trickle {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl smol::io::AsyncWrite for Trickle {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let chunk = buf.len().min(self.chunk);
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, &buf[..chunk])
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_close(cx)
    }
}

#[test]
fn wss_carries_a_message_at_the_limit_and_a_burst_whole_from_a_client_that_sends_seven_bytes_at_a_time() {
    smol::block_on(async {
        let dir = temp_dir("trickle");
        let state = dir.to_str().unwrap();
        let daemon = Daemon::start(&["--https-listen", "127.0.0.1:0", "--state-dir", state, "--max-rate", "0"]);
        let https = daemon.https_addr.unwrap();
        let trusting = connector(read_cert(&dir.join("ca.crt")));

        // alice's handshake and frames reach the daemon 7 bytes at a time.
        let tcp = TcpStream::connect(https).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from("localhost".to_string()).unwrap();
        let stream =
            within(WAIT, "a trickled TLS handshake", trusting.connect(name, Trickle { tcp, chunk: 7 })).await.unwrap();
        let url = format!("wss://localhost:{}/ws?id=alice", https.port());
        let (mut alice, _) = async_tungstenite::client_async(url, stream).await.expect("a WebSocket over TLS");
        assert_eq!(next_json(&mut alice).await["type"], "welcome");
        let stream = handshake(&trusting, https, "localhost").await.unwrap();
        let url = format!("wss://localhost:{}/ws?id=bob", https.port());
        let (mut bob, _) = async_tungstenite::client_async(url, stream).await.expect("a WebSocket over TLS");
        assert_eq!(next_json(&mut bob).await["type"], "welcome");
        assert_eq!(next_json(&mut alice).await["type"], "peer-joined");

        // At --max-message-bytes (65,536): more than four TLS records, each
        // arriving in hundreds of pieces.
        let empty = r#"{"type":"blob","to":"bob","pad":""}"#;
        let pad = "x".repeat(65_536 - empty.len());
        let text = format!(r#"{{"type":"blob","to":"bob","pad":"{pad}"}}"#);
        assert_eq!(text.len(), 65_536);
        alice.send(Message::text(text)).await.unwrap();
        let got = next_json(&mut bob).await;
        assert_eq!((got["from"].as_str(), got["pad"].as_str().map(str::len)), (Some("alice"), Some(pad.len())));

        // bob's burst of 4 KB offers, read while it is sent: all of them,
        // each once, in order.
        const BURST: usize = 300;
        let sdp = "v".repeat(4_000);
        let send = async {
            for n in 0..BURST {
                let offer = serde_json::json!({"type": "offer", "to": "alice", "n": n, "sdp": sdp});
                bob.send(Message::text(offer.to_string())).await.unwrap();
            }
            bob
        };
        let receive = async {
            for n in 0..BURST {
                let got = next_json(&mut alice).await;
                assert_eq!((got["n"].as_u64(), got["sdp"].as_str().map(str::len)), (Some(n as u64), Some(4_000)));
            }
            alice
        };
        let (mut bob, mut alice) = smol::future::zip(send, receive).await;

        // A clean close (a close frame, then close_notify): bob sees alice go.
        within(WAIT, "alice's close", alice.close(None)).await.unwrap();
        while let Some(Ok(_)) = within(WAIT, "the end of alice's socket", alice.next()).await {}
        let left = loop {
            let message = next_json(&mut bob).await;
            if message["type"] == "peer-left" {
                break message;
            }
        };
        assert_eq!(left["id"], "alice");
    });
}

#[test]
fn a_wss_peer_that_never_reads_is_dropped_and_the_others_lose_nothing() {
    smol::block_on(async {
        let dir = temp_dir("sink");
        let state = dir.to_str().unwrap();
        let flags =
            ["--https-listen", "127.0.0.1:0", "--state-dir", state, "--max-rate", "0", "--reconnect-grace", "0"];
        let daemon = Daemon::start(&flags);
        let https = daemon.https_addr.unwrap();
        let trusting = connector(read_cert(&dir.join("ca.crt")));
        // sink completes the TLS and WebSocket handshakes, then never reads.
        let stream = handshake(&trusting, https, "localhost").await.unwrap();
        let url = format!("wss://localhost:{}/ws?id=sink&room=attic", https.port());
        let (sink, _) = async_tungstenite::client_async(url, stream).await.expect("a WebSocket over TLS");
        let (mut talker, _) = common::Client::join(&daemon, "talker", None).await;
        let (mut a, _) = common::Client::join(&daemon, "a", None).await;
        let (mut b, _) = common::Client::join(&daemon, "b", None).await;
        a.recv_type("peer-joined").await;

        let padding = "x".repeat(60_000);
        let mut sent = 0;
        loop {
            talker.send(serde_json::json!({"type": "blob", "to": "sink", "pad": padding})).await;
            sent += 1;
            a.send(serde_json::json!({"type": "tick", "to": "b", "n": sent})).await;
            assert_eq!(b.recv_type("tick").await["n"], sent, "a's message {sent} reached b");
            if sent % 16 == 0 {
                talker.send(serde_json::json!({"type": "peers"})).await;
                let answer = loop {
                    let answer = talker.recv().await;
                    if answer["type"] == "error" || answer["type"] == "peers" {
                        break answer;
                    }
                };
                if answer["type"] == "error" {
                    assert_eq!(
                        (answer["code"].as_str(), answer["ref"]["to"].as_str()),
                        (Some("peer-unavailable"), Some("sink"))
                    );
                    break;
                }
            }
            assert!(sent < 2_000, "the sink was never dropped after {sent} messages of 60 KB");
        }
        daemon.wait_for_log("peer sink dropped: its outgoing queue is full");
        a.send(serde_json::json!({"type": "tick", "to": "b", "n": "last"})).await;
        assert_eq!(b.recv_type("tick").await["n"], "last");
        drop(sink);
    });
}
