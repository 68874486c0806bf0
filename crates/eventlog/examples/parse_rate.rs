//! Times `EventLog::parse` alone: parses one file repeatedly and prints parses per second.
//!
//! Usage: `parse_rate LOG.bin [SECONDS]` (default 3 seconds).

use std::hint::black_box;
use std::time::{Duration, Instant};

use nodetrust_eventlog::tcg::EventLog;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: parse_rate LOG.bin [SECONDS]");
        std::process::exit(2);
    };
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let events = match EventLog::parse(&bytes) {
        Ok(log) => log.events.len(),
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut parses: u64 = 0;
    let mut checksum: usize = 0;
    while start.elapsed() < budget {
        // Batches of 256 keep the clock reads out of the measurement.
        for _ in 0..256 {
            if let Ok(log) = EventLog::parse(black_box(&bytes)) {
                checksum = checksum.wrapping_add(black_box(&log).events.len());
            }
        }
        parses += 256;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rate = parses as f64 / elapsed;
    println!("events: {events}");
    println!("checksum: {checksum}");
    println!("ns/parse: {:.1}", 1e9 / rate);
    println!("parses/s: {rate:.0}");
}
