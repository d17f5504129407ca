//! Replica fetchers: a follower copies its partitions from their leaders,
//! one task and one connection per leader broker, with Kafka's Fetch (v12)
//! carrying this broker's id as the replica id.
//!
//! A round fetches every partition at its log end, naming the epoch of its
//! last batch, and long-polls on the leader until something is appended.
//! What comes back is appended; where the leader says the logs diverge
//! (KIP-101/320: the end of the largest epoch both know), the divergent
//! suffix is truncated.
//!
//! Copying and flushing overlap: what a round appended is flushed by the
//! partition's flusher while the next round already fetches. Each fetch
//! reports the partition's durable end next to its log end (tagged field
//! [`DURABLE_END_TAG`]), and only the durable end counts towards the
//! leader's high watermark. While a flush runs, a round does not long-poll:
//! if the leader has nothing new, the fetcher waits for the flush and
//! reports its end at once, so an acks=all producer waits for one fsync
//! here, not for a fetch timeout.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId as WireBrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use strata_protocol::exchange;
use strata_protocol::frame::{FrameCodec, FrameReader};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::partition::Partition;
use super::replica_manager::TopicPartition;
use crate::clock::now_ms;
use crate::controller::metadata::BrokerId;

const FETCH_VERSION: i16 = 12;
/// The tagged field of a fetched partition (`FetchPartition`) in which a
/// Strata follower reports its durable log end. Kafka defines tags 0 and 1;
/// a fetch without this one counts its fetch offset as durable.
pub const DURABLE_END_TAG: i32 = 10_000;
/// How long a fetch waits on the leader for something to be appended.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// How long a whole exchange may take before the connection is dropped.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes one round copies per partition: large enough that a busy
/// partition is not held to one small copy per round trip.
const PARTITION_FETCH_BYTES: i32 = 8 << 20;
const FETCH_BYTES: i32 = 16 << 20;
/// Largest response a fetcher reads.
const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// Pause after a failed round.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// How long a flush of what was appended may take.
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
    let mut connection: Option<Connection> = None;
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
        // Appended here but not yet durable: the leader learns of the
        // flush's end from the next fetch, so that one must not long-poll.
        let flushing: Vec<(Arc<Partition>, i64)> = partitions
            .values()
            .filter_map(|(_, partition)| {
                let log_end = partition.log_end_offset();
                (partition.durable_end() < log_end).then(|| (Arc::clone(partition), log_end))
            })
            .collect();
        let wait = if flushing.is_empty() {
            FETCH_WAIT
        } else {
            Duration::ZERO
        };
        let round = async {
            if connection.is_none() {
                let stream = tokio::time::timeout(EXCHANGE_TIMEOUT, TcpStream::connect(&address))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                    })??;
                stream.set_nodelay(true)?;
                connection = Some(Connection::new(stream));
            }
            let connection = connection.as_mut().expect("connected above");
            let request = fetch_request(me, &partitions, wait);
            let response = tokio::time::timeout(EXCHANGE_TIMEOUT, connection.exchange(&request))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "fetch timed out")
                })??;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::select! {
            _ = stop.cancelled() => return,
            response = round => response,
            // A partition to copy was added (or its epoch changed) while
            // the leader holds the fetch: waiting out the long-poll would
            // hold up its first acks=all writes, so drop the fetch (and
            // with it the connection, whose reply would now be out of
            // step) and fetch anew.
            changed = assignment.changed() => {
                if changed.is_err() {
                    return;
                }
                connection = None;
                continue;
            }
        };
        let healthy = match response {
            Ok(response) => {
                let copied = copy(leader, &partitions, response);
                if copied.healthy && !copied.appended && !flushing.is_empty() {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        flushed = wait_flushed(&flushing) => flushed,
                    }
                } else {
                    copied.healthy
                }
            }
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

/// Waits until each partition is durable up to its offset; false if one
/// was not within the flush timeout.
async fn wait_flushed(flushing: &[(Arc<Partition>, i64)]) -> bool {
    for (partition, offset) in flushing {
        if !partition.wait_flushed(*offset, FLUSH_TIMEOUT).await {
            warn!(partition = ?partition, "copied records not flushed in time");
            return false;
        }
    }
    true
}

fn fetch_request(me: BrokerId, partitions: &Assignment, wait: Duration) -> FetchRequest {
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for ((topic, index), (leader_epoch, partition)) in partitions {
        // Read the durable end first: it never passes the log end read after.
        let durable_end = partition.durable_end();
        let fetch = FetchPartition::default()
            .with_partition(*index)
            .with_current_leader_epoch(*leader_epoch)
            .with_fetch_offset(partition.log_end_offset())
            .with_last_fetched_epoch(partition.latest_leader_epoch().unwrap_or(-1))
            .with_log_start_offset(partition.log_start_offset())
            .with_partition_max_bytes(PARTITION_FETCH_BYTES);
        topics
            .entry(topic)
            .or_default()
            .push(with_durable_end(fetch, durable_end));
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
        .with_max_wait_ms(wait.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// A fetcher's connection to its leader.
struct Connection {
    stream: TcpStream,
    correlation_id: i32,
    request: BytesMut,
    /// Holds each response while it is copied, then takes the next: the
    /// same warm memory round after round.
    responses: FrameReader,
}

impl Connection {
    fn new(stream: TcpStream) -> Connection {
        let codec = FrameCodec::new(RESPONSE_BYTES_MAX).reserving_whole_frames();
        Connection {
            stream,
            correlation_id: 0,
            request: BytesMut::new(),
            responses: FrameReader::new(codec),
        }
    }

    async fn exchange(&mut self, request: &FetchRequest) -> std::io::Result<FetchResponse> {
        self.correlation_id += 1;
        self.request.clear();
        let client_id = StrBytes::from_static_str("strata-replica-fetcher");
        exchange::encode(
            &mut self.request,
            FETCH_VERSION,
            self.correlation_id,
            Some(&client_id),
            request,
        )?;
        self.stream.write_all(&self.request).await?;
        let frame = self
            .responses
            .read(&mut self.stream)
            .await?
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        Ok(exchange::decode::<FetchRequest>(
            frame.freeze(),
            FETCH_VERSION,
            self.correlation_id,
        )?)
    }
}

/// Reports `durable_end` in a fetched partition.
fn with_durable_end(mut fetch: FetchPartition, durable_end: i64) -> FetchPartition {
    fetch.unknown_tagged_fields.insert(
        DURABLE_END_TAG,
        Bytes::copy_from_slice(&durable_end.to_be_bytes()),
    );
    fetch
}

/// The durable end a follower reports in a fetched partition: its fetch
/// offset when it reports none (it flushed before fetching), never more;
/// `None` if the field is malformed.
pub fn durable_end_of(fetch: &FetchPartition) -> Option<i64> {
    match fetch.unknown_tagged_fields.get(&DURABLE_END_TAG) {
        None => Some(fetch.fetch_offset),
        Some(field) => {
            let durable_end = i64::from_be_bytes(field.as_ref().try_into().ok()?);
            (0..=fetch.fetch_offset)
                .contains(&durable_end)
                .then_some(durable_end)
        }
    }
}

/// What applying one fetch response did.
struct Copied {
    /// False if the round went wrong (the caller backs off).
    healthy: bool,
    /// Whether any records were appended.
    appended: bool,
}

/// Applies one fetch response.
fn copy(leader: BrokerId, partitions: &Assignment, response: FetchResponse) -> Copied {
    if response.error_code != 0 {
        debug!(
            leader,
            error_code = response.error_code,
            "replica fetch refused"
        );
        return Copied {
            healthy: false,
            appended: false,
        };
    }
    let mut healthy = true;
    let mut appended = false;
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
                    let outcome = partition
                        .append_from_leader(&records, data.high_watermark, now_ms())
                        .and_then(|()| partition.follow_log_start(data.log_start_offset));
                    appended |= had_records && outcome.is_ok();
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
    Copied { healthy, appended }
}
