//! The clock, injected so tests can move time (verdict expiry) without waiting.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> SystemTime;
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

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.offset.lock().map(|o| *o).unwrap_or_default()
    }
}
