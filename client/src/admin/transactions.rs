//! Transactions as an operator sees them: which are open, for how long,
//! on which partitions and from which offset each holds its partition's
//! last stable offset back; and aborting one that hangs.

use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, FindCoordinatorRequest, InitProducerIdRequest,
    ListTransactionsRequest, ProducerId, TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::descriptions::{TransactionDescription, TransactionListing, TransactionPartition};
use super::Admin;
use crate::cluster::{topic_name, Target};
use crate::error::{check, Error, Result};

/// The transaction timeout an administrator's fencing InitProducerId asks
/// for (the coordinator's default bound allows it).
const FENCING_TIMEOUT_MS: i32 = 60_000;

impl Admin {
    /// Every transactional id, from every broker's ListTransactions (each
    /// lists those it coordinates), optionally only those in `states`.
    pub async fn list_transactions(&self, states: &[&str]) -> Result<Vec<TransactionListing>> {
        self.cluster.refresh(&[]).await?;
        let request = ListTransactionsRequest::default()
            .with_state_filters(states.iter().map(|state| str_bytes(state)).collect())
            .with_duration_filter(-1);
        let mut listed = Vec::new();
        for broker in self.cluster.broker_ids() {
            let response = self
                .cluster
                .call(Target::Broker(broker), &request)
                .await?
                .response;
            check(
                || format!("list transactions on broker {broker}"),
                response.error_code,
                None,
            )?;
            if let Some(unknown) = response.unknown_state_filters.first() {
                return Err(Error::Config(format!(
                    "unknown transaction state {unknown:?}"
                )));
            }
            listed.extend(
                response
                    .transaction_states
                    .iter()
                    .map(|state| TransactionListing {
                        transactional_id: state.transactional_id.0.to_string(),
                        producer_id: state.producer_id.0,
                        state: state.transaction_state.to_string(),
                    }),
            );
        }
        listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        listed.dedup_by(|a, b| a.transactional_id == b.transactional_id);
        Ok(listed)
    }

    /// A transactional id as its coordinator knows it, with, for each
    /// partition of its open transaction, the offset the transaction
    /// started at there (it holds the last stable offset at or below it).
    pub async fn describe_transaction(&self, id: &str) -> Result<TransactionDescription> {
        let coordinator = self.transaction_coordinator(id).await?;
        let request = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(str_bytes(id))]);
        let answer = self
            .cluster
            .call(Target::Broker(coordinator), &request)
            .await?;
        let state = answer.first(&answer.response.transaction_states)?;
        check(
            || format!("describe transaction {id}"),
            state.error_code,
            None,
        )?;
        let mut partitions = Vec::new();
        for topic in &state.topics {
            let name = topic.topic.0.to_string();
            let producers = self.describe_producers(&name).await?;
            let offsets = self.describe_topic(&name).await?;
            for &partition in &topic.partitions {
                let first_offset = producers
                    .iter()
                    .find(|producer| {
                        producer.partition == partition
                            && producer.producer_id == state.producer_id.0
                    })
                    .and_then(|producer| producer.txn_start_offset);
                let offsets = offsets
                    .offsets
                    .iter()
                    .flatten()
                    .find(|offsets| offsets.partition == partition);
                partitions.push(TransactionPartition {
                    topic: name.clone(),
                    partition,
                    first_offset,
                    last_stable_offset: offsets.map(|offsets| offsets.last_stable_offset),
                    high_watermark: offsets.map(|offsets| offsets.high_watermark),
                });
            }
        }
        Ok(TransactionDescription {
            transactional_id: id.to_string(),
            coordinator,
            producer_id: state.producer_id.0,
            producer_epoch: state.producer_epoch,
            state: state.transaction_state.to_string(),
            timeout_ms: state.transaction_timeout_ms,
            start_ms: (state.transaction_start_time_ms >= 0)
                .then_some(state.transaction_start_time_ms),
            partitions,
        })
    }

    /// Aborts `id`'s open transaction by fencing its producer, as a new
    /// instance of it would (InitProducerId): the coordinator aborts the
    /// transaction in a new epoch, so the old instance can write nothing
    /// more. Returns once the abort is complete.
    pub async fn abort_transaction(&self, id: &str) -> Result<()> {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(str_bytes(id))))
            .with_transaction_timeout_ms(FENCING_TIMEOUT_MS)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let deadline = Instant::now() + self.cluster.config().request_timeout;
        loop {
            let answer: Result<()> = async {
                let coordinator = self.transaction_coordinator(id).await?;
                let response = self
                    .cluster
                    .call(Target::Broker(coordinator), &request)
                    .await?
                    .response;
                check(
                    || format!("abort transaction {id}"),
                    response.error_code,
                    None,
                )
            }
            .await;
            match answer {
                Err(Error::Broker {
                    error:
                        ResponseError::ConcurrentTransactions
                        | ResponseError::NotCoordinator
                        | ResponseError::CoordinatorNotAvailable
                        | ResponseError::CoordinatorLoadInProgress,
                    ..
                }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                answer => return answer,
            }
        }
    }

    /// Writes an abort marker for `producer_id`'s transaction on one
    /// partition directly (Kafka's KIP-664 for a hanging transaction its
    /// coordinator no longer knows): the partition's last stable offset
    /// moves past it.
    pub async fn abort_hanging_transaction(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<()> {
        let info = self.cluster.refresh(&[topic]).await?.remove(0)?;
        let leader = super::leader_of(&info, partition, "abort a hanging transaction")?;
        let marker = WritableTxnMarker::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_transaction_result(false)
            .with_coordinator_epoch(-1)
            .with_topics(vec![WritableTxnMarkerTopic::default()
                .with_name(topic_name(topic))
                .with_partition_indexes(vec![partition])]);
        let request = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
        let answer = self.cluster.call(Target::Broker(leader), &request).await?;
        for result in answer
            .response
            .markers
            .iter()
            .flat_map(|marker| &marker.topics)
        {
            for partition in &result.partitions {
                check(
                    || {
                        format!(
                            "abort the transaction of producer {producer_id} on {topic}-{}",
                            partition.partition_index
                        )
                    },
                    partition.error_code,
                    None,
                )?;
            }
        }
        Ok(())
    }

    async fn transaction_coordinator(&self, id: &str) -> Result<i32> {
        let request = FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![str_bytes(id)]);
        let answer = self.cluster.call(Target::Any, &request).await?;
        let found = answer.first(&answer.response.coordinators)?;
        check(
            || format!("find the coordinator of transactional id {id}"),
            found.error_code,
            found.error_message.as_ref(),
        )?;
        Ok(found.node_id.0)
    }
}

fn str_bytes(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}
