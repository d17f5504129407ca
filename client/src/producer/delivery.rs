//! What a caller hands the producer (a record) and gets back (a delivery
//! that resolves to the record's offset once its batch's outcome is known).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use strata_protocol::record::Header;

use crate::error::Result;

/// A record to send. Its bytes are copied into a batch by `send`, so it
/// borrows what it carries.
#[derive(Debug, Clone, Copy)]
pub struct ProducerRecord<'a> {
    pub topic: &'a str,
    /// Chosen by the partitioner when `None`.
    pub partition: Option<i32>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header<'a>],
    /// Create time; now when `None`.
    pub timestamp_ms: Option<i64>,
}

impl<'a> ProducerRecord<'a> {
    pub fn new(topic: &'a str) -> Self {
        ProducerRecord {
            topic,
            partition: None,
            key: None,
            value: None,
            headers: &[],
            timestamp_ms: None,
        }
    }
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }
    pub fn value(mut self, value: &'a [u8]) -> Self {
        self.value = Some(value);
        self
    }
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
    pub fn headers(mut self, headers: &'a [Header<'a>]) -> Self {
        self.headers = headers;
        self
    }
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Upper bound of the record's size inside a batch.
    #[inline]
    pub(super) fn size_bytes(&self) -> usize {
        const RECORD_OVERHEAD_BYTES_MAX: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;
        let headers: usize = self
            .headers
            .iter()
            .map(|header| 10 + header.key.len() + header.value.map_or(0, <[u8]>::len))
            .sum();
        RECORD_OVERHEAD_BYTES_MAX
            + self.key.map_or(0, <[u8]>::len)
            + self.value.map_or(0, <[u8]>::len)
            + headers
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: i32,
    /// `None` with `acks=0`: the broker does not say.
    pub offset: Option<i64>,
    /// The record's create time, or the broker's append time when the topic
    /// uses log-append time.
    pub timestamp_ms: i64,
}

/// Resolves when the record's batch is acknowledged (or has failed).
#[derive(Debug)]
#[must_use = "a delivery reports whether the record was acknowledged"]
pub struct Delivery {
    pub(super) ack: Arc<BatchAck>,
    pub(super) partition: i32,
    pub(super) offset_delta: i64,
    pub(super) timestamp_ms: i64,
}

impl Future for Delivery {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.ack.poll_outcome(cx.waker()) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => Poll::Ready(Err(error.clone())),
            Poll::Ready(Ok(outcome)) => Poll::Ready(Ok(RecordMetadata {
                partition: self.partition,
                offset: outcome.base_offset.map(|base| base + self.offset_delta),
                timestamp_ms: outcome.log_append_time_ms.unwrap_or(self.timestamp_ms),
            })),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct BatchOutcome {
    pub(super) base_offset: Option<i64>,
    pub(super) log_append_time_ms: Option<i64>,
}

/// The outcome of one batch, shared by the deliveries of its records.
#[derive(Debug, Default)]
pub(super) struct BatchAck {
    pub(super) outcome: OnceLock<Result<BatchOutcome>>,
    pub(super) wakers: Mutex<Vec<Waker>>,
}

impl BatchAck {
    pub(super) fn complete(&self, outcome: Result<BatchOutcome>) {
        if self.outcome.set(outcome).is_ok() {
            for waker in std::mem::take(&mut *self.wakers.lock().expect("wakers")) {
                waker.wake();
            }
        }
    }

    pub(super) fn is_complete(&self) -> bool {
        self.outcome.get().is_some()
    }

    pub(super) fn poll_outcome(&self, waker: &Waker) -> Poll<&Result<BatchOutcome>> {
        if let Some(outcome) = self.outcome.get() {
            return Poll::Ready(outcome);
        }
        let mut wakers = self.wakers.lock().expect("wakers");
        // Checked again under the lock: `complete` sets, then takes the wakers.
        if let Some(outcome) = self.outcome.get() {
            return Poll::Ready(outcome);
        }
        if !wakers.iter().any(|known| known.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        Poll::Pending
    }

    pub(super) async fn wait(&self) {
        std::future::poll_fn(|cx| self.poll_outcome(cx.waker()).map(drop)).await
    }
}
