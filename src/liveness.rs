//! When a silent WebSocket is pinged, and when it counts as gone. Pure: the
//! hub's sweep (`hub.rs`) passes in what each socket last did and the time.
//!
//! One sweep over every socket instead of a timer per socket: with
//! thousands of idle peers that is one wakeup where there would be
//! thousands, and a socket task holds no timer at all. The hub sleeps until
//! the earliest socket is due ([`Liveness::due`]), but sweeps at most once
//! per [`Liveness::sweep_every`], so sockets due at scattered moments share
//! sweeps. The price is precision: a socket may be pinged up to
//! `sweep_every` after its interval is over, and given up on up to
//! `sweep_every` after its timeout.

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
    /// The shortest time between two sweeps: a quarter of the shorter of
    /// the two durations, so neither is overrun by more than a quarter.
    pub fn sweep_every(&self) -> Duration {
        self.interval.min(self.timeout) / 4
    }

    /// When a socket next needs a look: the end of its interval, or of its
    /// timeout once it has been pinged and has not answered. `heard`: when
    /// the socket last delivered any frame (a pong, a message, a ping of its
    /// own); `pinged`: when we last pinged it, if we did.
    pub fn due(&self, heard: Instant, pinged: Option<Instant>) -> Instant {
        match pinged {
            Some(pinged) if heard < pinged => pinged + self.timeout,
            _ => heard + self.interval,
        }
    }

    /// What to do about a socket at `now`.
    pub fn judge(&self, heard: Instant, pinged: Option<Instant>, now: Instant) -> Verdict {
        if now < self.due(heard, pinged) {
            Verdict::Alive
        } else if pinged.is_some_and(|pinged| heard < pinged) {
            Verdict::Silent
        } else {
            Verdict::Ping
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
    fn a_socket_is_due_at_the_end_of_its_interval_or_of_its_timeout() {
        let start = Instant::now();
        assert_eq!(LIVENESS.due(start, None), start + secs(20));
        assert_eq!(LIVENESS.due(start, Some(start + secs(20))), start + secs(30), "pinged, no answer yet");
        assert_eq!(LIVENESS.due(start + secs(21), Some(start + secs(20))), start + secs(41), "answered");
    }

    #[test]
    fn the_sweep_overruns_neither_duration_by_more_than_a_quarter() {
        assert_eq!(LIVENESS.sweep_every(), Duration::from_millis(2500));
        let short = Liveness { interval: secs(1), timeout: secs(4) };
        assert_eq!(short.sweep_every(), Duration::from_millis(250));
    }
}
