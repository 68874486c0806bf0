//! The scheduler's own state in this process: which hosts are being attested, which were made
//! due again meanwhile, the wake-up for a host that became due now, and the coalescing of agent
//! events. The durable schedule (due times, leases) is in the store; this is what one process
//! adds to it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Hosts whose agent events are remembered for coalescing (the oldest are forgotten first).
const MAX_EVENT_HOSTS: usize = 100_000;

/// The scheduler's in-process state.
#[derive(Debug, Default)]
pub struct Queue {
    wake: Notify,
    in_flight: Mutex<HashSet<String>>,
    again: Mutex<HashSet<String>>,
    agent_events: Mutex<HashMap<String, Instant>>,
}

impl Queue {
    /// A host became due now: the scheduler looks at once instead of at its next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves at the next [`wake`](Self::wake) (or at once if one is pending).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Marks `host` as being attested by this process. False when it already is: it is then
    /// remembered, and [`finish`](Self::finish) says to attest it once more.
    pub fn start(&self, host: &str) -> bool {
        let Ok(mut busy) = self.in_flight.lock() else {
            return false;
        };
        if busy.contains(host) {
            if let Ok(mut again) = self.again.lock() {
                again.insert(host.to_string());
            }
            return false;
        }
        busy.insert(host.to_string());
        true
    }

    /// `host`'s attestation ended; true when it was made due again meanwhile.
    pub fn finish(&self, host: &str) -> bool {
        if let Ok(mut busy) = self.in_flight.lock() {
            busy.remove(host);
        }
        self.again
            .lock()
            .map(|mut a| a.remove(host))
            .unwrap_or(false)
    }

    /// Whether an agent event of `host` at `now` may schedule an attestation (at most one per
    /// `interval`); records it when it may. Memory is bounded: at most 100,000 hosts are
    /// remembered.
    pub fn agent_event_due(&self, host: &str, now: Instant, interval: Duration) -> bool {
        let Ok(mut m) = self.agent_events.lock() else {
            return true;
        };
        if m.get(host)
            .is_some_and(|t| now.saturating_duration_since(*t) < interval)
        {
            return false;
        }
        if m.len() >= MAX_EVENT_HOSTS {
            m.retain(|_, t| now.saturating_duration_since(*t) < interval);
            if m.len() >= MAX_EVENT_HOSTS {
                m.clear();
            }
        }
        m.insert(host.to_string(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn a_host_started_twice_is_attested_once_more_after_the_first() {
        let q = Queue::default();
        assert!(q.start("h1"));
        assert!(!q.start("h1"), "a host in flight started again");
        assert!(q.start("h2"));
        assert!(q.finish("h1"), "the second start was forgotten");
        assert!(!q.finish("h2"));
        assert!(q.start("h1"));
        assert!(!q.finish("h1"), "the again mark outlived its attestation");
    }

    #[test]
    fn agent_events_are_coalesced_per_host_and_interval() {
        let q = Queue::default();
        let t0 = Instant::now();
        let i = Duration::from_secs(5);
        assert!(q.agent_event_due("h1", t0, i));
        assert!(!q.agent_event_due("h1", t0 + Duration::from_secs(4), i));
        assert!(q.agent_event_due("h2", t0 + Duration::from_secs(4), i));
        assert!(q.agent_event_due("h1", t0 + Duration::from_secs(5), i));
    }
}
