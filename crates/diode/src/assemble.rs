//! The IT half's logic, without I/O: datagrams in; records, gaps and the sender's state out.
//!
//! Blocks are decoded as their symbols come, then handed on strictly in block order. A block
//! that has not decoded while a later one has waited `reorder` is given up: the ids it held
//! are named missing when the next block (whose header says what the sender had sent before
//! it) or a heartbeat (what the sender has sent in all) shows them. A record whose id is not
//! above the newest one handed on for its class is a duplicate (a repeat, a resend after a
//! restart) and dropped. Everything held is bounded: blocks being decoded (count and bytes).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raptorq::{EncodingPacket, ObjectTransmissionInformation, PayloadId, SourceBlockDecoder};

use crate::wire::{self, Block, BlockRecord, Datagram, Heartbeat, Symbol, WireError};

/// A sender whose session has been silent this long may come back with a lower session
/// number (restarted with its clock set back); before, a lower session is a replay.
pub const SESSION_TAKEOVER: Duration = Duration::from_secs(10);

/// Ranges named missing that are remembered (to take them if sent again), at most.
pub const MISSING_RANGES_MAX: usize = 10_000;

/// What a receiver keeps across a restart: the newest id handed on per class, and the ranges
/// named missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub last: [u64; 4],
    pub missing: BTreeMap<(u8, u64), u64>,
}

/// Blocks being decoded at once, at most; beyond, the lowest-numbered is given up.
pub const PARTIAL_BLOCKS_MAX: usize = 256;
/// Blocks older than the next one in order (repeats) being decoded at once for records named
/// missing, at most; beyond, the lowest-numbered is given up. Also the number of such blocks
/// remembered as done (so that a third copy is not decoded again).
pub const LATE_BLOCKS_MAX: usize = 64;
/// Bytes of blocks being decoded or waiting for their turn, at most.
pub const HELD_BYTES_MAX: usize = 256 << 20;

/// What the assembler hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A record received whole, in order for its class.
    Record(BlockRecord),
    /// Ids `first..=last` of `class` were sent and will never arrive.
    /// `from`: the time of the newest record handed on before them, `to`: of the first after
    /// them (0: not known).
    Missing { class: u8, first: u64, last: u64, from: i64, to: i64, cause: MissingCause },
    /// The sender's heartbeat (its state, what it has sent).
    Heartbeat(Heartbeat),
    /// The sender started again (a new session).
    SenderRestarted,
}

/// Why ids are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingCause {
    /// Blocks that could not be decoded (more loss than the repair covers, a full buffer).
    BlocksLost,
    /// Sent while this receiver was not running (found at its first block after a start).
    ReceiverDown,
}

/// Counters, for the live view and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssembleStats {
    pub datagrams: u64,
    pub malformed: u64,
    /// Datagrams not sealed with this receiver's key (forged, another key, or none when it
    /// has one; sealed when it has none).
    pub unauthenticated: u64,
    pub foreign: u64,
    /// Datagrams of an older session (a replay, or from before the sender restarted).
    pub stale: u64,
    pub blocks_decoded: u64,
    /// Blocks given up (not decoded in time, or pushed out by the bounds).
    pub blocks_lost: u64,
    /// Symbols of blocks already decoded or given up (repeats, surplus repair).
    pub late_symbols: u64,
    pub records: u64,
    /// Records named missing earlier that came after all (sent again by hand).
    pub recovered: u64,
    pub duplicates: u64,
    pub missing: u64,
}

struct Partial {
    first_seen: Instant,
    block_bytes: u32,
    symbol_bytes: u16,
    decoder: SourceBlockDecoder,
    held: usize,
}

impl Partial {
    /// A decoder for the block of symbol `s`, first seen `now`, counted as `held` bytes.
    fn new(s: &Symbol<'_>, now: Instant, held: usize) -> Self {
        let padded = (s.block_bytes as u64).div_ceil(u64::from(s.symbol_bytes)) * u64::from(s.symbol_bytes);
        let oti = ObjectTransmissionInformation::new(padded, s.symbol_bytes, 1, 1, 8);
        let decoder = SourceBlockDecoder::new(0, &oti, padded);
        Self { first_seen: now, block_bytes: s.block_bytes, symbol_bytes: s.symbol_bytes, decoder, held }
    }

    /// Takes one symbol; the block's bytes once it decodes.
    fn take(&mut self, s: &Symbol<'_>) -> Result<Option<Vec<u8>>, WireError> {
        if (self.block_bytes, self.symbol_bytes) != (s.block_bytes, s.symbol_bytes) {
            return Err(WireError::Bad("a symbol whose block shape differs from its block's first"));
        }
        let packet = EncodingPacket::new(PayloadId::new(0, s.esi), s.data.to_vec());
        Ok(self.decoder.decode(std::iter::once(packet)).map(|mut bytes| {
            bytes.truncate(s.block_bytes as usize);
            bytes
        }))
    }
}

/// The receiving half's state for one expected sender.
pub struct Assembler {
    sender: String,
    sender_hash: u32,
    reorder: Duration,
    session: Option<u64>,
    /// The next block to hand on; `None` until the first block of a session is seen.
    next_block: Option<u64>,
    partial: BTreeMap<u64, Partial>,
    /// Decoded blocks waiting for their turn: when first seen, bytes held, the block.
    decoded: BTreeMap<u64, (Instant, usize, Block)>,
    held_bytes: usize,
    /// Started from a state file, and no heartbeat or block of the sender taken yet: what is
    /// found missing now was sent while this receiver was down.
    before_contact: bool,
    /// Ranges named missing, kept to take them if sent again by hand (bounded, oldest out).
    missing: BTreeMap<(u8, u64), u64>,
    /// When each range was named (a counter), so that the oldest goes first past the bound.
    missing_age: BTreeMap<(u8, u64), u64>,
    named: u64,
    /// Per class, the newest id handed on (0: none), and its time.
    last: [u64; 4],
    last_time: [i64; 4],
    /// No id handed on yet in this process: the first block says where the sender stands.
    fresh: bool,
    /// The newest heartbeat's promise, to name a tail lost: (next block, sent per class).
    promised: Option<(u64, [u64; 4])>,
    promised_at: Option<Instant>,
    /// When a datagram of the current session last came.
    session_seen_at: Option<Instant>,
    repeat: Duration,
    /// Blocks older than `next_block` (repeats of blocks sent while this receiver was down, or
    /// given up too early) decoded for the records named missing; and those already done.
    late: BTreeMap<u64, Partial>,
    late_done: std::collections::BTreeSet<u64>,
    /// The blocks handed on in order lately: their repeats bring nothing new (bounded).
    handed: std::collections::BTreeSet<u64>,
    /// The key shared with the sender, if the halves have one.
    key: Option<wire::Key>,
    pub stats: AssembleStats,
}

impl Assembler {
    /// `last`: per class, the newest id this receiver already holds (from its state file),
    /// or `None` if it has never received anything: then it starts at the first heartbeat it
    /// hears (what the sender had sent before is not named missing).
    pub fn new(sender: &str, reorder: Duration, state: Option<State>) -> Self {
        let (last, missing) = match state {
            Some(s) => (Some(s.last), s.missing),
            None => (None, BTreeMap::new()),
        };
        Self {
            sender: sender.to_owned(),
            sender_hash: wire::sender_hash(sender),
            reorder,
            session: None,
            next_block: None,
            partial: BTreeMap::new(),
            decoded: BTreeMap::new(),
            held_bytes: 0,
            last: last.unwrap_or_default(),
            last_time: [0; 4],
            missing_age: missing.keys().enumerate().map(|(i, k)| (*k, i as u64)).collect(),
            named: missing.len() as u64,
            missing,
            before_contact: last.is_some(),
            fresh: last.is_none(),
            promised: None,
            promised_at: None,
            session_seen_at: None,
            repeat: Duration::ZERO,
            late: BTreeMap::new(),
            late_done: std::collections::BTreeSet::new(),
            handed: std::collections::BTreeSet::new(),
            key: None,
            stats: AssembleStats::default(),
        }
    }

    /// Where it stands, to be kept across a restart.
    pub fn state(&self) -> State {
        State { last: self.last, missing: self.missing.clone() }
    }

    /// How long a missing block is waited for: the configured reorder time, or longer if the
    /// sender repeats blocks later than that.
    fn wait(&self) -> Duration {
        self.reorder.max(self.repeat + self.reorder)
    }

    /// Takes only datagrams sealed with `key` (the sender's `key_file`).
    pub fn with_key(mut self, key: Option<wire::Key>) -> Self {
        self.key = key;
        self
    }

    /// Takes one datagram; appends what it completes to `out`.
    pub fn datagram(&mut self, bytes: &[u8], now: Instant, out: &mut Vec<Output>) -> Result<(), WireError> {
        self.stats.datagrams += 1;
        let datagram = match wire::decode_sealed(bytes, self.key.as_ref()) {
            Ok(d) => d,
            Err(e @ WireError::Unauthenticated(_)) => {
                self.stats.unauthenticated += 1;
                return Err(e);
            }
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        let header = match &datagram {
            Datagram::Symbol(h, _) | Datagram::Heartbeat(h, _) => *h,
        };
        if header.sender != self.sender_hash {
            self.stats.foreign += 1;
            return Err(WireError::Bad("from another sender"));
        }
        if let Datagram::Heartbeat(_, beat) = &datagram
            && beat.name != self.sender
        {
            self.stats.foreign += 1;
            return Err(WireError::Bad("a heartbeat from another sender"));
        }
        // A lower session is a replay, unless the current one has been silent a while: then it
        // is the sender restarted with its clock set back (no NTP, an RTC reset).
        let taken_over = self.session_seen_at.is_some_and(|at| now.duration_since(at) >= SESSION_TAKEOVER);
        match self.session {
            Some(s) if header.session < s && !taken_over => {
                self.stats.stale += 1;
                return Err(WireError::Bad("from an older session of the sender"));
            }
            Some(s) if header.session != s => {
                // The sender restarted: what the old session had decoded goes on first.
                self.finish_session(out);
                out.push(Output::SenderRestarted);
                self.session = Some(header.session);
                self.next_block = Some(0);
            }
            Some(_) => {}
            None => self.session = Some(header.session),
        }
        self.session_seen_at = Some(now);
        match datagram {
            Datagram::Heartbeat(_, beat) => {
                if self.fresh {
                    // A receiver that never received anything starts where the sender stands.
                    self.last = beat.sent;
                    self.next_block = Some(beat.next_block);
                    self.fresh = false;
                }
                self.repeat = Duration::from_millis(u64::from(beat.repeat_ms));
                // The wait for what a heartbeat promises runs from the first that promised it.
                if self.promised != Some((beat.next_block, beat.sent)) {
                    self.promised = Some((beat.next_block, beat.sent));
                    self.promised_at = Some(now);
                }
                if self.next_block.is_none() && self.partial.is_empty() && self.decoded.is_empty() {
                    // Nothing in flight: the next block is the first this receiver sees.
                    self.next_block = Some(beat.next_block);
                }
                out.push(Output::Heartbeat(beat));
            }
            // Until its first heartbeat, a receiver that never received anything does not know
            // where the sender stands: symbols before it are not taken.
            Datagram::Symbol(..) if self.fresh => self.stats.late_symbols += 1,
            Datagram::Symbol(_, symbol) => self.symbol(symbol, now, out)?,
        }
        self.advance(now, out);
        if self.promised.is_some() || self.stats.blocks_decoded > 0 {
            self.before_contact = false;
        }
        Ok(())
    }

    fn symbol(&mut self, s: Symbol<'_>, now: Instant, out: &mut Vec<Output>) -> Result<(), WireError> {
        let next = *self.next_block.get_or_insert(s.block);
        // A block before the next in order that was never handed on (sent while this receiver
        // was down, or given up too early) may bring ids named missing: decoded on the side.
        let never_handed = !self.late_done.contains(&s.block) && !self.handed.contains(&s.block);
        if s.block < next && !self.missing.is_empty() && never_handed {
            return self.late_symbol(s, now, out);
        }
        if s.block < next || self.decoded.contains_key(&s.block) {
            self.stats.late_symbols += 1;
            return Ok(());
        }
        if !self.partial.contains_key(&s.block) {
            let held = usize::try_from(s.block_bytes).unwrap_or(usize::MAX);
            while self.partial.len() >= PARTIAL_BLOCKS_MAX || self.held_bytes + held > HELD_BYTES_MAX {
                // Late blocks go first: the blocks in order are what comes now.
                if let Some((_, p)) = self.late.pop_first() {
                    self.held_bytes -= p.held;
                    continue;
                }
                if !self.give_up_lowest(out) {
                    break;
                }
            }
            self.held_bytes += held;
            self.partial.insert(s.block, Partial::new(&s, now, held));
        }
        let Some(p) = self.partial.get_mut(&s.block) else { return Ok(()) };
        let Some(bytes) = p.take(&s).inspect_err(|_| self.stats.malformed += 1)? else { return Ok(()) };
        let (held, first_seen) = (p.held, p.first_seen);
        self.partial.remove(&s.block);
        let block = self.open_block(&bytes);
        self.held_bytes -= held;
        let block = block?;
        self.stats.blocks_decoded += 1;
        self.held_bytes += held;
        self.decoded.insert(s.block, (first_seen, held, block));
        Ok(())
    }

    /// A decoded block's bytes, read and checked to be this sender's.
    fn open_block(&mut self, bytes: &[u8]) -> Result<Block, WireError> {
        match wire::decode_block(bytes) {
            Ok(block) if block.name == self.sender => Ok(block),
            Ok(_) => {
                self.stats.foreign += 1;
                Err(WireError::Bad("a block from another sender"))
            }
            Err(e) => {
                self.stats.malformed += 1;
                Err(e)
            }
        }
    }

    /// A symbol of a block older than the next in order, while ids are named missing: the block
    /// is decoded on the side (bounded), and its records that were named missing are handed on
    /// (recovered); the others are duplicates.
    fn late_symbol(&mut self, s: Symbol<'_>, now: Instant, out: &mut Vec<Output>) -> Result<(), WireError> {
        if !self.late.contains_key(&s.block) {
            let held = usize::try_from(s.block_bytes).unwrap_or(usize::MAX);
            while self.late.len() >= LATE_BLOCKS_MAX || self.held_bytes + held > HELD_BYTES_MAX {
                let Some((_, p)) = self.late.pop_first() else { break };
                self.held_bytes -= p.held;
            }
            if self.held_bytes + held > HELD_BYTES_MAX {
                self.stats.late_symbols += 1;
                return Ok(());
            }
            self.held_bytes += held;
            self.late.insert(s.block, Partial::new(&s, now, held));
        }
        let Some(p) = self.late.get_mut(&s.block) else { return Ok(()) };
        let Some(bytes) = p.take(&s).inspect_err(|_| self.stats.malformed += 1)? else { return Ok(()) };
        let held = p.held;
        self.late.remove(&s.block);
        self.held_bytes -= held;
        self.late_done.insert(s.block);
        while self.late_done.len() > LATE_BLOCKS_MAX {
            self.late_done.pop_first();
        }
        for r in self.open_block(&bytes)?.records {
            if self.take_missing(r.class, r.seq) {
                self.stats.recovered += 1;
                out.push(Output::Record(r));
            } else {
                self.stats.duplicates += 1;
            }
        }
        Ok(())
    }

    /// Gives up the lowest-numbered block being decoded; false if there is none.
    fn give_up_lowest(&mut self, out: &mut Vec<Output>) -> bool {
        let Some((&block, _)) = self.partial.iter().next() else { return false };
        if let Some(p) = self.partial.remove(&block) {
            self.held_bytes -= p.held;
        }
        self.stats.blocks_lost = self.stats.blocks_lost.saturating_add(1);
        // Only if it is the next one does the order move on; blocks decoded before it stay
        // and go on in their turn (`advance`, `expire`).
        if self.next_block == Some(block) {
            self.next_block = Some(block.saturating_add(1));
            self.hand_on_ready(out);
        }
        true
    }

    /// Hands on blocks in order; gives up a block that a later one has waited too long for;
    /// names a tail lost once a heartbeat promised it and the wait is over.
    pub fn advance(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.hand_on_ready(out);
        // Each turn gives up at least one block and jumps to the next block held, so this
        // ends after at most as many turns as blocks are held (block numbers are not walked
        // one by one: a hostile number far ahead costs nothing).
        loop {
            let Some(next) = self.next_block else { return };
            let later = next.saturating_add(1)..;
            let oldest_later = self
                .decoded
                .range(later.clone())
                .map(|(_, (at, _, _))| *at)
                .chain(self.partial.range(later.clone()).map(|(_, p)| p.first_seen))
                .min();
            let stuck = oldest_later.is_some_and(|at| now.duration_since(at) >= self.wait());
            if !stuck {
                break;
            }
            if let Some(p) = self.partial.remove(&next) {
                self.held_bytes -= p.held;
            }
            let Some(lowest_later) = self.lowest_held(next.saturating_add(1)) else { break };
            // `next` and every block between it and the next one held (never seen) are lost.
            self.stats.blocks_lost = self.stats.blocks_lost.saturating_add(lowest_later - next);
            self.next_block = Some(lowest_later);
            self.hand_on_ready(out);
        }
        // The tail: the heartbeat says blocks up to `promised` were sent; none of them is
        // still coming once the wait is over.
        if let (Some(next), Some((promised, sent))) = (self.next_block, self.promised)
            && self.partial.is_empty()
            && self.decoded.is_empty()
        {
            if promised > next {
                // Blocks announced that never came at all: only a heartbeat newer than the
                // wait can say so, so wait for the next one to confirm (a block may be in the air).
                return;
            }
            self.name_missing(sent, &[], out);
        }
    }

    /// Gives up blocks a heartbeat has announced that have not decoded (or not come at all)
    /// once the wait has passed since that heartbeat. The receiver calls it on a timer.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Output>) {
        let wait = self.wait();
        // Late blocks that did not decode within the wait never will (their repeat is over).
        let stale: Vec<u64> =
            self.late.iter().filter(|(_, p)| now.duration_since(p.first_seen) >= wait).map(|(b, _)| *b).collect();
        for block in stale {
            if let Some(p) = self.late.remove(&block) {
                self.held_bytes -= p.held;
            }
        }
        let (Some((promised, _)), Some(at)) = (self.promised, self.promised_at) else { return };
        if now.duration_since(at) < wait {
            return;
        }
        // Bounded like `advance`: blocks never seen are jumped over, not walked.
        while let Some(next) = self.next_block
            && next < promised
        {
            if self.decoded.contains_key(&next) {
                self.hand_on_ready(out);
                continue;
            }
            let to = match self.partial.get(&next) {
                Some(p) if now.duration_since(p.first_seen) < wait => break,
                Some(p) => {
                    let held = p.held;
                    self.partial.remove(&next);
                    self.held_bytes -= held;
                    next.saturating_add(1)
                }
                None => self.lowest_held(next).map_or(promised, |held| held.min(promised)),
            };
            self.stats.blocks_lost = self.stats.blocks_lost.saturating_add(to - next);
            self.next_block = Some(to);
        }
        self.advance(now, out);
    }

    /// The lowest block number at or after `from` that is decoded or being decoded.
    fn lowest_held(&self, from: u64) -> Option<u64> {
        let decoded = self.decoded.range(from..).next().map(|(b, _)| *b);
        let partial = self.partial.range(from..).next().map(|(b, _)| *b);
        decoded.into_iter().chain(partial).min()
    }

    fn hand_on_ready(&mut self, out: &mut Vec<Output>) {
        while let Some(next) = self.next_block {
            let Some((_, held, block)) = self.decoded.remove(&next) else { break };
            self.handed.insert(next);
            while self.handed.len() > 16 * LATE_BLOCKS_MAX {
                self.handed.pop_first();
            }
            self.held_bytes = self.held_bytes.saturating_sub(held);
            self.hand_on(block, out);
            self.next_block = Some(next.saturating_add(1));
        }
    }

    fn hand_on(&mut self, block: Block, out: &mut Vec<Output>) {
        self.name_missing(block.before, &block.records, out);
        for r in block.records {
            let c = usize::from(r.class);
            if r.seq <= self.last[c] {
                // Below the newest: a duplicate, unless it was named missing (then it is sent
                // again by hand on the OT side, and welcome late).
                if self.take_missing(r.class, r.seq) {
                    self.stats.recovered += 1;
                    out.push(Output::Record(r));
                } else {
                    self.stats.duplicates += 1;
                }
                continue;
            }
            // Ids skipped inside a block are the sender's own gaps, reported by its own gap
            // events: not named here.
            self.last[c] = r.seq;
            self.last_time[c] = r.time;
            self.stats.records += 1;
            out.push(Output::Record(r));
        }
    }

    /// Names ids up to `sent` (per class) that were never handed on; `next`: the records that
    /// come after them, for the time they end.
    fn name_missing(&mut self, sent: [u64; 4], next: &[BlockRecord], out: &mut Vec<Output>) {
        if self.fresh {
            return;
        }
        // Found at the first contact after a restart: sent while this receiver was down.
        let cause = if self.before_contact { MissingCause::ReceiverDown } else { MissingCause::BlocksLost };
        for (c, sent) in sent.into_iter().enumerate() {
            if sent > self.last[c] {
                let (first, last) = (self.last[c] + 1, sent);
                let to = next.iter().find(|r| usize::from(r.class) == c).map_or(0, |r| r.time);
                self.stats.missing = self.stats.missing.saturating_add(last - first + 1);
                self.remember_missing(c as u8, first, last);
                out.push(Output::Missing { class: c as u8, first, last, from: self.last_time[c], to, cause });
                self.last[c] = sent;
            }
        }
    }

    /// Ranges named missing, to take them if they are sent again: (class, first) -> last.
    pub fn missing(&self) -> &BTreeMap<(u8, u64), u64> {
        &self.missing
    }

    fn remember_missing(&mut self, class: u8, first: u64, last: u64) {
        self.named += 1;
        self.missing.insert((class, first), last);
        self.missing_age.insert((class, first), self.named);
        // Past the bound the oldest goes (a scan, only then: ranges are named once per loss).
        while self.missing.len() > MISSING_RANGES_MAX {
            let Some(oldest) = self.missing_age.iter().min_by_key(|(_, age)| **age).map(|(k, _)| *k) else { break };
            self.missing.remove(&oldest);
            self.missing_age.remove(&oldest);
        }
    }

    /// Whether `seq` of `class` was named missing; if so it is no longer.
    fn take_missing(&mut self, class: u8, seq: u64) -> bool {
        let Some((&(c, first), &last)) = self.missing.range(..=(class, seq)).next_back() else { return false };
        if c != class || seq > last {
            return false;
        }
        self.missing.remove(&(c, first));
        let age = self.missing_age.remove(&(c, first)).unwrap_or(0);
        if first < seq {
            self.missing.insert((c, first), seq - 1);
            self.missing_age.insert((c, first), age);
        }
        if seq < last {
            self.missing.insert((c, seq + 1), last);
            self.missing_age.insert((c, seq + 1), age);
        }
        true
    }

    /// At a session's end (the sender restarted), hands on what was decoded and gives up the rest.
    fn finish_session(&mut self, out: &mut Vec<Output>) {
        let decoded = std::mem::take(&mut self.decoded);
        self.stats.blocks_lost = self.stats.blocks_lost.saturating_add(self.partial.len() as u64);
        self.partial.clear();
        self.late.clear();
        self.late_done.clear();
        self.held_bytes = 0;
        for (_, (_, _, block)) in decoded {
            self.hand_on(block, out);
        }
        self.promised = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the bound, the oldest range named missing goes, whatever its class: a new range of
    /// events (class 0, the lowest key) once went at once, ahead of old raw ranges.
    #[test]
    fn the_oldest_missing_range_goes_first_not_the_lowest_key() {
        let mut a = Assembler::new("press-gw", Duration::from_millis(500), Some(State::default()));
        for i in 0..MISSING_RANGES_MAX as u64 {
            a.remember_missing(3, 10 * i + 1, 10 * i + 2);
        }
        a.remember_missing(0, 5, 6);
        assert_eq!(a.missing.len(), MISSING_RANGES_MAX);
        assert_eq!(a.missing.get(&(0, 5)), Some(&6), "the newest range was evicted");
        assert!(!a.missing.contains_key(&(3, 1)), "the oldest range was kept");
        // A range split by a record taken late keeps its age: both halves are older than a
        // range named after it.
        assert!(a.take_missing(3, 11));
        a.remember_missing(2, 7, 8);
        assert!(!a.missing.contains_key(&(3, 12)), "the rest of the oldest range went");
        assert!(a.missing.contains_key(&(3, 21)));
        assert!(a.missing.contains_key(&(2, 7)) && a.missing.contains_key(&(0, 5)));
    }
}
