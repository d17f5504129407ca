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

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId as WireBrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::partition::Partition;
use super::TopicPartition;
use crate::clock::now_ms;
use crate::controller::metadata::{BrokerId, LeaderEpoch};
use crate::limits;
use crate::peers::{PeerConnection, PeerSecurity};

const FETCH_VERSION: i16 = 12;
/// The tagged field of a fetched partition (`FetchPartition`) in which a
/// Strata follower reports its durable log end. Kafka defines tags 0 and 1;
/// a fetch without this one counts its fetch offset as durable.
pub const DURABLE_END_TAG: i32 = 10_000;
/// How long a fetch waits on the leader for something to be appended.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Pause after a failed round.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// How often a failing fetcher says so.
const WARN_INTERVAL: Duration = Duration::from_secs(5);

/// The partitions one fetcher copies: each with the leader epoch it follows.
pub type Assignment = BTreeMap<TopicPartition, (LeaderEpoch, Arc<Partition>)>;

/// Every fetcher of this broker, by leader.
pub struct Fetchers {
    me: BrokerId,
    security: PeerSecurity,
    running: Mutex<HashMap<BrokerId, Fetcher>>,
}

struct Fetcher {
    address: String,
    assignment: watch::Sender<Assignment>,
    stop: CancellationToken,
}

impl Fetchers {
    pub fn new(me: BrokerId, security: PeerSecurity) -> Self {
        Fetchers {
            me,
            security,
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
                        self.security.clone(),
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
    security: PeerSecurity,
    leader: BrokerId,
    address: String,
    mut assignment: watch::Receiver<Assignment>,
    stop: CancellationToken,
) {
    let mut connection: Option<PeerConnection> = None;
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
                connection = Some(
                    PeerConnection::connect(
                        &address,
                        &security,
                        "strata-replica-fetcher",
                        limits::FOLLOWER_RESPONSE_BYTES_MAX,
                        limits::FOLLOWER_FETCH_TIMEOUT,
                    )
                    .await?,
                );
            }
            let connection = connection.as_mut().expect("connected above");
            let request = fetch_request(me, &partitions, wait);
            let response = tokio::time::timeout(
                limits::FOLLOWER_FETCH_TIMEOUT,
                connection.exchange(FETCH_VERSION, &request),
            )
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "fetch timed out"))??;
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
                debug!(%leader, %address, %error, "replica fetch failed");
                false
            }
        };
        if healthy {
            failing_since = None;
            continue;
        }
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= WARN_INTERVAL {
            warn!(%leader, %address, "replica fetches from this leader keep failing");
            failing_since = Some(Instant::now());
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY_BACKOFF) => {}
        }
    }
}

/// Waits until each partition is durable up to its offset, or up to its
/// log end if the round just truncated it below that offset (nothing above
/// the log end can become durable until the next round appends); false if
/// one was not within the flush timeout.
async fn wait_flushed(flushing: &[(Arc<Partition>, i64)]) -> bool {
    for (partition, offset) in flushing {
        let offset = (*offset).min(partition.log_end_offset());
        if !partition
            .wait_flushed(offset, limits::FOLLOWER_FLUSH_TIMEOUT)
            .await
        {
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
            .with_current_leader_epoch(leader_epoch.0)
            .with_fetch_offset(partition.log_end_offset())
            .with_last_fetched_epoch(partition.latest_leader_epoch().unwrap_or(-1))
            .with_log_start_offset(partition.log_start_offset())
            .with_partition_max_bytes(limits::FOLLOWER_PARTITION_FETCH_BYTES);
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
        .with_replica_id(WireBrokerId(me.0))
        .with_max_wait_ms(wait.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(limits::FOLLOWER_FETCH_BYTES)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// One partition's part of a fetch response, as the follower decides on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    error: Option<ResponseError>,
    /// The leader's (epoch, end offset) where the logs diverge (KIP-320).
    diverging: Option<(i32, i64)>,
    leader_log_start: i64,
    high_watermark: i64,
}

/// What a follower does with one partition's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Append the records it carries.
    Append,
    /// Cut the log here: what follows is not the leader's.
    TruncateTo(i64),
    /// Drop everything and start at the leader's log start: all this
    /// replica has is below it.
    RestartAt(i64),
    /// Refused for this partition (not the leader, or not yet).
    Refused(ResponseError),
}

/// The follower's decision (KIP-101/279 truncation as KIP-320 reports it):
/// on divergence, keep what both logs hold, up to the end of the largest
/// epoch both know, whichever log ends it first. `end_for_epoch(epoch)` is
/// this replica's largest epoch at or below `epoch` with its end offset
/// (-1 epoch: none); both lookups run only when the answer needs them.
fn follow(
    answer: &Answer,
    log_end: impl FnOnce() -> i64,
    end_for_epoch: impl FnOnce(i32) -> (i32, i64),
) -> Step {
    match (answer.error, answer.diverging) {
        (None, Some((epoch, leader_end))) => {
            let (own_epoch, own_end) = end_for_epoch(epoch);
            Step::TruncateTo(if own_epoch < 0 {
                leader_end
            } else {
                leader_end.min(own_end)
            })
        }
        (None, None) => Step::Append,
        (Some(ResponseError::OffsetOutOfRange), _) => {
            if log_end() < answer.leader_log_start {
                Step::RestartAt(answer.leader_log_start)
            } else {
                // Ahead of the leader's log end: what is past its high
                // watermark here was never committed.
                Step::TruncateTo(answer.high_watermark.max(0))
            }
        }
        (Some(error), _) => Step::Refused(error),
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
            %leader,
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
            let diverging = &data.diverging_epoch;
            let answer = Answer {
                error: ResponseError::try_from_code(data.error_code),
                diverging: (diverging.end_offset >= 0)
                    .then_some((diverging.epoch, diverging.end_offset)),
                leader_log_start: data.log_start_offset,
                high_watermark: data.high_watermark,
            };
            let step = follow(
                &answer,
                || partition.log_end_offset(),
                |epoch| partition.end_offset_for_epoch(epoch),
            );
            let outcome = match step {
                Step::TruncateTo(offset) => partition.truncate_to(offset),
                Step::RestartAt(offset) => partition.restart_at(offset),
                Step::Append => {
                    let records = data.records.unwrap_or_default();
                    let had_records = !records.is_empty();
                    let outcome = partition.append_from_leader(
                        &records,
                        data.high_watermark,
                        data.log_start_offset,
                        now_ms(),
                    );
                    appended |= had_records && outcome.is_ok();
                    outcome
                }
                Step::Refused(error) => {
                    // Not the leader (any more), or not yet: the metadata
                    // moves this partition to the right fetcher.
                    debug!(%leader, partition = ?partition, ?error, "replica fetch refused for a partition");
                    healthy = false;
                    Ok(())
                }
            };
            if let Err(error) = outcome {
                warn!(%leader, partition = ?partition, %error, "cannot copy from the leader");
                healthy = false;
            }
        }
    }
    Copied { healthy, appended }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(error: Option<ResponseError>, diverging: Option<(i32, i64)>) -> Answer {
        Answer {
            error,
            diverging,
            leader_log_start: 100,
            high_watermark: 500,
        }
    }

    fn unused<T>() -> T {
        panic!("a lookup the answer does not need")
    }

    #[test]
    fn records_are_appended_and_refusals_wait_for_the_metadata() {
        assert_eq!(
            follow(&answer(None, None), unused, |_| unused()),
            Step::Append
        );
        let refused = answer(Some(ResponseError::NotLeaderOrFollower), None);
        assert_eq!(
            follow(&refused, unused, |_| unused()),
            Step::Refused(ResponseError::NotLeaderOrFollower)
        );
    }

    /// KIP-101: the follower wrote past the leader's end of an epoch it
    /// shares (it appended in epoch 3, then the leader changed): it cuts
    /// back to where the leader's epoch 3 ends.
    #[test]
    fn a_follower_ahead_in_a_shared_epoch_cuts_to_the_leaders_end() {
        let diverged = answer(None, Some((3, 120)));
        assert_eq!(
            follow(&diverged, unused, |epoch| {
                assert_eq!(epoch, 3);
                (3, 150)
            }),
            Step::TruncateTo(120)
        );
    }

    /// KIP-279: the follower never saw the leader's epoch 5; its largest
    /// epoch below it (4) ends at 130, before the leader's 5 ends: what both
    /// logs hold ends there.
    #[test]
    fn a_follower_missing_the_leaders_epoch_keeps_what_its_own_earlier_epoch_ends_at() {
        let diverged = answer(None, Some((5, 180)));
        assert_eq!(
            follow(&diverged, unused, |_| (4, 130)),
            Step::TruncateTo(130)
        );
        // Its earlier epoch ends past the leader's: the leader's end wins.
        assert_eq!(
            follow(&diverged, unused, |_| (4, 200)),
            Step::TruncateTo(180)
        );
        // No epoch at or below it at all: the leader's end.
        assert_eq!(
            follow(&diverged, unused, |_| (-1, -1)),
            Step::TruncateTo(180)
        );
    }

    #[test]
    fn out_of_range_restarts_below_the_leaders_start_and_truncates_above_its_end() {
        let out_of_range = answer(Some(ResponseError::OffsetOutOfRange), None);
        // Everything here is below the leader's log start (records deleted
        // there while this replica was away).
        assert_eq!(
            follow(&out_of_range, || 40, |_| unused()),
            Step::RestartAt(100)
        );
        // Past the leader's end: only what its high watermark covers stays.
        assert_eq!(
            follow(&out_of_range, || 900, |_| unused()),
            Step::TruncateTo(500)
        );
    }
}
