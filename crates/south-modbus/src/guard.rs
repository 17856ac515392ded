//! A guard on the bytes a device sends: every Modbus TCP frame starts with a 7-byte MBAP header
//! whose protocol id is 0 and whose length (unit id plus PDU) is 2 to 254. A reader that trusted
//! the length field would wait for up to 64 KiB that never come from a device that sends
//! garbage, and the failure would look like a timeout. The guard checks each header as the
//! bytes arrive, and holds its bytes back until it is whole: a header that is wrong fails the
//! read at once with "malformed frame", so the tags go bad with the right reason and the
//! connection is replaced. Up to [`LATE_TAIL_MAX`] stray bytes after a whole answer (a CRC or
//! padding that some devices and serial converters add) are dropped until a header answers a
//! request in flight (its transaction id is among theirs). A right header for another
//! transaction fails at once; garbage shorter than a tail and a header after a good answer is
//! held, and ends in the device's timeout.

/// Stray bytes dropped before an answer's header when the answer before it was whole: its
/// tail (a 2-byte CRC, padding) come in a later segment, after the next request went out.
/// Garbage after a good answer still fails within this many bytes and a header's seven.
pub const LATE_TAIL_MAX: usize = 16;

/// Where the reader is in the answer it waits for (answers are read one after the other).
#[derive(Debug, Default)]
pub struct FrameCheck {
    header: [u8; 7],
    header_len: usize,
    body_left: usize,
    /// The whole answer has come: up to [`LATE_TAIL_MAX`] bytes before the next answer's
    /// header are stray (a CRC or padding some devices and converters add) and dropped.
    answered: bool,
    /// The transaction ids the answer may carry: `count` of them from `first` (wrapping), those
    /// of the requests in flight; any, if `None`.
    transactions: Option<(u16, u16)>,
    /// Stray bytes that may still be dropped before this answer's header.
    tail_left: usize,
    /// Stray bytes dropped before this answer's header so far.
    skipped: usize,
}

impl FrameCheck {
    /// The next answer to read is that of transaction `transaction` (any, if `None`): it is read
    /// from its first byte, after at most [`LATE_TAIL_MAX`] stray bytes if the last answer was
    /// whole.
    #[cfg(test)]
    pub fn expect_answer(&mut self, transaction: Option<u16>) {
        self.expect_answer_among(transaction.map(|t| (t, 1)));
    }

    /// The next answer to read is that of one of `count` transactions from `first` (the
    /// requests in flight, which may be answered in any order); any, if `None`.
    pub fn expect_answer_among(&mut self, transactions: Option<(u16, u16)>) {
        let tail_left = if self.answered { LATE_TAIL_MAX } else { 0 };
        *self = Self { transactions, tail_left, ..Self::default() };
    }

    /// The transactions an answer may carry, changed without starting over (more requests went
    /// out while an answer was being read): checked when its header is whole.
    pub fn set_window(&mut self, transactions: Option<(u16, u16)>) {
        self.transactions = transactions;
    }

    /// Feeds received bytes; the bytes of the answer go to `answer` once their header is whole
    /// and right (a header's bytes are held until then; stray bytes are dropped). Returns how
    /// many bytes it took: none after the answer's last (they belong to what comes next). An
    /// error names what is wrong with the frame.
    pub fn feed(&mut self, mut bytes: &[u8], answer: &mut Vec<u8>) -> Result<usize, String> {
        let offered = bytes.len();
        while !bytes.is_empty() && !self.answered {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                answer.extend_from_slice(&bytes[..n]);
                self.body_left -= n;
                bytes = &bytes[n..];
                self.answered = self.body_left == 0;
                continue;
            }
            let n = (7 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len < 7 {
                continue;
            }
            match self.check_header() {
                Ok(body) => {
                    answer.extend_from_slice(&self.header);
                    self.header_len = 0;
                    self.body_left = body;
                }
                // A right header for another transaction is an answer, not a tail: a tail
                // of up to three bytes before a header never makes a right one (its protocol id
                // or length comes out wrong).
                Err(HeaderError::Transaction(e)) => return Err(e),
                Err(_) if self.tail_left > 0 => {
                    // The last answer's tail: drop its first byte and look again.
                    self.tail_left -= 1;
                    self.skipped += 1;
                    self.header.copy_within(1.., 0);
                    self.header_len = 6;
                }
                Err(HeaderError::Malformed(e)) if self.skipped > 0 => {
                    return Err(format!("{e} (after {} stray bytes)", self.skipped));
                }
                Err(HeaderError::Malformed(e)) => return Err(e),
            }
        }
        Ok(offered - bytes.len())
    }

    /// Whether the whole answer has come.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Whether the answer has begun: its header is partly or wholly read.
    pub fn in_answer(&self) -> bool {
        self.header_len > 0 || self.body_left > 0
    }

    /// The body's length after a right header; what is wrong with it otherwise.
    fn check_header(&self) -> Result<usize, HeaderError> {
        let h = &self.header;
        let protocol = u16::from_be_bytes([h[2], h[3]]);
        let length = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if protocol != 0 || !(2..=254).contains(&length) {
            return Err(HeaderError::Malformed(format!(
                "malformed frame: header {h:02x?} has protocol id {protocol} and length {length}"
            )));
        }
        let transaction = u16::from_be_bytes([h[0], h[1]]);
        match self.transactions {
            Some((first, count)) if transaction.wrapping_sub(first) >= count => {
                let asked = match count {
                    1 => format!("the request was {first}"),
                    _ => format!(
                        "the requests in flight were {first} to {}",
                        first.wrapping_add(count.saturating_sub(1))
                    ),
                };
                Err(HeaderError::Transaction(format!(
                    "malformed frame: header {h:02x?} answers transaction {transaction}, {asked}"
                )))
            }
            _ => Ok(length - 1),
        }
    }
}

/// What is wrong with a header.
enum HeaderError {
    /// Not a header (a wrong protocol id or length): perhaps a tail before one.
    Malformed(String),
    /// A right header of an answer to another transaction.
    Transaction(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` in order; expects the chunk at index `fails_at` to be refused (or none),
    /// and every byte before that to be taken and handed on as the answer.
    fn check(chunks: &[&[u8]], fails_at: Option<usize>) {
        let mut c = FrameCheck::default();
        let mut answer = Vec::new();
        let first_error = chunks.iter().position(|chunk| match c.feed(chunk, &mut answer) {
            Ok(taken) => {
                assert_eq!(taken, chunk.len());
                false
            }
            Err(_) => true,
        });
        assert_eq!(first_error, fails_at, "{chunks:02x?}");
        if fails_at.is_none() {
            assert_eq!(answer, chunks.concat());
        }
    }

    /// Feeds `bytes` and returns what was handed on (what was not taken is left).
    fn answer(c: &mut FrameCheck, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let mut answer = Vec::new();
        c.feed(bytes, &mut answer).map(|_| answer)
    }

    /// An answer to transaction 1, and the same to transaction 2.
    const FRAME: &[u8] = &[0, 1, 0, 0, 0, 5, 1, 3, 2, 0x12, 0x34];
    const FRAME_2: &[u8] = &[0, 2, 0, 0, 0, 5, 1, 3, 2, 0x12, 0x34];

    #[test]
    fn good_frames_pass_whole_or_in_pieces() {
        check(&[FRAME], None);
        check(&[&FRAME[..3], &FRAME[3..8], &FRAME[8..]], None);
        check(&[&[0, 1, 0, 0, 0, 3, 1, 0x83, 2]], None);
        // A header's bytes are held until it is whole and right.
        let mut c = FrameCheck::default();
        assert_eq!(answer(&mut c, &FRAME[..6]), Ok(vec![]));
        assert_eq!(answer(&mut c, &FRAME[6..9]), Ok(FRAME[..9].to_vec()));
        assert_eq!(answer(&mut c, &FRAME[9..]), Ok(FRAME[9..].to_vec()));
    }

    /// A device (or a serial converter) that sends a CRC or padding after its answer: the bytes
    /// after a whole answer are not taken with it, and are dropped before the next answer's
    /// header, which is read in step. (The stray bytes were taken for the next answer's header:
    /// that answer failed as malformed, and with seven of them or more the good answer before
    /// them too, so the tags flapped bad.)
    #[test]
    fn stray_bytes_after_an_answer_are_dropped_and_the_next_answer_is_read_in_step() {
        for tail in [&[0xaa, 0xbb][..], &[0xee; 9], &[0xee; LATE_TAIL_MAX]] {
            let mut c = FrameCheck::default();
            let mut got = Vec::new();
            let bytes: Vec<u8> = FRAME.iter().chain(tail).chain(FRAME_2).copied().collect();
            let taken = c.feed(&bytes, &mut got).unwrap();
            assert_eq!((taken, &got[..]), (FRAME.len(), FRAME), "the first answer, and nothing after it");
            assert!(c.answered());
            c.expect_answer(Some(2));
            assert_eq!(answer(&mut c, &bytes[taken..]), Ok(FRAME_2.to_vec()), "tail {tail:02x?}");
        }
        let mut c = FrameCheck::default();
        assert_eq!(answer(&mut c, &FRAME[..4]), Ok(vec![]));
        assert_eq!(answer(&mut c, &FRAME[4..]), Ok(FRAME.to_vec()));
        // The answer to a request is still checked: a wrong header fails once it is more
        // than a tail could be.
        c.expect_answer(Some(2));
        let wrong: Vec<u8> = [0, 2, 0, 7, 0, 5, 1].iter().chain(&[3; LATE_TAIL_MAX]).copied().collect();
        assert!(answer(&mut c, &wrong).is_err());
    }

    /// The same tail coming late, after the next request went out (a converter that forwards
    /// the CRC in a segment of its own): it comes before that request's answer, and is dropped
    /// until a header answers the request, whole or in pieces. (It was taken for the start of
    /// the answer's header: the answer failed as malformed, poll after poll.)
    #[test]
    fn a_tail_that_comes_after_the_next_request_is_dropped_before_its_answer() {
        let mut c = FrameCheck::default();
        assert_eq!(answer(&mut c, FRAME), Ok(FRAME.to_vec()));
        c.expect_answer(Some(2));
        assert_eq!(answer(&mut c, &[0xaa, 0xbb]), Ok(vec![]));
        assert_eq!(answer(&mut c, FRAME_2), Ok(FRAME_2.to_vec()));
        // In one segment with the answer, and in pieces that split the header.
        c.expect_answer(Some(1));
        let late: Vec<u8> = [0xc5, 0x3a].iter().chain(FRAME).copied().collect();
        assert_eq!(answer(&mut c, &late), Ok(FRAME.to_vec()));
        c.expect_answer(Some(2));
        let late: Vec<u8> = [0xc5, 0x3a, 0].iter().chain(FRAME_2).copied().collect();
        let mut got = Vec::new();
        for piece in late.chunks(3) {
            got.extend(answer(&mut c, piece).unwrap());
        }
        assert_eq!(got, FRAME_2);
    }

    /// A device that answers with another transaction id (some echo 0), after a good answer:
    /// a header that is right but for another transaction is no tail, and fails at once. (It
    /// was slid past as one: the guard held the rest and the read ended in the device's
    /// timeout, not in the error that names the transactions.)
    #[test]
    fn an_answer_to_another_transaction_fails_at_once_after_a_good_answer() {
        let mut c = FrameCheck::default();
        assert_eq!(answer(&mut c, FRAME), Ok(FRAME.to_vec()));
        c.expect_answer(Some(2));
        let error = answer(&mut c, FRAME).unwrap_err();
        assert!(error.contains("answers transaction 1, the request was 2"), "{error}");
    }

    /// With several requests in flight, an answer to any of them is right (devices may answer
    /// them in any order), across the wrap of the transaction ids; one to none of them fails
    /// with them named.
    #[test]
    fn an_answer_to_any_request_in_flight_is_read() {
        for (first, count, answered, right) in [
            (1, 4, 4, true),
            (1, 4, 1, true),
            (1, 4, 5, false),
            (1, 4, 0, false),
            (65534, 3, 0, true),
            (65534, 3, 1, false),
        ] {
            let mut c = FrameCheck::default();
            c.expect_answer_among(Some((first, count)));
            let [t0, t1] = u16::to_be_bytes(answered);
            let frame = [t0, t1, 0, 0, 0, 5, 1, 3, 2, 0x12, 0x34];
            match answer(&mut c, &frame) {
                Ok(got) => assert!(right && got == frame, "{first} {count} {answered}"),
                Err(e) => {
                    let named = format!("requests in flight were {first} to {}", first.wrapping_add(count - 1));
                    assert!(!right && e.contains(&named), "{first} {count} {answered}: {e}");
                }
            }
        }
    }

    #[test]
    fn garbage_and_bad_headers_are_refused() {
        check(&[b"\xde\xad\xbe\xef garbage"], Some(0));
        check(&[&[0, 1, 0, 0], &[0xff, 0xff, 1]], Some(1));
        check(&[&[0, 1, 0, 0, 0, 1, 1]], Some(0));
        // With no whole answer before it, nothing is a tail: the first byte is checked.
        let mut c = FrameCheck::default();
        c.expect_answer(Some(1));
        assert!(answer(&mut c, &[0xaa, 0xbb, 0, 1, 0, 0, 0]).is_err());
    }

    /// After a whole answer, garbage fails within the tail's bound and a header, and an
    /// answer to another transaction fails with both transactions named.
    #[test]
    fn garbage_after_a_good_answer_and_a_wrong_transaction_are_refused() {
        let mut c = FrameCheck::default();
        assert_eq!(answer(&mut c, FRAME), Ok(FRAME.to_vec()));
        c.expect_answer(Some(2));
        let garbage = [0xde; LATE_TAIL_MAX + 7];
        let error = answer(&mut c, &garbage).unwrap_err();
        assert!(error.contains("malformed frame") && error.contains("after 16 stray bytes"), "{error}");
        let mut c = FrameCheck::default();
        c.expect_answer(Some(2));
        let error = answer(&mut c, FRAME).unwrap_err();
        assert!(error.contains("answers transaction 1, the request was 2"), "{error}");
    }
}
