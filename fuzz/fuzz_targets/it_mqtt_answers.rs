//! What an IT MQTT broker sends back to the sink, as bytes on the wire, cut at any points:
//! CONNACKs, PUBACKs and PINGRESPs, or a protocol error that ends the session; never a panic,
//! and never more held than one partial answer: a fixed header of at most 5 bytes (a remaining
//! length written in more bytes than it needs is allowed) and a body of at most 2, since a
//! longer answer is refused as soon as its header is read.
#![no_main]

use airlock_north::mqtt::link::Answers;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size (1 to 256 bytes a read).
    let Some((&piece, stream)) = data.split_first() else { return };
    let piece = usize::from(piece) + 1;
    let mut answers = Answers::default();
    for bytes in stream.chunks(piece) {
        answers.push(bytes);
        loop {
            match answers.next_answer() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(answers.held() < 5 + 2, "held {}", answers.held());
    }
});
