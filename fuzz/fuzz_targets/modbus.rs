//! What a Modbus device sends: the MBAP frame guard over any byte stream, answer after answer,
//! and register decoding of any words for every kind of tag. Errors, never panics.
#![no_main]

use std::sync::OnceLock;

use airlock_config::Space;
use airlock_config::{ModbusTag, Protocol};
use airlock_south_modbus::decode::{decode_bit, decode_registers};
use airlock_south_modbus::guard::FrameCheck;
use airlock_south_modbus::link::{Data, parse_answer};
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
    // The stream, fed in pieces of the sizes the first byte says, as a link feeds it: what an
    // answer does not take is fed again for the next one. Each answer may carry one of a window
    // of transaction ids (requests in flight: the second byte says the first, the third how
    // many), which moves on by one an answer. What is handed on as an answer starts with a
    // right header for the window and is never longer than a frame; what is taken is never
    // more than what was fed.
    let mut guard = FrameCheck::default();
    let step = usize::from(bytes.first().copied().unwrap_or(1)).max(1);
    let mut transaction = u16::from(bytes.get(1).copied().unwrap_or(0)).wrapping_mul(257);
    let window = 1 + u16::from(bytes.get(2).copied().unwrap_or(0) % 4);
    let mut answer = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    guard.expect_answer_among(Some((transaction, window)));
    'stream: for piece in bytes.chunks(step) {
        pending.extend_from_slice(piece);
        while !pending.is_empty() {
            let Ok(taken) = guard.feed(&pending, &mut answer) else { break 'stream };
            assert!(taken <= pending.len(), "took more than was fed");
            pending.drain(..taken);
            assert!(answer.len() <= 7 + 253, "an answer longer than a frame");
            if answer.len() >= 7 {
                let answered = u16::from_be_bytes([answer[0], answer[1]]);
                assert!(answered.wrapping_sub(transaction) < window, "an answer to a transaction not in flight");
                assert_eq!(answer[2..4], [0, 0], "a wrong protocol id handed on");
            }
            if !guard.answered() {
                assert!(pending.is_empty(), "bytes left before the answer is whole");
                break;
            }
            assert_eq!(answer.len(), 6 + usize::from(u16::from_be_bytes([answer[4], answer[5]])), "a cut answer");
            // The answer as a read of some space and count (from the frame's own bytes): what
            // comes out is exactly that many registers or bits, or an error.
            let space = match answer.get(7).copied().unwrap_or(0) & 0x7f {
                1 => Space::Coil,
                2 => Space::DiscreteInput,
                3 => Space::HoldingRegister,
                _ => Space::InputRegister,
            };
            let byte_count = u16::from(answer.get(8).copied().unwrap_or(0));
            let count = match space {
                Space::Coil | Space::DiscreteInput => (byte_count * 8).saturating_sub(u16::from(answer[0] & 7)),
                Space::HoldingRegister | Space::InputRegister => byte_count / 2,
            };
            match parse_answer(&answer, answer[6], space, count) {
                Ok(Ok(Data::Words(w))) => assert_eq!(w.len(), usize::from(count)),
                Ok(Ok(Data::Bits(b))) => assert_eq!(b.len(), usize::from(count)),
                Ok(Err(_)) | Err(_) => {}
            }
            transaction = transaction.wrapping_add(1);
            guard.expect_answer_among(Some((transaction, window)));
            answer.clear();
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
