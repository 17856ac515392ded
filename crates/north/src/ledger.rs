//! The egress ledger: what left the plant, per sink. Each sink writes into its ledger what it
//! put on its wire, as it put it there (an MQTT publish, a JSON line, an HTTP POST, a Sparkplug
//! DDATA, a diode block): counts and bytes per class and per hour, and the last messages
//! exactly as sent (cut at [`PAYLOAD_KEPT`] bytes), searchable by topic. The runner adds the
//! last id the receiver acknowledged per class. Bounded: [`MESSAGES_KEPT`] messages and
//! [`HOURS_KEPT`] hours, whatever the traffic. Read by the dashboard, written by nobody else.

use std::collections::VecDeque;
use std::sync::Mutex;

use airlock_model::Timestamp;
use airlock_store::{OutboxRecord, RecordId};

/// Messages kept per sink.
pub const MESSAGES_KEPT: usize = 200;
/// Bytes of each message's payload kept (a diode block is far larger).
pub const PAYLOAD_KEPT: usize = 4096;
/// Hours of counts kept per sink.
pub const HOURS_KEPT: usize = 48;

const HOUR_MS: i64 = 3_600_000;

/// One message as it went on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub time: Timestamp,
    /// The topic, file, URL or address it went to.
    pub topic: String,
    /// The outbox ids it carried: the first and the last, and how many.
    pub first_id: RecordId,
    pub last_id: RecordId,
    pub records: usize,
    /// Its size on the wire, and its first [`PAYLOAD_KEPT`] bytes.
    pub bytes: usize,
    pub payload: Vec<u8>,
}

/// Records and bytes sent in one hour, per class (events, aggregates, series, raw).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HourCounts {
    pub hour_start_ms: i64,
    pub records: [u64; 4],
    pub bytes: [u64; 4],
}

#[derive(Debug, Default)]
struct Inner {
    messages: VecDeque<SentMessage>,
    hours: VecDeque<HourCounts>,
    records: [u64; 4],
    bytes: [u64; 4],
    /// The last id sent and the last one acknowledged, per class.
    last_sent: [Option<RecordId>; 4],
    last_delivered: [Option<RecordId>; 4],
    last_sent_at: Option<Timestamp>,
}

/// A sink's egress ledger (see the module doc).
#[derive(Debug, Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
}

/// The ledger as read at one moment.
#[derive(Debug, Clone, Default)]
pub struct LedgerView {
    pub records: [u64; 4],
    pub bytes: [u64; 4],
    pub last_sent: [Option<RecordId>; 4],
    pub last_delivered: [Option<RecordId>; 4],
    pub last_sent_at: Option<Timestamp>,
    /// Oldest first.
    pub hours: Vec<HourCounts>,
}

impl Ledger {
    /// `records` went to `topic` as one message of `payload` (at `time`, the wall clock).
    /// Bytes are shared out between the records' classes in proportion to their count.
    pub fn sent<'a>(
        &self,
        time: Timestamp,
        topic: &str,
        records: impl IntoIterator<Item = &'a OutboxRecord>,
        payload: &[u8],
    ) {
        self.sent_as(time, topic, records, payload, payload.len());
    }

    /// As [`Ledger::sent`], for a message that took `wire_bytes` on the wire for its `payload`
    /// (a diode block: its datagrams, repair symbols and headers included).
    pub fn sent_as<'a>(
        &self,
        time: Timestamp,
        topic: &str,
        records: impl IntoIterator<Item = &'a OutboxRecord>,
        payload: &[u8],
        wire_bytes: usize,
    ) {
        let mut per_class = [0u64; 4];
        let mut last_of_class: [Option<RecordId>; 4] = [None; 4];
        let (mut first, mut last, mut total) = (None, None, 0u64);
        for r in records {
            per_class[r.id.class as usize] += 1;
            last_of_class[r.id.class as usize] = Some(r.id);
            first.get_or_insert(r.id);
            last = Some(r.id);
            total += 1;
        }
        let (Some(first_id), Some(last_id)) = (first, last) else { return };
        let Ok(mut l) = self.inner.lock() else { return };
        for (slot, id) in l.last_sent.iter_mut().zip(last_of_class) {
            if id.is_some() {
                *slot = id;
            }
        }
        let hour_start_ms = time.as_millis().div_euclid(HOUR_MS) * HOUR_MS;
        // The hour's row (the wall clock may have stepped back into an hour already kept).
        let row = match l.hours.iter().rposition(|h| h.hour_start_ms == hour_start_ms) {
            Some(row) => row,
            None => {
                l.hours.push_back(HourCounts { hour_start_ms, ..HourCounts::default() });
                while l.hours.len() > HOURS_KEPT {
                    l.hours.pop_front();
                }
                l.hours.len() - 1
            }
        };
        // Bytes shared out in proportion to the records of each class; what the division
        // leaves goes to the last class, so that every byte is counted once.
        let mut left = wire_bytes as u64;
        let last_class = per_class.iter().rposition(|n| *n > 0).unwrap_or(0);
        for (class, n) in per_class.into_iter().enumerate().filter(|(_, n)| *n > 0) {
            let bytes = if class == last_class { left } else { wire_bytes as u64 * n / total };
            left -= bytes;
            l.records[class] += n;
            l.bytes[class] += bytes;
            if let Some(h) = l.hours.get_mut(row) {
                h.records[class] += n;
                h.bytes[class] += bytes;
            }
        }
        l.last_sent_at = Some(time);
        l.messages.push_back(SentMessage {
            time,
            topic: topic.to_owned(),
            first_id,
            last_id,
            records: total as usize,
            bytes: wire_bytes,
            payload: payload[..payload.len().min(PAYLOAD_KEPT)].to_vec(),
        });
        while l.messages.len() > MESSAGES_KEPT {
            l.messages.pop_front();
        }
    }

    /// The receiver acknowledged `id`.
    pub fn delivered(&self, id: RecordId) {
        if let Ok(mut l) = self.inner.lock() {
            let slot = &mut l.last_delivered[id.class as usize];
            if slot.is_none_or(|s| s.seq < id.seq) {
                *slot = Some(id);
            }
        }
    }

    pub fn view(&self) -> LedgerView {
        let Ok(l) = self.inner.lock() else { return LedgerView::default() };
        LedgerView {
            records: l.records,
            bytes: l.bytes,
            last_sent: l.last_sent,
            last_delivered: l.last_delivered,
            last_sent_at: l.last_sent_at,
            hours: l.hours.iter().copied().collect(),
        }
    }

    /// The last `limit` messages (newest first) whose topic contains `topic` (all when empty).
    pub fn messages(&self, topic: &str, limit: usize) -> Vec<SentMessage> {
        let Ok(l) = self.inner.lock() else { return Vec::new() };
        l.messages.iter().rev().filter(|m| m.topic.contains(topic)).take(limit).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_store::{Class, Origin};
    use airlock_upstream::{RecoveryRecord, Upstream};

    fn record(class: Class, seq: u64) -> OutboxRecord {
        let record = Upstream::Recovered(RecoveryRecord { time: Timestamp(0), corrupt_records: 0, torn_bytes: 0 });
        OutboxRecord { id: RecordId { class, seq }, origin: Origin::Here, time: Timestamp(0), record }
    }

    #[test]
    fn it_counts_per_class_and_hour_and_keeps_the_last_messages_bounded() {
        let ledger = Ledger::default();
        let t = Timestamp::from_millis(7 * HOUR_MS + 5);
        ledger.sent(
            t,
            "plant/a",
            &[record(Class::Event, 1), record(Class::Raw, 9), record(Class::Raw, 8)],
            b"0123456789",
        );
        ledger.sent(Timestamp::from_millis(8 * HOUR_MS), "plant/b", &[record(Class::Raw, 10)], &[7u8; 5000]);
        let v = ledger.view();
        assert_eq!(v.records, [1, 0, 0, 3]);
        assert_eq!(v.bytes, [3, 0, 0, 5007], "every byte counted once: 10 shared 3 and 7");
        assert_eq!(v.hours.len(), 2);
        assert_eq!((v.hours[0].hour_start_ms, v.hours[0].records), (7 * HOUR_MS, [1, 0, 0, 2]));
        assert_eq!(v.last_sent[3], Some(RecordId { class: Class::Raw, seq: 10 }));
        // The clock stepped back into hour 7: its row, not a second one.
        ledger.sent(t, "plant/a", &[record(Class::Event, 2)], b"xy");
        let v = ledger.view();
        assert_eq!(v.hours.len(), 2);
        assert_eq!(v.hours[0].records, [2, 0, 0, 2]);
        assert_eq!(v.last_delivered, [None; 4]);
        ledger.delivered(RecordId { class: Class::Raw, seq: 9 });
        ledger.delivered(RecordId { class: Class::Raw, seq: 3 });
        assert_eq!(ledger.view().last_delivered[3], Some(RecordId { class: Class::Raw, seq: 9 }));
        let found = ledger.messages("plant/b", 10);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].bytes, found[0].payload.len()), (5000, PAYLOAD_KEPT));
        assert_eq!(ledger.messages("", 10)[2].payload, b"0123456789");
        for i in 0..(MESSAGES_KEPT as u64 + 50) {
            ledger.sent(t, "x", &[record(Class::Series, i)], b"{}");
        }
        assert_eq!(ledger.messages("", usize::MAX).len(), MESSAGES_KEPT);
        assert!(ledger.messages("plant/", 10).is_empty(), "the oldest went first");
    }
}
