//! A software TPM (swtpm, libtpms) per test.
//!
//! The TPM is manufactured once per machine and fixture version (`swtpm_setup` with a private
//! swtpm-localca, about a second: RSA-2048 and ECC P-384 EKs with certificates in NV and a CA
//! chain) into a template directory; every [`Swtpm::start`] copies that state and runs its own
//! `swtpm socket` on a free port pair (the swtpm TCTI wants the control channel on port + 1).

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::Result;

const TEMPLATE_VERSION: &str = "v1";

/// Where the manufactured TPM and its CA live.
#[derive(Debug, Clone)]
pub struct TemplateInfo {
    /// swtpm state directory to copy.
    pub state: PathBuf,
    /// The EK certificates' issuing CA (PEM).
    pub issuer_cert: PathBuf,
    /// The root CA (PEM).
    pub root_cert: PathBuf,
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().map_err(|e| {
        format!("{what}: cannot run ({e}); install swtpm and tpm2-tools with `make deps` (make test does it)")
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Manufactures the template once (shared between test processes through an atomic rename).
pub fn template() -> Result<TemplateInfo> {
    let root = std::env::temp_dir().join("nodetrust-testkit");
    let final_dir = root.join(format!("swtpm-template-{TEMPLATE_VERSION}"));
    let info = TemplateInfo {
        state: final_dir.join("state"),
        issuer_cert: final_dir.join("ca/issuercert.pem"),
        root_cert: final_dir.join("ca/swtpm-localca-rootca-cert.pem"),
    };
    if final_dir.join("done").exists() {
        return Ok(info);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let work = tempfile::Builder::new()
        .prefix("manufacture-")
        .tempdir_in(&root)
        .map_err(|e| format!("tempdir: {e}"))?;
    let w = work.path();
    let ca = w.join("ca");
    let state = w.join("state");
    for d in [&ca, &state] {
        std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    let localca_conf = w.join("swtpm-localca.conf");
    std::fs::write(
        &localca_conf,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let options = w.join("swtpm-localca.options");
    std::fs::write(
        &options,
        "--platform-manufacturer nodetrust\n--platform-version 2.1\n--platform-model testkit\n",
    )
    .map_err(|e| e.to_string())?;
    let setup_conf = w.join("swtpm_setup.conf");
    std::fs::write(
        &setup_conf,
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha1,sha256\n",
            localca_conf.display(),
            options.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    run(
        Command::new("swtpm_setup")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(&state)
            .arg("--config")
            .arg(&setup_conf)
            .args([
                "--createek",
                "--create-ek-cert",
                "--create-platform-cert",
                "--pcr-banks",
                "sha1,sha256",
                "--overwrite",
            ]),
        "swtpm_setup",
    )?;
    std::fs::write(w.join("done"), b"").map_err(|e| e.to_string())?;
    let kept = work.keep();
    if std::fs::rename(&kept, &final_dir).is_err() {
        // Another process won the race; its template is as good as ours.
        let _ = std::fs::remove_dir_all(&kept);
    }
    if final_dir.join("done").exists() {
        Ok(info)
    } else {
        Err(format!("swtpm template missing at {}", final_dir.display()))
    }
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A free loopback port for a test's listener, below the kernel's ephemeral range: a port the
/// kernel assigns (`bind` to port 0) is released until the process under test binds it, and
/// meanwhile any outgoing connection of the machine may take it ("Address already in use").
pub fn free_port() -> Result<u16> {
    free_ports(1)
}

/// Finds `n` consecutive free ports (1 or 2: swtpm takes a server and a control port).
fn free_ports(n: u16) -> Result<u16> {
    // Spread processes apart, then probe upwards.
    if NEXT_PORT.load(Ordering::Relaxed) == 0 {
        // Below the kernel's ephemeral range (32768 and up): a port there could be taken by
        // an outgoing connection, or a connection to it could connect to itself.
        let seed = 20000 + (std::process::id() % 1100) as u16 * 10;
        let _ = NEXT_PORT.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    let bind_all = |p: u16| -> std::result::Result<(), String> {
        let mut held = Vec::new();
        for q in p..p.saturating_add(n) {
            held.push(TcpListener::bind(("127.0.0.1", q)).map_err(|e| format!("port {q}: {e}"))?);
        }
        Ok(())
    };
    let mut last = String::new();
    for _ in 0..2000 {
        let p = NEXT_PORT.fetch_add(n, Ordering::Relaxed);
        if !(1024..=32000).contains(&p) {
            NEXT_PORT.store(20000, Ordering::Relaxed);
            continue;
        }
        match bind_all(p) {
            Ok(()) => return Ok(p),
            Err(e) => last = e,
        }
    }
    // The probed range is taken (another process holds many ports there): ask the kernel for
    // a free port and check its neighbours.
    for _ in 0..200 {
        let p = match TcpListener::bind(("127.0.0.1", 0)).and_then(|a| a.local_addr()) {
            Ok(addr) => addr.port(),
            Err(e) => {
                last = format!("a kernel-assigned port: {e}");
                continue;
            }
        };
        if p > 65535 - n {
            continue;
        }
        match bind_all(p) {
            Ok(()) => return Ok(p),
            Err(e) => last = e,
        }
    }
    Err(format!("no {n} free consecutive port(s) (last: {last})"))
}

/// A running swtpm. Killed (and its state removed) on drop.
#[derive(Debug)]
pub struct Swtpm {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    template: TemplateInfo,
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(from).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

impl Swtpm {
    /// Copies the manufactured TPM and starts it on free ports.
    pub fn start() -> Result<Self> {
        let template = template()?;
        let dir = tempfile::Builder::new()
            .prefix("nodetrust-swtpm-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        copy_dir(&template.state, &dir.path().join("state"))?;
        let mut me = Self {
            child: None,
            port: 0,
            dir,
            template,
        };
        me.launch()?;
        Ok(me)
    }

    fn launch(&mut self) -> Result<()> {
        self.launch_on(None)
    }

    /// Starts swtpm on `fixed` (the server port; control is + 1), or on free ports.
    fn launch_on(&mut self, fixed: Option<u16>) -> Result<()> {
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = match fixed {
                Some(p) => p,
                None => free_ports(2)?,
            };
            let state = self.dir.path().join("state");
            let log = self.dir.path().join("swtpm.log");
            let child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", state.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .args(["--flags", "not-need-init,startup-clear"])
                .arg("--log")
                .arg(format!("file={},level=1", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| {
                    format!(
                        "cannot start swtpm ({e}); install it with `make deps` (make test does it)"
                    )
                })?;
            self.child = Some(child);
            self.port = port;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = e;
                    self.kill();
                }
            }
        }
        Err(format!("swtpm did not start: {last}"))
    }

    /// Sends TPM2_GetCapability until the TPM answers.
    fn wait_ready(&mut self) -> Result<()> {
        // TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES, TPM_PT_MANUFACTURER, 1), no sessions.
        const CMD: [u8; 22] = [
            0x80, 0x01, 0, 0, 0, 22, 0, 0, 0x01, 0x7a, 0, 0, 0, 6, 0, 0, 0x01, 0x05, 0, 0, 0, 1,
        ];
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("swtpm exited: {status}"));
                }
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                if s.write_all(&CMD).is_ok() {
                    let mut hdr = [0u8; 10];
                    if std::io::Read::read_exact(&mut s, &mut hdr).is_ok() {
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("swtpm did not answer within 10 s".to_string())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Simulates a reboot: stops swtpm and starts it again on the same state, so PCRs reset
    /// and the TPM's resetCount increments.
    pub fn reboot(&mut self) -> Result<()> {
        self.kill();
        self.launch()
    }

    /// Kills swtpm and starts it again on the same state and the same ports, as a TPM service
    /// restarting under a running agent would (PCRs reset, loaded objects gone, resetCount up).
    pub fn restart_in_place(&mut self) -> Result<()> {
        let port = self.port;
        self.kill();
        // The old listener's ports can take a moment to be free again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch_on(Some(port)) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The TCTI string for tpm2-tss (`swtpm:host=127.0.0.1,port=P`).
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The server port (control is port + 1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A scratch directory that lives as long as this TPM.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// The manufactured template (CA certificates).
    pub fn template(&self) -> &TemplateInfo {
        &self.template
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.kill();
    }
}
