//! Property tests over random records (a small xorshift generator, fixed seeds, so a failure is
//! reproducible): every record encodes and decodes to itself, and no bytes at all (random,
//! truncated, flipped) make the decoder panic.

#![allow(clippy::unwrap_used)]

use airlock_model::{AssetPath, Quality, Reason, Severity, Timestamp, Transition, Value, ValueType};
use airlock_upstream::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn f64(&mut self) -> f64 {
        match self.below(6) {
            0 => 0.0,
            1 => -0.0,
            2 => f64::MAX,
            3 => f64::MIN_POSITIVE,
            _ => (self.next() as i64 as f64) / 1e6,
        }
    }
    fn time(&mut self) -> Timestamp {
        Timestamp(self.next() as i64)
    }
    fn text(&mut self) -> Box<str> {
        let alphabet = ["a", "Z", "0", " ", "\"", "\\", "\n", "é", "€", "🏭", "\u{0}"];
        (0..self.below(12)).map(|_| alphabet[self.below(alphabet.len() as u64) as usize]).collect::<String>().into()
    }
    fn path(&mut self) -> AssetPath {
        let segments: Vec<String> = (0..=self.below(7)).map(|i| format!("s{i}-{}", self.below(1000))).collect();
        AssetPath::parse(&segments.join("/")).unwrap()
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.coin() { Some(f(self)) } else { None }
    }
    fn reason(&mut self) -> Reason {
        match self.below(9) {
            0 => Reason::Timeout,
            1 => Reason::Exception(self.next() as u8),
            2 => Reason::DecodeError,
            3 => Reason::NotFinite,
            4 => Reason::CommsLost,
            5 => Reason::Stale,
            6 => Reason::SourceStatus(self.next() as u16),
            7 => Reason::SourceOffline,
            _ => Reason::OutOfRange,
        }
    }
    fn quality(&mut self) -> Quality {
        match self.below(3) {
            0 => Quality::Good,
            1 => Quality::Uncertain(self.reason()),
            _ => Quality::Bad(self.reason()),
        }
    }
    fn value(&mut self) -> Value {
        match self.below(6) {
            0 => Value::Bool(self.coin()),
            1 => Value::I64(self.next() as i64),
            2 => Value::U64(self.next()),
            3 => Value::F64(self.f64()),
            4 => Value::Text(self.text()),
            _ => Value::Waveform((0..self.below(40)).map(|_| self.f64() as f32).collect::<Vec<_>>().into()),
        }
    }
    fn record(&mut self) -> Upstream {
        match self.below(8) {
            0 => Upstream::Sample(SampleRecord {
                path: self.path(),
                value_type: ValueType::ALL[self.below(11) as usize],
                unit: self.opt(Rng::text),
                value: self.opt(Rng::value),
                quality: self.quality(),
                source_time: self.opt(Rng::time),
                gateway_time: self.time(),
            }),
            1 => Upstream::Aggregate(AggregateRecord {
                path: self.path(),
                unit: self.opt(Rng::text),
                start: self.time(),
                end: self.time(),
                count: self.next(),
                min: self.opt(Rng::f64),
                max: self.opt(Rng::f64),
                avg: self.opt(Rng::f64),
                stddev: self.opt(Rng::f64),
                first: self.opt(Rng::f64),
                last: self.opt(Rng::f64),
                twa: self.opt(Rng::f64),
            }),
            2 => Upstream::Production(ProductionRecord {
                asset: self.path(),
                start: self.time(),
                end: self.time(),
                parts: self.next(),
                shift_parts: self.below(1000),
            }),
            3 => Upstream::Oee(OeeRecord {
                asset: self.path(),
                time: self.time(),
                shift_start: self.time(),
                availability: self.f64(),
                performance: self.f64(),
                quality: self.f64(),
                oee: self.f64(),
                parts: self.next(),
                rejects: self.below(10),
                running_s: self.f64(),
            }),
            4 => Upstream::Event(EventRecord {
                time: self.time(),
                asset: self.path(),
                kind: self.text(),
                severity: [Severity::Info, Severity::Warning, Severity::Alarm][self.below(3) as usize],
                state: [Transition::Once, Transition::Raised, Transition::Cleared][self.below(3) as usize],
                message: self.text(),
                body: (0..self.below(5)).map(|_| (self.text(), self.f64())).collect(),
            }),
            5 => Upstream::Gap(GapRecord {
                time: self.time(),
                class: self.text(),
                records: self.next(),
                first_id: self.text(),
                last_id: self.text(),
                from: self.time(),
                to: self.time(),
                cause: [GapCause::Full, GapCause::Age, GapCause::WriteFailed][self.below(3) as usize],
            }),
            6 => Upstream::Recovered(RecoveryRecord {
                time: self.time(),
                corrupt_records: self.next(),
                torn_bytes: self.next(),
            }),
            _ => {
                Upstream::Undecodable(UndecodableRecord { time: self.time(), record_id: self.text(), why: self.text() })
            }
        }
    }
}

#[test]
fn every_record_decodes_to_itself() {
    let mut rng = Rng(0x5eed_0001);
    for i in 0..20_000 {
        let record = rng.record();
        let mut bytes = Vec::new();
        encode(&record, &mut bytes);
        let back = decode(&bytes, Timestamp(0)).unwrap_or_else(|e| panic!("case {i}: {e}: {record:?}"));
        assert_eq!(back, record, "case {i}");
        // And its JSON is JSON.
        let json = json::to_vec("gw-r1", &record);
        serde_json::from_slice::<serde_json::Value>(&json).unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}

#[test]
fn no_bytes_make_the_decoder_panic() {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..5_000 {
        let mut bytes = Vec::new();
        encode(&rng.record(), &mut bytes);
        // Every truncation is an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], Timestamp(0)).is_err());
        }
        // Flipped bytes decode to something or to an error.
        for _ in 0..8 {
            let mut flipped = bytes.clone();
            let at = rng.below(flipped.len() as u64) as usize;
            flipped[at] ^= 1 << rng.below(8);
            let _ = decode(&flipped, Timestamp(0));
        }
        // Noise, with a valid version byte.
        let noise: Vec<u8> = (0..rng.below(64)).map(|i| if i == 0 { 1 } else { rng.next() as u8 }).collect();
        let _ = decode(&noise, Timestamp(0));
    }
}

#[test]
fn unknown_versions_and_trailing_bytes_are_errors() {
    assert_eq!(decode(&[], Timestamp(0)), Err(DecodeError::Empty));
    assert_eq!(decode(&[9, 1], Timestamp(0)), Err(DecodeError::UnknownVersion(9)));
    assert_eq!(decode(&[1, 200], Timestamp(0)), Err(DecodeError::UnknownKind(200)));
    let mut bytes = Vec::new();
    encode(&Upstream::Recovered(RecoveryRecord { time: Timestamp(5), corrupt_records: 1, torn_bytes: 2 }), &mut bytes);
    bytes.push(0);
    assert_eq!(decode(&bytes, Timestamp(0)), Err(DecodeError::Trailing(1)));
    // A huge length never allocates: it is checked against what remains.
    let huge = [1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    assert!(matches!(decode(&huge, Timestamp(0)), Err(DecodeError::Truncated(_))));
}

#[test]
fn legacy_json_records_are_read_and_sent_as_written() {
    let json = br#"{"gateway_time":"2026-11-28T12:32:45.538Z","quality":"good","topic":"acme/a/b","value":1.5}"#;
    let record = decode(json, Timestamp(7)).unwrap();
    assert_eq!(record.topic(), "acme/a/b");
    assert_eq!(record.time(), Timestamp::parse_rfc3339("2026-11-28T12:32:45.538Z").unwrap());
    let wire = String::from_utf8(json::to_vec("gw-r1", &record)).unwrap();
    assert_eq!(
        wire,
        r#"{"id":"gw-r1","gateway_time":"2026-11-28T12:32:45.538Z","quality":"good","topic":"acme/a/b","value":1.5}"#
    );
    let event = decode(br#"{"topic":"_airlock/events/outbox_gap","kind":"outbox_gap"}"#, Timestamp(7)).unwrap();
    assert_eq!((event.event_kind(), event.time()), (Some("outbox_gap"), Timestamp(7)));
    assert!(matches!(decode(b"{\"value\":1}", Timestamp(0)), Err(DecodeError::Legacy(_))));
    assert!(matches!(decode(b"{not json", Timestamp(0)), Err(DecodeError::Legacy(_))));
}
