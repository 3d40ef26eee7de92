//! intercomd: a tiny signaling daemon for LAN intercoms.
//!
//! Layout, in reading order: `config` turns the command line into a
//! `Config`; `server` accepts connections and runs the HTTP front door on one
//! `LocalExecutor`; `http` parses request heads and writes responses;
//! `static_files` serves the pages and `api` the JSON endpoints; `ws` owns
//! the WebSocket upgrade and each socket's read and write loops; `hub` is the
//! rim that carries out the router's decisions into each peer's bounded
//! `outbox`; `router` (peers, rooms, routing) and `protocol` (the wire
//! format) are pure: no I/O, no `.await`. `systemd` speaks sd_notify.
//!
//! ARCHITECTURE.md at the top of the repository has the map and the
//! invariants.

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod http;
pub mod hub;
pub mod outbox;
pub mod peerjs;
pub mod protocol;
pub mod router;
pub mod server;
pub mod static_files;
pub mod stream;
pub mod systemd;
pub mod tls;
pub mod ws;

use std::future::Future;
use std::time::Duration;

/// `Some(output)` if `future` finishes within `limit`, else `None`.
pub async fn with_timeout<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(future.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}
