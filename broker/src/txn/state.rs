//! The transaction state machine: what the coordinator of one
//! `__transaction_state` partition knows of each transactional id, and
//! every decision it makes on it. A pure core (no I/O, no clock): each
//! decision returns the record to write, and the state changes only when
//! that record is durable ([`Transactions::apply`]). Until then the id has
//! a pending transition, and every other request on it is told
//! `CONCURRENT_TRANSACTIONS`.
//!
//! ```text
//!              InitProducerId (epoch + 1)
//!   Empty ──AddPartitions──▶ Ongoing ──EndTxn──▶ PrepareCommit ──markers──▶ CompleteCommit
//!     ▲                        │  │                                              │
//!     │                        │  └─EndTxn, timeout, fence──▶ PrepareAbort ──markers──▶ CompleteAbort
//!     └────────────── AddPartitions (next transaction) ◀─────────────────────────┘
//! ```
//!
//! A fence (InitProducerId while a transaction is open) and a timeout
//! abort in a new producer epoch, so the old instance's late writes and
//! markers are refused everywhere. KIP-890 part 2: an EndTxn of a client
//! that asks for it bumps the epoch too, so a delayed write of one
//! transaction can never land in the next. Kafka's in-memory
//! `PrepareEpochFence` step is not needed: the fence is decided and
//! appended (as `PrepareAbort` in the new epoch) under one lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::coordinator_log::KeyedRecord;

/// Where a transactional id's transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    /// No transaction open.
    Empty,
    /// Partitions were added: a transaction is open.
    Ongoing,
    /// Decided to commit; markers are being written.
    PrepareCommit,
    /// Decided to abort; markers are being written.
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    /// Expired (`transactional.id.expiration.ms`); its tombstone is written.
    Dead,
}

impl TxnState {
    /// Kafka's name, as DescribeTransactions and ListTransactions show it.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
        }
    }

    pub const ALL: [TxnState; 7] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
    ];

    /// Whether the transaction's outcome is decided and its markers are
    /// still to be written.
    pub fn is_prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    fn is_idle(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

/// A topic partition a transaction wrote to.
pub type TxnPartition = (String, i32);

/// What the coordinator knows of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump: a retried EndTxn (v5) of the
    /// transaction that bumped it is answered, not fenced.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TxnPartition>,
    /// When the open transaction added its first partition.
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// The coordinator's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`
    pub timeout_ms_max: i32,
    /// `transactional.id.expiration.ms`: an idle id is forgotten after it.
    pub id_expiration_ms: i64,
}

impl Default for TxnConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        TxnConfig {
            timeout_ms_max: 900_000,
            id_expiration_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

/// Why a transactional request is refused (each is a Kafka error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("another request on this transactional id is in progress; retry")]
    ConcurrentTransactions,
    #[error("a newer instance of this transactional id fenced this producer (its epoch is older)")]
    ProducerFenced,
    #[error("the producer id does not belong to this transactional id")]
    InvalidProducerIdMapping,
    #[error("the transaction is not in a state that allows this request")]
    InvalidTxnState,
    #[error("the transaction timeout is not within (0, transaction.max.timeout.ms]")]
    InvalidTransactionTimeout,
}

/// A producer's identity as a request names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Producer {
    pub id: i64,
    pub epoch: i16,
}

/// What InitProducerId decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// Answer with this producer once the record is durable.
    Ready(Producer),
    /// An open transaction is being fenced (aborted in a new epoch): the
    /// client retries once the abort completes.
    Fencing,
}

/// A decision: what to answer and the record to write first (none when
/// nothing changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<T> {
    pub answer: T,
    pub record: Option<KeyedRecord>,
}

impl<T> Decision<T> {
    fn unchanged(answer: T) -> Self {
        Decision {
            answer,
            record: None,
        }
    }
}

/// The transactional ids of one `__transaction_state` partition.
#[derive(Debug, Default)]
pub struct Transactions {
    ids: BTreeMap<String, TxnMetadata>,
    /// Transitions decided and appended but not yet durable.
    pending: HashMap<String, TxnMetadata>,
    /// Prepared transactions whose markers a task is writing.
    pub(super) completing: BTreeSet<String>,
}

impl Transactions {
    pub fn get(&self, id: &str) -> Option<&TxnMetadata> {
        self.ids.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &TxnMetadata)> {
        self.ids.iter()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Applies a durable record (or one replayed from the log): the id's
    /// metadata, or its tombstone.
    pub fn apply(&mut self, id: &str, metadata: Option<TxnMetadata>) {
        self.pending.remove(id);
        match metadata {
            Some(metadata) => {
                self.ids.insert(id.to_string(), metadata);
            }
            None => {
                self.ids.remove(id);
            }
        }
    }

    /// Forgets a transition whose record did not become durable.
    pub fn abandon(&mut self, id: &str) {
        self.pending.remove(id);
    }

    /// Records `metadata` as `id`'s pending transition and returns its
    /// record.
    fn transition(&mut self, id: &str, metadata: TxnMetadata) -> KeyedRecord {
        let record = super::records::encode(id, Some(&metadata));
        self.pending.insert(id.to_string(), metadata);
        record
    }

    /// The id's metadata, unless a transition is pending on it.
    fn settled(&self, id: &str) -> Result<Option<&TxnMetadata>, TxnError> {
        if self.pending.contains_key(id) {
            return Err(TxnError::ConcurrentTransactions);
        }
        Ok(self.ids.get(id))
    }

    /// InitProducerId for `id`. `fresh_producer_id` is used when the id
    /// is new (or its epochs are exhausted); `expected` is the producer a
    /// client that restarts its epoch names (KIP-360).
    pub fn init_producer_id(
        &mut self,
        id: &str,
        timeout_ms: i32,
        expected: Option<Producer>,
        fresh_producer_id: i64,
        config: &TxnConfig,
        now_ms: i64,
    ) -> Result<Decision<Init>, TxnError> {
        if timeout_ms <= 0 || timeout_ms > config.timeout_ms_max {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        let Some(current) = self
            .settled(id)?
            .filter(|m| m.state != TxnState::Dead)
            .cloned()
        else {
            let metadata = TxnMetadata {
                producer_id: fresh_producer_id,
                producer_epoch: 0,
                last_producer_epoch: -1,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                last_update_ms: now_ms,
            };
            let producer = Producer {
                id: fresh_producer_id,
                epoch: 0,
            };
            return Ok(Decision {
                answer: Init::Ready(producer),
                record: Some(self.transition(id, metadata)),
            });
        };
        if let Some(expected) = expected {
            if expected.id != current.producer_id {
                return Err(TxnError::InvalidProducerIdMapping);
            }
            if expected.epoch != current.producer_epoch
                && expected.epoch != current.last_producer_epoch
            {
                return Err(TxnError::ProducerFenced);
            }
        }
        match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Ongoing => {
                let mut metadata = current.bumped(fresh_producer_id);
                metadata.state = TxnState::PrepareAbort;
                metadata.last_update_ms = now_ms;
                Ok(Decision {
                    answer: Init::Fencing,
                    record: Some(self.transition(id, metadata)),
                })
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let mut metadata = current.bumped(fresh_producer_id);
                metadata.state = TxnState::Empty;
                metadata.partitions.clear();
                metadata.timeout_ms = timeout_ms;
                metadata.start_ms = -1;
                metadata.last_update_ms = now_ms;
                let producer = Producer {
                    id: metadata.producer_id,
                    epoch: metadata.producer_epoch,
                };
                Ok(Decision {
                    answer: Init::Ready(producer),
                    record: Some(self.transition(id, metadata)),
                })
            }
            TxnState::Dead => unreachable!("filtered above"),
        }
    }

    /// The id's metadata if `producer` is its current producer.
    fn current(&self, id: &str, producer: Producer) -> Result<&TxnMetadata, TxnError> {
        let metadata = self
            .settled(id)?
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        if metadata.producer_id != producer.id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if metadata.producer_epoch != producer.epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(metadata)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets
    /// partition): opens a transaction if none is, and adds `partitions`.
    pub fn add_partitions(
        &mut self,
        id: &str,
        producer: Producer,
        partitions: &[TxnPartition],
        now_ms: i64,
    ) -> Result<Decision<()>, TxnError> {
        let current = self.current(id, producer)?;
        match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Dead => return Err(TxnError::InvalidTxnState),
            _ => {}
        }
        let open = current.state == TxnState::Ongoing;
        if open && partitions.iter().all(|p| current.partitions.contains(p)) {
            return Ok(Decision::unchanged(()));
        }
        let mut metadata = current.clone();
        if !open {
            metadata.partitions.clear();
            metadata.start_ms = now_ms;
        }
        metadata.state = TxnState::Ongoing;
        metadata.partitions.extend(partitions.iter().cloned());
        metadata.last_update_ms = now_ms;
        Ok(Decision {
            answer: (),
            record: Some(self.transition(id, metadata)),
        })
    }

    /// Whether `producer`'s open transaction holds `partition` (KIP-890
    /// part 1: a leader appends a transactional batch only then).
    pub fn verify(
        &self,
        id: &str,
        producer: Producer,
        partition: &TxnPartition,
    ) -> Result<(), TxnError> {
        let metadata = self.ids.get(id).ok_or(TxnError::InvalidProducerIdMapping)?;
        if metadata.producer_id != producer.id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if metadata.producer_epoch != producer.epoch {
            return Err(TxnError::ProducerFenced);
        }
        if metadata.state != TxnState::Ongoing || !metadata.partitions.contains(partition) {
            return Err(TxnError::InvalidTxnState);
        }
        Ok(())
    }

    /// EndTxn: commits or aborts the open transaction. With `bump_epoch`
    /// (EndTxn v5, KIP-890 part 2) the producer's epoch goes up by one and
    /// the answer names the new one.
    pub fn end(
        &mut self,
        id: &str,
        producer: Producer,
        commit: bool,
        bump_epoch: bool,
        now_ms: i64,
    ) -> Result<Decision<Producer>, TxnError> {
        let (prepare, complete) = if commit {
            (TxnState::PrepareCommit, TxnState::CompleteCommit)
        } else {
            (TxnState::PrepareAbort, TxnState::CompleteAbort)
        };
        let metadata = self
            .settled(id)?
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        if metadata.producer_id != producer.id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        let answer = Producer {
            id: metadata.producer_id,
            epoch: metadata.producer_epoch,
        };
        // A retry of an EndTxn that bumped the epoch names the old one.
        let retried_bump = bump_epoch
            && producer.epoch == metadata.last_producer_epoch
            && producer.epoch != metadata.producer_epoch;
        if retried_bump {
            return match metadata.state {
                state if state == complete => Ok(Decision::unchanged(answer)),
                state if state == prepare => Err(TxnError::ConcurrentTransactions),
                _ => Err(TxnError::ProducerFenced),
            };
        }
        if metadata.producer_epoch != producer.epoch {
            return Err(TxnError::ProducerFenced);
        }
        match metadata.state {
            TxnState::Ongoing => {
                let mut next = metadata.clone();
                if bump_epoch {
                    next = next.bumped(next.producer_id);
                }
                next.state = prepare;
                next.last_update_ms = now_ms;
                let answer = Producer {
                    id: next.producer_id,
                    epoch: next.producer_epoch,
                };
                Ok(Decision {
                    answer,
                    record: Some(self.transition(id, next)),
                })
            }
            state if state == prepare => Err(TxnError::ConcurrentTransactions),
            state if state == complete => Ok(Decision::unchanged(answer)),
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// Ends a prepared transaction once its markers are written: `epoch`
    /// is the producer epoch it was prepared in (a newer one means someone
    /// else moved it on: nothing to do).
    pub fn complete(&mut self, id: &str, producer: Producer, now_ms: i64) -> Option<KeyedRecord> {
        let metadata = self.settled(id).ok()??;
        if !metadata.state.is_prepared()
            || metadata.producer_id != producer.id
            || metadata.producer_epoch != producer.epoch
        {
            return None;
        }
        let mut next = metadata.clone();
        next.state = match metadata.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        next.partitions.clear();
        next.start_ms = -1;
        next.last_update_ms = now_ms;
        Some(self.transition(id, next))
    }

    /// An administrator's abort of an open transaction (`logctl txn
    /// abort`): as a timeout would, in a new epoch.
    pub fn abort(&mut self, id: &str, now_ms: i64) -> Result<KeyedRecord, TxnError> {
        let metadata = self
            .settled(id)?
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        if metadata.state != TxnState::Ongoing {
            return Err(TxnError::InvalidTxnState);
        }
        let mut next = metadata.bumped(metadata.producer_id);
        next.state = TxnState::PrepareAbort;
        next.last_update_ms = now_ms;
        Ok(self.transition(id, next))
    }

    /// Open transactions past their timeout at `now_ms`: (id, when it
    /// started, its timeout).
    pub fn timed_out(&self, now_ms: i64) -> Vec<(String, i64, i32)> {
        self.ids
            .iter()
            .filter(|(id, metadata)| {
                metadata.state == TxnState::Ongoing
                    && !self.pending.contains_key(*id)
                    && now_ms.saturating_sub(metadata.start_ms) > metadata.timeout_ms as i64
            })
            .map(|(id, metadata)| (id.clone(), metadata.start_ms, metadata.timeout_ms))
            .collect()
    }

    /// Ids idle past `transactional.id.expiration.ms` at `now_ms`.
    pub fn expired(&self, config: &TxnConfig, now_ms: i64) -> Vec<String> {
        self.ids
            .iter()
            .filter(|(id, metadata)| {
                metadata.state.is_idle()
                    && !self.pending.contains_key(*id)
                    && now_ms.saturating_sub(metadata.last_update_ms) >= config.id_expiration_ms
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Forgets `id` if it is still idle past its expiration: its tombstone.
    pub fn expire(&mut self, id: &str, config: &TxnConfig, now_ms: i64) -> Decision<()> {
        if !self
            .expired(config, now_ms)
            .iter()
            .any(|expired| expired == id)
        {
            return Decision::unchanged(());
        }
        let mut dead = self.ids[id].clone();
        dead.state = TxnState::Dead;
        self.pending.insert(id.to_string(), dead);
        Decision {
            answer: (),
            record: Some(super::records::encode(id, None)),
        }
    }

    /// Prepared transactions no task is completing: (id, producer, commit?,
    /// partitions).
    pub fn to_complete(&self) -> Vec<(String, Producer, bool, Vec<TxnPartition>)> {
        self.ids
            .iter()
            .filter(|(id, metadata)| {
                metadata.state.is_prepared()
                    && !self.pending.contains_key(*id)
                    && !self.completing.contains(*id)
            })
            .map(|(id, metadata)| {
                (
                    id.clone(),
                    Producer {
                        id: metadata.producer_id,
                        epoch: metadata.producer_epoch,
                    },
                    metadata.state == TxnState::PrepareCommit,
                    metadata.partitions.iter().cloned().collect(),
                )
            })
            .collect()
    }
}

impl TxnMetadata {
    /// The same producer in the next epoch; a new producer id at epoch 0
    /// once the epochs run out.
    fn bumped(&self, fresh_producer_id: i64) -> TxnMetadata {
        let mut next = self.clone();
        if self.producer_epoch >= i16::MAX - 1 {
            next.producer_id = fresh_producer_id;
            next.producer_epoch = 0;
            next.last_producer_epoch = -1;
        } else {
            next.last_producer_epoch = self.producer_epoch;
            next.producer_epoch = self.producer_epoch + 1;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::records;

    const CONFIG: TxnConfig = TxnConfig {
        timeout_ms_max: 60_000,
        id_expiration_ms: 1_000_000,
    };

    /// Applies what a decision wrote, as its durable record would.
    fn settle<T>(transactions: &mut Transactions, decision: Decision<T>) -> T {
        if let Some((key, value)) = &decision.record {
            let (id, metadata) = records::decode(key, value.as_deref()).unwrap();
            transactions.apply(&id, metadata);
        }
        decision.answer
    }

    fn init(transactions: &mut Transactions, id: &str, fresh: i64, now: i64) -> Init {
        let decision = transactions
            .init_producer_id(id, 10_000, None, fresh, &CONFIG, now)
            .unwrap();
        settle(transactions, decision)
    }

    fn partition(name: &str, index: i32) -> TxnPartition {
        (name.to_string(), index)
    }

    #[test]
    fn a_transaction_commits_through_prepare_and_complete() {
        let mut txns = Transactions::default();
        let Init::Ready(producer) = init(&mut txns, "t", 100, 0) else {
            panic!("a new id is ready")
        };
        assert_eq!(producer, Producer { id: 100, epoch: 0 });
        let added = txns
            .add_partitions("t", producer, &[partition("a", 0)], 5)
            .unwrap();
        settle(&mut txns, added);
        assert_eq!(txns.get("t").unwrap().state, TxnState::Ongoing);
        assert_eq!(txns.get("t").unwrap().start_ms, 5);
        // Adding what is there writes nothing.
        let again = txns
            .add_partitions("t", producer, &[partition("a", 0)], 6)
            .unwrap();
        assert_eq!(again.record, None);
        assert_eq!(txns.verify("t", producer, &partition("a", 0)), Ok(()));
        assert_eq!(
            txns.verify("t", producer, &partition("a", 1)),
            Err(TxnError::InvalidTxnState)
        );
        let ended = txns.end("t", producer, true, false, 7).unwrap();
        // Before the prepare record is durable, the id is busy.
        assert_eq!(
            txns.add_partitions("t", producer, &[partition("b", 0)], 8),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(settle(&mut txns, ended), producer);
        assert_eq!(txns.get("t").unwrap().state, TxnState::PrepareCommit);
        assert_eq!(
            txns.to_complete(),
            vec![("t".to_string(), producer, true, vec![partition("a", 0)])]
        );
        let record = txns.complete("t", producer, 9).unwrap();
        settle(
            &mut txns,
            Decision {
                answer: (),
                record: Some(record),
            },
        );
        let metadata = txns.get("t").unwrap();
        assert_eq!(metadata.state, TxnState::CompleteCommit);
        assert!(metadata.partitions.is_empty());
        // A retried commit is answered; an abort now is not allowed.
        assert!(txns
            .end("t", producer, true, false, 10)
            .unwrap()
            .record
            .is_none());
        assert_eq!(
            txns.end("t", producer, false, false, 10),
            Err(TxnError::InvalidTxnState)
        );
    }

    #[test]
    fn a_new_instance_fences_the_open_transaction_in_a_new_epoch() {
        let mut txns = Transactions::default();
        let Init::Ready(old) = init(&mut txns, "t", 100, 0) else {
            panic!()
        };
        let added = txns
            .add_partitions("t", old, &[partition("a", 0)], 1)
            .unwrap();
        settle(&mut txns, added);
        assert_eq!(init(&mut txns, "t", 101, 2), Init::Fencing);
        let metadata = txns.get("t").unwrap().clone();
        assert_eq!(metadata.state, TxnState::PrepareAbort);
        assert_eq!(metadata.producer_epoch, 1);
        // The old instance is refused everywhere.
        assert_eq!(
            txns.add_partitions("t", old, &[partition("b", 0)], 3),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            txns.end("t", old, true, false, 3),
            Err(TxnError::ProducerFenced)
        );
        // Retrying while the abort completes: busy.
        assert_eq!(
            txns.init_producer_id("t", 10_000, None, 102, &CONFIG, 3),
            Err(TxnError::ConcurrentTransactions)
        );
        let fenced = Producer { id: 100, epoch: 1 };
        let record = txns.complete("t", fenced, 4).unwrap();
        let (id, value) = records::decode(&record.0, record.1.as_deref()).unwrap();
        txns.apply(&id, value);
        assert_eq!(
            init(&mut txns, "t", 103, 5),
            Init::Ready(Producer { id: 100, epoch: 2 })
        );
    }

    #[test]
    fn end_txn_v5_bumps_the_epoch_and_a_retry_of_it_is_answered() {
        let mut txns = Transactions::default();
        let Init::Ready(producer) = init(&mut txns, "t", 7, 0) else {
            panic!()
        };
        let added = txns
            .add_partitions("t", producer, &[partition("a", 0)], 1)
            .unwrap();
        settle(&mut txns, added);
        let ended = txns.end("t", producer, true, true, 2).unwrap();
        let bumped = settle(&mut txns, ended);
        assert_eq!(bumped, Producer { id: 7, epoch: 1 });
        // The retry names the old epoch: busy while prepared, then answered.
        assert_eq!(
            txns.end("t", producer, true, true, 3),
            Err(TxnError::ConcurrentTransactions)
        );
        let record = txns.complete("t", bumped, 4).unwrap();
        let (id, value) = records::decode(&record.0, record.1.as_deref()).unwrap();
        txns.apply(&id, value);
        assert_eq!(
            txns.end("t", producer, true, true, 5).unwrap().answer,
            bumped
        );
        // A write of the old epoch (a delayed produce) is refused.
        assert_eq!(
            txns.add_partitions("t", producer, &[partition("a", 0)], 6),
            Err(TxnError::ProducerFenced)
        );
        assert!(txns
            .add_partitions("t", bumped, &[partition("a", 0)], 6)
            .is_ok());
    }

    #[test]
    fn timeouts_expiry_and_bad_requests() {
        let mut txns = Transactions::default();
        assert_eq!(
            txns.init_producer_id("t", 60_001, None, 1, &CONFIG, 0),
            Err(TxnError::InvalidTransactionTimeout)
        );
        let Init::Ready(producer) = init(&mut txns, "t", 1, 0) else {
            panic!()
        };
        assert_eq!(
            txns.add_partitions("t", Producer { id: 2, epoch: 0 }, &[], 0),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            txns.add_partitions("nobody", producer, &[], 0),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            txns.end("t", producer, true, false, 0),
            Err(TxnError::InvalidTxnState),
            "nothing is open"
        );
        let added = txns
            .add_partitions("t", producer, &[partition("a", 0)], 100)
            .unwrap();
        settle(&mut txns, added);
        assert!(txns.timed_out(10_100).is_empty());
        assert_eq!(txns.timed_out(10_101), vec![("t".to_string(), 100, 10_000)]);
        let record = txns.abort("t", 10_101).unwrap();
        let (id, value) = records::decode(&record.0, record.1.as_deref()).unwrap();
        txns.apply(&id, value);
        assert_eq!(
            txns.get("t").unwrap().producer_epoch,
            1,
            "the timed-out producer is fenced"
        );
        assert!(
            txns.expired(&CONFIG, 10_101 + 999_999).is_empty(),
            "not idle"
        );
        let record = txns
            .complete("t", Producer { id: 1, epoch: 1 }, 20_000)
            .unwrap();
        let (id, value) = records::decode(&record.0, record.1.as_deref()).unwrap();
        txns.apply(&id, value);
        assert!(txns.expired(&CONFIG, 20_000 + 999_999).is_empty());
        assert_eq!(
            txns.expired(&CONFIG, 20_000 + 1_000_000),
            vec!["t".to_string()]
        );
        assert_eq!(txns.expire("t", &CONFIG, 20_000).record, None, "not yet");
        let tombstone = txns
            .expire("t", &CONFIG, 20_000 + 1_000_000)
            .record
            .unwrap();
        assert_eq!(tombstone.1, None);
        let (id, value) = records::decode(&tombstone.0, None).unwrap();
        txns.apply(&id, value);
        assert!(txns.is_empty());
    }
}
