//! Footprint: the size of the release binary, the RSS of the idle daemon
//! (HTTPS on, as by default), the RSS each idle peer adds with 1,000 peers
//! connected over plain WebSocket, and with 200 more over TLS (wss).
//!
//! `cargo bench --bench footprint` builds the daemon with the release
//! profile, starts it on loopback, connects real WebSocket clients and reads
//! the daemon's `VmRSS` from /proc. It prints the figures against the
//! budgets of the first issue and exits 1 if one is over.

mod common;
use common::listening_addr;

use std::io::{BufRead, BufReader};

use rustls::pki_types::pem::PemObject as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_net::TcpStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use smol::stream::StreamExt;

const PEERS: usize = 1000;
const TLS_PEERS: usize = 200;
/// 1 MiB for the daemon and its pages, plus what HTTPS costs (rustls, ring
/// and rcgen: about 0.9 MiB, measured when it came; README has the figure).
const BINARY_BUDGET: u64 = 2 * 1024 * 1024;
/// 3 MiB for the daemon, plus about 0.9 MiB that HTTPS brings: its code
/// touched at start (making or loading the certificate) and rustls' config.
const IDLE_RSS_BUDGET: u64 = 4 * 1024 * 1024;
const PER_PEER_BUDGET: u64 = 8 * 1024;
/// A TLS session keeps its own buffers (rustls sizes them for a 16 KiB
/// record) on top of a plain peer's.
const PER_TLS_PEER_BUDGET: u64 = 48 * 1024;

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let binary = std::env::var("INTERCOMD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_intercomd").to_string());
    raise_file_limit();
    let size = std::fs::metadata(&binary).expect("the daemon binary").len();

    let state_dir = std::env::temp_dir().join(format!("intercomd-footprint-{}", std::process::id()));
    let (mut child, addr, https) = start(&binary, &state_dir);
    let pid = child.id();
    let idle = rss(pid);
    // A page load and an API call, as a browser would make first.
    http_get(addr, "/");
    http_get(addr, "/api/ice-servers");
    let idle_after_page = rss(pid);

    let started = Instant::now();
    let peers = smol::block_on(connect_peers(addr, PEERS));
    let connect_time = started.elapsed();
    let with_peers = rss(pid);
    let per_peer = with_peers.saturating_sub(idle_after_page) / PEERS as u64;

    // Each peer sends one 300-byte message (an ICE candidate's size) to the
    // next one; memory after real traffic, still idle afterwards.
    let peers = smol::block_on(exchange(peers));
    let after_traffic = rss(pid);

    let ca = rustls::pki_types::CertificateDer::from_pem_file(state_dir.join("ca.crt")).expect("the generated CA");
    let tls_peers = smol::block_on(connect_tls_peers(https, ca, TLS_PEERS));
    let with_tls_peers = rss(pid);
    let per_tls_peer = with_tls_peers.saturating_sub(after_traffic) / TLS_PEERS as u64;
    drop((peers, tls_peers));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&state_dir);

    let kib = |bytes: u64| bytes as f64 / 1024.0;
    let verdict = |value: u64, budget: u64| if value <= budget { "ok" } else { "OVER BUDGET" };
    println!("intercomd footprint ({binary})");
    println!(
        "  binary size (release, stripped): {size} bytes = {:.0} KiB   budget {:.0} KiB  {}",
        kib(size),
        kib(BINARY_BUDGET),
        verdict(size, BINARY_BUDGET)
    );
    println!("  RSS idle, just started:          {:.0} KiB", kib(idle));
    println!(
        "  RSS idle, after a page load:     {:.0} KiB   budget {:.0} KiB  {}",
        kib(idle_after_page),
        kib(IDLE_RSS_BUDGET),
        verdict(idle_after_page, IDLE_RSS_BUDGET)
    );
    println!("  RSS with {PEERS} idle peers:       {:.0} KiB (connected in {connect_time:.2?})", kib(with_peers));
    println!(
        "  RSS per idle peer:               {:.2} KiB   budget {:.0} KiB  {}",
        kib(per_peer),
        kib(PER_PEER_BUDGET),
        verdict(per_peer, PER_PEER_BUDGET)
    );
    println!(
        "  RSS after each peer sent one 300-byte message: {:.0} KiB ({:.2} KiB per peer)",
        kib(after_traffic),
        kib(after_traffic.saturating_sub(idle_after_page) / PEERS as u64)
    );
    println!(
        "  RSS per idle TLS peer (wss, {TLS_PEERS} more): {:.2} KiB   budget {:.0} KiB  {}",
        kib(per_tls_peer),
        kib(PER_TLS_PEER_BUDGET),
        verdict(per_tls_peer, PER_TLS_PEER_BUDGET)
    );
    if size > BINARY_BUDGET
        || idle_after_page > IDLE_RSS_BUDGET
        || per_peer > PER_PEER_BUDGET
        || per_tls_peer > PER_TLS_PEER_BUDGET
    {
        std::process::exit(1);
    }
}

// The caller kills and reaps the child; only a panic here leaves it.
#[allow(clippy::zombie_processes)]
fn start(binary: &str, state_dir: &std::path::Path) -> (Child, std::net::SocketAddr, std::net::SocketAddr) {
    // HTTPS on 127.0.0.2, so the two listeners tell apart in /proc/net/tcp.
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--https-listen", "127.0.0.2:0", "--state-dir"])
        .arg(state_dir)
        .args(["--max-rate", "0", "--max-connections-per-ip", "4096", "--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    // With --log-level warn the daemon logs nothing on start; read the port
    // from /proc instead of the log.
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let (Some(http), Some(https)) = (listening_addr(child.id(), 1), listening_addr(child.id(), 2)) {
            return (child, http, https);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not listen within 5 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn http_get(addr: std::net::SocketAddr, path: &str) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"), "{path}");
}

/// Connect `count` peers, each alone in its room (so no presence traffic),
/// and wait for every welcome.
async fn connect_peers(addr: std::net::SocketAddr, count: usize) -> Vec<WebSocketStream<TcpStream>> {
    let mut peers = Vec::with_capacity(count);
    for i in 0..count {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let url = format!("ws://{addr}/ws?id=p{i}&room=r{i}");
        let (mut ws, _) = async_tungstenite::client_async(url, stream).await.expect("upgrade");
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str().contains("welcome") => {}
            other => panic!("peer {i}: expected a welcome, got {other:?}"),
        }
        peers.push(ws);
    }
    peers
}

/// Connect `count` peers over TLS, trusting only the daemon's CA.
async fn connect_tls_peers(
    addr: std::net::SocketAddr,
    ca: rustls::pki_types::CertificateDer<'static>,
    count: usize,
) -> Vec<WebSocketStream<futures_rustls::client::TlsStream<TcpStream>>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("a CA certificate");
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = futures_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut peers = Vec::with_capacity(count);
    for i in 0..count {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.expect("a TLS handshake");
        let url = format!("wss://localhost:{}/ws?id=t{i}&room=t{i}", addr.port());
        let (mut ws, _) = async_tungstenite::client_async(url, stream).await.expect("upgrade");
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str().contains("welcome") => {}
            other => panic!("TLS peer {i}: expected a welcome, got {other:?}"),
        }
        peers.push(ws);
    }
    peers
}

async fn exchange(mut peers: Vec<WebSocketStream<TcpStream>>) -> Vec<WebSocketStream<TcpStream>> {
    let count = peers.len();
    let padding = "c".repeat(260);
    for (i, peer) in peers.iter_mut().enumerate() {
        let message = format!(r#"{{"type":"candidate","to":"p{}","candidate":"{padding}"}}"#, (i + 1) % count);
        peer.send(Message::text(message)).await.expect("send");
    }
    for (i, peer) in peers.iter_mut().enumerate() {
        match peer.next().await {
            Some(Ok(Message::Text(text))) if text.as_str().contains("candidate") => {}
            other => panic!("peer {i}: expected a candidate, got {other:?}"),
        }
    }
    peers
}

fn raise_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum || limit.maximum.is_none() {
        limit.current = Some(limit.maximum.unwrap_or(1 << 20));
        let _ = setrlimit(Resource::Nofile, limit);
    }
}
