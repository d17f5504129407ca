//! The sender task: groups closed batches by leader into Produce requests,
//! at most `in_flight_max` per broker, and settles each batch's outcome
//! (delivered, retried in order, or failed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, warn};

use super::accumulator::ClosedBatch;
use super::config::Acks;
use super::delivery::BatchOutcome;
use super::Inner;
use crate::cluster::topic_name;
use crate::connection::Sent;
use crate::error::{Error, Result};

impl Inner {
    /// Closes lingered batches and ships ready ones until the producer is gone.
    pub(super) async fn run_sender(self: Arc<Self>) {
        let inner = self;
        let mut refresh_at: Option<Instant> = None;
        // When an idempotent producer that must start over tries again.
        let mut start_over_at: Option<Instant> = None;
        loop {
            let nothing_in_flight = || {
                inner
                    .in_flight
                    .lock()
                    .expect("in flight")
                    .values()
                    .all(|&count| count == 0)
            };
            if inner.resetting()
                && start_over_at.is_none_or(|at| at <= Instant::now())
                && nothing_in_flight()
            {
                start_over_at = match inner.start_over().await {
                    Ok(()) => None,
                    Err(error) => {
                        warn!(%error, "cannot take a new producer id; trying again");
                        Some(Instant::now() + inner.config.retry_backoff)
                    }
                };
            }
            let now = Instant::now();
            let (requests, next_deadline, missing_leader) = collect(&inner, now);
            let sent = !requests.is_empty();
            for (broker, batches) in requests {
                *inner
                    .in_flight
                    .lock()
                    .expect("in flight")
                    .entry(broker)
                    .or_default() += 1;
                // Written here, in order; only the wait for the response runs
                // apart, so batches of a partition reach the broker in order.
                let written = write_request(&inner, broker, &batches).await;
                tokio::spawn(settle(Arc::clone(&inner), broker, batches, written));
            }
            if sent {
                // More ready batches may wait behind the ones just sent.
                continue;
            }
            if !missing_leader.is_empty() && refresh_at.is_none_or(|at| at <= now) {
                refresh_at = Some(now + inner.config.retry_backoff);
                let topics: Vec<&str> = missing_leader.iter().map(|topic| &**topic).collect();
                match inner.cluster.refresh(&topics).await {
                    Ok(results) => {
                        for info in results.into_iter().flatten() {
                            inner.topic_queue_for(&info);
                        }
                    }
                    Err(error) => debug!(%error, "metadata refresh failed"),
                }
                continue;
            }
            let deadline = [
                next_deadline,
                refresh_at.filter(|_| !missing_leader.is_empty()),
                start_over_at.filter(|_| inner.resetting()),
            ]
            .into_iter()
            .flatten()
            .min();
            match deadline {
                Some(deadline) => {
                    tokio::select! {
                        _ = inner.wake.notified() => {}
                        _ = tokio::time::sleep_until(deadline.into()) => {}
                    }
                }
                None => inner.wake.notified().await,
            }
        }
    }
}

pub(super) type Requests = HashMap<i32, Vec<ClosedBatch>>;

/// Closes batches whose linger expired and takes sendable batches, grouped
/// by leader. Returns them, the next time something becomes due, and the
/// topics with a partition whose leader is unknown.
pub(super) fn collect(inner: &Inner, now: Instant) -> (Requests, Option<Instant>, Vec<Arc<str>>) {
    let mut requests: Requests = HashMap::new();
    let mut next_deadline: Option<Instant> = None;
    let mut missing_leader = Vec::new();
    let mut due = |at: Instant| next_deadline = Some(next_deadline.map_or(at, |d| d.min(at)));
    let in_flight = inner.in_flight.lock().expect("in flight").clone();
    // An idempotent producer starting over sends nothing until it has.
    let resetting = inner.resetting();
    let topics = inner.topic_queues();
    for topic in topics {
        let info = inner.cluster.cached_topic(&topic.name);
        for (partition, queue) in topic.partitions.iter().enumerate() {
            let mut queue = queue.lock().expect("partition queue");
            if let Some(open) = &queue.open {
                let close_at = open.opened_at + inner.config.linger;
                if close_at <= now {
                    queue.close_open(&topic.name, partition as i32, now, inner.identity());
                } else {
                    due(close_at);
                }
            }
            let Some(front) = queue.ready.front() else {
                continue;
            };
            if now.duration_since(front.closed_at) >= inner.config.delivery_timeout {
                let batch = queue.ready.pop_front().expect("checked");
                let error = Error::DeliveryTimeout {
                    after: inner.config.delivery_timeout,
                    last_error: batch.last_error.clone().map(Box::new),
                };
                inner.failed_for_good(&error);
                batch.ack.complete(Err(error));
                continue;
            }
            if resetting {
                // Sent once the producer has started over; its delivery
                // timeout still runs.
                due(front.closed_at + inner.config.delivery_timeout);
                continue;
            }
            if front.not_before > now {
                due(front.not_before);
                continue;
            }
            let order = front.order;
            if !queue.may_send(order) {
                // Sent when an earlier batch's outcome is known (settle
                // wakes the sender).
                continue;
            }
            let leader = info
                .as_ref()
                .and_then(|info| info.partitions.get(partition))
                .and_then(|partition| partition.leader);
            let Some(leader) = leader else {
                if !missing_leader.contains(&topic.name) {
                    missing_leader.push(Arc::clone(&topic.name));
                }
                continue;
            };
            if in_flight.get(&leader).copied().unwrap_or(0) >= inner.config.in_flight_max {
                continue;
            }
            let batch = queue.ready.pop_front().expect("checked");
            requests.entry(leader).or_default().push(batch);
        }
    }
    // One request per broker per round; a broker with more ready batches
    // gets the rest next round, bounded by `in_flight_max`.
    (requests, next_deadline, missing_leader)
}

/// Waits for the response to a written request and settles each batch.
pub(super) async fn settle(
    inner: Arc<Inner>,
    broker: i32,
    batches: Vec<ClosedBatch>,
    written: Result<Written>,
) {
    let outcome = match written {
        Ok(Written::Acknowledged(sent)) => inner
            .cluster
            .timed("Produce", sent.response())
            .await
            .map(|response| Some(partition_outcomes(response))),
        Ok(Written::Unacknowledged) => Ok(None),
        Err(error) => Err(error),
    };
    match outcome {
        Err(error) => {
            for batch in batches {
                inner.fail_or_retry(batch, error.clone());
            }
            if matches!(error, Error::Io { .. }) {
                let _ = inner.cluster.refresh(&[]).await;
            }
        }
        Ok(None) => {
            for batch in batches {
                batch.ack.complete(Ok(BatchOutcome {
                    base_offset: None,
                    log_append_time_ms: None,
                }));
            }
        }
        Ok(Some(outcomes)) => {
            let mut refresh = false;
            for batch in batches {
                let outcome = outcomes
                    .iter()
                    .find(|(topic, partition, _)| {
                        **topic == *batch.topic && *partition == batch.partition
                    })
                    .map(|(_, _, outcome)| outcome);
                match outcome {
                    Some(Ok(outcome)) => batch.ack.complete(Ok(*outcome)),
                    Some(Err(error)) => {
                        refresh |=
                            matches!(error, Error::Broker { error, .. } if needs_metadata(*error));
                        inner.fail_or_retry(batch, error.clone());
                    }
                    None => {
                        let error = Error::Protocol {
                            address: format!("broker {broker}"),
                            reason: format!("no result for {}-{}", batch.topic, batch.partition),
                        };
                        inner.fail_or_retry(batch, error);
                    }
                }
            }
            if refresh {
                let _ = inner.cluster.refresh(&[]).await;
            }
        }
    }
    *inner
        .in_flight
        .lock()
        .expect("in flight")
        .entry(broker)
        .or_default() -= 1;
    inner.wake.notify_one();
}

pub(super) fn needs_metadata(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::NotLeaderOrFollower
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::LeaderNotAvailable
            | ResponseError::FencedLeaderEpoch
    )
}

pub(super) type PartitionOutcomes = Vec<(String, i32, Result<BatchOutcome>)>;

/// A produce request on the wire.
pub(super) enum Written {
    Acknowledged(Sent<ProduceRequest>),
    /// acks=0: no response will come.
    Unacknowledged,
}

/// Writes one produce request holding `batches` to `broker`.
pub(super) async fn write_request(
    inner: &Inner,
    broker: i32,
    batches: &[ClosedBatch],
) -> Result<Written> {
    let connection = inner.cluster.connection(broker).await?;
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for batch in batches {
        let data = PartitionProduceData::default()
            .with_index(batch.partition)
            .with_records(Some(batch.bytes.clone()));
        match topics
            .iter_mut()
            .find(|topic| *topic.name.0 == *batch.topic)
        {
            Some(topic) => topic.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(topic_name(&batch.topic))
                    .with_partition_data(vec![data]),
            ),
        }
    }
    let timeout = inner.config.client.request_timeout;
    let request = ProduceRequest::default()
        .with_acks(inner.config.acks.wire())
        .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
        .with_transactional_id(
            inner
                .config
                .transactional_id
                .as_deref()
                .map(|id| TransactionalId(StrBytes::from_string(id.to_string()))),
        )
        .with_topic_data(topics);
    if inner.config.acks == Acks::None {
        connection.send_without_response(&request).await?;
        return Ok(Written::Unacknowledged);
    }
    Ok(Written::Acknowledged(connection.start(&request).await?))
}

pub(super) fn partition_outcomes(response: ProduceResponse) -> PartitionOutcomes {
    let mut outcomes = Vec::new();
    for topic in response.responses {
        for partition in topic.partition_responses {
            let outcome = if partition.error_code == 0 {
                Ok(BatchOutcome {
                    base_offset: Some(partition.base_offset),
                    log_append_time_ms: (partition.log_append_time_ms >= 0)
                        .then_some(partition.log_append_time_ms),
                })
            } else {
                Err(Error::broker(
                    format!("produce to {}-{}", topic.name.0, partition.index),
                    partition.error_code,
                    partition.error_message.map(|message| message.to_string()),
                ))
            };
            outcomes.push((topic.name.0.to_string(), partition.index, outcome));
        }
    }
    outcomes
}
