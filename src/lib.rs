//! intercomd: a tiny signaling daemon for LAN intercoms.
//!
//! Layout, in reading order, from the process inwards:
//! - `config` turns the command line into a `Config`; `daemon` is the
//!   process (limits, certificate, listeners, signals, systemd), and
//!   `systemd` speaks sd_notify.
//! - `server` accepts connections under the caps and shuts down; `conn` is
//!   one connection's HTTP life over a `stream` (plain or `tls`); `routes`
//!   picks the answer, from `api`, `metrics` or `static_files`; `http`
//!   parses heads and writes responses.
//! - `ws` is an upgraded socket's read and write loops; `hub` carries the
//!   router's decisions into each socket's bounded `outbox` and runs the one
//!   timer, using `liveness` to judge silent sockets.
//! - `events` turns what the router saw into intercom events; `feed` keeps
//!   the call log and fills each consumer's bounded queue; `mqtt` (only
//!   with `--mqtt`) publishes them to a broker for Home Assistant.
//! - The pure core: `router` (peers, rooms, routing, deadlines), `codec`
//!   (the one surface of a wire format) over `protocol` (native) and
//!   `peerjs`; `qr` makes the QR codes of `/api/qr`. No I/O, no `.await`,
//!   time passed in.
//!
//! What may import what: the pure core imports nothing above it; `hub`
//! imports the core, never `ws`, `conn` or `server`; `ws` imports `hub`,
//! never `conn` or `server`; `routes` imports `hub` to read it and never
//! the socket side; `conn` imports `routes` and `ws`; only `server` imports
//! `conn`, and only `daemon` imports `server`. No two modules import each
//! other. ARCHITECTURE.md at the top of the repository has the map and the
//! invariants.
//!
//! Public only where a binary, an integration test or a benchmark needs it.

#![forbid(unsafe_code)]

pub mod codec;
pub mod config;
pub mod daemon;
pub mod http;
pub mod protocol;
pub mod router;
pub mod static_files;

mod api;
mod conn;
mod door;
mod events;
mod feed;
mod hub;
mod inflate;
mod jpeg;
mod liveness;
mod metrics;
mod mqtt;
mod opener;
mod outbox;
mod peerjs;
mod qr;
mod resolve;
mod routes;
mod server;
mod snapshots;
mod sse;
mod status;
mod stream;
mod systemd;
mod tls;
mod webhook;
mod ws;
