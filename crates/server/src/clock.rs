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

/// The operating system's CSPRNG (through aws-lc-rs), drawn a block at a time
/// ([`fill_random`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRandom;

impl Random for SystemRandom {
    fn fill(&self, out: &mut [u8]) -> Result<(), RandomFailed> {
        fill_random(out)
    }
}

/// Bytes each thread draws from aws-lc's generator at once for [`fill_random`].
const RANDOM_BLOCK: usize = 4096;

/// A thread's block of random bytes not yet handed out: `block[used..]`.
struct RandomBlock {
    block: Box<[u8; RANDOM_BLOCK]>,
    used: usize,
}

thread_local! {
    static RANDOM: std::cell::RefCell<RandomBlock> = std::cell::RefCell::new(RandomBlock {
        block: Box::new([0; RANDOM_BLOCK]),
        used: RANDOM_BLOCK,
    });
}

/// Fills `out` from aws-lc's generator (a CTR-DRBG seeded by the operating system), through a
/// block of 4 KiB a thread draws at once: each call of the generator costs about a
/// microsecond whatever it draws (a `RDRAND` and an AES key schedule), and an attestation
/// wants three small values (its nonce, its report's id, when to push next;
/// docs/PERFORMANCE.md, "Scale, twenty-third round"). Bytes handed out are erased from the
/// block. A request of more than a quarter of the block is drawn directly. An error when the
/// generator failed; `out` is then left as it was.
pub fn fill_random(out: &mut [u8]) -> Result<(), RandomFailed> {
    if out.len() > RANDOM_BLOCK / 4 {
        return draw(out);
    }
    RANDOM
        .try_with(|cell| {
            let mut r = cell.try_borrow_mut().map_err(|_| RandomFailed)?;
            let r = &mut *r;
            if RANDOM_BLOCK.saturating_sub(r.used) < out.len() {
                draw(r.block.as_mut_slice())?;
                r.used = 0;
            }
            let end = r.used + out.len();
            let taken = r.block.get_mut(r.used..end).ok_or(RandomFailed)?;
            out.copy_from_slice(taken);
            taken.fill(0);
            r.used = end;
            Ok(())
        })
        .unwrap_or_else(|_| draw(out))
}

/// Fills `out` from aws-lc's generator directly.
fn draw(out: &mut [u8]) -> Result<(), RandomFailed> {
    aws_lc_rs::rand::fill(out).map_err(|_| RandomFailed)
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// What a thread's block holds now: the bytes not yet handed out, and how many those are.
    fn left_in_block() -> (usize, bool) {
        RANDOM.with(|cell| {
            let r = cell.borrow();
            let handed_out_erased = r.block[..r.used].iter().all(|&b| b == 0);
            (RANDOM_BLOCK - r.used, handed_out_erased)
        })
    }

    #[test]
    fn random_bytes_come_from_a_block_and_never_repeat() {
        // Ids of 16 bytes across several blocks (and a size that does not divide the block):
        // all distinct, none zero.
        let mut seen = HashSet::new();
        for i in 0..3 * RANDOM_BLOCK / 16 {
            let mut id = [0u8; 16];
            fill_random(&mut id).unwrap();
            assert_ne!(id, [0; 16]);
            assert!(seen.insert(id), "value {i} repeated");
            let mut odd = [0u8; 24];
            fill_random(&mut odd).unwrap();
            assert!(seen.insert(odd[..16].try_into().unwrap()));
            // What was handed out is no longer in memory.
            let (_, erased) = left_in_block();
            assert!(erased);
        }
        // A draw takes its bytes from the block, or starts a new one when fewer are left.
        let (left, _) = left_in_block();
        let mut small = [0u8; 8];
        fill_random(&mut small).unwrap();
        let expected = if left >= 8 {
            left - 8
        } else {
            RANDOM_BLOCK - 8
        };
        assert_eq!(left_in_block().0, expected);
        // Larger than a quarter block: drawn directly, the block untouched.
        let before = left_in_block().0;
        let mut big = vec![0u8; RANDOM_BLOCK];
        fill_random(&mut big).unwrap();
        assert_eq!(left_in_block().0, before);
        assert!(big.iter().any(|&b| b != 0));
        // Through the injected source too.
        let mut nonce = [0u8; 32];
        SystemRandom.fill(&mut nonce).unwrap();
        let expected = if before >= 32 {
            before - 32
        } else {
            RANDOM_BLOCK - 32
        };
        assert_eq!(left_in_block().0, expected);
    }
}
