//! Registers and bits to engineering values.
//!
//! Registers arrive as 16-bit words in request order. The tag's [`WordOrder`] says how to put
//! them back into big-endian bytes: reverse the words if the device sends the least significant
//! word first, swap the two bytes of each word if the device swaps them. Then the bytes are read
//! as the tag's type, and numbers are scaled: `raw * scale + offset`. A scaled number becomes an
//! `f64`; an unscaled integer keeps its integer type. Nothing here panics on any input: a short
//! answer is a decode error.

use airlock_config::{DataType, ModbusTag, WordOrder};
use airlock_model::{Reason, Value};

/// Decodes the value of `tag` from `words`, the registers of its request starting at the tag.
pub fn decode_registers(tag: &ModbusTag, words: &[u16]) -> Result<Value, Reason> {
    // The commonest tag, a plain 16-bit register, straight (10,000 of them a millisecond).
    if matches!(tag.data_type, DataType::U16 | DataType::I16) && tag.bit.is_none() && !tag.is_scaled() {
        let word = *words.first().ok_or(Reason::DecodeError)?;
        let word = if tag.order.swaps_bytes() { word.swap_bytes() } else { word };
        return Ok(match tag.data_type {
            DataType::U16 => Value::U64(u64::from(word)),
            _ => Value::I64(i64::from(word as i16)),
        });
    }
    let width = usize::from(tag.data_type.registers());
    let words = words.get(..width).ok_or(Reason::DecodeError)?;
    if let (DataType::Bool, Some(bit)) = (tag.data_type, tag.bit) {
        return Ok(Value::Bool(words[0] >> bit & 1 == 1));
    }
    if let DataType::String { length_chars } = tag.data_type {
        return decode_string(words, tag.order, usize::from(length_chars));
    }
    if let DataType::Waveform { .. } = tag.data_type {
        let swap = tag.order.swaps_bytes();
        let samples: Vec<f32> = words
            .iter()
            .map(|w| {
                let w = if swap { w.swap_bytes() } else { *w };
                (f64::from(w as i16) * tag.scale + tag.offset) as f32
            })
            .collect();
        return Ok(Value::Waveform(samples.into()));
    }
    let mut bytes = [0u8; 8];
    let n = width * 2;
    for (i, w) in ordered(words, tag.order).enumerate() {
        let w = if tag.order.swaps_bytes() { w.swap_bytes() } else { w };
        bytes[i * 2..i * 2 + 2].copy_from_slice(&w.to_be_bytes());
    }
    let raw = number(tag.data_type, &bytes[..n])?;
    scale(tag, raw)
}

/// Decodes a bool tag from `bits`, the bits of its request starting at the tag.
pub fn decode_bit(bits: &[bool]) -> Result<Value, Reason> {
    bits.first().map(|b| Value::Bool(*b)).ok_or(Reason::DecodeError)
}

fn ordered(words: &[u16], order: WordOrder) -> impl Iterator<Item = u16> + '_ {
    let reverse = order.swaps_words();
    (0..words.len()).map(move |i| if reverse { words[words.len() - 1 - i] } else { words[i] })
}

/// A number before scaling.
enum Raw {
    Int(i64),
    UInt(u64),
    Float(f64),
}

fn number(ty: DataType, b: &[u8]) -> Result<Raw, Reason> {
    let arr = |n: usize| -> Result<[u8; 8], Reason> {
        let mut a = [0u8; 8];
        a[8 - n..].copy_from_slice(b.get(..n).ok_or(Reason::DecodeError)?);
        Ok(a)
    };
    Ok(match ty {
        DataType::U16 => Raw::UInt(u64::from(u16::from_be_bytes([b[0], b[1]]))),
        DataType::I16 => Raw::Int(i64::from(i16::from_be_bytes([b[0], b[1]]))),
        DataType::U32 => Raw::UInt(u64::from_be_bytes(arr(4)?)),
        DataType::I32 => Raw::Int(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::U64 => Raw::UInt(u64::from_be_bytes(arr(8)?)),
        DataType::I64 => Raw::Int(i64::from_be_bytes(arr(8)?)),
        DataType::F32 => Raw::Float(f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::F64 => Raw::Float(f64::from_be_bytes(arr(8)?)),
        DataType::Bool => Raw::UInt(u64::from(u16::from_be_bytes([b[0], b[1]]) != 0)),
        DataType::String { .. } | DataType::Waveform { .. } => return Err(Reason::DecodeError),
    })
}

fn scale(tag: &ModbusTag, raw: Raw) -> Result<Value, Reason> {
    let value = match raw {
        Raw::Float(f) => Value::F64(f * tag.scale + tag.offset),
        Raw::Int(i) if !tag.is_scaled() => return Ok(Value::I64(i)),
        Raw::UInt(u) if !tag.is_scaled() => {
            return Ok(if tag.data_type == DataType::Bool { Value::Bool(u != 0) } else { Value::U64(u) });
        }
        Raw::Int(i) => Value::F64(i as f64 * tag.scale + tag.offset),
        Raw::UInt(u) => Value::F64(u as f64 * tag.scale + tag.offset),
    };
    match value {
        Value::F64(f) if !f.is_finite() => Err(Reason::NotFinite),
        v => Ok(v),
    }
}

fn decode_string(words: &[u16], order: WordOrder, length_chars: usize) -> Result<Value, Reason> {
    let mut bytes = Vec::with_capacity(words.len() * 2);
    for w in words {
        let w = if order.swaps_bytes() { w.swap_bytes() } else { *w };
        bytes.extend_from_slice(&w.to_be_bytes());
    }
    bytes.truncate(length_chars);
    if !bytes.iter().all(|b| b.is_ascii()) {
        return Err(Reason::DecodeError);
    }
    let text = String::from_utf8(bytes).map_err(|_| Reason::DecodeError)?;
    Ok(Value::Text(text.trim_end_matches(['\0', ' ']).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;
    use WordOrder::*;
    use airlock_config::Space;
    use airlock_model::AssetPath;

    fn tag(data_type: DataType, order: WordOrder, scale: f64, offset: f64) -> ModbusTag {
        ModbusTag {
            name: "t".into(),
            path: AssetPath::parse("a/d/t").unwrap(),
            space: Space::HoldingRegister,
            address: 0,
            data_type,
            order,
            bit: None,
            scale,
            offset,
        }
    }

    /// Decodes `words` as `ty` in `order`, unscaled, and compares with `expected`.
    fn check(ty: DataType, order: WordOrder, words: &[u16], expected: Result<Value, Reason>) {
        assert_eq!(decode_registers(&tag(ty, order, 1.0, 0.0), words), expected, "{ty:?} {order:?} {words:04x?}");
    }

    #[test]
    fn sixteen_bit_types_in_every_order() {
        for order in [Abcd, Cdab] {
            check(U16, order, &[0x1234], Ok(Value::U64(0x1234)));
            check(I16, order, &[0xfffe], Ok(Value::I64(-2)));
        }
        for order in [Badc, Dcba] {
            check(U16, order, &[0x3412], Ok(Value::U64(0x1234)));
            check(I16, order, &[0xfeff], Ok(Value::I64(-2)));
        }
    }

    #[test]
    fn thirty_two_bit_types_in_every_order() {
        let cases: [(WordOrder, [u16; 2]); 4] =
            [(Abcd, [0x1122, 0x3344]), (Cdab, [0x3344, 0x1122]), (Badc, [0x2211, 0x4433]), (Dcba, [0x4433, 0x2211])];
        for (order, words) in cases {
            check(U32, order, &words, Ok(Value::U64(0x1122_3344)));
            check(I32, order, &words, Ok(Value::I64(0x1122_3344)));
        }
        let f = 123.456_f32.to_bits();
        let (hi, lo) = ((f >> 16) as u16, f as u16);
        check(F32, Abcd, &[hi, lo], Ok(Value::F64(f64::from(123.456_f32))));
        check(F32, Cdab, &[lo, hi], Ok(Value::F64(f64::from(123.456_f32))));
        check(F32, Badc, &[hi.swap_bytes(), lo.swap_bytes()], Ok(Value::F64(f64::from(123.456_f32))));
        check(F32, Dcba, &[lo.swap_bytes(), hi.swap_bytes()], Ok(Value::F64(f64::from(123.456_f32))));
        check(I32, Abcd, &[0xffff, 0xff85], Ok(Value::I64(-123)));
    }

    #[test]
    fn sixty_four_bit_types_in_every_order() {
        let w = [0x0102, 0x0304, 0x0506, 0x0708];
        let rev = [0x0708, 0x0506, 0x0304, 0x0102];
        let swapped = w.map(u16::swap_bytes);
        let both = rev.map(u16::swap_bytes);
        for (order, words) in [(Abcd, w), (Cdab, rev), (Badc, swapped), (Dcba, both)] {
            check(U64, order, &words, Ok(Value::U64(0x0102_0304_0506_0708)));
            check(I64, order, &words, Ok(Value::I64(0x0102_0304_0506_0708)));
        }
        let bits = (-2.5e300_f64).to_bits();
        let words: Vec<u16> = (0..4).map(|i| (bits >> (48 - 16 * i)) as u16).collect();
        check(F64, Abcd, &words, Ok(Value::F64(-2.5e300)));
        check(I64, Abcd, &[0xffff; 4], Ok(Value::I64(-1)));
        check(U64, Abcd, &[0xffff; 4], Ok(Value::U64(u64::MAX)));
    }

    #[test]
    fn strings_trim_and_reject_non_ascii() {
        let s = |t: &str| Ok(Value::Text(t.into()));
        check(String { length_chars: 6 }, Abcd, &[0x5052, 0x4553, 0x5331], s("PRESS1"));
        check(String { length_chars: 5 }, Abcd, &[0x5052, 0x4553, 0x5331], s("PRESS"));
        check(String { length_chars: 6 }, Abcd, &[0x4142, 0x0000, 0x0000], s("AB"));
        check(String { length_chars: 4 }, Abcd, &[0x4142, 0x2020], s("AB"));
        check(String { length_chars: 4 }, Badc, &[0x4241, 0x4443], s("ABCD"));
        check(String { length_chars: 2 }, Abcd, &[0xc3a9], Err(Reason::DecodeError));
    }

    #[test]
    fn scale_and_offset_give_engineering_values() {
        let t = tag(I16, Abcd, 0.1, -40.0);
        assert_eq!(decode_registers(&t, &[655]), Ok(Value::F64(655.0 * 0.1 - 40.0)));
        let t = tag(U32, Cdab, 2.0, 1.0);
        assert_eq!(decode_registers(&t, &[0x0001, 0x0000]), Ok(Value::F64(3.0)));
        let t = tag(F32, Abcd, 1000.0, 0.0);
        assert_eq!(decode_registers(&t, &[0x3f80, 0x0000]), Ok(Value::F64(1000.0)));
    }

    #[test]
    fn bad_numbers_and_short_answers_are_errors() {
        check(F32, Abcd, &[0x7fc0, 0x0000], Err(Reason::NotFinite));
        check(F64, Abcd, &[0x7ff0, 0, 0, 0], Err(Reason::NotFinite));
        check(U32, Abcd, &[0x0001], Err(Reason::DecodeError));
        check(F64, Abcd, &[], Err(Reason::DecodeError));
        check(U16, Abcd, &[], Err(Reason::DecodeError));
        check(I16, Badc, &[], Err(Reason::DecodeError));
        assert_eq!(decode_bit(&[]), Err(Reason::DecodeError));
    }

    #[test]
    fn waveforms_are_signed_scaled_samples() {
        let t = tag(Waveform { samples: 4, rate_hz: 1000 }, Abcd, 0.01, 0.0);
        let Ok(Value::Waveform(w)) = decode_registers(&t, &[100, 0xff9c, 0, 32767]) else { panic!() };
        assert_eq!(&w[..], &[1.0, -1.0, 0.0, 327.67]);
        let t = tag(Waveform { samples: 2, rate_hz: 1000 }, Badc, 1.0, 0.0);
        let Ok(Value::Waveform(w)) = decode_registers(&t, &[0x0100, 0xffff]) else { panic!() };
        assert_eq!(&w[..], &[1.0, -1.0]);
        assert_eq!(decode_registers(&t, &[1]), Err(Reason::DecodeError), "a short block is refused");
    }

    #[test]
    fn bools_from_bits_and_register_bits() {
        assert_eq!(decode_bit(&[true, false]), Ok(Value::Bool(true)));
        let mut t = tag(Bool, Abcd, 1.0, 0.0);
        t.bit = Some(15);
        assert_eq!(decode_registers(&t, &[0x8000]), Ok(Value::Bool(true)));
        t.bit = Some(0);
        assert_eq!(decode_registers(&t, &[0x8000]), Ok(Value::Bool(false)));
    }
}
