//! The clock, injected so tests can move time (verdict expiry) without waiting.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// A source of the current time: the wall clock for verdicts and expiry, the monotonic clock
/// for intervals (login back-off, caches).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> SystemTime;

    /// Now on the monotonic clock.
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A source of random bytes (nonces, registration secrets): injected beside the [`Clock`] so
/// a test can pin the values. The server always runs on [`SystemRandom`].
pub trait Random: Send + Sync + std::fmt::Debug {
    /// Fills `out`; an error when the source failed (never partial output).
    fn fill(&self, out: &mut [u8]) -> Result<(), RandomFailed>;
}

/// The random source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("system random generator failed")]
pub struct RandomFailed;

/// The operating system's CSPRNG (through aws-lc-rs).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRandom;

impl Random for SystemRandom {
    fn fill(&self, out: &mut [u8]) -> Result<(), RandomFailed> {
        aws_lc_rs::rand::fill(out).map_err(|_| RandomFailed)
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The system clock plus an offset that tests move (for tests of expiry and of clock jumps).
#[derive(Debug)]
pub struct ManualClock {
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            offset: Mutex::new(Duration::ZERO),
        }
    }
}

impl ManualClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        if let Ok(mut o) = self.offset.lock() {
            *o += by;
        }
    }

    /// Moves the clock back (a backwards jump), at most to the system clock.
    pub fn rewind(&self, by: Duration) {
        if let Ok(mut o) = self.offset.lock() {
            *o = o.saturating_sub(by);
        }
    }
}

impl ManualClock {
    fn offset(&self) -> Duration {
        self.offset.lock().map(|o| *o).unwrap_or_default()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.offset()
    }

    /// Monotonic time moves with [`advance`](Self::advance) too; a [`rewind`](Self::rewind)
    /// moves it back no further than the real monotonic clock.
    fn instant(&self) -> Instant {
        Instant::now() + self.offset()
    }
}
