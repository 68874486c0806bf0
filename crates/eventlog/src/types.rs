//! TCG PC Client event types (`TCG_EVENTTYPE`) and their names.
//!
//! An event's type is **not** covered by its digest: whoever wrote the log chose it. Types are
//! labels for humans; trust decisions rest on the digests that replay to quoted PCR values.

/// EV_PREBOOT_CERT
pub const EV_PREBOOT_CERT: u32 = 0x0000_0000;
/// EV_POST_CODE
pub const EV_POST_CODE: u32 = 0x0000_0001;
/// EV_UNUSED
pub const EV_UNUSED: u32 = 0x0000_0002;
/// EV_NO_ACTION: not extended into any PCR (Spec ID, StartupLocality, vendor notes).
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// EV_SEPARATOR
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// EV_ACTION
pub const EV_ACTION: u32 = 0x0000_0005;
/// EV_EVENT_TAG
pub const EV_EVENT_TAG: u32 = 0x0000_0006;
/// EV_S_CRTM_CONTENTS
pub const EV_S_CRTM_CONTENTS: u32 = 0x0000_0007;
/// EV_S_CRTM_VERSION
pub const EV_S_CRTM_VERSION: u32 = 0x0000_0008;
/// EV_CPU_MICROCODE
pub const EV_CPU_MICROCODE: u32 = 0x0000_0009;
/// EV_PLATFORM_CONFIG_FLAGS
pub const EV_PLATFORM_CONFIG_FLAGS: u32 = 0x0000_000A;
/// EV_TABLE_OF_DEVICES
pub const EV_TABLE_OF_DEVICES: u32 = 0x0000_000B;
/// EV_COMPACT_HASH
pub const EV_COMPACT_HASH: u32 = 0x0000_000C;
/// EV_IPL: boot loader measurements (grub, shim, systemd-boot, systemd-stub).
pub const EV_IPL: u32 = 0x0000_000D;
/// EV_IPL_PARTITION_DATA
pub const EV_IPL_PARTITION_DATA: u32 = 0x0000_000E;
/// EV_NONHOST_CODE
pub const EV_NONHOST_CODE: u32 = 0x0000_000F;
/// EV_NONHOST_CONFIG
pub const EV_NONHOST_CONFIG: u32 = 0x0000_0010;
/// EV_NONHOST_INFO
pub const EV_NONHOST_INFO: u32 = 0x0000_0011;
/// EV_OMIT_BOOT_DEVICE_EVENTS
pub const EV_OMIT_BOOT_DEVICE_EVENTS: u32 = 0x0000_0012;
/// EV_EFI_EVENT_BASE
pub const EV_EFI_EVENT_BASE: u32 = 0x8000_0000;
/// EV_EFI_VARIABLE_DRIVER_CONFIG: Secure Boot policy variables (SecureBoot, PK, KEK, db, dbx).
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
/// EV_EFI_VARIABLE_BOOT: BootOrder, Boot####.
pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
/// EV_EFI_BOOT_SERVICES_APPLICATION: a UEFI application (shim, grub, systemd-boot, a UKI).
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// EV_EFI_BOOT_SERVICES_DRIVER
pub const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
/// EV_EFI_RUNTIME_SERVICES_DRIVER
pub const EV_EFI_RUNTIME_SERVICES_DRIVER: u32 = 0x8000_0005;
/// EV_EFI_GPT_EVENT
pub const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
/// EV_EFI_ACTION: a fixed ASCII string ("Exit Boot Services Invocation", ...).
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
/// EV_EFI_PLATFORM_FIRMWARE_BLOB
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
/// EV_EFI_HANDOFF_TABLES
pub const EV_EFI_HANDOFF_TABLES: u32 = 0x8000_0009;
/// EV_EFI_PLATFORM_FIRMWARE_BLOB2
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: u32 = 0x8000_000A;
/// EV_EFI_HANDOFF_TABLES2
pub const EV_EFI_HANDOFF_TABLES2: u32 = 0x8000_000B;
/// EV_EFI_VARIABLE_BOOT2
pub const EV_EFI_VARIABLE_BOOT2: u32 = 0x8000_000C;
/// EV_EFI_HCRTM_EVENT: an H-CRTM measurement; PCR 0 then starts at locality 4.
pub const EV_EFI_HCRTM_EVENT: u32 = 0x8000_0010;
/// EV_EFI_VARIABLE_AUTHORITY: the db/MokList entry that authorised an image.
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00E0;
/// EV_EFI_SPDM_FIRMWARE_BLOB
pub const EV_EFI_SPDM_FIRMWARE_BLOB: u32 = 0x8000_00E1;
/// EV_EFI_SPDM_FIRMWARE_CONFIG
pub const EV_EFI_SPDM_FIRMWARE_CONFIG: u32 = 0x8000_00E2;

/// First Intel TXT / tboot event type (`EVTYPE_BASE`); TXT events run to 0x4FF.
pub const EV_TXT_BASE: u32 = 0x0000_0400;
/// TXT `EVTYPE_HASH_START`: the DRTM measured launch.
pub const EV_TXT_HASH_START: u32 = 0x0000_0402;

/// The name `tpm2_eventlog` prints for an event type, or `None` for types it does not name.
pub fn name(event_type: u32) -> Option<&'static str> {
    Some(match event_type {
        EV_PREBOOT_CERT => "EV_PREBOOT_CERT",
        EV_POST_CODE => "EV_POST_CODE",
        EV_UNUSED => "EV_UNUSED",
        EV_NO_ACTION => "EV_NO_ACTION",
        EV_SEPARATOR => "EV_SEPARATOR",
        EV_ACTION => "EV_ACTION",
        EV_EVENT_TAG => "EV_EVENT_TAG",
        EV_S_CRTM_CONTENTS => "EV_S_CRTM_CONTENTS",
        EV_S_CRTM_VERSION => "EV_S_CRTM_VERSION",
        EV_CPU_MICROCODE => "EV_CPU_MICROCODE",
        EV_PLATFORM_CONFIG_FLAGS => "EV_PLATFORM_CONFIG_FLAGS",
        EV_TABLE_OF_DEVICES => "EV_TABLE_OF_DEVICES",
        EV_COMPACT_HASH => "EV_COMPACT_HASH",
        EV_IPL => "EV_IPL",
        EV_IPL_PARTITION_DATA => "EV_IPL_PARTITION_DATA",
        EV_NONHOST_CODE => "EV_NONHOST_CODE",
        EV_NONHOST_CONFIG => "EV_NONHOST_CONFIG",
        EV_NONHOST_INFO => "EV_NONHOST_INFO",
        EV_OMIT_BOOT_DEVICE_EVENTS => "EV_OMIT_BOOT_DEVICE_EVENTS",
        EV_EFI_EVENT_BASE => "EV_EFI_EVENT_BASE",
        EV_EFI_VARIABLE_DRIVER_CONFIG => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        EV_EFI_VARIABLE_BOOT => "EV_EFI_VARIABLE_BOOT",
        EV_EFI_BOOT_SERVICES_APPLICATION => "EV_EFI_BOOT_SERVICES_APPLICATION",
        EV_EFI_BOOT_SERVICES_DRIVER => "EV_EFI_BOOT_SERVICES_DRIVER",
        EV_EFI_RUNTIME_SERVICES_DRIVER => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        EV_EFI_GPT_EVENT => "EV_EFI_GPT_EVENT",
        EV_EFI_ACTION => "EV_EFI_ACTION",
        EV_EFI_PLATFORM_FIRMWARE_BLOB => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        EV_EFI_HANDOFF_TABLES => "EV_EFI_HANDOFF_TABLES",
        EV_EFI_PLATFORM_FIRMWARE_BLOB2 => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        EV_EFI_HANDOFF_TABLES2 => "EV_EFI_HANDOFF_TABLES2",
        EV_EFI_VARIABLE_BOOT2 => "EV_EFI_VARIABLE_BOOT2",
        EV_EFI_HCRTM_EVENT => "EV_EFI_HCRTM_EVENT",
        EV_EFI_VARIABLE_AUTHORITY => "EV_EFI_VARIABLE_AUTHORITY",
        EV_EFI_SPDM_FIRMWARE_BLOB => "EV_EFI_SPDM_FIRMWARE_BLOB",
        EV_EFI_SPDM_FIRMWARE_CONFIG => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        _ => return None,
    })
}

/// A printable name for any type: the TCG name, or `EV_UNKNOWN(0x...)`.
pub fn label(event_type: u32) -> String {
    match name(event_type) {
        Some(n) => n.to_string(),
        None if (EV_TXT_BASE..=0x4FF).contains(&event_type) => format!("EV_TXT({event_type:#x})"),
        None => format!("EV_UNKNOWN({event_type:#x})"),
    }
}
