//! Chunk records: one tag's samples over a stretch of time, compressed.
//!
//! ```text
//!  0      1        5         9                17               25
//!  +------+--------+---------+----------------+----------------+-------------------+
//!  | kind | tag    | count   | time min       | time max       | body              |
//!  | u8   | u32 LE | u32 LE  | i64 LE (ms)    | i64 LE (ms)    |                   |
//!  +------+--------+---------+----------------+----------------+-------------------+
//!  kind 1, Gorilla body: u32 LE byte length, then the bit stream (times, then values)
//!  kind 2, pco body:     u32 LE length + pco(times as i64), then the values (below)
//!  kind 3, pco, shared times: u64 LE sequence number of an earlier chunk of the same checkpoint
//!                        whose times these samples share (tags read in one request share
//!                        their times), then the values (below)
//!  pco values:           u32 LE length + pco(values as f64); or, when every value is the same
//!                        (bit for bit), u32 LE 0x8000_0008 and that value (f64 LE); or another
//!                        form of our own, flagged in place of the length (`FLAGGED`): runs,
//!                        or distances from a running mean (`VALUE_MEANS`); the times too may
//!                        be a form of our own: steps from a dictionary as indexes, a prefix
//!                        code or an ANS code (`ans.rs`), or offsets from a grid
//!  all then:             quality runs: varint n, then n x (varint quality code, varint run length)
//!  kind 9, checkpoint:   u64 LE last WAL sequence number folded into chunks,
//!                        u64 LE sequence number of the first chunk record of this checkpoint
//! ```
//!
//! Since issue 15 a checkpoint writes blocks, not a record per chunk: a block is one record
//! holding the chunks of many tags (sections), with a directory to find one tag's without
//! reading the rest. The historian's memory then holds an entry per block, not per tag and
//! checkpoint (10,000 tags made 400 KB of index a checkpoint, without bound). Records of kinds
//! 1 to 3 written before are still read.
//!
//! ```text
//!  kind 5, block:
//!  0      1          5         9         13            21            29             33            37
//!  +------+----------+---------+---------+-------------+-------------+--------------+-------------+
//!  | kind | sections | tag min | tag max | time min    | time max    | directory at | directory   |
//!  | u8   | u32 LE   | u32 LE  | u32 LE  | i64 LE (ms) | i64 LE (ms) | u32 LE       | CRC, u32 LE |
//!  +------+----------+---------+---------+-------------+-------------+--------------+-------------+
//!  then the sections back to back: each a chunk as above (kind 1, 2 or 3; in a block, kind 3's
//!  reference is the index of an earlier section of the same block; at most 8,192 samples),
//!  then u32 LE CRC-32 of it; then at `directory at`, per section in tag order: u32 LE tag,
//!  u32 LE the offset where the section ends. The payload ends with the directory, whose CRC-32
//!  is in the prefix: a query reads the prefix and the directory, checks them, and then only
//!  its tag's sections.
//! ```

use super::ans;

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

    /// The earliest and the latest time, if there are samples (the first and the last, unless
    /// the clock was set back).
    pub fn time_range(&self) -> Option<(i64, i64)> {
        if self.unsorted {
            Some((*self.times.iter().min()?, *self.times.iter().max()?))
        } else {
            Some((*self.times.first()?, *self.times.last()?))
        }
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
    Block(BlockPrefix),
    Checkpoint { wal_seq: u64, first_chunk_seq: u64 },
}

const KIND_BLOCK: u8 = 5;
/// Bytes of a block's prefix.
pub const BLOCK_PREFIX_BYTES: usize = 37;
const DIRECTORY_ENTRY_BYTES: u64 = 8;
const SECTION_CRC_BYTES: usize = 4;
/// Samples a block's section holds at most (a longer head is written as several sections).
pub const SECTION_SAMPLES_MAX: usize = 8192;

/// What a block holds: its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPrefix {
    pub sections: u32,
    pub tag_min: u32,
    pub tag_max: u32,
    pub time_min: i64,
    pub time_max: i64,
    pub directory_at: u32,
    pub directory_crc: u32,
}

/// Builds one block, a section at a time.
#[derive(Debug)]
pub struct BlockWriter {
    out: Vec<u8>,
    directory: Vec<(u32, u32)>,
    prefix: BlockPrefix,
}

impl Default for BlockWriter {
    fn default() -> Self {
        let prefix = BlockPrefix {
            sections: 0,
            tag_min: u32::MAX,
            tag_max: 0,
            time_min: i64::MAX,
            time_max: i64::MIN,
            directory_at: 0,
            directory_crc: 0,
        };
        Self { out: vec![0; BLOCK_PREFIX_BYTES], directory: Vec::new(), prefix }
    }
}

impl BlockWriter {
    pub fn sections(&self) -> usize {
        self.directory.len()
    }

    /// Bytes so far (the directory included).
    pub fn bytes(&self) -> usize {
        self.out.len() + self.directory.len() * DIRECTORY_ENTRY_BYTES as usize
    }

    /// Adds one tag's chunk (at most [`SECTION_SAMPLES_MAX`] samples); tags must come in order.
    /// `times_from`: the index of an earlier section of this block with the very same times
    /// (pco only). `resolution`: the tag's stated resolution, which its values are rounded to
    /// (a hint to the encoder; a value off that grid is stored as it is). Returns this
    /// section's index.
    pub fn push(
        &mut self,
        codec: Codec,
        tag: u32,
        c: &Columns,
        times_from: Option<u32>,
        resolution: Option<f64>,
    ) -> Result<u32, String> {
        if self.directory.last().is_some_and(|(last, _)| *last > tag) {
            return Err(format!("tag {tag} after a later one in a block"));
        }
        if c.len() > SECTION_SAMPLES_MAX {
            return Err(format!("{} samples in one section", c.len()));
        }
        let section = encode_section(codec, tag, c, times_from.map(u64::from), resolution)?;
        self.out.extend_from_slice(&section);
        self.out.extend_from_slice(&crc32fast::hash(&section).to_le_bytes());
        let end = u32::try_from(self.out.len()).map_err(|_| "a block past 4 GB")?;
        self.directory.push((tag, end));
        let p = &mut self.prefix;
        (p.tag_min, p.tag_max) = (p.tag_min.min(tag), p.tag_max.max(tag));
        if let Some((min, max)) = c.time_range() {
            (p.time_min, p.time_max) = (p.time_min.min(min), p.time_max.max(max));
        }
        Ok(self.directory.len() as u32 - 1)
    }

    /// The block's bytes and its prefix.
    pub fn finish(mut self) -> Result<(Vec<u8>, BlockPrefix), String> {
        let p = &mut self.prefix;
        p.sections = self.directory.len() as u32;
        p.directory_at = u32::try_from(self.out.len()).map_err(|_| "a block past 4 GB")?;
        if p.sections == 0 {
            (p.tag_min, p.time_min, p.time_max) = (0, 0, 0);
        }
        for (tag, end) in &self.directory {
            self.out.extend_from_slice(&tag.to_le_bytes());
            self.out.extend_from_slice(&end.to_le_bytes());
        }
        p.directory_crc = crc32fast::hash(&self.out[p.directory_at as usize..]);
        let mut head = vec![KIND_BLOCK];
        head.extend_from_slice(&p.sections.to_le_bytes());
        head.extend_from_slice(&p.tag_min.to_le_bytes());
        head.extend_from_slice(&p.tag_max.to_le_bytes());
        head.extend_from_slice(&p.time_min.to_le_bytes());
        head.extend_from_slice(&p.time_max.to_le_bytes());
        head.extend_from_slice(&p.directory_at.to_le_bytes());
        head.extend_from_slice(&p.directory_crc.to_le_bytes());
        self.out[..BLOCK_PREFIX_BYTES].copy_from_slice(&head);
        Ok((self.out, self.prefix))
    }
}

/// A block's payload, read in parts: from a file (the chunk log) or from memory.
pub trait Payload {
    /// The payload's length in bytes.
    fn size(&self) -> u64;
    /// `len` bytes from `offset`; `None` if they are not all inside.
    fn read(&self, offset: u64, len: usize) -> std::io::Result<Option<Vec<u8>>>;
}

impl Payload for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read(&self, offset: u64, len: usize) -> std::io::Result<Option<Vec<u8>>> {
        let Ok(start) = usize::try_from(offset) else { return Ok(None) };
        Ok(self.get(start..start.saturating_add(len)).map(<[u8]>::to_vec))
    }
}

/// Why a block could not be read: the file could not be read, or its bytes are damaged.
#[derive(Debug)]
pub enum BlockError {
    Io(std::io::Error),
    Damaged(String),
}

impl From<std::io::Error> for BlockError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<String> for BlockError {
    fn from(what: String) -> Self {
        Self::Damaged(what)
    }
}

impl From<&str> for BlockError {
    fn from(what: &str) -> Self {
        Self::Damaged(what.to_owned())
    }
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Damaged(what) => f.write_str(what),
        }
    }
}

/// One block, to find and decode one tag's sections. Its directory is read whole and checked
/// (CRC, order, bounds) when the block is opened, and each section against its own CRC when
/// read: damaged bytes are an error, never a panic, a section taken for another, or an
/// allocation beyond the payload (the directory, a section) or [`SECTION_SAMPLES_MAX`] samples.
pub struct Block<'a, P: Payload + ?Sized> {
    payload: &'a P,
    pub prefix: BlockPrefix,
    /// Per section: its tag and where it ends.
    directory: Vec<(u32, u32)>,
}

impl<'a, P: Payload + ?Sized> Block<'a, P> {
    pub fn open(payload: &'a P) -> Result<Self, BlockError> {
        let bytes = payload.read(0, BLOCK_PREFIX_BYTES)?.ok_or("short block")?;
        let Some(Entry::Block(prefix)) = entry(&bytes) else { return Err("not a block".into()) };
        let directory_bytes = u64::from(prefix.sections) * DIRECTORY_ENTRY_BYTES;
        if u64::from(prefix.directory_at) + directory_bytes != payload.size()
            || (prefix.directory_at as usize) < BLOCK_PREFIX_BYTES
        {
            return Err("a block's directory is not where its prefix says".into());
        }
        let raw = payload.read(u64::from(prefix.directory_at), directory_bytes as usize)?.ok_or("short directory")?;
        if crc32fast::hash(&raw) != prefix.directory_crc {
            return Err("a block's directory fails its checksum".into());
        }
        let directory: Vec<(u32, u32)> = raw
            .chunks_exact(DIRECTORY_ENTRY_BYTES as usize)
            .map(|e| (u32::from_le_bytes([e[0], e[1], e[2], e[3]]), u32::from_le_bytes([e[4], e[5], e[6], e[7]])))
            .collect();
        let mut start = BLOCK_PREFIX_BYTES as u64;
        let mut last_tag = 0;
        for (tag, end) in &directory {
            let end = u64::from(*end);
            if *tag < last_tag || end < start + SECTION_CRC_BYTES as u64 || end > u64::from(prefix.directory_at) {
                return Err("a block's directory is out of order or out of bounds".into());
            }
            (last_tag, start) = (*tag, end);
        }
        Ok(Self { payload, prefix, directory })
    }

    /// The indices of `tag`'s sections.
    pub fn sections_of(&self, tag: u32) -> std::ops::Range<u32> {
        let lo = self.directory.partition_point(|(t, _)| *t < tag);
        let hi = self.directory.partition_point(|(t, _)| *t <= tag);
        lo as u32..hi as u32
    }

    /// Every section's index and tag, in the directory's order (by tag).
    pub fn sections(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.directory.iter().enumerate().map(|(i, (tag, _))| (i as u32, *tag))
    }

    /// Section `i`, read and checked against its CRC and its tag.
    pub fn section(&self, i: u32) -> Result<Section, BlockError> {
        let at = i as usize;
        let (tag, end) = *self.directory.get(at).ok_or("no such section")?;
        let start = if at == 0 { BLOCK_PREFIX_BYTES as u32 } else { self.directory[at - 1].1 };
        let mut bytes = self.payload.read(u64::from(start), (end - start) as usize)?.ok_or("short section")?;
        let crc = bytes.split_off(bytes.len() - SECTION_CRC_BYTES);
        if crc32fast::hash(&bytes).to_le_bytes()[..] != crc[..] {
            return Err(format!("section {i} of a block fails its checksum").into());
        }
        match entry(&bytes) {
            Some(Entry::Chunk { tag: t, count, time_min, time_max, times_from })
                if t == tag && count as usize <= SECTION_SAMPLES_MAX =>
            {
                Ok(Section { index: i, bytes, time_min, time_max, shares_times: times_from.is_some() })
            }
            _ => Err(format!("section {i} of a block is not a chunk of tag {tag}").into()),
        }
    }

    /// A section of this block, decoded (with the times it shares with an earlier section, if
    /// it does).
    pub fn decode(&self, section: &Section) -> Result<Columns, BlockError> {
        let mut io = None;
        let columns = decode(&section.bytes, |from| {
            let from =
                u32::try_from(from).ok().filter(|f| *f < section.index).ok_or("shared times from a later section")?;
            let other = match self.section(from) {
                Ok(other) => other,
                Err(BlockError::Io(e)) => {
                    let what = e.to_string();
                    io = Some(e);
                    return Err(what);
                }
                Err(BlockError::Damaged(what)) => return Err(what),
            };
            decode(&other.bytes, |_| Err("shared times refer to shared times".into())).map(|c| c.times)
        });
        match (columns, io) {
            (_, Some(e)) => Err(BlockError::Io(e)),
            (columns, None) => Ok(columns?),
        }
    }
}

/// One section of a block, read and checked: its chunk's bytes and its header's time range (to
/// decide whether to decode it).
pub struct Section {
    index: u32,
    bytes: Vec<u8>,
    pub time_min: i64,
    pub time_max: i64,
    /// Whether it refers to another section's times instead of holding its own.
    pub shares_times: bool,
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
    encode_section(codec, tag, c, times_from, None)
}

/// [`encode`], with the tag's stated resolution as a hint (see [`BlockWriter::push`]).
fn encode_section(
    codec: Codec,
    tag: u32,
    c: &Columns,
    times_from: Option<u64>,
    resolution: Option<f64>,
) -> Result<Vec<u8>, String> {
    let (time_min, time_max) = c.time_range().unwrap_or((0, 0));
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
            #[cfg(test)]
            assert!(c.values.first() != Some(&PCO_PANICS_ON), "a test makes pco panic");
            match shared {
                Some(seq) => out.extend_from_slice(&seq.to_le_bytes()),
                None => put_times(&mut out, &c.times)?,
            }
            put_values(&mut out, &c.values, resolution)?;
        }
    }
    encode_runs(&mut out, &c.quality);
    Ok(out)
}

/// pco's compression levels (0 to 12; its default is 8), chosen on the store bench's press line
/// (`BENCHMARKS.md`): level 8 spent 37 ns a value for 0.679 bytes a sample, level 6 21 ns for
/// 0.685; times compress to the same size from level 4 on. Deltas of the first order always,
/// not pco's automatic choice: that tries several encodings on every chunk, some 7 µs a chunk
/// whatever its length (a checkpoint of 10,000 tags of 75 samples spent 100 ms on it, a
/// first-order delta 30 ms), and on the bench's data sets first-order deltas came out within
/// a percent of its size either way.
const PCO_LEVEL_VALUES: usize = 6;
const PCO_LEVEL_TIMES: usize = 4;

fn pco_config(level: usize) -> pco::ChunkConfig {
    pco::ChunkConfig::default().with_compression_level(level).with_delta_spec(pco::DeltaSpec::TryConsecutive(1))
}

/// How pco is to split a chunk's values, chosen by one pass over them instead of pco's own
/// search (which samples the chunk and estimates three modes: a tenth of the collector's time
/// at a 1 ms poll, where a chunk holds some 75 samples): values rounded to the tag's stated
/// resolution as multiples of it (whole numbers only if it is above 1), whole numbers (a
/// register, a counter, a bool) as multiples of 1, a scaled register's values as multiples of
/// its step ([`scale_step`]), numbers an `f32` holds exactly (a float register) with their 29
/// low bits known to be zero, anything else (an `f64` measurement, a scale with an offset) as
/// pco finds best.
fn value_mode(values: &[f64], resolution: Option<f64>) -> pco::ModeSpec {
    let whole = values.iter().all(|v| v.fract() == 0.0 && v.abs() < EXACT_INTEGER_MAX);
    // Whole numbers go as multiples of 1 unless the resolution is a coarser step.
    let on_grid = |r: &f64| (!whole || *r > 1.0) && values.iter().all(|v| is_multiple(*v, *r));
    if let Some(r) = resolution.filter(on_grid) {
        #[cfg(test)]
        if let Ok(mut hinted) = HINTED.lock() {
            hinted.push(r.to_bits());
        }
        pco::ModeSpec::TryFloatMult(r)
    } else if whole {
        pco::ModeSpec::TryFloatMult(1.0)
    } else if let Some(step) = scale_step(values) {
        pco::ModeSpec::TryFloatMult(step)
    } else if values.iter().all(|v| f64::from(*v as f32) == *v) {
        pco::ModeSpec::TryFloatQuant(29)
    } else {
        pco::ModeSpec::Auto
    }
}

/// The steps a scaled register's values are looked for at (a PLC's whole number times one of
/// them), coarsest first: a chunk in twentieths is off the grid of tenths, and as multiples
/// of a hundredth its steps would all be multiples of 5 (a fifth more bytes than pco's own
/// search). Halves and quarters are looked for before a float register's form: split as
/// f32s (their low bits zero) a noisy register in halves took 1.69 B/sample in chunks of 75,
/// as multiples of 0.5 1.11 (pco's own search 1.22).
const SCALE_STEPS: [f64; 14] =
    [0.5, 0.25, 0.2, 0.125, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001];
/// A chunk whose values change on fewer than one sample in this many is left to pco's own
/// search by [`scale_step`]: on a register that moves a count now and then its classic form
/// took some tenth fewer bytes than multiples in chunks of 75 (a run of equal values is
/// stored as runs before pco is asked).
const SCALE_MOVES_MIN: usize = 4;
/// Passes [`scale_step`] makes over a chunk at most, each with a finer step, before it gives up.
const SCALE_TRIES: usize = 3;

/// The step a scaled register's values are all multiples of, bit for bit as [`to_resolution`]
/// makes them (a register scaled by the driver, `raw * 0.1`). Not to within an ulp: a decimal
/// parsed from text or divided (`raw / 10.0`) is often the next float, and pco stores each
/// value's ulps off its multiple as a field of its own, not as steps; such a register that
/// changes now and then came out up to twice as large as pco's own search.
///
/// The search takes a value to within an ulp of a step, so that a scale off the list is found
/// through a listed step (`raw * 0.3` is an ulp off some tenths). One pass with the coarsest
/// step of [`SCALE_STEPS`] that fits the first value; a value off it starts the pass again
/// with the coarsest that fits it, the first and every value off a step before (a chunk that
/// held still, a machine idle, fits every step until its values move), at most
/// [`SCALE_TRIES`] passes. When the multiples' steps share a factor (`raw * 0.3` in tenths,
/// `raw / 16.0` in ten-thousandths) the step times that factor is tried in one more pass, and
/// taken if every value is exactly its multiple, else none is: as multiples of the finer step
/// such a chunk came out up to twice as large as pco's own search. A float sensor's first
/// value is off every step: fourteen divisions a chunk.
///
/// pco's own search, on a noisy temperature in tenths: 1.41 B/sample in chunks of 75 against
/// 1.11 as multiples, and on the bench's press line 0.39–0.44 in chunks of thousands against
/// 0.31 (on other data it found them itself). A scale with an offset (`raw * 0.1 - 273.15`,
/// `- 40`) leaves some values off every step: not taken over a long chunk, though a short
/// chunk of it can be all multiples.
fn scale_step(values: &[f64]) -> Option<f64> {
    // Within an ulp, for the search; the step it ends with must hold every value exactly.
    let near = |v: f64, step: f64| {
        resolved(v, step).is_some_and(|r| {
            r.to_bits() == v.to_bits()
                || (r.is_sign_negative() == v.is_sign_negative() && r.to_bits().abs_diff(v.to_bits()) == 1)
        })
    };
    // The coarsest step from `from` on that fits the chunk's first value and every value that
    // a coarser step did not fit.
    let coarsest_fitting =
        |seen: &[f64], from: usize| (from..SCALE_STEPS.len()).find(|i| seen.iter().all(|v| near(*v, SCALE_STEPS[*i])));
    let first = *values.first()?;
    let mut misfits = Vec::with_capacity(SCALE_TRIES + 1);
    misfits.push(first);
    let mut at = coarsest_fitting(&misfits, 0)?;
    'tries: for _ in 0..SCALE_TRIES {
        let step = SCALE_STEPS[at];
        // `resolved` took each multiple for one below 2^49: a whole i64.
        let multiple = |v: f64| (v / step).round() as i64;
        let (base, mut factor, mut exact, mut changes, mut previous) = (multiple(first), 0u64, true, 0, first);
        for v in values {
            if !near(*v, step) {
                misfits.push(*v);
                at = coarsest_fitting(&misfits, at + 1)?;
                continue 'tries;
            }
            exact &= is_multiple(*v, step);
            changes += usize::from(v.to_bits() != previous.to_bits());
            previous = *v;
            if factor != 1 {
                factor = gcd(factor, multiple(*v).abs_diff(base));
            }
        }
        if changes * SCALE_MOVES_MIN < values.len() {
            return None;
        }
        if factor <= 1 {
            return exact.then_some(step);
        }
        // The coarser step as the decimal nearest to it (0.1 * 3 is 0.30000000000000004).
        let coarser = (factor as f64 * step * 1e4).round() / 1e4;
        return (coarser.is_finite() && values.iter().all(|v| is_multiple(*v, coarser))).then_some(coarser);
    }
    None
}

/// Whether `value` is, bit for bit, the multiple of `step` that [`to_resolution`] rounds it to.
fn is_multiple(value: f64, step: f64) -> bool {
    resolved(value, step).map(f64::to_bits) == Some(value.to_bits())
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The resolutions pco was told to split a chunk's values by (for the tests: that a tag's
/// stated resolution reaches the encoder, whichever thread encodes).
#[cfg(test)]
pub(crate) static HINTED: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

/// Multiples of a resolution up to this are rounded to: below it a multiple divided by the
/// resolution again comes within a quarter of its whole number, so rounding what was rounded
/// gives it back bit for bit (near 2^52 it would not).
const MULTIPLES_MAX: f64 = (1u64 << 49) as f64;

/// `value` as the multiple of `resolution` nearest to it, if it has one to round to: not a
/// value that is not finite, nor one more than [`MULTIPLES_MAX`] resolutions from 0. A
/// multiple of 0 is +0, whatever the sign of the value.
fn resolved(value: f64, resolution: f64) -> Option<f64> {
    let multiple = (value / resolution).round();
    let rounded = multiple * resolution + 0.0;
    (multiple.abs() <= MULTIPLES_MAX && rounded.is_finite()).then_some(rounded)
}

/// `value` rounded to the nearest multiple of `resolution` (a finite number above 0), as the
/// product of a whole number and the resolution (the form pco splits back into the two
/// exactly): what the historian stores of a tag with a stated resolution. A value without a
/// multiple to round to (not finite, more than 2^49 resolutions from 0, or rounding to a
/// multiple past the largest float) is kept as it is.
/// Rounding a rounded value gives it back bit for bit.
pub fn to_resolution(value: f64, resolution: f64) -> f64 {
    resolved(value, resolution).unwrap_or(value)
}

/// A chunk whose first value is this makes the pco path panic, in tests: how a bug in pco
/// would show.
#[cfg(test)]
pub(crate) const PCO_PANICS_ON: f64 = -987_654.321;

/// Reads the prefix of a chunk-log record.
pub fn entry(bytes: &[u8]) -> Option<Entry> {
    let u64_at = |i: usize| bytes.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let u32_at = |i: usize| bytes.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    match *bytes.first()? {
        KIND_CHECKPOINT => Some(Entry::Checkpoint { wal_seq: u64_at(1)?, first_chunk_seq: u64_at(9)? }),
        KIND_BLOCK => Some(Entry::Block(BlockPrefix {
            sections: u32_at(1)?,
            tag_min: u32_at(5)?,
            tag_max: u32_at(9)?,
            time_min: u64_at(13)? as i64,
            time_max: u64_at(21)? as i64,
            directory_at: u32_at(29)?,
            directory_crc: u32_at(33)?,
        })),
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
            let values = take_values(bytes, &mut at, count)?;
            (times, values)
        }
        _ => {
            let times = take_times(bytes, &mut at, count)?;
            let values = take_values(bytes, &mut at, count)?;
            (times, values)
        }
    };
    let quality = decode_runs(bytes, &mut at, count)?;
    if times.len() != count || values.len() != count {
        return Err(format!("{} times and {} values for {count} samples", times.len(), values.len()));
    }
    Ok(Columns::from_parts(times, values, quality))
}

/// Samples a chunk may say it holds, at most: chunks are written with up to 8,192, and before
/// that limit a chunk held at most a head (`head_samples_max`, a million by default).
const COUNT_MAX: usize = 1 << 22;

/// A pco column of exactly `count` numbers. The output is sized by the chunk's own count, not by
/// what the pco stream claims (a 100-byte stream may claim billions; fuzzing found one that took
/// 1.7 GB).
fn decompress<T: pco::data_types::Number + Default>(block: &[u8], count: usize) -> Result<Vec<T>, String> {
    if count > COUNT_MAX {
        return Err(format!("a chunk of {count} samples"));
    }
    let mut out = vec![T::default(); count];
    let progress = pco::standalone::simple_decompress_into(block, &mut out).map_err(|e| e.to_string())?;
    if progress.n_processed != count || !progress.finished {
        return Err(format!("a pco column of other than {count} numbers"));
    }
    Ok(out)
}

/// A block length with this bit set is no length but a flag: the column is stored in a form of
/// our own, which the flag names. A pco block is at most 16 MiB, so never has it set.
const FLAGGED: u32 = 1 << 31;
/// Values: one value repeated (8 bytes, f64 LE).
const CONSTANT_COLUMN: u32 = FLAGGED | 8;
/// Times: the steps between them, from a dictionary of at most [`TIME_STEPS_MAX`] (below).
const TIME_STEPS: u32 = FLAGGED | 16;
/// Values: runs of one value (below).
const VALUE_RUNS: u32 = FLAGGED | 17;
/// Times: the steps between them from a dictionary, each as a prefix code (below).
const TIME_STEPS_CODED: u32 = FLAGGED | 18;
/// Values: each as its distance from the mean of the values before it (below).
const VALUE_MEANS: u32 = FLAGGED | 19;
/// Times: the steps between them from a dictionary, as an ANS code (`ans.rs`, below).
const TIME_STEPS_ANS: u32 = FLAGGED | 20;
/// Times: offsets from a grid of one period, from a dictionary, as an ANS code (below).
const TIME_GRID_ANS: u32 = FLAGGED | 21;
/// Times a chunk has at least for a grid to be taken over pco's column when its steps are
/// too many for a dictionary.
const GRID_SAMPLES_MIN: usize = 512;
/// The longest prefix code of a time step: what Huffman's code of [`TIME_STEPS_MAX`] steps
/// needs at most (one fewer than the steps); a longer one in a chunk is damage.
const TIME_CODE_BITS_MAX: u8 = 15;
/// Distinct steps between the times of one chunk that its times are stored as (4 bits a
/// sample at most); a chunk with more goes to pco.
const TIME_STEPS_MAX: usize = 16;
/// Values are stored as runs when there is at most one run for this many samples.
const SAMPLES_PER_RUN_MIN: usize = 32;

/// The flag at `at`, if the 4 bytes there are one.
fn flag_at(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)?;
    (word & FLAGGED != 0).then_some(word)
}

/// Bits an index into a dictionary of `k` entries takes.
fn index_bits(k: usize) -> usize {
    (usize::BITS - k.saturating_sub(1).leading_zeros()) as usize
}

/// A chunk's times. Those of a paced poll step by a few values only (the poll's interval, give
/// or take the milliseconds an answer takes): then as the first time, the distinct steps (at
/// most 16, zigzag varints) and each step's index in as few bits as they need, packed from the
/// lowest bit up:
///
/// ```text
///  u32 LE TIME_STEPS, i64 LE first time, u8 k, k x varint step, ceil((count - 1) x bits(k) / 8) bytes
/// ```
///
/// or, when some steps are much more common than others (a poll's answer a millisecond early
/// or late now and then: nine steps of a 1 s poll with ±2 ms at random take 4 bits as indexes,
/// 3.0 as a prefix code, their entropy), each step as a prefix code (Huffman's, canonical: codes ordered by
/// length, then by the step's place in the dictionary), its bits from the code's first, packed
/// from the lowest bit up:
///
/// ```text
///  u32 LE TIME_STEPS_CODED, i64 LE first time, u8 k (2 to 16), k x (varint step, u8 code
///  length, 1 to 15), ceil(code bits / 8) bytes
/// ```
///
/// or as an ANS code ([`AnsSteps`]), or as offsets from a grid ([`Grid`]), whichever is the
/// smallest by its counts. Anything else (more than 16 steps, and a short chunk or more than
/// 16 offsets from a grid) as a pco column. pco spent some 35 ns a time on such a chunk of
/// 8,192, and its bins merged the steps of the store bench's poll into 3.2 bits a sample;
/// these forms some 4 ns a time as a dictionary alone, and 10 to 40 with the ANS forms
/// weighed and written (the bench's poll: 1 bit a time as indexes, 0.65 as an ANS code of
/// order 1) (issue 15).
fn put_times(out: &mut Vec<u8>, times: &[i64]) -> Result<(), String> {
    let Some(dictionary) = Dictionary::of(times.windows(2).map(|w| w[1].wrapping_sub(w[0]))) else {
        // Against pco's column, unweighed: only where its table and state are a few bytes
        // among many (a short chunk came out up to a tenth larger).
        if let Some(grid) = (times.len() >= GRID_SAMPLES_MIN && ans_allowed()).then(|| Grid::of(times)).flatten() {
            return grid.put(out, times);
        }
        let config = pco_config(PCO_LEVEL_TIMES);
        put_block(out, &pco::standalone::simple_compress(times, &config).map_err(|e| e.to_string())?);
        return Ok(());
    };
    let (steps, counts, indexes) = (dictionary.entries(), dictionary.counts(), &dictionary.indexes);
    let k = steps.len();
    let lengths = code_lengths(counts);
    let fixed_bits = times.len().saturating_sub(1) as u64 * index_bits(k) as u64;
    let code_bits: u64 = counts.iter().zip(&lengths).map(|(c, l)| c * u64::from(*l)).sum();
    // A length byte a step more than the indexes' header.
    let coded = k >= 2 && lengths.iter().all(|l| *l <= TIME_CODE_BITS_MAX) && code_bits + 8 * (k as u64) < fixed_bits;
    let best_other = (if coded { code_bits + 8 * k as u64 } else { fixed_bits }) as f64;
    // (One step, a poll exact to the millisecond, takes no bits: nothing to weigh.)
    let (ans_steps, grid) =
        if k >= 2 && ans_allowed() { (AnsSteps::of(indexes, k), Grid::of(times)) } else { (None, None) };
    let ans_bits = ans_steps.as_ref().map_or(f64::INFINITY, |a| a.bits);
    if let Some(grid) = grid.filter(|g| g.bits < ans_bits && g.bits < best_other) {
        return grid.put(out, times);
    }
    if let Some(ans_steps) = ans_steps.filter(|_| ans_bits < best_other) {
        return ans_steps.put(out, times, steps, indexes);
    }
    out.extend_from_slice(&if coded { TIME_STEPS_CODED } else { TIME_STEPS }.to_le_bytes());
    out.extend_from_slice(&times.first().copied().unwrap_or(0).to_le_bytes());
    out.push(k as u8);
    for (step, length) in steps.iter().zip(&lengths) {
        put_varint(out, zigzag(*step));
        if coded {
            out.push(*length);
        }
    }
    let codes = if coded { canonical_codes(&lengths) } else { Vec::new() };
    let bits = index_bits(k) as u32;
    let mut packed = LowBitsFirst::default();
    for index in indexes.iter().map(|i| usize::from(*i)) {
        if coded {
            // The code's bits from its first (the decoder walks the code lengths up).
            let (code, length) = (codes[index], u32::from(lengths[index]));
            for b in (0..length).rev() {
                packed.put(out, u64::from((code >> b) & 1), 1);
            }
        } else {
            packed.put(out, index as u64, bits);
        }
    }
    packed.finish(out);
    Ok(())
}

/// Numbers of a few bits each, packed from the lowest bit up into whole bytes.
#[derive(Default)]
struct LowBitsFirst {
    word: u128,
    filled: u32,
}

impl LowBitsFirst {
    /// Appends the `bits` low bits of `value` (at most 64).
    fn put(&mut self, out: &mut Vec<u8>, value: u64, bits: u32) {
        self.word |= u128::from(value) << self.filled;
        self.filled += bits;
        while self.filled >= 8 {
            out.push(self.word as u8);
            (self.word, self.filled) = (self.word >> 8, self.filled - 8);
        }
    }

    /// Writes the last, partly filled, byte.
    fn finish(self, out: &mut Vec<u8>) {
        if self.filled > 0 {
            out.push(self.word as u8);
        }
    }
}

/// The lengths of a prefix code (Huffman's) for symbols seen `counts` times: at most
/// [`TIME_STEPS_MAX`] of them, so merging the two rarest groups until one is left is cheap.
fn code_lengths(counts: &[u64]) -> Vec<u8> {
    let mut lengths = vec![0u8; counts.len()];
    let mut groups: Vec<(u64, Vec<usize>)> = counts.iter().enumerate().map(|(i, c)| (*c, vec![i])).collect();
    while groups.len() > 1 {
        // The rarest last; ties by the lowest symbol, so that the code is the same every time.
        groups.sort_by(|a, b| b.0.cmp(&a.0).then(b.1[0].cmp(&a.1[0])));
        let (Some(a), Some(b)) = (groups.pop(), groups.pop()) else { break };
        for &symbol in a.1.iter().chain(&b.1) {
            lengths[symbol] = lengths[symbol].saturating_add(1);
        }
        let mut symbols = a.1;
        symbols.extend(b.1);
        symbols.sort_unstable();
        groups.push((a.0 + b.0, symbols));
    }
    lengths
}

/// The canonical codes of these code lengths (each 1 to 15): in order of length, then of
/// symbol, each the last one plus one, shifted left as the length grows.
fn canonical_codes(lengths: &[u8]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&s| (lengths[s], s));
    let mut codes = vec![0u32; lengths.len()];
    let (mut code, mut length) = (0u32, 0u8);
    for s in order {
        code <<= lengths[s] - length;
        length = lengths[s];
        codes[s] = code;
        code += 1;
    }
    codes
}

/// The distinct numbers of a column, at most [`TIME_STEPS_MAX`], how often each came, and
/// each number's index among them in turn: a chunk's time steps, or its times' offsets from
/// a grid.
struct Dictionary {
    entries: [i64; TIME_STEPS_MAX],
    counts: [u64; TIME_STEPS_MAX],
    k: usize,
    indexes: Vec<u8>,
}

impl Dictionary {
    /// `None` past [`TIME_STEPS_MAX`] distinct numbers.
    fn of(numbers: impl ExactSizeIterator<Item = i64>) -> Option<Dictionary> {
        let mut d = Dictionary {
            entries: [0; TIME_STEPS_MAX],
            counts: [0; TIME_STEPS_MAX],
            k: 0,
            indexes: Vec::with_capacity(numbers.len()),
        };
        for n in numbers {
            let index = match d.entries[..d.k].iter().position(|e| *e == n) {
                Some(index) => index,
                None if d.k == TIME_STEPS_MAX => return None,
                None => {
                    d.entries[d.k] = n;
                    d.k += 1;
                    d.k - 1
                }
            };
            d.counts[index] += 1;
            d.indexes.push(index as u8);
        }
        Some(d)
    }

    fn entries(&self) -> &[i64] {
        &self.entries[..self.k]
    }

    fn counts(&self) -> &[u64] {
        &self.counts[..self.k]
    }
}

/// A chunk's time steps as an ANS code (`ans.rs`): fractions of a bit a time where a prefix
/// code rounds up to whole ones (the store bench's poll, its answer late one time in five:
/// 0.72 bits, against 1). Of order 0 (one table) or 1 (a table for the steps after each
/// step: a late answer is mostly followed by one on time, so the step after a long one is
/// mostly short; the bench's poll in 0.65 bits), whichever is smaller with its tables:
///
/// ```text
///  u32 LE TIME_STEPS_ANS, i64 LE first time, u8 k (2 to 16), k x varint step, u8 order (0, 1),
///  then one table (order 0) or k (order 1: after step 0, 1, ...; the first step's table is
///  step 0's), then the stream of the count - 1 steps' indexes (`ans.rs`)
/// ```
struct AnsSteps {
    order: u8,
    tables: Vec<Vec<u32>>,
    /// Bits the steps take so, the dictionary not counted.
    bits: f64,
}

impl AnsSteps {
    /// The code of `indexes`, each a step's index in a dictionary of `k`.
    fn of(indexes: &[u8], k: usize) -> Option<AnsSteps> {
        let mut pairs = [[0u64; TIME_STEPS_MAX]; TIME_STEPS_MAX];
        let mut previous = 0;
        for index in indexes.iter().map(|i| usize::from(*i)) {
            pairs[previous][index] += 1;
            previous = index;
        }
        let mut counts = [0u64; TIME_STEPS_MAX];
        for row in &pairs[..k] {
            for (c, p) in counts.iter_mut().zip(&row[..k]) {
                *c += p;
            }
        }
        // Each form's bits: its code, its tables, and the stream's length and state.
        let cost = |tables: &[(Vec<u32>, &[u64])]| {
            tables.iter().map(|(f, c)| ans::coded_bits(c, f) + 8.0 * ans::table_bytes(f) as f64).sum::<f64>() + 64.0
        };
        let zero = ans::frequencies(&counts[..k])?;
        let zero_bits = cost(&[(zero.clone(), &counts[..k])]);
        // A context that never occurs gets a table of one symbol.
        let ones: Vec<(Vec<u32>, &[u64])> = pairs[..k]
            .iter()
            .map(|row| {
                let mut freqs = ans::frequencies(&row[..k]).unwrap_or_default();
                if freqs.is_empty() {
                    freqs = vec![0; k];
                    freqs[0] = 1 << 12;
                }
                (freqs, &row[..k])
            })
            .collect();
        let one_bits = cost(&ones);
        Some(if one_bits < zero_bits {
            AnsSteps { order: 1, tables: ones.into_iter().map(|(f, _)| f).collect(), bits: one_bits }
        } else {
            AnsSteps { order: 0, tables: vec![zero], bits: zero_bits }
        })
    }

    fn put(&self, out: &mut Vec<u8>, times: &[i64], steps: &[i64], indexes: &[u8]) -> Result<(), String> {
        out.extend_from_slice(&TIME_STEPS_ANS.to_le_bytes());
        out.extend_from_slice(&times.first().copied().unwrap_or(0).to_le_bytes());
        out.push(steps.len() as u8);
        for step in steps {
            put_varint(out, zigzag(*step));
        }
        out.push(self.order);
        self.tables.iter().for_each(|t| ans::put_table(out, t));
        let tables: Vec<&[u32]> = self.tables.iter().map(Vec::as_slice).collect();
        // The context of a step: the one before it (the first's, step 0), in order 1.
        let context = |i: usize| if self.order == 0 || i == 0 { 0 } else { usize::from(indexes[i - 1]) };
        ans::encode(out, &tables, (0..indexes.len()).map(|i| (context(i), usize::from(indexes[i]))))
    }
}

/// A chunk's times as a grid (the first time plus a whole number of periods) and each time's
/// offset from it, from a dictionary of at most [`TIME_STEPS_MAX`], as an ANS code: a poll
/// paced by a clock whose answers come a few milliseconds late at random is late from its
/// grid by one draw, and its steps carry two (a 1 s poll with ±2 ms at random: 2.3 bits a
/// time off the grid, 3.0 as steps, 2.7 as steps of order 1):
///
/// ```text
///  u32 LE TIME_GRID_ANS, i64 LE first time, varint period (zigzag), u8 k (2 to 16),
///  k x varint offset (zigzag), the table, the stream of the count - 1 later times' offsets'
///  indexes; time i = first + i x period + its offset (wrapping)
/// ```
struct Grid {
    period: i64,
    /// The offsets, and each later time's offset's index among them.
    offsets: Dictionary,
    freqs: Vec<u32>,
    bits: f64,
}

impl Grid {
    fn of(times: &[i64]) -> Option<Grid> {
        let (first, last) = (*times.first()?, *times.last()?);
        if times.len() < 3 {
            return None;
        }
        let period = (last.checked_sub(first)? as f64 / (times.len() - 1) as f64).round() as i64;
        let offsets = Dictionary::of((1..times.len()).map(|i| Self::offset(first, period, i, times[i])))?;
        if offsets.entries().len() < 2 {
            return None;
        }
        let freqs = ans::frequencies(offsets.counts())?;
        let bits = ans::coded_bits(offsets.counts(), &freqs) + 8.0 * ans::table_bytes(&freqs) as f64 + 64.0;
        Some(Grid { period, offsets, freqs, bits })
    }

    fn offset(first: i64, period: i64, i: usize, time: i64) -> i64 {
        time.wrapping_sub(first.wrapping_add((i as i64).wrapping_mul(period)))
    }

    fn put(&self, out: &mut Vec<u8>, times: &[i64]) -> Result<(), String> {
        let first = times.first().copied().unwrap_or(0);
        out.extend_from_slice(&TIME_GRID_ANS.to_le_bytes());
        out.extend_from_slice(&first.to_le_bytes());
        put_varint(out, zigzag(self.period));
        out.push(self.offsets.entries().len() as u8);
        for offset in self.offsets.entries() {
            put_varint(out, zigzag(*offset));
        }
        ans::put_table(out, &self.freqs);
        ans::encode(out, &[&self.freqs], self.offsets.indexes.iter().map(|i| (0, usize::from(*i))))
    }
}

/// What [`put_times`] wrote: `count` times.
fn take_times(bytes: &[u8], at: &mut usize, count: usize) -> Result<Vec<i64>, String> {
    let coded = match flag_at(bytes, *at) {
        Some(TIME_STEPS) => false,
        Some(TIME_STEPS_CODED) => true,
        Some(TIME_STEPS_ANS) => return take_ans_times(bytes, at, count),
        Some(TIME_GRID_ANS) => return take_grid_times(bytes, at, count),
        _ => return decompress::<i64>(take_block(bytes, at)?, count),
    };
    if count > COUNT_MAX {
        return Err(format!("a chunk of {count} samples"));
    }
    let first = bytes.get(*at + 4..*at + 12).and_then(|b| b.try_into().ok()).ok_or("short time steps")?;
    let k = usize::from(*bytes.get(*at + 12).ok_or("short time steps")?);
    *at += 13;
    if k > TIME_STEPS_MAX || (k == 0 && count > 1) || (coded && k < 2) {
        return Err(format!("{k} time steps for {count} samples"));
    }
    let mut steps = [0i64; TIME_STEPS_MAX];
    let mut lengths = [0u8; TIME_STEPS_MAX];
    for (step, length) in steps[..k].iter_mut().zip(&mut lengths) {
        *step = unzigzag(get_varint(bytes, at)?);
        if coded {
            *length = *bytes.get(*at).ok_or("short time steps")?;
            *at += 1;
        }
    }
    // Allocated as the samples are met, not for the count a damaged header may claim.
    let mut out = Vec::with_capacity(count.min(1 << 16));
    let mut time = i64::from_le_bytes(first);
    if count > 0 {
        out.push(time);
    }
    if coded {
        let code = PrefixCode::new(&lengths[..k])?;
        let mut codes = CodeReader::new(bytes.get(*at..).unwrap_or_default());
        for _ in 1..count {
            time = time.wrapping_add(steps[codes.read(&code)?]);
            out.push(time);
        }
        *at += codes.bytes_used();
        return Ok(out);
    }
    let bits = index_bits(k);
    let packed_len = (count.saturating_sub(1) * bits).div_ceil(8);
    let mut packed = bytes.get(*at..*at + packed_len).ok_or("short time steps")?.iter();
    *at += packed_len;
    let mask = (1u64 << bits) - 1;
    let (mut word, mut have) = (0u64, 0);
    for _ in 1..count {
        while have < bits {
            word |= u64::from(*packed.next().ok_or("short time steps")?) << have;
            have += 8;
        }
        let step = steps[..k].get((word & mask) as usize).ok_or("a time step out of its dictionary")?;
        (word, have) = (word >> bits, have - bits);
        time = time.wrapping_add(*step);
        out.push(time);
    }
    Ok(out)
}

#[cfg(test)]
thread_local! {
    /// Set by a test of the forms an ANS code would take the place of.
    static NO_ANS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn ans_allowed() -> bool {
    #[cfg(test)]
    if NO_ANS.with(std::cell::Cell::get) {
        return false;
    }
    true
}

/// What [`AnsSteps::put`] wrote: `count` times.
fn take_ans_times(bytes: &[u8], at: &mut usize, count: usize) -> Result<Vec<i64>, String> {
    if count > COUNT_MAX {
        return Err(format!("a chunk of {count} samples"));
    }
    let first = bytes.get(*at + 4..*at + 12).and_then(|b| b.try_into().ok()).ok_or("short time steps")?;
    let k = usize::from(*bytes.get(*at + 12).ok_or("short time steps")?);
    *at += 13;
    if !(2..=TIME_STEPS_MAX).contains(&k) || count < 2 {
        return Err(format!("{k} time steps for {count} samples"));
    }
    let mut steps = [0i64; TIME_STEPS_MAX];
    for step in &mut steps[..k] {
        *step = unzigzag(get_varint(bytes, at)?);
    }
    let order = *bytes.get(*at).ok_or("short time steps")?;
    *at += 1;
    let tables = match order {
        0 => vec![ans::Table::read(bytes, at, k)?],
        1 => (0..k).map(|_| ans::Table::read(bytes, at, k)).collect::<Result<_, _>>()?,
        _ => return Err(format!("time steps coded in order {order}")),
    };
    let mut decoder = ans::Decoder::new(bytes, at)?;
    // Allocated as the samples are met, not for the count a damaged header may claim.
    let mut out = Vec::with_capacity(count.min(1 << 16));
    let mut time = i64::from_le_bytes(first);
    out.push(time);
    let mut context = 0;
    for _ in 1..count {
        let index = decoder.symbol(&tables[if order == 0 { 0 } else { context }])?;
        time = time.wrapping_add(steps[index]);
        out.push(time);
        context = index;
    }
    decoder.finish()?;
    Ok(out)
}

/// What [`Grid::put`] wrote: `count` times.
fn take_grid_times(bytes: &[u8], at: &mut usize, count: usize) -> Result<Vec<i64>, String> {
    if count > COUNT_MAX {
        return Err(format!("a chunk of {count} samples"));
    }
    let first = bytes.get(*at + 4..*at + 12).and_then(|b| b.try_into().ok()).ok_or("short time grid")?;
    let first = i64::from_le_bytes(first);
    *at += 12;
    let period = unzigzag(get_varint(bytes, at)?);
    let k = usize::from(*bytes.get(*at).ok_or("short time grid")?);
    *at += 1;
    if !(2..=TIME_STEPS_MAX).contains(&k) || count < 3 {
        return Err(format!("{k} offsets from a grid for {count} samples"));
    }
    let mut offsets = [0i64; TIME_STEPS_MAX];
    for offset in &mut offsets[..k] {
        *offset = unzigzag(get_varint(bytes, at)?);
    }
    let table = ans::Table::read(bytes, at, k)?;
    let mut decoder = ans::Decoder::new(bytes, at)?;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    out.push(first);
    for i in 1..count {
        let offset = offsets[decoder.symbol(&table)?];
        out.push(first.wrapping_add((i as i64).wrapping_mul(period)).wrapping_add(offset));
    }
    decoder.finish()?;
    Ok(out)
}

/// A canonical prefix code read back from its lengths, as a table: the next `longest` bits of
/// the stream (its first bit the lowest) give the symbol and the length of its code.
struct PrefixCode {
    mask: u64,
    /// By the next `longest` bits: the symbol and its code's length (0: no code starts so).
    table: Vec<(u8, u8)>,
}

impl PrefixCode {
    /// Refuses lengths outside 1 to 15, and lengths no prefix code has (more codes of some
    /// lengths than fit: a damaged dictionary).
    fn new(lengths: &[u8]) -> Result<Self, String> {
        if let Some(l) = lengths.iter().find(|l| **l == 0 || **l > TIME_CODE_BITS_MAX) {
            return Err(format!("a time step's code of {l} bits"));
        }
        // Kraft's inequality, in units of the longest code.
        let room: u64 = lengths.iter().map(|l| 1u64 << (TIME_CODE_BITS_MAX - l)).sum();
        if room > 1 << TIME_CODE_BITS_MAX {
            return Err("time step codes that are no prefix code".into());
        }
        let longest = lengths.iter().copied().max().unwrap_or(0);
        let mut table = vec![(0u8, 0u8); 1 << longest];
        for (symbol, (code, &length)) in canonical_codes(lengths).into_iter().zip(lengths).enumerate() {
            // The code's first bit is read first: the lowest of the bits looked up.
            let first_lowest = code.reverse_bits() >> (32 - u32::from(length));
            for rest in 0..1u32 << (longest - length) {
                table[(first_lowest | (rest << length)) as usize] = (symbol as u8, length);
            }
        }
        Ok(Self { mask: (1u64 << longest) - 1, table })
    }
}

/// Prefix codes read from bytes, their bits from the lowest of each byte up.
struct CodeReader<'a> {
    bytes: &'a [u8],
    next: usize,
    word: u64,
    held: u32,
    /// Bits the codes read so far take.
    used: u64,
}

impl<'a> CodeReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, next: 0, word: 0, held: 0, used: 0 }
    }

    /// The next symbol of `code`. Past the bytes' end it reads zeros, then says the codes are
    /// cut short once one would end there.
    fn read(&mut self, code: &PrefixCode) -> Result<usize, String> {
        while self.held <= 56 {
            self.word |= u64::from(self.bytes.get(self.next).copied().unwrap_or(0)) << self.held;
            self.next += 1;
            self.held += 8;
        }
        let (symbol, length) = code.table.get((self.word & code.mask) as usize).copied().unwrap_or((0, 0));
        if length == 0 {
            return Err("a time step's code that is none of its dictionary's".into());
        }
        self.word >>= length;
        self.held -= u32::from(length);
        self.used += u64::from(length);
        if self.used > self.bytes.len() as u64 * 8 {
            return Err("short time step codes".into());
        }
        Ok(usize::from(symbol))
    }

    /// Whole bytes the codes read so far take.
    fn bytes_used(&self) -> usize {
        self.used.div_ceil(8) as usize
    }
}

/// A chunk's values: one value repeated (a register that did not change, a bool that stayed)
/// as that value alone; a value that changes now and then (a machine's state, a setpoint, a
/// count of rejects) as runs; anything else compressed by pco. pco spends some 3 µs and 55
/// bytes on any column, however short and plain (most of a plant's registers hold still
/// between two checkpoints: at a 1 ms poll, a checkpoint's chunks hold some 75 samples), and
/// some 20 ns a value on a long one however plain. Runs:
///
/// ```text
///  u32 LE VALUE_RUNS, u8 form, varint runs, then per run its value and its length (varint)
///  form 0: every value a whole number (below 2^53, no -0.0): the value as the step from the
///          run before (zigzag varint; the first from 0)
///  form 1: the value as f64 LE
/// ```
fn put_values(out: &mut Vec<u8>, values: &[f64], resolution: Option<f64>) -> Result<(), String> {
    let runs_max = (values.len() / SAMPLES_PER_RUN_MIN).max(1);
    let mut runs = usize::from(!values.is_empty());
    for w in values.windows(2) {
        if w[0].to_bits() != w[1].to_bits() {
            runs += 1;
            if runs > runs_max {
                break;
            }
        }
    }
    match values.first() {
        Some(first) if runs == 1 => {
            out.extend_from_slice(&CONSTANT_COLUMN.to_le_bytes());
            out.extend_from_slice(&first.to_le_bytes());
        }
        Some(_) if runs <= runs_max => put_runs(out, values, runs),
        _ => {
            let mode = value_mode(values, resolution);
            if let Some((form, step, first, residuals)) = mean_residuals(values, &mode) {
                out.extend_from_slice(&VALUE_MEANS.to_le_bytes());
                out.push(form);
                if form == MEANS_OF_MULTIPLES {
                    out.extend_from_slice(&step.to_le_bytes());
                }
                out.push(MEAN_WINDOW as u8);
                put_varint(out, zigzag(first));
                let plan =
                    if residuals.len() >= BINS_SAMPLES_MIN && ans_allowed() { bins_plan(&residuals) } else { None };
                if let Some(plan) = plan {
                    out.push(DISTANCES_IN_BINS);
                    put_bins(out, &residuals, plan)?;
                } else {
                    out.push(DISTANCES_BY_PCO);
                    let config = pco::ChunkConfig::default()
                        .with_compression_level(PCO_LEVEL_VALUES)
                        .with_delta_spec(pco::DeltaSpec::NoOp);
                    put_block(out, &pco::standalone::simple_compress(&residuals, &config).map_err(|e| e.to_string())?);
                }
                return Ok(());
            }
            let config = pco_config(PCO_LEVEL_VALUES).with_mode_spec(mode);
            put_block(out, &pco::standalone::simple_compress(values, &config).map_err(|e| e.to_string())?);
        }
    }
    Ok(())
}

/// Values a mean is taken of to foretell the next one ([`mean_residuals`]).
const MEAN_WINDOW: usize = 16;
/// The longest window a chunk may name: more is damage.
const MEAN_WINDOW_MAX: u8 = 64;
/// [`VALUE_MEANS`] forms: the values' f32s as ordered integers, or multiples of a step.
const MEANS_OF_F32S: u8 = 0;
const MEANS_OF_MULTIPLES: u8 = 1;
/// Multiples of a step a chunk of [`VALUE_MEANS`] may hold, at most (an f64 holds each exactly).
const MEANS_MULTIPLE_MAX: i64 = 1 << 53;

/// A noisy measurement (a sensor's value wandering around a slowly moving one) as each value's
/// distance from the mean of the [`MEAN_WINDOW`] values before it, when that is the smaller: a
/// step from the value before carries the noise of both, twice its variance (half a bit a
/// sample more), where the mean of sixteen carries a sixteenth of it. A ramp, a count or a
/// random walk keeps its steps. Only for values that are whole numbers in disguise, so that
/// any distance gives the value back bit for bit: an f32's bits read as an integer that orders
/// them as the numbers ([`f32_ordinal`]), or the multiples of the step pco was to split them
/// by (a stated resolution, a scaled register's step, 1 for whole numbers). Which is smaller
/// is judged by the bits of both (their lengths summed), one pass, no trial compression:
///
/// ```text
///  u32 LE VALUE_MEANS, u8 form (0: f32s; 1: multiples, then f64 LE step), u8 window,
///  varint the first value (zigzag; foretold for itself), u8 coder, then the distances: coder 0, a pco column of i64 (no deltas); coder 1 (a
///  chunk of 1,024 values or more), in bins ([`put_bins`])
/// ```
///
/// On the bench's press line (noise of 0.08 °C, 2 % and 3 % on an f32 temperature, power
/// and vibration; a temperature in tenths) see `BENCHMARKS.md`.
fn mean_residuals(values: &[f64], mode: &pco::ModeSpec) -> Option<(u8, f64, i64, Vec<i64>)> {
    // Each value as the whole number it stands for, if every one is one (taken in turn: a
    // column the means do not fit is given up on before most of it is read).
    let (form, step) = match *mode {
        // A step the decoder takes (a hint from outside may be anything).
        pco::ModeSpec::TryFloatMult(step) if step > 0.0 && step.is_finite() => (MEANS_OF_MULTIPLES, step),
        pco::ModeSpec::TryFloatQuant(29) => (MEANS_OF_F32S, 0.0),
        _ => return None,
    };
    let integer = |v: f64| {
        if form == MEANS_OF_F32S {
            let single = v as f32;
            (f64::from(single).to_bits() == v.to_bits()).then_some(i64::from(f32_ordinal(single)))
        } else {
            // Whole numbers (a step of 1) need no division.
            let m = if step == 1.0 { v.round() } else { (v / step).round() };
            (m.abs() <= MEANS_MULTIPLE_MAX as f64 && (m * step + 0.0).to_bits() == v.to_bits()).then_some(m as i64)
        }
    };
    let bits = |v: i64| u64::from(64 - zigzag(v).leading_zeros());
    let first = integer(*values.first()?)?;
    // The form's header more than pco's column: form, window, coder, the first value, a step.
    let header = 3 + varint_bytes(zigzag(first)) + if form == MEANS_OF_MULTIPLES { 8 } else { 0 };
    let (mut step_bits, mut mean_bits) = (0u64, 0u64);
    let mut mean = RunningMean::new(MEAN_WINDOW, first);
    let mut previous = first;
    for (i, v) in values.iter().enumerate() {
        let x = integer(*v)?;
        step_bits += bits(x - previous);
        mean_bits += bits(x - mean.predict());
        mean.push(x);
        previous = x;
        // A ramp, a count, a random walk shows itself soon (at a 1 ms poll a chunk holds
        // some 75 values): two bits a value more, after 32 and every 256.
        if (i == 31 || i % 256 == 255) && mean_bits > step_bits + 2 * i as u64 {
            return None;
        }
    }
    if mean_bits + 8 * header as u64 >= step_bits {
        return None;
    }
    let mut mean = RunningMean::new(MEAN_WINDOW, first);
    let residuals = values
        .iter()
        .map(|v| {
            // Every value was found a whole number in the pass above.
            let x = integer(*v).unwrap_or(0);
            let residual = x - mean.predict();
            mean.push(x);
            residual
        })
        .collect();
    Some((form, step, first, residuals))
}

/// Bytes [`put_varint`] writes for `v`.
pub(crate) fn varint_bytes(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).div_ceil(7).max(1)
}

/// How [`VALUE_MEANS`] stores its distances: as a pco column of i64, or in bins ([`put_bins`]).
const DISTANCES_BY_PCO: u8 = 0;
const DISTANCES_IN_BINS: u8 = 1;
/// Distances a chunk has at least for them to go in bins: a shorter one gives its table (a
/// byte or two a bin) too much of its bytes.
const BINS_SAMPLES_MIN: usize = 1024;
/// Bins around 0, half of them below, each `2^shift` wide; one more symbol for a distance
/// outside them all.
const BINS: usize = 64;
/// The widest a bin may be said to be (a distance of two multiples is at most 2^54).
const BIN_SHIFT_MAX: u8 = 56;

/// A noisy column's distances from their running mean, in bins of one width, as pco splits a
/// column but cheaper (pco's level 6 took some 2 % more bytes on the bench's noise than its
/// level 8, which took twice the time): a distance `d` is in bin `d >> shift` (64 bins
/// around 0), the bin coded as an ANS symbol (`ans.rs`), the `shift` bits below it as they
/// are. The width is one of four, from a third or two thirds of the noise's spread down to
/// an eighth of that (taken from the distances' median size, which a rare glitch does not
/// move), the one whose counts cost the fewest bits; a distance outside them all (a machine
/// that starts, a glitch) is an escape symbol and its zigzag varint. When the counts say
/// pco's column of the distances is smaller (two levels far apart: [`bins_plan`]), that.
///
/// ```text
///  u8 shift, ANS table of 65 symbols and stream (the bins, then escape), then for each escape
///  its distance (zigzag varint), then each other distance's `shift` low bits packed from
///  the lowest bit up, ceil(n x shift / 8) bytes
/// ```
/// The bins' width and counts for `distances`, if bins are the smaller by their counts: pco's
/// column is weighed as a bit more than each distance's bit length (a chunk whose values sit
/// at two levels far apart, a machine that runs and idles, has two spreads, and bins of one
/// width fit one: the other escapes; pco's bins fit both).
fn bins_plan(distances: &[i64]) -> Option<(u8, [u64; BINS + 1])> {
    // The noise's spread from the distances' median size (a rare glitch, a machine that
    // starts, does not move it; a gaussian's sigma is 1.48 of it), read off a count of their
    // bit lengths: the median is below 2^l, l the bit length half of them reach. Bins of
    // 2^(l - 1) (a third to two thirds of the spread), or a half, a quarter or an eighth of that,
    // whichever costs the fewest bits by the counts (a column whose values cross a power of
    // two is noise of two spreads as f32s).
    let mut lengths = [0usize; 65];
    for d in distances {
        lengths[(64 - d.unsigned_abs().leading_zeros()) as usize] += 1;
    }
    let mut reached = 0;
    let median_bits = (0..lengths.len())
        .find(|l| {
            reached += lengths[*l];
            2 * reached >= distances.len()
        })
        .unwrap_or(0);
    let widest = (median_bits as u8).saturating_sub(1).min(BIN_SHIFT_MAX);
    let half = (BINS / 2) as i64;
    // One count, in bins of the finest width over the widest one's range; each width's bins
    // are runs of those (a distance's bin at a shift is its bin at a finer one, shifted).
    let finest = widest.saturating_sub(3);
    let fine_half = half << (widest - finest);
    let mut fine = vec![0u64; 2 * fine_half as usize];
    for d in distances {
        let bin = d >> finest;
        if (-fine_half..fine_half).contains(&bin) {
            fine[(bin + fine_half) as usize] += 1;
        }
    }
    let n = distances.len() as f64;
    // An escape at a shift: a distance of 2^(shift + 5) or more, its zigzag varint's bytes.
    let escape_bits = |shift: u8| {
        (usize::from(shift) + 6..lengths.len())
            .map(|l| lengths[l] as f64 * 8.0 * (l + 1).div_ceil(7) as f64)
            .sum::<f64>()
    };
    let (mut shift, mut counts, mut best) = (widest, [0u64; BINS + 1], f64::INFINITY);
    for candidate in (finest..=widest).rev() {
        let m = candidate - finest;
        let start = (fine_half - (half << m)) as usize;
        let mut tried = [0u64; BINS + 1];
        for (j, c) in fine[start..start + (BINS << m)].iter().enumerate() {
            tried[j >> m] += c;
        }
        tried[BINS] = distances.len() as u64 - tried[..BINS].iter().sum::<u64>();
        let bits: f64 = tried
            .iter()
            .filter(|c| **c > 0)
            .map(|c| *c as f64 * ((n / *c as f64).log2() + 8.0 / *c as f64))
            .sum::<f64>()
            + (n - tried[BINS] as f64) * f64::from(candidate)
            + escape_bits(candidate);
        if bits < best {
            (shift, counts, best) = (candidate, tried, bits);
        }
    }
    let pco_bits: f64 = lengths.iter().enumerate().map(|(l, c)| (l + 1) as f64 * *c as f64).sum::<f64>() + 2.0 * n;
    (best <= pco_bits).then_some((shift, counts))
}

/// [`bins_plan`]'s bins, written: see [`bins_plan`] and the layout above.
fn put_bins(out: &mut Vec<u8>, distances: &[i64], (shift, counts): (u8, [u64; BINS + 1])) -> Result<(), String> {
    let half = (BINS / 2) as i64;
    let symbol = |d: i64| {
        let bin = d >> shift;
        if (-half..half).contains(&bin) { (bin + half) as usize } else { BINS }
    };
    // At most 65 symbols: always a table.
    let freqs = ans::frequencies(&counts).unwrap_or_default();
    out.push(shift);
    ans::put_table(out, &freqs);
    ans::encode(out, &[&freqs], distances.iter().map(|d| (0, symbol(*d))))?;
    for d in distances.iter().filter(|d| symbol(**d) == BINS) {
        put_varint(out, zigzag(*d));
    }
    let mask = (1u64 << shift) - 1;
    let mut packed = LowBitsFirst::default();
    for d in distances.iter().filter(|d| symbol(**d) != BINS) {
        packed.put(out, *d as u64 & mask, u32::from(shift));
    }
    packed.finish(out);
    Ok(())
}

/// What [`put_bins`] wrote: `count` distances.
fn take_bins(bytes: &[u8], at: &mut usize, count: usize) -> Result<Vec<i64>, String> {
    let shift = *bytes.get(*at).ok_or("short bins")?;
    *at += 1;
    if shift > BIN_SHIFT_MAX {
        return Err(format!("bins of 2^{shift}"));
    }
    let table = ans::Table::read(bytes, at, BINS + 1)?;
    let mut decoder = ans::Decoder::new(bytes, at)?;
    let mut symbols = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        symbols.push(decoder.symbol(&table)? as u8);
    }
    decoder.finish()?;
    let half = (BINS / 2) as i64;
    let mut distances = Vec::with_capacity(symbols.len());
    for s in &symbols {
        if usize::from(*s) == BINS {
            distances.push(unzigzag(get_varint(bytes, at)?));
        } else {
            distances.push((i64::from(*s) - half) << shift);
        }
    }
    let inside = symbols.iter().filter(|s| usize::from(**s) != BINS).count();
    let packed_len = (inside * usize::from(shift)).div_ceil(8);
    let mut packed = bytes.get(*at..*at + packed_len).ok_or("short bins")?.iter();
    *at += packed_len;
    let mask = (1u64 << shift) - 1;
    let (mut word, mut have) = (0u128, 0u32);
    for (d, s) in distances.iter_mut().zip(&symbols) {
        if usize::from(*s) == BINS {
            continue;
        }
        while have < u32::from(shift) {
            word |= u128::from(*packed.next().ok_or("short bins")?) << have;
            have += 8;
        }
        *d += (word as u64 & mask) as i64;
        (word, have) = (word >> shift, have - u32::from(shift));
    }
    Ok(distances)
}

/// The mean of the last `window` integers of a column, rounded to the nearest (halves up).
struct RunningMean {
    window: usize,
    sum: i64,
    seen: usize,
    first: i64,
    /// The window's values, the oldest at `seen % window` once it is full.
    last: [i64; MEAN_WINDOW_MAX as usize],
}

impl RunningMean {
    /// A mean over `window` values (1 to [`MEAN_WINDOW_MAX`]) whose first value is foretold
    /// as `first` (stored ahead of the distances: a column's first value is no distance from
    /// anything, and a large one would widen the bins of all the rest).
    fn new(window: usize, first: i64) -> Self {
        RunningMean {
            window: window.clamp(1, usize::from(MEAN_WINDOW_MAX)),
            sum: 0,
            seen: 0,
            first,
            last: [0; MEAN_WINDOW_MAX as usize],
        }
    }

    /// The mean of the values pushed so far, of the window's last at most; `first` before any.
    fn predict(&self) -> i64 {
        let n = self.seen.min(self.window) as i64;
        match n {
            0 => self.first,
            // A full window of 16 (or any power of two): a shift, not a division (the same).
            _ if n & (n - 1) == 0 => (self.sum + n / 2) >> n.trailing_zeros(),
            _ => (self.sum + n / 2).div_euclid(n),
        }
    }

    /// Takes `x` in, and the value it pushes out of a full window out (each at most 2^53 from
    /// 0, so the sum of 64 cannot overflow).
    fn push(&mut self, x: i64) {
        let at = self.seen % self.window;
        if self.seen >= self.window {
            self.sum -= self.last[at];
        }
        self.last[at] = x;
        self.sum += x;
        self.seen += 1;
    }
}

/// An f32's bits as an i32 that orders them as the numbers they are (-0.0 just below +0.0),
/// one to one.
fn f32_ordinal(v: f32) -> i32 {
    let bits = v.to_bits();
    if bits >> 31 == 0 { bits as i32 } else { !((bits & 0x7fff_ffff) as i32) }
}

/// The f32 whose [`f32_ordinal`] `ordinal` is.
fn f32_from_ordinal(ordinal: i32) -> f32 {
    f32::from_bits(if ordinal >= 0 { ordinal as u32 } else { 0x8000_0000 | (!ordinal) as u32 })
}

/// What [`mean_residuals`] wrote.
fn take_means(bytes: &[u8], at: &mut usize, count: usize) -> Result<Vec<f64>, String> {
    let form = *bytes.get(*at + 4).ok_or("short means")?;
    *at += 5;
    let step = match form {
        MEANS_OF_F32S => 0.0,
        MEANS_OF_MULTIPLES => {
            let raw = bytes.get(*at..*at + 8).and_then(|b| b.try_into().ok()).ok_or("short means step")?;
            *at += 8;
            let step = f64::from_le_bytes(raw);
            if !(step.is_finite() && step > 0.0) {
                return Err(format!("a step of {step}"));
            }
            step
        }
        _ => return Err(format!("means of form {form}")),
    };
    let window = *bytes.get(*at).ok_or("short means")?;
    *at += 1;
    if window == 0 || window > MEAN_WINDOW_MAX {
        return Err(format!("a mean of {window} values"));
    }
    let first = unzigzag(get_varint(bytes, at)?);
    let (low, high) = if form == MEANS_OF_F32S {
        (i64::from(i32::MIN), i64::from(i32::MAX))
    } else {
        (-MEANS_MULTIPLE_MAX, MEANS_MULTIPLE_MAX)
    };
    let coder = *bytes.get(*at).ok_or("short means")?;
    *at += 1;
    let mut integers = match coder {
        DISTANCES_BY_PCO => decompress::<i64>(take_block(bytes, at)?, count)?,
        DISTANCES_IN_BINS if count <= COUNT_MAX => take_bins(bytes, at, count)?,
        _ => return Err(format!("distances coded as {coder}, {count} of them")),
    };
    let mut mean = RunningMean::new(usize::from(window), first);
    for distance in &mut integers {
        let x = distance.checked_add(mean.predict()).filter(|x| (low..=high).contains(x));
        *distance = x.ok_or("a value past its form's range")?;
        mean.push(*distance);
    }
    Ok(integers
        .into_iter()
        .map(|x| if form == MEANS_OF_F32S { f64::from(f32_from_ordinal(x as i32)) } else { x as f64 * step + 0.0 })
        .collect())
}

/// The whole numbers an f64 holds exactly lie below this.
const EXACT_INTEGER_MAX: f64 = (1u64 << 53) as f64;

/// Whether `v` is a whole number that an i64 gives back bit for bit.
fn is_whole(v: f64) -> bool {
    v.abs() < EXACT_INTEGER_MAX && (v as i64 as f64).to_bits() == v.to_bits()
}

fn put_runs(out: &mut Vec<u8>, values: &[f64], runs: usize) {
    let whole = values.iter().all(|v| is_whole(*v));
    out.extend_from_slice(&VALUE_RUNS.to_le_bytes());
    out.push(u8::from(!whole));
    put_varint(out, runs as u64);
    let mut previous = 0i64;
    let mut start = 0;
    for end in 1..=values.len() {
        if end < values.len() && values[end].to_bits() == values[start].to_bits() {
            continue;
        }
        let value = values[start];
        if whole {
            put_varint(out, zigzag((value as i64).wrapping_sub(previous)));
            previous = value as i64;
        } else {
            out.extend_from_slice(&value.to_le_bytes());
        }
        put_varint(out, (end - start) as u64);
        start = end;
    }
}

/// What [`put_values`] wrote: `count` values.
fn take_values(bytes: &[u8], at: &mut usize, count: usize) -> Result<Vec<f64>, String> {
    let flag = flag_at(bytes, *at);
    if flag.is_some() && count > COUNT_MAX {
        return Err(format!("a chunk of {count} samples"));
    }
    match flag {
        Some(CONSTANT_COLUMN) => {
            let value = bytes.get(*at + 4..*at + 12).and_then(|b| b.try_into().ok()).ok_or("short constant column")?;
            *at += 12;
            Ok(vec![f64::from_le_bytes(value); count])
        }
        Some(VALUE_RUNS) => take_runs(bytes, at, count),
        Some(VALUE_MEANS) => take_means(bytes, at, count),
        _ => decompress::<f64>(take_block(bytes, at)?, count),
    }
}

fn take_runs(bytes: &[u8], at: &mut usize, count: usize) -> Result<Vec<f64>, String> {
    let form = *bytes.get(*at + 4).ok_or("short runs")?;
    *at += 5;
    let runs = get_varint(bytes, at)?;
    if form > 1 || runs > count as u64 {
        return Err(format!("runs of form {form}, {runs} of them for {count} samples"));
    }
    // Allocated as the samples are met, not for the count a damaged header may claim.
    let mut out = Vec::with_capacity(count.min(1 << 16));
    let mut previous = 0i64;
    for _ in 0..runs {
        let value = if form == 0 {
            previous = previous.wrapping_add(unzigzag(get_varint(bytes, at)?));
            previous as f64
        } else {
            let raw = bytes.get(*at..*at + 8).and_then(|b| b.try_into().ok()).ok_or("short run")?;
            *at += 8;
            f64::from_le_bytes(raw)
        };
        let length = usize::try_from(get_varint(bytes, at)?).unwrap_or(usize::MAX);
        if length == 0 || length > count - out.len() {
            return Err("runs longer than the chunk".into());
        }
        out.extend(std::iter::repeat_n(value, length));
    }
    if out.len() != count {
        return Err(format!("runs of {} values for {count} samples", out.len()));
    }
    Ok(out)
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

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
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

    /// Noise for the tests' sensors: the sum of four uniform numbers in -0.5..0.5, near enough
    /// a gaussian of 0.58, from a fixed seed.
    fn noise() -> impl FnMut() -> f64 {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        move || {
            (0..4)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    (rng >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                })
                .sum::<f64>()
        }
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

    /// A noisy sensor (white noise around a slowly moving value) is stored as each value's
    /// distance from the mean of the sixteen before it, smaller than as steps (which carry the
    /// noise twice): read as an f32, as a scaled register, as raw counts. A ramp, a counter and
    /// a random walk keep their steps. Every form comes back bit for bit, signs, zeros,
    /// infinities and the largest multiples included.
    #[test]
    fn a_noisy_sensor_is_stored_as_its_distance_from_a_running_mean() {
        let mut noise = noise();
        let n = 8192;
        let drift = |i: usize| 60.0 + 5.0 * (i as f64 / 2000.0).sin();
        let f32_sensor: Vec<f64> = (0..n).map(|i| f64::from((drift(i) + 0.14 * noise()) as f32)).collect();
        let tenths: Vec<f64> = (0..n).map(|i| ((drift(i) + 0.14 * noise()) * 10.0).round() * 0.1).collect();
        let counts: Vec<f64> = (0..n).map(|i| (drift(i) * 100.0 + 14.0 * noise()).round()).collect();
        let ramp: Vec<f64> =
            (0..n).map(|i| f64::from((1500.0 * (1.0 - (-(i as f64) / 3000.0).exp())) as f32)).collect();
        let counter: Vec<f64> = (0..n).map(|i| (i / 3 + i / 7) as f64).collect();
        let mut walk = vec![40.0f64];
        for _ in 1..n {
            let last = walk[walk.len() - 1];
            walk.push(f64::from((last + 0.3 * noise()) as f32));
        }
        let stored = |values: &[f64]| {
            let mut c = Columns::default();
            for (i, v) in values.iter().enumerate() {
                c.push(1_700_000_000_000 + i as i64 * 1000, *v, 0);
            }
            let bytes = encode(Codec::Pco, 3, &c, None).unwrap();
            let back = decode(&bytes, |_| Err("no".into())).unwrap();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back.values), bits(values));
            // The values' form: the flag after the header and the times.
            let mut at = HEADER_BYTES;
            take_times(&bytes, &mut at, values.len()).unwrap();
            (bytes.len(), flag_at(&bytes, at) == Some(VALUE_MEANS))
        };
        let as_steps = |values: &[f64]| {
            let config = pco_config(PCO_LEVEL_VALUES).with_mode_spec(value_mode(values, None));
            pco::standalone::simple_compress(values, &config).unwrap().len()
        };
        for (name, values, gain) in
            [("f32 sensor", &f32_sensor, 0.02), ("tenths", &tenths, 0.12), ("counts", &counts, 0.06)]
        {
            let (bytes, means) = stored(values);
            let steps = as_steps(values);
            assert!(means, "{name}: stored as means");
            assert!(
                (bytes as f64) < steps as f64 * (1.0 - gain),
                "{name}: {bytes} bytes as means, {steps} as steps (a gain of {gain} expected)"
            );
        }
        for (name, values) in [("ramp", &ramp), ("counter", &counter), ("random walk", &walk)] {
            assert!(!stored(values).1, "{name}: kept as steps");
        }
        // The edges, each form: through zero and both zeros as f32s, infinities among them;
        // the largest multiples; hundredths below zero.
        // (Noise around zero spans many exponents, every f32's step: stored as steps.)
        // (A value far off costs its distance for the window after it: a few among thousands.)
        let mut edges: Vec<f64> = (0..1500).map(|_| f64::from((5.0 + 0.3 * noise()) as f32)).collect();
        edges.extend([0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::from(f32::MAX), f64::from(f32::MIN), -5.0]);
        edges.extend((0..1500).map(|_| f64::from((5.0 + 0.3 * noise()) as f32)));
        assert!(matches!(value_mode(&edges, None), pco::ModeSpec::TryFloatQuant(29)));
        let large: Vec<f64> = (0..3000).map(|_| 9_007_199_254_740_000.0 + (noise() * 300.0).round()).collect();
        let negative: Vec<f64> = (0..3000).map(|_| to_resolution(-5.0 + 0.3 * noise(), 0.01)).collect();
        for values in [&edges, &large, &negative] {
            assert!(stored(values).1, "{:?}", &values[..4]);
        }
        for v in [0.0f32, -0.0, 1.0, -1.0, f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE] {
            assert_eq!(f32_from_ordinal(f32_ordinal(v)).to_bits(), v.to_bits());
        }
        assert!(f32_ordinal(-0.0) < f32_ordinal(0.0) && f32_ordinal(-1.0) < f32_ordinal(-0.5));
    }

    /// Where the forms of our own could cost more than pco's (a review's findings): a column at
    /// a large magnitude (its first value is no distance from anything), noise with rare
    /// glitches, short chunks, times off a grid by many offsets: none comes out larger than
    /// pco's own column, in total, by more than a hundredth. A negative resolution hint is
    /// no step: the chunk reads back.
    #[test]
    fn our_forms_are_not_larger_than_pco() {
        let mut noise = noise();
        let chunk = |values: &[f64], times: &[i64]| {
            let mut c = Columns::default();
            for (v, t) in values.iter().zip(times) {
                c.push(*t, *v, 0);
            }
            let bytes = encode(Codec::Pco, 3, &c, None).unwrap();
            assert_eq!(decode(&bytes, |_| Err("no".into())).unwrap(), c);
            bytes
        };
        let paced = |n: usize| (0..n as i64).map(|i| 1_700_000_000_000 + i * 1000).collect::<Vec<_>>();
        let pco_values = |values: &[f64]| {
            let config = pco_config(PCO_LEVEL_VALUES).with_mode_spec(value_mode(values, None));
            pco::standalone::simple_compress(values, &config).unwrap().len()
        };
        // (name, values of one chunk): ours against pco's, over `chunks` chunks.
        type Case = (String, usize, Box<dyn FnMut(usize) -> Vec<f64>>);
        let mut cases: Vec<Case> = Vec::new();
        let mut noise_of = move || noise();
        let mut series = Vec::new();
        for _ in 0..200_000 {
            series.push(noise_of());
        }
        let series = std::sync::Arc::new(series);
        for n in [40usize, 75, 150, 1024, 2048, 8192] {
            let chunks = (16_384 / n).max(2);
            let s = series.clone();
            cases.push((
                format!("f32 at 101325, {n}"),
                chunks,
                Box::new(move |k| (0..n).map(|i| f64::from((101_325.0 + 8.0 * s[k * n + i]) as f32)).collect()),
            ));
            let s = series.clone();
            cases.push((
                format!("f32 at 50, {n}"),
                chunks,
                Box::new(move |k| (0..n).map(|i| f64::from((50.0 + 0.14 * s[k * n + i]) as f32)).collect()),
            ));
            let s = series.clone();
            cases.push((
                format!("counts at 8e6, {n}"),
                chunks,
                Box::new(move |k| (0..n).map(|i| (8e6 + 50.0 * s[k * n + i]).round()).collect()),
            ));
            let s = series.clone();
            cases.push((
                format!("counts at 9e15, {n}"),
                chunks,
                Box::new(move |k| (0..n).map(|i| (9e15 + 80.0 * s[k * n + i]).round()).collect()),
            ));
            let s = series.clone();
            cases.push((
                format!("tenths, {n}"),
                chunks,
                Box::new(move |k| (0..n).map(|i| ((600.0 + 3.0 * s[k * n + i]).round()) * 0.1).collect()),
            ));
            // A machine that runs and idles (a second review's finding: half the distances 0,
            // the bins sized by them, the running half escaped).
            for (idle, every) in [(0.0, 2000), (0.0, 1000), (0.2, 400)] {
                let s = series.clone();
                cases.push((
                    format!("running 1500 and idle {idle} every {every}, {n}"),
                    chunks,
                    Box::new(move |k| {
                        (0..n)
                            .map(|i| {
                                let j = k * n + i;
                                let level =
                                    if (j / every) % 2 == 0 { 1500.0 + 15.0 * s[j] } else { idle * (1.0 + 0.4 * s[j]) };
                                f64::from(level as f32)
                            })
                            .collect()
                    }),
                ));
            }
            let s = series.clone();
            cases.push((
                format!("f32 with a glitch, {n}"),
                chunks,
                Box::new(move |k| {
                    (0..n)
                        .map(|i| {
                            let glitch = if (k * n + i) % 700 == 350 { -1e6 } else { 0.0 };
                            f64::from((50.0 + 0.14 * s[k * n + i] + glitch) as f32)
                        })
                        .collect()
                }),
            ));
        }
        for (name, chunks, mut make) in cases {
            let (mut ours, mut theirs) = (0usize, 0usize);
            for k in 0..chunks {
                let values = make(k);
                let times = paced(values.len());
                let empty_values = vec![1.0; values.len()];
                ours += chunk(&values, &times).len() - chunk(&empty_values, &times).len() + 12;
                theirs += pco_values(&values) + 4;
            }
            assert!(ours as f64 <= theirs as f64 * 1.01, "{name}: {ours} bytes ours, {theirs} pco's");
        }
        // Times off a grid by up to 7 ms at random (more than 16 steps): against pco's.
        let mut x = 7u64;
        for n in [40usize, 75, 150, 1000] {
            let (mut ours, mut theirs) = (0usize, 0usize);
            for _ in 0..(16_384 / n) {
                let times: Vec<i64> = (0..n as i64)
                    .map(|i| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        1_700_000_000_000 + i * 1000 + (x % 15) as i64 - 7
                    })
                    .collect();
                let values = vec![1.0; n];
                let bytes = chunk(&values, &times);
                let mut at = HEADER_BYTES;
                take_times(&bytes, &mut at, n).unwrap();
                ours += at - HEADER_BYTES;
                theirs += pco::standalone::simple_compress(&times, &pco_config(PCO_LEVEL_TIMES)).unwrap().len() + 4;
            }
            assert!(ours as f64 <= theirs as f64 * 1.01, "times ±7 ms, {n}: {ours} bytes ours, {theirs} pco's");
        }
        // A negative resolution hint (the historian takes only positive ones; an outside
        // caller might not): the chunk reads back.
        let tenths: Vec<f64> = (0..300).map(|i| ((600.0 + 3.0 * series[i]).round()) * 0.1).collect();
        let mut c = Columns::default();
        for (i, v) in tenths.iter().enumerate() {
            c.push(1_700_000_000_000 + i as i64 * 1000, *v, 0);
        }
        for hint in [-0.1, f64::NAN, f64::INFINITY, 0.0] {
            let mut w = BlockWriter::default();
            w.push(Codec::Pco, 3, &c, None, Some(hint)).unwrap();
            let (bytes, _) = w.finish().unwrap();
            let block = Block::open(bytes.as_slice()).unwrap();
            assert_eq!(block.decode(&block.section(0).unwrap()).unwrap(), c, "a hint of {hint}");
        }
    }

    /// Each kind of values pco is told how to split (whole numbers, numbers an f32 holds, the
    /// rest) comes back bit for bit, the edges of each kind included.
    #[test]
    fn values_of_every_kind_round_trip_bit_for_bit() {
        let whole = vec![0.0, -0.0, 1.0, 65_535.0, -32_768.0, 9_007_199_254_740_991.0, 3.0, 3.0];
        let single =
            vec![0.5, -0.0, f64::from(f32::MIN_POSITIVE), f64::from(f32::MAX), f64::INFINITY, 1.25, 0.1f32.into()];
        let other = vec![0.1, f64::NAN, 9_007_199_254_740_992.0, 1e300, -f64::MIN_POSITIVE, 7.0, f64::NEG_INFINITY];
        assert!(matches!(value_mode(&whole, None), pco::ModeSpec::TryFloatMult(1.0)));
        assert!(matches!(value_mode(&single, None), pco::ModeSpec::TryFloatQuant(29)));
        assert!(matches!(value_mode(&other, None), pco::ModeSpec::Auto));
        for values in [whole, single, other] {
            let mut c = Columns::default();
            for (i, v) in values.iter().cycle().take(300).enumerate() {
                c.push(1_700_000_000_000 + i as i64 * 1000, *v, 0);
            }
            let back = decode(&encode(Codec::Pco, 3, &c, None).unwrap(), |_| Err("no".into())).unwrap();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back.values), bits(&c.values), "{values:?}");
            assert_eq!(back.times, c.times);
        }
    }

    /// Values rounded to a tag's resolution are split by pco as multiples of it, and come back
    /// bit for bit; a column with a value off that grid (stored before the resolution was
    /// stated) is not, and comes back bit for bit too. Rounding is idempotent, and leaves what
    /// it cannot take (not finite, or too large) as it is.
    #[test]
    fn values_rounded_to_a_resolution_are_stored_as_its_multiples() {
        let rounded: Vec<f64> =
            (0..300).map(|i| to_resolution(40.0 + (i as f64 * 0.7).sin() * 0.3 + 0.001 * i as f64, 0.01)).collect();
        assert!(rounded.iter().all(|v| to_resolution(*v, 0.01).to_bits() == v.to_bits()));
        assert!(matches!(value_mode(&rounded, Some(0.01)), pco::ModeSpec::TryFloatMult(r) if r == 0.01));
        // Without the resolution stated, its step is found from the values.
        assert!(matches!(value_mode(&rounded, None), pco::ModeSpec::TryFloatMult(r) if r == 0.01));
        let mut off = rounded.clone();
        off[150] += 0.001;
        // (A step is still found from the values: the off one is in thousandths.)
        assert!(!matches!(value_mode(&off, Some(0.01)), pco::ModeSpec::TryFloatMult(r) if r == 0.01));
        let read: Vec<f64> = (0..300).map(|i| 40.0 + (i as f64 * 0.7).sin() * 0.3 + 0.001 * i as f64).collect();
        let mut sizes = Vec::new();
        for values in [&rounded, &off, &read] {
            let mut c = Columns::default();
            for (i, v) in values.iter().enumerate() {
                c.push(1_700_000_000_000 + i as i64 * 1000, *v, 0);
            }
            let mut w = BlockWriter::default();
            w.push(Codec::Pco, 3, &c, None, Some(0.01)).unwrap();
            let (bytes, _) = w.finish().unwrap();
            sizes.push(bytes.len());
            let block = Block::open(bytes.as_slice()).unwrap();
            let back = block.decode(&block.section(0).unwrap()).unwrap();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back.values), bits(&c.values));
        }
        assert!(sizes[0] * 2 < sizes[2], "rounded {} bytes, as read {}", sizes[0], sizes[2]);
        assert_eq!(to_resolution(f64::INFINITY, 0.01), f64::INFINITY);
        assert!(to_resolution(f64::NAN, 0.01).is_nan());
        assert_eq!(to_resolution(f64::MAX, 0.01), f64::MAX);
        assert_eq!(to_resolution(f64::MAX, 1e308), f64::MAX, "a multiple past the largest float");
        assert_eq!(to_resolution(-0.004, 0.01).to_bits(), 0.0f64.to_bits(), "-0 would print as -0");
        assert_eq!(to_resolution(-0.0, 0.01).to_bits(), 0.0f64.to_bits());
        assert_eq!(to_resolution(12.345_678, 0.5), 12.5);
        assert_eq!(to_resolution(1.37, 0.1).to_bits(), (14.0 * 0.1f64).to_bits());
        // Too far from 0 for the resolution, or a resolution too fine for any value: as read,
        // and not taken for multiples.
        for (v, r) in [(42_057_524_553_713.16, 0.01), (1e300, 1e-300), (40.05, 1e-310)] {
            assert_eq!(to_resolution(v, r).to_bits(), v.to_bits(), "{v} at {r}");
            let mode = value_mode(&[v, v + 1.0], Some(r));
            assert!(!matches!(mode, pco::ModeSpec::TryFloatMult(m) if m == r), "{v} at {r}: {mode:?}");
        }
        // Idempotent up to the largest multiple rounded to, and whole numbers split by a
        // resolution above 1 as its multiples.
        let mut rng = 7u64;
        for _ in 0..100_000 {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let r = [0.01, 0.1, 0.001, 0.05, 0.3, 2.5, 1e-6][(rng >> 60) as usize % 7];
            let v = ((rng >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 2.0 * r * MULTIPLES_MAX;
            let once = to_resolution(v, r);
            assert_eq!(to_resolution(once, r).to_bits(), once.to_bits(), "{v} at {r}");
        }
        assert!(matches!(value_mode(&[5.0, 10.0, 25.0], Some(5.0)), pco::ModeSpec::TryFloatMult(r) if r == 5.0));
        assert!(matches!(value_mode(&[5.0, 10.0, 25.0], Some(0.01)), pco::ModeSpec::TryFloatMult(r) if r == 1.0));
    }

    /// A scaled register (a PLC's whole number times 0.5, 0.1, 0.05, 0.01, ... as the Modbus
    /// driver scales it) is split by pco as multiples of its step
    /// without a stated resolution: the step is found from the values, and in a short chunk
    /// (75 samples, a 1 ms poll's) that takes fewer bytes than pco's own search (a sixth fewer
    /// for tenths). Values off every step (a float sensor, a scale with an offset, a decimal
    /// divided or parsed) are not taken for multiples, and everything reads back bit for bit.
    #[test]
    fn scaled_registers_are_stored_as_multiples_of_their_step() {
        let mut noise = noise();
        let n = 8192;
        // A temperature drifting from 60 to 75 °C, read with noise of some 0.08 °C, as tenths.
        let temperature: Vec<f64> = (0..n).map(|i| 60.0 + 15.0 * i as f64 / n as f64 + 0.14 * noise()).collect();
        let raw: Vec<i64> = temperature.iter().map(|t| (t * 10.0).round() as i64).collect();
        // Read at a finer resolution: in hundredths, thousandths, ten-thousandths.
        let at_step = |step: f64| -> Vec<f64> { temperature.iter().map(|t| (t / step).round() * step).collect() };
        let scaled = |f: &dyn Fn(i64) -> f64| raw.iter().map(|r| f(*r)).collect::<Vec<f64>>();
        let bytes_of = |values: &[f64], mode: Option<pco::ModeSpec>| -> usize {
            values
                .chunks(75)
                .map(|chunk| {
                    let mode = mode.clone().unwrap_or_else(|| value_mode(chunk, None));
                    let config = pco_config(PCO_LEVEL_VALUES).with_mode_spec(mode);
                    pco::standalone::simple_compress(chunk, &config).unwrap().len()
                })
                .sum()
        };
        for (step, values) in [
            (0.1, scaled(&|r| r as f64 * 0.1)),
            (0.5, scaled(&|r| r as f64 * 0.5)),
            (0.25, scaled(&|r| r as f64 * 0.25)),
            (0.2, scaled(&|r| (r / 2) as f64 * 0.2)),
            (0.05, scaled(&|r| r as f64 * 0.05)),
            (0.01, at_step(0.01)),
            (0.001, at_step(0.001)),
            (0.0001, at_step(0.0001)),
            // Steps not on the list, found as a listed one times the steps' common factor.
            (0.3, scaled(&|r| r as f64 * 0.3)),
            (0.075, scaled(&|r| r as f64 * 0.075)),
            (0.0625, scaled(&|r| r as f64 / 16.0)),
        ] {
            assert!(matches!(value_mode(&values, None), pco::ModeSpec::TryFloatMult(r) if r == step), "{step}");
            let mut c = Columns::default();
            for (i, v) in values.iter().enumerate() {
                c.push(1_700_000_000_000 + i as i64 * 1000, *v, 0);
            }
            let bytes = encode(Codec::Pco, 3, &c, Some(1)).unwrap();
            let back = decode(&bytes, |_| Ok(c.times.clone())).unwrap();
            assert!(back.values.iter().zip(&values).all(|(a, b)| a.to_bits() == b.to_bits()), "{step}");
            let (ours, search) = (bytes_of(&values, None), bytes_of(&values, Some(pco::ModeSpec::Auto)));
            // Fewer bytes always; a sixth fewer for the driver's tenths.
            assert!(ours < search, "{step}: {ours} bytes as multiples, {search} as pco searched");
            if step == 0.1 {
                assert!(ours * 6 < search * 5, "{ours} bytes as multiples of tenths, {search} as pco searched");
            }
        }
        // A decimal parsed from text or divided is not taken for multiples: its values an ulp
        // off them, by turns, cost pco a field each (changing now and then, up to twice the
        // bytes of its own search). Nor is a register that moves on few of its samples.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut tenths = 600i64;
        let slow: Vec<i64> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                tenths += match state >> 59 {
                    0 => -1,
                    1 => 1,
                    _ => 0,
                };
                tenths
            })
            .collect();
        for register in [&slow, &raw] {
            for values in [
                register.iter().map(|r| *r as f64 / 10.0).collect::<Vec<_>>(),
                register.iter().map(|r| format!("{}.{}", r / 10, r % 10).parse().unwrap()).collect(),
            ] {
                assert!(matches!(value_mode(&values, None), pco::ModeSpec::Auto));
                for len in [75, 4096] {
                    let size = |auto: bool| -> usize {
                        values
                            .chunks(len)
                            .map(|chunk| {
                                let mode = if auto { pco::ModeSpec::Auto } else { value_mode(chunk, None) };
                                let config = pco_config(PCO_LEVEL_VALUES).with_mode_spec(mode);
                                pco::standalone::simple_compress(chunk, &config).unwrap().len()
                            })
                            .sum()
                    };
                    // Within a percent (a short chunk that moves on a quarter of its samples or
                    // more, all of them exact multiples, can still come out a few bytes larger).
                    let (ours, search) = (size(false), size(true));
                    assert!(ours * 100 <= search * 101, "{len}: {ours} bytes, {search} as pco searched");
                }
            }
        }
        // A chunk that holds still first (a machine idle) fits every step there: its step is
        // found where the values start to move.
        let plateau: Vec<f64> = std::iter::repeat_n(60.0, 40).chain(raw.iter().map(|r| *r as f64 * 0.1)).collect();
        for len in [75, 8192] {
            let mode = value_mode(&plateau[..len], None);
            assert!(matches!(mode, pco::ModeSpec::TryFloatMult(r) if r == 0.1), "{len}: {mode:?}");
        }
        // Not multiples of a step: a float sensor; tenths with an offset, many an ulp or more
        // off the grid.
        let sensor = scaled(&|r| f64::from((r as f32) * 0.1 + 0.013));
        assert!(matches!(value_mode(&sensor, None), pco::ModeSpec::TryFloatQuant(29)));
        let offset = scaled(&|r| r as f64 * 0.1 - 273.15);
        assert!(matches!(value_mode(&offset, None), pco::ModeSpec::Auto));
        // Hundredths three off the tenths: their steps are all multiples of 10, which as
        // multiples of 0.01 would waste three bits a sample; 0.1 does not fit them.
        let shifted = scaled(&|r| (r * 10 + 3) as f64 * 0.01);
        assert!(matches!(value_mode(&shifted, None), pco::ModeSpec::Auto));
        // Off every step late in the chunk; in hundredths late (found on a second pass).
        let mut late = scaled(&|r| r as f64 * 0.1);
        late[5000] += 0.000_03;
        assert!(matches!(value_mode(&late, None), pco::ModeSpec::Auto));
        // (Hundredths as the driver scales them: tenths times 0.01 are an ulp off some of
        // `r * 0.1`, and a step that only fits to within an ulp is not taken.)
        let mut hundredths = scaled(&|r| (r * 10) as f64 * 0.01);
        hundredths[5000] = 6943.0 * 0.01;
        assert!(matches!(value_mode(&hundredths, None), pco::ModeSpec::TryFloatMult(r) if r == 0.01));
        // At most three passes: halves, quarters, twentieths are three; hundredths a fourth.
        let passes = [60.0, 60.5, 60.25, 60.2, 60.0];
        assert!(matches!(value_mode(&passes, None), pco::ModeSpec::TryFloatMult(r) if r == 0.05));
        let passes = [60.0, 60.5, 60.25, 60.2, 60.01, 60.0];
        assert!(matches!(value_mode(&passes, None), pco::ModeSpec::Auto));
        for values in [offset, shifted, late, hundredths] {
            let mut c = Columns::default();
            for (i, v) in values.iter().enumerate() {
                c.push(i as i64, *v, 0);
            }
            let back = decode(&encode(Codec::Pco, 3, &c, Some(1)).unwrap(), |_| Ok(c.times.clone())).unwrap();
            assert!(back.values.iter().zip(&values).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    /// A column of one value repeated is stored as that value: 8 bytes, not pco's 55 or more;
    /// it reads back bit for bit (a NaN, a -0.0), and a cut one is an error.
    #[test]
    fn a_value_that_holds_still_is_stored_once() {
        let mut sizes = Vec::new();
        for value in [1234.0, f64::NAN, -0.0, 0.0] {
            for n in [1usize, 75, 8192] {
                let mut c = Columns::default();
                (0..n).for_each(|i| c.push(1_700_000_000_000 + i as i64 * 1000 + (i as i64 * 7 % 3), value, 0));
                let bytes = encode(Codec::Pco, 3, &c, Some(1)).unwrap();
                let back = decode(&bytes, |_| Ok(c.times.clone())).unwrap();
                assert!(back.values.iter().all(|v| v.to_bits() == value.to_bits()), "{value} x {n}");
                assert_eq!(back.values.len(), n);
                sizes.push(bytes.len());
                for cut in 1..12 {
                    assert!(decode(&bytes[..bytes.len() - cut], |_| Ok(c.times.clone())).is_err(), "cut {cut}");
                }
            }
        }
        // Header 25, reference 8, flag 4, value 8, one quality run 3 to 4.
        assert!(sizes.iter().all(|b| *b <= 49), "{sizes:?}");
        // One value that differs is a pco column again.
        let mut c = Columns::default();
        (0..75).for_each(|i| c.push(i, if i == 40 { 2.0 } else { 1.0 }, 0));
        let bytes = encode(Codec::Pco, 3, &c, Some(1)).unwrap();
        assert!(bytes.len() > 49);
        assert_eq!(decode(&bytes, |_| Ok(c.times.clone())).unwrap().values, c.values);
    }

    /// Times of a paced poll, whose steps take a few values (999 and 1,004 ms here), are stored
    /// as those steps and a few bits a sample: pco spent 3.2 bits a sample and some 35 ns a time
    /// on these 8,192 (though 0.8 bits on the first 4,096: its bins came out differently). Up to
    /// 16 steps are kept so; more go to pco. A clock set back and the extremes of `i64` read back
    /// exactly either way.
    #[test]
    fn paced_poll_times_take_a_few_bits_a_sample() {
        let poll = |steps: &[i64], n: usize| {
            let mut c = Columns::default();
            let mut t = 1_700_000_000_000i64;
            for i in 0..n {
                c.push(t, 1.0 + (i / 100) as f64, 0);
                t = t.wrapping_add(steps[i % steps.len()]);
            }
            c
        };
        let two = poll(&[999, 1004, 999, 999, 999], 8192);
        let sixteen: Vec<i64> = (0..16).map(|k| 990 + k).collect();
        let wild = [1000, -5_000, i64::MAX, i64::MIN, 3, 0, 0, 1000];
        for (c, bits) in [(two, 1), (poll(&sixteen, 8192), 4), (poll(&[1000], 8192), 0), (poll(&wild, 8192), 3)] {
            let bytes = encode(Codec::Pco, 1, &c, None).unwrap();
            let alone = bytes.len() - encode(Codec::Pco, 1, &c, Some(0)).unwrap().len() + 8;
            assert!(alone <= c.len() * bits / 8 + 4 + 8 + 1 + 16 * 10 + 1, "{bits} bits: {alone} bytes of times");
            assert_eq!(decode(&bytes, |_| Err("no".into())).unwrap(), c, "{bits} bits");
            for cut in [1, 2, 8, alone / 2] {
                let mut short = bytes.clone();
                short.truncate(HEADER_BYTES + alone - cut);
                assert!(decode(&short, |_| Err("no".into())).is_err(), "{bits} bits, cut {cut}");
            }
        }
        // Seventeen steps in turn: off a grid by few offsets, so as a grid.
        let seventeen: Vec<i64> = (0..17).map(|k| 990 + k).collect();
        let c = poll(&seventeen, 1000);
        let bytes = encode(Codec::Pco, 1, &c, None).unwrap();
        assert_eq!(flag_at(&bytes, HEADER_BYTES), Some(TIME_GRID_ANS));
        assert_eq!(decode(&bytes, |_| Err("no".into())).unwrap(), c);
        // Twenty-one steps at random: a random walk off any grid, so pco, as before.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<i64> = (0..1000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                990 + (rng % 21) as i64
            })
            .collect();
        let c = poll(&random, 1000);
        let bytes = encode(Codec::Pco, 1, &c, None).unwrap();
        assert_eq!(u32::from_le_bytes(bytes[HEADER_BYTES..HEADER_BYTES + 4].try_into().unwrap()) & FLAGGED, 0);
        assert_eq!(decode(&bytes, |_| Err("no".into())).unwrap(), c);
        // One sample, and two.
        for n in [1, 2] {
            let c = poll(&[7], n);
            assert_eq!(decode(&encode(Codec::Pco, 1, &c, None).unwrap(), |_| Err("no".into())).unwrap(), c);
        }
    }

    /// Issue 15: the steps of a poll whose answers come a few milliseconds early or late at
    /// random (1 s, ±2 ms: nine steps, the middle ones the most common) are stored as a prefix
    /// code near their entropy (3.0 bits a time, where indexes take 4). They read back
    /// exactly; a cut stream or a damaged code table is an error, not a wrong time.
    #[test]
    fn random_poll_jitter_is_stored_as_a_prefix_code() {
        NO_ANS.with(|no| no.set(true));
        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut c = Columns::default();
        for i in 0..8192i64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            c.push(1_700_000_000_000 + i * 1000 + (rng % 5) as i64 - 2, i as f64, 0);
        }
        let bytes = encode(Codec::Pco, 1, &c, None).unwrap();
        let flag = |b: &[u8]| u32::from_le_bytes(b[HEADER_BYTES..HEADER_BYTES + 4].try_into().unwrap());
        assert_eq!(flag(&bytes), TIME_STEPS_CODED);
        let alone = bytes.len() - encode(Codec::Pco, 1, &c, Some(0)).unwrap().len() + 8;
        // The steps' entropy: 1000 plus the difference of two uniform draws of five.
        let entropy: f64 =
            [1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0].iter().map(|n| -(n / 25.0) * (n / 25.0f64).log2()).sum();
        let bits = (alone - 13 - 9 * 3) as f64 * 8.0 / 8191.0;
        assert!(bits < entropy + 0.1 && bits < 3.1, "{bits:.3} bits a time, entropy {entropy:.3}");
        assert_eq!(decode(&bytes, |_| Err("no".into())).unwrap(), c);
        for cut in [1, 2, 8, alone / 2] {
            let mut short = bytes.clone();
            short.truncate(HEADER_BYTES + alone - cut);
            assert!(decode(&short, |_| Err("no".into())).is_err(), "cut {cut}");
        }
        // Where the code lengths are: after each step's varint.
        let (mut at, k) = (HEADER_BYTES + 13, usize::from(bytes[HEADER_BYTES + 12]));
        let mut length_at = Vec::new();
        for _ in 0..k {
            while bytes[at] & 0x80 != 0 {
                at += 1;
            }
            length_at.push(at + 1);
            at += 2;
        }
        assert_eq!(k, 9);
        for (which, length) in [(0, 0), (3, 16), (8, 255)] {
            let mut bad = bytes.clone();
            bad[length_at[which]] = length;
            assert!(decode(&bad, |_| Err("no".into())).is_err(), "a code of {length} bits");
        }
        // Every step a 1-bit code: no prefix code has nine of them.
        let mut bad = bytes.clone();
        length_at.iter().for_each(|&i| bad[i] = 1);
        assert!(decode(&bad, |_| Err("no".into())).is_err());
    }

    /// Every count of steps the coded form may meet: 2, 3 and 16 steps, counts so skewed that
    /// the rarest take 15-bit codes, chunk lengths whose codes end inside a byte; each read back
    /// exactly, with the values after the times (where the times' bytes end). And the times'
    /// reader alone: a stream cut short, and a code the table does not have (an incomplete code:
    /// a damaged length), are errors.
    /// A poll's time steps as an ANS code: fractions of a bit where a prefix code takes whole
    /// ones. Steps of 1004 ms one time in five, else 999 (as the bench's poll) in 0.72 bits a
    /// time, their entropy, where a prefix code takes 1; a random jitter in its entropy too. Read back, and
    /// an error when cut short.
    #[test]
    fn time_steps_cost_their_entropy_as_an_ans_code() {
        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let five = |n: f64| -(n / 5.0) * (n / 5.0f64).log2();
        let random_entropy: f64 =
            [1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0].iter().map(|n| -(n / 25.0) * (n / 25.0f64).log2()).sum();
        // Off a grid, a random jitter is one draw of five (its steps carry two).
        assert!(random_entropy > 2.99);
        let cases = [
            ("late one in five", true, five(1.0) + five(4.0), TIME_STEPS_ANS),
            ("random", false, 5f64.log2(), TIME_GRID_ANS),
        ];
        for (name, late, entropy, form) in cases {
            let (mut c, mut t) = (Columns::default(), 1_700_000_000_000i64);
            for i in 0..8192i64 {
                if late {
                    // A step of 1004 ms one time in five, else 999.
                    t += if next() % 5 == 0 { 1004 } else { 999 };
                    c.push(t, 1.0, 0);
                } else {
                    c.push(1_700_000_000_000 + i * 1000 + (next() % 5) as i64 - 2, 1.0, 0);
                }
            }
            let bytes = encode(Codec::Pco, 1, &c, None).unwrap();
            assert_eq!(flag_at(&bytes, HEADER_BYTES), Some(form), "{name}");
            let mut at = HEADER_BYTES;
            assert_eq!(take_times(&bytes, &mut at, c.len()).unwrap(), c.times, "{name}");
            let times_end = at;
            let bits = (times_end - HEADER_BYTES) as f64 * 8.0 / 8191.0;
            assert!(bits < entropy + 0.08, "{name}: {bits:.3} bits a time with the header, entropy {entropy:.3}");
            for cut in [1, 4, 20, (times_end - HEADER_BYTES) / 2] {
                assert!(
                    take_times(&bytes[..times_end - cut], &mut HEADER_BYTES.clone(), c.len()).is_err(),
                    "{name}: cut {cut}"
                );
            }
            // A header that claims a step count out of range.
            let mut bad = bytes.clone();
            for k in [0u8, 1, 17] {
                bad[HEADER_BYTES + 12] = k;
                assert!(take_times(&bad, &mut HEADER_BYTES.clone(), c.len()).is_err(), "{name}: {k} steps");
            }
            assert_eq!(decode(&bytes, |_| Err("no".into())).unwrap(), c, "{name}");
        }
        // The store bench's poll: 1004 ms, then 999 four times, over and over. After a long
        // step always a short one, after a short one a long one time in four: of order 1, in
        // 0.8 x H(1/4) = 0.65 bits a time.
        let mut c = Columns::default();
        let mut t = 1_700_000_000_000i64;
        for i in 0..8192 {
            c.push(t, 1.0, 0);
            t += [1004, 999, 999, 999, 999][i % 5];
        }
        let bytes = encode(Codec::Pco, 1, &c, None).unwrap();
        assert_eq!(flag_at(&bytes, HEADER_BYTES), Some(TIME_STEPS_ANS));
        // After the flag, the first time, k = 2 and the two steps' varints, two bytes each.
        let order = HEADER_BYTES + 13 + 2 + 2;
        assert_eq!(bytes[order], 1, "order 1");
        let mut at = HEADER_BYTES;
        assert_eq!(take_times(&bytes, &mut at, c.len()).unwrap(), c.times);
        let bits = (at - HEADER_BYTES) as f64 * 8.0 / 8191.0;
        assert!(bits < 0.8 * 0.8113 + 0.04, "{bits:.3} bits a time");
        let mut bad = bytes.clone();
        bad[order] = 2;
        assert!(take_times(&bad, &mut HEADER_BYTES.clone(), c.len()).unwrap_err().contains("order 2"));
        // A grid's header out of range, or cut.
        let mut c = Columns::default();
        let mut x = 5u64;
        for i in 0..3000i64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            c.push(1_700_000_000_000 + i * 1000 + (x >> 61) as i64, 1.0, 0);
        }
        let bytes = encode(Codec::Pco, 1, &c, None).unwrap();
        assert_eq!(flag_at(&bytes, HEADER_BYTES), Some(TIME_GRID_ANS));
        let k_at = HEADER_BYTES + 12 + 2;
        assert_eq!(bytes[k_at], 8, "eight offsets");
        for k in [0u8, 1, 17] {
            let mut bad = bytes.clone();
            bad[k_at] = k;
            assert!(take_times(&bad, &mut HEADER_BYTES.clone(), c.len()).is_err(), "{k} offsets");
        }
        let mut at = HEADER_BYTES;
        assert_eq!(take_times(&bytes, &mut at, c.len()).unwrap(), c.times);
        for cut in [1, 4, 30, (at - HEADER_BYTES) / 2] {
            assert!(take_times(&bytes[..at - cut], &mut HEADER_BYTES.clone(), c.len()).is_err(), "cut {cut}");
        }
        assert!(take_times(&bytes, &mut HEADER_BYTES.clone(), 2).is_err(), "a grid of two times");
    }

    #[test]
    fn coded_time_steps_round_trip_at_every_size() {
        NO_ANS.with(|no| no.set(true));
        // Fibonacci counts: the code lengths run from 1 to 15.
        let mut fibonacci = vec![1u64, 1];
        while fibonacci.len() < 16 {
            fibonacci.push(fibonacci[fibonacci.len() - 1] + fibonacci[fibonacci.len() - 2]);
        }
        assert_eq!(code_lengths(&fibonacci).iter().max(), Some(&15));
        let skewed: Vec<(i64, u64)> = fibonacci.iter().enumerate().map(|(i, n)| (990 + i as i64, *n)).collect();
        let three = [(999, 10), (1000, 80), (1001, 10)];
        let nine: Vec<(i64, u64)> =
            [1, 2, 3, 4, 5, 4, 3, 2, 1].iter().enumerate().map(|(i, n)| (996 + i as i64, 8 * n)).collect();
        for (name, steps) in [("sixteen", &skewed[..]), ("three", &three[..]), ("nine", &nine[..])] {
            // The steps in a shuffled order, each as often as its count says.
            let mut order: Vec<i64> = steps.iter().flat_map(|(s, n)| std::iter::repeat_n(*s, *n as usize)).collect();
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            for i in (1..order.len()).rev() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                order.swap(i, (rng % (i as u64 + 1)) as usize);
            }
            for n in [order.len() + 1, order.len() / 2 + 1, 3] {
                let mut c = Columns::default();
                let mut t = 1_700_000_000_000i64;
                for i in 0..n {
                    c.push(t, (i % 7) as f64 * 0.5 + 0.1, 0);
                    t += order[i % order.len()];
                }
                let bytes = encode(Codec::Pco, 1, &c, None).unwrap();
                let coded =
                    u32::from_le_bytes(bytes[HEADER_BYTES..HEADER_BYTES + 4].try_into().unwrap()) == TIME_STEPS_CODED;
                // The whole order is coded; shorter chunks are, where that is smaller.
                assert!(coded || n != order.len() + 1, "{name}, {n}: coded");
                assert_eq!(decode(&bytes, |_| Err("no".into())).unwrap(), c, "{name}, {n}");
                if !coded {
                    continue;
                }
                // The times' reader alone: where its bytes end, and cut short.
                let mut at = HEADER_BYTES;
                assert_eq!(take_times(&bytes, &mut at, n).unwrap(), c.times, "{name}, {n}");
                let times_end = at;
                let mut at = HEADER_BYTES;
                assert!(take_times(&bytes[..times_end - 1], &mut at, n).is_err(), "{name}, {n}: cut short");
            }
        }
        // An incomplete code: the three steps' lengths (1, 2, 2) made (1, 2, 3). "111" is then
        // no code, and this stream (steps 1001, 1000, 999, 999, 1000, 1001, over and over)
        // holds it: an error.
        let mut c = Columns::default();
        for i in 0..200i64 {
            c.push(i * 1000 + [0, 1, 1, 0, -1, -1][(i % 6) as usize], 0.0, 0);
        }
        let bytes = encode(Codec::Pco, 1, &c, None).unwrap();
        let mut at = HEADER_BYTES + 13;
        let mut length_at = Vec::new();
        for _ in 0..usize::from(bytes[HEADER_BYTES + 12]) {
            while bytes[at] & 0x80 != 0 {
                at += 1;
            }
            length_at.push(at + 1);
            at += 2;
        }
        let lengths: Vec<u8> = length_at.iter().map(|&i| bytes[i]).collect();
        let mut sorted = lengths.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 2], "{lengths:?}");
        let mut bad = bytes.clone();
        let two = length_at.iter().rposition(|&i| bytes[i] == 2).unwrap();
        bad[length_at[two]] = 3;
        let mut at = HEADER_BYTES;
        assert!(take_times(&bad, &mut at, c.len()).is_err(), "an incomplete code");
    }

    /// Huffman's code lengths for known counts, the canonical codes of them, and a code read
    /// back symbol by symbol.
    #[test]
    fn time_step_codes_are_huffmans_and_canonical() {
        assert_eq!(code_lengths(&[5, 5]), [1, 1]);
        assert_eq!(code_lengths(&[8, 4, 2, 1, 1]), [1, 2, 3, 4, 4]);
        assert_eq!(code_lengths(&[1, 1, 1, 1]), [2, 2, 2, 2]);
        assert_eq!(canonical_codes(&[1, 2, 3, 4, 4]), [0b0, 0b10, 0b110, 0b1110, 0b1111]);
        assert_eq!(canonical_codes(&[3, 1, 3, 2]), [0b110, 0b0, 0b111, 0b10]);
        let lengths = [3, 1, 3, 2];
        let codes = canonical_codes(&lengths);
        let code = PrefixCode::new(&lengths).unwrap();
        let symbols = [0, 1, 2, 3, 3, 1, 0, 2];
        let (mut word, mut filled) = (0u64, 0);
        for &s in &symbols {
            for b in (0..lengths[s]).rev() {
                word |= u64::from((codes[s] >> b) & 1) << filled;
                filled += 1;
            }
        }
        let bytes = word.to_le_bytes();
        let used: usize = symbols.iter().map(|&s| usize::from(lengths[s])).sum();
        let mut codes = CodeReader::new(&bytes[..used.div_ceil(8)]);
        let back: Vec<usize> = symbols.iter().map(|_| codes.read(&code).unwrap()).collect();
        assert_eq!(back, symbols);
        assert_eq!(codes.bytes_used(), used.div_ceil(8));
        // Reads on into the last byte's padding (6 bits: zeros, the 1-bit code of symbol 1),
        // then past the end: an error.
        let padding: Vec<Result<usize, String>> = (0..7).map(|_| codes.read(&code)).collect();
        assert_eq!(padding[..6], [Ok(1), Ok(1), Ok(1), Ok(1), Ok(1), Ok(1)]);
        assert!(padding[6].is_err());
    }

    /// A column that changes now and then (a machine's state, a bool, a setpoint) is stored as
    /// runs, a few bytes a change, instead of pco's header of 55 bytes or more and its 20 ns a
    /// value; whole numbers as the steps between them, anything else as its 8 bytes, bit for
    /// bit (a NaN, a -0.0). Runs are taken when there are at most one for every 32 samples.
    #[test]
    fn a_value_that_changes_now_and_then_is_stored_as_runs() {
        let whole = [3.0, 4.0, 0.0, -32_768.0, 9_007_199_254_740_991.0, -9_007_199_254_740_991.0, 1.0];
        let other = [1480.5, f64::NAN, -0.0, 0.0, f64::INFINITY, 1e-300, 1480.5];
        for (values, per_run) in [(&whole, 9 + 1), (&other, 8 + 1)] {
            for n in [64, 8192] {
                let mut c = Columns::default();
                (0..n).for_each(|i| c.push(i as i64 * 1000, values[(i / 32) % values.len()], 0));
                let bytes = encode(Codec::Pco, 3, &c, Some(1)).unwrap();
                let (runs, quality) = (n / 32, 4);
                assert!(
                    bytes.len() <= PREFIX_BYTES + 4 + 1 + 2 + runs * per_run + quality,
                    "{n}: {} bytes",
                    bytes.len()
                );
                let back = decode(&bytes, |_| Ok(c.times.clone())).unwrap();
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&back.values), bits(&c.values), "{n}");
                for cut in 1..12 {
                    assert!(decode(&bytes[..bytes.len() - cut], |_| Ok(c.times.clone())).is_err(), "cut {cut}");
                }
                // The last run's length (32, one byte before the quality runs) changed: the runs
                // no longer add up to the chunk's count.
                let mut bad = bytes.clone();
                let mut quality_runs = Vec::new();
                encode_runs(&mut quality_runs, &c.quality);
                let last_length = bad.len() - quality_runs.len() - 1;
                assert_eq!(bad[last_length], 32);
                bad[last_length] = 33;
                assert!(decode(&bad, |_| Ok(c.times.clone())).is_err());
                bad[last_length] = 31;
                assert!(decode(&bad, |_| Ok(c.times.clone())).is_err());
            }
        }
        // A change every 31 samples: pco, as before.
        let mut c = Columns::default();
        (0..992).for_each(|i| c.push(i, (i / 31) as f64, 0));
        let bytes = encode(Codec::Pco, 3, &c, Some(1)).unwrap();
        assert_eq!(u32::from_le_bytes(bytes[PREFIX_BYTES..PREFIX_BYTES + 4].try_into().unwrap()) & FLAGGED, 0);
        assert_eq!(decode(&bytes, |_| Ok(c.times.clone())).unwrap().values, c.values);
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

    /// A block of three tags: tag 2 in two sections, tag 5 sharing tag 2's first times.
    fn block() -> (Vec<u8>, BlockPrefix, Vec<(u32, Columns)>) {
        let c = columns();
        let mut later = columns();
        later.times.iter_mut().for_each(|t| *t += 1_000_000);
        let mut other = columns();
        other.values.iter_mut().for_each(|v| *v *= 3.0);
        let sections = vec![(2, c.clone()), (2, later), (5, other), (9, columns())];
        let mut w = BlockWriter::default();
        for (i, (tag, c)) in sections.iter().enumerate() {
            let shared = (i == 2).then_some(0);
            assert_eq!(w.push(Codec::Pco, *tag, c, shared, None).unwrap(), i as u32);
        }
        assert!(w.push(Codec::Pco, 3, &c, None, None).is_err(), "tags come in order");
        let (bytes, prefix) = w.finish().unwrap();
        (bytes, prefix, sections)
    }

    #[test]
    fn a_block_finds_and_decodes_each_tags_sections() {
        let (bytes, prefix, sections) = block();
        assert_eq!(entry(&bytes), Some(Entry::Block(prefix)));
        assert_eq!((prefix.sections, prefix.tag_min, prefix.tag_max), (4, 2, 9));
        assert_eq!((prefix.time_min, prefix.time_max), (sections[0].1.times[0], sections[1].1.times[499]));
        let b = Block::open(bytes.as_slice()).unwrap();
        for (tag, want) in
            [(2, 0..2), (5, 2..3), (9, 3..4), (0, 0..0), (3, 0..0), (4, 0..0), (10, 0..0), (u32::MAX, 0..0)]
        {
            let found = b.sections_of(tag);
            assert_eq!(if found.is_empty() { 0..0 } else { found.clone() }, want, "tag {tag}");
            for i in found {
                let section = b.section(i).unwrap();
                assert_eq!(b.decode(&section).unwrap(), sections[i as usize].1, "section {i}");
                let c = &sections[i as usize].1;
                assert_eq!((section.time_min, section.time_max), (c.times[0], c.times[499]));
            }
        }
        let alone = encode(Codec::Pco, 5, &sections[2].1, None).unwrap();
        let shared = encode(Codec::Pco, 5, &sections[2].1, Some(0)).unwrap();
        assert!(shared.len() < alone.len(), "the shared section does not hold the times again");
        let empty = BlockWriter::default().finish().unwrap().0;
        assert_eq!(Block::open(empty.as_slice()).unwrap().sections_of(0), 0..0);
    }

    #[test]
    fn a_damaged_block_is_an_error_never_a_panic() {
        let (bytes, prefix, _) = block();
        for cut in [0, 1, BLOCK_PREFIX_BYTES, bytes.len() / 2, bytes.len() - 1] {
            assert!(Block::open(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A byte flipped in a section fails that section's checksum, and only that section.
        let mut flipped = bytes.clone();
        flipped[BLOCK_PREFIX_BYTES + 30] ^= 0x40;
        let b = Block::open(flipped.as_slice()).unwrap();
        assert!(b.section(0).err().unwrap().to_string().contains("checksum"), "a section is read checked");
        assert!(b.decode(&b.section(2).unwrap()).is_err(), "its times came from the damaged section");
        assert!(b.decode(&b.section(3).unwrap()).is_ok());
        // Any directory entry changed, in its tag or its end: the block does not open.
        for (entry, field, value) in
            [(0, 4, u32::MAX), (1, 4, 0), (3, 4, prefix.directory_at + 1), (2, 0, 7), (2, 0, 2)]
        {
            let mut bad = bytes.clone();
            let at = prefix.directory_at as usize + entry * 8 + field;
            bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
            assert!(Block::open(bad.as_slice()).is_err(), "entry {entry} = {value}");
            // The same with the directory's checksum made right: out of order or of bounds.
            let crc = crc32fast::hash(&bad[prefix.directory_at as usize..]);
            bad[33..37].copy_from_slice(&crc.to_le_bytes());
            match Block::open(bad.as_slice()) {
                Err(_) => {}
                // A tag changed to another in order (5 to 2): found as that tag, refused by the
                // section's own header.
                Ok(b) => assert!(
                    b.sections_of(value).any(|i| b.section(i).and_then(|s| b.decode(&s)).is_err()),
                    "entry {entry} = {value}"
                ),
            }
        }
        // A section of more samples than a block's section may hold is refused before decoding.
        let mut long = Columns::default();
        (0..SECTION_SAMPLES_MAX as i64 + 1).for_each(|i| long.push(i, 0.0, 0));
        assert!(BlockWriter::default().push(Codec::Pco, 1, &long, None, None).is_err());
        // A section claiming the times of a later one (or itself).
        let c = columns();
        let mut w = BlockWriter::default();
        w.push(Codec::Pco, 1, &c, Some(0), None).unwrap();
        let (bytes, _) = w.finish().unwrap();
        let b = Block::open(bytes.as_slice()).unwrap();
        assert!(b.decode(&b.section(0).unwrap()).is_err());
    }

    #[test]
    fn damaged_chunks_are_errors() {
        for codec in [Codec::Gorilla, Codec::Pco] {
            let bytes = encode(codec, 7, &columns(), None).unwrap();
            for cut in [0, 10, HEADER_BYTES, HEADER_BYTES + 3, bytes.len() / 2, bytes.len() - 1] {
                assert!(decode(&bytes[..cut], |_| Err("no".into())).is_err(), "{codec:?} cut at {cut}");
            }
        }
        // Values as distances from a running mean: a form, a window, a step or a value out of
        // range, or a cut, is an error.
        let mut c = Columns::default();
        let mut x = 1u64;
        for i in 0..400i64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            c.push(1_700_000_000_000 + i * 1000, ((50.0 + (x >> 40) as f64 / 2e5) * 10.0).round() * 0.1, 0);
        }
        let bytes = encode(Codec::Pco, 7, &c, None).unwrap();
        let mut flag = HEADER_BYTES;
        take_times(&bytes, &mut flag, 400).unwrap();
        assert_eq!(flag_at(&bytes, flag), Some(VALUE_MEANS));
        assert_eq!(decode(&bytes, |_| Err("no".into())).unwrap(), c);
        let (form, step, window) = (flag + 4, flag + 5, flag + 13);
        let mut coder = window + 1;
        get_varint(&bytes, &mut coder).unwrap();
        assert_eq!(bytes[form], MEANS_OF_MULTIPLES);
        assert_eq!(bytes[window], MEAN_WINDOW as u8);
        assert_eq!(bytes[coder], DISTANCES_BY_PCO, "a short chunk's distances go to pco");
        let damaged = |at: usize, with: &[u8]| {
            let mut b = bytes.clone();
            b[at..at + with.len()].copy_from_slice(with);
            decode(&b, |_| Err("no".into()))
        };
        assert!(damaged(form, &[2]).unwrap_err().contains("means of form 2"));
        assert!(damaged(window, &[0]).unwrap_err().contains("a mean of 0 values"));
        assert!(damaged(coder, &[2]).unwrap_err().contains("distances coded as 2"));
        assert!(damaged(window, &[65]).unwrap_err().contains("a mean of 65 values"));
        assert!(damaged(step, &f64::NAN.to_le_bytes()).unwrap_err().contains("a step of NaN"));
        assert!(damaged(step, &(-0.1f64).to_le_bytes()).is_err());
        // Another window reads other values (the section's CRC is what finds that), no panic.
        assert!(damaged(window, &[64]).is_ok_and(|back| back != c));
        for cut in [flag + 1, form + 1, window, window + 3, bytes.len() - 8] {
            assert!(decode(&bytes[..cut], |_| Err("no".into())).is_err(), "cut at {cut}");
        }
        // A long chunk's distances in bins: a shift too wide, a cut, any byte changed is an
        // error or other values, never a panic.
        let mut c = Columns::default();
        for i in 0..4000i64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let jump = if i % 1000 >= 500 && i % 1000 < 503 { 1e6 } else { 0.0 };
            c.push(1_700_000_000_000 + i * 1000, ((50.0 + (x >> 40) as f64 / 2e5) * 10.0 + jump).round() * 0.1, 0);
        }
        let bytes = encode(Codec::Pco, 7, &c, None).unwrap();
        let mut flag = HEADER_BYTES;
        take_times(&bytes, &mut flag, 4000).unwrap();
        assert_eq!(flag_at(&bytes, flag), Some(VALUE_MEANS));
        let mut coder = flag + 14;
        get_varint(&bytes, &mut coder).unwrap();
        let shift = coder + 1;
        assert_eq!(bytes[coder], DISTANCES_IN_BINS);
        assert_eq!(decode(&bytes, |_| Err("no".into())).unwrap(), c, "escapes (the jumps) and bins");
        let mut b = bytes.clone();
        b[shift] = BIN_SHIFT_MAX + 1;
        assert!(decode(&b, |_| Err("no".into())).unwrap_err().contains("bins of 2^57"));
        for cut in [shift, shift + 1, shift + 40, bytes.len() - 20, bytes.len() - 5] {
            assert!(decode(&bytes[..cut], |_| Err("no".into())).is_err(), "cut at {cut}");
        }
        for at in (shift..bytes.len()).step_by(7) {
            for flip in [0x01, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                let _ = decode(&b, |_| Err("no".into()));
            }
        }
        // A distance that takes a value past the largest multiple an f64 holds exactly.
        let mut residuals = vec![0i64; 400];
        residuals[0] = MEANS_MULTIPLE_MAX + 1;
        let mut out = VALUE_MEANS.to_le_bytes().to_vec();
        out.push(MEANS_OF_MULTIPLES);
        out.extend_from_slice(&0.1f64.to_le_bytes());
        out.extend([16, 0, DISTANCES_BY_PCO]);
        put_block(&mut out, &pco::standalone::simple_compress(&residuals, &pco::ChunkConfig::default()).unwrap());
        assert!(take_values(&out, &mut 0, 400).unwrap_err().contains("past its form's range"));
        out[4] = MEANS_OF_F32S;
        out.drain(5..13);
        residuals[0] = i64::from(i32::MIN) - 1;
        let block = pco::standalone::simple_compress(&residuals, &pco::ChunkConfig::default()).unwrap();
        out.truncate(8);
        put_block(&mut out, &block);
        assert!(take_values(&out, &mut 0, 400).unwrap_err().contains("past its form's range"));
        residuals[0] = i64::MAX;
        residuals[1] = i64::MAX;
        out.truncate(8);
        put_block(&mut out, &pco::standalone::simple_compress(&residuals, &pco::ChunkConfig::default()).unwrap());
        assert!(take_values(&out, &mut 0, 400).is_err(), "an overflow is an error, not a panic");
    }
}
