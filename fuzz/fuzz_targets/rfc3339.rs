//! Times from OT MQTT time pointers and the command line: refused or a real time, never a panic;
//! a time parsed displays as a time that parses to itself (to the millisecond).
#![no_main]

use airlock_model::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Some(t) = Timestamp::parse_rfc3339(text) {
        let ms = Timestamp::from_millis(t.as_millis());
        assert_eq!(Timestamp::parse_rfc3339(&ms.to_string()), Some(ms), "{text:?}");
    }
});
