//! A static range-variant ANS coder (rANS) of our own, for the historian's chunks: a column of
//! small symbols (a time step's index, a value's bin) coded in the bits their frequencies give
//! them, fractions of a bit included, where a prefix code rounds each symbol up to whole bits (a
//! poll whose answer is late one time in five: 0.72 bits a time, where a prefix code takes 1).
//! The frequencies are the column's own, counted before it is coded, scaled to sum to 2^12 and
//! stored ahead of it; the coder's state is 32 bits, written out a byte at a time. Decoding
//! checks what it reads: a table that does not sum to 2^12, a state out of its range, a stream
//! that ends early or does not end where its coder started are errors, never a panic.
//!
//! ```text
//!  table: per symbol of the alphabet, varint frequency (0 for a symbol that does not occur)
//!  stream: u32 LE length, then the bytes (the final state first, big-endian)
//! ```

use super::chunk::{get_varint, put_varint, varint_bytes};

/// Frequencies sum to 2^this.
const SCALE_BITS: u32 = 12;
const SCALE: u32 = 1 << SCALE_BITS;
/// The state's lower bound; it stays in `[STATE_LOW, 2^31)` between symbols.
const STATE_LOW: u32 = 1 << 23;

/// How often each symbol of the alphabet occurs, scaled to sum to [`SCALE`], every symbol
/// that occurs at least once kept at 1 or more. `None` if more symbols occur than the scale
/// has room for, or none does.
pub(crate) fn frequencies(counts: &[u64]) -> Option<Vec<u32>> {
    let total: u64 = counts.iter().sum();
    let present = counts.iter().filter(|c| **c > 0).count();
    if total == 0 || present > SCALE as usize {
        return None;
    }
    let mut freqs: Vec<u32> = counts
        .iter()
        .map(|c| if *c == 0 { 0 } else { ((u128::from(*c) * u128::from(SCALE)) / u128::from(total)).max(1) as u32 })
        .collect();
    let mut sum: u32 = freqs.iter().sum();
    // Rounded down, the sum falls short by less than a unit a symbol, and raising the rarest
    // to 1 may take it over by as much: a unit at a time to (or from) the symbol where it
    // gains the most bits (or costs the fewest), count over frequency.
    while sum != SCALE {
        let gain = |i: &usize| counts[*i] as f64 / f64::from(freqs[*i]);
        let candidates = (0..freqs.len()).filter(|i| freqs[*i] > u32::from(sum > SCALE));
        let pick = if sum < SCALE {
            candidates.max_by(|a, b| gain(a).total_cmp(&gain(b)))
        } else {
            candidates.min_by(|a, b| gain(a).total_cmp(&gain(b)))
        }?;
        if sum < SCALE {
            freqs[pick] += 1;
            sum += 1;
        } else {
            freqs[pick] -= 1;
            sum -= 1;
        }
    }
    Some(freqs)
}

/// Bits the symbols counted `counts` take coded with `freqs` (their table and the state not
/// counted).
pub(crate) fn coded_bits(counts: &[u64], freqs: &[u32]) -> f64 {
    counts
        .iter()
        .zip(freqs)
        .filter(|(c, _)| **c > 0)
        .map(|(c, f)| *c as f64 * (f64::from(SCALE_BITS) - f64::from(*f).log2()))
        .sum()
}

/// Writes the table of `freqs` (from [`frequencies`]), as [`Table::read`] reads it.
pub(crate) fn put_table(out: &mut Vec<u8>, freqs: &[u32]) {
    for f in freqs {
        put_varint(out, u64::from(*f));
    }
}

/// Bytes [`put_table`] writes for `freqs`.
pub(crate) fn table_bytes(freqs: &[u32]) -> usize {
    freqs.iter().map(|f| varint_bytes(u64::from(*f))).sum()
}

/// Writes `symbols` coded, each `(table, symbol)` with the table of that index in `tables`
/// (each from [`frequencies`]): the stream's length, then the stream. A decoder must use the
/// same table for each symbol ([`Decoder::symbol`]). A symbol not in its table (a frequency
/// of 0: a bug in the counting) is an error.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    tables: &[&[u32]],
    symbols: impl DoubleEndedIterator<Item = (usize, usize)>,
) -> Result<(), String> {
    let cumulative: Vec<Vec<u32>> = tables
        .iter()
        .map(|freqs| {
            freqs
                .iter()
                .scan(0, |sum, f| {
                    let start = *sum;
                    *sum += f;
                    Some(start)
                })
                .collect()
        })
        .collect();
    // The coder runs backwards, so that the decoder reads forwards; its bytes are reversed.
    let mut reversed = Vec::new();
    let mut state = STATE_LOW;
    for (table, symbol) in symbols.rev() {
        let (f, c) = match (tables.get(table).and_then(|t| t.get(symbol)), cumulative.get(table)) {
            (Some(f), Some(c)) if *f > 0 => (*f, c[symbol]),
            _ => return Err(format!("symbol {symbol} is not in code table {table}")),
        };
        // (STATE_LOW >> SCALE_BITS) << 8 is 2^19: times a frequency of at most 2^12, below 2^32.
        let limit = ((STATE_LOW >> SCALE_BITS) << 8) * f;
        while state >= limit {
            reversed.push(state as u8);
            state >>= 8;
        }
        state = ((state / f) << SCALE_BITS) + state % f + c;
    }
    reversed.extend_from_slice(&state.to_le_bytes());
    out.extend_from_slice(&(reversed.len() as u32).to_le_bytes());
    out.extend(reversed.iter().rev());
    Ok(())
}

/// A table read back: each symbol's frequency and the start of its range, and which symbol
/// each of the [`SCALE`] slots belongs to.
pub(crate) struct Table {
    freqs: Vec<u32>,
    cumulative: Vec<u32>,
    slots: Vec<u8>,
}

impl Table {
    /// Reads the table of an alphabet of `symbols` (at most 256) at `at`.
    pub(crate) fn read(bytes: &[u8], at: &mut usize, symbols: usize) -> Result<Table, String> {
        if symbols == 0 || symbols > 256 {
            return Err(format!("a code of {symbols} symbols"));
        }
        let mut freqs = Vec::with_capacity(symbols);
        let mut cumulative = Vec::with_capacity(symbols);
        let mut sum = 0u64;
        for _ in 0..symbols {
            let f = get_varint(bytes, at)?;
            cumulative.push(sum as u32);
            if f > u64::from(SCALE) - sum {
                return Err("a code's frequencies past its scale".into());
            }
            sum += f;
            freqs.push(f as u32);
        }
        if sum != u64::from(SCALE) {
            return Err(format!("a code's frequencies sum to {sum}, not {SCALE}"));
        }
        let mut slots = vec![0u8; SCALE as usize];
        for (symbol, (f, c)) in freqs.iter().zip(&cumulative).enumerate() {
            slots[*c as usize..(*c + *f) as usize].fill(symbol as u8);
        }
        Ok(Table { freqs, cumulative, slots })
    }
}

/// Reads a stream [`encode`] wrote, a symbol at a time.
pub(crate) struct Decoder<'a> {
    state: u32,
    next: std::slice::Iter<'a, u8>,
}

impl<'a> Decoder<'a> {
    /// The stream at `at`; `at` moves past it.
    pub(crate) fn new(bytes: &'a [u8], at: &mut usize) -> Result<Self, String> {
        let length =
            bytes.get(*at..*at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes).ok_or("short code")?;
        let stream = bytes.get(*at + 4..*at + 4 + length as usize).ok_or("short code")?;
        *at += 4 + length as usize;
        let mut next = stream.iter();
        let mut state = 0u32;
        for _ in 0..4 {
            state = (state << 8) | u32::from(*next.next().ok_or("short code")?);
        }
        if !(STATE_LOW..1 << 31).contains(&state) {
            return Err("a code's state out of its range".into());
        }
        Ok(Decoder { state, next })
    }

    /// The next symbol, coded with `table`.
    pub(crate) fn symbol(&mut self, table: &Table) -> Result<usize, String> {
        let slot = self.state & (SCALE - 1);
        let symbol = usize::from(table.slots[slot as usize]);
        // A slot belongs to a symbol of frequency 1 or more; the state stays below 2^31.
        self.state = table.freqs[symbol] * (self.state >> SCALE_BITS) + slot - table.cumulative[symbol];
        while self.state < STATE_LOW {
            self.state = (self.state << 8) | u32::from(*self.next.next().ok_or("short code")?);
        }
        Ok(symbol)
    }

    /// Checks that the stream ended where its coder began, every byte read.
    pub(crate) fn finish(mut self) -> Result<(), String> {
        if self.state != STATE_LOW || self.next.next().is_some() {
            return Err("a code that does not end where it began".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(symbols: &[usize], alphabet: usize) -> Vec<u8> {
        let mut counts = vec![0u64; alphabet];
        for s in symbols {
            counts[*s] += 1;
        }
        let freqs = frequencies(&counts).unwrap();
        assert_eq!(freqs.iter().sum::<u32>(), SCALE);
        assert!(counts.iter().zip(&freqs).all(|(c, f)| (*c == 0) == (*f == 0)), "{counts:?} {freqs:?}");
        let mut out = Vec::new();
        put_table(&mut out, &freqs);
        assert_eq!(out.len(), table_bytes(&freqs));
        encode(&mut out, &[&freqs], symbols.iter().map(|s| (0, *s))).unwrap();
        let mut at = 0;
        let table = Table::read(&out, &mut at, alphabet).unwrap();
        let mut decoder = Decoder::new(&out, &mut at).unwrap();
        let back: Vec<usize> = symbols.iter().map(|_| decoder.symbol(&table).unwrap()).collect();
        decoder.finish().unwrap();
        assert_eq!(back, symbols);
        assert_eq!(at, out.len());
        out
    }

    /// Symbols come back in order whatever their frequencies: one symbol alone, two at every
    /// skew, a flat alphabet of 256, a symbol that occurs once among a million others; and a
    /// skewed pair costs its entropy, not a bit a symbol.
    #[test]
    fn symbols_come_back_and_cost_their_entropy() {
        assert_eq!(round_trip(&[0; 1000], 1).len(), 2 + 4 + 4, "one symbol: the table and the state");
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for one_in in [2u64, 5, 17, 1000, 4095, 100_000] {
            let symbols: Vec<usize> = (0..50_000).map(|_| usize::from(next() % one_in == 0)).collect();
            let bytes = round_trip(&symbols, 2);
            let p = symbols.iter().filter(|s| **s == 1).count() as f64 / symbols.len() as f64;
            let entropy = if p > 0.0 { -(p * p.log2() + (1.0 - p) * (1.0 - p).log2()) } else { 0.0 };
            let bits = bytes.len() as f64 * 8.0 / symbols.len() as f64;
            assert!(bits < entropy * 1.01 + 0.01, "1 in {one_in}: {bits:.4} bits a symbol, entropy {entropy:.4}");
        }
        let flat: Vec<usize> = (0..100_000).map(|_| (next() % 256) as usize).collect();
        let bytes = round_trip(&flat, 256);
        assert!(bytes.len() < 100_000 + 600, "{} bytes for 100,000 flat bytes", bytes.len());
        let mut rare = vec![0usize; 1_000_000];
        rare[777_777] = 1;
        round_trip(&rare, 2);
        // More symbols than the scale has room for: no table.
        assert!(frequencies(&vec![1; 5000]).is_none());
        assert!(frequencies(&[0, 0]).is_none());
        // Every count of symbols over a few skews sums to the scale, none lost.
        for alphabet in [2usize, 3, 16, 65, 256] {
            let counts: Vec<u64> = (0..alphabet).map(|i| if i % 3 == 1 { 0 } else { 1 + (next() % 100_000) }).collect();
            let f = frequencies(&counts).unwrap();
            assert_eq!(f.iter().sum::<u32>(), SCALE);
        }
        let counts: Vec<u64> = (0..4096).map(|i| if i == 0 { 1_000_000 } else { 1 }).collect();
        assert_eq!(frequencies(&counts).unwrap().iter().sum::<u32>(), SCALE);
    }

    /// Symbols coded each with the table of its context (the symbol before it) come back, in
    /// the bits of each context's own frequencies.
    #[test]
    fn symbols_in_contexts_come_back() {
        // After a 1 always a 0; after a 0 a 1 one time in four.
        let symbols: Vec<usize> = (0..40_000).map(|i| usize::from(i % 5 == 0)).collect();
        let mut counts = [[0u64; 2]; 2];
        for w in symbols.windows(2) {
            counts[w[0]][w[1]] += 1;
        }
        counts[0][symbols[0]] += 1;
        let tables: Vec<Vec<u32>> = counts.iter().map(|c| frequencies(c).unwrap()).collect();
        let refs: Vec<&[u32]> = tables.iter().map(Vec::as_slice).collect();
        let context = |i: usize| if i == 0 { 0 } else { symbols[i - 1] };
        let mut out = Vec::new();
        encode(&mut out, &refs, (0..symbols.len()).map(|i| (context(i), symbols[i]))).unwrap();
        assert!(encode(&mut Vec::new(), &refs, [(0, 2)].into_iter()).is_err(), "a symbol past the table");
        assert!(encode(&mut Vec::new(), &[&[4096, 0]], [(0, 1)].into_iter()).is_err(), "a symbol of frequency 0");
        let bits = out.len() as f64 * 8.0 / symbols.len() as f64;
        assert!(bits < 0.8 * 0.8113 + 0.01, "{bits:.4} bits a symbol");
        let mut bytes = Vec::new();
        tables.iter().for_each(|t| put_table(&mut bytes, t));
        bytes.extend_from_slice(&out);
        let mut at = 0;
        let read: Vec<Table> = (0..2).map(|_| Table::read(&bytes, &mut at, 2).unwrap()).collect();
        let mut decoder = Decoder::new(&bytes, &mut at).unwrap();
        let mut context = 0;
        for (i, s) in symbols.iter().enumerate() {
            context = decoder.symbol(&read[context]).unwrap();
            assert_eq!(context, *s, "symbol {i}");
        }
        decoder.finish().unwrap();
    }

    /// A damaged table or stream is an error, never a panic, and a stream that decodes to
    /// other symbols but does not end where its coder began is found.
    #[test]
    fn a_damaged_code_is_an_error() {
        let symbols: Vec<usize> = (0..5000).map(|i| [0, 0, 0, 1, 2, 0, 1][i % 7]).collect();
        let bytes = round_trip(&symbols, 3);
        let decode = |bytes: &[u8], count: usize| {
            let mut at = 0;
            let table = Table::read(bytes, &mut at, 3)?;
            let mut decoder = Decoder::new(bytes, &mut at)?;
            for _ in 0..count {
                decoder.symbol(&table)?;
            }
            decoder.finish()
        };
        assert!(decode(&bytes, 5000).is_ok());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], 5000).is_err(), "cut at {cut}");
        }
        assert!(decode(&bytes, 5001).is_err(), "more symbols than were coded");
        assert!(decode(&bytes, 4999).is_err(), "fewer");
        let mut found = 0;
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[at] ^= 1 << bit;
                found += usize::from(decode(&b, 5000).is_err());
            }
        }
        assert!(found > bytes.len() * 8 / 2, "{found} of {} flips found", bytes.len() * 8);
        let mut at = 0;
        assert!(Table::read(&[0x80, 0x20], &mut at, 1).is_ok(), "4096 as a varint");
        for (table, symbols) in [(&[0x80u8, 0x21][..], 1), (&[0x00, 0x00][..], 2), (&[0xff, 0xff, 0xff, 0x0f][..], 1)] {
            assert!(Table::read(table, &mut 0, symbols).is_err(), "{table:?}");
        }
        // A frequency that overflows the sum (a varint of 2^64 - 1): an error, not a panic.
        let mut wrap = vec![0x01];
        wrap.extend([0xff; 9]);
        wrap.extend([0x01, 0x80, 0x20]);
        assert!(Table::read(&wrap, &mut 0, 3).is_err());
        assert!(Table::read(&[0x80, 0x20], &mut 0, 0).is_err());
        assert!(Table::read(&[0x80, 0x20], &mut 0, 257).is_err());
    }
}
