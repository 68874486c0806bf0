//! Wire types shared by the agent, the server and the CLI. Serde only: no I/O.
//!
//! Names follow the OpenCIT v2 APIs where the runbook relies on them (snake_case JSON, paths
//! under `/v2` on the agent and `/mtwilson/v2` on the server). Binary fields are standard
//! base64 ([`b64`]). Request types reject unknown fields, so a typo is a 400, not a silent
//! default.
//!
//! # Layout
//! - [`agent`]: the Trust Agent API (`/version`, `/v2/host`, `/v2/tpm/quote`, `/v2/aik`, `/v2/ek`).
//! - [`registration`]: the agent-to-server exchange (register, activate credential, started).
//! - [`trust`]: verdicts, host status, [`trust::EffectiveTrust::at`] and the change feed.
//! - [`users`]: the server's accounts API.
//! - [`views`]: the server's answers (hosts, reports, endorsements, flavors, signing key).
//! - [`ErrorBody`]: the JSON error every API returns with a 4xx/5xx.
#![forbid(unsafe_code)]

pub mod agent;
pub mod b64;
pub mod push;
pub mod registration;
pub mod trust;
pub mod users;
pub mod views;

use serde::{Deserialize, Serialize};

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A sentence for a human: what was wrong, and what to do.
    pub error: String,
    /// A stable machine-readable reason (`bad_request`, `unauthorized`, `nonce_too_long`...).
    pub reason: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(reason: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            reason: reason.into(),
        }
    }
}
