//! The diode's receiving half with any datagrams: counted and refused, or taken, never a panic
//! or a hang, never more memory than its bounds (`airlock_diode::fuzzing` says how the bytes
//! are read).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    airlock_diode::fuzzing::run(bytes);
});
