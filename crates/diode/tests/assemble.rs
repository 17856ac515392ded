//! The receiving half's logic (`Assembler`) fed datagrams made by the sending half's own
//! encoder, with time in the test's hands: the cases an adversarial review found.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::time::{Duration, Instant};

use airlock_diode::assemble::{Assembler, Output, PARTIAL_BLOCKS_MAX, State};
use airlock_diode::send::block_datagrams;
use airlock_diode::wire::{self, Header, Heartbeat};

const SENDER: &str = "press-gw";

fn header(session: u64) -> Header {
    Header { sender: wire::sender_hash(SENDER), session }
}

/// Block `number` holding raw records `first..=last` (each 40 bytes), after `before` raw.
fn block(session: u64, number: u64, before: u64, first: u64, last: u64) -> Vec<Vec<u8>> {
    let payload = [5u8; 40];
    let records: Vec<(u8, u64, i64, &[u8])> = (first..=last).map(|s| (3u8, s, s as i64, &payload[..])).collect();
    let mut bytes = Vec::new();
    wire::encode_block(&mut bytes, SENDER, [0, 0, 0, before], &records);
    block_datagrams(header(session), number, &bytes, 64, 50.0).unwrap()
}

fn heartbeat(session: u64, next_block: u64, sent_raw: u64) -> Vec<u8> {
    let beat = Heartbeat {
        next_block,
        sent: [0, 0, 0, sent_raw],
        name: SENDER.into(),
        heartbeat_ms: 1000,
        ..Heartbeat::default()
    };
    let mut d = Vec::new();
    wire::encode_heartbeat(&mut d, header(session), &beat);
    d
}

fn raw_ids(out: &[Output]) -> Vec<u64> {
    out.iter().filter_map(|o| if let Output::Record(r) = o { Some(r.seq) } else { None }).collect()
}

fn missing(out: &[Output]) -> Vec<(u64, u64)> {
    out.iter()
        .filter_map(|o| if let Output::Missing { first, last, .. } = o { Some((*first, *last)) } else { None })
        .collect()
}

fn assembler() -> Assembler {
    Assembler::new(SENDER, Duration::from_millis(500), Some(State::default()))
}

/// Blocks that decoded are handed on even when the bound on blocks being decoded pushes out a
/// later, undecodable one; they are never named missing.
#[test]
fn decoded_blocks_survive_the_bound_on_partial_blocks() {
    let mut a = assembler();
    let (t, mut out) = (Instant::now(), Vec::new());
    a.datagram(&heartbeat(1, 0, 0), t, &mut out).unwrap();
    // Block 0 never arrives; blocks 1 and 2 decode; then more partial blocks than the bound.
    for (n, first) in [(1u64, 11u64), (2, 21)] {
        for d in block(1, n, first - 1, first, first + 9) {
            a.datagram(&d, t, &mut out).unwrap();
        }
    }
    for n in 3..(PARTIAL_BLOCKS_MAX as u64 + 10) {
        let first = n * 10 + 1;
        let d = &block(1, n, first - 1, first, first + 9)[0];
        a.datagram(d, t, &mut out).unwrap();
    }
    // Later, the wait is over: block 0 is given up, 1 and 2 go on.
    a.expire(t + Duration::from_secs(5), &mut out);
    a.advance(t + Duration::from_secs(5), &mut out);
    let ids = raw_ids(&out);
    assert!(
        ids.starts_with(&(11..=30).collect::<Vec<_>>()),
        "blocks 1 and 2 handed on first: {:?}",
        &ids[..ids.len().min(25)]
    );
    for (first, last) in missing(&out) {
        assert!(last < 11 || first > 30, "received ids named missing: {first}..={last}");
    }
}

/// A lost last block is named while heartbeats keep coming (each saying the same).
#[test]
fn a_lost_last_block_is_named_while_heartbeats_keep_coming() {
    let mut a = assembler();
    let (t, mut out) = (Instant::now(), Vec::new());
    a.datagram(&heartbeat(1, 0, 0), t, &mut out).unwrap();
    for d in block(1, 0, 0, 1, 10) {
        a.datagram(&d, t, &mut out).unwrap();
    }
    // Block 1 (ids 11..=20) is lost whole; heartbeats every 400 ms, shorter than the wait.
    for i in 1..=10 {
        let now = t + Duration::from_millis(400 * i);
        a.datagram(&heartbeat(1, 2, 20), now, &mut out).unwrap();
        a.expire(now, &mut out);
    }
    assert_eq!(missing(&out), vec![(11, 20)], "ids 11 to 20 named within 4 s of heartbeats");
}

/// A sender restarted with its clock set back (a lower session) is taken once its old session
/// has been silent a while; a replay of an older session meanwhile is not.
#[test]
fn a_sender_whose_clock_went_back_is_taken_after_a_silence() {
    let mut a = assembler();
    let (t, mut out) = (Instant::now(), Vec::new());
    a.datagram(&heartbeat(1_000, 0, 0), t, &mut out).unwrap();
    assert!(a.datagram(&heartbeat(900, 0, 0), t + Duration::from_millis(500), &mut out).is_err(), "a replay");
    let later = t + Duration::from_secs(30);
    a.datagram(&heartbeat(900, 0, 0), later, &mut out).unwrap();
    for d in block(900, 0, 0, 1, 10) {
        a.datagram(&d, later, &mut out).unwrap();
    }
    assert_eq!(raw_ids(&out), (1..=10).collect::<Vec<_>>());
    assert!(out.iter().any(|o| matches!(o, Output::SenderRestarted)));
}

/// A receiver restarted while the sender repeats its blocks (`repeat_after_ms`): the first
/// block it sees after the restart names what it missed (sent while it was down), and the
/// repeats of those older blocks, arriving after it, are decoded and hand the missing records
/// on after all (recovered), each once. Before, they were dropped as late symbols.
#[test]
fn repeats_of_blocks_sent_while_the_receiver_was_down_are_taken_late() {
    // The receiver held r1..=r10 when it stopped.
    let state = State { last: [0, 0, 0, 10], ..State::default() };
    let mut a = Assembler::new(SENDER, Duration::from_millis(500), Some(state));
    let (t, mut out) = (Instant::now(), Vec::new());
    // Blocks 1 (r11..=r15) and 2 (r16..=r20) went while it was down; block 3 (r21..=r25) is the
    // first it sees, then the repeats of 1 and 2 come.
    for d in block(1, 3, 20, 21, 25) {
        a.datagram(&d, t, &mut out).unwrap();
    }
    a.advance(t, &mut out);
    assert_eq!(missing(&out), vec![(11, 20)]);
    assert_eq!(raw_ids(&out), (21..=25).collect::<Vec<_>>());
    out.clear();
    let later = t + Duration::from_millis(200);
    for n in [1, 2] {
        let first = 11 + (n - 1) * 5;
        for d in block(1, n, first - 1, first, first + 4) {
            a.datagram(&d, later, &mut out).unwrap();
        }
    }
    // A second repeat of block 1 brings nothing new.
    for d in block(1, 1, 10, 11, 15) {
        a.datagram(&d, later, &mut out).unwrap();
    }
    a.advance(later, &mut out);
    assert_eq!(raw_ids(&out), (11..=20).collect::<Vec<_>>(), "the repeats hand the missing records on");
    assert!(a.missing().is_empty(), "still named missing: {:?}", a.missing());
    assert_eq!(a.stats.recovered, 10);
    // Once something is named missing again, the repeat of a block handed on in order (3) is
    // not decoded a second time: it cannot hold a missing id.
    for d in block(1, 4, 25, 26, 30) {
        a.datagram(&d, later, &mut out).unwrap();
    }
    // Block 5 (r31..=r35) is lost: block 6 comes after it, and the loss is named.
    for d in block(1, 6, 35, 36, 40) {
        a.datagram(&d, later, &mut out).unwrap();
    }
    let lost = later + Duration::from_secs(5);
    a.expire(lost, &mut out);
    a.advance(lost, &mut out);
    assert!(a.missing().contains_key(&(3, 31)), "named missing: {:?}", a.missing());
    let (duplicates, late) = (a.stats.duplicates, a.stats.late_symbols);
    for d in block(1, 3, 20, 21, 25) {
        a.datagram(&d, lost, &mut out).unwrap();
    }
    assert_eq!(a.stats.duplicates, duplicates, "block 3 was decoded again");
    assert!(a.stats.late_symbols > late);
}
