//! What an event measured, in words an operator uses: "boot application
//! `\EFI\ubuntu\shimx64.efi` (shim)", "db variable", "kernel command line".
//!
//! The decoding reads only the event's type, PCR and data, none of which the digests cover: a
//! [`Component`] is a label for humans. It is computed on demand, never during parsing or
//! replay.

use crate::tcg::Event;
use crate::types as t;
use crate::uefi::{self, FirmwareBlob, ImageLoad, LoadOption, VariableData};

/// The kind of thing an event measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ComponentKind {
    /// The Spec ID structure of a crypto-agile log.
    SpecId,
    /// `EV_NO_ACTION` StartupLocality.
    StartupLocality,
    /// Any other `EV_NO_ACTION`.
    NoAction,
    /// `EV_S_CRTM_VERSION`.
    CrtmVersion,
    /// `EV_S_CRTM_CONTENTS`, `EV_EFI_PLATFORM_FIRMWARE_BLOB(2)`, `EV_EFI_HCRTM_EVENT`.
    FirmwareBlob,
    /// `EV_POST_CODE`.
    PostCode,
    /// `EV_CPU_MICROCODE`.
    Microcode,
    /// `EV_EFI_HANDOFF_TABLES(2)`, `EV_TABLE_OF_DEVICES`, `EV_PLATFORM_CONFIG_FLAGS`, `EV_NONHOST_*`.
    PlatformConfig,
    /// `EV_EFI_BOOT_SERVICES_APPLICATION`.
    BootApplication,
    /// `EV_EFI_BOOT_SERVICES_DRIVER`.
    BootDriver,
    /// `EV_EFI_RUNTIME_SERVICES_DRIVER`.
    RuntimeDriver,
    /// `EV_EFI_VARIABLE_DRIVER_CONFIG`: SecureBoot, PK, KEK, db, dbx...
    SecureBootVariable,
    /// `EV_EFI_VARIABLE_AUTHORITY`: the certificate or hash that authorised an image.
    Authority,
    /// `EV_EFI_VARIABLE_BOOT(2)`: BootOrder, Boot####.
    BootVariable,
    /// `EV_SEPARATOR`.
    Separator,
    /// `EV_EFI_ACTION` / `EV_ACTION`.
    Action,
    /// `EV_EFI_GPT_EVENT`.
    PartitionTable,
    /// A command grub ran (PCR 8).
    GrubCommand,
    /// The kernel command line (grub PCR 8, systemd-boot PCR 8, systemd-stub PCR 12).
    KernelCommandLine,
    /// The kernel image a boot loader read (PCR 9).
    Kernel,
    /// The initrd (PCR 9, or the kernel EFI stub's tagged event).
    Initrd,
    /// Any other file a boot loader read (PCR 9: grub.cfg, modules, fonts).
    BootFile,
    /// shim's MokList, MokListX, MokListTrusted, MokSBState, SbatLevel (PCR 14).
    ShimState,
    /// Other `EV_IPL` data.
    BootLoaderData,
    /// `EV_EVENT_TAG`.
    TaggedEvent,
    /// Intel TXT / tboot measurements (PCR 17/18, types 0x400..0x4FF).
    MeasuredLaunch,
    /// Anything else: listed with its type and digests.
    Unknown,
}

impl ComponentKind {
    /// Words for the kind, used in statements ("boot application", "kernel command line").
    pub fn label(self) -> &'static str {
        match self {
            Self::SpecId => "Spec ID event",
            Self::StartupLocality => "startup locality",
            Self::NoAction => "informational event",
            Self::CrtmVersion => "S-CRTM version",
            Self::FirmwareBlob => "firmware blob",
            Self::PostCode => "POST code",
            Self::Microcode => "CPU microcode",
            Self::PlatformConfig => "platform configuration",
            Self::BootApplication => "boot application",
            Self::BootDriver => "boot services driver",
            Self::RuntimeDriver => "runtime services driver",
            Self::SecureBootVariable => "Secure Boot variable",
            Self::Authority => "Secure Boot authority",
            Self::BootVariable => "boot variable",
            Self::Separator => "separator",
            Self::Action => "action",
            Self::PartitionTable => "GPT partition table",
            Self::GrubCommand => "grub command",
            Self::KernelCommandLine => "kernel command line",
            Self::Kernel => "kernel image",
            Self::Initrd => "initrd",
            Self::BootFile => "boot file",
            Self::ShimState => "shim state",
            Self::BootLoaderData => "boot loader event",
            Self::TaggedEvent => "tagged event",
            Self::MeasuredLaunch => "measured launch (TXT/tboot)",
            Self::Unknown => "event",
        }
    }

    /// A stable snake_case name for JSON and metrics.
    pub fn id(self) -> &'static str {
        match self {
            Self::SpecId => "spec_id",
            Self::StartupLocality => "startup_locality",
            Self::NoAction => "no_action",
            Self::CrtmVersion => "crtm_version",
            Self::FirmwareBlob => "firmware_blob",
            Self::PostCode => "post_code",
            Self::Microcode => "microcode",
            Self::PlatformConfig => "platform_config",
            Self::BootApplication => "boot_application",
            Self::BootDriver => "boot_driver",
            Self::RuntimeDriver => "runtime_driver",
            Self::SecureBootVariable => "secure_boot_variable",
            Self::Authority => "authority",
            Self::BootVariable => "boot_variable",
            Self::Separator => "separator",
            Self::Action => "action",
            Self::PartitionTable => "partition_table",
            Self::GrubCommand => "grub_command",
            Self::KernelCommandLine => "kernel_command_line",
            Self::Kernel => "kernel",
            Self::Initrd => "initrd",
            Self::BootFile => "boot_file",
            Self::ShimState => "shim_state",
            Self::BootLoaderData => "boot_loader_data",
            Self::TaggedEvent => "tagged_event",
            Self::MeasuredLaunch => "measured_launch",
            Self::Unknown => "unknown",
        }
    }
}

/// A named boot component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// What kind of thing.
    pub kind: ComponentKind,
    /// Its name: a file path, a variable name, a command; empty when it has none.
    pub name: String,
    /// Extra words: which boot loader, Secure Boot on/off, a boot entry's description.
    pub detail: Option<String>,
}

impl Component {
    fn new(kind: ComponentKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
            detail: None,
        }
    }

    fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The subject of a statement: `boot application \EFI\ubuntu\grubx64.efi`, `db variable`.
    pub fn subject(&self) -> String {
        let label = self.kind.label();
        match self.kind {
            ComponentKind::SecureBootVariable
            | ComponentKind::BootVariable
            | ComponentKind::ShimState
                if !self.name.is_empty() =>
            {
                concat(&[&self.name, " variable"])
            }
            ComponentKind::Authority if !self.name.is_empty() => {
                concat(&["Secure Boot authority from ", &self.name])
            }
            ComponentKind::KernelCommandLine
            | ComponentKind::GrubCommand
            | ComponentKind::Separator => label.to_string(),
            _ if self.name.is_empty() => label.to_string(),
            _ => concat(&[label, " ", &self.name]),
        }
    }

    /// The whole statement, as `Display` writes it (`grub command: linux /vmlinuz ...`,
    /// `boot application \EFI\BOOT\BOOTX64.EFI (shim)`), concatenated rather than formatted:
    /// it is made for many events of every attestation.
    pub fn statement(&self) -> String {
        let command = matches!(
            self.kind,
            ComponentKind::KernelCommandLine | ComponentKind::GrubCommand
        );
        match (command, self.detail.as_deref()) {
            (true, None) => concat(&[self.kind.label(), ": ", &self.name]),
            (true, Some(d)) => concat(&[self.kind.label(), ": ", &self.name, " (", d, ")"]),
            (false, None) => self.subject(),
            (false, Some(d)) => concat(&[&self.subject(), " (", d, ")"]),
        }
    }
}

/// `parts` joined, in a string allocated once.
fn concat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.statement())
    }
}

/// Names what `event` measured.
pub fn describe(event: &Event<'_>) -> Component {
    use ComponentKind as K;
    let data = event.data;
    match event.event_type {
        t::EV_NO_ACTION => {
            if data.starts_with(b"Spec ID Event") {
                Component::new(K::SpecId, uefi::text(data.get(..16).unwrap_or_default()))
            } else if let Some(l) = event.startup_locality() {
                Component::new(K::StartupLocality, format!("locality {l}"))
            } else {
                Component::new(K::NoAction, printable(data))
            }
        }
        t::EV_S_CRTM_VERSION => Component::new(K::CrtmVersion, uefi::text(data)),
        t::EV_S_CRTM_CONTENTS | t::EV_EFI_PLATFORM_FIRMWARE_BLOB => match FirmwareBlob::parse(data)
        {
            Some(b) => Component::new(K::FirmwareBlob, "")
                .with_detail(format!("{:#x}, {} bytes", b.base, b.length)),
            None => Component::new(K::FirmwareBlob, printable(data)),
        },
        t::EV_EFI_PLATFORM_FIRMWARE_BLOB2 => match FirmwareBlob::parse2(data) {
            Some(b) => Component::new(K::FirmwareBlob, b.description.unwrap_or_default())
                .with_detail(format!("{:#x}, {} bytes", b.base, b.length)),
            None => Component::new(K::FirmwareBlob, ""),
        },
        t::EV_EFI_HCRTM_EVENT => Component::new(K::FirmwareBlob, "H-CRTM"),
        t::EV_POST_CODE => match FirmwareBlob::parse(data) {
            Some(b) if data.len() == 16 => Component::new(K::PostCode, "")
                .with_detail(format!("{:#x}, {} bytes", b.base, b.length)),
            _ => Component::new(K::PostCode, printable(data)),
        },
        t::EV_CPU_MICROCODE => Component::new(K::Microcode, printable(data)),
        t::EV_EFI_HANDOFF_TABLES
        | t::EV_EFI_HANDOFF_TABLES2
        | t::EV_TABLE_OF_DEVICES
        | t::EV_PLATFORM_CONFIG_FLAGS
        | t::EV_NONHOST_CODE
        | t::EV_NONHOST_CONFIG
        | t::EV_NONHOST_INFO => Component::new(K::PlatformConfig, t::label(event.event_type)),
        t::EV_EFI_BOOT_SERVICES_APPLICATION
        | t::EV_EFI_BOOT_SERVICES_DRIVER
        | t::EV_EFI_RUNTIME_SERVICES_DRIVER => {
            let kind = match event.event_type {
                t::EV_EFI_BOOT_SERVICES_APPLICATION => K::BootApplication,
                t::EV_EFI_BOOT_SERVICES_DRIVER => K::BootDriver,
                _ => K::RuntimeDriver,
            };
            match ImageLoad::parse(data) {
                Some(img) => {
                    let name = uefi::device_path_file(img.device_path)
                        .unwrap_or_else(|| uefi::device_path_text(img.device_path));
                    let c = Component::new(kind, name.clone());
                    match boot_loader(&name) {
                        Some(l) => c.with_detail(l),
                        None if name.is_empty() => c.with_detail(format!(
                            "{} bytes loaded at {:#x}, no device path",
                            img.length, img.location
                        )),
                        None => c,
                    }
                }
                None => Component::new(kind, ""),
            }
        }
        t::EV_EFI_VARIABLE_DRIVER_CONFIG
        | t::EV_EFI_VARIABLE_BOOT
        | t::EV_EFI_VARIABLE_BOOT2
        | t::EV_EFI_VARIABLE_AUTHORITY => {
            let kind = match event.event_type {
                t::EV_EFI_VARIABLE_DRIVER_CONFIG => K::SecureBootVariable,
                t::EV_EFI_VARIABLE_AUTHORITY => K::Authority,
                _ => K::BootVariable,
            };
            match VariableData::parse(data) {
                Some(v) => variable(kind, &v),
                None => Component::new(kind, ""),
            }
        }
        t::EV_SEPARATOR => match data {
            [0, 0, 0, 0] => Component::new(K::Separator, ""),
            [0xff, 0xff, 0xff, 0xff] => Component::new(K::Separator, "").with_detail("error"),
            _ => Component::new(K::Separator, printable(data)),
        },
        t::EV_EFI_ACTION | t::EV_ACTION | t::EV_OMIT_BOOT_DEVICE_EVENTS => {
            Component::new(K::Action, uefi::text(data))
        }
        t::EV_EFI_GPT_EVENT => Component::new(K::PartitionTable, ""),
        t::EV_IPL => ipl(event.pcr, data),
        t::EV_EVENT_TAG => tagged(data),
        ty if (t::EV_TXT_BASE..=0x4ff).contains(&ty) || (event.pcr == 17 || event.pcr == 18) => {
            Component::new(K::MeasuredLaunch, t::label(ty))
        }
        ty => Component::new(K::Unknown, t::label(ty)),
    }
}

fn variable(kind: ComponentKind, v: &VariableData<'_>) -> Component {
    let c = Component::new(kind, v.name.clone());
    match (kind, v.name.as_str()) {
        (ComponentKind::SecureBootVariable, "SecureBoot") => match v.data {
            [1] => c.with_detail("enabled"),
            [0] | [] => c.with_detail("disabled"),
            _ => c,
        },
        (ComponentKind::BootVariable, "BootOrder") => {
            let order: Vec<String> = v
                .data
                .chunks_exact(2)
                .map(|p| {
                    format!(
                        "Boot{:04X}",
                        u16::from_le_bytes([
                            p.first().copied().unwrap_or(0),
                            p.get(1).copied().unwrap_or(0)
                        ])
                    )
                })
                .collect();
            c.with_detail(order.join(","))
        }
        (ComponentKind::BootVariable, name) if name.starts_with("Boot") => {
            match LoadOption::parse(v.data) {
                Some(o) => c.with_detail(format!("{}: {}", o.description, o.path)),
                None => c,
            }
        }
        (ComponentKind::Authority, _)
            if v.guid == crate::uefi::Guid::SHIM_LOCK || v.name == "Shim" =>
        {
            c
        }
        _ => c,
    }
}

/// Which boot loader a file name is, by its name.
fn boot_loader(path: &str) -> Option<&'static str> {
    let file = path
        .rsplit(['\\', '/'])
        .next()
        .unwrap_or(path)
        .to_ascii_lowercase();
    if file.starts_with("shim") {
        Some("shim")
    } else if file.starts_with("grub") {
        Some("grub")
    } else if file.starts_with("systemd-boot") {
        Some("systemd-boot")
    } else if file.starts_with("mm") || file.starts_with("fb") {
        Some("shim helper")
    } else if file.starts_with("vmlinuz")
        || file.starts_with("linux")
        || file.ends_with(".efi") && path.contains("Linux")
    {
        Some("Linux kernel")
    } else if file == "bootx64.efi" || file == "bootaa64.efi" {
        Some("default boot loader")
    } else {
        None
    }
}

fn ipl(pcr: u32, data: &[u8]) -> Component {
    use ComponentKind as K;
    let s = uefi::text(data);
    match pcr {
        8 => {
            // The prefixes are cut from the text in place: grub measures most of PCR 8's
            // events, and this runs for each of every attestation.
            const KERNEL: &str = "kernel_cmdline: ";
            const KERNEL_OLD: &str = "grub_kernel_cmdline ";
            const GRUB: &str = "grub_cmd: ";
            if s.starts_with(KERNEL) {
                Component::new(K::KernelCommandLine, cut(s, KERNEL.len())).with_detail("grub")
            } else if s.starts_with(KERNEL_OLD) {
                Component::new(K::KernelCommandLine, cut(s, KERNEL_OLD.len())).with_detail("grub")
            } else if s.starts_with(GRUB) {
                Component::new(K::GrubCommand, cut(s, GRUB.len()))
            } else if !uefi::is_ascii_text(data) && !s.is_empty() {
                // systemd-boot before v251 measured the command line, UTF-16, into PCR 8.
                Component::new(K::KernelCommandLine, s.trim()).with_detail("systemd-boot")
            } else {
                Component::new(K::BootLoaderData, s)
            }
        }
        9 => {
            let file = s
                .rsplit(['/', '\\', ')'])
                .next()
                .unwrap_or(&s)
                .to_ascii_lowercase();
            if file.starts_with("vmlinuz")
                || file.starts_with("vmlinux")
                || file.starts_with("bzimage")
                || file == "linux"
                || file.starts_with("kernel")
            {
                Component::new(K::Kernel, s)
            } else if file.starts_with("initrd")
                || file.starts_with("initramfs")
                || file.contains("ucode")
            {
                Component::new(K::Initrd, s)
            } else {
                Component::new(K::BootFile, s)
            }
        }
        12 => Component::new(K::KernelCommandLine, s.trim()).with_detail("systemd-stub"),
        14 => Component::new(K::ShimState, s),
        _ => Component::new(K::BootLoaderData, s),
    }
}

/// `s` without its first `n` bytes (a prefix it starts with), in its own allocation.
fn cut(mut s: String, n: usize) -> String {
    if s.is_char_boundary(n) {
        s.drain(..n);
    }
    s
}

fn tagged(data: &[u8]) -> Component {
    use ComponentKind as K;
    // TCG_PCClientTaggedEvent: taggedEventID u32, taggedEventDataSize u32, data.
    let Some((id, rest)) = data.split_at_checked(4) else {
        return Component::new(K::TaggedEvent, "");
    };
    let id = id.try_into().map(u32::from_le_bytes).unwrap_or_default();
    let body = rest.get(4..).unwrap_or_default();
    let text = uefi::text(body);
    match id {
        // Linux EFI stub: LINUX_EFI_INITRD_MEDIA ("Linux initrd").
        0x8f3b_22ec => Component::new(K::Initrd, text).with_detail("Linux EFI stub"),
        // systemd-stub: the loaded image (LOADED_IMAGE).
        0xf5bc_582a => Component::new(K::Kernel, text).with_detail("systemd-stub"),
        _ => Component::new(K::TaggedEvent, format!("{id:#010x} {text}")),
    }
}

/// Event data as printable text when it is text, else a short hex prefix.
fn printable(data: &[u8]) -> String {
    if uefi::is_ascii_text(data) {
        return uefi::text(data);
    }
    let shown = data.get(..32).unwrap_or(data);
    let mut s = hex::encode(shown);
    if data.len() > shown.len() {
        s.push_str("..");
    }
    s
}
