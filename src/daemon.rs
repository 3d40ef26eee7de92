//! The process around the server: the descriptor limit, the certificate,
//! both listeners, SIGTERM and SIGINT, and systemd's readiness and
//! watchdog. `main` calls [`run`] with a validated `Config`.
//!
//! Everything that can fail at start fails here, with one error line,
//! before a client could connect: a bad key file, a port in use.

use std::process::ExitCode;

use async_signal::{Signal, Signals};
use log::{error, info};
use smol::stream::StreamExt;

use crate::config::Config;
use crate::server::{self, Listeners};
use crate::systemd;
use crate::tls::Certificates;

/// Run the daemon until SIGTERM or SIGINT.
pub fn run(config: Config) -> ExitCode {
    raise_file_limit();
    smol::block_on(async {
        match start(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                error!("{message}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn start(config: Config) -> Result<(), String> {
    let signals =
        Signals::new([Signal::Term, Signal::Int]).map_err(|err| format!("cannot install signal handlers: {err}"))?;
    let http = async_net::TcpListener::bind(config.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", config.listen))?;
    info!("intercomd {} starting", env!("CARGO_PKG_VERSION"));
    let https = match &config.https {
        None => None,
        Some(https) => {
            // Made or read before the listener exists, so a bad key file is
            // a clear error at start rather than failed handshakes.
            let certificates =
                Certificates::load(&https.certificate).map_err(|err| format!("cannot set up HTTPS: {err}"))?;
            let listener = async_net::TcpListener::bind(https.listen)
                .await
                .map_err(|err| format!("cannot listen on {} (--https-listen): {err}", https.listen))?;
            Some((listener, certificates))
        }
    };
    let shutdown = async move {
        let mut signals = signals;
        if let Some(Ok(signal)) = signals.next().await {
            info!("received {signal:?}");
        }
        let _ = systemd::notify("STOPPING=1");
    };
    // The listeners are bound: connections queue from here on.
    if let Err(err) = systemd::notify("READY=1") {
        error!("cannot tell systemd we are ready: {err}");
    }
    let keep_alive = async {
        match systemd::watchdog_interval() {
            Some(interval) => systemd::keep_alive(interval).await,
            None => std::future::pending().await,
        }
    };
    let serving = server::run(config, Listeners { http, https }, shutdown);
    smol::future::or(serving, async {
        keep_alive.await;
        Ok(())
    })
    .await
    .map_err(|err| err.to_string())
}

/// Each connection is a file descriptor, and the usual soft limit of 1024
/// is below `--max-peers`' default. Raise the soft limit to the hard one
/// (which the administrator, or systemd's `LimitNOFILE`, sets).
fn raise_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    // No hard limit at all: the kernel still caps descriptors at nr_open.
    let target = limit.maximum.unwrap_or(1 << 20);
    if let Some(before) = limit.current.filter(|current| *current < target) {
        limit.current = Some(target);
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => log::debug!("file descriptor limit raised from {before} to {target}"),
            Err(err) => log::warn!("cannot raise the file descriptor limit above {before}: {err}"),
        }
    }
}
