//! The circuit breaker in front of Redis: after `failures` consecutive failed operations it
//! opens and every operation is skipped (L1 and the origin carry on without L2); after
//! `cooldown` one probe is let through, whose success closes it and whose failure opens it
//! again for another cooldown.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Operations go to Redis.
    Closed,
    /// Redis failed: operations are skipped until the cooldown ends.
    Open,
    /// One probe is on its way; the rest are skipped until it answers.
    Probing,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::Probing => "probing",
        }
    }
}

struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Instant,
}

pub struct Breaker {
    failures_to_open: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(failures_to_open: u32, cooldown: Duration) -> Breaker {
        Breaker {
            failures_to_open: failures_to_open.max(1),
            cooldown,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: Instant::now(),
            }),
        }
    }

    /// Whether an operation may go to Redis now. Every admitted operation must be followed
    /// by [`Breaker::succeeded`] or [`Breaker::failed`].
    pub fn admit(&self, now: Instant) -> bool {
        let mut inner = self.inner.lock();
        match inner.state {
            BreakerState::Closed => true,
            BreakerState::Probing => false,
            BreakerState::Open if now.duration_since(inner.opened_at) >= self.cooldown => {
                inner.state = BreakerState::Probing;
                true
            }
            BreakerState::Open => false,
        }
    }

    pub fn succeeded(&self) {
        let mut inner = self.inner.lock();
        inner.state = BreakerState::Closed;
        inner.consecutive_failures = 0;
    }

    /// Returns true when this failure opened the breaker.
    pub fn failed(&self, now: Instant) -> bool {
        let mut inner = self.inner.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let opens = match inner.state {
            BreakerState::Probing => true,
            BreakerState::Closed => inner.consecutive_failures >= self.failures_to_open,
            BreakerState::Open => false,
        };
        if opens {
            inner.state = BreakerState::Open;
            inner.opened_at = now;
        }
        opens
    }

    pub fn state(&self) -> BreakerState {
        self.inner.lock().state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(2);

    #[test]
    fn it_opens_after_the_set_number_of_consecutive_failures() {
        let breaker = Breaker::new(3, COOLDOWN);
        let now = Instant::now();
        assert!(!breaker.failed(now));
        breaker.succeeded();
        assert!(!breaker.failed(now));
        assert!(!breaker.failed(now));
        assert!(breaker.admit(now));
        assert!(breaker.failed(now));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.admit(now + Duration::from_millis(1999)));
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_and_its_success_closes_it() {
        let breaker = Breaker::new(1, COOLDOWN);
        let now = Instant::now();
        breaker.failed(now);
        let later = now + COOLDOWN;
        assert!(breaker.admit(later));
        assert_eq!(breaker.state(), BreakerState::Probing);
        assert!(!breaker.admit(later), "only one probe at a time");
        breaker.succeeded();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.admit(later));
    }

    #[test]
    fn a_failed_probe_opens_it_for_another_cooldown() {
        let breaker = Breaker::new(1, COOLDOWN);
        let now = Instant::now();
        breaker.failed(now);
        let probe_time = now + COOLDOWN;
        assert!(breaker.admit(probe_time));
        assert!(breaker.failed(probe_time));
        assert!(!breaker.admit(probe_time + COOLDOWN / 2));
        assert!(breaker.admit(probe_time + COOLDOWN));
    }
}
