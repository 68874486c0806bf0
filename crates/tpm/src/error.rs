//! TPM errors an operator can act on.
//!
//! Each variant says what happened and what to do, in plain words: these messages end up in the
//! agent's log and in its API errors. [`TpmError::reason`] is a stable label for metrics.
//! [`classify`] turns a TSS response code into the variant that explains it.

/// A failure of the TPM port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TpmError {
    /// No TPM answers on the configured TCTI.
    #[error(
        "no TPM reachable through `{tcti}` ({detail}). Remedy: check that the machine has a TPM 2.0 and \
         that it is enabled in the firmware setup, that the kernel driver is loaded (/dev/tpmrm0 exists), \
         and that the device is mounted into the container; or point --tcti at the right TPM"
    )]
    NoDevice {
        /// The TCTI configuration.
        tcti: String,
        /// What the TSS reported.
        detail: String,
    },
    /// The owner / endorsement authorization was refused.
    #[error(
        "the TPM refused the owner/endorsement authorization: TPM_OWNER_SECRET is wrong or missing ({detail}). \
         Remedy: set TPM_OWNER_SECRET to the secret the TPM's owner and endorsement hierarchies were given \
         (`hex:...` for raw bytes), or clear the TPM's ownership in the firmware setup so no secret is needed"
    )]
    WrongOwnerSecret {
        /// What the TSS reported.
        detail: String,
    },
    /// The TPM is in dictionary-attack lockout.
    #[error(
        "the TPM is in dictionary-attack lockout after too many failed authorizations ({detail}). Remedy: wait \
         for the lockout recovery time to pass, or reset the counter with `tpm2_dictionarylockout --clear-lockout` \
         and the lockout secret; then find and fix whatever sent wrong passwords"
    )]
    Lockout {
        /// What the TSS reported.
        detail: String,
    },
    /// The TPM, or the hierarchy the agent needs, is disabled.
    #[error(
        "the TPM is disabled or its endorsement hierarchy is turned off ({detail}). Remedy: enable the TPM \
         (\"TPM state: enabled/activated\") in the firmware setup and reboot; an OS-disabled endorsement hierarchy \
         is enabled again by a reboot"
    )]
    Disabled {
        /// What the TSS reported.
        detail: String,
    },
    /// A PCR bank the caller asked for is not allocated.
    #[error("PCR bank {0} is not allocated on this TPM")]
    BankNotAllocated(String),
    /// The caller's input was wrong.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// ActivateCredential refused the challenge.
    #[error(
        "the TPM refused the credential challenge: it was not made for this TPM's EK and AK, or it was altered \
         ({detail})"
    )]
    CredentialRejected {
        /// What the TSS reported.
        detail: String,
    },
    /// The state directory could not be used.
    #[error("state directory: {path}: {detail}. Remedy: make --state-dir a writable directory that persists across restarts")]
    State {
        /// The file or directory.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// Any other TPM failure.
    #[error("TPM command {op} failed: {detail}")]
    Tpm {
        /// The command or step.
        op: &'static str,
        /// What the TSS reported.
        detail: String,
        /// The TSS response code, when there is one.
        rc: Option<u32>,
    },
    /// The TPM thread has stopped.
    #[error("the TPM thread has stopped; restart the agent")]
    WorkerGone,
}

impl TpmError {
    /// A stable label for metrics and API error bodies.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoDevice { .. } => "tpm_missing",
            Self::WrongOwnerSecret { .. } => "tpm_wrong_owner_secret",
            Self::Lockout { .. } => "tpm_lockout",
            Self::Disabled { .. } => "tpm_disabled",
            Self::BankNotAllocated(_) => "pcr_bank_not_allocated",
            Self::InvalidInput(_) => "bad_request",
            Self::CredentialRejected { .. } => "credential_rejected",
            Self::State { .. } => "state_dir",
            Self::Tpm { .. } => "tpm_error",
            Self::WorkerGone => "tpm_thread_gone",
        }
    }

    /// Whether the caller's input caused it (a 400, not a 5xx).
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::BankNotAllocated(_) | Self::InvalidInput(_))
    }
}

/// TSS2 layers (bits 16-23 of a response code).
pub mod layer {
    /// The TPM itself.
    pub const TPM: u32 = 0;
    /// ESAPI.
    pub const ESAPI: u32 = 7;
    /// SAPI.
    pub const SYS: u32 = 8;
    /// TCTI (transport).
    pub const TCTI: u32 = 10;
    /// Resource manager, TPM-reported codes.
    pub const RESMGR_TPM: u32 = 11;
    /// Resource manager.
    pub const RESMGR: u32 = 12;
}

/// TPM response codes (without handle/session/parameter numbers) the agent explains.
pub mod rc {
    /// TPM_RC_INITIALIZE: TPM2_Startup was not sent.
    pub const INITIALIZE: u32 = 0x100;
    /// TPM_RC_FAILURE: the TPM is in failure mode.
    pub const FAILURE: u32 = 0x101;
    /// TPM_RC_DISABLED.
    pub const DISABLED: u32 = 0x120;
    /// TPM_RC_VALUE.
    pub const VALUE: u32 = 0x084;
    /// TPM_RC_HIERARCHY: the hierarchy is disabled.
    pub const HIERARCHY: u32 = 0x085;
    /// TPM_RC_KEY_SIZE.
    pub const KEY_SIZE: u32 = 0x087;
    /// TPM_RC_AUTH_FAIL: authorization failed (counts towards DA lockout).
    pub const AUTH_FAIL: u32 = 0x08E;
    /// TPM_RC_SIZE.
    pub const SIZE: u32 = 0x095;
    /// TPM_RC_INTEGRITY.
    pub const INTEGRITY: u32 = 0x09F;
    /// TPM_RC_KEY.
    pub const KEY: u32 = 0x09C;
    /// TPM_RC_BAD_AUTH: authorization failed (no DA implication).
    pub const BAD_AUTH: u32 = 0x0A2;
    /// TPM_RC_ECC_POINT.
    pub const ECC_POINT: u32 = 0x0A7;
    /// TPM_RC_POLICY_FAIL.
    pub const POLICY_FAIL: u32 = 0x09D;
    /// TPM_RC_HANDLE.
    pub const HANDLE: u32 = 0x08B;
    /// TPM_RC_OBJECT_MEMORY (warning).
    pub const OBJECT_MEMORY: u32 = 0x902;
    /// TPM_RC_LOCKOUT (warning).
    pub const LOCKOUT: u32 = 0x921;
}

#[cfg(feature = "tss")]
/// The raw TSS2_RC of a tss-esapi error, when it has one.
pub fn raw_rc(e: &tss_esapi::Error) -> Option<u32> {
    use tss_esapi::constants::response_code::Tss2ResponseCode;
    // tss-esapi 7.7 keeps the raw value private, but prints it as "Response code value: 0x...".
    let text = match e {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(c)) => c.to_string(),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(c)) => c.to_string(),
        _ => return None,
    };
    let hex_part = text.rsplit("0x").next()?;
    u32::from_str_radix(hex_part.trim(), 16).ok()
}

/// The TPM-layer error number of `rc` with handle/session/parameter bits removed
/// (format-one codes become `0x080 | n`; warnings keep `0x900 | n`).
pub fn tpm_code(rc: u32) -> Option<u32> {
    let lay = (rc >> 16) & 0xff;
    if lay != layer::TPM && lay != layer::RESMGR_TPM {
        return None;
    }
    let rc = rc & 0xffff;
    if rc & 0x80 != 0 {
        Some(0x80 | (rc & 0x3f))
    } else {
        Some(rc & 0x97f)
    }
}

#[cfg(feature = "tss")]
/// Turns a tss-esapi error from step `op` into the variant that explains it.
pub fn classify(op: &'static str, e: &tss_esapi::Error) -> TpmError {
    let Some(raw) = raw_rc(e) else {
        return TpmError::Tpm {
            op,
            detail: e.to_string(),
            rc: None,
        };
    };
    let detail = format!("{op}: {e} (TSS2_RC {raw:#x})");
    match tpm_code(raw) {
        Some(rc::AUTH_FAIL | rc::BAD_AUTH) => TpmError::WrongOwnerSecret { detail },
        Some(rc::LOCKOUT) => TpmError::Lockout { detail },
        Some(rc::DISABLED | rc::HIERARCHY) => TpmError::Disabled { detail },
        Some(_) => TpmError::Tpm {
            op,
            detail,
            rc: Some(raw),
        },
        None if (raw >> 16) & 0xff == layer::TCTI => TpmError::NoDevice {
            tcti: String::new(),
            detail,
        },
        None => TpmError::Tpm {
            op,
            detail,
            rc: Some(raw),
        },
    }
}

#[cfg(feature = "tss")]
/// Whether the error is the transport failing (swtpm restarted, device gone): reconnecting may help.
pub fn is_transport(e: &tss_esapi::Error) -> bool {
    raw_rc(e).is_some_and(|r| (r >> 16) & 0xff == layer::TCTI)
}

#[cfg(feature = "tss")]
/// Whether the TPM no longer has objects the connection loaded (`TPM_RC_REFERENCE_*`: the TPM was
/// reset under us, e.g. a restarted swtpm behind a reconnecting TCTI): reloading them may help.
pub fn is_lost_objects(e: &tss_esapi::Error) -> bool {
    raw_rc(e)
        .and_then(tpm_code)
        .is_some_and(|c| (0x910..=0x91e).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(tpm_code(0x9a2), Some(rc::BAD_AUTH));
        assert_eq!(tpm_code(0x98e), Some(rc::AUTH_FAIL));
        assert_eq!(tpm_code(0x921), Some(rc::LOCKOUT));
        assert_eq!(tpm_code(0x120), Some(rc::DISABLED));
        assert_eq!(tpm_code(0x285), Some(rc::HIERARCHY));
        assert_eq!(tpm_code(0xa000a), None);
    }
}
