//! Relay: what intercomd costs per relayed signaling message, per
//! connect-message-close cycle and per idle peer, side by side with
//! matchbox_server 0.15 under the same loads.
//!
//! `cargo bench --bench relay` builds the release daemon, starts it pinned to
//! CPU 0 (`taskset -c 0`) on loopback and drives it from this process, pinned
//! to CPU 1. Every measurement starts a fresh server; each runs `--runs` times
//! (default 3), alternating intercomd and matchbox_server, and the bench
//! prints the median of every figure with the ratio intercomd/matchbox next to
//! its target, marked ok or MISSED.
//!
//! How it measures: server CPU is utime+stime of the whole server process
//! from /proc/PID/stat, read before and after a measured window that follows a
//! warm-up, divided by what was relayed in the window; RSS is VmRSS from
//! /proc/PID/status. Latency is one-way, from the time stamp in a message to
//! its arrival, on this process's monotonic clock.
//!
//! The loads (`--only` picks some; the default is all but churn):
//! - `floor`: no server. The least user-space work a relay built on
//!   tungstenite and serde_json does per message with the same validation,
//!   in memory (`floor_section`): the part of the relay rows' CPU per
//!   message that no server with the mandated crates can go below.
//! - `relay`: 8 and 64 pairs, each in a room of its own, 200 B and 4096 B
//!   messages (the whole JSON text the server receives), closed loop: each
//!   side keeps 16 messages outstanding to its partner and answers every
//!   message it receives with the next one. Server CPU per message and the
//!   kernel's part of it (stime), messages per second, latency p50 and p99.
//! - `rate`: 5,000 messages a second in all over 8 pairs, open loop on a fixed
//!   schedule; latency counts from the scheduled send time, so a stalled
//!   server cannot hide its queue (no coordinated omission).
//! - `cycles`: 8 cyclers, each beside a resident peer in a room of its own,
//!   each cycle: connect, await the welcome, send one message to the resident,
//!   await its arrival there, close with a close handshake.
//! - `idle`: 10,000 peers (rooms of two) held for `--idle-secs` with liveness
//!   on: intercomd pings silent sockets (every 20 s by default) and these
//!   clients keep reading so the pongs go out; matchbox_server has no pings,
//!   so these clients send its `KeepAlive` every 10 s, as its own client
//!   library (matchbox_socket) does by default. RSS per peer and server CPU.
//! - `wss`: the idle figures and the relay rows over TLS, trusting the CA
//!   intercomd generated in its state directory. intercomd only:
//!   matchbox_server has no TLS listener.
//! - `churn` (only on request): RSS sampled every 10 s for `--churn-secs`
//!   (default 600) while cyclers churn connections and 8 pairs relay at a
//!   fixed rate; the drift from the first sample to the last.
//!
//! Every relayed message carries a sequence number; each one must arrive
//! exactly once and in order. The bench exits 1 when one is lost, duplicated
//! or reordered or a server dies, 2 on bad options, and 0 otherwise: a missed
//! target is a measurement, not a failure. `--smoke` (intercomd only, about 5
//! seconds) runs one short relay row at each size and a few cycles, for CI.
//!
//! Binaries: `INTERCOMD_BIN`, else the release build cargo made for the bench;
//! `MATCHBOX_BIN`, else `target/matchbox/bin/matchbox_server`, installed there
//! with `cargo install --locked --root target/matchbox matchbox_server@0.15.0`
//! when missing. Both servers log at warn level (intercomd `--log-level warn`,
//! matchbox `RUST_LOG=warn`), so neither pays for a log line per connection.

#![forbid(unsafe_code)]

mod common;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::{pin, Pin};
use std::process::{Child, Command, ExitCode, Stdio};
use std::rc::Rc;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_net::TcpStream;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use common::listening_addr;
use rustls::pki_types::pem::PemObject as _;
use serde::Deserialize;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use smol::lock::Semaphore;
use smol::stream::StreamExt as _;
use smol::{LocalExecutor, Task, Timer};

/// The server runs on this CPU ...
const SERVER_CPU: usize = 0;
/// ... and this process, the load generator, on this one.
const LOADGEN_CPU: usize = 1;
/// Linux's USER_HZ nearly everywhere; used when `getconf CLK_TCK` cannot say.
const ASSUMED_CLOCK_TICKS: u64 = 100;

const DEFAULT_RUNS: usize = 3;
/// A measured window: long enough that one clock tick (10 ms) is well under
/// 1% of the server CPU it measures.
const DEFAULT_SECS: f64 = 10.0;
/// Long enough for intercomd's liveness sweep (a ping after 20 s of silence)
/// to run at least twice.
const DEFAULT_IDLE_SECS: f64 = 60.0;
const DEFAULT_CHURN_SECS: f64 = 600.0;
/// Traffic before a window opens, so connections, buffers and caches are warm.
const WARMUP: Duration = Duration::from_secs(1);

/// (pairs, message bytes) of the closed-loop relay rows.
const RELAY_ROWS: [(usize, usize); 4] = [(8, 200), (8, 4096), (64, 200), (64, 4096)];
/// Messages each side keeps outstanding to its partner in the closed loop.
const IN_FLIGHT: usize = 16;
/// Messages a second, all senders together, of the fixed-rate row.
const FIXED_RATE: f64 = 5000.0;
const FIXED_RATE_PAIRS: usize = 8;
const FIXED_RATE_BYTES: usize = 200;
/// Concurrent connect-message-close cyclers, each with its own resident.
const CYCLERS: usize = 8;
const CYCLE_MESSAGE_BYTES: usize = 200;
const IDLE_PEERS: usize = 10_000;
/// Connections being set up at once while the idle peers join.
const CONNECT_CONCURRENCY: usize = 64;
/// matchbox_socket's default `signaling_keep_alive_interval`.
const MATCHBOX_KEEP_ALIVE: Duration = Duration::from_secs(10);
const CHURN_SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The churn's relay pairs run at FIXED_RATE, alternating these sizes.
const CHURN_PAIRS: usize = 8;
const CHURN_SIZES: [usize; 2] = [200, 4096];

/// The client's WebSocket read buffer (tungstenite allocates it up front and
/// zeroes its free part before each read): enough for a few 4 KB messages
/// per read under load, small for the 10,000 idle peers.
const BUSY_READ_BUFFER: usize = 16 * 1024;
const IDLE_READ_BUFFER: usize = 4 * 1024;

const START_TIMEOUT: Duration = Duration::from_secs(10);
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the last messages may take to arrive once senders stop; what
/// has not arrived by then counts as lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const CYCLE_TIMEOUT: Duration = Duration::from_secs(10);

// Targets of the issue, intercomd against matchbox_server 0.15.
const RELAY_CPU_RATIO_TARGET: f64 = 0.5;
const RATE_P99_RATIO_TARGET: f64 = 1.0;
const CYCLE_CPU_RATIO_TARGET: f64 = 0.5;
const IDLE_PLAIN_KIB_PER_PEER_TARGET: f64 = 4.0;
const IDLE_TLS_KIB_PER_PEER_TARGET: f64 = 10.0;
const IDLE_CPU_PERCENT_TARGET: f64 = 1.0;
const CHURN_DRIFT_PERCENT_TARGET: f64 = 5.0;
/// A load generator busier than this may be what limits the rate.
const SATURATED_PERCENT: f64 = 95.0;

const USAGE: &str = "usage: cargo bench --bench relay -- [--only floor,relay,rate,cycles,idle,wss,churn] [--runs N] \
[--secs S] [--idle-secs S] [--churn-secs S] [--server intercomd|matchbox|both] [--smoke]";

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("relay: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("relay: FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Section {
    Floor,
    Relay,
    Rate,
    Cycles,
    Idle,
    Wss,
    Churn,
}

struct Options {
    sections: Vec<Section>,
    runs: usize,
    window: Duration,
    idle_hold: Duration,
    churn_time: Duration,
    servers: Vec<ServerKind>,
    smoke: bool,
}

impl Options {
    /// The options, or None when help was asked for.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let mut options = Options {
            sections: vec![Section::Floor, Section::Relay, Section::Rate, Section::Cycles, Section::Idle, Section::Wss],
            runs: DEFAULT_RUNS,
            window: Duration::from_secs_f64(DEFAULT_SECS),
            idle_hold: Duration::from_secs_f64(DEFAULT_IDLE_SECS),
            churn_time: Duration::from_secs_f64(DEFAULT_CHURN_SECS),
            servers: vec![ServerKind::Intercomd, ServerKind::Matchbox],
            smoke: false,
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                // cargo bench passes --bench to every bench binary.
                "--bench" => {}
                "--help" | "-h" => return Ok(None),
                "--smoke" => options.smoke = true,
                "--only" => {
                    options.sections = value()?
                        .split(',')
                        .map(|name| match name.trim() {
                            "floor" => Ok(Section::Floor),
                            "relay" => Ok(Section::Relay),
                            "rate" => Ok(Section::Rate),
                            "cycles" => Ok(Section::Cycles),
                            "idle" => Ok(Section::Idle),
                            "wss" => Ok(Section::Wss),
                            "churn" => Ok(Section::Churn),
                            other => Err(format!("--only: no load named {other:?}")),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--runs" => {
                    options.runs = value()?.parse().map_err(|_| "--runs needs a whole number".to_string())?;
                    if options.runs == 0 {
                        return Err("--runs must be at least 1".into());
                    }
                }
                "--secs" => options.window = seconds(&arg, &value()?)?,
                "--idle-secs" => options.idle_hold = seconds(&arg, &value()?)?,
                "--churn-secs" => options.churn_time = seconds(&arg, &value()?)?,
                "--server" => {
                    options.servers = match value()?.as_str() {
                        "intercomd" => vec![ServerKind::Intercomd],
                        "matchbox" => vec![ServerKind::Matchbox],
                        "both" => vec![ServerKind::Intercomd, ServerKind::Matchbox],
                        other => return Err(format!("--server: {other:?} is not intercomd, matchbox or both")),
                    }
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if options.smoke {
            options.servers = vec![ServerKind::Intercomd];
        }
        Ok(Some(options))
    }
}

fn seconds(flag: &str, text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("{flag} needs a positive number of seconds, not {text:?}")),
    }
}

/// What every measurement needs to know about the machine and the binaries.
struct Bench {
    options: Options,
    intercomd: PathBuf,
    matchbox: Option<PathBuf>,
    /// Clock ticks a second of /proc/PID/stat's utime and stime.
    clock_ticks: u64,
    /// intercomd's state directory, shared by its runs so that its CA is
    /// made once; removed when the bench ends.
    state_dir: StateDir,
}

fn run(options: Options) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if cores <= LOADGEN_CPU {
        return Err(format!("this bench needs CPUs {SERVER_CPU} and {LOADGEN_CPU}; only {cores} available"));
    }
    let intercomd =
        PathBuf::from(std::env::var("INTERCOMD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_intercomd").to_string()));
    if !intercomd.is_file() {
        return Err(format!("no intercomd binary at {}", intercomd.display()));
    }
    // Before pinning: an install compiles with both cores.
    let matchbox = if options.servers.contains(&ServerKind::Matchbox) { Some(matchbox_binary()?) } else { None };
    pin_self()?;
    raise_file_limit();
    let (clock_ticks, ticks_source) = clock_ticks();
    let state_dir = StateDir::new()?;
    let bench = Bench { options, intercomd, matchbox, clock_ticks, state_dir };

    println!("intercomd relay benchmark");
    println!("  intercomd:       {}", bench.intercomd.display());
    match &bench.matchbox {
        Some(path) => println!("  matchbox_server: {}", path.display()),
        None => println!("  matchbox_server: not run"),
    }
    println!(
        "  servers pinned to CPU {SERVER_CPU}, this load generator (all its threads) to CPU {}",
        allowed_cpus(std::process::id()).unwrap_or_else(|| LOADGEN_CPU.to_string())
    );
    println!("  clock ticks: {clock_ticks}/s ({ticks_source})");
    if bench.options.smoke {
        return smoke(&bench);
    }
    let options = &bench.options;
    if options.sections.iter().any(|section| *section != Section::Churn) {
        println!(
            "  {} run(s) of each figure, servers alternating, a fresh server each; medians below; \
             windows of {:?} after {:?} of warm-up",
            options.runs, options.window, WARMUP
        );
    }
    for section in &options.sections {
        match section {
            Section::Floor => floor_section(),
            Section::Relay => relay_section(&bench, false)?,
            Section::Rate => rate_section(&bench)?,
            Section::Cycles => cycles_section(&bench)?,
            Section::Idle => idle_section(&bench, false)?,
            Section::Wss => {
                idle_section(&bench, true)?;
                relay_section(&bench, true)?;
            }
            Section::Churn => churn_section(&bench)?,
        }
    }
    println!("\nnothing lost, duplicated or reordered; no server died");
    Ok(())
}

/// Pin this process, and so every thread it starts later, to LOADGEN_CPU.
fn pin_self() -> Result<(), String> {
    let pid = std::process::id().to_string();
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &LOADGEN_CPU.to_string(), &pid])
        .stdout(Stdio::null())
        .status()
        .map_err(|error| format!("run taskset to pin the load generator: {error}"))?;
    if !status.success() {
        return Err(format!("taskset could not pin the load generator to CPU {LOADGEN_CPU}: {status}"));
    }
    Ok(())
}

/// Cpus_allowed_list of a process, as the kernel has it.
fn allowed_cpus(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("Cpus_allowed_list:"))?;
    Some(line.split_whitespace().nth(1)?.to_string())
}

fn clock_ticks() -> (u64, &'static str) {
    let output = Command::new("getconf").arg("CLK_TCK").stderr(Stdio::null()).output();
    match output.ok().and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse().ok()) {
        Some(ticks) if ticks > 0 => (ticks, "getconf CLK_TCK"),
        _ => (ASSUMED_CLOCK_TICKS, "assumed: getconf CLK_TCK did not answer"),
    }
}

fn raise_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum || limit.maximum.is_none() {
        limit.current = Some(limit.maximum.unwrap_or(1 << 20));
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// MATCHBOX_BIN, else target/matchbox/bin/matchbox_server, installed there
/// first when it is missing.
fn matchbox_binary() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("MATCHBOX_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(format!("MATCHBOX_BIN={} is no file", path.display())) };
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/matchbox");
    let path = root.join("bin/matchbox_server");
    if path.is_file() {
        return Ok(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    println!(
        "matchbox_server is not at {}; installing it: cargo install --locked --root {} matchbox_server@0.15.0",
        path.display(),
        root.display()
    );
    let status = Command::new(cargo)
        .args(["install", "--locked", "--root"])
        .arg(&root)
        .arg("matchbox_server@0.15.0")
        .status()
        .map_err(|error| format!("run cargo install matchbox_server: {error}"))?;
    if !status.success() || !path.is_file() {
        return Err(format!("cargo install matchbox_server@0.15.0 failed ({status})"));
    }
    Ok(path)
}

struct StateDir(PathBuf);

impl StateDir {
    fn new() -> Result<StateDir, String> {
        let path = std::env::temp_dir().join(format!("intercomd-relay-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|error| format!("create {}: {error}", path.display()))?;
        Ok(StateDir(path))
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// The servers and their wire protocols

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ServerKind {
    Intercomd,
    Matchbox,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::Intercomd => "intercomd",
            ServerKind::Matchbox => "matchbox",
        }
    }

    /// The WebSocket path that joins `room` (matchbox assigns ids itself).
    fn path(self, id: &str, room: &str) -> String {
        match self {
            ServerKind::Intercomd => format!("/ws?id={id}&room={room}"),
            ServerKind::Matchbox => format!("/{room}"),
        }
    }

    /// Writes a directed message of exactly `size` bytes into `out`: the
    /// sequence number and the send time, padded.
    fn encode(self, out: &mut String, to: &str, seq: u64, sent_ns: u64, size: usize) -> Result<(), String> {
        out.clear();
        let tail = match self {
            ServerKind::Intercomd => {
                let _ = write!(out, r#"{{"type":"x","to":"{to}","seq":{seq},"t":{sent_ns},"pad":""#);
                "\"}"
            }
            ServerKind::Matchbox => {
                let _ = write!(out, r#"{{"Signal":{{"receiver":"{to}","data":{{"seq":{seq},"t":{sent_ns},"pad":""#);
                "\"}}}"
            }
        };
        let padding = size
            .checked_sub(out.len() + tail.len())
            .ok_or_else(|| format!("a {size}-byte message is too small for {:?}", out))?;
        out.push_str(PADDING.get(..padding).ok_or_else(|| format!("a {size}-byte message is too large"))?);
        out.push_str(tail);
        Ok(())
    }

    fn decode(self, text: &str) -> Result<Event<'_>, String> {
        let unreadable = |error: serde_json::Error| format!("{}: unreadable message {text:?}: {error}", self.name());
        match self {
            ServerKind::Intercomd => {
                let message: NativeMessage = serde_json::from_str(text).map_err(unreadable)?;
                Ok(match (&*message.kind, message.id, message.from, message.seq, message.t) {
                    ("welcome", Some(id), ..) => Event::Welcome(id),
                    ("peer-joined", Some(id), ..) => Event::Joined(id),
                    ("x", _, Some(from), Some(seq), Some(sent_ns)) => Event::Relayed { from, seq, sent_ns },
                    ("error", ..) => return Err(format!("intercomd answered with an error: {text}")),
                    _ => Event::Other,
                })
            }
            ServerKind::Matchbox => Ok(match serde_json::from_str(text).map_err(unreadable)? {
                MatchboxEvent::IdAssigned(id) => Event::Welcome(id),
                MatchboxEvent::NewPeer(id) => Event::Joined(id),
                MatchboxEvent::PeerLeft(_) => Event::Other,
                MatchboxEvent::Signal { sender, data } => {
                    Event::Relayed { from: sender, seq: data.seq, sent_ns: data.t }
                }
            }),
        }
    }
}

/// The largest message this bench sends.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Filler for messages, copied whole: a character at a time costs this load
/// generator more than the server spends relaying the message.
static PADDING: LazyLock<String> = LazyLock::new(|| "p".repeat(MAX_MESSAGE_BYTES));

/// What a client makes of a server's message, whichever the server.
enum Event<'a> {
    /// intercomd's welcome or matchbox's IdAssigned, with the peer's own id.
    Welcome(Cow<'a, str>),
    /// Another peer joined the room.
    Joined(Cow<'a, str>),
    /// One of this bench's messages, relayed.
    Relayed {
        from: Cow<'a, str>,
        seq: u64,
        sent_ns: u64,
    },
    Other,
}

/// intercomd's messages, as far as this bench reads them.
#[derive(Deserialize)]
struct NativeMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    from: Option<Cow<'a, str>>,
    seq: Option<u64>,
    t: Option<u64>,
}

/// matchbox_protocol's JsonPeerEvent, with this bench's signal data.
#[derive(Deserialize)]
enum MatchboxEvent<'a> {
    IdAssigned(#[serde(borrow)] Cow<'a, str>),
    NewPeer(#[serde(borrow)] Cow<'a, str>),
    PeerLeft(serde::de::IgnoredAny),
    Signal {
        #[serde(borrow)]
        sender: Cow<'a, str>,
        data: Payload,
    },
}

#[derive(Deserialize)]
struct Payload {
    seq: u64,
    t: u64,
}

/// matchbox_protocol's PeerRequest::KeepAlive, as serde_json writes it.
const MATCHBOX_KEEP_ALIVE_REQUEST: &str = r#""KeepAlive""#;

/// A server process, killed when dropped.
struct Server {
    kind: ServerKind,
    child: Child,
    pid: u32,
    plain: SocketAddr,
    /// intercomd's HTTPS listener and a connector that trusts its CA.
    tls: Option<(SocketAddr, futures_rustls::TlsConnector)>,
    /// The last lines the server wrote to stderr, for when it dies.
    log_tail: Arc<Mutex<VecDeque<String>>>,
}

/// Lines of a server's stderr kept for a failure report.
const LOG_TAIL_LINES: usize = 20;

impl Server {
    fn start(bench: &Bench, kind: ServerKind) -> Result<Server, String> {
        // setpriv: the server is killed when this process ends, however it ends.
        let mut command = Command::new("taskset");
        command.args(["-c", &SERVER_CPU.to_string(), "setpriv", "--pdeathsig", "KILL"]);
        match kind {
            ServerKind::Intercomd => {
                // HTTPS on 127.0.0.2, so that the two listeners tell apart in
                // /proc/net/tcp (nothing is logged at warn level).
                command
                    .arg(&bench.intercomd)
                    .args(["--listen", "127.0.0.1:0", "--https-listen", "127.0.0.2:0", "--state-dir"])
                    .arg(&bench.state_dir.0)
                    .args(["--max-rate", "0", "--max-connections-per-ip", "30000", "--max-peers", "30000"])
                    .args(["--max-room-peers", "30000", "--max-rooms", "30000", "--log-level", "warn"]);
            }
            ServerKind::Matchbox => {
                let binary = bench.matchbox.as_ref().ok_or("matchbox_server was not found")?;
                command.arg(binary).arg("127.0.0.1:0").env("RUST_LOG", "warn");
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("start {}: {error}", kind.name()))?;
        let pid = child.id();
        let log_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let tail = log_tail.clone();
            // Keeps draining the log so the server never blocks on it.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut tail) = tail.lock() {
                        if tail.len() == LOG_TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                }
            });
        }
        let mut server = Server { kind, child, pid, plain: ([127, 0, 0, 1], 0).into(), tls: None, log_tail };
        // No event says a server listens; poll its sockets in /proc.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            server.check_alive()?;
            let listening = match kind {
                ServerKind::Intercomd => listening_addr(pid, 1).zip(listening_addr(pid, 2).map(Some)),
                ServerKind::Matchbox => listening_addr(pid, 1).map(|plain| (plain, None)),
            };
            if let Some((plain, https)) = listening {
                let cpus = allowed_cpus(pid).unwrap_or_default();
                if cpus != SERVER_CPU.to_string() {
                    return Err(format!("{} runs on CPUs {cpus:?}, not on CPU {SERVER_CPU} alone", kind.name()));
                }
                server.plain = plain;
                if let Some(https) = https {
                    server.tls = Some((https, tls_connector(&bench.state_dir.0)?));
                }
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not listen within {START_TIMEOUT:?}", kind.name()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let tail = self.log_tail.lock().map(|tail| Vec::from(tail.clone())).unwrap_or_default();
                let log = if tail.is_empty() {
                    "it logged nothing".to_string()
                } else {
                    format!("its last log lines:\n  {}", tail.join("\n  "))
                };
                Err(format!("{} died ({status}); {log}", self.kind.name()))
            }
            Err(error) => Err(format!("{}: wait: {error}", self.kind.name())),
        }
    }

    fn endpoint(&self, tls: bool) -> Result<Endpoint, String> {
        if !tls {
            return Ok(Endpoint { kind: self.kind, addr: self.plain, tls: None });
        }
        let (addr, connector) = self.tls.clone().ok_or_else(|| format!("{} has no TLS listener", self.kind.name()))?;
        Ok(Endpoint { kind: self.kind, addr, tls: Some(connector) })
    }

    /// utime + stime of all the server's threads, in clock ticks.
    fn cpu_ticks(&self) -> Result<u64, String> {
        cpu_ticks(self.pid)
    }

    fn rss_bytes(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(|error| format!("read /proc/{}/status: {error}", self.pid))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or_else(|| format!("no VmRSS in /proc/{}/status", self.pid))?;
        Ok(kib * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime (fields 14 and 15 of /proc/PID/stat) in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    user_and_system_ticks(pid).map(|(user, system)| user + system)
}

/// stime alone: the process's time in the kernel, in clock ticks.
fn system_ticks(pid: u32) -> Result<u64, String> {
    user_and_system_ticks(pid).map(|(_, system)| system)
}

fn user_and_system_ticks(pid: u32) -> Result<(u64, u64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| format!("read /proc/{pid}/stat: {error}"))?;
    // The command name, field 2, is in parentheses and may hold spaces; count
    // from the field after it, the state (field 3).
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3).and_then(|text| text.parse::<u64>().ok());
    match (field(14), field(15)) {
        (Some(user), Some(system)) => Ok((user, system)),
        _ => Err(format!("no utime and stime in /proc/{pid}/stat")),
    }
}

/// A TLS client configuration that trusts only the CA intercomd generated.
fn tls_connector(state_dir: &Path) -> Result<futures_rustls::TlsConnector, String> {
    let path = state_dir.join("ca.crt");
    let ca = rustls::pki_types::CertificateDer::from_pem_file(&path)
        .map_err(|error| format!("read the generated CA {}: {error}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|error| format!("the generated CA: {error}"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("a TLS client configuration: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(futures_rustls::TlsConnector::from(Arc::new(config)))
}

// ---------------------------------------------------------------------------
// Clients

/// Where and how clients connect.
#[derive(Clone)]
struct Endpoint {
    kind: ServerKind,
    addr: SocketAddr,
    tls: Option<futures_rustls::TlsConnector>,
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

/// A client's socket, plain or TLS, that can hold back its writes ("cork")
/// while the client answers a batch of messages, then send them in one
/// write: tungstenite flushes after every message, which would otherwise cost
/// this load generator a system call (and a TLS record) per message.
struct ClientStream {
    transport: Transport,
    corked: bool,
    /// Bytes written while corked (or while earlier ones wait), not yet sent.
    pending: Vec<u8>,
    /// How much of `pending` has been sent.
    sent: usize,
}

impl ClientStream {
    fn poll_transport_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.transport {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    /// Sends what is pending.
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.pending.len() {
            let pending = std::mem::take(&mut self.pending);
            let result = self.poll_transport_write(cx, &pending[self.sent..]);
            self.pending = pending;
            match ready!(result)? {
                0 => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                written => self.sent += written,
            }
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.corked || !this.pending.is_empty() {
            this.pending.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        this.poll_transport_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.corked {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_send_pending(cx))?;
        match &mut this.transport {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.corked = false;
        ready!(this.poll_send_pending(cx))?;
        match &mut this.transport {
            Transport::Plain(stream) => Pin::new(stream).poll_close(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_close(cx),
        }
    }
}

type Ws = WebSocketStream<ClientStream>;

fn cork(ws: &mut Ws) {
    ws.get_mut().corked = true;
}

/// Sends what was written while corked.
async fn uncork(ws: &mut Ws) -> Result<(), String> {
    let stream = ws.get_mut();
    stream.corked = false;
    stream.flush().await.map_err(|error| format!("send: {error}"))
}

/// A connected client and the id the server knows it by.
struct Peer {
    ws: Ws,
    id: String,
}

/// Connects, upgrades and waits for the welcome (intercomd) or IdAssigned
/// (matchbox).
async fn open(endpoint: &Endpoint, id: &str, room: &str, read_buffer: usize) -> Result<Peer, String> {
    let kind = endpoint.kind;
    let tcp = TcpStream::connect(endpoint.addr)
        .await
        .map_err(|error| format!("{id}: connect to {}: {error}", endpoint.addr))?;
    tcp.set_nodelay(true).map_err(|error| format!("{id}: TCP_NODELAY: {error}"))?;
    let (transport, url) = match &endpoint.tls {
        None => (Transport::Plain(tcp), format!("ws://{}{}", endpoint.addr, kind.path(id, room))),
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("localhost is a server name");
            let tls = connector.connect(name, tcp).await.map_err(|error| format!("{id}: TLS handshake: {error}"))?;
            let url = format!("wss://localhost:{}{}", endpoint.addr.port(), kind.path(id, room));
            (Transport::Tls(Box::new(tls)), url)
        }
    };
    let stream = ClientStream { transport, corked: false, pending: Vec::new(), sent: 0 };
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let (mut ws, _) = async_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|error| format!("{id}: WebSocket upgrade: {error}"))?;
    let text = next_text(&mut ws, id).await?;
    let given = match kind.decode(&text)? {
        Event::Welcome(given) => given.into_owned(),
        _ => return Err(format!("{id}: expected a welcome first, got {text}")),
    };
    if kind == ServerKind::Intercomd && given != id {
        return Err(format!("{id}: welcomed as {given}"));
    }
    Ok(Peer { ws, id: given })
}

/// The next text message; pings are answered by tungstenite on the next read.
async fn next_text(ws: &mut Ws, who: &str) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            other => return Err(format!("{who}: expected a text message, got {}", describe(other))),
        }
    }
}

fn describe(message: Option<Result<Message, WsError>>) -> String {
    match message {
        Some(Ok(Message::Close(frame))) => format!("a close ({frame:?})"),
        Some(Ok(message)) => format!("{message:?}"),
        Some(Err(error)) => format!("an error: {error}"),
        None => "the end of the connection".to_string(),
    }
}

/// Two peers in a room of their own, each one knowing the other is there
/// (so that a matchbox peer's first message has a registered receiver).
async fn connect_pair(endpoint: &Endpoint, pair: usize, read_buffer: usize) -> Result<(Peer, Peer), String> {
    let room = format!("r{pair}");
    let mut first = open(endpoint, &format!("a{pair}"), &room, read_buffer).await?;
    let second = open(endpoint, &format!("b{pair}"), &room, read_buffer).await?;
    loop {
        let text = next_text(&mut first.ws, &first.id).await?;
        if matches!(endpoint.kind.decode(&text)?, Event::Joined(id) if id == second.id) {
            return Ok((first, second));
        }
    }
}

async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    future
        .or(async {
            Timer::after(limit).await;
            Err(format!("{what}: not done within {limit:?}"))
        })
        .await
}

/// Awaits every task, failing on the first error.
async fn join_all(tasks: Vec<Task<Result<(), String>>>) -> Result<(), String> {
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// The error of a task that ended early, if one did.
async fn early_failure(tasks: &mut Vec<Task<Result<(), String>>>) -> Result<(), String> {
    if let Some(index) = tasks.iter().position(|task| task.is_finished()) {
        tasks.remove(index).await?;
        return Err("a client ended before it was told to stop".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Measuring

/// CPU and wall time at one moment.
struct Snapshot {
    server_ticks: u64,
    server_system_ticks: u64,
    own_ticks: u64,
    at: Instant,
}

impl Snapshot {
    fn take(server: &Server) -> Result<Snapshot, String> {
        Ok(Snapshot {
            server_ticks: server.cpu_ticks()?,
            server_system_ticks: system_ticks(server.pid)?,
            own_ticks: cpu_ticks(std::process::id())?,
            at: Instant::now(),
        })
    }
}

/// CPU used between two snapshots.
struct Usage {
    server_secs: f64,
    /// The part of `server_secs` spent in the kernel (stime).
    server_system_secs: f64,
    wall_secs: f64,
    server_percent: f64,
    loadgen_percent: f64,
}

impl Usage {
    fn between(before: &Snapshot, after: &Snapshot, clock_ticks: u64) -> Usage {
        let wall_secs = after.at.duration_since(before.at).as_secs_f64();
        let server_secs = after.server_ticks.saturating_sub(before.server_ticks) as f64 / clock_ticks as f64;
        let own_secs = after.own_ticks.saturating_sub(before.own_ticks) as f64 / clock_ticks as f64;
        let server_system_secs =
            after.server_system_ticks.saturating_sub(before.server_system_ticks) as f64 / clock_ticks as f64;
        Usage {
            server_secs,
            server_system_secs,
            wall_secs,
            server_percent: 100.0 * server_secs / wall_secs,
            loadgen_percent: 100.0 * own_secs / wall_secs,
        }
    }

    fn describe(&self) -> String {
        let saturated = if self.loadgen_percent >= SATURATED_PERCENT { ", load generator SATURATED" } else { "" };
        format!("server core {:.0}%, load generator core {:.0}%{saturated}", self.server_percent, self.loadgen_percent)
    }
}

/// Latency samples in nanoseconds: the value at quantile `q`, in µs.
fn percentile_us(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 })
}

/// Runs `measure` against a fresh server, and reports a server that died
/// rather than the symptoms its clients saw.
fn with_server<T>(
    bench: &Bench,
    kind: ServerKind,
    measure: impl FnOnce(&Server) -> Result<T, String>,
) -> Result<T, String> {
    let mut server = Server::start(bench, kind)?;
    let result = measure(&server);
    server.check_alive()?;
    result
}

// ---------------------------------------------------------------------------
// Relayed traffic: closed loop and fixed rate

#[derive(Clone, Copy)]
enum Pacing {
    /// Each side keeps this many messages outstanding to its partner.
    ClosedLoop(usize),
    /// This many messages a second from all senders together, on a schedule.
    FixedRate(f64),
}

/// What the clients of one traffic load share: counters the controller
/// reads, and the latencies of the measured window.
struct Traffic {
    epoch: Instant,
    measuring: Cell<bool>,
    /// Messages received by all clients.
    relayed: Cell<u64>,
    /// Per client: messages sent and received.
    sent: Vec<Cell<u64>>,
    received: Vec<Cell<u64>>,
    latencies_ns: RefCell<Vec<u64>>,
}

impl Traffic {
    fn new(clients: usize) -> Traffic {
        Traffic {
            epoch: Instant::now(),
            measuring: Cell::new(false),
            relayed: Cell::new(0),
            sent: (0..clients).map(|_| Cell::new(0)).collect(),
            received: (0..clients).map(|_| Cell::new(0)).collect(),
            latencies_ns: RefCell::new(Vec::new()),
        }
    }

    fn ns_since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Messages sent to somebody but not (yet) received.
    fn missing(&self) -> u64 {
        let sent: u64 = self.sent.iter().map(Cell::get).sum();
        let received: u64 = self.received.iter().map(Cell::get).sum();
        sent.saturating_sub(received)
    }
}

/// One client of a relayed-traffic load, with its partner in its room.
struct Side {
    kind: ServerKind,
    ws: Ws,
    me: usize,
    partner: usize,
    partner_id: String,
    size: usize,
    traffic: Rc<Traffic>,
    stop: Receiver<()>,
}

impl Side {
    fn stopping(&self) -> bool {
        self.stop.is_closed()
    }

    /// Everything the partner sent has arrived (final once stopping).
    fn drained(&self) -> bool {
        self.traffic.received[self.me].get() == self.traffic.sent[self.partner].get()
    }

    async fn send(&mut self, sent_ns: u64) -> Result<(), String> {
        let seq = self.traffic.sent[self.me].get();
        let mut text = String::with_capacity(self.size);
        self.kind.encode(&mut text, &self.partner_id, seq, sent_ns, self.size)?;
        self.ws.send(Message::text(text)).await.map_err(|error| format!("client {}: send: {error}", self.me))?;
        self.traffic.sent[self.me].set(seq + 1);
        Ok(())
    }

    /// Checks and counts a message; true when it was a relayed one.
    fn accept(&mut self, message: Option<Result<Message, WsError>>) -> Result<bool, String> {
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return Ok(false),
            other => return Err(format!("client {}: expected a message, got {}", self.me, describe(other))),
        };
        let (from, seq, sent_ns) = match self.kind.decode(text.as_str())? {
            Event::Relayed { from, seq, sent_ns } => (from, seq, sent_ns),
            _ => return Ok(false),
        };
        if from != self.partner_id {
            return Err(format!("client {}: a message from {from}, not from its partner {}", self.me, self.partner_id));
        }
        let traffic = &self.traffic;
        let expected = traffic.received[self.me].get();
        if seq != expected {
            return Err(format!(
                "client {}: message {seq} arrived when {expected} was due: lost, duplicated or reordered",
                self.me
            ));
        }
        traffic.received[self.me].set(expected + 1);
        traffic.relayed.set(traffic.relayed.get() + 1);
        if traffic.measuring.get() {
            let now = traffic.ns_since_epoch(Instant::now());
            traffic.latencies_ns.borrow_mut().push(now.saturating_sub(sent_ns));
        }
        Ok(true)
    }

    /// Answers every message received with the next one, `in_flight` ahead,
    /// until stopped; then takes in what is still on its way.
    async fn run_closed_loop(mut self, in_flight: usize) -> Result<(), String> {
        let stop = self.stop.clone();
        let mut stop_signal = pin!(stop.recv());
        cork(&mut self.ws);
        for _ in 0..in_flight {
            self.send(self.traffic.ns_since_epoch(Instant::now())).await?;
        }
        uncork(&mut self.ws).await?;
        loop {
            if self.stopping() && self.drained() {
                return Ok(());
            }
            let message = if self.stopping() {
                self.ws.next().await
            } else {
                let ws = &mut self.ws;
                match async { Some(ws.next().await) }
                    .or(async {
                        let _ = stop_signal.as_mut().await;
                        None
                    })
                    .await
                {
                    Some(message) => message,
                    None => continue,
                }
            };
            // Answer everything that has already arrived, then send the
            // answers together.
            cork(&mut self.ws);
            let mut message = message;
            loop {
                if self.accept(message)? && !self.stopping() {
                    self.send(self.traffic.ns_since_epoch(Instant::now())).await?;
                }
                match smol::future::poll_once(self.ws.next()).await {
                    Some(next) => message = next,
                    None => break,
                }
            }
            uncork(&mut self.ws).await?;
        }
    }

    /// Sends one message every `period` from `first_due`, stamped with the
    /// time it was due, until stopped; then takes in what is on its way.
    async fn run_fixed_rate(mut self, period: Duration, first_due: Instant) -> Result<(), String> {
        enum Step {
            Due,
            Message(Option<Result<Message, WsError>>),
            Stop,
        }
        let stop = self.stop.clone();
        let mut stop_signal = pin!(stop.recv());
        let mut due = first_due;
        let mut timer = Timer::at(due);
        loop {
            if self.stopping() && self.drained() {
                return Ok(());
            }
            let step = if self.stopping() {
                Step::Message(self.ws.next().await)
            } else {
                let ws = &mut self.ws;
                async {
                    (&mut timer).await;
                    Step::Due
                }
                .or(async { Step::Message(ws.next().await) })
                .or(async {
                    let _ = stop_signal.as_mut().await;
                    Step::Stop
                })
                .await
            };
            cork(&mut self.ws);
            match step {
                // The timer may have fired together with the stop; once
                // stopping, the partner may be gone.
                Step::Due if self.stopping() => {}
                Step::Due => {
                    let now = Instant::now();
                    while due <= now {
                        self.send(self.traffic.ns_since_epoch(due)).await?;
                        due += period;
                    }
                    timer.set_at(due);
                }
                Step::Message(mut message) => loop {
                    self.accept(message)?;
                    match smol::future::poll_once(self.ws.next()).await {
                        Some(next) => message = next,
                        None => break,
                    }
                },
                Step::Stop => {}
            }
            uncork(&mut self.ws).await?;
        }
    }
}

/// A relayed-traffic load running on an executor.
struct TrafficRig {
    traffic: Rc<Traffic>,
    tasks: Vec<Task<Result<(), String>>>,
    stop: Option<Sender<()>>,
}

impl TrafficRig {
    /// Connects `sizes.len()` pairs (pair i sends messages of sizes[i]) and
    /// starts them.
    async fn start<'a>(
        executor: &LocalExecutor<'a>,
        endpoint: &Endpoint,
        sizes: &[usize],
        pacing: Pacing,
    ) -> Result<TrafficRig, String> {
        let mut peers = Vec::with_capacity(2 * sizes.len());
        for pair in 0..sizes.len() {
            let (first, second) =
                within(SETUP_TIMEOUT, "connect a pair", connect_pair(endpoint, pair, BUSY_READ_BUFFER)).await?;
            peers.push(first);
            peers.push(second);
        }
        let traffic = Rc::new(Traffic::new(peers.len()));
        let (stop, stopped) = smol::channel::bounded(1);
        let ids: Vec<String> = peers.iter().map(|peer| peer.id.clone()).collect();
        let senders = peers.len();
        let start = Instant::now();
        let tasks = peers
            .into_iter()
            .enumerate()
            .map(|(me, peer)| {
                let partner = me ^ 1;
                let side = Side {
                    kind: endpoint.kind,
                    ws: peer.ws,
                    me,
                    partner,
                    partner_id: ids[partner].clone(),
                    size: sizes[me / 2],
                    traffic: traffic.clone(),
                    stop: stopped.clone(),
                };
                match pacing {
                    Pacing::ClosedLoop(in_flight) => executor.spawn(side.run_closed_loop(in_flight)),
                    Pacing::FixedRate(per_second) => {
                        // Senders take turns, evenly spread over one period.
                        let period = Duration::from_secs_f64(senders as f64 / per_second);
                        let first_due = start + period.mul_f64(me as f64 / senders as f64);
                        executor.spawn(side.run_fixed_rate(period, first_due))
                    }
                }
            })
            .collect();
        Ok(TrafficRig { traffic, tasks, stop: Some(stop) })
    }

    /// Stops the senders and waits for every message sent to arrive.
    async fn finish(mut self) -> Result<(), String> {
        drop(self.stop.take());
        let traffic = self.traffic.clone();
        within(DRAIN_TIMEOUT, "the last messages", join_all(self.tasks))
            .await
            .map_err(|error| format!("{error} ({} messages sent were never received)", traffic.missing()))
    }
}

/// The figures of one traffic measurement.
struct TrafficFigures {
    cpu_us_per_message: f64,
    /// The part of it in the kernel.
    kernel_us_per_message: f64,
    messages_per_second: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    usage: Usage,
}

fn measure_traffic(
    bench: &Bench,
    server: &Server,
    tls: bool,
    sizes: &[usize],
    pacing: Pacing,
    warmup: Duration,
    window: Duration,
) -> Result<TrafficFigures, String> {
    let executor = LocalExecutor::new();
    smol::block_on(executor.run(async {
        let endpoint = server.endpoint(tls)?;
        let mut rig = TrafficRig::start(&executor, &endpoint, sizes, pacing).await?;
        Timer::after(warmup).await;
        early_failure(&mut rig.tasks).await?;
        let before = Snapshot::take(server)?;
        let relayed_before = rig.traffic.relayed.get();
        rig.traffic.measuring.set(true);
        Timer::after(window).await;
        rig.traffic.measuring.set(false);
        let after = Snapshot::take(server)?;
        let relayed = rig.traffic.relayed.get() - relayed_before;
        let mut latencies = rig.traffic.latencies_ns.take();
        rig.finish().await?;
        if relayed == 0 {
            return Err("nothing was relayed in the window".into());
        }
        latencies.sort_unstable();
        let usage = Usage::between(&before, &after, bench.clock_ticks);
        Ok(TrafficFigures {
            cpu_us_per_message: usage.server_secs * 1e6 / relayed as f64,
            kernel_us_per_message: usage.server_system_secs * 1e6 / relayed as f64,
            messages_per_second: relayed as f64 / usage.wall_secs,
            p50_us: percentile_us(&latencies, 0.50),
            p99_us: percentile_us(&latencies, 0.99),
            p999_us: percentile_us(&latencies, 0.999),
            usage,
        })
    }))
}

// ---------------------------------------------------------------------------
// Connect-message-close cycles

/// Cyclers and their residents running on an executor.
struct CycleRig {
    cycles: Rc<Cell<u64>>,
    cyclers: Vec<Task<Result<(), String>>>,
    residents: Vec<Task<Result<(), String>>>,
    stop_cyclers: Option<Sender<()>>,
    stop_residents: Option<Sender<()>>,
}

impl CycleRig {
    async fn start<'a>(executor: &LocalExecutor<'a>, endpoint: &Endpoint, cyclers: usize) -> Result<CycleRig, String> {
        let cycles = Rc::new(Cell::new(0));
        let (stop_cyclers, cyclers_stopped) = smol::channel::bounded(1);
        let (stop_residents, residents_stopped) = smol::channel::bounded(1);
        let mut rig = CycleRig {
            cycles: cycles.clone(),
            cyclers: Vec::new(),
            residents: Vec::new(),
            stop_cyclers: Some(stop_cyclers),
            stop_residents: Some(stop_residents),
        };
        for index in 0..cyclers {
            let room = format!("cycle{index}");
            let resident = within(
                SETUP_TIMEOUT,
                "connect a resident",
                open(endpoint, &format!("resident{index}"), &room, BUSY_READ_BUFFER),
            )
            .await?;
            let resident_id = resident.id.clone();
            // The resident tells its cycler each message that arrived.
            let (arrived, arrivals) = smol::channel::bounded(1);
            rig.residents.push(executor.spawn(run_resident(
                endpoint.kind,
                resident,
                arrived,
                residents_stopped.clone(),
            )));
            let cycler = Cycler {
                endpoint: endpoint.clone(),
                index,
                room,
                resident_id,
                arrivals,
                stop: cyclers_stopped.clone(),
                cycles: cycles.clone(),
            };
            rig.cyclers.push(executor.spawn(cycler.run()));
        }
        Ok(rig)
    }

    async fn finish(mut self) -> Result<(), String> {
        drop(self.stop_cyclers.take());
        within(CYCLE_TIMEOUT, "the last cycles", join_all(std::mem::take(&mut self.cyclers))).await?;
        drop(self.stop_residents.take());
        within(CYCLE_TIMEOUT, "the residents", join_all(std::mem::take(&mut self.residents))).await
    }
}

/// Takes in the cyclers' messages, checks they come in order, and passes
/// each sequence number on to the cycler.
async fn run_resident(
    kind: ServerKind,
    mut peer: Peer,
    arrived: Sender<u64>,
    stop: Receiver<()>,
) -> Result<(), String> {
    let mut stop_signal = pin!(stop.recv());
    let mut expected = 0;
    loop {
        let ws = &mut peer.ws;
        let message = match async { Some(ws.next().await) }
            .or(async {
                let _ = stop_signal.as_mut().await;
                None
            })
            .await
        {
            Some(message) => message,
            None => return Ok(()),
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            other => return Err(format!("{}: expected a message, got {}", peer.id, describe(other))),
        };
        if let Event::Relayed { seq, .. } = kind.decode(text.as_str())? {
            if seq != expected {
                return Err(format!("{}: cycle message {seq} arrived when {expected} was due", peer.id));
            }
            expected += 1;
            arrived.try_send(seq).map_err(|_| format!("{}: message {seq} arrived twice", peer.id))?;
        }
    }
}

struct Cycler {
    endpoint: Endpoint,
    index: usize,
    room: String,
    resident_id: String,
    arrivals: Receiver<u64>,
    stop: Receiver<()>,
    cycles: Rc<Cell<u64>>,
}

impl Cycler {
    async fn run(self) -> Result<(), String> {
        let kind = self.endpoint.kind;
        let epoch = Instant::now();
        let mut seq = 0;
        while !self.stop.is_closed() {
            // A fresh id each cycle: intercomd may keep a gone peer's id for
            // its reconnect grace.
            let id = format!("c{}-{seq}", self.index);
            let mut peer =
                within(CYCLE_TIMEOUT, "connect", open(&self.endpoint, &id, &self.room, IDLE_READ_BUFFER)).await?;
            let mut text = String::with_capacity(CYCLE_MESSAGE_BYTES);
            kind.encode(&mut text, &self.resident_id, seq, epoch.elapsed().as_nanos() as u64, CYCLE_MESSAGE_BYTES)?;
            peer.ws.send(Message::text(text)).await.map_err(|error| format!("{id}: send: {error}"))?;
            let arrived = within(CYCLE_TIMEOUT, "the message's arrival at the resident", async {
                self.arrivals.recv().await.map_err(|_| format!("{id}: the resident is gone"))
            })
            .await?;
            if arrived != seq {
                return Err(format!("{id}: the resident got message {arrived}, not {seq}"));
            }
            within(CYCLE_TIMEOUT, "the close handshake", close(&mut peer)).await?;
            seq += 1;
            self.cycles.set(self.cycles.get() + 1);
        }
        Ok(())
    }
}

/// Closes with a close handshake: our close frame, the server's answer,
/// then the end of the connection.
async fn close(peer: &mut Peer) -> Result<(), String> {
    peer.ws.close(None).await.map_err(|error| format!("{}: send a close: {error}", peer.id))?;
    loop {
        match peer.ws.next().await {
            None => return Ok(()),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(format!("{}: close handshake: {error}", peer.id)),
        }
    }
}

struct CycleFigures {
    cycles_per_second: f64,
    cpu_us_per_cycle: f64,
    /// The part of it in the kernel.
    kernel_us_per_cycle: f64,
    usage: Usage,
}

fn measure_cycles(bench: &Bench, server: &Server, warmup: Duration, window: Duration) -> Result<CycleFigures, String> {
    let executor = LocalExecutor::new();
    smol::block_on(executor.run(async {
        let endpoint = server.endpoint(false)?;
        let mut rig = CycleRig::start(&executor, &endpoint, CYCLERS).await?;
        Timer::after(warmup).await;
        early_failure(&mut rig.cyclers).await?;
        let before = Snapshot::take(server)?;
        let cycles_before = rig.cycles.get();
        Timer::after(window).await;
        let after = Snapshot::take(server)?;
        let cycles = rig.cycles.get() - cycles_before;
        rig.finish().await?;
        if cycles == 0 {
            return Err("no cycle completed in the window".into());
        }
        let usage = Usage::between(&before, &after, bench.clock_ticks);
        Ok(CycleFigures {
            cycles_per_second: cycles as f64 / usage.wall_secs,
            cpu_us_per_cycle: usage.server_secs * 1e6 / cycles as f64,
            kernel_us_per_cycle: usage.server_system_secs * 1e6 / cycles as f64,
            usage,
        })
    }))
}

// ---------------------------------------------------------------------------
// Idle peers

/// What the idle peers saw of liveness.
#[derive(Default)]
struct Liveness {
    pings: Cell<u64>,
    keep_alives: Cell<u64>,
}

/// Connects a pair (limited to CONNECT_CONCURRENCY at once), reports it
/// connected, then holds both peers until stopped.
async fn idle_pair(
    endpoint: Endpoint,
    pair: usize,
    permits: Rc<Semaphore>,
    connected: Sender<Result<(), String>>,
    stop: Receiver<()>,
    liveness: Rc<Liveness>,
) -> Result<(), String> {
    let permit = permits.acquire().await;
    let result = within(SETUP_TIMEOUT, "connect an idle pair", connect_pair(&endpoint, pair, IDLE_READ_BUFFER)).await;
    drop(permit);
    let (first, second) = match result {
        Ok(peers) => peers,
        Err(error) => {
            let _ = connected.send(Err(error.clone())).await;
            return Err(error);
        }
    };
    let _ = connected.send(Ok(())).await;
    let (first, second) = smol::future::zip(
        hold_idle(endpoint.kind, first, 2 * pair, stop.clone(), liveness.clone()),
        hold_idle(endpoint.kind, second, 2 * pair + 1, stop, liveness),
    )
    .await;
    first.and(second)
}

/// Keeps reading (so tungstenite answers intercomd's pings) and, towards
/// matchbox, sends its KeepAlive as matchbox_socket does, until stopped.
async fn hold_idle(
    kind: ServerKind,
    mut peer: Peer,
    index: usize,
    stop: Receiver<()>,
    liveness: Rc<Liveness>,
) -> Result<(), String> {
    enum Step {
        KeepAlive,
        Message(Option<Result<Message, WsError>>),
        Stop,
    }
    let mut stop_signal = pin!(stop.recv());
    // Clients that joined at different times keep alive at different times.
    let mut keep_alive = match kind {
        ServerKind::Matchbox => {
            Timer::at(Instant::now() + MATCHBOX_KEEP_ALIVE.mul_f64(index as f64 / IDLE_PEERS as f64))
        }
        ServerKind::Intercomd => Timer::never(),
    };
    loop {
        let ws = &mut peer.ws;
        let step = async {
            (&mut keep_alive).await;
            Step::KeepAlive
        }
        .or(async { Step::Message(ws.next().await) })
        .or(async {
            let _ = stop_signal.as_mut().await;
            Step::Stop
        })
        .await;
        match step {
            Step::KeepAlive => {
                peer.ws
                    .send(Message::text(MATCHBOX_KEEP_ALIVE_REQUEST))
                    .await
                    .map_err(|error| format!("{}: send a keep-alive: {error}", peer.id))?;
                liveness.keep_alives.set(liveness.keep_alives.get() + 1);
                keep_alive.set_after(MATCHBOX_KEEP_ALIVE);
            }
            Step::Message(Some(Ok(Message::Ping(_)))) => liveness.pings.set(liveness.pings.get() + 1),
            Step::Message(Some(Ok(Message::Text(text)))) => {
                kind.decode(text.as_str())?;
            }
            Step::Message(Some(Ok(Message::Pong(_) | Message::Frame(_)))) => {}
            Step::Message(other) => return Err(format!("idle peer {}: {}", peer.id, describe(other))),
            Step::Stop => return Ok(()),
        }
    }
}

struct IdleFigures {
    kib_per_peer: f64,
    cpu_percent: f64,
    rss_before: u64,
    rss_after: u64,
    connect_secs: f64,
    pings: u64,
    keep_alives: u64,
}

fn measure_idle(bench: &Bench, server: &Server, tls: bool, hold: Duration) -> Result<IdleFigures, String> {
    let executor = LocalExecutor::new();
    smol::block_on(executor.run(async {
        let endpoint = server.endpoint(tls)?;
        let rss_before = server.rss_bytes()?;
        let pairs = IDLE_PEERS / 2;
        let liveness = Rc::new(Liveness::default());
        let permits = Rc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let (connected, connections) = smol::channel::bounded(pairs);
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let started = Instant::now();
        let mut tasks: Vec<_> = (0..pairs)
            .map(|pair| {
                executor.spawn(idle_pair(
                    endpoint.clone(),
                    pair,
                    permits.clone(),
                    connected.clone(),
                    stopped.clone(),
                    liveness.clone(),
                ))
            })
            .collect();
        for _ in 0..pairs {
            connections.recv().await.map_err(|_| "the idle pairs are gone".to_string())??;
        }
        let connect_secs = started.elapsed().as_secs_f64();
        let before = Snapshot::take(server)?;
        Timer::after(hold).await;
        let after = Snapshot::take(server)?;
        let rss_after = server.rss_bytes()?;
        early_failure(&mut tasks).await?;
        drop(stop);
        within(DRAIN_TIMEOUT, "the idle peers", join_all(tasks)).await?;
        let usage = Usage::between(&before, &after, bench.clock_ticks);
        Ok(IdleFigures {
            kib_per_peer: rss_after.saturating_sub(rss_before) as f64 / 1024.0 / IDLE_PEERS as f64,
            cpu_percent: usage.server_percent,
            rss_before,
            rss_after,
            connect_secs,
            pings: liveness.pings.get(),
            keep_alives: liveness.keep_alives.get(),
        })
    }))
}

// ---------------------------------------------------------------------------
// Churn

struct ChurnFigures {
    samples_kib: Vec<u64>,
    relayed: u64,
    cycles: u64,
}

fn measure_churn(server: &Server, duration: Duration) -> Result<ChurnFigures, String> {
    let executor = LocalExecutor::new();
    smol::block_on(executor.run(async {
        let endpoint = server.endpoint(false)?;
        let sizes: Vec<usize> = (0..CHURN_PAIRS).map(|pair| CHURN_SIZES[pair % CHURN_SIZES.len()]).collect();
        let mut traffic = TrafficRig::start(&executor, &endpoint, &sizes, Pacing::FixedRate(FIXED_RATE)).await?;
        let mut cycles = CycleRig::start(&executor, &endpoint, CYCLERS).await?;
        let started = Instant::now();
        let mut samples_kib = Vec::new();
        let mut next_sample = started + CHURN_SAMPLE_EVERY;
        while next_sample <= started + duration {
            Timer::at(next_sample).await;
            early_failure(&mut traffic.tasks).await?;
            early_failure(&mut cycles.cyclers).await?;
            let kib = server.rss_bytes()? / 1024;
            println!(
                "    {:>4.0} s  RSS {kib} KiB  ({} relayed, {} cycles so far)",
                started.elapsed().as_secs_f64(),
                traffic.traffic.relayed.get(),
                cycles.cycles.get()
            );
            samples_kib.push(kib);
            next_sample += CHURN_SAMPLE_EVERY;
        }
        let relayed = traffic.traffic.relayed.get();
        let cycle_count = cycles.cycles.get();
        cycles.finish().await?;
        traffic.finish().await?;
        if samples_kib.len() < 2 {
            return Err(format!("--churn-secs must allow two RSS samples, {CHURN_SAMPLE_EVERY:?} apart"));
        }
        Ok(ChurnFigures { samples_kib, relayed, cycles: cycle_count })
    }))
}

// ---------------------------------------------------------------------------
// Sections: run, print progress, print medians against targets

/// What a figure is held against.
enum Target {
    None,
    /// Context for the other figures, no ratio shown.
    Context,
    /// intercomd/matchbox at most this.
    Ratio(f64),
    /// intercomd's own value at most this.
    AtMost(f64),
}

/// One line of a result table: the medians of a figure for each server.
struct Figure {
    name: String,
    intercomd: Option<f64>,
    matchbox: Option<f64>,
    decimals: usize,
    target: Target,
}

/// Per server, the figures of each run.
struct Runs<T> {
    intercomd: Vec<T>,
    matchbox: Vec<T>,
}

impl<T> Runs<T> {
    fn new() -> Runs<T> {
        Runs { intercomd: Vec::new(), matchbox: Vec::new() }
    }

    fn push(&mut self, kind: ServerKind, figures: T) {
        match kind {
            ServerKind::Intercomd => self.intercomd.push(figures),
            ServerKind::Matchbox => self.matchbox.push(figures),
        }
    }

    fn figure(&self, name: &str, decimals: usize, target: Target, value: impl Fn(&T) -> f64) -> Figure {
        Figure {
            name: name.to_string(),
            intercomd: median(self.intercomd.iter().map(&value).collect()),
            matchbox: median(self.matchbox.iter().map(&value).collect()),
            decimals,
            target,
        }
    }
}

/// Runs `measure` `--runs` times against each chosen server, alternating.
fn repeat<T>(
    bench: &Bench,
    label: &str,
    servers: &[ServerKind],
    mut measure: impl FnMut(&Server) -> Result<T, String>,
    describe: impl Fn(&T) -> String,
) -> Result<Runs<T>, String> {
    let mut runs = Runs::new();
    for run in 1..=bench.options.runs {
        for &kind in servers {
            let figures =
                with_server(bench, kind, &mut measure).map_err(|error| format!("{label}, {}: {error}", kind.name()))?;
            println!("  {label:<22} run {run}/{}  {:<9}  {}", bench.options.runs, kind.name(), describe(&figures));
            runs.push(kind, figures);
        }
    }
    Ok(runs)
}

fn print_table(title: &str, figures: &[Figure], matchbox_absent: &str) {
    println!("\n  {title}");
    println!("    {:<30} {:>12} {:>12} {:>7}   target", "median", "intercomd", "matchbox", "ratio");
    for figure in figures {
        let value = |value: Option<f64>, absent: &str| match value {
            Some(value) => format!("{value:.*}", figure.decimals),
            None => absent.to_string(),
        };
        let ratio = match (&figure.target, figure.intercomd, figure.matchbox) {
            (Target::Context, ..) => None,
            (_, Some(ours), Some(theirs)) if theirs > 0.0 => Some(ours / theirs),
            _ => None,
        };
        let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
        let target = match figure.target {
            Target::None | Target::Context => String::new(),
            Target::Ratio(limit) => match ratio {
                Some(ratio) => format!("ratio <= {limit}  {}", verdict(ratio <= limit)),
                None => format!("ratio <= {limit}  (no ratio)"),
            },
            Target::AtMost(limit) => match figure.intercomd {
                Some(ours) => format!("intercomd <= {limit}  {}", verdict(ours <= limit)),
                None => format!("intercomd <= {limit}  (not run)"),
            },
        };
        println!(
            "    {:<30} {:>12} {:>12} {:>7}   {target}",
            figure.name,
            value(figure.intercomd, "-"),
            value(figure.matchbox, matchbox_absent),
            ratio.map(|ratio| format!("{ratio:.2}")).unwrap_or_else(|| "-".to_string()),
        );
    }
}

fn describe_traffic(figures: &TrafficFigures) -> String {
    format!(
        "{:.2} µs CPU/msg  {:.0} msg/s  p50 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs  ({})",
        figures.cpu_us_per_message,
        figures.messages_per_second,
        figures.p50_us,
        figures.p99_us,
        figures.p999_us,
        figures.usage.describe()
    )
}

/// Messages each size's floor is measured over, and how many times (the
/// least is printed: the floor is a bound, not a typical figure).
const FLOOR_MESSAGES: usize = 200_000;
const FLOOR_REPEATS: usize = 5;

/// What relaying a message costs at the least in user space, with the
/// mandated crates and the same validation, and nothing else: no sockets, no
/// executor, no routing, no limits. tungstenite (default configuration, its
/// 128 KiB read buffer) reads a client's masked text frame from memory, and
/// checks its UTF-8; serde_json checks that it is one JSON value (skipping
/// every value, keeping nothing); `{"from":"…",` goes in front of it; and
/// tungstenite frames it again for a batched write into a sink, flushed every
/// `IN_FLIGHT` messages. The relay rows' server CPU per message is this, plus
/// the kernel's part (printed there) and everything else a real server does.
fn floor_section() {
    use async_tungstenite::tungstenite::protocol::{Role, WebSocket};
    use std::io::{Read, Write};

    /// The same bytes over and over, in frames; and a sink for the writes.
    struct Loop {
        frames: Vec<u8>,
        at: usize,
    }
    impl Read for Loop {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.frames.len() {
                self.at = 0;
            }
            let n = buf.len().min(self.frames.len() - self.at);
            buf[..n].copy_from_slice(&self.frames[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }
    impl Write for Loop {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(std::hint::black_box(buf).len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    /// A client's side, masking what it writes into `frames`.
    struct Collect(Vec<u8>);
    impl Read for Collect {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Ok(0)
        }
    }
    impl Write for Collect {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    println!("\nfloor: the least user-space work per relayed message with tungstenite and serde_json, in memory");
    println!(
        "  (read and unmask a client's text frame, check UTF-8 and JSON, stamp `from`, frame it for a batched write;"
    );
    println!(
        "   no sockets, executor or routing: a real server's CPU per message is this plus its kernel time and more)"
    );
    for size in [200, 4096] {
        let mut client = WebSocket::from_raw_socket(Collect(Vec::new()), Role::Client, None);
        let mut text = String::new();
        for seq in 0..1024 {
            ServerKind::Intercomd
                .encode(&mut text, "peer-b", seq, 1_700_000_000_000_000_000 + seq, size)
                .expect("fits");
            client.send(Message::text(text.as_str())).expect("into memory");
        }
        let frames = std::mem::take(&mut client.get_mut().0);
        let mut best = f64::INFINITY;
        for _ in 0..FLOOR_REPEATS {
            let mut server = WebSocket::from_raw_socket(Loop { frames: frames.clone(), at: 0 }, Role::Server, None);
            let mut stamped = String::with_capacity(size + 32);
            let started = Instant::now();
            for n in 0..FLOOR_MESSAGES {
                let Ok(Message::Text(text)) = server.read() else { panic!("the floor's frames are text") };
                serde_json::from_str::<serde::de::IgnoredAny>(text.as_str()).expect("the bench's messages are JSON");
                stamped.clear();
                stamped.push_str(r#"{"from":"peer-a","#);
                stamped.push_str(&text.as_str()[1..]);
                server.write(Message::text(stamped.as_str())).expect("into the sink");
                if n % IN_FLIGHT == IN_FLIGHT - 1 {
                    server.flush().expect("into the sink");
                }
            }
            best = best.min(started.elapsed().as_secs_f64() * 1e6 / FLOOR_MESSAGES as f64);
        }
        println!("  {size:>5} B   {best:.3} µs per message (least of {FLOOR_REPEATS} runs of {FLOOR_MESSAGES})");
    }
}

fn relay_section(bench: &Bench, tls: bool) -> Result<(), String> {
    let options = &bench.options;
    let (servers, matchbox_absent) = if tls {
        println!("\nrelay over wss, closed loop: {IN_FLIGHT} messages in flight each way per pair, rooms of two");
        println!("  (intercomd only: matchbox_server has no TLS listener)");
        (vec![ServerKind::Intercomd], "n/a")
    } else {
        println!("\nrelay, closed loop: {IN_FLIGHT} messages in flight each way per pair, rooms of two");
        (options.servers.clone(), "-")
    };
    if tls && !options.servers.contains(&ServerKind::Intercomd) {
        println!("  skipped: intercomd is not among --server");
        return Ok(());
    }
    let mut tables = Vec::new();
    for (pairs, size) in RELAY_ROWS {
        let label = format!("{pairs} pairs, {size} B");
        let sizes = vec![size; pairs];
        let runs = repeat(
            bench,
            &label,
            &servers,
            |server| measure_traffic(bench, server, tls, &sizes, Pacing::ClosedLoop(IN_FLIGHT), WARMUP, options.window),
            describe_traffic,
        )?;
        let cpu_target = if tls { Target::None } else { Target::Ratio(RELAY_CPU_RATIO_TARGET) };
        tables.push((
            label,
            vec![
                runs.figure("server CPU µs per message", 3, cpu_target, |f| f.cpu_us_per_message),
                runs.figure("  of it in the kernel µs", 3, Target::Context, |f| f.kernel_us_per_message),
                runs.figure("messages per second", 0, Target::None, |f| f.messages_per_second),
                runs.figure("latency p50 µs", 0, Target::None, |f| f.p50_us),
                runs.figure("latency p99 µs", 0, Target::None, |f| f.p99_us),
                runs.figure("load generator core %", 0, Target::Context, |f| f.usage.loadgen_percent),
                runs.figure("server core %", 0, Target::Context, |f| f.usage.server_percent),
            ],
        ));
    }
    for (label, figures) in tables {
        print_table(&format!("{}{label}", if tls { "wss, " } else { "" }), &figures, matchbox_absent);
    }
    Ok(())
}

fn rate_section(bench: &Bench) -> Result<(), String> {
    let options = &bench.options;
    println!(
        "\nfixed rate: {FIXED_RATE:.0} messages a second in all over {FIXED_RATE_PAIRS} pairs, {FIXED_RATE_BYTES} B, \
         open loop; latency from the scheduled send time"
    );
    let sizes = vec![FIXED_RATE_BYTES; FIXED_RATE_PAIRS];
    let runs = repeat(
        bench,
        "fixed rate",
        &options.servers,
        |server| measure_traffic(bench, server, false, &sizes, Pacing::FixedRate(FIXED_RATE), WARMUP, options.window),
        describe_traffic,
    )?;
    print_table(
        &format!("{FIXED_RATE:.0} messages a second"),
        &[
            runs.figure("latency p50 µs", 0, Target::None, |f| f.p50_us),
            runs.figure("latency p99 µs", 0, Target::Ratio(RATE_P99_RATIO_TARGET), |f| f.p99_us),
            runs.figure("latency p99.9 µs", 0, Target::None, |f| f.p999_us),
            runs.figure("messages per second", 0, Target::None, |f| f.messages_per_second),
            runs.figure("server CPU µs per message", 3, Target::None, |f| f.cpu_us_per_message),
        ],
        "-",
    );
    Ok(())
}

fn cycles_section(bench: &Bench) -> Result<(), String> {
    let options = &bench.options;
    println!(
        "\nconnect-message-close cycles: {CYCLERS} cyclers, each beside a resident in a room of its own; \
         connect, welcome, one {CYCLE_MESSAGE_BYTES}-byte message to the resident, its arrival, close handshake"
    );
    let runs = repeat(
        bench,
        "cycles",
        &options.servers,
        |server| measure_cycles(bench, server, WARMUP, options.window),
        |f: &CycleFigures| {
            format!(
                "{:.0} cycles/s  {:.1} µs CPU/cycle  ({})",
                f.cycles_per_second,
                f.cpu_us_per_cycle,
                f.usage.describe()
            )
        },
    )?;
    print_table(
        "cycles",
        &[
            runs.figure("cycles per second", 0, Target::None, |f| f.cycles_per_second),
            runs.figure("server CPU µs per cycle", 1, Target::Ratio(CYCLE_CPU_RATIO_TARGET), |f| f.cpu_us_per_cycle),
            runs.figure("  of it in the kernel µs", 1, Target::Context, |f| f.kernel_us_per_cycle),
            runs.figure("load generator core %", 0, Target::Context, |f| f.usage.loadgen_percent),
        ],
        "-",
    );
    Ok(())
}

fn idle_section(bench: &Bench, tls: bool) -> Result<(), String> {
    let options = &bench.options;
    let (servers, matchbox_absent, kib_target) = if tls {
        println!("\nidle over wss: {IDLE_PEERS} peers in rooms of two, held {:?} with liveness on", options.idle_hold);
        println!("  (intercomd only: matchbox_server has no TLS listener)");
        (vec![ServerKind::Intercomd], "n/a", IDLE_TLS_KIB_PER_PEER_TARGET)
    } else {
        println!("\nidle: {IDLE_PEERS} peers in rooms of two, held {:?} with liveness on", options.idle_hold);
        println!(
            "  (intercomd pings sockets silent for 20 s; towards matchbox the clients send KeepAlive every {:?})",
            MATCHBOX_KEEP_ALIVE
        );
        (options.servers.clone(), "-", IDLE_PLAIN_KIB_PER_PEER_TARGET)
    };
    if tls && !options.servers.contains(&ServerKind::Intercomd) {
        println!("  skipped: intercomd is not among --server");
        return Ok(());
    }
    let runs = repeat(
        bench,
        if tls { "idle wss" } else { "idle" },
        &servers,
        |server| measure_idle(bench, server, tls, options.idle_hold),
        |f: &IdleFigures| {
            format!(
                "{:.2} KiB/peer (RSS {} -> {} KiB)  CPU {:.2}% of a core  connected in {:.1} s  pings {}  keep-alives {}",
                f.kib_per_peer,
                f.rss_before / 1024,
                f.rss_after / 1024,
                f.cpu_percent,
                f.connect_secs,
                f.pings,
                f.keep_alives
            )
        },
    )?;
    print_table(
        &format!("{IDLE_PEERS} idle peers{}", if tls { " over wss" } else { "" }),
        &[
            runs.figure("RSS KiB per idle peer", 2, Target::AtMost(kib_target), |f| f.kib_per_peer),
            runs.figure("server CPU % of a core", 2, Target::AtMost(IDLE_CPU_PERCENT_TARGET), |f| f.cpu_percent),
        ],
        matchbox_absent,
    );
    Ok(())
}

fn churn_section(bench: &Bench) -> Result<(), String> {
    let options = &bench.options;
    println!(
        "\nchurn: {CYCLERS} connect-message-close cyclers and {CHURN_PAIRS} pairs relaying {FIXED_RATE:.0} messages \
         a second ({CHURN_SIZES:?} B) for {:?}; RSS every {CHURN_SAMPLE_EVERY:?} (one run per server)",
        options.churn_time
    );
    for &kind in &options.servers {
        println!("  {}:", kind.name());
        let figures = with_server(bench, kind, |server| measure_churn(server, options.churn_time))
            .map_err(|error| format!("churn, {}: {error}", kind.name()))?;
        let samples = &figures.samples_kib;
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        let max = samples.iter().copied().max().unwrap_or(last);
        let drift = 100.0 * (last as f64 - first as f64) / first as f64;
        let target = if kind == ServerKind::Intercomd {
            let ok = drift.abs() <= CHURN_DRIFT_PERCENT_TARGET;
            format!("   target within {CHURN_DRIFT_PERCENT_TARGET}%  {}", if ok { "ok" } else { "MISSED" })
        } else {
            String::new()
        };
        println!(
            "  {}: RSS first {first} KiB, last {last} KiB, max {max} KiB, drift {drift:+.1}%{target}  \
             ({} messages relayed, {} cycles)",
            kind.name(),
            figures.relayed,
            figures.cycles
        );
    }
    Ok(())
}

/// A few seconds against intercomd alone, for CI: one short relay row at
/// each size and a few cycles; fails when anything is lost.
fn smoke(bench: &Bench) -> Result<(), String> {
    const SMOKE_WARMUP: Duration = Duration::from_millis(250);
    const SMOKE_WINDOW: Duration = Duration::from_secs(1);
    const SMOKE_PAIRS: usize = 8;
    println!("smoke: intercomd only, {SMOKE_WINDOW:?} windows");
    for size in [200, 4096] {
        let sizes = vec![size; SMOKE_PAIRS];
        let figures = with_server(bench, ServerKind::Intercomd, |server| {
            measure_traffic(bench, server, false, &sizes, Pacing::ClosedLoop(IN_FLIGHT), SMOKE_WARMUP, SMOKE_WINDOW)
        })
        .map_err(|error| format!("smoke relay, {size} B: {error}"))?;
        println!("  relay {SMOKE_PAIRS} pairs, {size} B: {}", describe_traffic(&figures));
    }
    let figures =
        with_server(bench, ServerKind::Intercomd, |server| measure_cycles(bench, server, SMOKE_WARMUP, SMOKE_WINDOW))
            .map_err(|error| format!("smoke cycles: {error}"))?;
    println!(
        "  cycles: {:.0} cycles/s  {:.1} µs CPU/cycle  ({})",
        figures.cycles_per_second,
        figures.cpu_us_per_cycle,
        figures.usage.describe()
    );
    println!("smoke: nothing lost, duplicated or reordered");
    Ok(())
}
