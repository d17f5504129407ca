//! Fetch: whole batches below each partition's high watermark, long-polling
//! up to `max_wait_ms` until `min_bytes` are available. A fetch with a
//! replica id is a follower copying the log: it reads up to the log end,
//! reports the follower's progress (which moves the high watermark), and is
//! told where its log diverges from the leader's. A fetch with Kafka's
//! debugging replica id (-2) reads any replica this broker hosts, leader or
//! follower, up to its log end: how replicas are compared with each other.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};
use strata_storage::page_cache;
use tokio::time::Instant;

use super::error_code;
use super::Context;
use crate::controller::metadata::BrokerId;
use crate::limits::FETCH_WAIT_MAX;
use crate::replica::fetcher;
use crate::replica::in_sync::FollowerPosition;
use crate::replica::partition::{FollowerRead, Isolation};

/// Followers fetch with v12, the first version that reports divergence.
const FOLLOWER_FETCH_VERSION_MIN: i16 = 12;

/// Kafka's `DEBUGGING_CONSUMER_ID`: read this broker's replica, whatever its
/// role, up to its log end.
const DEBUGGING_REPLICA_ID: i32 = -2;

pub async fn handle(context: &Context, request: FetchRequest, api_version: i16) -> FetchResponse {
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let follower = request.replica_id.0;
    let read = |context, request| {
        if follower >= 0 {
            read_for_follower(context, request, BrokerId(follower), api_version)
        } else if follower == DEBUGGING_REPLICA_ID {
            read_replica(context, request)
        } else {
            read_once(context, request, api_version)
        }
    };
    let response = loop {
        // Register for wake-ups before reading, so a flush (or, for a
        // follower, an append) between the read and the wait is not missed.
        let visible = context.replicas.visible().notified();
        let appended = context.replicas.appended().notified();
        let (response, bytes) = read(context, &request);
        // min_bytes 0 asks for an immediate answer, data or not. An error
        // (this broker stopped leading a partition, say) is answered at
        // once, as Kafka does, so the client finds the new leader.
        if bytes >= min_bytes || has_error(&response) || Instant::now() >= deadline {
            break response;
        }
        let woken = async {
            if follower >= 0 {
                tokio::select! {
                    _ = visible => {}
                    _ = appended => {}
                }
            } else {
                visible.await;
            }
        };
        if tokio::time::timeout_at(deadline, woken).await.is_err() {
            break read(context, &request).0;
        }
    };
    load_cold_records(&response).await;
    response
}

fn has_error(response: &FetchResponse) -> bool {
    response
        .responses
        .iter()
        .flat_map(|topic| &topic.partitions)
        .any(|partition| partition.error_code != 0)
}

/// Records not in the page cache (a reader far behind the log end) would
/// make writing the response fault and wait for the disk on this runtime
/// thread: they are read in on a blocking thread first.
async fn load_cold_records(response: &FetchResponse) {
    let cold: Vec<Bytes> = response
        .responses
        .iter()
        .flat_map(|topic| &topic.partitions)
        .filter_map(|partition| partition.records.clone())
        .filter(|records| !page_cache::is_resident(records))
        .collect();
    if cold.is_empty() {
        return;
    }
    let loading = tokio::task::spawn_blocking(move || {
        for records in &cold {
            page_cache::load(records);
        }
    });
    if let Err(error) = loading.await {
        tracing::warn!(%error, "loading records from disk failed; the response faults them in");
    }
}

/// Walks the requested partitions in order within the request's byte
/// budget. `serve` gets each partition's topic, its fetch, a response with
/// no offsets yet, and whether the budget is spent (past it, later
/// partitions still get their offsets but no records; as in Kafka, the first
/// partition with data gets at least one batch); it returns the response and
/// the bytes of records in it.
fn walk(
    request: &FetchRequest,
    mut serve: impl FnMut(&str, &FetchPartition, PartitionData, usize, bool) -> (PartitionData, usize),
) -> (FetchResponse, usize) {
    let mut remaining = if request.max_bytes > 0 {
        request.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut total = 0;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for fetch in &topic.partitions {
            let response = PartitionData::default()
                .with_partition_index(fetch.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            let max_bytes = (fetch.partition_max_bytes.max(0) as usize).min(remaining);
            let spent = max_bytes == 0 && total > 0;
            let (response, bytes) = serve(
                topic.topic.0.as_str(),
                fetch,
                response,
                max_bytes.max(1),
                spent,
            );
            total += bytes;
            remaining = remaining.saturating_sub(bytes);
            partitions.push(response);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    (FetchResponse::default().with_responses(topics), total)
}

/// One pass for follower `follower`: records up to each log end, or where
/// its log diverges.
fn read_for_follower(
    context: &Context,
    request: &FetchRequest,
    follower: BrokerId,
    api_version: i16,
) -> (FetchResponse, usize) {
    let metadata = context.controller.metadata();
    let now = Instant::now();
    walk(request, |topic, fetch, response, max_bytes, spent| {
        if api_version < FOLLOWER_FETCH_VERSION_MIN {
            return (response.with_error_code(error_code::UNSUPPORTED_VERSION), 0);
        }
        let (partition, _) =
            match context.leader_in(topic, fetch.partition, fetch.current_leader_epoch) {
                Ok(led) => led,
                Err(code) => return (response.with_error_code(code), 0),
            };
        let Some(durable_end) = fetcher::durable_end_of(fetch) else {
            return (response.with_error_code(error_code::INVALID_REQUEST), 0);
        };
        let position = FollowerPosition {
            log_end: fetch.fetch_offset,
            durable_end,
        };
        // A replica a reassignment adds copies at the topic's throttled
        // rate until it joins the ISR; with nothing allowed now, it is
        // answered as if the response were full.
        let allowance = metadata.topics.get(topic).and_then(|record| {
            let index = usize::try_from(fetch.partition).ok()?;
            context
                .catch_up_throttle
                .allowance(record, index, follower, now)
        });
        let spent = spent || allowance == Some(0);
        let max_bytes = allowance.map_or(max_bytes, |allowed| allowed.min(max_bytes));
        let served = (!spent).then(|| {
            partition.serve_follower(follower, position, fetch.last_fetched_epoch, max_bytes)
        });
        if let (Some(_), Some(Ok(FollowerRead::Records(read)))) = (allowance, &served) {
            context.catch_up_throttle.spend(topic, read.records.len());
        }
        let high_watermark = partition.high_watermark();
        let response = response
            .with_high_watermark(high_watermark)
            .with_last_stable_offset(high_watermark)
            .with_log_start_offset(partition.log_start_offset());
        match served {
            None => (response.with_records(Some(Bytes::new())), 0),
            Some(Ok(FollowerRead::Records(read))) => {
                let len = read.records.len();
                (
                    response.with_records(Some(Bytes::from_owner(read.records))),
                    len,
                )
            }
            Some(Ok(FollowerRead::Diverging {
                leader_epoch,
                end_offset,
            })) => {
                let diverging = EpochEndOffset::default()
                    .with_epoch(leader_epoch)
                    .with_end_offset(end_offset);
                (
                    response
                        .with_diverging_epoch(diverging)
                        .with_records(Some(Bytes::new())),
                    0,
                )
            }
            Some(Err(error)) => (response.with_error_code(error_code::for_storage(&error)), 0),
        }
    })
}

/// One pass over this broker's replicas of the requested partitions, each
/// read up to its own log end, whatever its role.
fn read_replica(context: &Context, request: &FetchRequest) -> (FetchResponse, usize) {
    walk(request, |topic, fetch, response, max_bytes, spent| {
        let Some(partition) = context.replicas.partition(topic, fetch.partition) else {
            return (
                response.with_error_code(error_code::UNKNOWN_TOPIC_OR_PARTITION),
                0,
            );
        };
        let high_watermark = partition.high_watermark();
        let response = response
            .with_high_watermark(high_watermark)
            .with_last_stable_offset(high_watermark)
            .with_log_start_offset(partition.log_start_offset());
        if spent {
            return (response.with_records(Some(Bytes::new())), 0);
        }
        match partition.read_to_log_end(fetch.fetch_offset, max_bytes) {
            Ok(read) => {
                let len = read.records.len();
                (
                    response.with_records(Some(Bytes::from_owner(read.records))),
                    len,
                )
            }
            Err(error) => (response.with_error_code(error_code::for_storage(&error)), 0),
        }
    })
}

/// Kafka's `isolation_level` of a fetch that reads committed records only.
const READ_COMMITTED: i8 = 1;

/// One pass over the requested partitions for a consumer; returns the
/// response and the bytes of records in it.
fn read_once(
    context: &Context,
    request: &FetchRequest,
    api_version: i16,
) -> (FetchResponse, usize) {
    let isolation = if request.isolation_level == READ_COMMITTED {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    walk(request, |topic, fetch, response, max_bytes, spent| {
        let partition = match context.leader_in(topic, fetch.partition, fetch.current_leader_epoch)
        {
            Ok((partition, _)) => partition,
            Err(code) => return (response.with_error_code(code), 0),
        };
        let with_offsets =
            |response: PartitionData, high_watermark, last_stable_offset, log_start_offset| {
                let response = response
                    .with_high_watermark(high_watermark)
                    .with_last_stable_offset(last_stable_offset);
                // The log start offset is a field from v5 on.
                if api_version >= 5 {
                    response.with_log_start_offset(log_start_offset)
                } else {
                    response
                }
            };
        // One read under the log's lock answers everything: the records,
        // the high watermark they stop at and the log start offset.
        let read = match partition.read_for_consumer(
            fetch.fetch_offset,
            (!spent).then_some(max_bytes),
            isolation,
        ) {
            Ok(read) => read,
            Err(error) => {
                let high_watermark = partition.high_watermark();
                let response = with_offsets(
                    response,
                    high_watermark,
                    high_watermark,
                    partition.log_start_offset(),
                );
                return (response.with_error_code(error_code::for_storage(&error)), 0);
            }
        };
        let mut response = with_offsets(
            response,
            read.high_watermark,
            read.last_stable_offset,
            read.log_start_offset,
        );
        if isolation == Isolation::ReadCommitted {
            let aborted = read
                .aborted
                .iter()
                .map(|entry| {
                    AbortedTransaction::default()
                        .with_producer_id(ProducerId(entry.producer_id.0))
                        .with_first_offset(entry.first_offset)
                })
                .collect();
            response = response.with_aborted_transactions(Some(aborted));
        }
        let records = read
            .records
            .map_or_else(Bytes::new, |read| Bytes::from_owner(read.records));
        let len = records.len();
        context.metrics.record_fetch(topic, len as u64);
        (response.with_records(Some(records)), len)
    })
}
