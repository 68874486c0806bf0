//! Running tpm2-tools against a [`Swtpm`](crate::Swtpm).

use std::path::Path;
use std::process::{Command, Output};

use crate::{Result, Swtpm};

/// Runs `tool args...` with `TPM2TOOLS_TCTI` pointing at `tpm`; fails on a non-zero exit.
pub fn run(tpm: &Swtpm, tool: &str, args: &[&str]) -> Result<Output> {
    let out = try_run(tpm, tool, args)?;
    if !out.status.success() {
        return Err(format!(
            "{tool} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// Like [`run`], but returns the output whatever the exit status.
pub fn try_run(tpm: &Swtpm, tool: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(tool)
        .args(args)
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .current_dir(tpm.scratch())
        .output()
        .map_err(|e| format!("cannot run {tool} ({e}); install tpm2-tools with `make deps`"))?;
    // Without a resource manager, transient objects of one tool call stay loaded; flush them.
    let _ = Command::new("tpm2_flushcontext")
        .args(["-t"])
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output();
    let _ = Command::new("tpm2_flushcontext")
        .args(["-s"])
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output();
    Ok(out)
}

/// Path of a file in the TPM's scratch directory, as a string for tool arguments.
pub fn path(tpm: &Swtpm, name: &str) -> String {
    tpm.scratch().join(name).display().to_string()
}

/// Whether a file exists in the scratch directory.
pub fn exists(tpm: &Swtpm, name: &str) -> bool {
    Path::new(&path(tpm, name)).exists()
}

/// Puts the TPM into dictionary-attack lockout: maxTries 1, then one failed authorization of
/// a DA-protected object (an NV index with a password). Errors when the failed read succeeds.
pub fn lock_out(tpm: &Swtpm) -> Result<()> {
    run(
        tpm,
        "tpm2_dictionarylockout",
        &["-s", "-n", "1", "-t", "600", "-l", "600"],
    )?;
    run(
        tpm,
        "tpm2_nvdefine",
        &[
            "0x1500016",
            "-C",
            "o",
            "-s",
            "8",
            "-a",
            "authread|authwrite",
            "-p",
            "nvpass",
        ],
    )?;
    let failed = try_run(
        tpm,
        "tpm2_nvread",
        &["0x1500016", "-C", "0x1500016", "-P", "wrong", "-s", "8"],
    )?;
    if failed.status.success() {
        return Err("tpm2_nvread with a wrong password succeeded: no lockout".into());
    }
    Ok(())
}
