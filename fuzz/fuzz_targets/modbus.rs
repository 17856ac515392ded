//! What a Modbus device sends: the MBAP frame guard over any byte stream, and register
//! decoding of any words for every kind of tag. Errors, never panics.
#![no_main]

use std::sync::OnceLock;

use airlock_config::{ModbusTag, Protocol};
use airlock_south_modbus::decode::{decode_bit, decode_registers};
use airlock_south_modbus::guard::FrameCheck;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[[device]]
name = "press"
asset_path = "acme/plant"
protocol = "modbus_tcp"
address = "127.0.0.1:502"
[[device.tag]]
name = "a"
space = "holding_register"
address = 0
type = "u16"
[[device.tag]]
name = "b"
space = "holding_register"
address = 1
type = "i32"
order = "cdab"
[[device.tag]]
name = "c"
space = "holding_register"
address = 3
type = "f32"
order = "badc"
[[device.tag]]
name = "d"
space = "holding_register"
address = 5
type = "f64"
order = "dcba"
[[device.tag]]
name = "e"
space = "holding_register"
address = 9
type = "u64"
scale = 0.1
offset = -3
[[device.tag]]
name = "f"
space = "holding_register"
address = 13
type = "string"
length_chars = 8
[[device.tag]]
name = "g"
space = "holding_register"
address = 17
type = "bool"
bit = 15
[[device.tag]]
name = "h"
space = "holding_register"
address = 18
type = "waveform"
waveform_samples = 16
sample_rate_hz = 1000
scale = 0.01
[[device.tag]]
name = "i"
space = "input_register"
address = 40
type = "i16"
"#;

fn tags() -> &'static [ModbusTag] {
    static TAGS: OnceLock<Vec<ModbusTag>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let config = airlock_config::parse(CONFIG, std::path::Path::new("fuzz.toml")).expect("the fuzz config");
        let Protocol::ModbusTcp(m) = &config.devices[0].protocol else { panic!("a Modbus device") };
        m.tags.clone()
    })
}

fuzz_target!(|bytes: &[u8]| {
    // The stream, fed in pieces of the sizes the first byte says; a request (transaction id
    // from the second byte) goes out before every third piece. What is handed on as an answer
    // starts with a right header and is never longer than a frame.
    let mut guard = FrameCheck::default();
    let step = usize::from(bytes.first().copied().unwrap_or(1)).max(1);
    let transaction = u16::from(bytes.get(1).copied().unwrap_or(0));
    let mut answer = Vec::new();
    for (i, piece) in bytes.chunks(step).enumerate() {
        if i % 3 == 0 {
            guard.expect_answer(Some(transaction));
            answer.clear();
        }
        if guard.feed(piece, &mut answer).is_err() {
            break;
        }
        assert!(answer.len() <= 7 + 253, "an answer longer than a frame");
        if answer.len() >= 7 {
            assert_eq!(answer[..4], [(transaction >> 8) as u8, transaction as u8, 0, 0], "a wrong header handed on");
        }
    }
    // The same bytes as registers for every tag, and as bits.
    let words: Vec<u16> = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
    for tag in tags() {
        let _ = decode_registers(tag, &words);
    }
    let bits: Vec<bool> = bytes.iter().map(|b| b & 1 == 1).collect();
    let _ = decode_bit(&bits);
});
