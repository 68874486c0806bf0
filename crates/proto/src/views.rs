//! What the Trust Server's `/mtwilson/v2` API answers (hosts, reports, endorsements, flavors,
//! the signing key, health): the server serializes these types and the CLI deserializes them,
//! so a field cannot be renamed on one side only. Verdicts and statuses are the enums of
//! [`crate::trust`], never free strings.
//!
//! Field order is the order on the wire; `crates/server/tests/golden/` holds one answer of
//! each shape and fails when it changes.
//!
//! | route | answer |
//! |---|---|
//! | `GET /mtwilson/v2/hosts` | [`HostList`] |
//! | `GET /mtwilson/v2/hosts/{name}` | [`HostDetail`] |
//! | `GET /mtwilson/v2/reports` | [`ReportList`] |
//! | `POST /mtwilson/v2/host-attestations` | [`ReportView`] |
//! | `GET /mtwilson/v2/flavors`, `POST /mtwilson/v2/flavors` | [`FlavorList`] of the flavor type |
//! | `GET /mtwilson/v2/tpm-endorsements` | [`EndorsementList`] |
//! | `POST /mtwilson/v2/tpm-endorsements` | [`EndorsementView`] |
//! | `DELETE /mtwilson/v2/tpm-endorsements/{id}` | [`Revoked`] |
//! | `POST /mtwilson/v2/agent-events` | [`AgentEventAnswer`] |
//! | `GET /mtwilson/v2/signing-key` | [`SigningKey`] |
//! | `GET /healthz`, `GET /readyz` | [`Health`]; a failing `/readyz` is [`NotReady`] |

use serde::{Deserialize, Serialize};

use crate::trust::{HostStatus, Trust, TrustView};

/// A host in the list answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostSummary {
    /// The agent's URL.
    pub connection_url: String,
    /// Hardware UUID.
    pub hardware_uuid: String,
    /// Host name (the agent's `--host-name`).
    pub name: String,
    /// Whether the agent answers.
    pub status: HostStatus,
    /// The effective verdict at the moment of the answer.
    pub trust: TrustView,
}

/// `GET /mtwilson/v2/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostList {
    /// Hosts, by name.
    pub hosts: Vec<HostSummary>,
}

/// One host in detail (`GET /mtwilson/v2/hosts/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostDetail {
    /// The agent's URL.
    pub connection_url: String,
    /// Hardware UUID.
    pub hardware_uuid: String,
    /// The facts the agent sent at registration ([`crate::agent::HostInfo`]), as stored;
    /// `null` when unreadable.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::agent::HostInfo>))]
    pub host_info: serde_json::Value,
    /// Host name.
    pub name: String,
    /// RFC 3339, when the host registered.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub registered: String,
    /// Whether the TPM is a software TPM.
    pub software_tpm: bool,
    /// Whether the agent answers.
    pub status: HostStatus,
    /// The last agent error, if any.
    pub status_detail: Option<String>,
    /// Pinned SHA-256 (hex) of the agent's TLS certificate.
    pub tls_cert_sha256: String,
    /// The effective verdict at the moment of the answer.
    pub trust: TrustView,
}

/// A signed attestation report (`POST /mtwilson/v2/host-attestations`, and each entry of
/// [`ReportList`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportView {
    /// Host.
    pub host_name: String,
    /// The verdict.
    pub verdict: Trust,
    /// Reasons.
    pub reasons: Vec<String>,
    /// RFC 3339.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created: String,
    /// RFC 3339.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires: String,
    /// JWS (ES256) over the report, by the key of `GET /mtwilson/v2/signing-key`. Absent where
    /// the report is given to the attested host's own agent (a push result): the server signs a
    /// report when it is read from the report endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_report: Option<String>,
}

/// `GET /mtwilson/v2/reports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportList {
    /// Reports, newest first (with `latest=true` and no host, the latest of every host).
    pub reports: Vec<ReportView>,
}

/// An accepted EK (`tpm-endorsements`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndorsementView {
    /// Identifier.
    pub id: String,
    /// Hardware UUID the EK belongs to, when known.
    pub hardware_uuid: Option<String>,
    /// SHA-256 (hex) of the EK's key as canonical DER SubjectPublicKeyInfo.
    pub ek_sha256: String,
    /// EK `TPM2B_PUBLIC`, base64, when given.
    pub ek_public: Option<String>,
    /// EK certificate DER, base64, when given.
    pub certificate: Option<String>,
    /// Free text.
    pub comment: Option<String>,
    /// Whether revoked.
    pub revoked: bool,
    /// When added (Unix ms).
    pub created: i64,
}

/// `GET /mtwilson/v2/tpm-endorsements`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndorsementList {
    /// Endorsements.
    pub tpm_endorsements: Vec<EndorsementView>,
}

/// `DELETE /mtwilson/v2/tpm-endorsements/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Revoked {
    /// The endorsement.
    pub id: String,
    /// Always `true`.
    pub revoked: bool,
}

/// The flavors answer, of the flavor type `F` (`nodetrust_appraise::Flavor`; this crate does
/// not depend on the appraisal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlavorList<F> {
    /// Flavors.
    pub flavors: Vec<F>,
}

/// `POST /mtwilson/v2/agent-events` (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentEventAnswer {
    /// `true` when an attestation was scheduled for this host moments ago and this event was
    /// merged into it (absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub coalesced: bool,
    /// The host.
    pub host_name: String,
    /// Whether this event scheduled an attestation.
    pub scheduled: bool,
}

/// `GET /mtwilson/v2/signing-key`: the key that signs reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningKey {
    /// Always `ES256`.
    pub alg: String,
    /// The public key as a JWK (RFC 7517).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub jwk: serde_json::Value,
    /// Key identifier (the JWS `kid`).
    pub kid: String,
    /// The public key as PEM (SubjectPublicKeyInfo).
    pub pem: String,
}

/// `GET /healthz` (`ok`), `GET /readyz` (`ready`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

/// `GET /readyz` when the database does not take writes (503).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotReady {
    /// What fails.
    pub error: String,
    /// `database`.
    pub reason: String,
    /// `not ready`.
    pub status: String,
}
