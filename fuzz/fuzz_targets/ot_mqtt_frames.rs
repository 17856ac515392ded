//! What an OT MQTT broker sends, as bytes on the wire, cut at any points: frames, an oversized
//! message read past, or a protocol error; never a panic, and never more held than one message
//! under the bound plus a topic and one read.
#![no_main]

use airlock_south_mqtt::link::Frames;
use libfuzzer_sys::fuzz_target;

/// A small bound, so that inputs of a few kilobytes cross it.
const MESSAGE_BYTES_MAX: usize = 256;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size (1 to 256 bytes a read).
    let Some((&piece, stream)) = data.split_first() else { return };
    let piece = usize::from(piece) + 1;
    let mut frames = Frames::new(MESSAGE_BYTES_MAX);
    for bytes in stream.chunks(piece) {
        frames.push(bytes);
        loop {
            match frames.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(frames.held() <= MESSAGE_BYTES_MAX + 5 + 2 + usize::from(u16::MAX) + piece, "held {}", frames.held());
    }
});
