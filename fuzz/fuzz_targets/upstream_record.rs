//! The outbox's record decoder: any bytes decode or fail, never panic; what decodes encodes to
//! bytes that decode and encode to the same bytes again (bytes, not records, are compared: a
//! NaN figure is a record unequal to itself).
#![no_main]

use airlock_model::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(record) = airlock_upstream::decode(bytes, Timestamp(0)) {
        let mut again = Vec::new();
        airlock_upstream::encode(&record, &mut again);
        let back = airlock_upstream::decode(&again, Timestamp(0)).expect("a record's own encoding decodes");
        let mut third = Vec::new();
        airlock_upstream::encode(&back, &mut third);
        assert_eq!(again, third);
    }
});
