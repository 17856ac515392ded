//! A config file: valid, or every problem named with its line; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Err(errors) = airlock_config::parse(text, std::path::Path::new("fuzz.toml")) {
        for e in errors.0 {
            assert!(e.line >= 1 || text.is_empty() || e.line == 0, "{e}");
        }
    }
});
