//! A `__consumer_offsets` partition this broker leads, in one leader epoch:
//! its groups are loaded once, every request runs their state machines
//! (`classic.rs`, `consumer.rs`) under the partition's lock, the
//! records they decide are appended in that same critical section, and the
//! JoinGroup and SyncGroup requests a rebalance holds are parked.
//!
//! Loading, appending and waiting for durability are the coordinators'
//! common machinery (`coordinator_log.rs`); this file is what groups do
//! with it. Architecture Invariant: a parked request is answered only once
//! the record written with its answer is durable on the ISR, so no member
//! is told of a generation a successor coordinator would not load. When
//! leadership moves, the loaded state is dropped and every parked request
//! is told `NOT_COORDINATOR`.

use bytes::Bytes;
use strata_storage::batch::ProducerId;
use strata_storage::transaction::Marker;
use strata_storage::StorageError;
use tokio::sync::oneshot;
use tracing::info;
use uuid::Uuid;

use super::assignor::Topics;
use super::classic::{Effect, GroupError, JoinRequest, Joined, Reply, SyncRequest};
use super::consumer::{ConsumerGroup, HeartbeatRequest, Heartbeated};
use super::error::{Answer, CoordinatorError};
use super::groups::{Answering, Groups, Waiters};
use super::records::Key;
use crate::clock::now_ms;
use crate::coordinator_log::{KeyedRecord, LedLog};
use crate::replica::partition::{AppendError, LeaderAppend};

/// A request's answer: now, or when a rebalance step delivers it.
pub(super) enum Pending<T> {
    Now(Result<T, GroupError>),
    Later(oneshot::Receiver<Answer<T>>),
}

impl<T> Pending<T> {
    pub(super) fn park(waiters: &mut Waiters<T>, group: &str, reply: Reply<T>) -> Pending<T> {
        match reply {
            Reply::Now(result) => Pending::Now(result),
            Reply::Parked { member_id } => {
                let (sender, receiver) = oneshot::channel();
                // A member that asks again replaces its earlier request,
                // which is then told to find the coordinator again.
                waiters.insert((group.to_string(), member_id), sender);
                Pending::Later(receiver)
            }
        }
    }

    pub(super) async fn answer(self) -> Answer<T> {
        match self {
            Pending::Now(result) => Ok(result),
            Pending::Later(receiver) => receiver
                .await
                .unwrap_or(Err(CoordinatorError::NotCoordinator)),
        }
    }
}

/// A step's consequences, carried out once the partition's lock is
/// released: the group record appended (awaited durable), then the answers.
#[must_use]
pub(super) struct Delivery {
    pub(super) written: Option<Result<(Vec<KeyedRecord>, LeaderAppend), CoordinatorError>>,
    pub(super) joins: Vec<Answering<Joined>>,
    pub(super) syncs: Vec<Answering<Bytes>>,
}

/// A `__consumer_offsets` partition this broker leads, with its groups.
pub type Led = LedLog<Groups>;

impl LedLog<Groups> {
    /// Runs `step` on the groups under the lock, then carries out the
    /// effects it left; a failed write of the group record is the answer.
    pub(super) async fn step<R>(
        &self,
        group: &str,
        step: impl FnOnce(&mut Groups, &mut Vec<Effect>, i64) -> R,
    ) -> Result<R, CoordinatorError> {
        let (result, delivery) = {
            let mut loaded = self.loaded.lock().await;
            let groups = self.load(&mut loaded).await?;
            let now = now_ms();
            let mut effects = Vec::new();
            let result = step(groups, &mut effects, now);
            (result, self.prepare(groups, group, effects, now))
        };
        match self.deliver(delivery).await {
            Some(code) => Err(code),
            None => Ok(result),
        }
    }

    /// Takes the waiters the effects answer and appends the group record if
    /// asked, all under the lock.
    pub(super) fn prepare(
        &self,
        groups: &mut Groups,
        group: &str,
        effects: Vec<Effect>,
        now: i64,
    ) -> Delivery {
        let mut delivery = Delivery {
            written: None,
            joins: Vec::new(),
            syncs: Vec::new(),
        };
        let mut persist = false;
        for effect in effects {
            let waiter = |member_id| (group.to_string(), member_id);
            match effect {
                Effect::Persist => persist = true,
                Effect::Join { member_id, result } => {
                    if let Some(sender) = groups.join_waiters.remove(&waiter(member_id)) {
                        delivery.joins.push((sender, result));
                    }
                }
                Effect::Sync { member_id, result } => {
                    if let Some(sender) = groups.sync_waiters.remove(&waiter(member_id)) {
                        delivery.syncs.push((sender, result));
                    }
                }
                Effect::Removed { member_id, cause } => {
                    info!(group, member_id, cause, "member left its group");
                }
            }
        }
        if let Some(classic) = persist.then(|| groups.classic.get(group)).flatten() {
            let record = classic.record();
            info!(
                group,
                generation = record.generation,
                state = classic.state().name(),
                members = record.members.len(),
                protocol = record.protocol.as_deref().unwrap_or_default(),
                "group settled"
            );
            let key = Key::Group {
                group: group.to_string(),
            };
            let records = vec![(key.encode(), Some(record.encode()))];
            delivery.written = Some(
                self.append(&records, None, now)
                    .map(|appended| (records, appended))
                    .map_err(CoordinatorError::from),
            );
        }
        delivery
    }

    /// Writes out a step: the record durable first, then the answers. A
    /// failed write fails every answer with the code it returns.
    pub(super) async fn deliver(&self, delivery: Delivery) -> Option<CoordinatorError> {
        let failure = match delivery.written {
            None => None,
            Some(Ok((records, appended))) => self
                .await_durable(&records, appended, None)
                .await
                .err()
                .map(CoordinatorError::from),
            Some(Err(code)) => Some(code),
        }
        // Kafka's mapping: a record that did not become durable in time
        // sends the members back to rejoin.
        .map(|error| match error {
            CoordinatorError::TimedOut => GroupError::RebalanceInProgress.into(),
            error => error,
        });
        for (sender, result) in delivery.joins {
            let _ = sender.send(failure.clone().map_or(Ok(result), Err));
        }
        for (sender, result) in delivery.syncs {
            let _ = sender.send(failure.clone().map_or(Ok(result), Err));
        }
        failure
    }

    /// JoinGroup; answered when the rebalance it joins completes.
    pub async fn join(&self, group: &str, request: JoinRequest) -> Answer<Joined> {
        let fresh = Uuid::new_v4().to_string();
        let config = self.config;
        let pending = self
            .step(group, |groups, effects, now| {
                // A consumer-protocol group with members keeps its protocol;
                // an empty one becomes a classic group.
                if let Some(consumer) = groups.consumer.get(group) {
                    if !consumer.is_empty() {
                        return Pending::Now(Err(GroupError::InconsistentGroupProtocol));
                    }
                    groups.consumer.remove(group);
                }
                let reply = groups
                    .classic_mut(group, config, now)
                    .join(now, request, &fresh, effects);
                Pending::park(&mut groups.join_waiters, group, reply)
            })
            .await?;
        pending.answer().await
    }

    /// SyncGroup; a follower's is answered when the leader's arrives.
    pub async fn sync(&self, group: &str, request: SyncRequest) -> Answer<Bytes> {
        let pending = self
            .step(group, |groups, effects, now| {
                let reply = match groups.classic.get_mut(group) {
                    Some(classic) => classic.sync(now, request, effects),
                    None => Reply::Now(Err(GroupError::UnknownMemberId)),
                };
                Pending::park(&mut groups.sync_waiters, group, reply)
            })
            .await?;
        pending.answer().await
    }

    pub async fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
    ) -> Answer<()> {
        self.step(group, |groups, _effects, now| {
            match groups.classic.get_mut(group) {
                Some(classic) => classic.heartbeat(now, member_id, group_instance_id, generation),
                None => Err(GroupError::UnknownMemberId),
            }
        })
        .await
    }

    /// ConsumerGroupHeartbeat (KIP-848): one step of the member, answered
    /// once the group's record is durable if the step changed the group.
    /// `topics` is the cluster's topics now.
    pub async fn consumer_heartbeat(
        &self,
        group: &str,
        request: HeartbeatRequest,
        topics: &Topics,
    ) -> Answer<Heartbeated> {
        let fresh = Uuid::new_v4().to_string();
        let (answer, written) = {
            let mut loaded = self.loaded.lock().await;
            let groups = self.load(&mut loaded).await?;
            let now = now_ms();
            // An empty classic group becomes a consumer-protocol group; one
            // with members keeps its protocol.
            if let Some(classic) = groups.classic.get(group) {
                if !classic.is_idle() {
                    return Ok(Err(GroupError::WrongGroupType {
                        group: group.to_string(),
                        protocol: "consumer",
                    }));
                }
                groups.classic.remove(group);
            }
            let consumer = groups
                .consumer
                .entry(group.to_string())
                .or_insert_with(|| ConsumerGroup::new(now));
            let answer = consumer.heartbeat(&self.config, now, request, topics, &fresh);
            let changed = answer.as_ref().is_ok_and(|beat| beat.changed);
            (
                answer,
                changed.then(|| self.persist_consumer(groups, group, now)),
            )
        };
        if let Some(written) = written {
            let (records, appended) = written?;
            self.await_durable(&records, appended, None).await?;
        }
        Ok(answer)
    }

    /// Appends the record of consumer-protocol group `group`.
    pub(super) fn persist_consumer(
        &self,
        groups: &Groups,
        group: &str,
        now: i64,
    ) -> Result<(Vec<KeyedRecord>, LeaderAppend), CoordinatorError> {
        let consumer = &groups.consumer[group];
        info!(
            group,
            group_epoch = consumer.group_epoch(),
            state = consumer.state_name(),
            members = consumer.member_count(),
            "consumer group changed"
        );
        let key = Key::ConsumerGroup {
            group: group.to_string(),
        };
        let records = vec![(key.encode(), Some(consumer.encode()))];
        let appended = self.append(&records, None, now)?;
        Ok((records, appended))
    }

    /// LeaveGroup for each (member id, instance id).
    pub async fn leave(
        &self,
        group: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, CoordinatorError> {
        self.step(group, |groups, effects, now| {
            match groups.classic.get_mut(group) {
                Some(classic) => classic.leave(now, leaving, effects),
                None => vec![Err(GroupError::UnknownMemberId); leaving.len()],
            }
        })
        .await
    }

    /// Writes committed offsets if `member_id` may commit for `group` in
    /// `generation`.
    pub async fn commit(
        &self,
        group: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        records: Vec<KeyedRecord>,
    ) -> Result<(), CoordinatorError> {
        self.write_with(|groups, config, now| {
            match groups.consumer.get(group) {
                // The consumer protocol commits in the member's epoch.
                Some(consumer) => consumer.check_commit(member_id, generation),
                None => groups.classic_mut(group, config, now).check_commit(
                    now,
                    member_id,
                    group_instance_id,
                    generation,
                ),
            }
            .map_err(CoordinatorError::Group)?;
            Ok(records)
        })
        .await
    }

    /// TxnOffsetCommit: writes offsets in `producer_id`'s transaction if
    /// the member may commit for `group` in `generation` (a request that
    /// names no member, from a client before KIP-447, is not checked). They
    /// count once the transaction's commit marker is written here.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_in_transaction(
        &self,
        group: &str,
        producer_id: ProducerId,
        producer_epoch: i16,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        records: Vec<KeyedRecord>,
    ) -> Result<(), CoordinatorError> {
        let appended = {
            let mut loaded = self.loaded.lock().await;
            let groups = self.load(&mut loaded).await?;
            let now = now_ms();
            if !member_id.is_empty() || generation >= 0 {
                match groups.consumer.get(group) {
                    Some(consumer) => consumer.check_commit(member_id, generation),
                    None => groups.classic_mut(group, self.config, now).check_commit(
                        now,
                        member_id,
                        group_instance_id,
                        generation,
                    ),
                }
                .map_err(CoordinatorError::Group)?;
            }
            self.append(&records, Some((producer_id, producer_epoch)), now)?
        };
        Ok(self
            .await_durable(&records, appended, Some(producer_id))
            .await?)
    }

    /// Writes the marker that ends `producer_id`'s transaction on this
    /// partition (WriteTxnMarkers): once durable, the offsets it staged
    /// here take effect (commit) or go (abort).
    pub async fn end_transaction(
        &self,
        producer_id: ProducerId,
        producer_epoch: i16,
        marker: Marker,
        coordinator_epoch: i32,
    ) -> Result<(), CoordinatorError> {
        let appended = {
            let mut loaded = self.loaded.lock().await;
            self.load(&mut loaded).await?;
            self.partition
                .append_marker(
                    marker,
                    producer_id,
                    producer_epoch,
                    coordinator_epoch,
                    Some(self.leader_epoch),
                    now_ms(),
                )
                .map_err(|error| match error {
                    AppendError::NotLeader => CoordinatorError::NotCoordinator,
                    AppendError::Storage(StorageError::Sequence(_)) => {
                        CoordinatorError::ProducerFenced
                    }
                    _ => CoordinatorError::Unavailable,
                })?
        };
        self.await_committed(&appended).await?;
        let mut loaded = self.loaded.lock().await;
        if let Some(loaded) = loaded
            .as_mut()
            .filter(|loaded| loaded.leader_epoch == self.leader_epoch)
        {
            loaded
                .state
                .shard
                .end_transaction(producer_id, marker == Marker::Commit);
        }
        Ok(())
    }

    /// Deletes some committed offsets of a group without members
    /// (OffsetDelete); a group with members keeps them
    /// (`GROUP_SUBSCRIBED_TO_TOPIC`: they may be reading those partitions).
    pub async fn delete_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<(), CoordinatorError> {
        self.write_with(|groups, _config, _now| {
            if groups.has_members(group) {
                return Err(CoordinatorError::GroupSubscribedToTopic);
            }
            let records = groups
                .shard
                .group(group)
                .ok_or(CoordinatorError::GroupIdNotFound)?;
            Ok(partitions
                .iter()
                .filter(|slot| records.offsets.contains_key(*slot))
                .map(|(topic, partition)| {
                    let key = Key::Offset {
                        group: group.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                    };
                    (key.encode(), None)
                })
                .collect())
        })
        .await
    }

    /// Deletes a group without members: tombstones for its offsets and its
    /// record.
    pub async fn delete(&self, group: &str) -> Result<(), CoordinatorError> {
        self.write_with(|groups, _config, _now| {
            if groups.has_members(group) {
                return Err(CoordinatorError::NonEmptyGroup);
            }
            let records = groups
                .shard
                .group(group)
                .ok_or(CoordinatorError::GroupIdNotFound)?;
            let mut keys: Vec<Key> = records
                .offsets
                .keys()
                .map(|(topic, partition)| Key::Offset {
                    group: group.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                })
                .collect();
            keys.extend(records.group_keys(group));
            groups.classic.remove(group);
            groups.consumer.remove(group);
            Ok(keys.iter().map(|key| (key.encode(), None)).collect())
        })
        .await
    }

    /// Deletes the committed offsets of empty groups past their retention;
    /// how many records that wrote.
    pub async fn expire_offsets(&self) -> Result<usize, CoordinatorError> {
        let mut written = 0;
        self.write_with(|groups, config, now| {
            let records = groups.expired_records(now, config.offsets_retention_ms);
            written = records.len();
            Ok::<_, CoordinatorError>(records)
        })
        .await?;
        Ok(written)
    }

    /// Expires sessions and ends rebalances whose time is up, for every
    /// group of this partition; forgets groups with nothing left.
    pub(super) fn tick(&self, groups: &mut Groups, now: i64) -> Vec<Delivery> {
        let names: Vec<String> = groups.classic.keys().cloned().collect();
        let mut deliveries = Vec::new();
        for name in names {
            let mut effects = Vec::new();
            if let Some(classic) = groups.classic.get_mut(&name) {
                classic.tick(now, &mut effects);
            }
            if !effects.is_empty() {
                deliveries.push(self.prepare(groups, &name, effects, now));
            }
        }
        let names: Vec<String> = groups.consumer.keys().cloned().collect();
        for name in names {
            let removed = groups
                .consumer
                .get_mut(&name)
                .map(|consumer| consumer.tick(now))
                .unwrap_or_default();
            for (member_id, cause) in &removed {
                info!(group = name, member_id, cause, "member left its group");
            }
            if !removed.is_empty() {
                deliveries.push(Delivery {
                    written: Some(self.persist_consumer(groups, &name, now)),
                    joins: Vec::new(),
                    syncs: Vec::new(),
                });
            }
        }
        let shard = &groups.shard;
        groups
            .classic
            .retain(|name, classic| !classic.is_idle() || shard.group(name).is_some());
        groups
            .consumer
            .retain(|name, consumer| !consumer.is_empty() || shard.group(name).is_some());
        deliveries
    }
}
