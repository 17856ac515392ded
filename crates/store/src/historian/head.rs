//! A tag's head: its samples since the last checkpoint, compressed one at a time as they come.
//!
//! Each sample goes into one bit stream as it arrives, its time as the delta of the delta
//! before it and its value as the XOR with the value before it (Gorilla, as in `gorilla.rs`,
//! but interleaved sample by sample so that it can grow), and its quality into runs. A steady
//! tag holds a few bits a sample here instead of 18 bytes in three columns: 10,000 tags at
//! 1 Hz held 13 to 23 MB of heads before a checkpoint, and now about a megabyte (issue 15).
//! The heads are decoded only when a checkpoint encodes them as chunks and when a query reads
//! the newest samples.

use super::chunk::Columns;
use super::gorilla::{BitReader, BitWriter, read_dod, read_xor, write_dod, write_xor};

/// A tag's samples since the last checkpoint.
#[derive(Debug, Default, Clone)]
pub struct Head {
    bits: BitWriter,
    len: usize,
    prev_time: i64,
    prev_delta: i64,
    prev_value: u64,
    /// Leading and trailing zeros of the last XOR written with its own window (`None`: none yet).
    window: Option<(u32, u32)>,
    /// The qualities, as runs: (quality, samples in a row).
    quality: Vec<(u16, u32)>,
    /// Whether a time is earlier than the one before it (a clock set back).
    unsorted: bool,
}

impl Head {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the head has filled so far, its stream and its quality runs (what bounds the
    /// heads' memory: their vectors hold at most twice this).
    pub fn bytes(&self) -> usize {
        self.bits.len() + self.quality.len() * std::mem::size_of::<(u16, u32)>()
    }

    /// Bytes the head holds on the heap (its stream and quality runs), for the tests' bound.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bits.capacity() + self.quality.capacity() * std::mem::size_of::<(u16, u32)>()
    }

    pub fn push(&mut self, time: i64, value: f64, quality: u16) {
        let bits = value.to_bits();
        if self.len == 0 {
            self.bits.write(time as u64, 64);
            self.bits.write(bits, 64);
        } else {
            if time < self.prev_time {
                self.unsorted = true;
            }
            let delta = time.wrapping_sub(self.prev_time);
            let (dod, xor) = (delta.wrapping_sub(self.prev_delta), bits ^ self.prev_value);
            if dod == 0 && xor == 0 {
                // The commonest sample: on the beat, unchanged (both fields a `0` bit).
                self.bits.write(0, 2);
            } else {
                write_dod(&mut self.bits, dod);
                write_xor(&mut self.bits, xor, &mut self.window);
            }
            self.prev_delta = delta;
        }
        self.prev_time = time;
        self.prev_value = bits;
        self.len += 1;
        match self.quality.last_mut() {
            Some((q, n)) if *q == quality && *n < u32::MAX => *n += 1,
            _ => self.quality.push((quality, 1)),
        }
    }

    /// Every sample, decoded into columns. `None` only if the stream does not read back, which
    /// would be a bug here (the stream never leaves memory).
    pub fn columns(&self) -> Option<Columns> {
        let bytes = self.bits.snapshot();
        let mut r = BitReader::new(&bytes);
        let (mut times, mut values) = (Vec::with_capacity(self.len), Vec::with_capacity(self.len));
        let (mut prev_time, mut prev_delta, mut prev_value) = (0i64, 0i64, 0u64);
        let mut window = (0u32, 0u32);
        for i in 0..self.len {
            let (time, value) = if i == 0 {
                (r.read(64)? as i64, r.read(64)?)
            } else if r.peek(2) == Some(0) {
                // The commonest sample: on the beat, unchanged (both fields a `0` bit).
                r.skip(2);
                (prev_time.wrapping_add(prev_delta), prev_value)
            } else {
                prev_delta = prev_delta.wrapping_add(read_dod(&mut r)?);
                (prev_time.wrapping_add(prev_delta), prev_value ^ read_xor(&mut r, &mut window)?)
            };
            times.push(time);
            values.push(f64::from_bits(value));
            (prev_time, prev_value) = (time, value);
        }
        let quality = self.quality.iter().flat_map(|(q, n)| std::iter::repeat_n(*q, *n as usize)).collect();
        let mut c = Columns::from_parts(times, values, quality);
        c.unsorted = self.unsorted;
        Some(c)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_reads_back_exactly() {
        let mut head = Head::default();
        let mut expected = Columns::default();
        let values = [0.0, -0.0, 1.5, f64::NAN, f64::INFINITY, f64::MIN_POSITIVE, 1e300, -7.25, 42.0, 42.0];
        let mut time = 1_700_000_000_000i64;
        for i in 0..5_000u32 {
            // Steady steps, jitter, a clock set back, a jump of years, and the extremes.
            time = match i % 97 {
                13 => time - 5_000,
                50 => time + 86_400_000 * 900,
                77 => i64::MAX - 10,
                78 => i64::MIN + 10,
                _ => time.wrapping_add(1000 + i64::from(i % 3)),
            };
            let value = if i % 11 == 0 { values[(i / 11) as usize % values.len()] } else { f64::from(i / 7) };
            let quality = if i % 200 < 3 { 7 } else { 0 };
            head.push(time, value, quality);
            expected.push(time, value, quality);
        }
        let got = head.columns().unwrap();
        assert_eq!(got.times, expected.times);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.values), bits(&expected.values));
        assert_eq!(got.quality, expected.quality);
        assert_eq!(got.unsorted, expected.unsorted);
        assert_eq!(head.len(), 5_000);
    }

    #[test]
    fn a_steady_tag_holds_a_few_bits_a_sample() {
        // A register read once a second, changing now and then: what 10,000 tags at 1 Hz are.
        let mut head = Head::default();
        for i in 0..1_000i64 {
            head.push(1_700_000_000_000 + i * 1000, (i / 10) as f64, 0);
        }
        let columns = head.columns().unwrap();
        assert_eq!(columns.len(), 1_000);
        assert!(head.heap_bytes() < 1_500, "{} bytes for 1,000 samples (18,000 as columns)", head.heap_bytes());
    }
}
