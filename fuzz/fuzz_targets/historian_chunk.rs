//! A historian chunk (pco or Gorilla), a block of many tags' chunks, and an index entry, with
//! any bytes, and the Gorilla bit streams alone: columns or an error, never a panic; memory
//! bounded by the input's size and the samples a chunk may hold (8,192 in a block's section,
//! 4 M in a chunk record of the format before blocks).
#![no_main]

use airlock_store::historian::chunk;
use airlock_store::historian::gorilla::{BitReader, decode_times, decode_values};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = chunk::entry(bytes);
    let _ = chunk::decode(bytes, |_| Ok((0..64).collect()));
    if let Ok(block) = chunk::Block::open(bytes) {
        for tag in [0, 1, 2, block.prefix.tag_min, block.prefix.tag_max, u32::MAX] {
            // A directory of any size: look at a few sections only, as a query of one tag does.
            for i in block.sections_of(tag).take(4) {
                if let Ok(section) = block.section(i) {
                    let _ = block.decode(&section);
                }
            }
        }
    }
    let count = usize::from(bytes.first().copied().unwrap_or(0)) * 8;
    let rest = bytes.get(1..).unwrap_or_default();
    let _ = decode_times(&mut BitReader::new(rest), count);
    let _ = decode_values(&mut BitReader::new(rest), count);
});
