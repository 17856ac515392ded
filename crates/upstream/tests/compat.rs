//! Records written by format version 1 (airlock 0.1, when the typed records came in) must be
//! read by every later version, so a backlog queued before an upgrade goes out after it. These
//! bytes were written by version 1 and are never to be regenerated: a failure here means an
//! upgrade would lose queued data.

#![allow(clippy::unwrap_used)]

mod records;

use airlock_model::Timestamp;

const WRITTEN_BY_VERSION_1: [(&str, &str); 5] = [
    (
        "sample_f64",
        "01012f61636d652f646f72746d756e642f7072657373696e672f6c696e65332f63656c6c312f7072657373312f737065656408010372706d0004000000e0ff1f9740803cf8ba7d35ec18",
    ),
    (
        "sample_bad",
        "01012e61636d652f646f72746d756e642f7072657373696e672f6c696e65332f63656c6c312f7072657373312f636f64650102020102004044f69a7d35ec18803cf8ba7d35ec18",
    ),
    (
        "aggregate",
        "01022f61636d652f646f72746d756e642f7072657373696e672f6c696e65332f63656c6c312f7072657373312f7370656564ff0372706d0080c617b433ec1800d80d10c233ec18d8040000000000fa9640000000000049974000000000802097400000000000000c400000000000fc964000000000004497400000000000209740",
    ),
    (
        "event",
        "010500a8f4a38534ec182961636d652f646f72746d756e642f7072657373696e672f6c696e65332f63656c6c312f70726573733210706572666f726d616e63655f64726f7001013570726573733220706572666f726d616e636520646f776e20352e312025202838352e31202520616761696e73742039302e32202529030b706572666f726d616e636508ac1c5a643beb3f08626173656c696e6577be9f1a2fddec3f0c64726f705f70657263656e746666666666661440",
    ),
    ("gap", "01060060597dcb34ec1803726177b00903723137057231323136004055b6272dec180020e81b3f2eec1800"),
];

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn records_written_by_version_1_are_read() {
    let examples = records::examples();
    for (name, hex) in WRITTEN_BY_VERSION_1 {
        let (_, _, expected) = examples.iter().find(|(n, _, _)| *n == name).unwrap();
        let decoded = airlock_upstream::decode(&bytes(hex), Timestamp(0)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&decoded, expected, "{name}");
    }
}

#[test]
fn binary_records_are_smaller_than_their_json() {
    for (name, id, record) in records::examples() {
        let mut binary = Vec::new();
        airlock_upstream::encode(&record, &mut binary);
        let json = airlock_upstream::json::to_vec(id, &record);
        assert!(binary.len() < json.len(), "{name}: {} bytes binary, {} JSON", binary.len(), json.len());
    }
}
