//! TCG event log parser: any bytes either parse or give an error; a log that parses replays,
//! is named, checked and diffed against itself (no difference) without panicking, and a
//! crypto-agile log rebuilt from its events parses back to the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetrust_eventlog::build::LogBuilder;
use nodetrust_eventlog::{describe, diff, integrity, EventLog, LogFormat, Replay};

fuzz_target!(|data: &[u8]| {
    let Ok(log) = EventLog::parse(data) else {
        return;
    };
    let replay = Replay::run(&log);
    let _ = replay.values();
    for e in &log.events {
        let _ = describe(e).to_string();
    }
    let _ = integrity::check(&log);
    // A log differs from itself only when it has no bank to compare by.
    let same = diff(&log, &log);
    assert!(
        same.is_empty()
            || (same.len() == 1 && same[0].change == nodetrust_eventlog::Change::NoCommonBank)
    );

    // Round trip through the builder when every bank is one the builder can write.
    if log.format == LogFormat::CryptoAgile {
        let banks: Vec<_> = log.algorithms().iter().filter_map(|a| a.hash()).collect();
        if banks.len() != log.algorithms().len() {
            return;
        }
        let mut b = LogBuilder::crypto_agile(&banks);
        for e in log.measurements() {
            let digests = e
                .digests
                .iter()
                .filter_map(|d| d.hash().map(|h| (h, d.bytes.to_vec())))
                .collect();
            b.event_with_digests(e.pcr, e.event_type, digests, e.data);
        }
        let bytes = b.bytes();
        let again = EventLog::parse(&bytes).expect("a rebuilt log parses");
        let ours: Vec<_> = log
            .measurements()
            .map(|e| (e.pcr, e.event_type, e.data, e.digests.clone()))
            .collect();
        let theirs: Vec<_> = again
            .measurements()
            .map(|e| (e.pcr, e.event_type, e.data, e.digests.clone()))
            .collect();
        if log.trailing_padding == 0 {
            assert_eq!(ours, theirs);
        }
    }
});
