//! The WAL's record format: a batch of samples as runs, so that a request's answer (tags one
//! after another, one time, one quality, mostly small whole numbers) costs a few bytes a
//! sample, not 22. The WAL is written and synced for every sample the collector takes; its
//! bytes were most of the collector's writes and syncs at a 1 ms poll (issue 15).
//!
//! ```text
//!  record (format 2):  u8 2, then runs back to back, then one zero byte if the record's
//!                      length would otherwise be a multiple of 22
//!  run:                varint tag gap (the run's first tag minus the tag after the last run's
//!                      end, zigzag), u16 LE samples (1 to 65,535), u8 value width, varint
//!                      quality code, varint time (ms, zigzag, as the difference from the last
//!                      run's time; the first run's from 0)
//!                      then per sample its value: width 2, u16 LE (a whole number 0..=65535);
//!                      width 4, i32 LE (a whole number); width 8, f64 LE (anything)
//!  record (format 1):  22 bytes a sample: tag u32, time i64 (ms), value f64, quality u16, all LE
//! ```
//!
//! A record whose length is a multiple of 22 is of format 1, which this version still reads
//! (a WAL left by an older version, replayed after an upgrade) and no longer writes.

use super::chunk::{get_varint, put_varint, unzigzag, zigzag};

/// Bytes a sample takes in a record of format 1.
pub const ROW_BYTES: usize = 4 + 8 + 8 + 2;
const FORMAT_RUNS: u8 = 2;

/// A value as a record holds it: the narrowest width that holds it exactly (bit for bit:
/// -0.0 is no whole number), and those bytes as a little-endian word. Found once a sample,
/// from the variant it was read as where it is a whole number (no float to convert back and
/// compare: a cost seen in the ingest's profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// 2 (a u16), 4 (an i32) or 8 (the f64's bits).
    pub width: u8,
    pub word: u64,
}

impl Stored {
    pub fn of(value: f64) -> Self {
        // One conversion: a value that is an i32 bit for bit is a u16 if it is in u16's range.
        let whole = value as i32;
        if value.to_bits() != f64::from(whole).to_bits() {
            Self { width: 8, word: value.to_bits() }
        } else if let Ok(small) = u16::try_from(whole) {
            Self { width: 2, word: u64::from(small) }
        } else {
            Self { width: 4, word: u64::from(whole as u32) }
        }
    }

    /// [`of`](Self::of) an unsigned whole number, `value as f64` being what is kept.
    #[inline]
    pub fn of_u64(value: u64) -> Self {
        if value <= u64::from(u16::MAX) {
            Self { width: 2, word: value }
        } else if value <= i32::MAX as u64 {
            Self { width: 4, word: value }
        } else {
            Self { width: 8, word: (value as f64).to_bits() }
        }
    }

    /// [`of`](Self::of) a signed whole number, `value as f64` being what is kept.
    #[inline]
    pub fn of_i64(value: i64) -> Self {
        if (0..=i64::from(u16::MAX)).contains(&value) {
            Self { width: 2, word: value as u64 }
        } else if let Ok(value) = i32::try_from(value) {
            Self { width: 4, word: u64::from(value as u32) }
        } else {
            Self { width: 8, word: (value as f64).to_bits() }
        }
    }
}

/// A run being written: where its sample count goes, and what its samples share.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Where the run's sample count is in the record (written when the run closes: the rest
    /// of its header is known when it opens).
    count_at: usize,
    /// The tag that would continue the run (past `u32::MAX` after the last tag: none does).
    next_tag: u64,
    samples: u64,
    width: u8,
    quality: u16,
    time: i64,
}

/// One WAL record being built, sample by sample.
#[derive(Debug, Default)]
pub struct RecordBuilder {
    /// The runs so far; the open one's values are at the end.
    bytes: Vec<u8>,
    open: Option<Run>,
    /// The tag after the last run's end, and its time.
    last_end: u64,
    last_time: i64,
    /// Samples of the closed runs (each counted as its run closes, not one by one).
    samples: usize,
}

impl RecordBuilder {
    /// Starts a record in `buffer` (cleared; reused to spare an allocation per batch).
    pub fn new(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        buffer.push(FORMAT_RUNS);
        Self { bytes: buffer, ..Self::default() }
    }

    pub fn samples(&self) -> usize {
        self.samples + self.open.map_or(0, |run| run.samples as usize)
    }

    pub fn push(&mut self, tag: u32, time: i64, value: f64, quality: u16) {
        self.push_stored(tag, time, value, Stored::of(value), quality);
    }

    /// [`push`](Self::push) of `value` with the form the record holds it in known: its
    /// [`Stored`] (of the value, or of the whole number it was read as).
    pub fn push_stored(&mut self, tag: u32, time: i64, value: f64, stored: Stored, quality: u16) {
        debug_assert_eq!(stored, Stored::of(value), "the form of {value:?}");
        let width = stored.width;
        let fits = |run: &Run| {
            run.next_tag == u64::from(tag)
                && run.time == time
                && run.quality == quality
                && run.samples < u64::from(u16::MAX)
                && width <= run.width
        };
        match self.open {
            Some(ref mut run) if fits(run) => {
                run.next_tag += 1;
                run.samples += 1;
                put_value(&mut self.bytes, run.width, value, stored.word);
            }
            _ => {
                self.close();
                // Both below 2^32 + 1: the difference fits.
                put_varint(&mut self.bytes, zigzag(i64::from(tag) - self.last_end as i64));
                let count_at = self.bytes.len();
                self.bytes.extend_from_slice(&[0, 0, width]);
                put_varint(&mut self.bytes, u64::from(quality));
                put_varint(&mut self.bytes, zigzag(time.wrapping_sub(self.last_time)));
                put_value(&mut self.bytes, width, value, stored.word);
                self.open = Some(Run { count_at, next_tag: u64::from(tag) + 1, samples: 1, width, quality, time });
            }
        }
    }

    /// Writes the open run's sample count into its header.
    fn close(&mut self) {
        let Some(run) = self.open.take() else { return };
        // At most u16::MAX: a full run is closed (`fits`).
        self.bytes[run.count_at..run.count_at + 2].copy_from_slice(&(run.samples as u16).to_le_bytes());
        self.samples += run.samples as usize;
        self.last_end = run.next_tag;
        self.last_time = run.time;
    }

    /// The record's bytes (empty if no sample was pushed).
    pub fn finish(mut self) -> Vec<u8> {
        self.close();
        if self.samples == 0 {
            self.bytes.clear();
        } else if self.bytes.len().is_multiple_of(ROW_BYTES) {
            self.bytes.push(0);
        }
        self.bytes
    }
}

/// A value's bytes at the run's width, which is at least its own: a whole number's word is
/// the same number at 4 bytes as at 2; at 8 bytes a value is its f64.
#[inline]
fn put_value(out: &mut Vec<u8>, width: u8, value: f64, word: u64) {
    match width {
        2 => out.extend_from_slice(&(word as u16).to_le_bytes()),
        4 => out.extend_from_slice(&(word as u32).to_le_bytes()),
        _ => out.extend_from_slice(&value.to_le_bytes()),
    }
}

/// Every sample of a WAL record of either format, in order: (tag, time, value, quality).
/// Stops at the first thing that does not parse and says what (the record's CRC held, so that
/// would be a bug, not a torn write; the samples before it are still handed out).
pub fn read(payload: &[u8], mut sample: impl FnMut(u32, i64, f64, u16)) -> Result<(), String> {
    if payload.len().is_multiple_of(ROW_BYTES) {
        for row in payload.chunks_exact(ROW_BYTES) {
            let word = |i: usize, n: usize| row[i..i + n].iter().rev().fold(0u64, |v, b| (v << 8) | u64::from(*b));
            sample(word(0, 4) as u32, word(4, 8) as i64, f64::from_bits(word(12, 8)), word(20, 2) as u16);
        }
        return Ok(());
    }
    if payload.first() != Some(&FORMAT_RUNS) {
        return Err(format!("a WAL record of unknown format {:?}", payload.first()));
    }
    let (mut at, mut last_end, mut last_time) = (1usize, 0i64, 0i64);
    while at < payload.len() {
        if at + 1 == payload.len() && payload[at] == 0 {
            break;
        }
        let first = last_end.checked_add(unzigzag(get_varint(payload, &mut at)?)).ok_or("a tag gap past i64")?;
        let first = u32::try_from(first).map_err(|_| format!("a run from tag {first}"))?;
        let header = payload.get(at..at + 3).ok_or("a run cut short")?;
        let (samples, width) = (u64::from(u16::from_le_bytes([header[0], header[1]])), header[2]);
        at += 3;
        if samples == 0 {
            return Err("a run of no samples".into());
        }
        let quality = u16::try_from(get_varint(payload, &mut at)?).map_err(|_| "a quality code past u16")?;
        let time = last_time.wrapping_add(unzigzag(get_varint(payload, &mut at)?));
        if !matches!(width, 2 | 4 | 8) {
            return Err(format!("a value width of {width}"));
        }
        let bytes = usize::try_from(samples).ok().and_then(|n| n.checked_mul(usize::from(width)));
        let values = bytes.and_then(|n| payload.get(at..at.checked_add(n)?)).ok_or("a run's values cut short")?;
        if u64::from(first) + samples > u64::from(u32::MAX) + 1 {
            return Err(format!("a run of {samples} samples from tag {first}"));
        }
        for (i, v) in values.chunks_exact(usize::from(width)).enumerate() {
            let value = match width {
                2 => f64::from(u16::from_le_bytes([v[0], v[1]])),
                4 => f64::from(i32::from_le_bytes([v[0], v[1], v[2], v[3]])),
                _ => f64::from_le_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]),
            };
            sample(first + i as u32, time, value, quality);
        }
        at += values.len();
        last_end = i64::from(first) + samples as i64;
        last_time = time;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type Row = (u32, i64, u64, u16);

    fn write(rows: &[Row]) -> Vec<u8> {
        let mut b = RecordBuilder::new(vec![9, 9, 9]);
        for (tag, time, bits, quality) in rows {
            b.push(*tag, *time, f64::from_bits(*bits), *quality);
        }
        assert_eq!(b.samples(), rows.len());
        b.finish()
    }

    fn back(payload: &[u8]) -> Result<Vec<Row>, String> {
        let mut rows = Vec::new();
        read(payload, |tag, time, value, quality| rows.push((tag, time, value.to_bits(), quality)))?;
        Ok(rows)
    }

    /// A poll's answer: runs of tags one after another at one time, with every kind of value
    /// and the edges of each width, out-of-order tags, a clock set back, bad samples between.
    fn poll() -> Vec<Row> {
        let values = [
            0.0,
            -0.0,
            65_535.0,
            65_536.0,
            -1.0,
            f64::from(i32::MIN),
            f64::from(i32::MAX) + 1.0,
            0.5,
            f64::NAN,
            f64::INFINITY,
            1e300,
            7.0,
        ];
        let mut rows = Vec::new();
        for request in 0..40u32 {
            let time = 1_700_000_000_000i64 + i64::from(request) * 3 - if request == 20 { 90_000 } else { 0 };
            for k in 0..25u32 {
                let tag = if request == 7 { 5_000 - k } else { request * 25 + k };
                let quality = if request % 9 == 4 && k == 3 { 0x84 } else { 0 };
                let value = values[((request + k * 7) as usize) % values.len()];
                rows.push((tag, time, value.to_bits(), quality));
            }
        }
        rows.push((u32::MAX, i64::MIN, 1.5f64.to_bits(), u16::MAX));
        rows.push((0, i64::MAX, 2.0f64.to_bits(), 0));
        rows
    }

    #[test]
    fn every_sample_reads_back_bit_for_bit() {
        let rows = poll();
        let payload = write(&rows);
        assert_eq!(back(&payload).unwrap(), rows);
        assert_ne!(payload.len() % ROW_BYTES, 0);
        assert!(write(&[]).is_empty());
        for n in 1..60 {
            let payload = write(&rows[..n]);
            assert_ne!(payload.len() % ROW_BYTES, 0, "{n} samples");
            assert_eq!(back(&payload).unwrap(), rows[..n], "{n} samples");
        }
    }

    /// A value's width is the narrowest that holds it bit for bit, at every edge of u16 and
    /// i32 (and -0.0, NaN, the infinities, fractions are 8 bytes).
    #[test]
    fn each_value_takes_the_narrowest_width_that_holds_it_exactly() {
        let cases: [(f64, u8); 18] = [
            (0.0, 2),
            (1.0, 2),
            (65_535.0, 2),
            (65_536.0, 4),
            (-1.0, 4),
            (-0.0, 8),
            (0.5, 8),
            (65_535.5, 8),
            (f64::from(i32::MAX), 4),
            (f64::from(i32::MIN), 4),
            (f64::from(i32::MAX) + 1.0, 8),
            (f64::from(i32::MIN) - 1.0, 8),
            (1e300, 8),
            (-1e300, 8),
            (f64::NAN, 8),
            (f64::INFINITY, 8),
            (f64::NEG_INFINITY, 8),
            (f64::MIN_POSITIVE, 8),
        ];
        let signed = [0, 1, 65_535, 65_536, -1, i64::from(i32::MAX), i64::from(i32::MIN)];
        for whole in signed.into_iter().chain([i64::from(i32::MAX) + 1, i64::from(i32::MIN) - 1, i64::MIN, i64::MAX]) {
            assert_eq!(Stored::of_i64(whole), Stored::of(whole as f64), "{whole}");
        }
        for whole in [0, 1, 65_535, 65_536, i32::MAX as u64, i32::MAX as u64 + 1, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(Stored::of_u64(whole), Stored::of(whole as f64), "{whole}");
        }
        for (value, width) in cases {
            assert_eq!(Stored::of(value).width, width, "{value:?}");
            let payload = write(&[(3, 1000, value.to_bits(), 0)]);
            assert_eq!(back(&payload).unwrap(), [(3, 1000, value.to_bits(), 0)], "{value:?}");
        }
    }

    #[test]
    fn a_registers_answer_takes_a_few_bytes_a_sample() {
        let rows: Vec<Row> =
            (0..125u32).map(|k| (1000 + k, 1_700_000_000_123, f64::from(k * 37).to_bits(), 0)).collect();
        let payload = write(&rows);
        // One run: its header and 2 bytes a register (22 a sample in format 1).
        assert!(payload.len() <= 1 + 16 + 250, "{} bytes", payload.len());
        assert_eq!(back(&payload).unwrap(), rows);
    }

    #[test]
    fn a_run_longer_than_its_count_field_is_cut_in_two() {
        let rows: Vec<Row> = (0..70_000u32).map(|k| (k, 5, f64::from(k % 9).to_bits(), 0)).collect();
        let payload = write(&rows);
        assert!(payload.len() < 1 + 2 * 12 + 2 * 70_000, "{} bytes", payload.len());
        assert_eq!(back(&payload).unwrap(), rows);
    }

    #[test]
    fn records_of_format_1_still_read() {
        let rows = poll();
        let mut payload = Vec::new();
        for (tag, time, bits, quality) in &rows {
            payload.extend_from_slice(&tag.to_le_bytes());
            payload.extend_from_slice(&time.to_le_bytes());
            payload.extend_from_slice(&bits.to_le_bytes());
            payload.extend_from_slice(&quality.to_le_bytes());
        }
        assert_eq!(back(&payload).unwrap(), rows);
    }

    #[test]
    fn a_malformed_record_is_an_error_never_a_panic() {
        let payload = write(&poll());
        for cut in 1..payload.len() {
            let part = &payload[..cut];
            if cut % ROW_BYTES != 0 {
                let _ = back(part);
            }
        }
        for at in 0..payload.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = payload.clone();
                bad[at] ^= flip;
                let _ = back(&bad);
            }
        }
        assert!(back(&[3, 0, 1]).is_err());
        assert!(back(&[FORMAT_RUNS, 0, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0]).is_err(), "width 5");
        assert!(back(&[FORMAT_RUNS, 0, 0xff, 0xff, 8, 0, 0]).is_err(), "values cut short");
        assert!(back(&[FORMAT_RUNS, 0, 0, 0, 2, 0, 0, 0]).is_err(), "a run of none");
    }
}
