//! systemd readiness and watchdog, in a few lines over `$NOTIFY_SOCKET`
//! (the `sd_notify(3)` protocol: one datagram per state change).
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every function here does nothing.
//! The watchdog keep-alive runs on the daemon's own executor, so if the
//! event loop stalls the keep-alives stop and systemd restarts the service.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Send one state line (`READY=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=..`).
/// `Ok(false)` when not running under systemd.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    let path = path.to_string_lossy();
    if let Some(name) = path.strip_prefix('@') {
        // An abstract socket (systemd's default for services).
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        socket.send_to_addr(state.as_bytes(), &address)?;
    } else {
        socket.send_to(state.as_bytes(), path.as_ref())?;
    }
    Ok(true)
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, as systemd
/// recommends. `None` without a watchdog, or when `WATCHDOG_PID` names
/// another process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let micros: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (micros > 0).then(|| Duration::from_micros(micros / 2))
}

/// Send `WATCHDOG=1` every `interval`, forever.
pub async fn keep_alive(interval: Duration) {
    loop {
        if let Err(err) = notify("WATCHDOG=1") {
            log::warn!("cannot reach systemd's watchdog: {err}");
        }
        smol::Timer::after(interval).await;
    }
}
