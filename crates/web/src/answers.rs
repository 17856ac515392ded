//! The bytes of large answers the server holds at once, bounded. A history answer (up to
//! 500,000 CSV rows, some 19 MB) is built whole and then held until the client has read it or
//! its connection closes: a client that asks and never reads holds it until the idle timeout,
//! and 62 such requests took the gateway from 55 MB to 1.25 GB (a review). Each large answer's
//! body is counted against a budget while it lives; an answer that finds no room within a
//! short wait is refused with a 503, and nothing more is held.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of answers held at once, at most: three of the largest CSV answers.
pub(crate) const ANSWER_BYTES_HELD_MAX: usize = 64 << 20;
/// How long an answer waits for room among those held before it is refused.
pub(crate) const ANSWER_WAIT_MAX: Duration = Duration::from_secs(10);
/// A body is handed to the connection this much at a time.
const CHUNK_BYTES: usize = 64 << 10;

/// The budget, counted in KiB (a semaphore's permits).
#[derive(Clone)]
pub(crate) struct AnswerBudget {
    kib: Arc<Semaphore>,
    kib_max: u32,
}

impl AnswerBudget {
    pub fn new(bytes: usize) -> Self {
        let kib_max = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).max(1);
        Self { kib: Arc::new(Semaphore::new(kib_max as usize)), kib_max }
    }

    /// `bytes` as an answer's body, counted against the budget until it is sent whole or its
    /// connection drops it; a 503 when no room comes within `wait`. An answer larger than the
    /// whole budget waits for all of it.
    pub async fn body(&self, bytes: Bytes, wait: Duration) -> Result<Body, Response> {
        let kib = u32::try_from(bytes.len().div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, self.kib_max);
        let permit = tokio::time::timeout(wait, Arc::clone(&self.kib).acquire_many_owned(kib)).await;
        match permit {
            Ok(Ok(permit)) => Ok(Body::new(Counted { bytes, _permit: permit })),
            _ => {
                let mut r = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server holds as many large answers as it may (clients that have not read theirs yet): \
                     try again shortly\n",
                )
                    .into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
                Err(r)
            }
        }
    }
}

/// An answer's bytes with their share of the budget, given back when the body is dropped.
struct Counted {
    bytes: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.bytes.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.bytes.len().min(CHUNK_BYTES);
        Poll::Ready(Some(Ok(http_body::Frame::data(self.bytes.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.bytes.len() as u64)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Answers held count against the budget: one that finds no room within its wait is a 503
    /// (with Retry-After), one dropped unread or read whole gives its room back, and the bytes
    /// read are the answer's.
    #[tokio::test]
    async fn answers_held_keep_to_their_budget() {
        let budget = AnswerBudget::new(100 << 10);
        let answer = |n: usize| Bytes::from(vec![b'x'; n]);
        let wait = Duration::from_millis(100);
        let unread = budget.body(answer(60 << 10), wait).await.unwrap();
        let refused = budget.body(answer(60 << 10), wait).await.err().unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "10");
        drop(unread);
        let read = budget.body(answer(200 << 10), wait).await.unwrap();
        assert!(budget.body(answer(1), wait).await.is_err(), "an answer over the budget takes all of it");
        let bytes = axum::body::to_bytes(read, usize::MAX).await.unwrap();
        assert_eq!(bytes.len(), 200 << 10);
        let again = budget.body(answer(90 << 10), wait).await;
        assert!(again.is_ok(), "an answer read whole gives its room back");
    }
}
