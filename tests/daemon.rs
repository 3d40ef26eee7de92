//! The binary as a process: its command line and its shutdown.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Client, Daemon};

fn binary() -> String {
    std::env::var("INTERCOMD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_intercomd").to_string())
}

#[test]
fn bad_flags_exit_2_with_one_line_naming_the_flag() {
    for (args, flag) in [
        (&["--max-peers", "lots"][..], "--max-peers"),
        (&["--max-peers", "0"], "--max-peers"),
        (&["--listen", "not-an-address"], "--listen"),
        (&["--max-message-bytes", "1"], "--max-message-bytes"),
        (&["--max-rate", "fast"], "--max-rate"),
        (&["--stun", "turn:x"], "--stun"),
        (&["--allow-origin", "*"], "--allow-origin"),
        (&["--log-level", "chatty"], "--log-level"),
        (&["--www", "/no/such/dir"], "--www"),
        (&["--https-listen", "here"], "--https-listen"),
        (&["--tls-cert", "a.pem"], "--tls-cert"),
        (&["--no-such-flag"], "--no-such-flag"),
    ] {
        let output = Command::new(binary()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: one line, got {stderr:?}");
        assert!(stderr.contains(flag), "{args:?}: {stderr:?} should name {flag}");
    }
}

#[test]
fn help_lists_every_flag() {
    let output = Command::new(binary()).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--www",
        "--stun",
        "--no-stun",
        "--max-peers",
        "--max-message-bytes",
        "--max-rate",
        "--allow-origin",
        "--log-level",
        "--https-listen",
        "--no-https",
        "--state-dir",
        "--tls-cert",
        "--tls-key",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn sigterm_closes_every_socket_with_1001_and_exits() {
    smol::block_on(async {
        let mut daemon = Daemon::start(&[]);
        let (mut a, _) = Client::join(&daemon, "a", None).await;
        let (mut b, _) = Client::join(&daemon, "b", None).await;
        a.recv_type("peer-joined").await;
        daemon.terminate();
        assert_eq!(a.expect_close().await.0, 1001);
        assert_eq!(b.expect_close().await.0, 1001);
        let status = daemon.wait_exit(Duration::from_secs(5));
        assert!(status.success(), "{status:?}");
        daemon.wait_for_log("shutting down");
    });
}
