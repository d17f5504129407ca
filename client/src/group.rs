//! A consumer's membership in its group, in Kafka's classic protocol: find
//! the coordinator, join (the leader runs the assignor), sync, heartbeat
//! from a task of its own so processing between polls does not cost the
//! session, commit and fetch offsets, leave.
//!
//! The consumer drives it from `poll`: the heartbeat task only raises flags
//! (`rejoin`: the group is rebalancing; `fenced`: this member is no longer
//! one, its partitions are lost) that the next `poll` acts on.
//!
//! A consumer that stops polling for `rebalance_timeout`
//! (`max.poll.interval.ms`, KIP-62) is stuck, however well its heartbeats
//! go: the heartbeat task then leaves the group for it (a static member
//! just stops heartbeating), so its partitions move to members that
//! consume, and the next `poll` finds them lost and joins again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::assignor::{self, Assignor, Subscription, TopicPartition};
use crate::cluster::{topic_name, Cluster, Target};
use crate::connection::Connection;
use crate::error::{Error, Result};

/// Pause before retrying a group request that failed for a reason that
/// passes (coordinator moving, rebalance starting).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Attempts of one join (JoinGroup and SyncGroup) before `poll` reports
/// the failure; the next `poll` tries again.
const JOIN_ATTEMPTS_MAX: u32 = 50;
/// Attempts of an offset commit or fetch while the coordinator moves (a
/// leader election of its `__consumer_offsets` partition takes seconds).
const OFFSET_ATTEMPTS_MAX: u32 = 50;

/// A consumer group's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub group_id: String,
    /// Static membership (`group.instance.id`): a restart within the
    /// session takes the member's place back without a rebalance.
    pub group_instance_id: Option<String>,
    /// The member is removed when the coordinator hears nothing for this
    /// long (`session.timeout.ms`).
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// The longest processing between two polls (`max.poll.interval.ms`):
    /// how long a rebalance waits for this member to rejoin, and how long
    /// the member stays in the group without polling.
    pub rebalance_timeout: Duration,
    /// In order of preference; the group uses one every member offers.
    pub assignors: Vec<Assignor>,
}

impl GroupConfig {
    pub fn new(group_id: &str) -> GroupConfig {
        GroupConfig {
            group_id: group_id.to_string(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            rebalance_timeout: Duration::from_secs(300),
            assignors: vec![Assignor::CooperativeSticky],
        }
    }
}

/// Flags the heartbeat task raises for `poll`.
#[derive(Debug, Default)]
struct Signals {
    rejoin: AtomicBool,
    fenced: AtomicBool,
}

/// Where this member stands.
#[derive(Debug, Clone, Default)]
struct MemberState {
    member_id: String,
    generation: i32,
}

/// One consumer's membership.
pub(crate) struct Membership {
    cluster: Arc<Cluster>,
    config: GroupConfig,
    coordinator: tokio::sync::Mutex<Option<i32>>,
    state: Mutex<MemberState>,
    signals: Arc<Signals>,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// When the consumer last polled.
    polled_at: Arc<Mutex<Instant>>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

impl Membership {
    pub(crate) fn new(cluster: Arc<Cluster>, config: GroupConfig) -> Result<Membership> {
        if config.group_id.is_empty() {
            return Err(Error::Config("the group id must not be empty".to_string()));
        }
        if config.assignors.is_empty() {
            return Err(Error::Config(
                "a group consumer needs an assignor".to_string(),
            ));
        }
        if config.heartbeat_interval >= config.session_timeout {
            return Err(Error::Config(
                "the heartbeat interval must be shorter than the session timeout".to_string(),
            ));
        }
        Ok(Membership {
            cluster,
            config,
            coordinator: tokio::sync::Mutex::new(None),
            state: Mutex::new(MemberState {
                generation: -1,
                ..MemberState::default()
            }),
            signals: Arc::default(),
            heartbeat: Mutex::new(None),
            polled_at: Arc::new(Mutex::new(Instant::now())),
        })
    }

    /// The consumer is polling: it is not stuck.
    pub(crate) fn polled(&self) {
        *self.polled_at.lock().expect("poll time") = Instant::now();
    }

    pub(crate) fn group_id(&self) -> &str {
        &self.config.group_id
    }

    /// The coordinator asked this member to rejoin.
    pub(crate) fn rejoin_requested(&self) -> bool {
        self.signals.rejoin.load(Ordering::Acquire)
    }

    /// This member was removed from the group (its session lapsed or a
    /// newer generation went on without it): what it owned is lost.
    pub(crate) fn take_fenced(&self) -> bool {
        self.signals.fenced.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn member_id(&self) -> String {
        self.state.lock().expect("member state").member_id.clone()
    }

    pub(crate) fn generation(&self) -> i32 {
        self.state.lock().expect("member state").generation
    }

    /// Forgets the generation after being fenced; a dynamic member also
    /// forgets its id and joins as a new one.
    pub(crate) fn reset(&self) {
        self.stop_heartbeat();
        let mut state = self.state.lock().expect("member state");
        state.generation = -1;
        if self.config.group_instance_id.is_none() {
            state.member_id.clear();
        }
    }

    /// The coordinator's connection, found first if unknown.
    pub(crate) async fn coordinator(&self) -> Result<Arc<Connection>> {
        let mut coordinator = self.coordinator.lock().await;
        let id = match *coordinator {
            Some(id) => id,
            None => {
                let id = find_coordinator(&self.cluster, &self.config.group_id).await?;
                *coordinator = Some(id);
                id
            }
        };
        drop(coordinator);
        match self.cluster.connection(id).await {
            Ok(connection) => Ok(connection),
            Err(error) => {
                self.forget_coordinator().await;
                Err(error)
            }
        }
    }

    async fn forget_coordinator(&self) {
        *self.coordinator.lock().await = None;
    }

    /// Handles an error code of a group request: a coordinator error makes
    /// the next call find the coordinator again.
    async fn check(&self, operation: &str, code: i16) -> Result<()> {
        let result = crate::error::check(
            || format!("{operation} {}", self.config.group_id),
            code,
            None,
        );
        if let Err(Error::Broker { error, .. }) = &result {
            if matches!(
                error,
                ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::CoordinatorLoadInProgress
            ) {
                self.forget_coordinator().await;
            }
        }
        result
    }

    /// Joins the group's next generation with `subscription.topics`,
    /// announcing `owned`; returns this member's assignment. Retries what
    /// passes (a moving coordinator, a rebalance restarting).
    pub(crate) async fn join(
        &self,
        topics: &[String],
        owned: &[TopicPartition],
    ) -> Result<Vec<TopicPartition>> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.join_once(topics, owned).await {
                Ok(assignment) => return Ok(assignment),
                Err(error)
                    if (error.is_retriable() || member_error(&error))
                        && attempts < JOIN_ATTEMPTS_MAX =>
                {
                    debug!(group = %self.config.group_id, %error, "rejoining");
                    if !matches!(
                        &error,
                        Error::Broker {
                            error: ResponseError::MemberIdRequired,
                            ..
                        }
                    ) {
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn join_once(
        &self,
        topics: &[String],
        owned: &[TopicPartition],
    ) -> Result<Vec<TopicPartition>> {
        // The last generation's heartbeat is stopped before its flag is
        // cleared, so a late "rebalance in progress" cannot outlive it.
        self.stop_heartbeat();
        self.signals.rejoin.store(false, Ordering::Release);
        let connection = self.coordinator().await?;
        let (member_id, generation) = {
            let state = self.state.lock().expect("member state");
            (state.member_id.clone(), state.generation)
        };
        let subscription = assignor::encode_subscription(&Subscription {
            topics: topics.to_vec(),
            owned: owned.to_vec(),
            generation,
        });
        let protocols = self
            .config
            .assignors
            .iter()
            .map(|assignor| {
                JoinGroupRequestProtocol::default()
                    .with_name(str_bytes(assignor.name()))
                    .with_metadata(subscription.clone())
            })
            .collect();
        let request = JoinGroupRequest::default()
            .with_group_id(self.group())
            .with_session_timeout_ms(millis(self.config.session_timeout))
            .with_rebalance_timeout_ms(millis(self.config.rebalance_timeout))
            .with_member_id(str_bytes(&member_id))
            .with_group_instance_id(self.config.group_instance_id.as_deref().map(str_bytes))
            .with_protocol_type(str_bytes("consumer"))
            .with_protocols(protocols);
        // The answer waits for every member to rejoin.
        let wait = self.config.rebalance_timeout + self.cluster.config().request_timeout;
        let response = tokio::time::timeout(wait, connection.send(&request))
            .await
            .map_err(|_elapsed| Error::Timeout {
                operation: "JoinGroup".to_string(),
                after: wait,
            })??;
        match ResponseError::try_from_code(response.error_code) {
            Some(ResponseError::MemberIdRequired) => {
                self.state.lock().expect("member state").member_id = response.member_id.to_string();
            }
            Some(ResponseError::UnknownMemberId) => {
                self.state.lock().expect("member state").member_id.clear();
            }
            _ => {}
        }
        self.check("JoinGroup", response.error_code).await?;
        let assignor = response
            .protocol_name
            .as_deref()
            .and_then(Assignor::from_name)
            .ok_or_else(|| Error::Protocol {
                address: format!("coordinator of {}", self.config.group_id),
                reason: format!("unknown assignor {:?}", response.protocol_name),
            })?;
        let member_id = response.member_id.to_string();
        let generation = response.generation_id;
        {
            let mut state = self.state.lock().expect("member state");
            state.member_id.clone_from(&member_id);
            state.generation = generation;
        }
        let assignments = if response.leader == response.member_id && !response.skip_assignment {
            let mut members = BTreeMap::new();
            for member in &response.members {
                members.insert(
                    member.member_id.to_string(),
                    assignor::decode_subscription(&member.metadata)?,
                );
            }
            let assignment = self.assign(assignor, &members).await?;
            info!(group = %self.config.group_id, generation, assignor = assignor.name(), members = members.len(), "leading the group's assignment");
            assignment
                .into_iter()
                .map(|(member, partitions)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(str_bytes(&member))
                        .with_assignment(assignor::encode_assignment(&partitions))
                })
                .collect()
        } else {
            Vec::new()
        };
        let request = SyncGroupRequest::default()
            .with_group_id(self.group())
            .with_generation_id(generation)
            .with_member_id(str_bytes(&member_id))
            .with_group_instance_id(self.config.group_instance_id.as_deref().map(str_bytes))
            .with_protocol_type(Some(str_bytes("consumer")))
            .with_protocol_name(Some(str_bytes(assignor.name())))
            .with_assignments(assignments);
        let response = tokio::time::timeout(wait, connection.send(&request))
            .await
            .map_err(|_elapsed| Error::Timeout {
                operation: "SyncGroup".to_string(),
                after: wait,
            })??;
        if response.error_code == ResponseError::UnknownMemberId.code() {
            self.state.lock().expect("member state").member_id.clear();
        }
        self.check("SyncGroup", response.error_code).await?;
        let assignment = assignor::decode_assignment(&response.assignment)?;
        self.start_heartbeat(member_id, generation);
        Ok(assignment)
    }

    /// The leader's part: every member's share of the subscribed topics.
    async fn assign(
        &self,
        assignor: Assignor,
        members: &BTreeMap<String, Subscription>,
    ) -> Result<BTreeMap<String, Vec<TopicPartition>>> {
        let topics: BTreeSet<&String> =
            members.values().flat_map(|member| &member.topics).collect();
        let mut partition_counts = BTreeMap::new();
        for topic in topics {
            match self.cluster.topic(topic).await {
                Ok(info) => {
                    partition_counts.insert(topic.clone(), info.partitions.len() as i32);
                }
                Err(Error::UnknownTopic(_)) => {
                    warn!(group = %self.config.group_id, topic, "subscribed topic does not exist; assigning nothing of it");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(assignor.assign(members, &partition_counts))
    }

    fn start_heartbeat(&self, member_id: String, generation: i32) {
        self.stop_heartbeat();
        // Joining is part of polling.
        self.polled();
        let beat = Heartbeat {
            cluster: Arc::clone(&self.cluster),
            group_id: self.config.group_id.clone(),
            group_instance_id: self.config.group_instance_id.clone(),
            member_id,
            generation,
            interval: self.config.heartbeat_interval,
            poll_interval_max: self.config.rebalance_timeout,
            polled_at: Arc::clone(&self.polled_at),
            signals: Arc::clone(&self.signals),
        };
        *self.heartbeat.lock().expect("heartbeat") = Some(tokio::spawn(beat.run()));
    }

    fn stop_heartbeat(&self) {
        if let Some(task) = self.heartbeat.lock().expect("heartbeat").take() {
            task.abort();
        }
    }

    /// Commits `offsets` (the next offset to read of each partition) in
    /// this member's generation; a consumer outside any generation commits
    /// with generation -1 (allowed while the group has no members).
    pub(crate) async fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((topic, partition), offset) in offsets {
            by_topic.entry(topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset),
            );
        }
        let (member_id, generation) = {
            let state = self.state.lock().expect("member state");
            (state.member_id.clone(), state.generation)
        };
        let request = OffsetCommitRequest::default()
            .with_group_id(self.group())
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(str_bytes(&member_id))
            .with_group_instance_id(self.config.group_instance_id.as_deref().map(str_bytes))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(topic_name(topic))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result: Result<()> = async {
                let connection = self.coordinator().await?;
                let response = self.cluster.call_on(&connection, &request).await?.response;
                for topic in &response.topics {
                    for partition in &topic.partitions {
                        self.check("OffsetCommit", partition.error_code).await?;
                    }
                }
                Ok(())
            }
            .await;
            match result {
                Err(error) if error.is_retriable() && attempts < OFFSET_ATTEMPTS_MAX => {
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                other => return other,
            }
        }
    }

    /// The committed offsets of `partitions`, or of every partition the
    /// group committed for when `None` (absent: none committed). With
    /// `require_stable` (read_committed readers) an offset a transaction
    /// has staged but not yet ended is waited out, not read around: the
    /// coordinator answers UNSTABLE_OFFSET_COMMIT, which is retried.
    pub(crate) async fn committed(
        &self,
        partitions: Option<&[TopicPartition]>,
        require_stable: bool,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let topics = partitions.map(|partitions| {
            assignor::by_topic(partitions)
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(topic_name(topic))
                        .with_partition_indexes(partitions)
                })
                .collect()
        });
        let request = OffsetFetchRequest::default()
            .with_group_id(self.group())
            .with_topics(topics)
            .with_require_stable(require_stable);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result: Result<BTreeMap<TopicPartition, i64>> = async {
                let connection = self.coordinator().await?;
                let response = self.cluster.call_on(&connection, &request).await?.response;
                self.check("OffsetFetch", response.error_code).await?;
                let mut committed = BTreeMap::new();
                for topic in &response.topics {
                    for partition in &topic.partitions {
                        self.check("OffsetFetch", partition.error_code).await?;
                        if partition.committed_offset >= 0 {
                            committed.insert(
                                (topic.name.0.to_string(), partition.partition_index),
                                partition.committed_offset,
                            );
                        }
                    }
                }
                Ok(committed)
            }
            .await;
            match result {
                Err(error) if error.is_retriable() && attempts < OFFSET_ATTEMPTS_MAX => {
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                other => return other,
            }
        }
    }

    /// Leaves the group so the others rebalance at once. A static member
    /// stays: it is expected back within its session.
    pub(crate) async fn leave(&self) -> Result<()> {
        self.stop_heartbeat();
        let member_id = self.member_id();
        if member_id.is_empty() || self.config.group_instance_id.is_some() {
            return Ok(());
        }
        let connection = self.coordinator().await?;
        let error_code = send_leave(
            &self.cluster,
            &connection,
            &self.config.group_id,
            &member_id,
        )
        .await?;
        self.reset();
        self.check("LeaveGroup", error_code).await
    }

    fn group(&self) -> GroupId {
        GroupId(str_bytes(&self.config.group_id))
    }
}

/// The heartbeat task of one generation.
struct Heartbeat {
    cluster: Arc<Cluster>,
    group_id: String,
    group_instance_id: Option<String>,
    member_id: String,
    generation: i32,
    interval: Duration,
    poll_interval_max: Duration,
    polled_at: Arc<Mutex<Instant>>,
    signals: Arc<Signals>,
}

impl Heartbeat {
    async fn run(self) {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(str_bytes(&self.group_id)))
            .with_generation_id(self.generation)
            .with_member_id(str_bytes(&self.member_id))
            .with_group_instance_id(self.group_instance_id.as_deref().map(str_bytes));
        let mut coordinator: Option<i32> = None;
        loop {
            tokio::time::sleep(self.interval).await;
            let polled_at = *self.polled_at.lock().expect("poll time");
            if polled_at.elapsed() > self.poll_interval_max {
                self.leave_stuck(coordinator).await;
                return;
            }
            let beat = async {
                let connection = self.coordinator(&mut coordinator).await?;
                let response = self.cluster.call_on(&connection, &request).await?.response;
                Ok::<i16, Error>(response.error_code)
            }
            .await;
            match beat.map(ResponseError::try_from_code) {
                Ok(None) => {}
                Ok(Some(ResponseError::RebalanceInProgress)) => {
                    self.signals.rejoin.store(true, Ordering::Release);
                }
                Ok(Some(
                    ResponseError::UnknownMemberId
                    | ResponseError::IllegalGeneration
                    | ResponseError::FencedInstanceId,
                )) => {
                    info!(group = %self.group_id, member_id = %self.member_id, generation = self.generation, "no longer a member of the group; its partitions are lost");
                    self.signals.fenced.store(true, Ordering::Release);
                    return;
                }
                Ok(Some(error)) => {
                    debug!(group = %self.group_id, %error, "heartbeat refused; finding the coordinator again");
                    coordinator = None;
                }
                Err(error) => {
                    debug!(group = %self.group_id, %error, "heartbeat failed; finding the coordinator again");
                    coordinator = None;
                }
            }
        }
    }

    /// The coordinator's connection; `known` is found first if unknown.
    async fn coordinator(&self, known: &mut Option<i32>) -> Result<Arc<Connection>> {
        let id = match *known {
            Some(id) => id,
            None => find_coordinator(&self.cluster, &self.group_id).await?,
        };
        *known = Some(id);
        self.cluster.connection(id).await
    }

    /// The consumer has not polled for `poll_interval_max`: leaves the
    /// group for it and flags its partitions lost.
    async fn leave_stuck(&self, mut coordinator: Option<i32>) {
        warn!(
            group = %self.group_id,
            member_id = %self.member_id,
            max_poll_interval = ?self.poll_interval_max,
            "the consumer has not polled within the maximum poll interval (processing between polls takes too long); leaving the group so its partitions move to members that consume"
        );
        self.signals.fenced.store(true, Ordering::Release);
        if self.group_instance_id.is_some() {
            // A static member keeps its place until its session lapses.
            return;
        }
        let left = async {
            let connection = self.coordinator(&mut coordinator).await?;
            send_leave(&self.cluster, &connection, &self.group_id, &self.member_id).await
        }
        .await;
        if let Err(error) = left {
            // The session lapses instead.
            debug!(group = %self.group_id, %error, "leaving the group failed");
        }
    }
}

/// Asks the coordinator to remove `member_id` from `group`; its error code.
async fn send_leave(
    cluster: &Cluster,
    connection: &Connection,
    group: &str,
    member_id: &str,
) -> Result<i16> {
    let request = LeaveGroupRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_members(vec![
            MemberIdentity::default().with_member_id(str_bytes(member_id))
        ]);
    let answer = cluster.call_on(connection, &request).await?;
    Ok(answer.response.error_code)
}

/// The coordinator of `group`, as any broker names it.
pub(crate) async fn find_coordinator(cluster: &Cluster, group: &str) -> Result<i32> {
    let request = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![str_bytes(group)]);
    let answer = cluster.call(Target::Any, &request).await?;
    let coordinator = answer.first(&answer.response.coordinators)?;
    crate::error::check(
        || format!("find the coordinator of {group}"),
        coordinator.error_code,
        coordinator.error_message.as_ref(),
    )?;
    Ok(coordinator.node_id.0)
}

/// The group moved on without this member's current view (rejoin).
fn member_error(error: &Error) -> bool {
    matches!(
        error,
        Error::Broker {
            error: ResponseError::MemberIdRequired
                | ResponseError::UnknownMemberId
                | ResponseError::IllegalGeneration
                | ResponseError::RebalanceInProgress,
            ..
        }
    )
}

fn str_bytes(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn millis(duration: Duration) -> i32 {
    duration.as_millis().min(i32::MAX as u128) as i32
}
