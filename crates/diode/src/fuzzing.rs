//! What the fuzz target `diode_datagram` runs (`fuzz/`), here so that `cargo test` replays the
//! inputs that once failed (`tests/fuzz_regressions.rs`) without the nightly toolchain. Two
//! kinds of input, by the first byte:
//! - even: raw datagrams (a u16 length, then its bytes; repeated), each also fed again with its
//!   checksum made right, so that the fuzzer reaches past the checksum into the decoders;
//! - odd: a real block (its records' bytes from the input, at most 256 of them) encoded by the
//!   sending half's own encoder, whose datagrams the input then drops, duplicates, reorders and
//!   corrupts.
//!
//! Also: the receiver's state file and a decoded block, from the same bytes.

use std::time::{Duration, Instant};

use crate::assemble::{Assembler, State};
use crate::receive::decode_state;
use crate::send::block_datagrams;
use crate::wire::{self, Header, Heartbeat};

fn reseal(d: &mut [u8]) {
    if d.len() >= 4 {
        let n = d.len() - 4;
        let crc = crc32fast::hash(&d[..n]);
        d[n..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// One fuzz input through the receiving half (see `fuzz/fuzz_targets/diode_datagram.rs`).
pub fn run(bytes: &[u8]) {
    let _ = decode_state(bytes);
    let _ = wire::decode_block(bytes);
    let Some((&mode, rest)) = bytes.split_first() else { return };
    let start = Instant::now();
    let mut now = start;
    let mut a = Assembler::new("press-gw", Duration::from_millis(5), Some(State::default()));
    let mut out = Vec::new();
    let header = Header { sender: wire::sender_hash("press-gw"), session: 9 };
    if mode % 2 == 0 {
        let mut r = rest;
        while r.len() >= 2 {
            let len = usize::from(u16::from_le_bytes([r[0], r[1]])).min(r.len() - 2);
            let mut d = r[2..2 + len].to_vec();
            r = &r[2 + len..];
            let _ = a.datagram(&d, now, &mut out);
            let _ = wire::decode_sealed(&d, Some(&wire::Key::new(b"a diode key of the fuzz target")));
            reseal(&mut d);
            let _ = a.datagram(&d, now, &mut out);
            now += Duration::from_millis(3);
            a.expire(now, &mut out);
        }
    } else {
        let split = rest.len() / 2;
        let (records, plan) = rest.split_at(split);
        // A small block (at most 256 bytes of records, symbols of 32 bytes or more): RaptorQ's
        // cost grows with the symbols of a block, and the assembler's paths do not (the
        // loopback and namespace tests carry full-size blocks).
        let records = &records[..records.len().min(256)];
        let mut block = Vec::new();
        let recs: Vec<(u8, u64, i64, &[u8])> =
            records.chunks(7).enumerate().map(|(i, c)| ((i % 4) as u8, i as u64 + 1, i as i64, c)).collect();
        wire::encode_block(&mut block, "press-gw", [0; 4], &recs);
        let mut beat = Vec::new();
        let hb = Heartbeat { next_block: 0, name: "press-gw".into(), ..Heartbeat::default() };
        wire::encode_heartbeat(&mut beat, header, &hb);
        let _ = a.datagram(&beat, now, &mut out);
        let symbol = 32 + 8 * usize::from(mode >> 4);
        let Ok(datagrams) = block_datagrams(header, 0, &block, symbol, f64::from(mode >> 1 & 7) * 10.0) else { return };
        for (i, step) in plan.iter().enumerate() {
            let Some(d) = datagrams.get(usize::from(*step) % datagrams.len().max(1)) else { break };
            let mut d = d.clone();
            if step & 0x80 != 0 && !d.is_empty() {
                let at = (i * 31) % d.len();
                d[at] ^= *step;
                reseal(&mut d);
            }
            let _ = a.datagram(&d, now, &mut out);
            now += Duration::from_millis(1);
        }
        a.expire(now + Duration::from_secs(1), &mut out);
    }
    out.clear();
}
