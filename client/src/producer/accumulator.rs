//! Batches per partition: the open batch records are appended to, the
//! closed batches waiting to be sent in the order they closed, and the
//! bookkeeping that keeps an idempotent producer's batches inside the
//! broker's duplicate window.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use strata_protocol::record::BatchBuilder;
use tokio::sync::OwnedSemaphorePermit;

use super::delivery::BatchAck;
use super::idempotence::ProducerIdentity;
use crate::error::Error;

/// The broker remembers each idempotent producer's last five batches per
/// partition, so a retry must be among them: an idempotent producer keeps
/// at most this many requests in flight per broker, and no partition sends
/// a batch this many past the oldest one whose outcome is not known.
pub(super) const DUPLICATE_WINDOW_BATCHES: usize = 5;

/// A batch that is closed: built, waiting to be sent, or in flight. Dropping
/// it before it completes (the producer went away) fails its records.
pub(super) struct ClosedBatch {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) bytes: Bytes,
    pub(super) ack: Arc<BatchAck>,
    pub(super) _budget: OwnedSemaphorePermit,
    pub(super) closed_at: Instant,
    pub(super) attempts: u32,
    pub(super) not_before: Instant,
    /// Its place among its partition's batches, in the order they closed.
    pub(super) order: u64,
    pub(super) record_count: i32,
    /// Why its last attempt failed, reported if its delivery times out.
    pub(super) last_error: Option<Error>,
    /// An earlier attempt may have been stored: retried under the same
    /// producer id and sequence, the broker recognises it, but it must
    /// never be numbered again under a new producer id.
    pub(super) maybe_stored: bool,
}

impl Drop for ClosedBatch {
    fn drop(&mut self) {
        self.ack.complete(Err(Error::Closed));
    }
}

pub(super) struct OpenBatch {
    pub(super) builder: BatchBuilder,
    pub(super) ack: Arc<BatchAck>,
    pub(super) budget: OwnedSemaphorePermit,
    pub(super) opened_at: Instant,
    /// Its place among its partition's batches (they close in the order
    /// they open).
    pub(super) order: u64,
}

#[derive(Default)]
pub(super) struct PartitionQueue {
    pub(super) open: Option<OpenBatch>,
    /// Closed batches waiting to be sent, in the order they closed.
    pub(super) ready: VecDeque<ClosedBatch>,
    /// Batches whose outcome is not known yet with their order, oldest
    /// first (pruned lazily).
    pub(super) unacked: VecDeque<(u64, Arc<BatchAck>)>,
    /// Batches opened so far.
    pub(super) opened_count: u64,
    /// As an idempotent producer: the sequence the next batch starts at,
    /// in producer generation `generation`.
    pub(super) next_sequence: i32,
    pub(super) generation: u64,
}

impl PartitionQueue {
    /// Closes the open batch, if any, numbering it as `identity` says, and
    /// queues it behind the others.
    pub(super) fn close_open(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        now: Instant,
        identity: Option<ProducerIdentity>,
    ) {
        let Some(open) = self.open.take() else {
            return;
        };
        let record_count = open.builder.record_count() as i32;
        let mut builder = open.builder;
        if let Some(identity) = identity {
            let base_sequence = self.take_sequences(identity.generation, record_count);
            builder =
                builder.producer(identity.producer_id, identity.producer_epoch, base_sequence);
            if identity.transactional {
                builder = builder.transactional();
            }
        }
        self.ready.push_back(ClosedBatch {
            topic: Arc::clone(topic),
            partition,
            bytes: Bytes::from(builder.build()),
            ack: open.ack,
            _budget: open.budget,
            closed_at: now,
            attempts: 0,
            not_before: now,
            order: open.order,
            record_count,
            last_error: None,
            maybe_stored: false,
        });
    }

    /// The base sequence of the next `record_count` records in producer
    /// generation `generation` (a new generation starts at 0).
    pub(super) fn take_sequences(&mut self, generation: u64, record_count: i32) -> i32 {
        if self.generation != generation {
            self.generation = generation;
            self.next_sequence = 0;
        }
        let base_sequence = self.next_sequence;
        // Sequences wrap at i32::MAX, as the broker expects.
        self.next_sequence =
            ((base_sequence as i64 + record_count as i64) % (i32::MAX as i64 + 1)) as i32;
        base_sequence
    }

    /// Puts a batch to retry back in the order it closed.
    pub(super) fn requeue(&mut self, batch: ClosedBatch) {
        let position = self
            .ready
            .iter()
            .position(|queued| queued.order > batch.order)
            .unwrap_or(self.ready.len());
        self.ready.insert(position, batch);
    }

    /// The outcome of a new batch and its order.
    pub(super) fn open_ack(&mut self) -> (Arc<BatchAck>, u64) {
        self.prune_unacked();
        self.opened_count += 1;
        let ack = Arc::new(BatchAck::default());
        self.unacked
            .push_back((self.opened_count, Arc::clone(&ack)));
        (ack, self.opened_count)
    }

    pub(super) fn prune_unacked(&mut self) {
        while self
            .unacked
            .front()
            .is_some_and(|(_, ack)| ack.is_complete())
        {
            self.unacked.pop_front();
        }
    }

    /// Whether a batch closed before `ack`'s is still waiting for its
    /// outcome.
    pub(super) fn has_unacked_before(&mut self, ack: &Arc<BatchAck>) -> bool {
        self.prune_unacked();
        self.unacked
            .iter()
            .take_while(|(_, earlier)| !Arc::ptr_eq(earlier, ack))
            .any(|(_, earlier)| !earlier.is_complete())
    }

    /// Whether the batch of `order` may be sent: it is fewer than
    /// `DUPLICATE_WINDOW_BATCHES` past the oldest batch without an outcome. A
    /// batch whose answer was lost is then retried before more than four
    /// later ones were written, so the broker still remembers it.
    pub(super) fn may_send(&mut self, order: u64) -> bool {
        self.prune_unacked();
        self.unacked
            .front()
            .is_none_or(|(oldest, _)| order < oldest + DUPLICATE_WINDOW_BATCHES as u64)
    }
}

pub(super) struct TopicQueue {
    pub(super) name: Arc<str>,
    pub(super) partitions: Vec<Arc<Mutex<PartitionQueue>>>,
    /// Partition for records without key or partition; moves on when its
    /// batch closes (Kafka's sticky partitioner).
    pub(super) sticky: AtomicUsize,
}
