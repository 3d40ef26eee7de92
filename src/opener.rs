//! Opening a door: the command of `--door-open`, run with a time limit and
//! no shell, its exit status and the start of its output in the log.
//!
//! `open` is called with an `Opening` the hub granted (`Hub::authorize_door`
//! or `Hub::authorize_door_by_mqtt`); the door is marked as opening until
//! the command ends, so a second open while one runs is refused, not
//! queued. The event and the door station's "door opened" go out when the
//! command has started; whoever asked is told how it ended.
//!
//! Only with `--door-open`: a daemon without it never spawns a process.
//! The command is std's; its end is awaited on the daemon's own reactor
//! through a pidfd (smol's `process`, async-process, cost 25 KiB more binary
//! and a reaper thread).

use std::cell::RefCell;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use log::{info, warn};
use rustix::process::{pidfd_open, Pid, PidfdFlags};
use smol::io::AsyncReadExt;
use smol::{Async, Timer};

use crate::door::{Opening, MAX_OUTPUT_BYTES};
use crate::hub::Hub;
use crate::stream::with_timeout;

/// How a door's command ended.
#[derive(Debug)]
pub enum Outcome {
    /// It ran and exited with `status` after `took`.
    Exited { status: ExitStatus, took: Duration, output: String },
    /// It was still running at the time limit and was killed.
    Killed { after: Duration, output: String },
    /// It could not be started.
    NotStarted(io::Error),
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Exited { status, .. } if status.success())
    }
}

/// Open the door of `opening` (granted by the hub): start its command, tell
/// everyone, wait for it within `limit`, log how it went, and free the door.
pub async fn open(hub: &RefCell<Hub>, opening: &Opening, limit: Duration) -> Outcome {
    let door = &opening.door;
    // Whatever happens to this future (it ends, or its task is dropped with
    // the command still running, which `kill_on_drop` then kills), the door
    // is free again after it.
    let _free = Free { hub, door };
    let outcome = run(&opening.command, limit, || hub.borrow_mut().door_opening(opening)).await;
    let by = match (&opening.call, &opening.key) {
        (Some(call), Some(key)) => format!("{} (call {call}, device key {key})", opening.by),
        (Some(call), None) => format!("{} (call {call})", opening.by),
        (None, _) => opening.by.clone(),
    };
    let program = &opening.command[0];
    match &outcome {
        Outcome::Exited { status, took, output } if status.success() => {
            info!("door {door} opened by {by}: {program} exited 0 after {} s{}", tenths(*took), said(output));
        }
        Outcome::Exited { status, took, output } => {
            warn!("door {door}: opening for {by} failed: {program} {status} after {} s{}", tenths(*took), said(output));
        }
        Outcome::Killed { after, output } => {
            warn!("door {door}: opening for {by}: {program} still ran after {after:?}, killed{}", said(output));
        }
        Outcome::NotStarted(error) => warn!("door {door}: cannot open for {by}: cannot run {program}: {error}"),
    }
    outcome
}

/// Frees its door when dropped.
struct Free<'a> {
    hub: &'a RefCell<Hub>,
    door: &'a str,
}

impl Drop for Free<'_> {
    fn drop(&mut self) {
        // A drop never happens inside a borrow of the hub (no borrow spans
        // an await); `try_` all the same, as a drop must not panic.
        if let Ok(mut hub) = self.hub.try_borrow_mut() {
            hub.door_finished(self.door);
        }
    }
}

/// Seconds with one decimal, `3.0`, without the float formatting code
/// (12 KiB of binary for two log lines).
fn tenths(took: Duration) -> String {
    let tenths = took.as_millis() / 100;
    format!("{}.{}", tenths / 10, tenths % 10)
}

/// `: "<output>"`, or nothing when there was none.
fn said(output: &str) -> String {
    let output = output.trim();
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output:?}")
    }
}

/// Run `command` (program and arguments, no shell) with no input; once it
/// started, `started()`. Waits for it to exit within `limit`, else kills it.
/// Keeps the first `MAX_OUTPUT_BYTES` of what it writes to stdout and
/// stderr (the rest is read and dropped, so it never blocks on a full pipe).
///
/// The wait is a pidfd (Linux 5.3 and newer: every Raspberry Pi OS)
/// becoming readable on the daemon's own reactor: no thread, no timer; on an
/// older kernel, `try_wait` every `POLL_WITHOUT_PIDFD`.
pub async fn run(command: &[String], limit: Duration, started: impl FnOnce()) -> Outcome {
    let begun = Instant::now();
    let spawned = std::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => Killed(child),
        Err(error) => return Outcome::NotStarted(error),
    };
    started();
    let stdout = child.0.stdout.take().and_then(|pipe| Async::new(pipe).ok());
    let stderr = child.0.stderr.take().and_then(|pipe| Async::new(pipe).ok());
    let output = RefCell::new(Vec::new());
    let pidfd = pidfd_open(Pid::from_child(&child.0), PidfdFlags::empty()).ok().and_then(|fd| Async::new(fd).ok());
    let finished = with_timeout(limit, async {
        let reading = smol::future::zip(keep(stdout, &output), keep(stderr, &output));
        let waiting = async {
            loop {
                match child.0.try_wait() {
                    Ok(Some(status)) => return Ok(status),
                    Ok(None) => {}
                    Err(error) => return Err(error),
                }
                match &pidfd {
                    Some(pidfd) => pidfd.readable().await?,
                    None => {
                        Timer::after(POLL_WITHOUT_PIDFD).await;
                    }
                }
            }
        };
        let (_, status) = smol::future::zip(reading, waiting).await;
        status
    })
    .await;
    let text = String::from_utf8_lossy(&output.borrow()).into_owned();
    match finished {
        Some(Ok(status)) => Outcome::Exited { status, took: begun.elapsed(), output: text },
        Some(Err(error)) => Outcome::NotStarted(error),
        // `Killed` kills and reaps it.
        None => Outcome::Killed { after: limit, output: text },
    }
}

/// Without a pidfd, how often a running command is asked whether it ended.
const POLL_WITHOUT_PIDFD: Duration = Duration::from_millis(100);

/// A child that is killed and reaped when dropped, unless it exited: a door
/// command never outlives its time, nor its caller (a task dropped at
/// shutdown), nor stays a zombie.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            // SIGKILL cannot be caught: the wait is the kernel's moment.
            let _ = self.0.wait();
        }
    }
}

/// Read `pipe` to its end, keeping what fits in `MAX_OUTPUT_BYTES` of `output`.
async fn keep(pipe: Option<impl smol::io::AsyncRead + Unpin>, output: &RefCell<Vec<u8>>) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = [0u8; 256];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                let mut output = output.borrow_mut();
                let room = MAX_OUTPUT_BYTES.saturating_sub(output.len());
                output.extend_from_slice(&chunk[..read.min(room)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn a_command_runs_without_a_shell_and_its_output_is_kept() {
        smol::block_on(async {
            let mut began = false;
            let outcome = run(&words("/bin/echo $HOME ; done"), Duration::from_secs(30), || began = true).await;
            assert!(began);
            match outcome {
                Outcome::Exited { status, output, .. } => {
                    assert!(status.success());
                    // No shell: `$HOME` and `;` are plain words.
                    assert_eq!(output, "$HOME ; done\n");
                }
                other => panic!("{other:?}"),
            }
        });
    }

    #[test]
    fn a_failing_command_says_its_status() {
        smol::block_on(async {
            let outcome = run(&words("/bin/false"), Duration::from_secs(30), || {}).await;
            assert!(!outcome.succeeded());
            assert!(matches!(outcome, Outcome::Exited { status, .. } if status.code() == Some(1)));
        });
    }

    #[test]
    fn a_command_that_hangs_is_killed_at_the_limit() {
        smol::block_on(async {
            let begun = Instant::now();
            let outcome = run(&words("/bin/sleep 600"), Duration::from_millis(300), || {}).await;
            assert!(matches!(outcome, Outcome::Killed { .. }), "{outcome:?}");
            // Killed, not waited for: far less than the 600 s it asked for.
            assert!(begun.elapsed() < Duration::from_secs(300));
        });
    }

    #[test]
    fn a_missing_program_is_not_started_and_calls_nothing() {
        smol::block_on(async {
            let mut began = false;
            let outcome = run(&words("/nonexistent/opener"), Duration::from_secs(30), || began = true).await;
            assert!(matches!(outcome, Outcome::NotStarted(_)));
            assert!(!began);
        });
    }

    #[test]
    fn a_chatty_command_keeps_only_the_start_of_its_output() {
        smol::block_on(async {
            let outcome = run(&words("/usr/bin/seq 100000"), Duration::from_secs(60), || {}).await;
            match outcome {
                Outcome::Exited { status, output, .. } => {
                    assert!(status.success());
                    assert_eq!(output.len(), MAX_OUTPUT_BYTES);
                    assert!(output.starts_with("1\n2\n3\n"));
                }
                other => panic!("{other:?}"),
            }
        });
    }
}
