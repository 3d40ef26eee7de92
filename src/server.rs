//! Accepting connections: both listeners, the connection caps, the tasks
//! that run beside the connections (the hub's timer, saving the call log,
//! certificate renewal, MQTT with `--mqtt`, one per webhook or ntfy
//! target), and shutdown.
//!
//! `run` takes its listeners and its stop signal from the caller, so the
//! daemon binds the configured addresses and stops on SIGTERM, while tests
//! bind `127.0.0.1:0` and stop whenever they like.
//!
//! Invariants:
//! - Everything runs on one `LocalExecutor` on the calling thread; shared
//!   state is one `Rc<Shared>` whose `RefCell`s are never borrowed across an
//!   `.await`.
//! - A connection's errors are logged in its own task and never reach the
//!   accept loop.
//! - A connection holds its slot under the global cap and under its
//!   address's cap exactly as long as its task runs, and a task runs exactly
//!   as long as its socket is open.
//! - Shutdown is bounded by `SHUTDOWN_GRACE`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_net::TcpListener;
use log::{info, warn};
use smol::channel::{self, Receiver, Sender};
use smol::future::or;
use smol::{LocalExecutor, Timer};

use crate::config::Config;
use crate::conn::{self, HttpsState, Shared};
use crate::door::Doors;
use crate::feed::{self, Feed};
use crate::hub::{self, Hub};
use crate::liveness::Liveness;
use crate::metrics::Connections;
use crate::mqtt;
use crate::protocol;
use crate::router::Limits;
use crate::snapshots::Snapshots;
use crate::stream::{with_timeout, PolledWhenWoken};
use crate::tls::{self, Certificates};
use crate::webhook;

/// TCP connections allowed on top of `--max-peers`, for page loads and API
/// calls while every peer slot is taken. Past `max_peers + this`, new
/// connections are closed at once (and counted in `/metrics`), so a flood of
/// connections costs the daemon a file descriptor each for an instant and
/// never starves the peers already connected.
pub const HTTP_CONNECTION_HEADROOM: usize = 256;
/// How long shutdown waits for sockets to take their 1001 close frame.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Pause after a failed `accept` (out of file descriptors), so the loop does
/// not spin while connections finish and free some.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one warning per this interval about refused connections.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The sockets `run` serves: plain HTTP, and HTTPS with its certificate.
pub struct Listeners {
    pub http: TcpListener,
    pub https: Option<(TcpListener, Certificates)>,
}

/// The caps on open connections, shared by both listeners.
struct Caps {
    /// `--max-peers` plus `HTTP_CONNECTION_HEADROOM`.
    max_connections: usize,
    /// `--max-connections-per-ip`.
    max_per_address: usize,
    /// Open connections per client address; an address leaves the map when
    /// its last connection closes.
    per_address: HashMap<IpAddr, usize>,
    /// When we last warned about a cap, to keep the log calm during a flood.
    last_warning: Option<Instant>,
}

impl Caps {
    /// Take a slot for a connection from `client`, or say which cap is full.
    fn admit(&mut self, client: IpAddr, open: usize) -> Result<(), &'static str> {
        if open >= self.max_connections {
            return Err("connection limit");
        }
        let count = self.per_address.entry(client).or_insert(0);
        if *count >= self.max_per_address {
            return Err("per-address connection limit");
        }
        *count += 1;
        Ok(())
    }

    /// Give back the slot of a connection from `client`.
    fn release(&mut self, client: IpAddr) {
        if let Some(count) = self.per_address.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&client);
            }
        }
    }

    /// Whether a refusal at `now` should be logged (once per `WARN_INTERVAL`).
    fn should_warn(&mut self, now: Instant) -> bool {
        let quiet = self.last_warning.is_some_and(|last| now.duration_since(last) < WARN_INTERVAL);
        if !quiet {
            self.last_warning = Some(now);
        }
        !quiet
    }
}

/// Serve on the listeners until `shutdown` resolves, then close every
/// WebSocket with 1001 and return within `SHUTDOWN_GRACE`.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let Listeners { http, https } = listeners;
    info!("listening on http://{}", http.local_addr()?);
    let (https_listener, https_state) = match https {
        Some((listener, certificates)) => {
            let local = listener.local_addr()?;
            info!("listening on https://{local} ({})", certificates.summary);
            let state = HttpsState { certificates: RefCell::new(certificates), port: local.port(), address: local };
            (Some(listener), Some(state))
        }
        None => (None, None),
    };
    let caps = Rc::new(RefCell::new(Caps {
        max_connections: config.max_peers + HTTP_CONNECTION_HEADROOM,
        max_per_address: config.max_connections_per_ip,
        per_address: HashMap::new(),
        last_warning: None,
    }));
    let limits = Limits {
        max_peers: config.max_peers,
        max_rate: config.max_rate,
        max_rooms: config.max_rooms,
        max_room_peers: config.max_room_peers,
        reconnect_grace: config.reconnect_grace,
    };
    let liveness = Liveness { interval: config.ping_interval, timeout: config.ping_timeout };
    let feed = Rc::new(RefCell::new(Feed::load(&config.state_dir)));
    let snapshots = config
        .snapshots
        .map(|limits| Rc::new(RefCell::new(Snapshots::load(&config.state_dir, limits.max_count, limits.max_bytes))));
    let ports = (https_state.as_ref().map(|https| https.port), http.local_addr()?.port());
    // None without --webhook and --ntfy: no task, no socket, no timer.
    let webhooks = webhook::workers(&config.hooks, &feed, ports);
    let mut hub = Hub::new(limits, protocol::ice_servers(&config.stun_servers), liveness, feed.clone());
    if let Some(store) = &snapshots {
        hub.set_snapshots(store.clone());
    }
    if let Some(doors) = &config.doors {
        let ids: Vec<&str> = doors.stations.iter().map(|(id, _)| id.as_str()).collect();
        if doors.without_proof {
            warn!(
                "door opener for {}: --door-open-without-pin: whoever answers a door's ring can open it, and anyone on the LAN can answer a room-wide ring",
                ids.join(", ")
            );
        } else {
            let proof = match (&doors.pin, doors.keys.len()) {
                (Some(_), 0) => "the PIN".to_string(),
                (None, keys) => format!("{keys} device keys"),
                (Some(_), keys) => format!("the PIN or {keys} device keys"),
            };
            info!("door opener for {}: whoever answers a door's ring, with {proof}", ids.join(", "));
        }
        if doors.mqtt {
            warn!("door opener: --mqtt-door-open: whoever can publish to the broker can open {}", ids.join(", "));
        }
        let keys = doors.keys.iter().map(|(name, key)| (name.clone(), key.0.clone())).collect();
        let pin = doors.pin.as_ref().map(|pin| pin.0.clone());
        hub.set_doors(Doors::new(&doors.stations, pin, keys, doors.without_proof));
    }
    let shared = Rc::new(Shared {
        config,
        hub: RefCell::new(hub),
        feed,
        connections: Connections::default(),
        https: https_state,
        snapshots,
        started_unix_ms: hub::unix_ms_now(),
        http_address: http.local_addr()?,
    });
    // Only with --mqtt: a queue, a task, a connection and its keep-alive.
    let mqtt_events =
        shared.config.mqtt.as_ref().map(|mqtt| shared.feed.borrow_mut().subscribe("mqtt", mqtt.target(), mqtt::QUEUE));
    let executor = LocalExecutor::new();
    // Closed (not sent on) to tell idle HTTP connections to go.
    let (stop_sender, stop) = channel::bounded::<()>(1);
    // Each connection task holds a clone; once all are dropped, `recv` ends.
    let (alive, all_gone) = channel::bounded::<()>(1);
    let accepting = Accepting { executor: &executor, shared: &shared, caps: &caps, stop: &stop, alive };

    // Its own task rather than one more branch of the race below: a save
    // in progress must finish, not be dropped, when the daemon stops.
    let saving = executor.spawn(feed::save(shared.feed.clone()));
    // Each target's task owns its queue; they end with the executor.
    for worker in webhooks {
        executor.spawn(worker.run()).detach();
    }
    // Polled only when one of its own wakers fired: otherwise every task
    // the executor runs would poll both listeners too, an `accept` that
    // fails with EAGAIN for each.
    executor
        .run(PolledWhenWoken::new(async {
            let plain = or(accepting.run(&http, false), hub::run_timers(&shared.hub));
            let plain = or(plain, async {
                match (&shared.config.mqtt, mqtt_events) {
                    (Some(config), Some(events)) => {
                        let pictures =
                            shared.config.snapshots.map(|_| shared.config.state_dir.join(crate::snapshots::DIR));
                        mqtt::run(config, shared.config.doors.as_ref(), events, &shared.hub, &shared.feed, pictures)
                            .await
                    }
                    _ => std::future::pending().await,
                }
            });
            let secure = async {
                match &https_listener {
                    Some(listener) => or(accepting.run(listener, true), renew_certificates(&shared)).await,
                    None => std::future::pending().await,
                }
            };
            or(or(plain, secure), shutdown).await;
            info!("shutting down: closing {} sockets", shared.hub.borrow().websocket_count());
            drop((http, https_listener));
            stop_sender.close();
            shared.hub.borrow_mut().shutdown();
            drop(accepting);
            if with_timeout(SHUTDOWN_GRACE, all_gone.recv()).await.is_none() {
                warn!("{} connections still open after {SHUTDOWN_GRACE:?}; dropping them", shared.connections.open());
            }
            // The goodbyes may have ended calls; then the last save.
            shared.hub.borrow_mut().flush_events();
            shared.feed.borrow().close();
            if with_timeout(SHUTDOWN_GRACE, saving).await.is_none() {
                warn!("the call log was not saved within {SHUTDOWN_GRACE:?}");
            }
        }))
        .await;
    Ok(())
}

/// What the accept loops of both listeners share.
struct Accepting<'a, 'e> {
    executor: &'a LocalExecutor<'e>,
    shared: &'a Rc<Shared>,
    caps: &'a Rc<RefCell<Caps>>,
    stop: &'a Receiver<()>,
    /// Each connection task holds a clone; dropped at shutdown.
    alive: Sender<()>,
}

impl<'e> Accepting<'_, 'e> {
    /// Accept connections on one listener forever, each in a task of its
    /// own that holds its slots until its socket closes.
    async fn run(&self, listener: &TcpListener, tls: bool) {
        loop {
            let (stream, address) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!("accept failed: {error}");
                    Timer::after(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let client = address.ip().to_canonical();
            let admitted = self.caps.borrow_mut().admit(client, self.shared.connections.open());
            if let Err(limit) = admitted {
                self.refuse(address, limit);
                continue;
            }
            self.shared.connections.accepted();
            let (shared, caps, stop, alive) =
                (self.shared.clone(), self.caps.clone(), self.stop.clone(), self.alive.clone());
            // Boxed: the task keeps what it captures for the connection's life.
            let stream = Box::new(stream);
            self.executor
                .spawn(async move {
                    conn::serve(&shared, stream, tls, address, stop).await;
                    shared.connections.closed();
                    caps.borrow_mut().release(client);
                    drop(alive);
                })
                .detach();
        }
    }

    /// Close a new connection at once (dropping it does), count it, and
    /// warn at most once per `WARN_INTERVAL` so a flood cannot flood the log.
    fn refuse(&self, address: SocketAddr, limit: &str) {
        self.shared.connections.refused();
        if self.caps.borrow_mut().should_warn(Instant::now()) {
            let open = self.shared.connections.open();
            warn!("{limit} reached ({open} open): refusing {address} and any others for now");
        }
    }
}

/// Every `tls::CHECK_INTERVAL`, renew the generated certificate if it is
/// close to expiry or the machine's names or addresses changed. New
/// handshakes get the new certificate; open connections keep theirs.
async fn renew_certificates(shared: &Shared) {
    let Some(https) = &shared.https else { return std::future::pending().await };
    loop {
        Timer::after(tls::CHECK_INTERVAL).await;
        match https.certificates.borrow_mut().refresh() {
            Ok(Some(reason)) => info!("renewed the server certificate: {reason}"),
            Ok(None) => {}
            Err(error) => warn!("cannot renew the server certificate, keeping the old one: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(max_connections: usize, max_per_address: usize) -> Caps {
        Caps { max_connections, max_per_address, per_address: HashMap::new(), last_warning: None }
    }

    #[test]
    fn each_address_has_its_own_cap_and_gets_its_slots_back() {
        let mut caps = caps(100, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(caps.admit(a, 0), Ok(()));
        assert_eq!(caps.admit(a, 1), Ok(()));
        assert_eq!(caps.admit(a, 2), Err("per-address connection limit"));
        assert_eq!(caps.admit(b, 2), Ok(()), "another address is not affected");
        caps.release(a);
        assert_eq!(caps.admit(a, 2), Ok(()), "a closed connection frees its slot");
        caps.release(a);
        caps.release(a);
        caps.release(b);
        assert!(caps.per_address.is_empty(), "an address with no connection is forgotten");
    }

    #[test]
    fn the_global_cap_comes_first() {
        let mut caps = caps(3, 10);
        let a: IpAddr = "::1".parse().unwrap();
        assert_eq!(caps.admit(a, 3), Err("connection limit"));
        assert!(caps.per_address.is_empty(), "a refused connection takes no slot");
    }

    #[test]
    fn refusals_are_logged_once_per_interval() {
        let mut caps = caps(1, 1);
        let start = Instant::now();
        assert!(caps.should_warn(start));
        assert!(!caps.should_warn(start + WARN_INTERVAL - Duration::from_millis(1)));
        assert!(caps.should_warn(start + WARN_INTERVAL));
    }
}
