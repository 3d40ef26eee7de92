//! The command line and its validation.
//!
//! `Flags` is what argh parses; `Config` is what the daemon runs with. Every
//! check that can fail happens here, before anything is bound or started, so
//! a bad value costs the user one line on stderr and exit code 2.
//!
//! `Config` has no `Default` impl on purpose: tests and `main` both build one
//! from flags, so there is exactly one place that knows the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;
use log::LevelFilter;

use crate::http::Url;

/// The STUN servers handed to browsers unless `--stun` or `--no-stun` says
/// otherwise. Browsers on one LAN reach each other through host candidates;
/// STUN only matters when a peer sits behind another NAT (a phone on a guest
/// network), and an unreachable STUN server costs a trickling page nothing.
pub const DEFAULT_STUN_SERVERS: &[&str] = &["stun:stun.l.google.com:19302", "stun:stun.cloudflare.com:3478"];

/// Upper bound for `--max-message-bytes`: tungstenite buffers a whole
/// message before handing it over, so this caps memory per reading peer.
pub const MAX_MESSAGE_BYTES_CEILING: usize = 16 * 1024 * 1024;

/// intercomd: a tiny signaling daemon for LAN intercoms. It serves the caller
/// pages and routes WebRTC signaling messages between browsers by peer id.
#[derive(FromArgs, Debug)]
pub struct Flags {
    /// address of the HTTP and WebSocket listener (default [::]:8080, which
    /// also accepts IPv4)
    #[argh(option, default = "default_listen()")]
    pub listen: SocketAddr,

    /// serve the pages from this directory instead of the copy compiled into
    /// the binary
    #[argh(option)]
    pub www: Option<PathBuf>,

    /// a STUN server URL handed to browsers (repeatable); replaces the
    /// compiled-in list
    #[argh(option)]
    pub stun: Vec<String>,

    /// hand browsers an empty ICE server list (for LANs without internet)
    #[argh(switch)]
    pub no_stun: bool,

    /// most peers connected at once; the next one gets `server-full`
    /// (default 4096)
    #[argh(option, default = "4096")]
    pub max_peers: usize,

    /// most connections open at once from one client address; more are
    /// closed at once (default 64)
    #[argh(option, default = "64")]
    pub max_connections_per_ip: usize,

    /// most rooms with someone in them at once; a peer that would open one
    /// more gets `server-full` (default 4096)
    #[argh(option, default = "4096")]
    pub max_rooms: usize,

    /// most peers in one room; the next one gets `room-full` (default 512)
    #[argh(option, default = "512")]
    pub max_room_peers: usize,

    /// largest WebSocket message accepted, in bytes; a larger one gets
    /// `too-large` and close code 1009 (default 65536)
    #[argh(option, default = "65536")]
    pub max_message_bytes: usize,

    /// messages per second per peer, with a burst of twice that; beyond it
    /// `rate-limited`; 0 turns the limit off (default 200)
    #[argh(option, default = "200")]
    pub max_rate: u32,

    /// seconds a WebSocket may stay silent before the server pings it
    /// (default 20)
    #[argh(option, default = "Duration::from_secs(20)", from_str_fn(parse_seconds))]
    pub ping_interval: Duration,

    /// seconds a pinged WebSocket has to answer before it is closed with
    /// 4009 (default 10)
    #[argh(option, default = "Duration::from_secs(10)", from_str_fn(parse_seconds))]
    pub ping_timeout: Duration,

    /// seconds a peer that dropped off keeps its id and has its messages
    /// held for its return; 0 turns this off (default 10)
    #[argh(option, default = "Duration::from_secs(10)", from_str_fn(parse_seconds))]
    pub reconnect_grace: Duration,

    /// a browser origin allowed to open the WebSocket, like
    /// https://panel.example (repeatable); pages served by this daemon are
    /// always allowed
    #[argh(option)]
    pub allow_origin: Vec<String>,

    /// address of the HTTPS and secure WebSocket listener: the same pages
    /// and API, and the only way phones may use the microphone (default
    /// [::]:8443)
    #[argh(option, default = "default_https_listen()")]
    pub https_listen: SocketAddr,

    /// no HTTPS listener (when a reverse proxy in front does TLS)
    #[argh(switch)]
    pub no_https: bool,

    /// where the call log, the generated certificate authority and the
    /// server certificate are kept (default $STATE_DIRECTORY, which systemd
    /// sets, else ./state)
    #[argh(option)]
    pub state_dir: Option<PathBuf>,

    /// PEM certificate chain to serve instead of the generated one (with
    /// --tls-key)
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert
    #[argh(option)]
    pub tls_key: Option<PathBuf>,

    /// URL path of the PeerJS-compatible endpoint, for apps written with
    /// the PeerJS client (default /peerjs)
    #[argh(option, default = "String::from(\"/peerjs\")")]
    pub peerjs_path: String,

    /// the key PeerJS clients must give (default peerjs)
    #[argh(option, default = "String::from(\"peerjs\")")]
    pub peerjs_key: String,

    /// let PeerJS clients list the ids connected through the PeerJS
    /// endpoint (GET <peerjs-path>/<key>/peers)
    #[argh(switch)]
    pub peerjs_discovery: bool,

    /// POST every event's JSON to this http URL, e.g. a Home Assistant
    /// webhook trigger http://ha:8123/api/webhook/ID (repeatable;
    /// user:password@ in the URL becomes Basic auth)
    #[argh(option)]
    pub webhook: Vec<String>,

    /// push a notification to this ntfy topic URL on each ring, e.g.
    /// http://ntfy.lan/door (http only)
    #[argh(option)]
    pub ntfy: Option<String>,

    /// file holding the ntfy access token (sent as Bearer); the
    /// environment variable INTERCOMD_NTFY_TOKEN works too
    #[argh(option)]
    pub ntfy_token_file: Option<PathBuf>,

    /// the address phones open the pages at, for the ntfy notification's
    /// link (default https://<first LAN IPv4 address>:<https port>/)
    #[argh(option)]
    pub public_url: Option<String>,
    /// publish events to this MQTT broker, with Home Assistant discovery:
    /// mqtt://[user[:password]@]host[:port] (port 1883 unless given)
    #[argh(option)]
    pub mqtt: Option<String>,

    /// file holding the MQTT password (wins over $INTERCOMD_MQTT_PASSWORD,
    /// which wins over a password in the --mqtt URL)
    #[argh(option)]
    pub mqtt_password_file: Option<PathBuf>,

    /// topic prefix of the MQTT messages (default intercomd)
    #[argh(option, default = "String::from(\"intercomd\")")]
    pub mqtt_prefix: String,

    /// topic prefix Home Assistant reads discovery from (default
    /// homeassistant)
    #[argh(option, default = "String::from(\"homeassistant\")")]
    pub mqtt_discovery_prefix: String,

    /// open door station ID's door with COMMAND, run without a shell
    /// (words split on spaces) within --door-open-timeout, e.g.
    /// door='gpioset --mode=time --sec=3 gpiochip0 17=1' (repeatable, one
    /// per station)
    #[argh(option)]
    pub door_open: Vec<String>,

    /// file holding the PIN that opens the door from a call (its first line,
    /// 4 to 32 characters); the environment variable INTERCOMD_DOOR_PIN
    /// works too
    #[argh(option)]
    pub door_pin_file: Option<PathBuf>,

    /// file of device keys that open the door from a call without the PIN,
    /// one "NAME KEY" per line (KEY: 16 to 128 characters)
    #[argh(option)]
    pub door_keys_file: Option<PathBuf>,

    /// let whoever answered the door open it without a PIN or a device key
    /// (anyone on the LAN can answer a room-wide ring: a warning at every
    /// start)
    #[argh(switch)]
    pub door_open_without_pin: bool,

    /// seconds a door-open command may run before it is killed (default 10)
    #[argh(option, default = "DEFAULT_DOOR_OPEN_TIMEOUT", from_str_fn(parse_seconds))]
    pub door_open_timeout: Duration,

    /// open a door when "OPEN" is published to <prefix>/door/<id>/open
    /// (needs --mqtt and --door-open; whoever may publish to the broker can
    /// then open the door)
    #[argh(switch)]
    pub mqtt_door_open: bool,

    /// keep no pictures of visitors: a ring carries none, and
    /// POST /api/snapshots answers 404
    #[argh(switch)]
    pub no_snapshots: bool,

    /// most pictures of visitors kept in --state-dir; the oldest go first
    /// (default 200)
    #[argh(option, default = "crate::snapshots::DEFAULT_MAX_COUNT")]
    pub max_snapshots: usize,

    /// most bytes of pictures of visitors kept (default 20971520, 20 MiB)
    #[argh(option, default = "crate::snapshots::DEFAULT_MAX_BYTES")]
    pub max_snapshot_bytes: u64,

    /// log level: error, warn, info, debug or trace (default info)
    #[argh(option, default = "LevelFilter::Info", from_str_fn(parse_level))]
    pub log_level: LevelFilter,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0u16; 8], 8080))
}

fn default_https_listen() -> SocketAddr {
    SocketAddr::from(([0u16; 8], 8443))
}

/// systemd's `StateDirectory=` sets `$STATE_DIRECTORY` (a colon-separated
/// list when the unit names several; ours names one).
fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| std::env::split_paths(&dirs).next())
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("state"))
}

/// Whole or fractional seconds: `10`, `0.5`.
fn parse_seconds(value: &str) -> Result<Duration, String> {
    let seconds: f64 = value.parse().map_err(|_| "expected a number of seconds, like 10 or 0.5".to_string())?;
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err("expected between 0 and 86400 seconds".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_level(value: &str) -> Result<LevelFilter, String> {
    match value.to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::Error),
        "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err("expected one of error, warn, info, debug, trace".into()),
    }
}

/// Everything the daemon needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the HTTP + WebSocket listener binds (`main` binds it; tests bind
    /// their own `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// `Some(dir)` serves pages from disk; `None` serves the embedded copy.
    pub www: Option<PathBuf>,
    /// STUN URLs for `/api/ice-servers` and the welcome message; empty with
    /// `--no-stun`.
    pub stun_servers: Vec<String>,
    pub max_peers: usize,
    pub max_connections_per_ip: usize,
    pub max_rooms: usize,
    pub max_room_peers: usize,
    pub max_message_bytes: usize,
    /// Messages per second per peer; 0 means unlimited.
    pub max_rate: u32,
    /// Silence after which a socket is pinged.
    pub ping_interval: Duration,
    /// Time a pinged socket has to show it is alive.
    pub ping_timeout: Duration,
    /// Time a peer that dropped off keeps its id and messages.
    pub reconnect_grace: Duration,
    /// Extra origins (scheme://host[:port], lower case) allowed to open the
    /// WebSocket besides the daemon's own.
    pub allowed_origins: Vec<String>,
    /// The HTTPS listener; `None` with `--no-https`.
    pub https: Option<Https>,
    /// Where the call log is kept (and, with a generated certificate, the
    /// certificate authority).
    pub state_dir: PathBuf,
    pub peerjs: PeerJs,
    /// Webhooks and ntfy: where events are pushed.
    pub hooks: Hooks,
    /// The MQTT broker events go to (`--mqtt`); `None`: no connection, no
    /// timer.
    pub mqtt: Option<Mqtt>,
    /// Where and how many pictures of visitors are kept; `None` with
    /// `--no-snapshots`.
    pub snapshots: Option<SnapshotLimits>,
    /// `None` without `--door-open`.
    pub doors: Option<Doors>,
    pub log_level: LevelFilter,
}

/// The PeerJS-compatible endpoint.
#[derive(Debug, Clone)]
pub struct PeerJs {
    /// Without a trailing slash: `/peerjs`, or empty for `--peerjs-path /`.
    pub path: String,
    pub key: String,
    pub discovery: bool,
}

/// The HTTPS listener and the certificate it presents.
#[derive(Debug, Clone)]
pub struct Https {
    pub listen: SocketAddr,
    pub certificate: CertificateSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CertificateSource {
    /// Made and renewed by the daemon's own local certificate authority,
    /// kept in this directory.
    Generated { state_dir: PathBuf },
    /// The user's own certificate chain and key (PEM files).
    Files { cert: PathBuf, key: PathBuf },
}

/// Where events are pushed (`webhook.rs`): nothing at all by default.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// `--webhook`: every event's JSON is POSTed to each.
    pub webhooks: Vec<Url>,
    pub ntfy: Option<Ntfy>,
    /// `--public-url`: the link in a notification; `None` derives one.
    pub public_url: Option<Url>,
}

/// `--ntfy`: the server root to POST to, and the topic.
#[derive(Debug, Clone)]
pub struct Ntfy {
    /// The topic URL with its last path segment taken off: `http://ntfy.lan/`.
    pub server: Url,
    pub topic: String,
    /// From `--ntfy-token-file` or `INTERCOMD_NTFY_TOKEN`.
    pub token: Option<Secret>,
}

/// A credential: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A webhook or ntfy URL: http only (an https client would cost more
/// binary than the whole events feature may; see `webhook.rs`).
fn target_url(flag: &str, text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|why| format!("error: {flag} {}: {why}", redact(text)))?;
    if url.https {
        return Err(format!(
            "error: {flag} {url}: https is not supported for webhooks and ntfy; use http:// (on the LAN, or through a local proxy)"
        ));
    }
    Ok(url)
}

fn validate_hooks(flags: &Flags, env_token: Option<String>) -> Result<Hooks, String> {
    let mut webhooks = Vec::new();
    for url in &flags.webhook {
        webhooks.push(target_url("--webhook", url)?);
    }
    let ntfy = match &flags.ntfy {
        None if flags.ntfy_token_file.is_some() => return Err("error: --ntfy-token-file needs --ntfy".into()),
        None => None,
        Some(text) => {
            let url = target_url("--ntfy", text)?;
            let (root, topic) = url.target.rsplit_once('/').unwrap_or_default();
            // ntfy's own rule for topic names.
            let valid = (1..=64).contains(&topic.len())
                && topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
            if !valid {
                return Err(format!(
                    "error: --ntfy {url}: must end in a topic (1-64 of A-Z a-z 0-9 - _), like http://ntfy.lan/door"
                ));
            }
            let token = match &flags.ntfy_token_file {
                Some(path) => Some(read_secret_file("--ntfy-token-file", path)?),
                None => env_token,
            };
            let token = token.map(|token| token.trim().to_string()).filter(|token| !token.is_empty());
            if token.as_ref().is_some_and(|token| !token.bytes().all(|b| b.is_ascii_graphic())) {
                return Err("error: the ntfy token must be printable ASCII without spaces".into());
            }
            if token.is_some() && url.userinfo.is_some() {
                return Err("error: --ntfy: give user:password in the URL or a token, not both".into());
            }
            let server = Url { target: format!("{root}/"), ..url.clone() };
            Some(Ntfy { server, topic: topic.to_string(), token: token.map(Secret) })
        }
    };
    let public_url = match &flags.public_url {
        Some(text) => Some(Url::parse(text).map_err(|why| format!("error: --public-url {}: {why}", redact(text)))?),
        None => None,
    };
    Ok(Hooks { webhooks, ntfy, public_url })
}

/// A URL as given on the command line, with any `user:password@` replaced,
/// for error messages (which end up in the journal).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://…@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl Config {
    /// Parse and validate a command line (without the program name).
    /// `Err` carries the text to print and the exit code: 0 for `--help`,
    /// 2 for anything wrong.
    pub fn from_args(args: &[&str]) -> Result<Config, (String, i32)> {
        let flags = Flags::from_args(&["intercomd"], args).map_err(|exit| match exit.status {
            Ok(()) => (exit.output, 0),
            Err(()) => (first_line(&exit.output), 2),
        })?;
        Config::from_flags(flags).map_err(|message| (message, 2))
    }

    pub fn from_flags(flags: Flags) -> Result<Config, String> {
        if flags.no_stun && !flags.stun.is_empty() {
            return Err("error: --stun and --no-stun contradict each other".into());
        }
        for url in &flags.stun {
            validate_stun_url(url).map_err(|why| format!("error: --stun {url:?}: {why}"))?;
        }
        if flags.max_peers == 0 {
            return Err("error: --max-peers must be at least 1".into());
        }
        if flags.ping_interval < Duration::from_millis(100) || flags.ping_timeout < Duration::from_millis(100) {
            return Err("error: --ping-interval and --ping-timeout must be at least 0.1 seconds".into());
        }
        if flags.max_connections_per_ip == 0 {
            return Err("error: --max-connections-per-ip must be at least 1".into());
        }
        if flags.max_rooms == 0 {
            return Err("error: --max-rooms must be at least 1".into());
        }
        if flags.max_room_peers == 0 {
            return Err("error: --max-room-peers must be at least 1".into());
        }
        if flags.max_message_bytes < 1024 || flags.max_message_bytes > MAX_MESSAGE_BYTES_CEILING {
            return Err(format!("error: --max-message-bytes must be between 1024 and {MAX_MESSAGE_BYTES_CEILING}"));
        }
        let mut allowed_origins = Vec::new();
        for origin in &flags.allow_origin {
            allowed_origins
                .push(normalize_origin(origin).map_err(|why| format!("error: --allow-origin {origin:?}: {why}"))?);
        }
        if let Some(dir) = &flags.www {
            if !dir.is_dir() {
                return Err(format!("error: --www {}: not a directory", dir.display()));
            }
        }
        let hooks = validate_hooks(&flags, std::env::var("INTERCOMD_NTFY_TOKEN").ok())?;
        let doors = validate_doors(&flags, std::env::var("INTERCOMD_DOOR_PIN").ok())?;
        let state_dir = flags.state_dir.unwrap_or_else(default_state_dir);
        let https = match (flags.no_https, flags.tls_cert, flags.tls_key) {
            (true, None, None) => None,
            (true, ..) => return Err("error: --no-https contradicts --tls-cert and --tls-key".into()),
            (false, Some(cert), Some(key)) => {
                Some(Https { listen: flags.https_listen, certificate: CertificateSource::Files { cert, key } })
            }
            (false, None, None) => Some(Https {
                listen: flags.https_listen,
                certificate: CertificateSource::Generated { state_dir: state_dir.clone() },
            }),
            (false, Some(_), None) => return Err("error: --tls-cert needs --tls-key".into()),
            (false, None, Some(_)) => return Err("error: --tls-key needs --tls-cert".into()),
        };
        if let Some(https) = &https {
            if https.listen == flags.listen && https.listen.port() != 0 {
                return Err(format!("error: --https-listen {} is the same address as --listen", https.listen));
            }
        }
        let peerjs = PeerJs {
            path: normalize_peerjs_path(&flags.peerjs_path)
                .map_err(|why| format!("error: --peerjs-path {:?}: {why}", flags.peerjs_path))?,
            key: flags.peerjs_key,
            discovery: flags.peerjs_discovery,
        };
        if !crate::protocol::is_valid_name(&peerjs.key) {
            return Err(format!("error: --peerjs-key {:?}: 1 to 64 characters of A-Z a-z 0-9 . _ ~ -", peerjs.key));
        }
        let mqtt = match &flags.mqtt {
            Some(url) => {
                let file = match &flags.mqtt_password_file {
                    Some(path) => Some(read_secret_file("--mqtt-password-file", path)?),
                    None => None,
                };
                let env = std::env::var("INTERCOMD_MQTT_PASSWORD").ok().filter(|password| !password.is_empty());
                Some(Mqtt::new(url, file.or(env), &flags.mqtt_prefix, &flags.mqtt_discovery_prefix)?)
            }
            None if flags.mqtt_password_file.is_some() => {
                return Err("error: --mqtt-password-file needs --mqtt".into());
            }
            None => None,
        };
        let snapshots = match flags.no_snapshots {
            true => None,
            false if flags.max_snapshots == 0 => {
                return Err("error: --max-snapshots 0: use --no-snapshots to keep no pictures".into())
            }
            false if flags.max_snapshot_bytes < crate::jpeg::MAX_BYTES as u64 => {
                return Err(format!(
                    "error: --max-snapshot-bytes must be at least {} (one picture)",
                    crate::jpeg::MAX_BYTES
                ))
            }
            false => Some(SnapshotLimits { max_count: flags.max_snapshots, max_bytes: flags.max_snapshot_bytes }),
        };
        let stun_servers = if flags.no_stun {
            Vec::new()
        } else if flags.stun.is_empty() {
            DEFAULT_STUN_SERVERS.iter().map(|url| url.to_string()).collect()
        } else {
            flags.stun
        };
        Ok(Config {
            listen: flags.listen,
            www: flags.www,
            stun_servers,
            state_dir,
            max_peers: flags.max_peers,
            max_connections_per_ip: flags.max_connections_per_ip,
            max_rooms: flags.max_rooms,
            max_room_peers: flags.max_room_peers,
            max_message_bytes: flags.max_message_bytes,
            max_rate: flags.max_rate,
            ping_interval: flags.ping_interval,
            ping_timeout: flags.ping_timeout,
            reconnect_grace: flags.reconnect_grace,
            allowed_origins,
            https,
            peerjs,
            hooks,
            mqtt,
            snapshots,
            doors,
            log_level: flags.log_level,
        })
    }
}

/// `--door-open` and its proofs: who may open which door with what.
#[derive(Debug, Clone)]
pub struct Doors {
    /// (door station id, the command's words), in the order given.
    pub stations: Vec<(String, Vec<String>)>,
    /// From `--door-pin-file`.
    pub pin: Option<Secret>,
    /// From `--door-keys-file`: (name, key).
    pub keys: Vec<(String, Secret)>,
    /// `--door-open-without-pin`.
    pub without_proof: bool,
    /// `--door-open-timeout`.
    pub timeout: Duration,
    /// `--mqtt-door-open`.
    pub mqtt: bool,
}

/// The default of `--door-open-timeout`: a relay pulse of a few seconds,
/// with room to spare.
pub const DEFAULT_DOOR_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// PINs: long enough to be more than a guess, short enough to type.
pub const DOOR_PIN_LEN: std::ops::RangeInclusive<usize> = 4..=32;
/// Device keys: made by a machine, long enough that trying is hopeless.
pub const DOOR_KEY_LEN: std::ops::RangeInclusive<usize> = 16..=128;
/// Device keys in `--door-keys-file`.
pub const MAX_DOOR_KEYS: usize = 64;

fn validate_doors(flags: &Flags, env_pin: Option<String>) -> Result<Option<Doors>, String> {
    if flags.door_open.is_empty() {
        let strays = [
            ("--door-pin-file", flags.door_pin_file.is_some()),
            ("--door-keys-file", flags.door_keys_file.is_some()),
            ("--door-open-without-pin", flags.door_open_without_pin),
            ("--mqtt-door-open", flags.mqtt_door_open),
        ];
        return match strays.iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(format!("error: {flag} needs --door-open")),
            None => Ok(None),
        };
    }
    let mut stations: Vec<(String, Vec<String>)> = Vec::new();
    for given in &flags.door_open {
        let Some((id, command)) = given.split_once('=') else {
            return Err(format!("error: --door-open {given:?}: expected ID=COMMAND, e.g. door='gpioset ...'"));
        };
        if !crate::protocol::is_valid_name(id) {
            return Err(format!(
                "error: --door-open {id:?}: a door station id: 1 to 64 characters of A-Z a-z 0-9 . _ ~ -"
            ));
        }
        let words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
        let Some(program) = words.first() else {
            return Err(format!("error: --door-open {id}: the command is empty"));
        };
        if !program_exists(program) {
            return Err(format!(
                "error: --door-open {id}: {program}: no such program (give its full path, or install it)"
            ));
        }
        if stations.iter().any(|(known, _)| known == id) {
            return Err(format!("error: --door-open {id}: given twice"));
        }
        stations.push((id.to_string(), words));
    }
    // The file wins over $INTERCOMD_DOOR_PIN (which /etc/default/intercomd,
    // root's alone, can hold for the service).
    let (pin, source) = match &flags.door_pin_file {
        Some(path) => (Some(read_secret_file("--door-pin-file", path)?), format!("--door-pin-file {}", path.display())),
        None => (env_pin.filter(|pin| !pin.is_empty()), "INTERCOMD_DOOR_PIN".to_string()),
    };
    let pin = match pin.map(|pin| pin.trim().to_string()) {
        Some(pin) if !DOOR_PIN_LEN.contains(&pin.chars().count()) || pin.chars().any(char::is_whitespace) => {
            return Err(format!("error: {source}: the PIN must be 4 to 32 characters without spaces"));
        }
        pin => pin.map(Secret),
    };
    let keys = match &flags.door_keys_file {
        Some(path) => read_door_keys(path)?,
        None => Vec::new(),
    };
    if pin.is_none() && keys.is_empty() && !flags.door_open_without_pin {
        return Err("error: --door-open needs --door-pin-file (or $INTERCOMD_DOOR_PIN) or --door-keys-file (or, knowing the risk, --door-open-without-pin)".into());
    }
    if flags.door_open_without_pin && (pin.is_some() || !keys.is_empty()) {
        return Err("error: --door-open-without-pin contradicts --door-pin-file and --door-keys-file".into());
    }
    if flags.mqtt_door_open && flags.mqtt.is_none() {
        return Err("error: --mqtt-door-open needs --mqtt".into());
    }
    if flags.door_open_timeout < Duration::from_millis(100) {
        return Err("error: --door-open-timeout must be at least 0.1 seconds".into());
    }
    Ok(Some(Doors {
        stations,
        pin,
        keys,
        without_proof: flags.door_open_without_pin,
        timeout: flags.door_open_timeout,
        mqtt: flags.mqtt_door_open,
    }))
}

/// `NAME KEY` per line; blank lines and `#` comments are skipped.
fn read_door_keys(path: &std::path::Path) -> Result<Vec<(String, Secret)>, String> {
    let flag = "--door-keys-file";
    let text = std::fs::read_to_string(path).map_err(|error| format!("error: {flag} {}: {error}", path.display()))?;
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("error: {flag} {} line {}", path.display(), number + 1);
        let mut words = line.split_whitespace();
        let (Some(name), Some(key), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("{}: expected NAME KEY", at()));
        };
        if !crate::protocol::is_valid_name(name) {
            return Err(format!("{}: the name: 1 to 64 characters of A-Z a-z 0-9 . _ ~ -", at()));
        }
        if !DOOR_KEY_LEN.contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("{}: the key must be 16 to 128 printable characters", at()));
        }
        if keys.iter().any(|(known, _): &(String, Secret)| known == name) {
            return Err(format!("{}: the name {name} is given twice", at()));
        }
        keys.push((name.to_string(), Secret(key.to_string())));
    }
    if keys.is_empty() {
        return Err(format!("error: {flag} {}: no keys", path.display()));
    }
    if keys.len() > MAX_DOOR_KEYS {
        return Err(format!("error: {flag} {}: more than {MAX_DOOR_KEYS} keys", path.display()));
    }
    Ok(keys)
}

/// Whether `program` can be run: a path to a file, or a name found in `$PATH`.
fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

/// `--max-snapshots` and `--max-snapshot-bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotLimits {
    pub max_count: usize,
    pub max_bytes: u64,
}

/// The MQTT broker and the topics (`--mqtt` and the flags after it).
#[derive(Clone, PartialEq)]
pub struct Mqtt {
    /// A name or an address (IPv6 without its brackets).
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    /// From `--mqtt-password-file`, else `$INTERCOMD_MQTT_PASSWORD`, else
    /// the URL. Never logged: `Debug` hides it, and log lines name the
    /// broker by `target()`.
    pub password: Option<String>,
    /// `--mqtt-prefix`: `<prefix>/events`, `<prefix>/status`, ...
    pub prefix: String,
    /// `--mqtt-discovery-prefix`: Home Assistant's discovery topics.
    pub discovery_prefix: String,
}

impl Mqtt {
    /// Parse `mqtt://[user[:password]@]host[:port]`; `password`, when
    /// given, replaces the URL's.
    pub fn new(url: &str, password: Option<String>, prefix: &str, discovery_prefix: &str) -> Result<Mqtt, String> {
        let MqttUrl { host, port, user, password: url_password } = parse_mqtt_url(url).map_err(|why| {
            // The URL may hold a password: name it only without one.
            format!("error: --mqtt: {why}")
        })?;
        let password = password.or(url_password);
        if password.is_some() && user.is_none() {
            return Err("error: --mqtt: a password needs a user name (mqtt://user@host)".into());
        }
        for (flag, topic) in [("--mqtt-prefix", prefix), ("--mqtt-discovery-prefix", discovery_prefix)] {
            validate_topic_prefix(topic).map_err(|why| format!("error: {flag} {topic:?}: {why}"))?;
        }
        Ok(Mqtt {
            host,
            port,
            user,
            password,
            prefix: prefix.to_string(),
            discovery_prefix: discovery_prefix.to_string(),
        })
    }

    /// `host:port` (`[::1]:1883`), without credentials: what logs and
    /// `/metrics` show.
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Debug for Mqtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mqtt")
            .field("target", &self.target())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .field("prefix", &self.prefix)
            .field("discovery_prefix", &self.discovery_prefix)
            .finish()
    }
}

/// The default port of MQTT without TLS.
pub const MQTT_DEFAULT_PORT: u16 = 1883;

/// The parts of an `mqtt://` URL.
struct MqttUrl {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
}

/// `mqtt://[user[:password]@]host[:port][/]`; user and password may be
/// percent-encoded. The authority is read as for http (`Url`).
fn parse_mqtt_url(url: &str) -> Result<MqttUrl, &'static str> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mqtt") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("mqtts") => {
            return Err("mqtts:// (TLS) is not supported; use mqtt:// on the LAN")
        }
        _ => return Err("must look like mqtt://[user[:password]@]host[:port]"),
    };
    let Url { host, port, target, userinfo, .. } = Url::parse_after_scheme(rest, false, MQTT_DEFAULT_PORT)?;
    if target != "/" {
        return Err("must be mqtt://[user[:password]@]host[:port], without a path");
    }
    let decode =
        |text: &str| crate::http::percent_decode(text, false).ok_or("bad percent-encoding in the user or password");
    let (user, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(decode(password)?)),
                None => (userinfo.as_str(), None),
            };
            if user.is_empty() {
                return Err("the user name before @ is empty");
            }
            (Some(decode(user)?), password.filter(|password| !password.is_empty()))
        }
    };
    Ok(MqttUrl { host, port, user, password })
}

/// The first line of the secret file `path` given with `flag`, without its
/// line ending: a file as `echo secret > file` writes it. Empty is an error.
fn read_secret_file(flag: &str, path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("error: {flag} {}: {error}", path.display()))?;
    let secret = text.lines().next().unwrap_or_default().to_string();
    if secret.is_empty() {
        return Err(format!("error: {flag} {}: empty", path.display()));
    }
    Ok(secret)
}

/// A topic prefix: 1 to 128 characters, no wildcards, no empty levels at
/// either end (`a/b` is fine, `/a` or `a/` or `a/+` is not).
fn validate_topic_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() || prefix.len() > 128 {
        return Err("1 to 128 characters");
    }
    if prefix.contains(['+', '#']) || prefix.chars().any(char::is_control) {
        return Err("must not contain + # or control characters");
    }
    if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        return Err("must not start or end with / or have an empty level");
    }
    Ok(())
}

/// `/peerjs/` -> `/peerjs`; `/` -> `` (PeerJS' own default). Letters,
/// digits and `. _ ~ - /`; not under `/api/` and not `/ws`, which are ours.
fn normalize_peerjs_path(path: &str) -> Result<String, &'static str> {
    if !path.starts_with('/') {
        return Err("must start with /");
    }
    if !path.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-' | b'/')) {
        return Err("letters, digits and . _ ~ - / only");
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed == "/ws" || trimmed == "/api" || trimmed.starts_with("/api/") || trimmed.contains("//") {
        return Err("must not be /ws or under /api/");
    }
    Ok(trimmed.to_string())
}

fn first_line(text: &str) -> String {
    text.lines().find(|line| !line.trim().is_empty()).unwrap_or("error: bad command line").trim().to_string()
}

fn validate_stun_url(url: &str) -> Result<(), &'static str> {
    let rest =
        url.strip_prefix("stun:").or_else(|| url.strip_prefix("stuns:")).ok_or("must start with stun: or stuns:")?;
    if rest.is_empty() || rest.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') {
        return Err("needs a host, like stun:stun.example.org:3478");
    }
    Ok(())
}

/// `https://Panel.Example:443/` -> `https://panel.example:443`: origins are
/// compared as the browser sends them (no path, lower-case scheme and host).
fn normalize_origin(origin: &str) -> Result<String, &'static str> {
    let trimmed = origin.trim_end_matches('/');
    let (scheme, host) = trimmed.split_once("://").ok_or("must look like https://host[:port]")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") {
        return Err("scheme must be http or https");
    }
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err("must look like https://host[:port], without a path");
    }
    Ok(format!("{}://{}", scheme, host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], expected: Result<(), &str>) {
        match (Config::from_args(args), expected) {
            (Ok(_), Ok(())) => {}
            (Err((message, code)), Err(want)) => {
                assert_eq!(code, 2, "{args:?}");
                assert!(message.contains(want), "{args:?}: {message:?} should mention {want:?}");
                assert_eq!(message.lines().count(), 1, "one line: {message:?}");
            }
            (got, want) => panic!("{args:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn defaults_serve_a_working_intercom() {
        let config = Config::from_args(&[]).unwrap();
        assert_eq!(config.listen.to_string(), "[::]:8080");
        assert_eq!(config.stun_servers.len(), DEFAULT_STUN_SERVERS.len());
        assert_eq!(config.max_peers, 4096);
        assert_eq!(config.max_message_bytes, 65536);
        assert_eq!(config.max_rate, 200);
        assert!(config.www.is_none());
    }

    #[test]
    fn flags_are_checked() {
        check(&["--listen", "127.0.0.1:0"], Ok(()));
        check(&["--listen", "nowhere"], Err("--listen"));
        check(&["--max-peers", "0"], Err("--max-peers"));
        check(&["--max-peers", "many"], Err("--max-peers"));
        check(&["--max-message-bytes", "10"], Err("--max-message-bytes"));
        check(&["--max-rooms", "0"], Err("--max-rooms"));
        check(&["--max-connections-per-ip", "0"], Err("--max-connections-per-ip"));
        check(&["--max-room-peers", "0"], Err("--max-room-peers"));
        check(&["--max-rooms", "1", "--max-room-peers", "2"], Ok(()));
        check(&["--max-rate", "-1"], Err("--max-rate"));
        check(&["--stun", "stun:a.example:3478", "--stun", "stuns:b.example"], Ok(()));
        check(&["--stun", "http://a.example"], Err("--stun"));
        check(&["--stun", "stun:a.example", "--no-stun"], Err("--no-stun"));
        check(&["--allow-origin", "https://Panel.Example/"], Ok(()));
        check(&["--allow-origin", "panel.example"], Err("--allow-origin"));
        check(&["--log-level", "loud"], Err("--log-level"));
        check(&["--ping-interval", "0.5", "--ping-timeout", "1", "--reconnect-grace", "0"], Ok(()));
        check(&["--ping-interval", "soon"], Err("--ping-interval"));
        check(&["--ping-timeout", "0"], Err("--ping-timeout"));
        check(&["--reconnect-grace", "-1"], Err("--reconnect-grace"));
        check(&["--www", "/definitely/not/here"], Err("--www"));
        check(&["--frobnicate"], Err("--frobnicate"));
        check(&["--https-listen", "nowhere"], Err("--https-listen"));
        check(&["--peerjs-path", "peerjs"], Err("--peerjs-path"));
        check(&["--peerjs-path", "/api/peerjs"], Err("--peerjs-path"));
        check(&["--peerjs-path", "/p?x"], Err("--peerjs-path"));
        check(&["--peerjs-path", "/apps/peer/", "--peerjs-key", "k-1", "--peerjs-discovery"], Ok(()));
        check(&["--peerjs-key", "a key"], Err("--peerjs-key"));
        check(&["--tls-cert", "a.pem"], Err("--tls-cert needs --tls-key"));
        check(&["--tls-key", "a.key"], Err("--tls-key needs --tls-cert"));
        check(&["--no-https", "--tls-cert", "a.pem", "--tls-key", "a.key"], Err("--no-https"));
        check(&["--listen", "127.0.0.1:9000", "--https-listen", "127.0.0.1:9000"], Err("--https-listen"));
    }

    #[test]
    fn https_is_on_by_default_with_a_generated_certificate() {
        let config = Config::from_args(&[]).unwrap();
        let https = config.https.expect("HTTPS on by default");
        assert_eq!(https.listen.to_string(), "[::]:8443");
        assert!(matches!(https.certificate, CertificateSource::Generated { .. }));
        let config = Config::from_args(&["--tls-cert", "a.pem", "--tls-key", "a.key", "--state-dir", "/x"]).unwrap();
        assert_eq!(
            config.https.unwrap().certificate,
            CertificateSource::Files { cert: "a.pem".into(), key: "a.key".into() }
        );
        assert!(Config::from_args(&["--no-https"]).unwrap().https.is_none());
    }

    #[test]
    fn origins_are_normalized() {
        let config = Config::from_args(&["--allow-origin", "HTTPS://Panel.Example:8443/"]).unwrap();
        assert_eq!(config.allowed_origins, ["https://panel.example:8443"]);
    }

    fn mqtt(args: &[&str]) -> Mqtt {
        let mut all = vec!["--mqtt"];
        all.extend_from_slice(args);
        Config::from_args(&all).unwrap().mqtt.unwrap()
    }

    #[test]
    fn mqtt_urls_are_parsed() {
        let plain = mqtt(&["mqtt://broker.lan"]);
        assert_eq!((plain.host.as_str(), plain.port, &plain.user, &plain.password), ("broker.lan", 1883, &None, &None));
        assert_eq!((plain.prefix.as_str(), plain.discovery_prefix.as_str()), ("intercomd", "homeassistant"));
        let full = mqtt(&["MQTT://ha%40home:p%3Ass@192.168.1.2:11883/"]);
        assert_eq!(full.target(), "192.168.1.2:11883");
        assert_eq!((full.user.as_deref(), full.password.as_deref()), (Some("ha@home"), Some("p:ss")));
        let v6 = mqtt(&["mqtt://u@[fd00::2]:1884", "--mqtt-prefix", "house/intercom"]);
        assert_eq!((v6.host.as_str(), v6.target().as_str(), v6.password), ("fd00::2", "[fd00::2]:1884", None));
        assert_eq!(v6.prefix, "house/intercom");
        assert_eq!(mqtt(&["mqtt://[::1]"]).target(), "[::1]:1883");
        assert!(!format!("{full:?}").contains("p:ss"), "Debug hides the password: {full:?}");
    }

    #[test]
    fn bad_mqtt_flags_are_refused() {
        check(&["--mqtt", "broker.lan"], Err("--mqtt"));
        check(&["--mqtt", "http://broker.lan"], Err("--mqtt"));
        check(&["--mqtt", "mqtts://broker.lan"], Err("TLS"));
        check(&["--mqtt", "mqtt://"], Err("needs a host"));
        check(&["--mqtt", "mqtt://:1883"], Err("needs a host"));
        check(&["--mqtt", "mqtt://broker:0"], Err("port"));
        check(&["--mqtt", "mqtt://broker:99999"], Err("port"));
        check(&["--mqtt", "mqtt://broker:x"], Err("port"));
        check(&["--mqtt", "mqtt://broker/topic"], Err("path"));
        check(&["--mqtt", "mqtt://fd00::2"], Err("brackets"));
        check(&["--mqtt", "mqtt://[fd00::2"], Err("]"));
        check(&["--mqtt", "mqtt://@broker"], Err("user"));
        check(&["--mqtt", "mqtt://:secret@broker"], Err("user"));
        check(&["--mqtt", "mqtt://u:%zz@broker"], Err("percent"));
        check(&["--mqtt", "mqtt://b", "--mqtt-prefix", "a/#"], Err("--mqtt-prefix"));
        check(&["--mqtt", "mqtt://b", "--mqtt-prefix", "/a"], Err("--mqtt-prefix"));
        check(&["--mqtt", "mqtt://b", "--mqtt-discovery-prefix", ""], Err("--mqtt-discovery-prefix"));
        check(&["--mqtt-password-file", "/etc/hostname"], Err("needs --mqtt"));
        check(&["--mqtt", "mqtt://u@b", "--mqtt-password-file", "/definitely/not/here"], Err("--mqtt-password-file"));
    }

    #[test]
    fn an_mqtt_error_never_shows_the_password() {
        let (message, _) = Config::from_args(&["--mqtt", "mqtt://u:hunter2@b:x"]).unwrap_err();
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn the_password_file_wins_over_the_url() {
        let path = std::env::temp_dir().join(format!("intercomd-mqtt-password-{}", std::process::id()));
        std::fs::write(&path, "from-file\n").unwrap();
        let mqtt = mqtt(&["mqtt://u:from-url@b", "--mqtt-password-file", path.to_str().unwrap()]);
        assert_eq!(mqtt.password.as_deref(), Some("from-file"));
        std::fs::remove_file(&path).unwrap();
        // (The environment's password is read by `from_flags` the same way,
        // between the two; `Mqtt::new` takes whichever won.)
        let mqtt = Mqtt::new("mqtt://u:from-url@b", Some("from-env".into()), "p", "d").unwrap();
        assert_eq!(mqtt.password.as_deref(), Some("from-env"));
        assert!(Mqtt::new("mqtt://b", Some("from-env".into()), "p", "d").is_err(), "a password needs a user");
    }

    #[test]
    fn no_stun_empties_the_list() {
        assert!(Config::from_args(&["--no-stun"]).unwrap().stun_servers.is_empty());
    }
    #[test]
    fn webhook_and_ntfy_flags_are_checked() {
        check(&["--webhook", "http://ha:8123/api/webhook/door", "--webhook", "http://u:p@nodered.lan/hook"], Ok(()));
        check(&["--webhook", "https://u:p@nodered.lan/hook"], Err("https is not supported"));
        check(&["--webhook", "ftp://ha/"], Err("--webhook ftp://ha/: scheme must be http or https"));
        check(&["--webhook", "http:///api"], Err("needs a host"));
        check(&["--webhook", "http://ha:99999/"], Err("the port must be"));
        check(&["--webhook", "ha:8123"], Err("--webhook"));
        check(&["--ntfy", "http://ntfy.sh/door-1"], Ok(()));
        check(&["--ntfy", "https://ntfy.sh/door-1"], Err("--ntfy https://ntfy.sh/door-1: https is not supported"));
        check(&["--ntfy", "http://ntfy.sh/"], Err("must end in a topic"));
        check(&["--ntfy", "http://ntfy.lan:0/door"], Err("the port must be"));
        check(&["--ntfy", "mqtt://ntfy.lan/door"], Err("scheme must be http or https"));
        check(&["--ntfy-token-file", "/x"], Err("--ntfy-token-file needs --ntfy"));
        check(&["--ntfy", "http://ntfy.sh/d", "--ntfy-token-file", "/definitely/not/here"], Err("--ntfy-token-file"));
        check(&["--public-url", "https://intercom.lan:8443/"], Ok(()));
        check(&["--public-url", "intercom.lan"], Err("--public-url"));
        // A password in a bad URL stays out of the error.
        let (message, _) = Config::from_args(&["--webhook", "gopher://me:hunter2@ha/"]).unwrap_err();
        assert!(!message.contains("hunter2") && message.contains("ha/"), "{message}");
    }

    #[test]
    fn ntfy_splits_server_and_topic_and_keeps_the_token_secret() {
        let dir = std::env::temp_dir().join(format!("intercomd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token_file = dir.join("token");
        std::fs::write(&token_file, "tk_abc\n").unwrap();
        let args = ["--ntfy", "http://push.example/ntfy/door", "--ntfy-token-file", token_file.to_str().unwrap()];
        let hooks = Config::from_args(&args).unwrap().hooks;
        let ntfy = hooks.ntfy.clone().unwrap();
        assert_eq!(ntfy.server.to_string(), "http://push.example/ntfy/");
        assert_eq!(ntfy.topic, "door");
        assert_eq!(ntfy.token, Some(Secret("tk_abc".into())));
        assert!(!format!("{hooks:?}").contains("tk_abc"));
        let flags = Flags::from_args(&["intercomd"], &["--ntfy", "http://ntfy.lan/door"]).unwrap();
        assert_eq!(
            validate_hooks(&flags, Some(" tk_env ".into())).unwrap().ntfy.unwrap().token,
            Some(Secret("tk_env".into()))
        );
        let flags = Flags::from_args(&["intercomd"], &["--ntfy", "http://a:b@ntfy.lan/door"]).unwrap();
        assert!(validate_hooks(&flags, Some("tk".into())).unwrap_err().contains("not both"));
        let none = Config::from_args(&[]).unwrap().hooks;
        assert!(none.webhooks.is_empty() && none.ntfy.is_none() && none.public_url.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
