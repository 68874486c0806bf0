//! Registration: how an agent makes itself known to the server and proves its AK.
//!
//! 1. `POST /mtwilson/v2/hosts/register` [`RegisterRequest`] (agent account) →
//!    [`RegisterChallenge`]: the server checks the EK against its CA bundle and the
//!    `tpm-endorsements`, then runs MakeCredential for (EK, AK Name).
//! 2. The agent runs `TPM2_ActivateCredential` and posts the secret to
//!    `POST /mtwilson/v2/hosts/register/{challenge_id}/activate` [`ActivateRequest`] →
//!    [`RegisterResult`]. Only now is the AK pinned for the host.
//! 3. After every (re)start the agent posts [`AgentStarted`] to `POST /mtwilson/v2/agent-events`,
//!    so the server attests it at once.

use serde::{Deserialize, Serialize};

use crate::agent::HostInfo;

/// Step 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Host facts.
    pub host: HostInfo,
    /// URL the server uses to reach the agent (`https://10.0.0.5:1443`).
    pub connection_url: String,
    /// SHA-256 fingerprint (hex) of the agent's TLS certificate, pinned by the server.
    pub tls_cert_sha256: String,
    /// EK `TPM2B_PUBLIC`.
    #[serde(with = "crate::b64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, content_encoding = "base64"))]
    pub ek_public: Vec<u8>,
    /// EK certificate (DER), when the TPM has one in NV.
    #[serde(
        with = "crate::b64::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, content_encoding = "base64"))]
    pub ek_certificate: Option<Vec<u8>>,
    /// AK `TPM2B_PUBLIC`.
    #[serde(with = "crate::b64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, content_encoding = "base64"))]
    pub aik: Vec<u8>,
    /// How the server attests the host ([`crate::push`]): `pull` (default: the server asks the
    /// agent at `connection_url`) or `push` (the agent sends its evidence; `connection_url` and
    /// `tls_cert_sha256` are not used).
    #[serde(default, skip_serializing_if = "crate::push::AgentMode::is_pull")]
    pub mode: crate::push::AgentMode,
}

/// The server's MakeCredential challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterChallenge {
    /// Identifies the pending registration.
    pub challenge_id: String,
    /// `TPM2B_ID_OBJECT` contents.
    #[serde(with = "crate::b64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, content_encoding = "base64"))]
    pub credential_blob: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET` contents.
    #[serde(with = "crate::b64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, content_encoding = "base64"))]
    pub encrypted_secret: Vec<u8>,
}

/// Step 2: the secret ActivateCredential recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// The recovered secret.
    #[serde(with = "crate::b64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, content_encoding = "base64"))]
    pub secret: Vec<u8>,
}

/// The outcome of a completed registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResult {
    /// Host name under which the server knows the host.
    pub host_name: String,
    /// Hardware UUID.
    pub hardware_uuid: String,
    /// Whether an earlier registration of the same hardware UUID was replaced (reimaged node).
    pub replaced: bool,
}

/// Step 3: the agent (re)started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentStarted {
    /// Host name.
    pub host_name: String,
    /// Hardware UUID.
    pub hardware_uuid: String,
}
