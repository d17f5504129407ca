//! A transactional producer's side of Kafka transactions: its
//! transactional id's coordinator, the partitions (and group offsets) the
//! open transaction wrote to, and the calls that open, extend and end it.
//!
//! Life of a transaction: `begin_transaction`; every `send` to a partition
//! the transaction has not written to yet adds it first
//! (AddPartitionsToTxn); `send_offsets_to_transaction` adds the group's
//! offsets (AddOffsetsToTxn, then TxnOffsetCommit on the group's
//! coordinator); `commit_transaction` flushes and ends it (EndTxn). From
//! EndTxn v5 each end moves the producer to a new epoch (KIP-890 part 2),
//! and batches after it start their sequences again.
//!
//! A batch that fails for good makes the transaction abortable: it can
//! only be aborted. A newer instance with the same transactional id fences
//! this one for good: every call then fails with the fencing error.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, EndTxnRequest,
    FindCoordinatorRequest, GroupId, InitProducerIdRequest, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use strata_protocol::batch::ProducerId as BatchProducerId;
use tracing::debug;

use crate::cluster::{Cluster, Target};
use crate::error::{check, Error, Result};
use crate::group::find_coordinator;

/// The first EndTxn version that moves the producer to a new epoch.
const END_TXN_BUMPING_VERSION: i16 = 5;

/// The group a transaction commits consumed offsets for, as its consumer
/// sees it (Kafka's `ConsumerGroupMetadata`): the coordinator refuses a
/// commit from a member that is no longer in the generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// Where the producer's transaction is.
#[derive(Debug, Clone)]
pub(super) enum Phase {
    /// `init_transactions` not called yet.
    Uninitialized,
    /// No transaction open.
    Ready,
    /// Open; `send` may write.
    Open,
    /// Being committed or aborted.
    Ending,
    /// A write failed: the transaction can only be aborted.
    Abortable(Error),
    /// A newer instance took over the transactional id.
    Fenced(Error),
}

pub(super) struct TxnStatus {
    pub(super) phase: Phase,
    coordinator: Option<i32>,
    partitions: HashSet<(Arc<str>, i32)>,
    offsets_added: HashSet<String>,
}

/// A transactional producer's transaction state.
pub(super) struct Transaction {
    pub(super) id: String,
    pub(super) timeout: Duration,
    pub(super) status: tokio::sync::Mutex<TxnStatus>,
}

impl Transaction {
    pub(super) fn new(id: String, timeout: Duration) -> Transaction {
        Transaction {
            id,
            timeout,
            status: tokio::sync::Mutex::new(TxnStatus {
                phase: Phase::Uninitialized,
                coordinator: None,
                partitions: HashSet::new(),
                offsets_added: HashSet::new(),
            }),
        }
    }
}

/// Whether `error` says a newer instance fenced this producer.
pub(super) fn is_fencing(error: &Error) -> bool {
    matches!(
        error,
        Error::Broker {
            error: ResponseError::ProducerFenced
                | ResponseError::InvalidProducerEpoch
                | ResponseError::TransactionalIdAuthorizationFailed,
            ..
        }
    )
}

/// Whether the transaction is still being ended (its markers written):
/// retry shortly.
fn concurrent(error: &Error) -> bool {
    matches!(
        error,
        Error::Broker {
            error: ResponseError::ConcurrentTransactions,
            ..
        }
    )
}

/// How soon a call refused as concurrent is first retried, doubling up to
/// `CONCURRENT_RETRY_BACKOFF_MAX`: the previous transaction's markers
/// usually take a few milliseconds, and the next transaction waits for them.
const CONCURRENT_RETRY_BACKOFF: Duration = Duration::from_millis(1);
const CONCURRENT_RETRY_BACKOFF_MAX: Duration = Duration::from_millis(20);

/// Whether the coordinator moved or is busy: find it again and retry.
fn coordinator_moved(error: &Error) -> bool {
    matches!(
        error,
        Error::Broker {
            error: ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable,
            ..
        }
    )
}

impl TxnStatus {
    /// Refuses `operation` unless a transaction is open (`open`) or none is
    /// (`!open`).
    pub(super) fn require(&self, operation: &str, open: bool) -> Result<()> {
        match (&self.phase, open) {
            (Phase::Fenced(error), _) => Err(error.clone()),
            (Phase::Open, true) | (Phase::Ready, false) => Ok(()),
            (Phase::Abortable(error), _) => Err(Error::Transaction(format!(
                "cannot {operation}: the transaction must be aborted ({error})"
            ))),
            (Phase::Uninitialized, _) => Err(Error::Transaction(format!(
                "cannot {operation}: call init_transactions first"
            ))),
            (phase, _) => Err(Error::Transaction(format!(
                "cannot {operation} while the transaction is {}",
                match phase {
                    Phase::Ready => "not begun",
                    Phase::Open => "open",
                    _ => "ending",
                }
            ))),
        }
    }

    /// Records a failure: fencing is for good, anything else makes the
    /// open transaction abortable.
    pub(super) fn fail(&mut self, error: Error) {
        if matches!(self.phase, Phase::Fenced(_)) {
            return;
        }
        self.phase = if is_fencing(&error) {
            Phase::Fenced(error)
        } else {
            Phase::Abortable(error)
        };
    }

    /// Whether the open transaction wrote to anything (EndTxn is needed).
    pub(super) fn wrote(&self) -> bool {
        !self.partitions.is_empty() || !self.offsets_added.is_empty()
    }

    pub(super) fn reset(&mut self) {
        self.partitions.clear();
        self.offsets_added.clear();
    }

    pub(super) fn has_partition(&self, topic: &Arc<str>, partition: i32) -> bool {
        self.partitions.contains(&(Arc::clone(topic), partition))
    }
}

/// Calls on the transaction coordinator, retried while it moves, is
/// loading or is busy, until the request timeout.
pub(super) struct TxnCalls<'a> {
    pub(super) cluster: &'a Cluster,
    pub(super) transaction: &'a Transaction,
    pub(super) retry_backoff: Duration,
}

impl TxnCalls<'_> {
    async fn coordinator(&self, status: &mut TxnStatus) -> Result<i32> {
        if let Some(coordinator) = status.coordinator {
            return Ok(coordinator);
        }
        let request = FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![str_bytes(&self.transaction.id)]);
        let answer = self.cluster.call(Target::Any, &request).await?;
        let found = answer.first(&answer.response.coordinators)?;
        check(
            || {
                format!(
                    "find the coordinator of transactional id {}",
                    self.transaction.id
                )
            },
            found.error_code,
            found.error_message.as_ref(),
        )?;
        status.coordinator = Some(found.node_id.0);
        Ok(found.node_id.0)
    }

    /// Runs `call` on the coordinator until it answers for good.
    async fn on_coordinator<T, Call, Fut>(&self, status: &mut TxnStatus, call: Call) -> Result<T>
    where
        Call: Fn(i32) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.cluster.config().request_timeout;
        let mut concurrent_backoff = CONCURRENT_RETRY_BACKOFF;
        loop {
            let result = match self.coordinator(status).await {
                Ok(coordinator) => call(coordinator).await,
                Err(error) => Err(error),
            };
            match result {
                Err(error) if Instant::now() < deadline && concurrent(&error) => {
                    tokio::time::sleep(concurrent_backoff.min(self.retry_backoff)).await;
                    concurrent_backoff = (concurrent_backoff * 2).min(CONCURRENT_RETRY_BACKOFF_MAX);
                }
                Err(error)
                    if Instant::now() < deadline
                        && (error.is_retriable() || coordinator_moved(&error)) =>
                {
                    if coordinator_moved(&error) || matches!(error, Error::Io { .. }) {
                        status.coordinator = None;
                    }
                    debug!(transactional_id = self.transaction.id, %error, "retrying a call on the transaction coordinator");
                    tokio::time::sleep(self.retry_backoff).await;
                }
                result => return result,
            }
        }
    }

    /// InitProducerId for the transactional id: the producer it writes as
    /// (aborting a previous instance's open transaction first).
    pub(super) async fn init_producer_id(
        &self,
        status: &mut TxnStatus,
    ) -> Result<(BatchProducerId, i16)> {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(str_bytes(&self.transaction.id))))
            .with_transaction_timeout_ms(millis(self.transaction.timeout))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        self.on_coordinator(status, |coordinator| {
            let request = &request;
            async move {
                let response = self
                    .cluster
                    .call(Target::Broker(coordinator), request)
                    .await?
                    .response;
                check(|| "InitProducerId".to_string(), response.error_code, None)?;
                Ok((
                    BatchProducerId(response.producer_id.0),
                    response.producer_epoch,
                ))
            }
        })
        .await
    }

    /// Adds partitions to the open transaction.
    pub(super) async fn add_partitions(
        &self,
        status: &mut TxnStatus,
        identity: (BatchProducerId, i16),
        partitions: &[(Arc<str>, i32)],
    ) -> Result<()> {
        let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
        for (topic, partition) in partitions {
            match topics.iter_mut().find(|t| *t.name.0 == **topic) {
                Some(t) => t.partitions.push(*partition),
                None => topics.push(
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(str_bytes(topic)))
                        .with_partitions(vec![*partition]),
                ),
            }
        }
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(str_bytes(&self.transaction.id)))
            .with_v3_and_below_producer_id(ProducerId(identity.0 .0))
            .with_v3_and_below_producer_epoch(identity.1)
            .with_v3_and_below_topics(topics);
        self.on_coordinator(status, |coordinator| {
            let request = &request;
            async move {
                let response = self
                    .cluster
                    .call(Target::Broker(coordinator), request)
                    .await?
                    .response;
                for topic in &response.results_by_topic_v3_and_below {
                    for result in &topic.results_by_partition {
                        check(
                            || {
                                format!(
                                    "add {}-{} to the transaction",
                                    topic.name.0, result.partition_index
                                )
                            },
                            result.partition_error_code,
                            None,
                        )?;
                    }
                }
                Ok(())
            }
        })
        .await?;
        status.partitions.extend(partitions.iter().cloned());
        Ok(())
    }

    /// AddOffsetsToTxn, then TxnOffsetCommit on the group's coordinator.
    pub(super) async fn send_offsets(
        &self,
        status: &mut TxnStatus,
        identity: (BatchProducerId, i16),
        offsets: &[(&str, i32, i64)],
        group: &GroupMetadata,
    ) -> Result<()> {
        if !status.offsets_added.contains(&group.group_id) {
            let request = AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(str_bytes(&self.transaction.id)))
                .with_producer_id(ProducerId(identity.0 .0))
                .with_producer_epoch(identity.1)
                .with_group_id(GroupId(str_bytes(&group.group_id)));
            self.on_coordinator(status, |coordinator| {
                let request = &request;
                async move {
                    let response = self
                        .cluster
                        .call(Target::Broker(coordinator), request)
                        .await?
                        .response;
                    check(|| "AddOffsetsToTxn".to_string(), response.error_code, None)
                }
            })
            .await?;
            status.offsets_added.insert(group.group_id.clone());
        }
        let mut topics: Vec<TxnOffsetCommitRequestTopic> = Vec::new();
        for &(topic, partition, offset) in offsets {
            let entry = TxnOffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1);
            match topics.iter_mut().find(|t| *t.name.0 == *topic) {
                Some(t) => t.partitions.push(entry),
                None => topics.push(
                    TxnOffsetCommitRequestTopic::default()
                        .with_name(TopicName(str_bytes(topic)))
                        .with_partitions(vec![entry]),
                ),
            }
        }
        let request = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(str_bytes(&self.transaction.id)))
            .with_group_id(GroupId(str_bytes(&group.group_id)))
            .with_producer_id(ProducerId(identity.0 .0))
            .with_producer_epoch(identity.1)
            .with_generation_id(group.generation)
            .with_member_id(str_bytes(&group.member_id))
            .with_group_instance_id(group.group_instance_id.as_deref().map(str_bytes))
            .with_topics(topics);
        let deadline = Instant::now() + self.cluster.config().request_timeout;
        loop {
            let result: Result<()> = async {
                let coordinator = find_coordinator(self.cluster, &group.group_id).await?;
                let response = self
                    .cluster
                    .call(Target::Broker(coordinator), &request)
                    .await?
                    .response;
                for topic in &response.topics {
                    for partition in &topic.partitions {
                        check(
                            || {
                                format!(
                                    "commit the offset of {}-{} in the transaction",
                                    topic.name.0, partition.partition_index
                                )
                            },
                            partition.error_code,
                            None,
                        )?;
                    }
                }
                Ok(())
            }
            .await;
            match result {
                Err(error)
                    if Instant::now() < deadline
                        && (error.is_retriable() || coordinator_moved(&error)) =>
                {
                    tokio::time::sleep(self.retry_backoff).await;
                }
                result => return result,
            }
        }
    }

    /// EndTxn: the producer (id, epoch) the next transaction writes as.
    pub(super) async fn end(
        &self,
        status: &mut TxnStatus,
        identity: (BatchProducerId, i16),
        commit: bool,
    ) -> Result<(BatchProducerId, i16)> {
        let request = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(str_bytes(&self.transaction.id)))
            .with_producer_id(ProducerId(identity.0 .0))
            .with_producer_epoch(identity.1)
            .with_committed(commit);
        self.on_coordinator(status, |coordinator| {
            let request = &request;
            async move {
                let connection = self.cluster.connection(coordinator).await?;
                let bumps = connection.version(ApiKey::EndTxn)? >= END_TXN_BUMPING_VERSION;
                let response = self.cluster.call_on(&connection, request).await?.response;
                check(
                    || {
                        format!(
                            "{} the transaction",
                            if commit { "commit" } else { "abort" }
                        )
                    },
                    response.error_code,
                    None,
                )?;
                Ok(if bumps {
                    (
                        BatchProducerId(response.producer_id.0),
                        response.producer_epoch,
                    )
                } else {
                    identity
                })
            }
        })
        .await
    }
}

fn str_bytes(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn millis(duration: Duration) -> i32 {
    duration.as_millis().min(i32::MAX as u128) as i32
}
