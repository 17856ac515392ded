//! A guard on the bytes a device sends: every Modbus TCP frame starts with a 7-byte MBAP header
//! whose protocol id is 0 and whose length (unit id plus PDU) is 2 to 254. tokio-modbus trusts
//! the length field, so a device that sends garbage would make it wait for up to 64 KiB that
//! never come, and the failure would look like a timeout. The guard checks each header as the
//! bytes arrive and fails the read at once with "malformed frame", so the tags go bad with the
//! right reason and the connection is replaced. With one request in flight, bytes after a whole
//! answer (a CRC or padding that some devices and serial converters add) are skipped until the
//! next request goes out, as tokio-modbus skips them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where the reader is in the answer to the request in flight (there is one at a time).
#[derive(Debug, Default)]
pub struct FrameCheck {
    header: [u8; 7],
    header_len: usize,
    body_left: usize,
    /// The whole answer has come: bytes until the next request are stray (a CRC or padding
    /// some devices and converters add) and skipped, as tokio-modbus skips them.
    answered: bool,
}

impl FrameCheck {
    /// A request is going out: its answer is read from its first byte.
    pub fn expect_answer(&mut self) {
        *self = Self::default();
    }

    /// Feeds newly received bytes; an error names what is wrong with the frame.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() && !self.answered {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                self.answered = self.body_left == 0;
                continue;
            }
            let n = (7 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == 7 {
                self.header_len = 0;
                self.body_left = self.check_header()?;
            }
        }
        Ok(())
    }

    fn check_header(&self) -> Result<usize, String> {
        let h = &self.header;
        let protocol = u16::from_be_bytes([h[2], h[3]]);
        let length = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if protocol != 0 || !(2..=254).contains(&length) {
            return Err(format!("malformed frame: header {h:02x?} has protocol id {protocol} and length {length}"));
        }
        Ok(length - 1)
    }
}

/// A stream whose reads pass through a [`FrameCheck`].
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    check: FrameCheck,
}

impl<S> Guarded<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, check: FrameCheck::default() }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let result = this.check.feed(&buf.filled()[before..]);
        Poll::Ready(result.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !buf.is_empty() {
            this.check.expect_answer();
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` in order; expects the chunk at index `fails_at` to be refused (or none).
    fn check(chunks: &[&[u8]], fails_at: Option<usize>) {
        let mut c = FrameCheck::default();
        let first_error = chunks.iter().position(|chunk| c.feed(chunk).is_err());
        assert_eq!(first_error, fails_at, "{chunks:02x?}");
    }

    const FRAME: &[u8] = &[0, 1, 0, 0, 0, 5, 1, 3, 2, 0x12, 0x34];

    #[test]
    fn good_frames_pass_whole_or_in_pieces() {
        check(&[FRAME], None);
        check(&[&FRAME[..3], &FRAME[3..8], &FRAME[8..]], None);
        check(&[&[0, 1, 0, 0, 0, 3, 1, 0x83, 2]], None);
    }

    /// A device (or a serial converter) that sends a CRC or padding after its answer: with one
    /// request in flight, bytes after a whole answer are stray, and the next answer, to the
    /// next request, is read from its own first byte. (The stray bytes were taken for the next
    /// answer's header: that answer failed as malformed, and with seven of them or more the
    /// good answer before them too, so the tags flapped bad.)
    #[test]
    fn stray_bytes_after_an_answer_are_skipped_and_the_next_answer_is_read_in_step() {
        let mut c = FrameCheck::default();
        let with_crc: Vec<u8> = FRAME.iter().chain(&[0xaa, 0xbb]).copied().collect();
        assert_eq!(c.feed(&with_crc), Ok(()));
        c.expect_answer();
        assert_eq!(c.feed(FRAME), Ok(()));
        let with_padding: Vec<u8> = FRAME.iter().chain(&[0xee; 9]).copied().collect();
        c.expect_answer();
        assert_eq!(c.feed(&with_padding), Ok(()));
        c.expect_answer();
        assert_eq!(c.feed(&FRAME[..4]), Ok(()));
        assert_eq!(c.feed(&FRAME[4..]), Ok(()));
        // The answer to a request is still checked from its first byte.
        c.expect_answer();
        assert!(c.feed(&[0, 2, 0, 7, 0, 5, 1]).is_err());
    }

    #[test]
    fn garbage_and_bad_headers_are_refused() {
        check(&[b"\xde\xad\xbe\xef garbage"], Some(0));
        check(&[&[0, 1, 0, 0], &[0xff, 0xff, 1]], Some(1));
        check(&[&[0, 1, 0, 0, 0, 1, 1]], Some(0));
    }
}
