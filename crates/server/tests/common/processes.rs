//! Running the project's binaries from end-to-end tests: free ports, the agent binary (built on
//! demand), a child process killed when dropped, and waiting for a condition.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A free loopback port below the kernel's ephemeral range ([`nodetrust_testkit::free_port`]).
pub fn free_port() -> u16 {
    nodetrust_testkit::free_port().unwrap()
}

/// Kills the process when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let start = Instant::now();
        while self.0.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn agent_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let bin = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("nodetrust-agent");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "nodetrust-agent", "--bin", "nodetrust-agent"])
            .status()
            .unwrap();
        assert!(status.success(), "building nodetrust-agent failed");
    }
    bin
}

/// Polls `f` every 25 ms until it holds; fails the test after `within`.
pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}
