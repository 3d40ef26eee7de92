//! Footprint: the size of the release binary, the RSS of the idle daemon,
//! and the RSS each idle peer adds, with 1,000 peers connected.
//!
//! `cargo bench --bench footprint` builds the daemon with the release
//! profile, starts it on loopback, connects real WebSocket clients and reads
//! the daemon's `VmRSS` from /proc. It prints the figures against the
//! budgets of the first issue and exits 1 if one is over.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_net::TcpStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use smol::stream::StreamExt;

const PEERS: usize = 1000;
const BINARY_BUDGET: u64 = 1024 * 1024;
const IDLE_RSS_BUDGET: u64 = 3 * 1024 * 1024;
const PER_PEER_BUDGET: u64 = 8 * 1024;

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let binary = std::env::var("INTERCOMD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_intercomd").to_string());
    raise_file_limit();
    let size = std::fs::metadata(&binary).expect("the daemon binary").len();

    let (mut child, addr) = start(&binary);
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
    drop(peers);
    let _ = child.kill();
    let _ = child.wait();

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
    if size > BINARY_BUDGET || idle_after_page > IDLE_RSS_BUDGET || per_peer > PER_PEER_BUDGET {
        std::process::exit(1);
    }
}

// The caller kills and reaps the child; only a panic here leaves it.
#[allow(clippy::zombie_processes)]
fn start(binary: &str) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--max-rate", "0", "--max-connections-per-ip", "4096", "--log-level", "warn"])
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
        if let Some(addr) = listening_addr(child.id()) {
            return (child, addr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not listen within 5 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The loopback address the process listens on, from /proc/net/tcp.
fn listening_addr(pid: u32) -> Option<std::net::SocketAddr> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // State 0A is LISTEN.
        if fields.get(3) == Some(&"0A") && inodes.iter().any(|inode| Some(&inode.as_str()) == fields.get(9)) {
            let port = u16::from_str_radix(fields[1].rsplit(':').next()?, 16).ok()?;
            return Some(([127, 0, 0, 1], port).into());
        }
    }
    None
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
