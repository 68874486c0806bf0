//! A read-only look at a TPM's state, for `nodetrust-agent check`.
//!
//! [`probe`] opens the TCTI, sends `TPM2_Startup(CLEAR)` only when the TPM answers
//! `TPM_RC_INITIALIZE` (as the attester does), and reads the properties that decide whether the
//! agent can work: who made the TPM, the dictionary-attack state and whether the endorsement
//! hierarchy is enabled. It creates no object and uses no authorization, so it cannot add to the
//! dictionary-attack counter.

use std::str::FromStr as _;

use tss_esapi::constants::{PropertyTag, StartupType};
use tss_esapi::{Context, TctiNameConf};

use crate::error::{classify, raw_rc, rc, tpm_code};
use crate::tss::{
    fourcc, property as properties, property_value as value, TPMA_PERMANENT_ENDORSEMENT_AUTH_SET,
    TPMA_PERMANENT_IN_LOCKOUT, TPMA_PERMANENT_OWNER_AUTH_SET, TPMA_STARTUP_CLEAR_EH_ENABLE,
};
use crate::TpmError;

const TPMA_PERMANENT_LOCKOUT_AUTH_SET: u32 = 1 << 2;

/// What [`probe`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmState {
    /// Manufacturer id (`IBM`, `INTC`...).
    pub manufacturer: String,
    /// Vendor string (`SW   TPM` for swtpm).
    pub vendor: String,
    /// Firmware version, `a.b.c.d`.
    pub firmware_version: String,
    /// The TPM had not been started and [`probe`] sent `TPM2_Startup(CLEAR)`.
    pub sent_startup: bool,
    /// `TPMA_PERMANENT.inLockout`.
    pub in_lockout: bool,
    /// `TPM_PT_LOCKOUT_COUNTER`: failed authorizations counted now.
    pub lockout_counter: u32,
    /// `TPM_PT_MAX_AUTH_FAIL`: the count at which the TPM locks out.
    pub max_auth_fail: u32,
    /// `TPM_PT_LOCKOUT_INTERVAL`: seconds for the counter to go down by one.
    pub lockout_interval: u32,
    /// `TPM_PT_LOCKOUT_RECOVERY`: seconds before lockoutAuth may be tried again after a failure.
    pub lockout_recovery: u32,
    /// `TPMA_STARTUP_CLEAR.ehEnable`.
    pub endorsement_enabled: bool,
    /// `TPMA_PERMANENT.ownerAuthSet`.
    pub owner_auth_set: bool,
    /// `TPMA_PERMANENT.endorsementAuthSet`.
    pub endorsement_auth_set: bool,
    /// `TPMA_PERMANENT.lockoutAuthSet`.
    pub lockout_auth_set: bool,
}

fn no_device(tcti: &str, e: TpmError) -> TpmError {
    match e {
        TpmError::NoDevice { detail, .. } => TpmError::NoDevice {
            tcti: tcti.to_string(),
            detail,
        },
        other => other,
    }
}

/// Opens `tcti` and reads the TPM's state. Errors are the plain-language [`TpmError`]s: no TPM
/// on the TCTI is [`TpmError::NoDevice`].
pub fn probe(tcti: &str) -> Result<TpmState, TpmError> {
    let conf = TctiNameConf::from_str(tcti)
        .map_err(|e| TpmError::InvalidInput(format!("TCTI `{tcti}` is not valid: {e}")))?;
    let mut ctx = Context::new(conf).map_err(|e| TpmError::NoDevice {
        tcti: tcti.to_string(),
        detail: e.to_string(),
    })?;
    let mut sent_startup = false;
    let fixed = match properties(&mut ctx, PropertyTag::Manufacturer, 8) {
        Err(e) if raw_rc(&e).and_then(tpm_code) == Some(rc::INITIALIZE) => {
            ctx.startup(StartupType::Clear)
                .map_err(|e| no_device(tcti, classify("Startup", &e)))?;
            sent_startup = true;
            properties(&mut ctx, PropertyTag::Manufacturer, 8)
        }
        other => other,
    }
    .map_err(|e| no_device(tcti, classify("GetCapability", &e)))?;
    // TPM_PT_PERMANENT (0x200) to TPM_PT_LOCKOUT_RECOVERY (0x211).
    let variable = properties(&mut ctx, PropertyTag::Permanent, 0x12)
        .map_err(|e| no_device(tcti, classify("GetCapability", &e)))?;

    let vendor: String = [
        PropertyTag::VendorString1,
        PropertyTag::VendorString2,
        PropertyTag::VendorString3,
        PropertyTag::VendorString4,
    ]
    .iter()
    .filter_map(|t| value(&fixed, *t))
    .map(fourcc)
    .collect::<String>()
    .trim()
    .to_string();
    let fw1 = value(&fixed, PropertyTag::FirmwareVersion1).unwrap_or(0);
    let fw2 = value(&fixed, PropertyTag::FirmwareVersion2).unwrap_or(0);
    let permanent = value(&variable, PropertyTag::Permanent).unwrap_or(0);
    let startup_clear = value(&variable, PropertyTag::StartupClear).unwrap_or(0);
    Ok(TpmState {
        manufacturer: value(&fixed, PropertyTag::Manufacturer)
            .map(fourcc)
            .unwrap_or_default()
            .trim()
            .to_string(),
        vendor,
        firmware_version: format!(
            "{}.{}.{}.{}",
            fw1 >> 16,
            fw1 & 0xffff,
            fw2 >> 16,
            fw2 & 0xffff
        ),
        sent_startup,
        in_lockout: permanent & TPMA_PERMANENT_IN_LOCKOUT != 0,
        lockout_counter: value(&variable, PropertyTag::LockoutCounter).unwrap_or(0),
        max_auth_fail: value(&variable, PropertyTag::MaxAuthFail).unwrap_or(0),
        lockout_interval: value(&variable, PropertyTag::LockoutInterval).unwrap_or(0),
        lockout_recovery: value(&variable, PropertyTag::LockoutRecovery).unwrap_or(0),
        endorsement_enabled: startup_clear & TPMA_STARTUP_CLEAR_EH_ENABLE != 0,
        owner_auth_set: permanent & TPMA_PERMANENT_OWNER_AUTH_SET != 0,
        endorsement_auth_set: permanent & TPMA_PERMANENT_ENDORSEMENT_AUTH_SET != 0,
        lockout_auth_set: permanent & TPMA_PERMANENT_LOCKOUT_AUTH_SET != 0,
    })
}
