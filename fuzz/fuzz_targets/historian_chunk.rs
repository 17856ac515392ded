//! A historian chunk (pco or Gorilla), a block of many tags' chunks, and an index entry, with
//! any bytes, and the Gorilla bit streams alone: columns or an error, never a panic; memory
//! bounded by the input's size and the samples a chunk may hold (8,192 in a block's section,
//! 4 M in a chunk record of the format before blocks). And any columns the input describes
//! (times stepping by a few values, for the steps' dictionary, or by many, for pco; values that
//! hold, change now and then, for runs, or always, and noise around a level as f32s or tenths,
//! for distances from a running mean), written as a chunk, read back bit for bit;
//! and rounded to a tag's stated resolution, in a block told it, read back bit for bit.
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
    if bytes.len() >= 4 {
        let palette = [0.0, -0.0, 1.0, 65_535.0, -32_768.0, 9_007_199_254_740_991.0, f64::NAN, 1e300, 0.1, f64::INFINITY];
        let steps_n = usize::from(bytes[0] % 20) + 1;
        let steps: Vec<i64> = (0..steps_n)
            .map(|k| {
                let b = bytes.get(1 + k).copied().unwrap_or(0);
                match b % 4 {
                    0 => 1000 + i64::from(b),
                    1 => -i64::from(b),
                    2 => i64::MAX - i64::from(b),
                    _ => i64::from(b) << 40,
                }
            })
            .collect();
        let n = (usize::from(bytes[1]) * 33 + usize::from(bytes[2])) % chunk::SECTION_SAMPLES_MAX + 1;
        let body = &bytes[3..];
        let mut c = chunk::Columns::default();
        let (mut time, mut value) = (i64::from(bytes[2]) << 32, 0.0);
        for i in 0..n {
            let b = body[i % body.len()];
            if bytes[0] & 0xc0 == 0xc0 {
                // Noise around a level, read as an f32 (stored as distances from a mean).
                value = f64::from(50.0f32 + f32::from(b) * 0.013 - (i % 700) as f32 * 0.01);
            } else if bytes[0] & 0xc0 == 0x40 {
                // A noisy scaled register, in tenths, now and then far off (an escape).
                let far = if b == 255 { 1e7 } else { 0.0 };
                value = (f64::from(b) + 3000.0 + far) * 0.1;
            } else if bytes[0] & 0x80 != 0 {
                value = f64::from(b) * 0.37 + i as f64;
            } else if b % 16 == 0 {
                value = palette[usize::from(b / 16) % palette.len()];
            }
            c.push(time, value, u16::from(b % 3 == 0));
            time = time.wrapping_add(steps[usize::from(b) % steps_n]);
        }
        let encoded = chunk::encode(chunk::Codec::Pco, 1, &c, None).expect("any columns encode");
        let back = chunk::decode(&encoded, |_| Err("no shared times".into())).expect("a chunk just written decodes");
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(back.times, c.times);
        assert_eq!(bits(&back.values), bits(&c.values));
        assert_eq!(back.quality, c.quality);
        // The same columns rounded to a tag's resolution (one the input picks), in a block
        // whose codec is told that resolution: back bit for bit.
        let resolution = [0.01, 0.1, 0.5, 5.0, 1e-6, 1e-310, 1e300][bytes.len() % 7];
        let mut rounded = c.clone();
        rounded.values.iter_mut().for_each(|v| *v = chunk::to_resolution(*v, resolution));
        let mut writer = chunk::BlockWriter::default();
        writer.push(chunk::Codec::Pco, 1, &rounded, None, Some(resolution)).expect("any columns go in a block");
        let (written, _) = writer.finish().expect("a block of one section finishes");
        let block = chunk::Block::open(written.as_slice()).expect("a block just written opens");
        let back = block.decode(&block.section(0).expect("its one section")).expect("and decodes");
        assert_eq!(bits(&back.values), bits(&rounded.values));
        assert_eq!(back.times, rounded.times);
    }

    let count = usize::from(bytes.first().copied().unwrap_or(0)) * 8;
    let rest = bytes.get(1..).unwrap_or_default();
    let _ = decode_times(&mut BitReader::new(rest), count);
    let _ = decode_values(&mut BitReader::new(rest), count);
});
