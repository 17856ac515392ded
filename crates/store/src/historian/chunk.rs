//! Chunk records: one tag's samples over a stretch of time, compressed.
//!
//! ```text
//!  0      1        5         9                17               25
//!  +------+--------+---------+----------------+----------------+-------------------+
//!  | kind | tag    | count   | time min       | time max       | body              |
//!  | u8   | u32 LE | u32 LE  | i64 LE (ms)    | i64 LE (ms)    |                   |
//!  +------+--------+---------+----------------+----------------+-------------------+
//!  kind 1, Gorilla body: u32 LE byte length, then the bit stream (times, then values)
//!  kind 2, pco body:     u32 LE length + pco(times as i64), u32 LE length + pco(values as f64)
//!  kind 3, pco, shared times: u64 LE sequence number of an earlier chunk of the same checkpoint
//!                        whose times these samples share (tags read in one request share
//!                        their times), then u32 LE length + pco(values as f64)
//!  all then:             quality runs: varint n, then n x (varint quality code, varint run length)
//!  kind 9, checkpoint:   u64 LE last WAL sequence number folded into chunks,
//!                        u64 LE sequence number of the first chunk record of this checkpoint
//! ```

/// How a chunk's times and values are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Delta-of-delta times and XOR values, after the Gorilla paper (our own code).
    Gorilla = 1,
    /// The pco crate (pcodec) for both columns.
    Pco = 2,
}

const KIND_CHECKPOINT: u8 = 9;
const KIND_SHARED_TIMES: u8 = 3;
/// Bytes of a chunk record before its body: the header.
const HEADER_BYTES: usize = 25;
/// Bytes read to index a chunk without decoding it: the header and a shared-times reference.
pub const PREFIX_BYTES: usize = HEADER_BYTES + 8;

/// One tag's samples, uncompressed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub times: Vec<i64>,
    pub values: Vec<f64>,
    pub quality: Vec<u16>,
    /// Whether a time is earlier than one before it (a clock set back): then a time range is
    /// found by a scan, otherwise by binary search.
    pub unsorted: bool,
}

impl Columns {
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Columns of these times, values and qualities (of equal length).
    /// Empty, with room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Self::from_parts(Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n))
    }

    pub fn from_parts(times: Vec<i64>, values: Vec<f64>, quality: Vec<u16>) -> Self {
        let unsorted = !times.is_sorted();
        Self { times, values, quality, unsorted }
    }

    /// The indices of the samples with `from_ms <= time < to_ms`, in order.
    pub fn range(&self, from_ms: i64, to_ms: i64) -> Box<dyn Iterator<Item = usize> + '_> {
        if self.unsorted {
            return Box::new((0..self.len()).filter(move |i| (from_ms..to_ms).contains(&self.times[*i])));
        }
        let lo = self.times.partition_point(|t| *t < from_ms);
        let hi = self.times.partition_point(|t| *t < to_ms).max(lo);
        Box::new(lo..hi)
    }

    /// The index of the newest sample before `before_ms` (the last of equal times).
    pub fn last_before(&self, before_ms: i64) -> Option<usize> {
        if self.unsorted {
            return (0..self.len()).filter(|i| self.times[*i] < before_ms).max_by_key(|i| self.times[*i]);
        }
        self.times.partition_point(|t| *t < before_ms).checked_sub(1)
    }

    pub fn push(&mut self, time: i64, value: f64, quality: u16) {
        if self.times.last().is_some_and(|last| *last > time) {
            self.unsorted = true;
        }
        self.times.push(time);
        self.values.push(value);
        self.quality.push(quality);
    }
}

/// What the start of a chunk-log record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Chunk { tag: u32, count: u32, time_min: i64, time_max: i64, times_from: Option<u64> },
    Checkpoint { wal_seq: u64, first_chunk_seq: u64 },
}

pub fn encode_checkpoint(wal_seq: u64, first_chunk_seq: u64) -> Vec<u8> {
    let mut out = vec![KIND_CHECKPOINT];
    out.extend_from_slice(&wal_seq.to_le_bytes());
    out.extend_from_slice(&first_chunk_seq.to_le_bytes());
    out
}

/// Encodes one tag's chunk. `times_from`: the sequence number of an earlier chunk with the very
/// same times, to refer to instead of storing them again (pco only).
pub fn encode(codec: Codec, tag: u32, c: &Columns, times_from: Option<u64>) -> Result<Vec<u8>, String> {
    let time_min = c.times.iter().copied().min().unwrap_or(0);
    let time_max = c.times.iter().copied().max().unwrap_or(0);
    let shared = times_from.filter(|_| codec == Codec::Pco);
    let mut out = vec![if shared.is_some() { KIND_SHARED_TIMES } else { codec as u8 }];
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(c.len() as u32).to_le_bytes());
    out.extend_from_slice(&time_min.to_le_bytes());
    out.extend_from_slice(&time_max.to_le_bytes());
    match codec {
        Codec::Gorilla => {
            let mut w = super::gorilla::BitWriter::default();
            super::gorilla::encode_times(&c.times, &mut w);
            super::gorilla::encode_values(&c.values, &mut w);
            put_block(&mut out, &w.finish());
        }
        Codec::Pco => {
            let config = pco::ChunkConfig::default();
            match shared {
                Some(seq) => out.extend_from_slice(&seq.to_le_bytes()),
                None => put_block(
                    &mut out,
                    &pco::standalone::simple_compress(&c.times, &config).map_err(|e| e.to_string())?,
                ),
            }
            let values = pco::standalone::simple_compress(&c.values, &config).map_err(|e| e.to_string())?;
            put_block(&mut out, &values);
        }
    }
    encode_runs(&mut out, &c.quality);
    Ok(out)
}

/// Reads the prefix of a chunk-log record.
pub fn entry(bytes: &[u8]) -> Option<Entry> {
    let u64_at = |i: usize| bytes.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let u32_at = |i: usize| bytes.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    match *bytes.first()? {
        KIND_CHECKPOINT => Some(Entry::Checkpoint { wal_seq: u64_at(1)?, first_chunk_seq: u64_at(9)? }),
        kind @ (1 | 2 | KIND_SHARED_TIMES) => Some(Entry::Chunk {
            tag: u32_at(1)?,
            count: u32_at(5)?,
            time_min: u64_at(9)? as i64,
            time_max: u64_at(17)? as i64,
            times_from: if kind == KIND_SHARED_TIMES { Some(u64_at(HEADER_BYTES)?) } else { None },
        }),
        _ => None,
    }
}

/// Decodes a chunk record; a malformed one is an error, never a panic. `shared_times` gives the
/// times of the chunk a shared-times chunk refers to.
pub fn decode(bytes: &[u8], shared_times: impl FnOnce(u64) -> Result<Vec<i64>, String>) -> Result<Columns, String> {
    let Some(Entry::Chunk { count, times_from, .. }) = entry(bytes) else { return Err("not a chunk".into()) };
    let count = count as usize;
    let mut at = HEADER_BYTES;
    let (times, values) = match bytes[0] {
        1 => {
            let block = take_block(bytes, &mut at)?;
            let mut r = super::gorilla::BitReader::new(block);
            let times = super::gorilla::decode_times(&mut r, count).ok_or("short Gorilla times")?;
            let values = super::gorilla::decode_values(&mut r, count).ok_or("short Gorilla values")?;
            (times, values)
        }
        KIND_SHARED_TIMES => {
            let times = shared_times(times_from.ok_or("no shared-times reference")?)?;
            at += 8;
            let values =
                pco::standalone::simple_decompress::<f64>(take_block(bytes, &mut at)?).map_err(|e| e.to_string())?;
            (times, values)
        }
        _ => {
            let times =
                pco::standalone::simple_decompress::<i64>(take_block(bytes, &mut at)?).map_err(|e| e.to_string())?;
            let values =
                pco::standalone::simple_decompress::<f64>(take_block(bytes, &mut at)?).map_err(|e| e.to_string())?;
            (times, values)
        }
    };
    let quality = decode_runs(bytes, &mut at, count)?;
    if times.len() != count || values.len() != count {
        return Err(format!("{} times and {} values for {count} samples", times.len(), values.len()));
    }
    Ok(Columns::from_parts(times, values, quality))
}

fn put_block(out: &mut Vec<u8>, block: &[u8]) {
    out.extend_from_slice(&(block.len() as u32).to_le_bytes());
    out.extend_from_slice(block);
}

fn take_block<'a>(bytes: &'a [u8], at: &mut usize) -> Result<&'a [u8], String> {
    let len =
        bytes.get(*at..*at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes).ok_or("short block length")?;
    let block = bytes.get(*at + 4..*at + 4 + len as usize).ok_or("short block")?;
    *at += 4 + len as usize;
    Ok(block)
}

fn encode_runs(out: &mut Vec<u8>, quality: &[u16]) {
    let mut runs: Vec<(u16, u64)> = Vec::new();
    for q in quality {
        match runs.last_mut() {
            Some((last, n)) if last == q => *n += 1,
            _ => runs.push((*q, 1)),
        }
    }
    put_varint(out, runs.len() as u64);
    for (q, n) in runs {
        put_varint(out, u64::from(q));
        put_varint(out, n);
    }
}

fn decode_runs(bytes: &[u8], at: &mut usize, count: usize) -> Result<Vec<u16>, String> {
    let runs = get_varint(bytes, at)?;
    // The count comes from the chunk's header: allocate for it only as it is met (fuzzing found
    // a header asking for four billion samples, and a run length that overflowed the sum).
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..runs {
        let q = u16::try_from(get_varint(bytes, at)?).map_err(|_| "quality code out of range")?;
        let n = usize::try_from(get_varint(bytes, at)?).unwrap_or(usize::MAX);
        if n > count - out.len() {
            return Err("more quality codes than samples".into());
        }
        out.extend(std::iter::repeat_n(q, n));
    }
    if out.len() != count {
        return Err(format!("{} quality codes for {count} samples", out.len()));
    }
    Ok(out)
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn get_varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or("short varint")?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_found_alike_whether_times_are_in_order_or_not() {
        let sorted = columns();
        let mut unsorted = columns();
        // The clock was set back by a minute at sample 300.
        unsorted.times[300..].iter_mut().for_each(|t| *t -= 60_000);
        unsorted = Columns::from_parts(unsorted.times, unsorted.values, unsorted.quality);
        assert!(!sorted.unsorted && unsorted.unsorted);
        for c in [&sorted, &unsorted] {
            for (from, to) in [(0, i64::MAX), (1_700_000_050_000, 1_700_000_120_000), (5, 6), (i64::MAX - 1, i64::MAX)]
            {
                let scan: Vec<usize> = (0..c.len()).filter(|i| (from..to).contains(&c.times[*i])).collect();
                assert_eq!(c.range(from, to).collect::<Vec<_>>(), scan, "{from}..{to}");
                let newest = (0..c.len()).filter(|i| c.times[*i] < to).max_by_key(|i| c.times[*i]);
                assert_eq!(c.last_before(to), newest, "before {to}");
            }
        }
        let mut pushed = Columns::default();
        pushed.push(10, 1.0, 0);
        pushed.push(5, 1.0, 0);
        assert!(pushed.unsorted, "a push back in time is noticed");
    }

    fn columns() -> Columns {
        let mut c = Columns::default();
        for i in 0..500i64 {
            let q = if (200..210).contains(&i) { 0x2300 } else { 0 };
            c.push(1_700_000_000_000 + i * 500 + i % 3, 20.0 + (i as f64 * 0.1).sin(), q);
        }
        c
    }

    #[test]
    fn both_codecs_round_trip_with_quality() {
        for codec in [Codec::Gorilla, Codec::Pco] {
            let c = columns();
            let bytes = encode(codec, 7, &c, None).unwrap();
            assert_eq!(decode(&bytes, |_| Err("no".into())).unwrap(), c, "{codec:?}");
            let Some(Entry::Chunk { tag, count, time_min, time_max, times_from }) = entry(&bytes) else { panic!() };
            assert_eq!((tag, count, time_min, time_max, times_from), (7, 500, c.times[0], c.times[499], None));
        }
        assert_eq!(entry(&encode_checkpoint(42, 9)), Some(Entry::Checkpoint { wal_seq: 42, first_chunk_seq: 9 }));
    }

    #[test]
    fn a_chunk_can_share_another_chunks_times() {
        let c = columns();
        let bytes = encode(Codec::Pco, 8, &c, Some(41)).unwrap();
        let alone = encode(Codec::Pco, 8, &c, None).unwrap();
        assert!(bytes.len() < alone.len(), "sharing saves the times: {} vs {}", bytes.len(), alone.len());
        let Some(Entry::Chunk { times_from, .. }) = entry(&bytes) else { panic!() };
        assert_eq!(times_from, Some(41));
        let times = c.times.clone();
        assert_eq!(decode(&bytes, |seq| if seq == 41 { Ok(times) } else { Err("wrong".into()) }).unwrap(), c);
        assert!(decode(&bytes, |_| Err("gone".into())).is_err());
        let short = decode(&bytes, |_| Ok(vec![1, 2, 3]));
        assert!(short.is_err(), "times of the wrong length are refused");
    }

    #[test]
    fn damaged_chunks_are_errors() {
        for codec in [Codec::Gorilla, Codec::Pco] {
            let bytes = encode(codec, 7, &columns(), None).unwrap();
            for cut in [0, 10, HEADER_BYTES, HEADER_BYTES + 3, bytes.len() / 2, bytes.len() - 1] {
                assert!(decode(&bytes[..cut], |_| Err("no".into())).is_err(), "{codec:?} cut at {cut}");
            }
        }
    }
}
