//! Gorilla-style compression (Pelkonen et al., VLDB 2015), written from the paper: timestamps
//! as delta-of-delta in variable-width bit fields, values as the XOR with the previous value,
//! storing only the meaningful bits. Timestamps here are milliseconds, not seconds, so the
//! delta-of-delta fields are wider than the paper's.

/// Writes bits most significant first, a 64-bit word at a time.
#[derive(Debug, Default, Clone)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Bits not yet in `bytes`, right-aligned.
    acc: u64,
    acc_bits: u32,
}

impl BitWriter {
    /// Writes the low `bits` bits of `value` (`bits` up to 64). Inlined into every field
    /// written, the word that fills apart ([`spill`](Self::spill)): a head takes a sample in a
    /// few such writes (issue 15).
    #[inline(always)]
    pub fn write(&mut self, value: u64, bits: u32) {
        if bits == 0 {
            return;
        }
        let value = value & (u64::MAX >> (64 - bits));
        if bits < 64 - self.acc_bits {
            self.acc = (self.acc << bits) | value;
            self.acc_bits += bits;
        } else {
            self.spill(value, bits);
        }
    }

    /// [`write`](Self::write) of a field that has no bits set above its `bits` (1 to 64):
    /// nothing to mask, no empty field to pass over. Several fields of a sample are written as
    /// one such field where they fit in a word (issue 15: a write each was a tenth of the
    /// writer's instructions).
    #[inline(always)]
    fn write_field(&mut self, value: u64, bits: u32) {
        debug_assert!((1..=64).contains(&bits) && (bits == 64 || value >> bits == 0), "{value:#x} in {bits} bits");
        if bits < 64 - self.acc_bits {
            self.acc = (self.acc << bits) | value;
            self.acc_bits += bits;
        } else {
            self.spill(value, bits);
        }
    }

    /// [`write`](Self::write) of `bits` masked bits that fill the word: it goes out, and what
    /// is left of `value` starts the next.
    #[inline(never)]
    fn spill(&mut self, value: u64, bits: u32) {
        let room = 64 - self.acc_bits;
        let left = bits - room;
        let word = if room == 64 { value } else { (self.acc << room) | (value >> left) };
        self.bytes.extend_from_slice(&word.to_be_bytes());
        self.acc = if left == 0 { 0 } else { value & (u64::MAX >> (64 - left)) };
        self.acc_bits = left;
    }

    /// Whole bytes written so far (the last word's bits not counted until it fills).
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes reserved for what is written.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// What is written so far, as [`finish`](Self::finish) would give it, leaving the writer be.
    pub fn snapshot(&self) -> Vec<u8> {
        self.clone().finish()
    }

    pub fn finish(mut self) -> Vec<u8> {
        let full = self.acc_bits.div_ceil(8);
        let aligned = if self.acc_bits == 0 { 0 } else { self.acc << (64 - self.acc_bits) };
        self.bytes.extend_from_slice(&aligned.to_be_bytes()[..full as usize]);
        self.bytes
    }
}

/// Reads what a [`BitWriter`] wrote; reading past the end is an error, never a panic. Bits
/// are taken from a word held in a register, refilled eight bytes at a time: a sample's few
/// short fields cost a shift each, not a pass over the input per bit.
#[derive(Debug)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    /// The next byte of `bytes` not yet in `held`.
    next: usize,
    /// Bits read from `bytes` and not yet handed out, left-aligned (the rest are zero).
    held: u64,
    held_bits: u32,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, next: 0, held: 0, held_bits: 0 }
    }

    /// Tops `held` up to at least 57 bits, or to the end of the input.
    fn refill(&mut self) {
        if let Some(word) = self.bytes.get(self.next..self.next + 8) {
            let mut be = [0u8; 8];
            be.copy_from_slice(word);
            self.held |= u64::from_be_bytes(be) >> self.held_bits;
            let taken = (63 - self.held_bits) / 8;
            self.next += taken as usize;
            self.held_bits += taken * 8;
            // The bits of a byte only partly taken are cleared below `held_bits`.
            self.held &= !(u64::MAX >> self.held_bits);
        } else {
            while self.held_bits <= 56 {
                let Some(&byte) = self.bytes.get(self.next) else { break };
                self.held |= u64::from(byte) << (56 - self.held_bits);
                self.held_bits += 8;
                self.next += 1;
            }
        }
    }

    /// The next `bits` bits (1 to 56) without taking them; `None` if fewer are left.
    #[inline]
    pub fn peek(&mut self, bits: u32) -> Option<u64> {
        if bits > self.held_bits {
            self.refill();
            if bits > self.held_bits {
                return None;
            }
        }
        Some(self.held >> (64 - bits))
    }

    /// Takes `bits` bits that [`peek`](Self::peek) has shown to be there.
    #[inline]
    pub fn skip(&mut self, bits: u32) {
        let bits = bits.min(self.held_bits);
        self.held = self.held.checked_shl(bits).unwrap_or(0);
        self.held_bits -= bits;
    }

    /// Reads `bits` bits (up to 64); `None` if fewer are left.
    #[inline]
    pub fn read(&mut self, bits: u32) -> Option<u64> {
        if bits > 56 {
            // More than one refill is sure to hold: in two parts.
            let high = self.read(bits - 32)?;
            return Some((high << 32) | self.read(32)?);
        }
        if bits == 0 {
            return Some(0);
        }
        if bits > self.held_bits {
            self.refill();
            if bits > self.held_bits {
                return None;
            }
        }
        let v = self.held >> (64 - bits);
        self.held <<= bits;
        self.held_bits -= bits;
        Some(v)
    }
}

/// Delta-of-delta buckets: (prefix, prefix bits, value bits). A dod of 0 is the single bit `0`.
const DOD_BUCKETS: [(u64, u32, u32); 4] = [(0b10, 2, 7), (0b110, 3, 12), (0b1110, 4, 20), (0b1111, 4, 64)];

pub fn encode_times(times: &[i64], w: &mut BitWriter) {
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    for (i, &t) in times.iter().enumerate() {
        if i == 0 {
            w.write(t as u64, 64);
        } else {
            let delta = t.wrapping_sub(prev);
            write_dod(w, delta.wrapping_sub(prev_delta));
            prev_delta = delta;
        }
        prev = t;
    }
}

pub fn decode_times(r: &mut BitReader, count: usize) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(count.min(1 << 20));
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    for i in 0..count {
        let t = if i == 0 {
            r.read(64)? as i64
        } else {
            prev_delta = prev_delta.wrapping_add(read_dod(r)?);
            prev.wrapping_add(prev_delta)
        };
        out.push(t);
        prev = t;
    }
    Some(out)
}

/// Writes one delta of deltas: a single `0` bit for none, else its bucket's prefix and bits
/// ([`DOD_BUCKETS`]), the two as one field where they fit in a word.
#[inline(always)]
pub(crate) fn write_dod(w: &mut BitWriter, dod: i64) {
    let fits = |bits: u32| (-(1i64 << (bits - 1))..1i64 << (bits - 1)).contains(&dod);
    let field = |prefix: u64, bits: u32| (prefix << bits) | (dod as u64 & (u64::MAX >> (64 - bits)));
    let bucket = |w: &mut BitWriter, (prefix, prefix_bits, bits): (u64, u32, u32)| {
        w.write_field(field(prefix, bits), prefix_bits + bits);
    };
    let [first, second, third, (wide_prefix, wide_prefix_bits, _)] = DOD_BUCKETS;
    if dod == 0 {
        w.write_field(0, 1);
    } else if fits(first.2) {
        bucket(w, first);
    } else if fits(second.2) {
        bucket(w, second);
    } else if fits(third.2) {
        bucket(w, third);
    } else {
        w.write_field(wide_prefix, wide_prefix_bits);
        w.write_field(dod as u64, 64);
    }
}

/// Reads what [`write_dod`] wrote.
pub(crate) fn read_dod(r: &mut BitReader) -> Option<i64> {
    // The prefix is at most four bits: looked at together when there are four left.
    let ones = match r.peek(4) {
        Some(prefix) => {
            let ones = ((prefix << 60).leading_ones() as usize).min(4);
            r.skip((ones as u32 + 1).min(4));
            ones
        }
        None => {
            let mut ones = 0;
            while ones < 4 && r.read(1)? == 1 {
                ones += 1;
            }
            ones
        }
    };
    Some(match ones {
        0 => 0,
        n => {
            let bits = DOD_BUCKETS[n - 1].2;
            let raw = r.read(bits)?;
            if bits == 64 { raw as i64 } else { sign_extend(raw, bits) }
        }
    })
}

fn sign_extend(raw: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((raw << shift) as i64) >> shift
}

/// Writes one value as its XOR with the value before: a `0` bit when equal, else the
/// meaningful bits, inside the last window (`window`: the leading and trailing zeros of the
/// last XOR written with its own) when they fit, else with a window of their own. The control
/// bits, the window and the meaningful bits go as one field where they fit in a word.
#[inline(always)]
pub(crate) fn write_xor(w: &mut BitWriter, xor: u64, window: &mut Option<(u32, u32)>) {
    if xor == 0 {
        w.write_field(0, 1);
        return;
    }
    let lead = xor.leading_zeros().min(31);
    let trail = xor.trailing_zeros();
    match *window {
        Some((l, t)) if lead >= l && trail >= t => {
            // `lead >= l`: the XOR has no bits above the window's.
            let (bits, meaningful) = (64 - l - t, xor >> t);
            if bits <= 62 {
                w.write_field((0b10 << bits) | meaningful, 2 + bits);
            } else {
                w.write_field(0b10, 2);
                w.write_field(meaningful, bits);
            }
        }
        _ => {
            let bits = 64 - lead - trail;
            // `0b11`, 5 bits of leading zeros, 6 of the meaningful bits' count less one.
            let header = (0b11 << 11) | (u64::from(lead) << 6) | u64::from(bits - 1);
            if bits <= 64 - 13 {
                w.write_field((header << bits) | (xor >> trail), 13 + bits);
            } else {
                w.write_field(header, 13);
                w.write_field(xor >> trail, bits);
            }
            *window = Some((lead, trail));
        }
    }
}

/// Reads the XOR [`write_xor`] wrote; `window` is the reader's copy of the writer's.
pub(crate) fn read_xor(r: &mut BitReader, window: &mut (u32, u32)) -> Option<u64> {
    if r.read(1)? == 0 {
        return Some(0);
    }
    if r.read(1)? == 1 {
        // A window of its own: 5 bits of leading zeros and 6 of length, read together.
        let field = r.read(11)?;
        let (lead, meaningful) = ((field >> 6) as u32, (field & 0x3f) as u32 + 1);
        *window = (lead, 64u32.checked_sub(lead + meaningful)?);
    }
    let (lead, trail) = *window;
    let meaningful = 64u32.checked_sub(lead + trail)?;
    Some(r.read(meaningful)? << trail)
}

pub fn encode_values(values: &[f64], w: &mut BitWriter) {
    let (mut prev, mut window) = (0u64, None);
    for (i, v) in values.iter().enumerate() {
        let bits = v.to_bits();
        if i == 0 {
            w.write(bits, 64);
        } else {
            write_xor(w, bits ^ prev, &mut window);
        }
        prev = bits;
    }
}

pub fn decode_values(r: &mut BitReader, count: usize) -> Option<Vec<f64>> {
    let mut out = Vec::with_capacity(count.min(1 << 20));
    let (mut prev, mut window) = (0u64, (0u32, 0u32));
    for i in 0..count {
        let bits = if i == 0 { r.read(64)? } else { prev ^ read_xor(r, &mut window)? };
        out.push(f64::from_bits(bits));
        prev = bits;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(times: &[i64], values: &[f64]) {
        let mut w = BitWriter::default();
        encode_times(times, &mut w);
        encode_values(values, &mut w);
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        assert_eq!(decode_times(&mut r, times.len()).unwrap(), times);
        let got = decode_values(&mut r, values.len()).unwrap();
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn round_trips_regular_irregular_and_extreme_series() {
        check(&[], &[]);
        check(&[5], &[1.5]);
        check(&[1000, 1500, 2000, 2500, 3001, 3499], &[1.0, 1.0, 1.25, -3.0, f64::NAN, 0.0]);
        check(&[i64::MIN, i64::MAX, 0, -5, 1 << 40], &[f64::MAX, f64::MIN_POSITIVE, -0.0, f64::INFINITY, 1e-300]);
        let times: Vec<i64> = (0..1000).map(|i| 1_700_000_000_000 + i * 500 + (i * 7919 % 3)).collect();
        let values: Vec<f64> = (0..1000).map(|i| f64::from((i as f32 * 0.37).sin() * 40.0 + 20.0)).collect();
        check(&times, &values);
    }

    #[test]
    fn bit_writer_round_trips_any_widths() {
        let widths = [1u32, 7, 64, 3, 33, 64, 5, 12, 1, 63, 2];
        let values: Vec<u64> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| (0x9e37_79b9_7f4a_7c15u64.rotate_left(i as u32 * 7)) >> (64 - w))
            .collect();
        let mut w = BitWriter::default();
        for (v, b) in values.iter().zip(widths) {
            w.write(*v, b);
        }
        let bytes = w.finish();
        assert_eq!(bytes.len(), widths.iter().sum::<u32>().div_ceil(8) as usize);
        let mut r = BitReader::new(&bytes);
        for (v, b) in values.iter().zip(widths) {
            assert_eq!(r.read(b), Some(*v), "{b} bits");
        }
    }

    #[test]
    fn reads_at_every_offset_match_a_bit_at_a_time() {
        let bytes: Vec<u8> = (0..19u32).map(|i| (i.wrapping_mul(0x9e) ^ 0x5a) as u8).collect();
        let bit = |at: usize| u64::from((bytes[at / 8] >> (7 - at % 8)) & 1);
        for start in 0..bytes.len() * 8 {
            for width in 0..=64u32 {
                let mut r = BitReader::new(&bytes);
                if start > 0 {
                    // Reach `start` in reads of at most 64 bits.
                    let mut left = start;
                    while left > 0 {
                        let step = left.min(64);
                        r.read(step as u32).unwrap();
                        left -= step;
                    }
                }
                let got = r.read(width);
                if start + width as usize > bytes.len() * 8 {
                    assert_eq!(got, None, "{width} bits from {start}");
                } else {
                    let want = (start..start + width as usize).fold(0u64, |v, at| (v << 1) | bit(at));
                    assert_eq!(got, Some(want), "{width} bits from {start}");
                }
            }
        }
    }

    /// The format, written a bit at a time from its description: a delta of deltas is `0`, or
    /// a bucket's prefix and its bits; an XOR is `0`, or `10` and the bits inside the last
    /// window, or `11`, 5 bits of leading zeros, 6 of the count less one, and the bits.
    fn reference(dods: &[i64], xors: &[u64]) -> Vec<u8> {
        let mut bits = Vec::new();
        let mut put = |v: u64, n: u32| bits.extend((0..n).rev().map(|i| (v >> i) & 1 == 1));
        for &dod in dods {
            match DOD_BUCKETS.iter().find(|b| b.2 == 64 || (-(1i64 << (b.2 - 1))..1i64 << (b.2 - 1)).contains(&dod)) {
                _ if dod == 0 => put(0, 1),
                Some(&(prefix, prefix_bits, n)) => {
                    put(prefix, prefix_bits);
                    put(dod as u64, n);
                }
                None => unreachable!(),
            }
        }
        let mut window: Option<(u32, u32)> = None;
        for &xor in xors {
            if xor == 0 {
                put(0, 1);
                continue;
            }
            let (lead, trail) = (xor.leading_zeros().min(31), xor.trailing_zeros());
            match window {
                Some((l, t)) if lead >= l && trail >= t => {
                    put(0b10, 2);
                    put(xor >> t, 64 - l - t);
                }
                _ => {
                    put(0b11, 2);
                    put(u64::from(lead), 5);
                    put(u64::from(64 - lead - trail - 1), 6);
                    put(xor >> trail, 64 - lead - trail);
                    window = Some((lead, trail));
                }
            }
        }
        bits.chunks(8)
            .map(|byte| byte.iter().enumerate().fold(0u8, |b, (i, &on)| b | (u8::from(on) << (7 - i))))
            .collect()
    }

    /// The fields written together are the format's bits, in every delta-of-delta bucket and
    /// at its edges, and for XORs of every width, inside a window and with their own: wide ones
    /// (written in two parts) and narrow ones.
    #[test]
    fn fields_written_together_are_the_formats_bits() {
        let mut dods = vec![0, 1, -1, 63, -64, 64, -65, 2047, -2048, 2048, -2049];
        dods.extend([(1 << 19) - 1, -(1 << 19), 1 << 19, -(1 << 19) - 1, i64::MAX, i64::MIN, 7, -300, 90_000]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut xors =
            vec![0, 1, u64::MAX, 1 << 63, 3 << 62, 0xff, 0xff00, 0x0ff0, u64::MAX >> 1, u64::MAX << 1, 1 << 31];
        for i in 0..2000u32 {
            seed = seed.rotate_left(13).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ u64::from(i);
            // Every width from 1 to 64, at every offset the window allows.
            let width = i % 64 + 1;
            let shift = (seed >> 58) as u32 % (65 - width);
            xors.push(((seed | 1) & (u64::MAX >> (64 - width))) << shift);
            dods.push((seed as i64) >> (i % 63));
        }
        let mut w = BitWriter::default();
        dods.iter().for_each(|&dod| write_dod(&mut w, dod));
        let mut window = None;
        xors.iter().for_each(|&xor| write_xor(&mut w, xor, &mut window));
        assert_eq!(w.finish(), reference(&dods, &xors));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut w = BitWriter::default();
        encode_times(&[1, 2, 3, 50], &mut w);
        let bytes = w.finish();
        for cut in 0..bytes.len() {
            let mut r = BitReader::new(&bytes[..cut]);
            assert!(decode_times(&mut r, 4).is_none());
        }
        let mut r = BitReader::new(&[0xff; 3]);
        assert!(decode_values(&mut r, 3).is_none());
    }
}
