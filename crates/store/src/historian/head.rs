//! A tag's head: its samples since the last checkpoint, compressed one at a time as they come.
//!
//! Each sample goes into one bit stream as it arrives, its time as the delta of the delta
//! before it and its value as the XOR with the value before it (Gorilla, as in `gorilla.rs`,
//! but interleaved sample by sample so that it can grow), and its quality into runs. A steady
//! tag holds a few bits a sample here instead of 18 bytes in three columns: 10,000 tags at
//! 1 Hz held 13 to 23 MB of heads before a checkpoint, and now about a megabyte (issue 15).
//! The heads are decoded only when a checkpoint encodes them as chunks and when a query reads
//! the newest samples.
//!
//! Tags read by one request have the very same times. A head may then follow the head of the
//! request's first tag (its leader): it holds its values and qualities only, a bit a sample for
//! a value that holds still, and takes its times from the leader's when decoded. It follows
//! only while its times stay the leader's (the historian checks each sample: see
//! `Inner::push_to_head`).

use super::chunk::Columns;
use super::gorilla::{BitReader, BitWriter, decode_values, read_dod, read_xor, write_dod, write_xor};

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
    /// The qualities, as runs (quality, samples in a row): those before the current one, and
    /// the current one (no samples: none yet), held here: most tags keep one quality for a
    /// head's life, and allocate nothing for it.
    quality_before: Vec<(u16, u32)>,
    quality_now: (u16, u32),
    /// The leader whose times this head's samples have, if it follows one: then its stream
    /// holds values only, and `prev_time` and `prev_delta` are not kept.
    follows: Option<u32>,
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
        let runs = self.quality_before.len() + usize::from(self.quality_now.1 > 0);
        self.bits.len() + runs * std::mem::size_of::<(u16, u32)>()
    }

    /// Bytes the head holds on the heap (its stream and quality runs), for the tests' bound.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bits.capacity() + self.quality_before.capacity() * std::mem::size_of::<(u16, u32)>()
    }

    /// The leader this head follows, if it does.
    pub fn follows(&self) -> Option<u32> {
        self.follows
    }

    /// The time of the newest sample of a head that follows none.
    pub fn last_time(&self) -> Option<i64> {
        (self.len > 0 && self.follows.is_none()).then_some(self.prev_time)
    }

    /// Makes an empty head follow `leader`, or one that follows a leader follow `leader`
    /// instead (the caller has checked that its times so far are this one's too); a head with
    /// times of its own stays as it is.
    #[inline(always)]
    pub fn follow(&mut self, leader: u32) {
        if self.follows != Some(leader) && (self.len == 0 || self.follows.is_some()) {
            self.follows = Some(leader);
        }
    }

    /// One sample of a head that follows a leader: its time is the leader's newest. Returns
    /// what it added to [`bytes`](Self::bytes) (the historian's bound counts it without
    /// asking the head before and after: issue 15).
    #[inline(always)]
    pub fn push_following(&mut self, value: f64, quality: u16) -> usize {
        let before = self.bits.len();
        let bits = value.to_bits();
        if self.len == 0 {
            self.bits.write(bits, 64);
        } else {
            write_xor(&mut self.bits, bits ^ self.prev_value, &mut self.window);
        }
        self.prev_value = bits;
        self.bits.len() - before + self.push_quality(quality)
    }

    /// Counts a sample of `quality` into the runs; returns the bytes a run it started adds to
    /// [`bytes`](Self::bytes).
    #[inline(always)]
    fn push_quality(&mut self, quality: u16) -> usize {
        self.len += 1;
        let (q, n) = &mut self.quality_now;
        // The commonest case first: the quality holds (a run that is full starts another).
        if *q == quality && (1..u32::MAX).contains(n) {
            *n += 1;
            return 0;
        }
        if *n > 0 {
            self.quality_before.push(self.quality_now);
        }
        self.quality_now = (quality, 1);
        std::mem::size_of::<(u16, u32)>()
    }

    /// One sample of a head that follows no leader; returns what it added to
    /// [`bytes`](Self::bytes).
    #[inline(always)]
    pub fn push(&mut self, time: i64, value: f64, quality: u16) -> usize {
        let before = self.bits.len();
        let bits = value.to_bits();
        if self.len == 0 {
            self.bits.write(time as u64, 64);
            self.bits.write(bits, 64);
        } else {
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
        self.bits.len() - before + self.push_quality(quality)
    }

    /// Every sample, decoded into columns; a head that follows a leader takes the first of
    /// `leader_times` (the leader's times, at least as many as this head's samples). `None` if
    /// the leader's times are missing or too few, or the stream does not read back (a bug: the
    /// stream never leaves memory).
    pub fn columns(&self, leader_times: Option<&[i64]>) -> Option<Columns> {
        let bytes = self.bits.snapshot();
        let mut r = BitReader::new(&bytes);
        let (times, values) = if self.follows.is_some() {
            // Values only, as `encode_values` writes them (`push_following` is its sample by
            // sample form).
            (leader_times?.get(..self.len)?.to_vec(), decode_values(&mut r, self.len)?)
        } else {
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
            (times, values)
        };
        let runs = self.quality_before.iter().chain(std::iter::once(&self.quality_now));
        let quality = runs.flat_map(|(q, n)| std::iter::repeat_n(*q, *n as usize)).collect();
        Some(Columns::from_parts(times, values, quality))
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
        let got = head.columns(None).unwrap();
        assert_eq!(got.times, expected.times);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.values), bits(&expected.values));
        assert_eq!(got.quality, expected.quality);
        assert_eq!(got.unsorted, expected.unsorted);
        assert_eq!(head.len(), 5_000);
    }

    /// Most tags keep one quality for a head's life: that run is held in the head itself, so a
    /// head allocates nothing for its qualities until the quality changes (10,000 tags: some
    /// 0.5 MB of heap for each set of heads, fresh and sealed).
    #[test]
    fn a_head_of_one_quality_allocates_nothing_for_it() {
        let mut head = Head::default();
        assert_eq!(head.bytes(), 0, "an empty head counts nothing against the bound");
        for i in 0..100i64 {
            head.push(1_700_000_000_000 + i * 1000, 1.0, 0);
        }
        assert_eq!(head.heap_bytes(), head.bits.capacity(), "one quality, no allocation for it");
        assert_eq!(head.bytes(), head.bits.len() + 8, "its one run counts as it did in a vector");
        let mut follower = Head::default();
        follower.follow(0);
        for _ in 0..100 {
            follower.push_following(2.0, 0);
        }
        assert_eq!(follower.heap_bytes(), follower.bits.capacity());
        // A change of quality is kept, in order, and reads back.
        let mut expected = Columns::default();
        for i in 0..100i64 {
            expected.push(1_700_000_000_000 + i * 1000, 1.0, 0);
        }
        for (i, q) in [(100i64, 7u16), (101, 7), (102, 0), (103, 3)] {
            head.push(1_700_000_000_000 + i * 1000, 1.0, q);
            expected.push(1_700_000_000_000 + i * 1000, 1.0, q);
        }
        assert_eq!(head.columns(None).unwrap().quality, expected.quality);
    }

    /// What each push says it added is what [`Head::bytes`] counts (the heads' bound is kept
    /// from it), through words that fill, quality changes and a head that follows.
    #[test]
    fn what_a_push_adds_is_what_the_head_counts() {
        let (mut head, mut follower) = (Head::default(), Head::default());
        follower.follow(0);
        let (mut counted, mut counted_following) = (0, 0);
        for i in 0..3_000i64 {
            let value = if i % 5 == 0 { (i as f64).sqrt() } else { (i / 50) as f64 };
            let quality = match i % 300 {
                0..=2 => 7,
                3 => 3,
                _ => 0,
            };
            counted += head.push(1_700_000_000_000 + i * 1000 + i % 3, value, quality);
            counted_following += follower.push_following(value, quality);
            assert_eq!(counted, head.bytes(), "sample {i}");
            assert_eq!(counted_following, follower.bytes(), "sample {i}");
        }
    }

    #[test]
    fn a_steady_tag_holds_a_few_bits_a_sample() {
        // A register read once a second, changing now and then: what 10,000 tags at 1 Hz are.
        let mut head = Head::default();
        for i in 0..1_000i64 {
            head.push(1_700_000_000_000 + i * 1000, (i / 10) as f64, 0);
        }
        let columns = head.columns(None).unwrap();
        assert_eq!(columns.len(), 1_000);
        assert!(head.heap_bytes() < 1_500, "{} bytes for 1,000 samples (18,000 as columns)", head.heap_bytes());
    }

    /// A head that follows a leader holds its values and qualities only (a bit a sample for a
    /// value that holds still, against two), and reads back with the leader's times, never
    /// without them or with too few.
    #[test]
    fn a_head_that_follows_takes_its_times_from_its_leader() {
        let (mut leader, mut follower, mut alone) = (Head::default(), Head::default(), Head::default());
        follower.follow(0);
        let values = [1.0, 1.0, f64::NAN, -0.0, 7.5, 7.5, 1e300, 1.0];
        let mut times = Vec::new();
        for i in 0..4_000i64 {
            let time = 1_700_000_000_000 + i * 1000 + (i * 7919 % 5);
            let (value, quality) = (values[(i as usize / 100) % values.len()], if i % 700 < 2 { 7 } else { 0 });
            leader.push(time, 3.0, 0);
            follower.push_following(value, quality);
            alone.push(time, value, quality);
            times.push(time);
        }
        assert_eq!(follower.follows(), Some(0));
        assert_eq!(leader.last_time(), times.last().copied());
        assert_eq!(follower.last_time(), None);
        let got = follower.columns(Some(&leader.columns(None).unwrap().times)).unwrap();
        let want = alone.columns(None).unwrap();
        assert_eq!(got.times, want.times);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.values), bits(&want.values));
        assert_eq!(got.quality, want.quality);
        assert!(follower.bytes() * 3 < alone.bytes(), "{} vs {} bytes", follower.bytes(), alone.bytes());
        assert!(follower.columns(None).is_none());
        assert!(follower.columns(Some(&times[..3_999])).is_none());
        // A head with samples does not start to follow.
        alone.follow(0);
        assert_eq!(alone.follows(), None);
    }
}
