//! Replay rules that the real fixtures do not exercise, on logs built here: StartupLocality,
//! H-CRTM, DRTM PCRs 17-22, unknown algorithms in the Spec ID event, parse errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] fns: a panic is a failed test"
)]

use nodetrust_eventlog::build::LogBuilder;
use nodetrust_eventlog::types as t;
use nodetrust_eventlog::{EventLog, LogFormat, ParseErrorKind, Replay};
use nodetrust_tpm_wire::HashAlg;

const BANKS: [HashAlg; 2] = [HashAlg::Sha1, HashAlg::Sha256];

fn start(alg: HashAlg, last: u8) -> Vec<u8> {
    let mut v = vec![0u8; alg.size()];
    *v.last_mut().unwrap() = last;
    v
}

#[test]
fn startup_locality_3_sets_pcr0_initial_value() {
    let mut b = LogBuilder::crypto_agile(&BANKS);
    b.startup_locality(3).event(0, t::EV_S_CRTM_VERSION, b"v1");
    let bytes = b.bytes();
    let log = EventLog::parse(&bytes).unwrap();
    let r = Replay::run(&log);
    assert_eq!(r.startup_locality(), Some(3));
    for alg in BANKS {
        let want = alg.extend(&start(alg, 3), &alg.digest(b"v1"));
        assert_eq!(r.get(alg, 0).unwrap(), want.as_slice(), "{alg}");
    }
}

#[test]
fn startup_locality_after_the_first_extend_or_invalid_is_ignored() {
    for (late, locality) in [(true, 3), (false, 1), (false, 0)] {
        let mut b = LogBuilder::crypto_agile(&BANKS);
        if late {
            b.event(0, t::EV_S_CRTM_VERSION, b"v1")
                .startup_locality(locality);
        } else {
            b.startup_locality(locality)
                .event(0, t::EV_S_CRTM_VERSION, b"v1");
        }
        let bytes = b.bytes();
        let r = Replay::run(&EventLog::parse(&bytes).unwrap());
        assert_eq!(r.startup_locality(), None);
        let want = HashAlg::Sha256.extend(&[0u8; 32], &HashAlg::Sha256.digest(b"v1"));
        assert_eq!(r.get(HashAlg::Sha256, 0).unwrap(), want.as_slice());
    }
}

#[test]
fn hcrtm_event_starts_pcr0_at_locality_4() {
    let mut b = LogBuilder::crypto_agile(&BANKS);
    b.event(0, t::EV_EFI_HCRTM_EVENT, b"HCRTM");
    let bytes = b.bytes();
    let r = Replay::run(&EventLog::parse(&bytes).unwrap());
    assert_eq!(r.startup_locality(), Some(4));
    let want = HashAlg::Sha1.extend(&start(HashAlg::Sha1, 4), &HashAlg::Sha1.digest(b"HCRTM"));
    assert_eq!(r.get(HashAlg::Sha1, 0).unwrap(), want.as_slice());
}

#[test]
fn drtm_pcrs_start_all_ones_until_a_measured_launch() {
    // Without a launch: an extend of PCR 18 starts from 0xFF...
    let mut b = LogBuilder::crypto_agile(&BANKS);
    b.event(18, 0x501, b"tboot policy");
    let bytes = b.bytes();
    let r = Replay::run(&EventLog::parse(&bytes).unwrap());
    assert!(!r.drtm());
    let want = HashAlg::Sha256.extend(&[0xFF; 32], &HashAlg::Sha256.digest(b"tboot policy"));
    assert_eq!(r.get(HashAlg::Sha256, 18).unwrap(), want.as_slice());
    assert_eq!(r.get(HashAlg::Sha256, 20).unwrap(), [0xFF; 32].as_slice());

    // A launch (first event in PCR 17) resets 17-22 to zero first.
    let mut b = LogBuilder::crypto_agile(&BANKS);
    b.event(17, t::EV_TXT_HASH_START, b"SINIT")
        .event(18, 0x501, b"tboot policy");
    let bytes = b.bytes();
    let log = EventLog::parse(&bytes).unwrap();
    let r = Replay::run(&log);
    assert!(r.drtm());
    for alg in BANKS {
        let p17 = alg.extend(&vec![0; alg.size()], &alg.digest(b"SINIT"));
        let p18 = alg.extend(&vec![0; alg.size()], &alg.digest(b"tboot policy"));
        assert_eq!(r.get(alg, 17).unwrap(), p17.as_slice());
        assert_eq!(r.get(alg, 18).unwrap(), p18.as_slice());
        assert_eq!(r.get(alg, 19).unwrap(), vec![0u8; alg.size()].as_slice());
    }
    assert_eq!(r.touched_pcrs(HashAlg::Sha1), vec![17, 18]);
    let c = nodetrust_eventlog::describe(&log.events[1]);
    assert_eq!(c.kind, nodetrust_eventlog::ComponentKind::MeasuredLaunch);
}

#[test]
fn unknown_algorithm_in_the_header_is_skipped_by_its_declared_size() {
    // A Spec ID event with SHA-256 and SM3 (0x0012, 32 bytes), written by hand.
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend_from_slice(&0u32.to_le_bytes());
    spec.extend_from_slice(&[0, 2, 0, 2]);
    spec.extend_from_slice(&2u32.to_le_bytes());
    spec.extend_from_slice(&0x000bu16.to_le_bytes());
    spec.extend_from_slice(&32u16.to_le_bytes());
    spec.extend_from_slice(&0x0012u16.to_le_bytes());
    spec.extend_from_slice(&32u16.to_le_bytes());
    spec.push(0);
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&t::EV_NO_ACTION.to_le_bytes());
    bytes.extend_from_slice(&[0; 20]);
    bytes.extend_from_slice(&(spec.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&spec);
    let d = HashAlg::Sha256.digest(b"x");
    bytes.extend_from_slice(&4u32.to_le_bytes());
    bytes.extend_from_slice(&t::EV_SEPARATOR.to_le_bytes());
    bytes.extend_from_slice(&2u32.to_le_bytes());
    bytes.extend_from_slice(&0x0012u16.to_le_bytes());
    bytes.extend_from_slice(&[0xAB; 32]);
    bytes.extend_from_slice(&0x000bu16.to_le_bytes());
    bytes.extend_from_slice(&d);
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.push(b'x');
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(log.format, LogFormat::CryptoAgile);
    assert_eq!(log.events[1].digests.len(), 2);
    let r = Replay::run(&log);
    assert_eq!(r.unsupported(), &[0x0012]);
    assert_eq!(
        r.get(HashAlg::Sha256, 4).unwrap(),
        HashAlg::Sha256.extend(&[0; 32], &d).as_slice()
    );

    // A digest of an algorithm the header did not declare cannot be sized: an error at its offset.
    let off = bytes.len() - 1 - 4 - 32 - 2 - 32 - 2;
    bytes[off] = 0x0d;
    let e = EventLog::parse(&bytes).unwrap_err();
    assert_eq!((e.event, e.offset), (1, off));
    assert_eq!(e.kind, ParseErrorKind::UndeclaredAlgorithm { alg: 0x000d });
}

#[test]
fn errors_name_event_and_offset() {
    let mut b = LogBuilder::crypto_agile(&BANKS);
    b.event(0, t::EV_S_CRTM_VERSION, b"v1")
        .event(4, t::EV_SEPARATOR, &[0; 4]);
    let bytes = b.bytes();
    let ok = EventLog::parse(&bytes).unwrap();
    let second = ok.events[2].offset;
    // Truncated inside the second event's data.
    let e = EventLog::parse(&bytes[..bytes.len() - 1]).unwrap_err();
    assert_eq!(e.event, 2);
    assert!(e.offset > second, "{e}");
    assert!(matches!(e.kind, ParseErrorKind::Truncated { .. }));
    // An absurd data size is refused before reading.
    let mut big = bytes.clone();
    let size_at = bytes.len() - 4 - 4;
    big[size_at..size_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = EventLog::parse(&big).unwrap_err();
    assert_eq!((e.event, e.offset), (2, size_at));
    assert!(matches!(e.kind, ParseErrorKind::TooLong { .. }), "{e}");
    // A PCR index out of range.
    let mut bad = bytes.clone();
    bad[second] = 30;
    let e = EventLog::parse(&bad).unwrap_err();
    assert_eq!(
        (e.event, e.offset, e.kind),
        (2, second, ParseErrorKind::BadPcrIndex(30))
    );
    assert_eq!(
        EventLog::parse(&[]).unwrap_err().kind,
        ParseErrorKind::Empty
    );
    // Zero padding after the last event (a fixed-size ACPI area) ends the log.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0; 100]);
    let log = EventLog::parse(&padded).unwrap();
    assert_eq!((log.events.len(), log.trailing_padding), (3, 100));
}

#[test]
fn sha1_format_round_trips() {
    let mut b = LogBuilder::sha1();
    b.event(0, t::EV_S_CRTM_VERSION, b"v1")
        .event(7, t::EV_SEPARATOR, &[0; 4])
        .event(0, t::EV_NO_ACTION, b"note");
    let bytes = b.bytes();
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(log.format, LogFormat::Sha1);
    assert_eq!(log.events.len(), 3);
    let r = Replay::run(&log);
    assert_eq!(r.banks().collect::<Vec<_>>(), vec![HashAlg::Sha1]);
    assert_eq!(r.touched_pcrs(HashAlg::Sha1), vec![0, 7]);
    let want = HashAlg::Sha1.extend(&[0; 20], &HashAlg::Sha1.digest(b"v1"));
    assert_eq!(r.get(HashAlg::Sha1, 0).unwrap(), want.as_slice());
}

#[test]
fn replaying_selected_banks_gives_the_same_values() {
    let bytes = std::fs::read(
        nodetrust_testkit::fixtures_dir().join("eventlogs/event-gce-ubuntu-2104-log.bin"),
    )
    .unwrap();
    let log = EventLog::parse(&bytes).unwrap();
    let all = Replay::run(&log);
    let one = Replay::run_banks(&log, &[HashAlg::Sha256]);
    assert_eq!(one.banks().collect::<Vec<_>>(), vec![HashAlg::Sha256]);
    let mut want = nodetrust_tpm_wire::PcrValues::new();
    for (alg, pcr, v) in all
        .values()
        .iter()
        .filter(|(a, _, _)| *a == HashAlg::Sha256)
    {
        want.insert(alg, pcr, v.to_vec()).unwrap();
    }
    assert_eq!(one.values(), want);
    assert_eq!(one.get(HashAlg::Sha1, 0), None);
}

#[test]
fn more_digests_than_kept_inline_are_kept_in_order() {
    // Eight declared algorithms: four hashes plus four this crate cannot compute.
    let algs: [(u16, u16); 8] = [
        (0x0004, 20),
        (0x000b, 32),
        (0x000c, 48),
        (0x000d, 64),
        (0x0012, 32),
        (0x0027, 32),
        (0x0028, 48),
        (0x0029, 64),
    ];
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend_from_slice(&0u32.to_le_bytes());
    spec.extend_from_slice(&[0, 2, 0, 2]);
    spec.extend_from_slice(&(algs.len() as u32).to_le_bytes());
    for (a, s) in algs {
        spec.extend_from_slice(&a.to_le_bytes());
        spec.extend_from_slice(&s.to_le_bytes());
    }
    spec.push(0);
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&t::EV_NO_ACTION.to_le_bytes());
    bytes.extend_from_slice(&[0; 20]);
    bytes.extend_from_slice(&(spec.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&spec);
    bytes.extend_from_slice(&7u32.to_le_bytes());
    bytes.extend_from_slice(&t::EV_SEPARATOR.to_le_bytes());
    bytes.extend_from_slice(&(algs.len() as u32).to_le_bytes());
    for (i, (a, s)) in algs.iter().enumerate() {
        bytes.extend_from_slice(&a.to_le_bytes());
        bytes.extend(std::iter::repeat_n(i as u8, usize::from(*s)));
    }
    bytes.extend_from_slice(&4u32.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    let log = EventLog::parse(&bytes).unwrap();
    let d = &log.events[1].digests;
    assert_eq!(d.len(), 8);
    for (i, (a, s)) in algs.iter().enumerate() {
        assert_eq!(
            (d[i].alg, d[i].bytes.len(), d[i].bytes[0]),
            (*a, usize::from(*s), i as u8)
        );
    }
    let r = Replay::run(&log);
    assert_eq!(r.unsupported(), &[0x0012, 0x0027, 0x0028, 0x0029]);
    assert_eq!(
        r.get(HashAlg::Sha512, 7).unwrap(),
        HashAlg::Sha512.extend(&[0; 64], &[3; 64]).as_slice()
    );
}

#[test]
fn many_empty_events_parse_in_linear_time() {
    // 200,000 all-zero TCG_PCR_EVENT2 structures (PCR 0, type 0, no digests, no data), then one
    // stray byte: each event is read once, and the stray byte is a truncation error.
    let mut b = LogBuilder::crypto_agile(&BANKS);
    b.event(4, t::EV_SEPARATOR, &[0; 4]);
    let mut bytes = b.bytes();
    bytes.extend(std::iter::repeat_n(0u8, 16 * 200_000));
    bytes.push(1);
    let e = EventLog::parse(&bytes).unwrap_err();
    assert_eq!(e.event, 200_002);
    assert!(matches!(e.kind, ParseErrorKind::Truncated { .. }));
}
