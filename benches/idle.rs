//! Idle wakeups: with no peer connected the daemon must not wake up at all
//! (no polling, no periodic timer), so a Pi's CPU can sleep.
//!
//! `cargo bench --bench idle` starts the release daemon on loopback, lets it
//! settle, and counts the context switches of all its threads (from
//! /proc/PID/task/*/status) over 10 seconds: first with nobody connected,
//! then with 100 idle peers (whose sockets are pinged after 20 s of
//! silence). It exits 1 if the daemon woke at all with nobody connected.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const WINDOW: Duration = Duration::from_secs(10);
const PEERS: usize = 100;

fn main() {
    let binary = std::env::var("INTERCOMD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_intercomd").to_string());
    let state_dir = std::env::temp_dir().join(format!("intercomd-idle-{}", std::process::id()));
    let mut child = Command::new(&binary)
        .args(["--listen", "127.0.0.1:0", "--max-connections-per-ip", "1000"])
        // HTTPS on as by default (its renewal timer must not wake an idle daemon).
        .args(["--https-listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the daemon's log").expect("a log line");
        if let Some(addr) = line.split("listening on http://").nth(1) {
            break addr.trim().to_string();
        }
    };
    // Keep draining the log so the daemon never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    let pid = child.id();

    // One page load first, so that lazily started machinery has started.
    get(&addr, "/");
    std::thread::sleep(Duration::from_secs(1));
    let idle = switches_over(pid, WINDOW);

    let peers: Vec<std::net::TcpStream> = (0..PEERS).map(|i| upgrade(&addr, i)).collect();
    std::thread::sleep(Duration::from_secs(1));
    let with_peers = switches_over(pid, WINDOW);
    drop(peers);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&state_dir);

    println!("intercomd idle wakeups ({binary})");
    println!(
        "  context switches in {WINDOW:?}, nobody connected: {idle}   budget 0  {}",
        if idle == 0 { "ok" } else { "OVER BUDGET" }
    );
    println!("  context switches in {WINDOW:?}, {PEERS} idle peers: {with_peers}   (the liveness sweep is due 20 s after they joined: none in this window)");
    if idle > 0 {
        std::process::exit(1);
    }
}

/// Voluntary plus involuntary context switches of every thread of `pid`
/// during `window`.
fn switches_over(pid: u32, window: Duration) -> u64 {
    let before = switches(pid);
    std::thread::sleep(window);
    switches(pid) - before
}

fn switches(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads").flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if line.starts_with("voluntary_ctxt_switches:") || line.starts_with("nonvoluntary_ctxt_switches:") {
                total += line.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}

fn get(addr: &str, path: &str) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
}

/// A peer that joins and then sits still (it answers nothing, but no ping
/// comes within the window).
fn upgrade(addr: &str, i: usize) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /ws?id=idle{i}&room=r{i} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut byte = [0u8; 1];
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    stream
}
