//! What crosses the diode: datagrams, and the blocks they carry once decoded.
//!
//! Every datagram (all integers little-endian):
//!
//! ```text
//!  0      2   3    4         8             16
//!  +------+---+----+---------+-------------+------------------------+---------+
//!  | "AD" | 1 |kind| sender  | session     | body (by kind)         | crc32   |
//!  |      |ver|    | u32     | u64         |                        | u32     |
//!  +------+---+----+---------+-------------+------------------------+---------+
//!  sender  = FNV-1a of the sending gateway's name (a fast filter; the name itself is in
//!            every block and heartbeat, and checked there)
//!  session = when the sending half started (ns since the epoch): a restart is a new session
//!  crc32   = CRC-32 (IEEE) of every byte before it
//!
//!  With a shared key (`key_file` on both halves) the version is 2 and the last 4 bytes are
//!  16: the first 16 bytes of the HMAC-SHA256 of every byte before them. A receiver with a
//!  key takes only version 2 datagrams whose tag it makes itself; one without, only version 1.
//!
//!  kind 1, a symbol:   block u64 | block_bytes u32 | symbol_bytes u16 | esi u32 | symbol
//!  kind 2, heartbeat:  next_block u64 | sent u64 × 4 (newest id sent per class: events,
//!                      aggregates, series, raw) | repeat_ms u32 | heartbeat_ms u32 |
//!                      devices_up u16 | devices_down u16 | queued u64 | store u8 (0 ok,
//!                      1 failing) | name (u8 length + UTF-8)
//! ```
//!
//! A **block** is a run of outbox records, RaptorQ-encoded (RFC 6330, one source block) into
//! `ceil(block_bytes / symbol_bytes)` source symbols and a share of repair symbols; any
//! slightly more than that many symbols decode it. Decoded, a block is:
//!
//! ```text
//!  version u8 (1) | name (u8 length + UTF-8) | before u64 × 4 | count u32 |
//!  count × (class u8 | seq u64 | time i64 | len u32 | bytes) | crc32 u32
//!  before = per class, the newest id the sender had sent before this block (0: none): the
//!           receiver names the ids between what it has and this as missing
//! ```
//!
//! Decoding trusts nothing: every length is checked against what remains, sizes against the
//! bounds below, and a datagram or block that fails a check is refused with the reason.

use std::fmt;

/// The largest block: a record bigger than a block gets a block of its own, up to this.
pub const BLOCK_BYTES_MAX: usize = 20 << 20;
/// The fewest and most bytes of a symbol (RaptorQ symbols are a multiple of 8 bytes here).
pub const SYMBOL_BYTES_MIN: usize = 16;
pub const SYMBOL_BYTES_MAX: usize = 65_000;
/// RaptorQ's largest source block, in symbols (RFC 6330, K'max).
pub const SOURCE_SYMBOLS_MAX: usize = 56_403;
/// Header before a symbol's body, and the checksum after everything.
pub const HEADER_BYTES: usize = 16;
pub const SYMBOL_HEADER_BYTES: usize = 18;
pub const CRC_BYTES: usize = 4;
/// The authentication tag that replaces the checksum when the halves share a key.
pub const TAG_BYTES: usize = 16;
/// IPv4 and UDP headers: a datagram in a link of `mtu` bytes carries `mtu - 28`.
pub const IP_UDP_BYTES: usize = 28;
/// The smallest link MTU a diode can use (one symbol of `SYMBOL_BYTES_MIN` must fit).
pub const MTU_MIN: usize = IP_UDP_BYTES + HEADER_BYTES + SYMBOL_HEADER_BYTES + SYMBOL_BYTES_MIN + CRC_BYTES;

const MAGIC: &[u8; 2] = b"AD";
const VERSION: u8 = 1;
const VERSION_KEYED: u8 = 2;
const SYMBOL: u8 = 1;
const HEARTBEAT: u8 = 2;
const BLOCK_VERSION: u8 = 1;

/// The symbol size for a link MTU: what is left of a datagram after the headers, rounded down
/// to a multiple of 8.
pub fn symbol_bytes(mtu: usize) -> usize {
    symbol_bytes_sealed(mtu, false)
}

/// As [`symbol_bytes`], for datagrams sealed with a key (`keyed`: a longer trailer).
pub fn symbol_bytes_sealed(mtu: usize, keyed: bool) -> usize {
    let trailer = if keyed { TAG_BYTES } else { CRC_BYTES };
    let room = mtu.saturating_sub(IP_UDP_BYTES + HEADER_BYTES + SYMBOL_HEADER_BYTES + trailer);
    (room.min(SYMBOL_BYTES_MAX) / 8) * 8
}

/// A secret both halves hold (`key_file`): datagrams sealed with it carry an HMAC-SHA256 tag.
#[derive(Clone)]
pub struct Key(ring::hmac::Key);

impl Key {
    pub fn new(secret: &[u8]) -> Self {
        Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret))
    }

    /// The key in `path` (its bytes, whatever they are; at least 16 of them).
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let secret = std::fs::read(path).map_err(|e| format!("read the diode key {}: {e}", path.display()))?;
        if secret.len() < 16 {
            return Err(format!(
                "the diode key {} holds {} bytes; at least 16 are needed",
                path.display(),
                secret.len()
            ));
        }
        Ok(Self::new(&secret))
    }

    fn tag(&self, bytes: &[u8]) -> [u8; TAG_BYTES] {
        let full = ring::hmac::sign(&self.0, bytes);
        let mut tag = [0; TAG_BYTES];
        tag.copy_from_slice(&full.as_ref()[..TAG_BYTES]);
        tag
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Whether two tags are equal, taking the same time whatever their bytes.
fn same_tag(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// FNV-1a of a gateway name: the datagram's quick sender filter.
pub fn sender_hash(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Why a datagram or a block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0} bytes: too short")]
    Short(usize),
    #[error("not an airlock diode datagram (magic or version)")]
    Foreign,
    #[error("checksum mismatch")]
    Checksum,
    /// A datagram not sealed with this receiver's key (a forgery, or a sender with another
    /// key or none), or a sealed one at a receiver without a key.
    #[error("not authenticated: {0}")]
    Unauthenticated(&'static str),
    #[error("unknown kind {0}")]
    Kind(u8),
    #[error("{0}")]
    Bad(&'static str),
}

/// Who sent a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub sender: u32,
    pub session: u64,
}

/// One encoding symbol of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol<'a> {
    pub block: u64,
    pub block_bytes: u32,
    pub symbol_bytes: u16,
    /// Encoding symbol id: below the source symbol count a source symbol, above a repair one.
    pub esi: u32,
    pub data: &'a [u8],
}

/// What the OT half says every `heartbeat_s`, whether or not there is anything new.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// The number the next block will get: blocks below it have been sent.
    pub next_block: u64,
    /// The newest record id sent per class (0: none yet).
    pub sent: [u64; 4],
    /// How long after a block the sender sends it again (0: never).
    pub repeat_ms: u32,
    pub heartbeat_ms: u32,
    pub devices_up: u16,
    pub devices_down: u16,
    /// Records in the OT outbox not yet sent through the diode.
    pub queued: u64,
    /// Whether the OT store is failing to write (a full disk).
    pub store_failing: bool,
    pub name: String,
}

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram<'a> {
    Symbol(Header, Symbol<'a>),
    Heartbeat(Header, Heartbeat),
}

fn header(out: &mut Vec<u8>, kind: u8, h: Header) {
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&h.sender.to_le_bytes());
    out.extend_from_slice(&h.session.to_le_bytes());
}

fn seal(out: &mut Vec<u8>, key: Option<&Key>) {
    match key {
        None => {
            let crc = crc32fast::hash(out);
            out.extend_from_slice(&crc.to_le_bytes());
        }
        Some(key) => {
            out[2] = VERSION_KEYED;
            let tag = key.tag(out);
            out.extend_from_slice(&tag);
        }
    }
}

/// Writes a symbol datagram into `out` (cleared first).
pub fn encode_symbol(out: &mut Vec<u8>, h: Header, s: &Symbol<'_>) {
    encode_symbol_sealed(out, h, s, None);
}

/// As [`encode_symbol`], sealed with `key` when there is one.
pub fn encode_symbol_sealed(out: &mut Vec<u8>, h: Header, s: &Symbol<'_>, key: Option<&Key>) {
    out.clear();
    header(out, SYMBOL, h);
    out.extend_from_slice(&s.block.to_le_bytes());
    out.extend_from_slice(&s.block_bytes.to_le_bytes());
    out.extend_from_slice(&s.symbol_bytes.to_le_bytes());
    out.extend_from_slice(&s.esi.to_le_bytes());
    out.extend_from_slice(s.data);
    seal(out, key);
}

/// Writes a heartbeat datagram into `out` (cleared first).
pub fn encode_heartbeat(out: &mut Vec<u8>, h: Header, b: &Heartbeat) {
    encode_heartbeat_sealed(out, h, b, None);
}

/// As [`encode_heartbeat`], sealed with `key` when there is one.
pub fn encode_heartbeat_sealed(out: &mut Vec<u8>, h: Header, b: &Heartbeat, key: Option<&Key>) {
    out.clear();
    header(out, HEARTBEAT, h);
    out.extend_from_slice(&b.next_block.to_le_bytes());
    for s in b.sent {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(&b.repeat_ms.to_le_bytes());
    out.extend_from_slice(&b.heartbeat_ms.to_le_bytes());
    out.extend_from_slice(&b.devices_up.to_le_bytes());
    out.extend_from_slice(&b.devices_down.to_le_bytes());
    out.extend_from_slice(&b.queued.to_le_bytes());
    out.push(u8::from(b.store_failing));
    name(out, &b.name);
    seal(out, key);
}

fn name(out: &mut Vec<u8>, name: &str) {
    let bytes = &name.as_bytes()[..name.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// Reads one datagram, checking everything.
pub fn decode(bytes: &[u8]) -> Result<Datagram<'_>, WireError> {
    decode_sealed(bytes, None)
}

/// As [`decode`], at a receiver holding `key` (or none): a datagram must be sealed the same way.
pub fn decode_sealed<'a>(bytes: &'a [u8], key: Option<&Key>) -> Result<Datagram<'a>, WireError> {
    if bytes.len() < HEADER_BYTES + CRC_BYTES {
        return Err(WireError::Short(bytes.len()));
    }
    if &bytes[..2] != MAGIC || !matches!(bytes[2], VERSION | VERSION_KEYED) {
        return Err(WireError::Foreign);
    }
    let body = match (bytes[2], key) {
        (VERSION, None) => {
            let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
            if crc32fast::hash(body) != r_u32(crc)? {
                return Err(WireError::Checksum);
            }
            body
        }
        (VERSION, Some(_)) => return Err(WireError::Unauthenticated("no tag, and this receiver has a key")),
        (_, None) => return Err(WireError::Unauthenticated("a sealed datagram, and this receiver has no key")),
        (_, Some(key)) => {
            if bytes.len() < HEADER_BYTES + TAG_BYTES {
                return Err(WireError::Short(bytes.len()));
            }
            let (body, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
            if !same_tag(&key.tag(body), tag) {
                return Err(WireError::Unauthenticated("the tag is not this receiver's key's"));
            }
            body
        }
    };
    let mut r = Reader(body);
    r.take(3)?;
    let kind = r.u8()?;
    let h = Header { sender: r.u32()?, session: r.u64()? };
    match kind {
        SYMBOL => {
            let block = r.u64()?;
            let block_bytes = r.u32()?;
            let symbol_bytes = r.u16()?;
            let esi = r.u32()?;
            let data = r.0;
            if data.len() != usize::from(symbol_bytes) {
                return Err(WireError::Bad("the symbol's length is not its stated size"));
            }
            check_block_shape(block_bytes as usize, usize::from(symbol_bytes))?;
            let source = (block_bytes as usize).div_ceil(usize::from(symbol_bytes));
            // Repair symbols past what any sender makes are refused (the decoder's work
            // grows with them).
            if esi as usize >= source + SOURCE_SYMBOLS_MAX {
                return Err(WireError::Bad("encoding symbol id out of range"));
            }
            Ok(Datagram::Symbol(h, Symbol { block, block_bytes, symbol_bytes, esi, data }))
        }
        HEARTBEAT => {
            let next_block = r.u64()?;
            let sent = [r.u64()?, r.u64()?, r.u64()?, r.u64()?];
            let b = Heartbeat {
                next_block,
                sent,
                repeat_ms: r.u32()?,
                heartbeat_ms: r.u32()?,
                devices_up: r.u16()?,
                devices_down: r.u16()?,
                queued: r.u64()?,
                store_failing: r.u8()? != 0,
                name: r.name()?,
            };
            r.end()?;
            Ok(Datagram::Heartbeat(h, b))
        }
        other => Err(WireError::Kind(other)),
    }
}

/// Whether a block of `block_bytes` in symbols of `symbol_bytes` is one this side decodes.
pub fn check_block_shape(block_bytes: usize, symbol_bytes: usize) -> Result<(), WireError> {
    if !(SYMBOL_BYTES_MIN..=SYMBOL_BYTES_MAX).contains(&symbol_bytes) || !symbol_bytes.is_multiple_of(8) {
        return Err(WireError::Bad("symbol size out of range"));
    }
    if block_bytes == 0 || block_bytes > BLOCK_BYTES_MAX {
        return Err(WireError::Bad("block size out of range"));
    }
    if block_bytes.div_ceil(symbol_bytes) > SOURCE_SYMBOLS_MAX {
        return Err(WireError::Bad("too many symbols in one block"));
    }
    Ok(())
}

/// One outbox record in a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRecord {
    /// 0 events, 1 aggregates, 2 series, 3 raw.
    pub class: u8,
    pub seq: u64,
    pub time: i64,
    /// The record in the upstream encoding.
    pub bytes: Vec<u8>,
}

/// A decoded block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Block {
    pub name: String,
    /// Per class, the newest id the sender had sent before this block (0: none).
    pub before: [u64; 4],
    pub records: Vec<BlockRecord>,
}

/// Bytes a record takes in a block.
pub fn record_bytes(payload: usize) -> usize {
    1 + 8 + 8 + 4 + payload
}

/// Bytes a block takes before its records.
pub fn block_overhead(name: &str) -> usize {
    1 + 1 + name.len().min(255) + 32 + 4 + CRC_BYTES
}

/// Builds a block in `out` (cleared first).
pub fn encode_block(out: &mut Vec<u8>, name_: &str, before: [u64; 4], records: &[(u8, u64, i64, &[u8])]) {
    out.clear();
    out.push(BLOCK_VERSION);
    name(out, name_);
    for b in before {
        out.extend_from_slice(&b.to_le_bytes());
    }
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for (class, seq, time, bytes) in records {
        out.push(*class);
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&time.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    seal(out, None);
}

/// Reads a decoded block, checking everything.
pub fn decode_block(bytes: &[u8]) -> Result<Block, WireError> {
    if bytes.len() < 1 + 1 + 32 + 4 + CRC_BYTES {
        return Err(WireError::Short(bytes.len()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
    if crc32fast::hash(body) != r_u32(crc)? {
        return Err(WireError::Checksum);
    }
    let mut r = Reader(body);
    if r.u8()? != BLOCK_VERSION {
        return Err(WireError::Bad("unknown block version"));
    }
    let name = r.name()?;
    let before = [r.u64()?, r.u64()?, r.u64()?, r.u64()?];
    let count = r.u32()? as usize;
    // Each record takes at least 21 bytes: a count beyond what remains is a lie.
    if count > r.0.len() / record_bytes(0) {
        return Err(WireError::Bad("record count larger than the block"));
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let class = r.u8()?;
        if class > 3 {
            return Err(WireError::Bad("unknown record class"));
        }
        let seq = r.u64()?;
        let time = r.u64()? as i64;
        let len = r.u32()? as usize;
        let bytes = r.take(len)?.to_vec();
        records.push(BlockRecord { class, seq, time, bytes });
    }
    r.end()?;
    Ok(Block { name, before, records })
}

fn r_u32(b: &[u8]) -> Result<u32, WireError> {
    b.try_into().map(u32::from_le_bytes).map_err(|_| WireError::Short(b.len()))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Bad("ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        r_u32(self.take(4)?)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.take(8)?.try_into().map(u64::from_le_bytes).map_err(|_| WireError::Bad("ends early"))
    }

    fn name(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u8()?);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Bad("a name that is not UTF-8"))
    }

    fn end(&self) -> Result<(), WireError> {
        if self.0.is_empty() { Ok(()) } else { Err(WireError::Bad("bytes after the end")) }
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sender {:08x} session {}", self.sender, self.session)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_configs_heartbeat_size_is_what_a_heartbeat_takes_on_the_link() {
        // `check` refuses an MTU too small for a heartbeat from this figure (the config crate
        // cannot depend on this one).
        for name in ["", "press-gw", &"x".repeat(255)] {
            let beat = Heartbeat {
                next_block: 1,
                sent: [1; 4],
                repeat_ms: 0,
                heartbeat_ms: 1000,
                devices_up: 1,
                devices_down: 0,
                queued: 0,
                store_failing: false,
                name: name.to_owned(),
            };
            let mut out = Vec::new();
            encode_heartbeat(&mut out, Header { sender: 1, session: 1 }, &beat);
            let on_link = IP_UDP_BYTES + out.len();
            assert_eq!(on_link as i64, airlock_config::DIODE_HEARTBEAT_BYTES + name.len() as i64, "{name:?}");
        }
    }

    #[test]
    fn datagrams_and_blocks_read_back_and_refuse_any_flipped_byte() {
        let h = Header { sender: sender_hash("press-gw"), session: 7 };
        let mut out = Vec::new();
        let data = [9u8; 64];
        let s = Symbol { block: 3, block_bytes: 1000, symbol_bytes: 64, esi: 2, data: &data };
        encode_symbol(&mut out, h, &s);
        assert_eq!(decode(&out).unwrap(), Datagram::Symbol(h, s));
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "byte {i} flipped");
        }
        let b = Heartbeat { next_block: 4, sent: [1, 2, 3, 4], name: "press-gw".into(), ..Heartbeat::default() };
        encode_heartbeat(&mut out, h, &b);
        assert_eq!(decode(&out).unwrap(), Datagram::Heartbeat(h, b));
        let payload = b"abc".as_slice();
        encode_block(&mut out, "press-gw", [0, 0, 0, 9], &[(3, 10, -5, payload)]);
        let block = decode_block(&out).unwrap();
        assert_eq!(block.records, vec![BlockRecord { class: 3, seq: 10, time: -5, bytes: payload.to_vec() }]);
        assert_eq!((block.name.as_str(), block.before), ("press-gw", [0, 0, 0, 9]));
        assert_eq!(out.len(), block_overhead("press-gw") + record_bytes(3));
        for cut in 0..out.len() {
            assert!(decode_block(&out[..cut]).is_err());
        }
    }

    #[test]
    fn the_symbol_size_fits_the_link() {
        assert_eq!(symbol_bytes(1500), 1432);
        assert!(symbol_bytes(1500) + 28 + HEADER_BYTES + SYMBOL_HEADER_BYTES + CRC_BYTES <= 1500);
        assert_eq!(symbol_bytes(MTU_MIN), SYMBOL_BYTES_MIN);
    }

    #[test]
    fn a_sealed_datagram_opens_only_with_its_key() {
        let (key, other) = (Key::new(b"0123456789abcdef"), Key::new(b"0123456789abcdeF"));
        let h = Header { sender: sender_hash("press-gw"), session: 7 };
        let beat = Heartbeat { next_block: 3, name: "press-gw".into(), ..Heartbeat::default() };
        let mut sealed = Vec::new();
        encode_heartbeat_sealed(&mut sealed, h, &beat, Some(&key));
        let mut plain = Vec::new();
        encode_heartbeat(&mut plain, h, &beat);
        assert_eq!(sealed.len(), plain.len() - CRC_BYTES + TAG_BYTES);
        assert_eq!(decode_sealed(&sealed, Some(&key)).unwrap(), Datagram::Heartbeat(h, beat.clone()));
        let refused =
            |bytes: &[u8], key: Option<&Key>| matches!(decode_sealed(bytes, key), Err(WireError::Unauthenticated(_)));
        assert!(refused(&sealed, Some(&other)), "another key");
        assert!(refused(&sealed, None), "a receiver without a key");
        assert!(refused(&plain, Some(&key)), "an unsealed datagram at a receiver with a key");
        for at in [0usize, 3, 20, sealed.len() - 1] {
            let mut forged = sealed.clone();
            forged[at] ^= 1;
            assert!(decode_sealed(&forged, Some(&key)).is_err(), "a byte changed at {at}");
        }
        assert_eq!(symbol_bytes_sealed(1500, true), symbol_bytes(1500) - 16);
    }
}
