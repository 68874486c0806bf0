//! Host facts for `GET /v2/host` and registration.
//!
//! The hardware UUID is DMI's product_uuid, which Kubernetes reports as the node's systemUUID,
//! so the server can match a registered host to its Node. Where there is no DMI (some VMs and
//! containers) a UUID is derived from `/etc/machine-id`, with a warning: it is stable across
//! reboots but changes on reinstall.

use std::path::Path;

use nodetrust_proto::agent::HostInfo;
use nodetrust_tpm::TpmFacts;

const DMI_UUID: &str = "/sys/class/dmi/id/product_uuid";
const MACHINE_ID: &str = "/etc/machine-id";
const SECURE_BOOT_VAR: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e98c0ea96b24";

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The system host name.
pub fn system_host_name() -> String {
    read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "localhost".into())
}

/// A UUID from `machine-id`: SHA-256 of a label and the id, as a version-8 (custom) UUID.
pub fn uuid_from_machine_id(machine_id: &str) -> String {
    let d = nodetrust_tpm_wire::HashAlg::Sha256
        .digest(format!("nodetrust hardware uuid\0{}", machine_id.trim()).as_bytes());
    let mut b = [0u8; 16];
    for (dst, src) in b.iter_mut().zip(d.iter()) {
        *dst = *src;
    }
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

fn format_uuid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or_default(),
        h.get(8..12).unwrap_or_default(),
        h.get(12..16).unwrap_or_default(),
        h.get(16..20).unwrap_or_default(),
        h.get(20..32).unwrap_or_default()
    )
}

/// The hardware UUID: DMI product_uuid, else derived from machine-id (with a warning).
pub fn hardware_uuid() -> String {
    if let Some(u) = read_trimmed(DMI_UUID) {
        return u;
    }
    match read_trimmed(MACHINE_ID) {
        Some(id) => {
            let u = uuid_from_machine_id(&id);
            tracing::warn!(
                uuid = %u,
                "no DMI product_uuid ({DMI_UUID}); using a UUID derived from {MACHINE_ID}, which does not match the \
                 node's systemUUID: set --hardware-uuid if the server must match hosts to nodes"
            );
            u
        }
        None => {
            tracing::warn!(
                "neither DMI product_uuid nor /etc/machine-id is readable; set --hardware-uuid"
            );
            "00000000-0000-0000-0000-000000000000".into()
        }
    }
}

fn os_release() -> (String, String) {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (get("NAME"), get("VERSION_ID"))
}

/// Secure Boot state from the EFI variable (attributes u32, then one byte), when readable.
pub fn secure_boot() -> Option<bool> {
    let bytes = std::fs::read(Path::new(SECURE_BOOT_VAR)).ok()?;
    bytes.get(4).map(|b| *b == 1)
}

/// Gathers host facts.
pub fn gather(
    host_name: Option<&str>,
    hardware_uuid_override: Option<&str>,
    tpm: &TpmFacts,
) -> HostInfo {
    let (os_name, os_version) = os_release();
    HostInfo {
        host_name: host_name
            .map(str::to_string)
            .unwrap_or_else(system_host_name),
        hardware_uuid: hardware_uuid_override
            .map(str::to_string)
            .unwrap_or_else(hardware_uuid),
        os_name,
        os_version,
        kernel_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        tpm_version: "2.0".into(),
        tpm_manufacturer: tpm.manufacturer.clone(),
        tpm_firmware_version: tpm.firmware_version.clone(),
        pcr_banks: tpm
            .pcr_banks
            .iter()
            .map(|b| b.name().to_ascii_uppercase())
            .collect(),
        measured_launch: tpm.measured_launch,
        secure_boot: secure_boot(),
        software_tpm: tpm.software,
        agent_version: crate::VERSION.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_uuid_is_stable_and_well_formed() {
        let a = uuid_from_machine_id("0123456789abcdef0123456789abcdef");
        assert_eq!(
            a,
            uuid_from_machine_id("0123456789abcdef0123456789abcdef\n")
        );
        assert_ne!(a, uuid_from_machine_id("0123456789abcdef0123456789abcdee"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.chars().nth(14), Some('8'));
    }
}
