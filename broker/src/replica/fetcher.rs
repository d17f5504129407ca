//! Replica fetchers: a follower copies its partitions from their leaders,
//! one task and one connection per leader broker, with Kafka's Fetch (v12)
//! carrying this broker's id as the replica id.
//!
//! A round fetches every partition at its log end, naming the epoch of its
//! last batch, and long-polls on the leader until something is appended.
//! What comes back is appended; where the leader says the logs diverge
//! (KIP-101/320: the end of the largest epoch both know), the divergent
//! suffix is truncated. Everything appended is flushed before the next
//! fetch, so the offset a fetch reports is durable here: that is what lets
//! the leader count it in the high watermark.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId as WireBrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::partition::Partition;
use super::replica_manager::TopicPartition;
use crate::controller::metadata::BrokerId;
use crate::handler::now_ms;

const FETCH_VERSION: i16 = 12;
/// How long a fetch waits on the leader for something to be appended.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// How long a whole exchange may take before the connection is dropped.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
const PARTITION_FETCH_BYTES: i32 = 1 << 20;
const FETCH_BYTES: i32 = 16 << 20;
/// Largest response a fetcher reads.
const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// Pause after a failed round.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// How long a flush of what a round appended may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a failing fetcher says so.
const WARN_INTERVAL: Duration = Duration::from_secs(5);

/// The partitions one fetcher copies: each with the leader epoch it follows.
pub type Assignment = BTreeMap<TopicPartition, (i32, Arc<Partition>)>;

/// Every fetcher of this broker, by leader.
pub struct Fetchers {
    me: BrokerId,
    running: Mutex<HashMap<BrokerId, Fetcher>>,
}

struct Fetcher {
    address: String,
    assignment: watch::Sender<Assignment>,
    stop: CancellationToken,
}

impl Fetchers {
    pub fn new(me: BrokerId) -> Self {
        Fetchers {
            me,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Copies exactly `plan`: leader → (its address, what to copy from it).
    /// Fetchers of leaders no longer in the plan stop; a leader whose
    /// address changed gets a new fetcher.
    pub fn update(&self, plan: HashMap<BrokerId, (String, Assignment)>) {
        let mut running = self.running.lock().expect("fetchers lock");
        running.retain(|leader, fetcher| {
            let keep = plan
                .get(leader)
                .is_some_and(|(address, _)| *address == fetcher.address);
            if !keep {
                fetcher.stop.cancel();
            }
            keep
        });
        for (leader, (address, assignment)) in plan {
            match running.get(&leader) {
                Some(fetcher) => {
                    fetcher.assignment.send_if_modified(|current| {
                        let changed = !same_assignment(current, &assignment);
                        if changed {
                            *current = assignment;
                        }
                        changed
                    });
                }
                None => {
                    let (sender, receiver) = watch::channel(assignment);
                    let stop = CancellationToken::new();
                    tokio::spawn(run(
                        self.me,
                        leader,
                        address.clone(),
                        receiver,
                        stop.clone(),
                    ));
                    running.insert(
                        leader,
                        Fetcher {
                            address,
                            assignment: sender,
                            stop,
                        },
                    );
                }
            }
        }
    }

    pub fn stop_all(&self) {
        for (_, fetcher) in self.running.lock().expect("fetchers lock").drain() {
            fetcher.stop.cancel();
        }
    }
}

fn same_assignment(a: &Assignment, b: &Assignment) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(
            |((key_a, (epoch_a, partition_a)), (key_b, (epoch_b, partition_b)))| {
                key_a == key_b && epoch_a == epoch_b && Arc::ptr_eq(partition_a, partition_b)
            },
        )
}

async fn run(
    me: BrokerId,
    leader: BrokerId,
    address: String,
    mut assignment: watch::Receiver<Assignment>,
    stop: CancellationToken,
) {
    let mut connection: Option<(TcpStream, i32)> = None;
    let mut failing_since: Option<Instant> = None;
    loop {
        let partitions = assignment.borrow_and_update().clone();
        if partitions.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = assignment.changed() => if changed.is_err() { return },
            }
            continue;
        }
        let round = async {
            if connection.is_none() {
                let stream = tokio::time::timeout(EXCHANGE_TIMEOUT, TcpStream::connect(&address))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                    })??;
                stream.set_nodelay(true)?;
                connection = Some((stream, 0));
            }
            let (stream, correlation_id) = connection.as_mut().expect("connected above");
            *correlation_id += 1;
            let request = fetch_request(me, &partitions);
            let response = tokio::time::timeout(
                EXCHANGE_TIMEOUT,
                exchange(stream, *correlation_id, &request),
            )
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "fetch timed out"))??;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::select! {
            _ = stop.cancelled() => return,
            response = round => response,
        };
        let healthy = match response {
            Ok(response) => copy(leader, &partitions, response).await,
            Err(error) => {
                connection = None;
                debug!(leader, %address, %error, "replica fetch failed");
                false
            }
        };
        if healthy {
            failing_since = None;
            continue;
        }
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= WARN_INTERVAL {
            warn!(leader, %address, "replica fetches from this leader keep failing");
            failing_since = Some(Instant::now());
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY_BACKOFF) => {}
        }
    }
}

fn fetch_request(me: BrokerId, partitions: &Assignment) -> FetchRequest {
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for ((topic, index), (leader_epoch, partition)) in partitions {
        topics.entry(topic).or_default().push(
            FetchPartition::default()
                .with_partition(*index)
                .with_current_leader_epoch(*leader_epoch)
                .with_fetch_offset(partition.log_end_offset())
                .with_last_fetched_epoch(partition.latest_leader_epoch().unwrap_or(-1))
                .with_log_start_offset(partition.log_start_offset())
                .with_partition_max_bytes(PARTITION_FETCH_BYTES),
        );
    }
    let topics = topics
        .into_iter()
        .map(|(topic, partitions)| {
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(WireBrokerId(me))
        .with_max_wait_ms(FETCH_WAIT.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES)
        .with_session_epoch(-1)
        .with_topics(topics)
}

async fn exchange(
    stream: &mut TcpStream,
    correlation_id: i32,
    request: &FetchRequest,
) -> std::io::Result<FetchResponse> {
    let invalid = |error: anyhow::Error| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string())
    };
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(FETCH_VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("strata-replica-fetcher")));
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0; 4]);
    header
        .encode(
            &mut frame,
            ApiKey::Fetch.request_header_version(FETCH_VERSION),
        )
        .map_err(invalid)?;
    request.encode(&mut frame, FETCH_VERSION).map_err(invalid)?;
    let length = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&length.to_be_bytes());
    stream.write_all(&frame).await?;

    let length = stream.read_u32().await? as usize;
    if length > RESPONSE_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("fetch response of {length} bytes exceeds {RESPONSE_BYTES_MAX}"),
        ));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(
        &mut body,
        ApiKey::Fetch.response_header_version(FETCH_VERSION),
    )
    .map_err(invalid)?;
    if header.correlation_id != correlation_id {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "response to request {} while waiting for {correlation_id}",
                header.correlation_id
            ),
        ));
    }
    FetchResponse::decode(&mut body, FETCH_VERSION).map_err(invalid)
}

/// Applies one fetch response; false if the round went wrong (the caller
/// backs off).
async fn copy(leader: BrokerId, partitions: &Assignment, response: FetchResponse) -> bool {
    if response.error_code != 0 {
        debug!(
            leader,
            error_code = response.error_code,
            "replica fetch refused"
        );
        return false;
    }
    let mut healthy = true;
    let mut appended = Vec::new();
    for topic in response.responses {
        for data in topic.partitions {
            let key = (topic.topic.0.to_string(), data.partition_index);
            let Some((_, partition)) = partitions.get(&key) else {
                continue;
            };
            let outcome = match ResponseError::try_from_code(data.error_code) {
                None if data.diverging_epoch.end_offset >= 0 => {
                    // Keep what both logs hold: up to the end of the
                    // largest epoch both know, whichever log ends it first.
                    let leader_end = data.diverging_epoch.end_offset;
                    let (own_epoch, own_end) =
                        partition.end_offset_for_epoch(data.diverging_epoch.epoch);
                    let target = if own_epoch < 0 {
                        leader_end
                    } else {
                        leader_end.min(own_end)
                    };
                    partition.truncate_to(target)
                }
                None => {
                    let records = data.records.unwrap_or_default();
                    let had_records = !records.is_empty();
                    let outcome =
                        partition.append_from_leader(&records, data.high_watermark, now_ms());
                    if had_records && outcome.is_ok() {
                        appended.push(Arc::clone(partition));
                    }
                    outcome
                }
                Some(ResponseError::OffsetOutOfRange) => {
                    if partition.log_end_offset() < data.log_start_offset {
                        partition.restart_at(data.log_start_offset)
                    } else {
                        partition.truncate_to(data.high_watermark.max(0))
                    }
                }
                Some(error) => {
                    // Not the leader (any more), or not yet: the metadata
                    // moves this partition to the right fetcher.
                    debug!(leader, partition = ?partition, ?error, "replica fetch refused for a partition");
                    healthy = false;
                    Ok(())
                }
            };
            if let Err(error) = outcome {
                warn!(leader, partition = ?partition, %error, "cannot copy from the leader");
                healthy = false;
            }
        }
    }
    for partition in appended {
        let end = partition.log_end_offset();
        if !partition.wait_flushed(end, FLUSH_TIMEOUT).await {
            warn!(partition = ?partition, "copied records not flushed in time");
            healthy = false;
        }
    }
    healthy
}
