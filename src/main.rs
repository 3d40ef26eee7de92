//! The `intercomd` binary: parse flags, start logging, bind, run until
//! SIGTERM or SIGINT. Everything else lives in the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use async_signal::{Signal, Signals};
use intercomd::config::Config;
use intercomd::server::Listeners;
use intercomd::systemd;
use intercomd::tls::Certificates;
use log::{error, info, LevelFilter};
use smol::stream::StreamExt;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = match Config::from_args(&args) {
        Ok(config) => config,
        Err((help, 0)) => {
            println!("{help}");
            return ExitCode::SUCCESS;
        }
        Err((message, code)) => {
            eprintln!("{message}");
            return ExitCode::from(code as u8);
        }
    };
    // Our own lines at the chosen level; the libraries' only when they warn,
    // so `--log-level debug` shows the daemon's decisions, not every poll.
    let logger = simple_logger::SimpleLogger::new()
        .with_level(LevelFilter::Warn.min(config.log_level))
        .with_module_level("intercomd", config.log_level);
    if let Err(err) = logger.init() {
        eprintln!("error: cannot start logging: {err}");
        return ExitCode::FAILURE;
    }

    raise_file_limit();

    smol::block_on(async {
        let signals = match Signals::new([Signal::Term, Signal::Int]) {
            Ok(signals) => signals,
            Err(err) => {
                error!("cannot install signal handlers: {err}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match async_net::TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(err) => {
                error!("cannot listen on {}: {err}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        info!("intercomd {} starting", env!("CARGO_PKG_VERSION"));
        let https = match &config.https {
            None => None,
            Some(https) => {
                // Made or read before the listener exists, so a bad key file
                // is a clear error at start rather than failed handshakes.
                let certificates = match Certificates::load(&https.certificate) {
                    Ok(certificates) => certificates,
                    Err(err) => {
                        error!("cannot set up HTTPS: {err}");
                        return ExitCode::FAILURE;
                    }
                };
                match async_net::TcpListener::bind(https.listen).await {
                    Ok(listener) => Some((listener, certificates)),
                    Err(err) => {
                        error!("cannot listen on {} (--https-listen): {err}", https.listen);
                        return ExitCode::FAILURE;
                    }
                }
            }
        };
        let listeners = Listeners { http: listener, https };
        let shutdown = async move {
            let mut signals = signals;
            if let Some(Ok(signal)) = signals.next().await {
                info!("received {signal:?}");
            }
            let _ = systemd::notify("STOPPING=1");
        };
        // The listener is bound: connections queue from here on.
        if let Err(err) = systemd::notify("READY=1") {
            error!("cannot tell systemd we are ready: {err}");
        }
        let keep_alive = async {
            match systemd::watchdog_interval() {
                Some(interval) => systemd::keep_alive(interval).await,
                None => std::future::pending().await,
            }
        };
        let running = smol::future::or(intercomd::server::run(config, listeners, shutdown), async {
            keep_alive.await;
            Ok(())
        });
        match running.await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                error!("{err}");
                ExitCode::FAILURE
            }
        }
    })
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
