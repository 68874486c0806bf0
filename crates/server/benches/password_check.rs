//! What keeping argon2's working memory between password checks saves: one check of the
//! default cost (argon2id, 19 MiB, two passes) in memory allocated for it and freed after
//! (`verify_password`, the memory the kernel maps and zeroes anew each time) and in a buffer
//! kept from the check before (`verify_password_in`, as the server's checks run), with the
//! page faults each takes (this process's minor faults, from `/proc/self/stat`), under the
//! server's allocator.
//!
//! `cargo bench -p nodetrust-server --bench password_check` (optionally `-- CHECKS`, 20 of
//! each, in turn, each on a thread of its own). Prints `fresh memory: N ms, F page faults a
//! check` and the same for `kept memory`. In the server a check comes seconds after the last,
//! when the allocator has returned the freed memory to the kernel; here the next comes at
//! once, so `MIMALLOC_PURGE_DELAY=0` (return it at once) is the server's case.

use std::hint::black_box;
use std::time::{Duration, Instant};

use nodetrust_server::auth::{hash_password, verify_password, verify_password_in};

/// The server's allocator (`main.rs`), whose freed large blocks go back to the kernel.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// This process's minor page faults so far (`minflt`, the tenth field of `/proc/self/stat`
/// after the command's name).
fn minor_faults() -> Result<u64, Error> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let (_, after_name) = stat
        .rsplit_once(") ")
        .ok_or("no command name in /proc/self/stat")?;
    let field = after_name
        .split(' ')
        .nth(7)
        .ok_or("short /proc/self/stat")?;
    Ok(field.parse()?)
}

/// One check, timed, on a thread of its own: its time, its page faults and what it returns.
fn on_a_thread<T: Send + 'static>(
    check: impl FnOnce() -> T + Send + 'static,
) -> Result<(Duration, u64, T), Error> {
    std::thread::spawn(move || -> Result<_, Error> {
        let (f0, t0) = (minor_faults()?, Instant::now());
        let out = black_box(check());
        Ok((t0.elapsed(), minor_faults()? - f0, out))
    })
    .join()
    .map_err(|_| "a check panicked")?
}

fn main() -> Result<(), Error> {
    let checks: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let phc = hash_password("agent-pw")?;
    let mut kept = Vec::new();
    assert!(verify_password_in("agent-pw", &phc, &mut kept));
    let (mut fresh_time, mut kept_time) = (Duration::ZERO, Duration::ZERO);
    let (mut fresh_faults, mut kept_faults) = (0, 0);
    for _ in 0..checks {
        // The server's checks run on tokio's blocking threads, and are seconds apart (a cached
        // login lasts 30 s): by the next one the thread that ran a check has ended (after 10 s
        // idle) and the allocator has returned its memory.
        let phc_fresh = phc.clone();
        let (time, faults, valid) = on_a_thread(move || verify_password("agent-pw", &phc_fresh))?;
        assert!(valid);
        fresh_time += time;
        fresh_faults += faults;
        let phc_kept = phc.clone();
        let (time, faults, (valid, buffer)) = on_a_thread(move || {
            let valid = verify_password_in("agent-pw", &phc_kept, &mut kept);
            (valid, kept)
        })?;
        assert!(valid);
        kept = buffer;
        kept_time += time;
        kept_faults += faults;
    }
    for (name, time, faults) in [
        ("fresh memory", fresh_time, fresh_faults),
        ("kept memory", kept_time, kept_faults),
    ] {
        println!(
            "{name}: {:.1} ms, {} page faults a check",
            time.as_secs_f64() * 1e3 / f64::from(checks),
            faults / u64::from(checks)
        );
    }
    Ok(())
}
