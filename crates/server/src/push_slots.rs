//! The open push-mode challenges of this process ([`PushSlots`], held in the shared state):
//! where an attestation of a push host sends its quote request and waits for the agent's
//! evidence ([`PushSlots::quote`]), and the challenges given ahead with a verdict, which the
//! host's next evidence answers without asking ([`GivenAhead`]). The handlers that open and
//! answer challenges are in [`crate::push`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodetrust_proto::agent::{QuoteRequest, QuoteResponse};
use nodetrust_tpm_wire::verify::PreparedAk;
use tokio::sync::oneshot;

use crate::agent_client::{AgentConnector, AgentError, AgentTarget};
use crate::outcome::AttestError;
use crate::outcome::{Attested, ClockAnchor};
use crate::store::{HostRow, PUSH_URL};

/// How long an attestation waits for the evidence of its challenge.
pub const EVIDENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// How old a pushed quote may provably be, at most, when it answers a challenge given ahead
/// (as long as the evidence of a challenge asked for is awaited).
pub const FRESH_WITHIN: Duration = EVIDENCE_TIMEOUT;

/// Most challenges given ahead kept at once (one per push host).
pub const MAX_AHEAD: usize = 200_000;

type Outcome = Result<Attested, AttestError>;

/// A challenge given ahead: the quote request sent with a host's verdict, which its next
/// evidence answers without asking for a challenge.
#[derive(Debug)]
pub(crate) struct GivenAhead {
    pub(crate) request: QuoteRequest,
    /// When it was given (Unix ms).
    pub(crate) issued_at: i64,
    /// Until when its evidence is taken (Unix ms).
    pub(crate) until: i64,
    /// The clock of the quote it followed.
    pub(crate) since: ClockAnchor,
    /// The host's row as its next attestation needs it ([`crate::engine::Ahead::host`]).
    pub(crate) host: HostRow,
    /// Its pinned AK, prepared ([`crate::engine::Ahead::ak`]).
    pub(crate) ak: Arc<PreparedAk>,
    /// The host's [`crate::store::host_key`]: when it is due next.
    pub(crate) key: i64,
}

/// One open challenge.
pub(crate) struct Open {
    /// Set until the attestation asks: where its quote request goes.
    pub(crate) want: Option<oneshot::Sender<QuoteRequest>>,
    /// The quote request, once asked.
    pub(crate) request: Option<QuoteRequest>,
    /// Where the evidence goes, once asked.
    pub(crate) evidence: Option<oneshot::Sender<QuoteResponse>>,
    /// The attestation's outcome.
    pub(crate) done: Option<oneshot::Receiver<Outcome>>,
    pub(crate) opened: Instant,
}

/// The open challenges of this process, and the challenges it gave ahead, by host name.
#[derive(Default)]
pub struct PushSlots {
    pub(crate) open: Mutex<HashMap<String, Open, foldhash::quality::RandomState>>,
    pub(crate) ahead: Mutex<HashMap<String, GivenAhead, foldhash::quality::RandomState>>,
}

impl std::fmt::Debug for PushSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.open.lock().map(|m| m.len()).unwrap_or_default();
        let a = self.ahead.lock().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("PushSlots")
            .field("open", &n)
            .field("ahead", &a)
            .finish()
    }
}

impl PushSlots {
    /// Keeps `given` as `host`'s challenge given ahead (replacing any other); false when
    /// [`MAX_AHEAD`] are kept and none has expired at `now` (Unix ms).
    pub(crate) fn give_ahead(&self, host: &str, given: GivenAhead, now: i64) -> bool {
        let Ok(mut m) = self.ahead.lock() else {
            return false;
        };
        if m.len() >= MAX_AHEAD && !m.contains_key(host) {
            m.retain(|_, g| g.until >= now);
            if m.len() >= MAX_AHEAD {
                return false;
            }
        }
        m.insert(host.to_string(), given);
        true
    }

    /// Takes `host`'s challenge given ahead if its nonce is `nonce`.
    pub(crate) fn take_ahead(&self, host: &str, nonce: &[u8]) -> Option<GivenAhead> {
        let mut m = self.ahead.lock().ok()?;
        if m.get(host)?.request.nonce == nonce {
            m.remove(host)
        } else {
            None
        }
    }

    /// Forgets `host`'s challenge given ahead (its agent asked for a new one).
    pub(crate) fn forget_ahead(&self, host: &str) {
        if let Ok(mut m) = self.ahead.lock() {
            m.remove(host);
        }
    }

    /// The quote of an attestation: from the network (`agents`) for a pull host, from the open
    /// challenge of a push host (whose agent is never connected to).
    pub async fn quote(
        &self,
        agents: &dyn AgentConnector,
        target: &AgentTarget,
        req: &QuoteRequest,
    ) -> Result<QuoteResponse, AgentError> {
        if target.url != PUSH_URL {
            return agents.quote(target, req).await;
        }
        let (tx, rx) = oneshot::channel();
        let asked = self.open.lock().ok().and_then(|mut m| {
            let o = m.get_mut(&target.host_name)?;
            let want = o.want.take()?;
            want.send(req.clone()).ok()?;
            o.request = Some(req.clone());
            o.evidence = Some(tx);
            Some(())
        });
        if asked.is_none() {
            return Err(AgentError::Connect(
                "the host pushes its evidence: the server does not connect to its agent".into(),
            ));
        }
        let got = tokio::time::timeout(EVIDENCE_TIMEOUT, rx).await;
        if !matches!(got, Ok(Ok(_))) {
            // Forget the challenge if it is still this one.
            if let Ok(mut m) = self.open.lock() {
                if m.get(&target.host_name)
                    .and_then(|o| o.request.as_ref())
                    .is_some_and(|r| r.nonce == req.nonce)
                {
                    m.remove(&target.host_name);
                }
            }
        }
        match got {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(AgentError::Connect(
                "the push challenge was withdrawn".into(),
            )),
            Err(_) => Err(AgentError::Timeout(EVIDENCE_TIMEOUT)),
        }
    }
}
