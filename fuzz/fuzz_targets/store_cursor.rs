//! A sink's cursor file with any bytes: a position or refused, never a panic.
#![no_main]

use airlock_store::outbox::decode_cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = decode_cursor(bytes);
});
