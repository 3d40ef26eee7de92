//! Host names to addresses for the daemon's own outgoing connections
//! (`--mqtt`, `--webhook`, `--ntfy`), without the C library's resolver.
//!
//! The Pi binaries are linked statically, and a static glibc's
//! `getaddrinfo` loads the NSS modules named in `/etc/nsswitch.conf` at run
//! time (`libnss_mdns4_minimal.so.2` on Raspberry Pi OS): shared libraries
//! built for whatever glibc the Pi has, loaded into a binary that carries
//! another. So the daemon never calls it, and asks, in the order of Raspberry
//! Pi OS's `hosts: files mdns4_minimal [NOTFOUND=return] dns`:
//!
//! 1. an address literal is itself (no lookup);
//! 2. `/etc/hosts`;
//! 3. `localhost` and `*.localhost` are loopback (RFC 6761);
//! 4. a `.local` name is asked of the LAN by multicast DNS (RFC 6762, a
//!    one-shot "legacy unicast" query: the answer comes back to our port);
//!    the Pi needs no avahi for it;
//! 5. any other name, and a `.local` name nobody answered, is asked of the
//!    name servers of `/etc/resolv.conf` (at most [`MAX_NAME_SERVERS`], in
//!    order; `search` and `ndots` as glibc reads them), over UDP.
//!
//! Everything runs on the daemon's thread: no blocking pool, no thread per
//! lookup. Every wait is bounded ([`QUERY_TIMEOUT`], [`ATTEMPTS`]); the
//! callers bound the lookup and the connection together as well.
//! The packet code ([`query`], [`answers`]) is pure and unit-tested; the
//! sources are files and addresses in [`Sources`], so tests point them at
//! their own files and at name servers on loopback.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use async_net::TcpStream;
use smol::Async;

/// How long one query waits for its answers from one server.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Rounds over the name servers (and multicast queries for a `.local`
/// name) before a name is given up.
pub const ATTEMPTS: usize = 2;
/// Name servers of `/etc/resolv.conf` asked, as glibc's `MAXNS`.
pub const MAX_NAME_SERVERS: usize = 3;
/// Search domains of `/etc/resolv.conf` tried, as glibc's `MAXDNSRCH`.
pub const MAX_SEARCH: usize = 6;
/// Largest answer read: a server answers a query without EDNS in 512
/// bytes; room to spare for a multicast responder's.
const MAX_ANSWER: usize = 1500;
/// Largest `/etc/hosts` or `/etc/resolv.conf` read.
const MAX_FILE: u64 = 256 * 1024;
/// The multicast DNS group and port (RFC 6762).
pub const MDNS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)), 5353);

/// Where names are looked up.
#[derive(Clone, Debug)]
pub struct Sources {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// The name servers' port (53).
    pub dns_port: u16,
    /// Where multicast DNS queries go ([`MDNS`]).
    pub mdns: SocketAddr,
}

impl Sources {
    /// The system's: `/etc/hosts`, `/etc/resolv.conf`, the mDNS group.
    pub fn system() -> Self {
        Sources { hosts: "/etc/hosts".into(), resolv_conf: "/etc/resolv.conf".into(), dns_port: 53, mdns: MDNS }
    }
}

/// A TCP connection to `host:port`, the name looked up in the system's
/// [`Sources`]: every address of the name in turn (IPv4 first), the last
/// error if none answers. Boxed: the lookup's state is held only while it
/// runs, not in the caller's future all along.
pub fn connect(host: &str, port: u16) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + '_>> {
    Box::pin(connect_to(host, port))
}

async fn connect_to(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for ip in lookup(&Sources::system(), host).await? {
        match Async::<std::net::TcpStream>::connect(SocketAddr::new(ip, port)).await {
            Ok(stream) => return Ok(stream.into()),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| not_found(host)))
}

/// The addresses of `host`, IPv4 ones first; never empty.
pub async fn lookup(sources: &Sources, host: &str) -> io::Result<Vec<IpAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if !valid_name(&name) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?} is not a host name")));
    }
    if let Some(text) = read_small(&sources.hosts) {
        let found = in_hosts(&text, &name);
        if !found.is_empty() {
            return Ok(found);
        }
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    }
    if name.ends_with(".local") {
        if let Ok(found) = ask(&[sources.mdns], &name, false).await {
            return Ok(found);
        }
    }
    let conf = read_small(&sources.resolv_conf).map(|text| ResolvConf::parse(&text)).unwrap_or_default();
    let servers = conf.servers(sources.dns_port);
    let mut last = not_found(host);
    for candidate in conf.candidates(&name) {
        match ask(&servers, &candidate, true).await {
            Ok(found) => return Ok(found),
            Err(error) => last = error,
        }
    }
    Err(last)
}

fn not_found(host: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no address for {host}"))
}

fn read_small(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(MAX_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Letters, digits, `-` and `_` in labels of 1 to 63 bytes, 253 in all.
fn valid_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The addresses `/etc/hosts` gives `name` (lower case), IPv4 first.
fn in_hosts(text: &str, name: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else { continue };
        if fields.any(|alias| alias.trim_end_matches('.').eq_ignore_ascii_case(name)) && !found.contains(&ip) {
            found.push(ip);
        }
    }
    ipv4_first(found)
}

/// The same addresses, IPv4 ones first, each kind in its order.
fn ipv4_first(addresses: Vec<IpAddr>) -> Vec<IpAddr> {
    let (mut first, then): (Vec<IpAddr>, Vec<IpAddr>) = addresses.into_iter().partition(IpAddr::is_ipv4);
    first.extend(then);
    first
}

/// What the daemon reads of `/etc/resolv.conf`.
#[derive(Debug, Default, PartialEq)]
struct ResolvConf {
    servers: Vec<IpAddr>,
    search: Vec<String>,
    ndots: Option<usize>,
}

impl ResolvConf {
    /// `nameserver`, `search` (or `domain`: the last of the two wins, as in
    /// glibc) and `options ndots:N`; the rest is ignored.
    fn parse(text: &str) -> Self {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let mut fields = line.split(|c: char| c.is_ascii_whitespace()).filter(|f| !f.is_empty());
            match fields.next() {
                Some("nameserver") => {
                    // An IPv6 link-local server may carry a zone (`%eth0`),
                    // which this resolver cannot use.
                    if let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) {
                        if conf.servers.len() < MAX_NAME_SERVERS {
                            conf.servers.push(ip);
                        }
                    }
                }
                Some("search" | "domain") => {
                    conf.search = fields
                        .filter(|domain| !domain.starts_with(['#', ';']))
                        .map(|domain| domain.trim_end_matches('.').to_ascii_lowercase())
                        .filter(|domain| valid_name(domain))
                        .take(MAX_SEARCH)
                        .collect();
                }
                Some("options") => {
                    for option in fields {
                        if let Some(n) = option.strip_prefix("ndots:").and_then(|n| n.parse::<usize>().ok()) {
                            conf.ndots = Some(n.min(15));
                        }
                    }
                }
                _ => {}
            }
        }
        conf
    }

    /// The servers to ask, on `port`; the local one when none is named.
    fn servers(&self, port: u16) -> Vec<SocketAddr> {
        let servers = if self.servers.is_empty() { &[IpAddr::V4(Ipv4Addr::LOCALHOST)][..] } else { &self.servers };
        servers.iter().map(|&ip| SocketAddr::new(ip, port)).collect()
    }

    /// The names to ask for, in glibc's order: `name` itself first when it
    /// has at least `ndots` dots (1 by default), else after the search
    /// domains.
    fn candidates(&self, name: &str) -> Vec<String> {
        let searched = self.search.iter().map(|domain| format!("{name}.{domain}")).filter(|n| valid_name(n));
        if name.matches('.').count() >= self.ndots.unwrap_or(1) {
            std::iter::once(name.to_string()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(name.to_string())).collect()
        }
    }
}

/// Ask each server in turn, [`ATTEMPTS`] rounds, for the A and AAAA
/// records of `name`; `recursive` for a name server, not for multicast.
/// An answer that the name does not exist ends the search at once.
async fn ask(servers: &[SocketAddr], name: &str, recursive: bool) -> io::Result<Vec<IpAddr>> {
    let mut last = not_found(name);
    for _ in 0..ATTEMPTS {
        for &server in servers {
            match ask_one(server, name, recursive).await {
                Ok(Answer::Found(found)) => return Ok(found),
                Ok(Answer::NoSuchName) => return Err(not_found(name)),
                Ok(Answer::Nothing) => last = not_found(name),
                Err(error) => last = error,
            }
        }
    }
    Err(last)
}

/// One query pair (A and AAAA) to one server, its answers within
/// [`QUERY_TIMEOUT`]. Replies with another id, from another address than
/// a name server's, or that do not parse are ignored.
async fn ask_one(server: SocketAddr, name: &str, recursive: bool) -> io::Result<Answer> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = Async::<UdpSocket>::bind(bind)?;
    let mut ids = [0u8; 4];
    getrandom::fill(&mut ids).map_err(|error| io::Error::other(error.to_string()))?;
    let ids = [u16::from_be_bytes([ids[0], ids[1]]), u16::from_be_bytes([ids[2], ids[3]])];
    // Two datagrams into an empty socket buffer: sent at once, no waiting.
    for (id, kind) in ids.iter().zip([A, AAAA]) {
        socket.get_ref().send_to(&query(*id, name, kind, recursive), server)?;
    }
    let multicast = server.ip().is_multicast();
    let deadline = Instant::now() + QUERY_TIMEOUT;
    let mut found: Vec<IpAddr> = Vec::new();
    let mut waiting = ids.to_vec();
    let mut buffer = [0u8; MAX_ANSWER];
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(received) = crate::stream::with_timeout(left, socket.recv_from(&mut buffer)).await else { break };
        let (length, from) = received?;
        if !multicast && from != server {
            continue;
        }
        let Some(id) = waiting.iter().position(|&id| Some(id) == answer_id(&buffer[..length])) else { continue };
        match answers(waiting[id], name, &buffer[..length]) {
            Some(Answer::Found(addresses)) => {
                for ip in addresses {
                    if !found.contains(&ip) {
                        found.push(ip);
                    }
                }
            }
            Some(Answer::NoSuchName) if found.is_empty() => return Ok(Answer::NoSuchName),
            Some(_) => {}
            None => continue,
        }
        waiting.swap_remove(id);
        // A multicast responder that has no address of the other kind
        // says nothing at all: do not wait for it.
        if multicast && !found.is_empty() {
            break;
        }
    }
    Ok(if found.is_empty() { Answer::Nothing } else { Answer::Found(ipv4_first(found)) })
}

/// Record types asked for.
const A: u16 = 1;
const AAAA: u16 = 28;
const CNAME: u16 = 5;

/// A question for the `kind` records of `name` (valid, lower case).
fn query(id: u16, name: &str, kind: u16, recursive: bool) -> Vec<u8> {
    let mut packet = Vec::with_capacity(18 + name.len());
    packet.extend_from_slice(&id.to_be_bytes());
    // Flags: a standard query, recursion desired of a name server.
    packet.extend_from_slice(&(if recursive { 0x0100u16 } else { 0 }).to_be_bytes());
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&kind.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes());
    packet
}

/// What one reply said.
#[derive(Debug, PartialEq)]
enum Answer {
    Found(Vec<IpAddr>),
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
    /// No address of this kind, or a failure of the server.
    Nothing,
}

fn answer_id(packet: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.first()?, *packet.get(1)?]))
}

/// The addresses in a reply to query `id` for `name`: A and AAAA records
/// of `name` or of the names it is an alias of (CNAME), from the answer
/// section. `None` for a packet that is not such a reply or is malformed.
fn answers(id: u16, name: &str, packet: &[u8]) -> Option<Answer> {
    let word = |at: usize| -> Option<u16> { Some(u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?])) };
    let flags = word(2)?;
    if answer_id(packet)? != id || flags & 0x8000 == 0 || flags & 0x7800 != 0 {
        return None;
    }
    let (questions, records) = (word(4)?, word(6)?);
    let mut at = 12;
    for _ in 0..questions {
        at = read_name(packet, at, &mut String::new())? + 4;
    }
    match flags & 0x000f {
        0 => {}
        3 => return Some(Answer::NoSuchName),
        _ => return Some(Answer::Nothing),
    }
    let mut names = vec![name.to_string()];
    let mut found = Vec::new();
    for _ in 0..records {
        let mut owner = String::new();
        at = read_name(packet, at, &mut owner)?;
        let (kind, class, length) = (word(at)?, word(at + 2)? & 0x7fff, word(at + 8)? as usize);
        let data = at + 10;
        let rdata = packet.get(data..data + length)?;
        at = data + length;
        if class != 1 || !names.iter().any(|n| n.eq_ignore_ascii_case(&owner)) {
            continue;
        }
        match (kind, rdata.len()) {
            (A, 4) => found.push(IpAddr::from(<[u8; 4]>::try_from(rdata).ok()?)),
            (AAAA, 16) => {
                let ip = Ipv6Addr::from(<[u8; 16]>::try_from(rdata).ok()?);
                // A link-local address needs its interface, which the
                // answer does not say.
                if ip.segments()[0] & 0xffc0 != 0xfe80 {
                    found.push(IpAddr::V6(ip));
                }
            }
            (CNAME, _) => {
                let mut target = String::new();
                read_name(packet, data, &mut target)?;
                names.push(target);
            }
            _ => {}
        }
    }
    Some(if found.is_empty() { Answer::Nothing } else { Answer::Found(found) })
}

/// The (possibly compressed) name at `at`, appended to `out` in lower case
/// without the final dot; returns where the name ends in the packet.
fn read_name(packet: &[u8], mut at: usize, out: &mut String) -> Option<usize> {
    let mut end = None;
    // Each pointer must go backwards, so a loop of pointers ends.
    let mut limit = at;
    loop {
        let length = *packet.get(at)? as usize;
        match length & 0xc0 {
            0x00 if length == 0 => return Some(end.unwrap_or(at + 1)),
            0x00 => {
                let label = packet.get(at + 1..at + 1 + length)?;
                if !out.is_empty() {
                    out.push('.');
                }
                out.extend(label.iter().map(|&b| b.to_ascii_lowercase() as char));
                if out.len() > 255 {
                    return None;
                }
                at += 1 + length;
            }
            0xc0 => {
                let target = (length & 0x3f) << 8 | *packet.get(at + 1)? as usize;
                end.get_or_insert(at + 2);
                if target >= limit {
                    return None;
                }
                limit = target;
                at = target;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_valid_names_and_hosts() {
        assert!(valid_name("mqtt.home.arpa"));
        assert!(valid_name("homeassistant.local"));
        assert!(!valid_name("a..b"));
        assert!(!valid_name(&"a".repeat(64)));
        assert!(!valid_name("evil name"));
        let hosts = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n# 10.0.0.9 broker\n\
                     192.168.1.5\tbroker broker.home.arpa # the Pi\n2001:db8::5 broker\n";
        assert_eq!(
            in_hosts(hosts, "broker"),
            ["192.168.1.5".parse::<IpAddr>().unwrap(), "2001:db8::5".parse().unwrap()]
        );
        assert_eq!(in_hosts(hosts, "localhost"), [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        assert!(in_hosts(hosts, "10.0.0.9").is_empty());
        assert!(in_hosts(hosts, "nobody").is_empty());
    }

    #[test]
    fn resolv_conf_as_glibc_reads_it() {
        let conf = ResolvConf::parse(
            "# generated\nnameserver 192.168.1.1\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\n\
             nameserver 9.9.9.9\nnameserver 1.1.1.1\ndomain old.example\nsearch home.arpa lan\noptions edns0 ndots:2\n",
        );
        assert_eq!(conf.servers, ["192.168.1.1", "2001:db8::53", "9.9.9.9"].map(|s| s.parse::<IpAddr>().unwrap()));
        assert_eq!(conf.search, ["home.arpa", "lan"]);
        assert_eq!(conf.candidates("broker"), ["broker.home.arpa", "broker.lan", "broker"]);
        assert_eq!(conf.candidates("mqtt.example"), ["mqtt.example.home.arpa", "mqtt.example.lan", "mqtt.example"]);
        assert_eq!(conf.candidates("a.b.example"), ["a.b.example", "a.b.example.home.arpa", "a.b.example.lan"]);
        let empty = ResolvConf::parse("");
        assert_eq!(empty.servers(53), [SocketAddr::from(([127, 0, 0, 1], 53))]);
        assert_eq!(empty.candidates("broker"), ["broker"]);
        assert_eq!(empty.candidates("mqtt.example"), ["mqtt.example"]);
    }

    /// A reply as a name server writes it: the question, then `records`
    /// of (owner, type, data), owners compressed to the question's name.
    pub(super) fn reply(id: u16, question: &[u8], rcode: u16, records: &[(&str, u16, Vec<u8>)]) -> Vec<u8> {
        let mut packet = question.to_vec();
        packet[0..2].copy_from_slice(&id.to_be_bytes());
        packet[2..4].copy_from_slice(&(0x8180 | rcode).to_be_bytes());
        packet[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (owner, kind, data) in records {
            if owner.is_empty() {
                packet.extend_from_slice(&[0xc0, 12]);
            } else {
                for label in owner.split('.') {
                    packet.push(label.len() as u8);
                    packet.extend_from_slice(label.as_bytes());
                }
                packet.push(0);
            }
            packet.extend_from_slice(&kind.to_be_bytes());
            packet.extend_from_slice(&[0x80, 1, 0, 0, 0, 60]);
            packet.extend_from_slice(&(data.len() as u16).to_be_bytes());
            packet.extend_from_slice(data);
        }
        packet
    }

    fn encoded(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    #[test]
    fn queries_and_answers() {
        let question = query(0x1234, "broker.home.arpa", A, true);
        assert_eq!(&question[..12], &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&question[12..], &[&encoded("broker.home.arpa")[..], &[0, 1, 0, 1]].concat()[..]);
        assert_eq!(&query(7, "door.local", AAAA, false)[2..4], &[0, 0]);

        let found = reply(0x1234, &question, 0, &[("", A, vec![192, 168, 1, 5]), ("", A, vec![10, 0, 0, 5])]);
        assert_eq!(
            answers(0x1234, "broker.home.arpa", &found),
            Some(Answer::Found(vec!["192.168.1.5".parse().unwrap(), "10.0.0.5".parse().unwrap()]))
        );
        // Another id, a question rather than a reply, a truncated packet.
        assert_eq!(answers(0x1235, "broker.home.arpa", &found), None);
        assert_eq!(answers(0x1234, "broker.home.arpa", &question), None);
        for cut in 0..found.len() {
            assert_eq!(answers(0x1234, "broker.home.arpa", &found[..cut]), None, "cut at {cut}");
        }
        assert_eq!(answers(0x1234, "broker.home.arpa", &reply(0x1234, &question, 3, &[])), Some(Answer::NoSuchName));
        assert_eq!(answers(0x1234, "broker.home.arpa", &reply(0x1234, &question, 2, &[])), Some(Answer::Nothing));

        // An alias, its target's address; a record of another name and a
        // link-local address are left out.
        let mut v6 = vec![0u8; 16];
        v6[0] = 0xfe;
        v6[1] = 0x80;
        let aliased = reply(
            1,
            &query(1, "mqtt.example", A, true),
            0,
            &[
                ("", CNAME, encoded("box.example")),
                ("box.example", A, vec![10, 1, 2, 3]),
                ("other.example", A, vec![10, 9, 9, 9]),
                ("box.example", AAAA, v6),
            ],
        );
        assert_eq!(answers(1, "mqtt.example", &aliased), Some(Answer::Found(vec!["10.1.2.3".parse().unwrap()])));

        // A pointer that loops on itself is malformed, not a hang.
        let mut looped = reply(2, &query(2, "a.example", A, true), 0, &[("", A, vec![1, 2, 3, 4])]);
        let owner = query(2, "a.example", A, true).len();
        looped[owner..owner + 2].copy_from_slice(&[0xc0, owner as u8]);
        assert_eq!(answers(2, "a.example", &looped), None);
    }

    #[test]
    fn noise_never_panics() {
        let question = query(9, "x.example", A, true);
        let good = reply(9, &question, 0, &[("", A, vec![1, 2, 3, 4])]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            let mut packet = good.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = seed as usize % packet.len();
                packet[at] = (seed >> 32) as u8;
            }
            let _ = answers(9, "x.example", &packet);
        }
    }

    /// A name server on loopback: answers each query with what `respond`
    /// returns for its name and type (`None`: stays silent), and counts
    /// the queries it got.
    struct FakeServer {
        address: SocketAddr,
        queries: std::rc::Rc<std::cell::RefCell<Vec<(String, u16, bool)>>>,
    }

    type Respond = Box<dyn Fn(&str, u16, usize) -> Option<(u16, Vec<(&'static str, u16, Vec<u8>)>)>>;

    fn fake_server(executor: &smol::LocalExecutor<'_>, respond: Respond) -> FakeServer {
        let socket = smol::block_on(async_net::UdpSocket::bind("127.0.0.1:0")).unwrap();
        let address = socket.local_addr().unwrap();
        let queries = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = queries.clone();
        executor
            .spawn(async move {
                let mut buffer = [0u8; 512];
                loop {
                    let (length, from) = socket.recv_from(&mut buffer).await.unwrap();
                    let packet = &buffer[..length];
                    let mut name = String::new();
                    let end = read_name(packet, 12, &mut name).unwrap();
                    let kind = u16::from_be_bytes([packet[end], packet[end + 1]]);
                    let recursive = packet[2] & 1 == 1;
                    let count = seen.borrow().len();
                    seen.borrow_mut().push((name.clone(), kind, recursive));
                    if let Some((rcode, records)) = respond(&name, kind, count) {
                        let id = u16::from_be_bytes([packet[0], packet[1]]);
                        // A forged reply from another port first, with the
                        // right id and another address: it must be ignored.
                        let forger = async_net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                        let forged = reply(id, packet, 0, &[("", A, vec![6, 6, 6, 6])]);
                        forger.send_to(&forged, from).await.unwrap();
                        socket.send_to(&reply(id, packet, rcode, &records), from).await.unwrap();
                    }
                }
            })
            .detach();
        FakeServer { address, queries }
    }

    fn sources(dir: &std::path::Path, hosts: &str, resolv_conf: &str, dns: &FakeServer, mdns: &FakeServer) -> Sources {
        std::fs::write(dir.join("hosts"), hosts).unwrap();
        std::fs::write(dir.join("resolv.conf"), resolv_conf).unwrap();
        Sources {
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            dns_port: dns.address.port(),
            mdns: mdns.address,
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("intercomd-resolve-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn each_source_in_its_turn_over_loopback() {
        let executor = smol::LocalExecutor::new();
        smol::block_on(executor.run(async {
            let dns = fake_server(
                &executor,
                Box::new(|name, kind, _| match (name, kind) {
                    ("broker.home.arpa", A) => Some((0, vec![("", A, vec![10, 0, 0, 7])])),
                    ("broker.home.arpa", AAAA) => {
                        Some((0, vec![("", AAAA, vec![0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7])]))
                    }
                    ("nas.local", A) => Some((0, vec![("", A, vec![10, 0, 0, 8])])),
                    ("broker", _) => Some((3, vec![])),
                    (_, _) => Some((3, vec![])),
                }),
            );
            let mdns = fake_server(
                &executor,
                Box::new(|name, kind, _| match (name, kind) {
                    ("door.local", A) => Some((0, vec![("", A, vec![192, 168, 1, 20])])),
                    _ => None,
                }),
            );
            let dir = temp_dir("sources");
            let conf = "nameserver 127.0.0.1\nsearch home.arpa\n";
            let sources = sources(&dir, "192.168.1.9 pinned.example pinned\n", conf, &dns, &mdns);

            // Literals and the hosts file ask nobody.
            assert_eq!(lookup(&sources, "192.0.2.1").await.unwrap(), ips(&["192.0.2.1"]));
            assert_eq!(lookup(&sources, "::1").await.unwrap(), ips(&["::1"]));
            assert_eq!(lookup(&sources, "Pinned.Example.").await.unwrap(), ips(&["192.168.1.9"]));
            assert_eq!(lookup(&sources, "localhost").await.unwrap(), ips(&["127.0.0.1", "::1"]));
            assert!(dns.queries.borrow().is_empty() && mdns.queries.borrow().is_empty());

            // A .local name by multicast DNS, without recursion; the first
            // address ends the wait.
            assert_eq!(lookup(&sources, "door.local").await.unwrap(), ips(&["192.168.1.20"]));
            assert!(mdns.queries.borrow().iter().all(|(name, _, recursive)| name == "door.local" && !recursive));
            assert!(dns.queries.borrow().is_empty());

            // A single label through the search domain, both kinds, IPv4
            // first; the forged replies were ignored.
            assert_eq!(lookup(&sources, "broker").await.unwrap(), ips(&["10.0.0.7", "2001:db8::7"]));
            let asked: Vec<(String, u16, bool)> = dns.queries.borrow().clone();
            assert_eq!(asked.len(), 2);
            assert!(asked.iter().all(|(name, _, recursive)| name == "broker.home.arpa" && *recursive));

            // A .local name no responder knows goes to the name servers after
            // the multicast attempts.
            let before = mdns.queries.borrow().len();
            assert_eq!(lookup(&sources, "nas.local").await.unwrap(), ips(&["10.0.0.8"]));
            assert_eq!(mdns.queries.borrow().len() - before, 2 * ATTEMPTS);

            // A name nobody has: an error that says so, once each candidate
            // was refused (no retries after NXDOMAIN).
            dns.queries.borrow_mut().clear();
            let error = lookup(&sources, "nobody").await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::NotFound);
            assert!(error.to_string().contains("nobody"), "{error}");
            assert_eq!(dns.queries.borrow().len(), 4, "nobody.home.arpa and nobody, A and AAAA");
            assert_eq!(lookup(&sources, "bad name").await.unwrap_err().kind(), io::ErrorKind::InvalidInput);
            let _ = std::fs::remove_dir_all(&dir);
        }));
    }

    #[test]
    fn a_silent_server_is_asked_again_then_the_next() {
        let executor = smol::LocalExecutor::new();
        smol::block_on(executor.run(async {
            // Silent to the first query pair, answers the second round.
            let dns = fake_server(
                &executor,
                Box::new(|_, kind, count| (count >= 2 && kind == A).then(|| (0, vec![("", A, vec![10, 0, 0, 9])]))),
            );
            let mdns = fake_server(&executor, Box::new(|_, _, _| None));
            let dir = temp_dir("silent");
            // The first server is on a loopback address where nothing listens.
            let sources = sources(&dir, "", "nameserver 127.0.0.2\nnameserver 127.0.0.1\n", &dns, &mdns);
            let started = Instant::now();
            assert_eq!(lookup(&sources, "mqtt.example").await.unwrap(), ips(&["10.0.0.9"]));
            // 127.0.0.2 and then 127.0.0.1 in round one, each waited out;
            // 127.0.0.2 again, then the answer.
            assert!(started.elapsed() >= 3 * QUERY_TIMEOUT, "{:?}", started.elapsed());
            assert_eq!(dns.queries.borrow().len(), 4);
            let _ = std::fs::remove_dir_all(&dir);
        }));
    }
}
