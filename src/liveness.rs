//! When a silent WebSocket is pinged, and when it counts as gone. Pure: the
//! hub's sweep (`hub.rs`) passes in what each socket last did and the time.
//!
//! One sweep over every socket, every `sweep_every`, instead of a timer per
//! socket: with thousands of idle peers that is one wakeup where there
//! would be thousands, and a socket task holds no timer at all. The price is
//! precision: a socket is pinged between `interval` and `interval +
//! sweep_every` after it last said anything, and given up on between
//! `timeout` and `timeout + sweep_every` after the ping.

use std::time::{Duration, Instant};

/// `--ping-interval` and `--ping-timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// A socket silent this long is pinged.
    pub interval: Duration,
    /// A pinged socket that says nothing for this long is gone.
    pub timeout: Duration,
}

/// What a sweep does about one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Heard from recently enough, or pinged and still within the timeout.
    Alive,
    /// Silent for the interval: ping it now.
    Ping,
    /// Pinged, and silent for the timeout since: close it (4009).
    Silent,
}

impl Liveness {
    /// How often the hub sweeps while any socket is open: a quarter of the
    /// shorter of the two durations, so neither is overrun by more than a
    /// quarter.
    pub fn sweep_every(&self) -> Duration {
        self.interval.min(self.timeout) / 4
    }

    /// `heard`: when the socket last delivered any frame (a pong, a message,
    /// a ping of its own). `pinged`: when we last pinged it, if we did.
    pub fn judge(&self, heard: Instant, pinged: Option<Instant>, now: Instant) -> Verdict {
        match pinged {
            // Nothing since the ping.
            Some(pinged) if heard < pinged => {
                if now.saturating_duration_since(pinged) >= self.timeout {
                    Verdict::Silent
                } else {
                    Verdict::Alive
                }
            }
            _ if now.saturating_duration_since(heard) >= self.interval => Verdict::Ping,
            _ => Verdict::Alive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVENESS: Liveness = Liveness { interval: Duration::from_secs(20), timeout: Duration::from_secs(10) };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_silent_socket_is_pinged_after_the_interval() {
        let start = Instant::now();
        assert_eq!(LIVENESS.judge(start, None, start), Verdict::Alive);
        assert_eq!(LIVENESS.judge(start, None, start + secs(20) - Duration::from_millis(1)), Verdict::Alive);
        assert_eq!(LIVENESS.judge(start, None, start + secs(20)), Verdict::Ping);
        // Any frame restarts the interval.
        assert_eq!(LIVENESS.judge(start + secs(15), None, start + secs(20)), Verdict::Alive);
    }

    #[test]
    fn a_pinged_socket_is_given_the_timeout_to_answer() {
        let start = Instant::now();
        let pinged = Some(start + secs(20));
        assert_eq!(LIVENESS.judge(start, pinged, start + secs(25)), Verdict::Alive, "waiting for the pong");
        assert_eq!(LIVENESS.judge(start, pinged, start + secs(30) - Duration::from_millis(1)), Verdict::Alive);
        assert_eq!(LIVENESS.judge(start, pinged, start + secs(30)), Verdict::Silent);
    }

    #[test]
    fn an_answer_to_the_ping_starts_a_new_interval() {
        let start = Instant::now();
        let pinged = Some(start + secs(20));
        let pong = start + secs(21);
        assert_eq!(LIVENESS.judge(pong, pinged, start + secs(35)), Verdict::Alive, "answered: not silent");
        assert_eq!(LIVENESS.judge(pong, pinged, start + secs(41)), Verdict::Ping, "silent again: pinged again");
    }

    #[test]
    fn a_clock_that_goes_back_changes_nothing() {
        let start = Instant::now() + secs(100);
        assert_eq!(LIVENESS.judge(start, None, start - secs(50)), Verdict::Alive);
        assert_eq!(LIVENESS.judge(start - secs(50), Some(start), start - secs(1)), Verdict::Alive);
    }

    #[test]
    fn the_sweep_overruns_neither_duration_by_more_than_a_quarter() {
        assert_eq!(LIVENESS.sweep_every(), Duration::from_millis(2500));
        let short = Liveness { interval: secs(1), timeout: secs(4) };
        assert_eq!(short.sweep_every(), Duration::from_millis(250));
    }
}
