//! Starts a swtpm and prints its TCTI, then waits: for trying tpm2-tools by hand.
fn main() {
    let tpm = match nodetrust_testkit::Swtpm::start() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!("{}", tpm.tcti());
    println!("{}", tpm.template().root_cert.display());
    std::thread::sleep(std::time::Duration::from_secs(u64::MAX / 4));
}
