//! Writes the measured-boot event log of a simulated UEFI + shim + grub + Linux boot, and
//! prints the `tpm2_pcrextend` arguments that make a TPM hold what the log replays to.
//! `make demo` uses it to give software TPMs a realistic boot.
//!
//! Usage: `demo_boot OUT.bin [gold|new-grub|debug-cmdline]`

use nodetrust_eventlog::build::{image_load_event, variable_data, LogBuilder};
use nodetrust_eventlog::types::*;
use nodetrust_eventlog::uefi::Guid;
use nodetrust_tpm_wire::HashAlg;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(out), variant) = (args.next(), args.next().unwrap_or_else(|| "gold".into())) else {
        eprintln!("usage: demo_boot OUT.bin [gold|new-grub|debug-cmdline]");
        std::process::exit(2);
    };
    let grub = if variant == "new-grub" {
        "grub 2.12 image"
    } else {
        "grub 2.06 image"
    };
    let cmdline = if variant == "debug-cmdline" {
        "kernel_cmdline: /vmlinuz-6.1.0 root=/dev/sda1 ro init=/bin/sh\0"
    } else {
        "kernel_cmdline: /vmlinuz-6.1.0 root=/dev/sda1 ro quiet\0"
    };
    let mut log = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
    log.event(
        0,
        EV_S_CRTM_VERSION,
        "nodetrust demo firmware 1.0\0".as_bytes(),
    );
    log.measured(
        0,
        EV_EFI_PLATFORM_FIRMWARE_BLOB,
        b"firmware volume",
        &[0u8; 16],
    );
    log.event(
        7,
        EV_EFI_VARIABLE_DRIVER_CONFIG,
        &variable_data(Guid::GLOBAL_VARIABLE, "SecureBoot", &[1]),
    );
    log.event(
        7,
        EV_EFI_VARIABLE_DRIVER_CONFIG,
        &variable_data(Guid::GLOBAL_VARIABLE, "PK", b"demo platform key"),
    );
    log.event(
        7,
        EV_EFI_VARIABLE_DRIVER_CONFIG,
        &variable_data(Guid::IMAGE_SECURITY_DATABASE, "db", b"demo db"),
    );
    for pcr in 0..=7 {
        log.event(pcr, EV_SEPARATOR, &[0, 0, 0, 0]);
    }
    log.measured(
        4,
        EV_EFI_BOOT_SERVICES_APPLICATION,
        b"shim 15.7 image",
        &image_load_event("\\EFI\\debian\\shimx64.efi", 950_000),
    );
    log.measured(
        4,
        EV_EFI_BOOT_SERVICES_APPLICATION,
        grub.as_bytes(),
        &image_load_event("\\EFI\\debian\\grubx64.efi", 2_400_000),
    );
    log.measured(9, EV_IPL, b"linux 6.1.0 image", b"/boot/vmlinuz-6.1.0\0");
    log.event(8, EV_IPL, cmdline.as_bytes());
    log.measured(
        9,
        EV_IPL,
        b"initrd 6.1.0 image",
        b"/boot/initrd.img-6.1.0\0",
    );
    if let Err(e) = std::fs::write(&out, log.bytes()) {
        eprintln!("demo_boot: cannot write {out}: {e}");
        std::process::exit(2);
    }
    for ev in log.events() {
        if ev.event_type == EV_NO_ACTION {
            continue;
        }
        let digests: Vec<String> = ev
            .digests
            .iter()
            .map(|(h, d)| format!("{}={}", h.name(), hex::encode(d)))
            .collect();
        println!("{}:{}", ev.pcr, digests.join(","));
    }
}
