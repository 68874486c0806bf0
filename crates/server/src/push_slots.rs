//! The open push-mode challenges of this process ([`PushSlots`], held in the shared state):
//! where an attestation of a push host sends its quote request and waits for the agent's
//! evidence ([`PushSlots::quote`]). The handlers that open and answer challenges are in
//! [`crate::push`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nodetrust_proto::agent::{QuoteRequest, QuoteResponse};
use nodetrust_proto::views::ReportView;
use tokio::sync::oneshot;

use crate::agent_client::{AgentConnector, AgentError, AgentTarget};
use crate::outcome::AttestError;
use crate::store::PUSH_URL;

/// How long an attestation waits for the evidence of its challenge.
pub const EVIDENCE_TIMEOUT: Duration = Duration::from_secs(30);

type Outcome = Result<ReportView, AttestError>;

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

/// The open challenges of this process, by host name.
#[derive(Default)]
pub struct PushSlots {
    pub(crate) open: Mutex<HashMap<String, Open>>,
}

impl std::fmt::Debug for PushSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.open.lock().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("PushSlots").field("open", &n).finish()
    }
}

impl PushSlots {
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
