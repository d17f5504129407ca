//! One consumer group under KIP-848's consumer protocol
//! (ConsumerGroupHeartbeat): the coordinator assigns partitions itself and
//! hands them over member by member, with no group-wide barrier. A pure
//! state machine: every call takes `now_ms`; the coordinator writes
//! [`ConsumerGroup::encode`] when a call says the group changed.
//!
//! - The **group epoch** rises whenever membership, a subscription, or the
//!   subscribed topics' partitions change. The **target assignment** is the
//!   assignor's answer for the group epoch (its assignment epoch).
//! - Each member converges on its target one heartbeat at a time: first it
//!   is told to revoke what its target lacks (its epoch stays), and once it
//!   reports it no longer owns those, it moves to the target epoch and gets
//!   the target's partitions that nobody else still owns; the rest follow
//!   as their owners let go.
//!
//! Invariant: a partition is in at most one member's assigned or
//! pending-revocation set, so no two members ever own it at once; a member
//! epoch never goes back. A member not heard from within the session
//! timeout, or holding partitions it was told to revoke past its rebalance
//! timeout, is removed and its partitions freed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::assignor::{self, Assignment, Topics, ASSIGNORS};
use super::classic::{GroupConfig, GroupError};

/// Version of the encoded group (the first two bytes of its record value).
const VALUE_VERSION: i16 = 0;

/// Where a member stands on its way to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// It owns what its target epoch gives it.
    Stable,
    /// It must give up `pending_revocation` before it moves on.
    UnrevokedPartitions,
    /// It is in the target epoch but waits for partitions others still own.
    UnreleasedPartitions,
}

impl MemberState {
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Stable => "Stable",
            MemberState::UnrevokedPartitions => "UnrevokedPartitions",
            MemberState::UnreleasedPartitions => "UnreleasedPartitions",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_names: BTreeSet<String>,
    /// A regular expression topic names must match in full.
    pub subscribed_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub member_epoch: i32,
    /// The epoch before the last step: a member whose answer was lost may
    /// still speak in it.
    pub previous_member_epoch: i32,
    pub state: MemberState,
    /// What it owns (or may own) now.
    pub assigned: Assignment,
    /// What it was told to give up and has not yet confirmed.
    pub pending_revocation: Assignment,
    /// It is removed if not heard from by then. Not recorded: a new
    /// coordinator gives every member a full session.
    #[serde(skip)]
    session_deadline_ms: i64,
    /// It is removed if still holding `pending_revocation` then.
    #[serde(skip)]
    revocation_deadline_ms: Option<i64>,
}

/// A ConsumerGroupHeartbeat as the state machine needs it. `None` fields
/// are unchanged since the member's last heartbeat.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatRequest {
    /// Empty on a first join from a client that lets the coordinator pick.
    pub member_id: String,
    /// 0 joins, -1 leaves, -2 leaves a static member; otherwise the epoch
    /// the member is in.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_names: Option<Vec<String>>,
    pub subscribed_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// What the member owns.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// A heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeated {
    pub member_id: String,
    pub member_epoch: i32,
    /// The member's assignment when it changed or the member needs it
    /// again; `None`: keep what you have.
    pub assignment: Option<Assignment>,
    /// The group's record must be written before this answer is sent.
    pub changed: bool,
}

/// A member as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct DescribedMember<'a> {
    pub member: &'a Member,
    pub target: Assignment,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroup {
    group_epoch: i32,
    assignment_epoch: i32,
    /// The assignor that computed the target.
    assignor: String,
    /// The target assignment of `assignment_epoch`, per member.
    target: BTreeMap<String, Assignment>,
    /// The subscribed topics as of the group epoch: a change (a topic
    /// created, grown or deleted) starts a new epoch.
    subscribed_topics: Topics,
    members: BTreeMap<String, Member>,
    /// When it last became empty (offsets retention counts from there).
    state_since_ms: i64,
    /// The group epoch and cluster topics the subscriptions were last
    /// resolved against: while neither changes, a heartbeat skips matching
    /// every member's subscription against every topic.
    #[serde(skip)]
    resolved: Option<(i32, Topics)>,
}

impl ConsumerGroup {
    pub fn new(now_ms: i64) -> ConsumerGroup {
        ConsumerGroup {
            assignor: ASSIGNORS[0].to_string(),
            state_since_ms: now_ms,
            ..ConsumerGroup::default()
        }
    }

    /// The group as its record left it; every member gets a fresh session.
    pub fn decode(bytes: &[u8], config: &GroupConfig, now_ms: i64) -> Result<Self, String> {
        let version = bytes
            .get(..2)
            .map(|version| i16::from_be_bytes([version[0], version[1]]));
        if version != Some(VALUE_VERSION) {
            return Err(format!("unknown consumer group value version {version:?}"));
        }
        let mut group: ConsumerGroup =
            postcard::from_bytes(&bytes[2..]).map_err(|error| error.to_string())?;
        for member in group.members.values_mut() {
            member.session_deadline_ms = now_ms + i64::from(config.consumer_session_timeout_ms);
            if member.state == MemberState::UnrevokedPartitions {
                member.revocation_deadline_ms =
                    Some(now_ms + i64::from(member.rebalance_timeout_ms));
            }
        }
        Ok(group)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = VALUE_VERSION.to_be_bytes().to_vec();
        bytes.extend(postcard::to_stdvec(self).expect("a group serializes"));
        bytes
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn state_since_ms(&self) -> i64 {
        self.state_since_ms
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }

    pub fn assignor(&self) -> &str {
        &self.assignor
    }

    /// Kafka's names: Empty, Assigning (the target is behind the group
    /// epoch), Reconciling (a member is not yet on the target), Stable.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self.members.values().any(|member| {
            member.member_epoch != self.assignment_epoch || member.state != MemberState::Stable
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    pub fn describe(&self) -> Vec<DescribedMember<'_>> {
        self.members
            .values()
            .map(|member| DescribedMember {
                member,
                target: self
                    .target
                    .get(&member.member_id)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// ConsumerGroupHeartbeat: joins, leaves, or keeps the member, and
    /// moves it one step towards its target. `topics` is every topic the
    /// cluster has now; `fresh_member_id` names a member that joins without
    /// an id.
    pub fn heartbeat(
        &mut self,
        config: &GroupConfig,
        now_ms: i64,
        request: HeartbeatRequest,
        topics: &Topics,
        fresh_member_id: &str,
    ) -> Result<Heartbeated, GroupError> {
        validate(&request)?;
        if request.member_epoch < 0 {
            let removed = self.remove(&request.member_id, now_ms);
            return Ok(Heartbeated {
                member_id: request.member_id,
                member_epoch: request.member_epoch,
                assignment: None,
                changed: removed,
            });
        }
        let mut changed = false;
        let member_id = if request.member_epoch == 0 {
            let member_id = if request.member_id.is_empty() {
                fresh_member_id.to_string()
            } else {
                request.member_id.clone()
            };
            self.join(config, &member_id, &request, now_ms)?;
            changed = true;
            member_id
        } else {
            self.check_epoch(&request)?;
            request.member_id.clone()
        };
        let member = self.members.get_mut(&member_id).expect("joined or known");
        let before = (member.member_epoch, member.assigned.clone(), member.state);
        if update_subscription(member, &request) {
            self.group_epoch += 1;
            changed = true;
        }
        member.session_deadline_ms = now_ms + i64::from(config.consumer_session_timeout_ms);
        changed |= self.refresh_target(topics);
        self.reconcile(&member_id, request.owned.as_ref(), now_ms);
        let member = &self.members[&member_id];
        let moved = before != (member.member_epoch, member.assigned.clone(), member.state);
        let resend = request.member_epoch == 0
            || request
                .owned
                .as_ref()
                .is_some_and(|owned| *owned != member.assigned);
        Ok(Heartbeated {
            member_id,
            member_epoch: member.member_epoch,
            assignment: (moved || resend).then(|| member.assigned.clone()),
            changed: changed || moved,
        })
    }

    /// May `member_id` commit offsets in `member_epoch`? A commit from
    /// outside the group (epoch < 0) only while it has no members.
    pub fn check_commit(&self, member_id: &str, member_epoch: i32) -> Result<(), GroupError> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        match member_epoch.cmp(&member.member_epoch) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(GroupError::FencedMemberEpoch),
            std::cmp::Ordering::Less => Err(GroupError::StaleMemberEpoch),
        }
    }

    /// Removes members whose session lapsed or who held partitions past
    /// their rebalance timeout; each removed id with why. The group changed
    /// if any was.
    pub fn tick(&mut self, now_ms: i64) -> Vec<(String, &'static str)> {
        let expired: Vec<(String, &'static str)> = self
            .members
            .values()
            .filter_map(|member| {
                if now_ms >= member.session_deadline_ms {
                    Some((member.member_id.clone(), "its session timed out"))
                } else if member
                    .revocation_deadline_ms
                    .is_some_and(|deadline| now_ms >= deadline)
                {
                    Some((
                        member.member_id.clone(),
                        "it did not revoke partitions within its rebalance timeout",
                    ))
                } else {
                    None
                }
            })
            .collect();
        for (member_id, _) in &expired {
            self.remove(member_id, now_ms);
        }
        expired
    }

    fn join(
        &mut self,
        config: &GroupConfig,
        member_id: &str,
        request: &HeartbeatRequest,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if let Some(instance_id) = &request.instance_id {
            if self.members.values().any(|member| {
                member.instance_id.as_ref() == Some(instance_id) && member.member_id != member_id
            }) {
                return Err(GroupError::UnreleasedInstanceId);
            }
        }
        if !self.members.contains_key(member_id) && self.members.len() >= config.members_max {
            return Err(GroupError::GroupMaxSizeReached);
        }
        // A member that joins again (it restarted, or lost its state) owns
        // nothing now: what it held is free again.
        self.members.insert(
            member_id.to_string(),
            Member {
                member_id: member_id.to_string(),
                instance_id: request.instance_id.clone(),
                rack_id: None,
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                subscribed_names: BTreeSet::new(),
                subscribed_regex: None,
                server_assignor: None,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                member_epoch: 0,
                previous_member_epoch: 0,
                state: MemberState::Stable,
                assigned: Assignment::new(),
                pending_revocation: Assignment::new(),
                session_deadline_ms: now_ms,
                revocation_deadline_ms: None,
            },
        );
        self.group_epoch += 1;
        Ok(())
    }

    /// A member speaking in `request.member_epoch` is in it, or in the one
    /// before if its last answer was lost and it owns nothing beyond it.
    fn check_epoch(&self, request: &HeartbeatRequest) -> Result<(), GroupError> {
        let member = self
            .members
            .get(&request.member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if request.member_epoch == member.member_epoch {
            return Ok(());
        }
        let lost_answer = request.member_epoch == member.previous_member_epoch
            && request
                .owned
                .as_ref()
                .is_some_and(|owned| is_subset(owned, &member.assigned));
        if lost_answer {
            Ok(())
        } else {
            Err(GroupError::FencedMemberEpoch)
        }
    }

    fn remove(&mut self, member_id: &str, now_ms: i64) -> bool {
        if self.members.remove(member_id).is_none() {
            return false;
        }
        self.target.remove(member_id);
        self.group_epoch += 1;
        if self.members.is_empty() {
            self.state_since_ms = now_ms;
        }
        true
    }

    /// Starts a new group epoch if the subscribed topics changed, and
    /// computes the target if it is behind the group epoch. True if either
    /// happened.
    fn refresh_target(&mut self, topics: &Topics) -> bool {
        if self
            .resolved
            .as_ref()
            .is_some_and(|(epoch, seen)| *epoch == self.group_epoch && seen == topics)
        {
            return false;
        }
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|member| (member.member_id.clone(), subscribed(member, topics)))
            .collect();
        let subscribed_topics: Topics = topics
            .iter()
            .filter(|(name, _)| subscriptions.values().any(|names| names.contains(*name)))
            .map(|(name, topic)| (name.clone(), *topic))
            .collect();
        let mut changed = false;
        if subscribed_topics != self.subscribed_topics {
            self.subscribed_topics = subscribed_topics;
            self.group_epoch += 1;
            changed = true;
        }
        if self.assignment_epoch < self.group_epoch {
            self.assignor = self.chosen_assignor().to_string();
            self.target = assignor::assign(
                &self.assignor,
                &subscriptions,
                &self.subscribed_topics,
                &self.target,
            );
            self.assignment_epoch = self.group_epoch;
            changed = true;
        }
        self.resolved = Some((self.group_epoch, topics.clone()));
        changed
    }

    /// The assignor most members asked for (the default if none did).
    fn chosen_assignor(&self) -> &'static str {
        ASSIGNORS
            .iter()
            .copied()
            .rev()
            .max_by_key(|name| {
                self.members
                    .values()
                    .filter(|member| member.server_assignor.as_deref() == Some(*name))
                    .count()
            })
            .unwrap_or(ASSIGNORS[0])
    }

    /// One step of `member_id` towards its target.
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now_ms: i64) {
        let target_epoch = self.assignment_epoch;
        let member = self.members.get_mut(member_id).expect("known member");
        if member.state == MemberState::UnrevokedPartitions {
            match owned {
                Some(owned) if !intersects(owned, &member.pending_revocation) => {
                    member.pending_revocation.clear();
                    member.revocation_deadline_ms = None;
                }
                _ => return,
            }
        }
        if member.member_epoch == target_epoch && member.state == MemberState::Stable {
            return;
        }
        // Partitions other members own or have yet to give up.
        let taken: BTreeSet<(uuid::Uuid, i32)> = self
            .members
            .values()
            .filter(|other| other.member_id != member_id)
            .flat_map(|other| pairs(&other.assigned).chain(pairs(&other.pending_revocation)))
            .collect();
        let no_target = Assignment::new();
        let target = self.target.get(member_id).unwrap_or(&no_target);
        let member = self.members.get_mut(member_id).expect("known member");
        let revoke = difference(&member.assigned, target);
        if !revoke.is_empty() {
            member.assigned = intersection(&member.assigned, target);
            member.pending_revocation = revoke;
            member.state = MemberState::UnrevokedPartitions;
            member.revocation_deadline_ms = Some(now_ms + i64::from(member.rebalance_timeout_ms));
            return;
        }
        let mut unreleased = false;
        for (topic_id, partition) in pairs(&difference(target, &member.assigned)) {
            if taken.contains(&(topic_id, partition)) {
                unreleased = true;
            } else {
                member
                    .assigned
                    .entry(topic_id)
                    .or_default()
                    .insert(partition);
            }
        }
        if member.member_epoch != target_epoch {
            member.previous_member_epoch = member.member_epoch;
            member.member_epoch = target_epoch;
        }
        member.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
    }
}

fn validate(request: &HeartbeatRequest) -> Result<(), GroupError> {
    let invalid = |why: &str| Err(GroupError::InvalidRequest(why.to_string()));
    match request.member_epoch {
        0 => {
            if request.rebalance_timeout_ms <= 0 {
                return invalid("RebalanceTimeoutMs must be set when joining");
            }
            if request.subscribed_names.is_none() && request.subscribed_regex.is_none() {
                return invalid(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set when joining",
                );
            }
        }
        epoch if epoch < -2 => return invalid("MemberEpoch must be -2, -1, 0 or a member's epoch"),
        _ if request.member_id.is_empty() => {
            return invalid("MemberId must be set unless joining");
        }
        _ => {}
    }
    if let Some(name) = &request.server_assignor {
        if !ASSIGNORS.contains(&name.as_str()) {
            return Err(GroupError::UnsupportedAssignor(name.clone()));
        }
    }
    if let Some(regex) = request
        .subscribed_regex
        .as_deref()
        .filter(|r| !r.is_empty())
    {
        if let Err(error) = full_match(regex) {
            return Err(GroupError::InvalidRegularExpression(error.to_string()));
        }
    }
    Ok(())
}

/// Applies what the heartbeat changed of the member's subscription; true
/// if what it subscribes to changed.
fn update_subscription(member: &mut Member, request: &HeartbeatRequest) -> bool {
    let mut changed = false;
    if let Some(names) = &request.subscribed_names {
        let names: BTreeSet<String> = names.iter().cloned().collect();
        changed |= names != member.subscribed_names;
        member.subscribed_names = names;
    }
    if let Some(regex) = &request.subscribed_regex {
        let regex = Some(regex.clone()).filter(|regex| !regex.is_empty());
        changed |= regex != member.subscribed_regex;
        member.subscribed_regex = regex;
    }
    if let Some(assignor) = &request.server_assignor {
        changed |= member.server_assignor.as_ref() != Some(assignor);
        member.server_assignor = Some(assignor.clone());
    }
    if request.rack_id.is_some() {
        member.rack_id = request.rack_id.clone();
    }
    if request.rebalance_timeout_ms > 0 {
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
    }
    member.client_id.clone_from(&request.client_id);
    member.client_host.clone_from(&request.client_host);
    changed
}

/// The topics `member` subscribes to that exist: its names, and every
/// non-internal topic its regular expression matches in full.
fn subscribed(member: &Member, topics: &Topics) -> BTreeSet<String> {
    let regex = member
        .subscribed_regex
        .as_deref()
        .and_then(|regex| full_match(regex).ok());
    topics
        .keys()
        .filter(|name| {
            member.subscribed_names.contains(*name)
                || regex
                    .as_ref()
                    .is_some_and(|regex| !name.starts_with("__") && regex.is_match(name))
        })
        .cloned()
        .collect()
}

/// `pattern` matching whole topic names, as Kafka's RE2J `matches()` does.
fn full_match(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

fn pairs(assignment: &Assignment) -> impl Iterator<Item = (uuid::Uuid, i32)> + '_ {
    assignment
        .iter()
        .flat_map(|(topic_id, partitions)| partitions.iter().map(|p| (*topic_id, *p)))
}

fn from_pairs(pairs: impl Iterator<Item = (uuid::Uuid, i32)>) -> Assignment {
    let mut assignment = Assignment::new();
    for (topic_id, partition) in pairs {
        assignment.entry(topic_id).or_default().insert(partition);
    }
    assignment
}

fn contains(assignment: &Assignment, (topic_id, partition): (uuid::Uuid, i32)) -> bool {
    assignment
        .get(&topic_id)
        .is_some_and(|partitions| partitions.contains(&partition))
}

fn difference(a: &Assignment, b: &Assignment) -> Assignment {
    from_pairs(pairs(a).filter(|pair| !contains(b, *pair)))
}

fn intersection(a: &Assignment, b: &Assignment) -> Assignment {
    from_pairs(pairs(a).filter(|pair| contains(b, *pair)))
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    pairs(a).any(|pair| contains(b, pair))
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    pairs(a).all(|pair| contains(b, pair))
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    const CONFIG: GroupConfig = GroupConfig {
        consumer_session_timeout_ms: 1_000,
        members_max: 100,
        ..crate::group::classic::tests::CONFIG
    };

    fn topics(partitions: u32) -> Topics {
        Topics::from([("orders".to_string(), (Uuid::from_u128(7), partitions))])
    }

    fn join(member_id: &str) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: member_id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 500,
            subscribed_names: Some(vec!["orders".into()]),
            owned: Some(Assignment::new()),
            ..HeartbeatRequest::default()
        }
    }

    fn beat(member_id: &str, epoch: i32, owned: &Assignment) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: member_id.into(),
            member_epoch: epoch,
            owned: Some(owned.clone()),
            ..HeartbeatRequest::default()
        }
    }

    fn partitions(assignment: &Option<Assignment>) -> Vec<i32> {
        let assignment = assignment.as_ref().expect("an assignment");
        pairs(assignment).map(|(_, partition)| partition).collect()
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_let_go() {
        let topics = topics(4);
        let mut group = ConsumerGroup::new(0);
        let a = group.heartbeat(&CONFIG, 0, join("a"), &topics, "").unwrap();
        assert_eq!(partitions(&a.assignment), [0, 1, 2, 3]);
        assert!(a.changed);
        let a_owns = a.assignment.unwrap();
        let b = group.heartbeat(&CONFIG, 1, join("b"), &topics, "").unwrap();
        // b is in the new epoch but gets nothing until a revokes.
        assert!(partitions(&b.assignment).is_empty());
        assert!(b.member_epoch > a.member_epoch);
        assert_eq!(group.state_name(), "Reconciling");
        // a is told to keep two; its epoch stays until it confirms.
        let a2 = group
            .heartbeat(&CONFIG, 2, beat("a", a.member_epoch, &a_owns), &topics, "")
            .unwrap();
        assert_eq!(a2.member_epoch, a.member_epoch);
        let kept = a2.assignment.unwrap();
        assert_eq!(pairs(&kept).count(), 2);
        // Not yet confirmed: b still waits.
        let b2 = group
            .heartbeat(
                &CONFIG,
                3,
                beat("b", b.member_epoch, &Assignment::new()),
                &topics,
                "",
            )
            .unwrap();
        assert!(b2.assignment.is_none() || partitions(&b2.assignment).is_empty());
        // a confirms; it moves to the new epoch; b then gets the rest.
        let a3 = group
            .heartbeat(&CONFIG, 4, beat("a", a.member_epoch, &kept), &topics, "")
            .unwrap();
        assert_eq!(a3.member_epoch, b.member_epoch);
        let b3 = group
            .heartbeat(
                &CONFIG,
                5,
                beat("b", b.member_epoch, &Assignment::new()),
                &topics,
                "",
            )
            .unwrap();
        let b_owns = b3.assignment.unwrap();
        assert_eq!(pairs(&b_owns).count(), 2);
        assert!(!intersects(&b_owns, &kept));
        let b4 = group
            .heartbeat(&CONFIG, 6, beat("b", b.member_epoch, &b_owns), &topics, "")
            .unwrap();
        assert!(
            b4.assignment.is_none() && !b4.changed,
            "a settled member's heartbeat changes nothing"
        );
        assert_eq!(group.state_name(), "Stable");
    }

    #[test]
    fn epochs_fence_zombies_and_forgive_a_lost_answer() {
        let topics = topics(2);
        let mut group = ConsumerGroup::new(0);
        let a = group.heartbeat(&CONFIG, 0, join("a"), &topics, "").unwrap();
        let owned = a.assignment.clone().unwrap();
        assert_eq!(
            group.heartbeat(
                &CONFIG,
                1,
                beat("a", a.member_epoch + 1, &owned),
                &topics,
                ""
            ),
            Err(GroupError::FencedMemberEpoch)
        );
        assert_eq!(
            group.heartbeat(&CONFIG, 1, beat("ghost", 3, &owned), &topics, ""),
            Err(GroupError::UnknownMemberId)
        );
        // b joins; a gives up one partition and moves to b's epoch, but
        // that answer is lost: a may still speak in its previous epoch.
        let b = group.heartbeat(&CONFIG, 2, join("b"), &topics, "").unwrap();
        let told = group
            .heartbeat(&CONFIG, 3, beat("a", a.member_epoch, &owned), &topics, "")
            .unwrap();
        let kept = told.assignment.unwrap();
        let moved = group
            .heartbeat(&CONFIG, 4, beat("a", a.member_epoch, &kept), &topics, "")
            .unwrap();
        assert_eq!(moved.member_epoch, b.member_epoch);
        let again = group
            .heartbeat(&CONFIG, 5, beat("a", a.member_epoch, &kept), &topics, "")
            .unwrap();
        assert_eq!(again.member_epoch, b.member_epoch);
        // ... but not with partitions it no longer has.
        assert_eq!(
            group.heartbeat(&CONFIG, 6, beat("a", a.member_epoch, &owned), &topics, ""),
            Err(GroupError::FencedMemberEpoch)
        );
        let a = moved;
        let owned = kept;
        group
            .heartbeat(
                &CONFIG,
                7,
                beat("b", b.member_epoch, &Assignment::new()),
                &topics,
                "",
            )
            .unwrap();
        group
            .heartbeat(&CONFIG, 8, beat("b", -1, &Assignment::new()), &topics, "")
            .unwrap();
        // Commits: in the current epoch only; from outside only when empty.
        assert_eq!(group.check_commit("a", a.member_epoch), Ok(()));
        assert_eq!(
            group.check_commit("a", a.member_epoch - 1),
            Err(GroupError::StaleMemberEpoch)
        );
        assert_eq!(
            group.check_commit("a", a.member_epoch + 1),
            Err(GroupError::FencedMemberEpoch)
        );
        assert_eq!(group.check_commit("", -1), Err(GroupError::UnknownMemberId));
        let left = group
            .heartbeat(&CONFIG, 3, beat("a", -1, &owned), &topics, "")
            .unwrap();
        assert_eq!(left.member_epoch, -1);
        assert!(left.changed && group.is_empty());
        assert_eq!(group.check_commit("", -1), Ok(()));
    }

    #[test]
    fn bad_requests_are_refused_with_reasons() {
        let topics = topics(2);
        let mut group = ConsumerGroup::new(0);
        let mut no_subscription = join("a");
        no_subscription.subscribed_names = None;
        assert!(matches!(
            group.heartbeat(&CONFIG, 0, no_subscription, &topics, ""),
            Err(GroupError::InvalidRequest(_))
        ));
        let mut assignor = join("a");
        assignor.server_assignor = Some("sticky".into());
        assert_eq!(
            group.heartbeat(&CONFIG, 0, assignor, &topics, ""),
            Err(GroupError::UnsupportedAssignor("sticky".into()))
        );
        let mut regex = join("a");
        regex.subscribed_regex = Some("(".into());
        assert!(matches!(
            group.heartbeat(&CONFIG, 0, regex, &topics, ""),
            Err(GroupError::InvalidRegularExpression(_))
        ));
        // A static instance id held by another member.
        let mut first = join("a");
        first.instance_id = Some("i".into());
        group.heartbeat(&CONFIG, 0, first, &topics, "").unwrap();
        let mut second = join("b");
        second.instance_id = Some("i".into());
        assert_eq!(
            group.heartbeat(&CONFIG, 0, second, &topics, ""),
            Err(GroupError::UnreleasedInstanceId)
        );
        // No member id: the coordinator picks one.
        let fresh = group
            .heartbeat(&CONFIG, 0, join(""), &topics, "picked")
            .unwrap();
        assert_eq!(fresh.member_id, "picked");
    }

    #[test]
    fn regex_subscriptions_match_whole_names_and_follow_new_topics() {
        let mut topics = topics(1);
        topics.insert("orders-eu".into(), (Uuid::from_u128(8), 1));
        topics.insert("__consumer_offsets_like".into(), (Uuid::from_u128(9), 1));
        let mut group = ConsumerGroup::new(0);
        let mut request = join("a");
        request.subscribed_names = None;
        request.subscribed_regex = Some("orders.*".into());
        let a = group.heartbeat(&CONFIG, 0, request, &topics, "").unwrap();
        assert_eq!(pairs(a.assignment.as_ref().unwrap()).count(), 2);
        // A new matching topic starts a new epoch with it assigned.
        topics.insert("orders-us".into(), (Uuid::from_u128(10), 3));
        let owned = a.assignment.unwrap();
        let a2 = group
            .heartbeat(&CONFIG, 1, beat("a", a.member_epoch, &owned), &topics, "")
            .unwrap();
        assert!(a2.member_epoch > a.member_epoch);
        assert_eq!(pairs(a2.assignment.as_ref().unwrap()).count(), 5);
    }

    #[test]
    fn the_record_restores_the_group() {
        let topics = topics(3);
        let mut group = ConsumerGroup::new(0);
        group.heartbeat(&CONFIG, 0, join("a"), &topics, "").unwrap();
        group.heartbeat(&CONFIG, 0, join("b"), &topics, "").unwrap();
        let restored = ConsumerGroup::decode(&group.encode(), &CONFIG, 0).unwrap();
        assert_eq!(restored.encode(), group.encode());
        assert_eq!(restored.state_name(), group.state_name());
        assert!(ConsumerGroup::decode(&[0, 9, 1], &CONFIG, 0).is_err());
        assert!(ConsumerGroup::decode(&[0, 0, 0xff], &CONFIG, 0).is_err());
    }

    /// Clients that follow the protocol, joining, leaving, crashing and
    /// heartbeating in a random order while partitions are added: no
    /// partition is ever owned by two of them, and once they settle every
    /// partition has one owner and the load is even.
    #[test]
    fn random_schedules_never_share_a_partition_and_settle_balanced() {
        struct Client {
            member_id: String,
            epoch: i32,
            owned: Assignment,
            alive: bool,
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for round in 0..40 {
            let mut partitions = 6;
            let mut group = ConsumerGroup::new(0);
            let mut clients: Vec<Client> = Vec::new();
            let mut now = 0;
            for _ in 0..300 {
                now += 10;
                let topics = topics(partitions);
                match random(20) {
                    0 | 1 if clients.iter().filter(|c| c.alive).count() < 5 => {
                        let member_id = format!("m{}", clients.len());
                        let beat = group
                            .heartbeat(&CONFIG, now, join(&member_id), &topics, "")
                            .unwrap();
                        clients.push(Client {
                            member_id,
                            epoch: beat.member_epoch,
                            owned: beat.assignment.unwrap(),
                            alive: true,
                        });
                    }
                    2 => {
                        if let Some(client) = clients
                            .iter_mut()
                            .filter(|c| c.alive)
                            .nth(random(3) as usize)
                        {
                            group
                                .heartbeat(
                                    &CONFIG,
                                    now,
                                    beat(&client.member_id, -1, &client.owned),
                                    &topics,
                                    "",
                                )
                                .unwrap();
                            client.alive = false;
                            client.owned.clear();
                        }
                    }
                    3 => {
                        // A crash: it stops, and owns nothing once its
                        // session is over (the coordinator frees its
                        // partitions only then).
                        if let Some(client) = clients
                            .iter_mut()
                            .filter(|c| c.alive)
                            .nth(random(3) as usize)
                        {
                            client.alive = false;
                        }
                    }
                    4 if partitions < 12 && round % 2 == 0 => partitions += 1,
                    _ => {
                        let alive: Vec<usize> =
                            (0..clients.len()).filter(|i| clients[*i].alive).collect();
                        if alive.is_empty() {
                            continue;
                        }
                        let client = &mut clients[alive[random(alive.len() as u64) as usize]];
                        match group.heartbeat(
                            &CONFIG,
                            now,
                            beat(&client.member_id, client.epoch, &client.owned),
                            &topics,
                            "",
                        ) {
                            Ok(answer) => {
                                client.epoch = answer.member_epoch;
                                if let Some(assignment) = answer.assignment {
                                    client.owned = assignment;
                                }
                            }
                            Err(GroupError::UnknownMemberId | GroupError::FencedMemberEpoch) => {
                                client.alive = false;
                                client.owned.clear();
                            }
                            Err(error) => panic!("{error:?}"),
                        }
                    }
                }
                group.tick(now);
                // A client whose session ended owns nothing (a live one
                // would notice its own heartbeats failing).
                for client in clients.iter_mut() {
                    if !group.members.contains_key(&client.member_id) {
                        client.alive = false;
                        client.owned.clear();
                    }
                }
                let mut seen = BTreeSet::new();
                for client in &clients {
                    for pair in pairs(&client.owned) {
                        assert!(seen.insert(pair), "round {round}: {pair:?} owned twice");
                    }
                }
            }
            // Settle: the live clients heartbeat until nothing changes.
            let topics = topics(partitions);
            for _ in 0..60 {
                now += 50;
                group.tick(now);
                for client in clients.iter_mut().filter(|c| c.alive) {
                    now += 10;
                    let answer = group
                        .heartbeat(
                            &CONFIG,
                            now,
                            beat(&client.member_id, client.epoch, &client.owned),
                            &topics,
                            "",
                        )
                        .unwrap();
                    client.epoch = answer.member_epoch;
                    if let Some(assignment) = answer.assignment {
                        client.owned = assignment;
                    }
                }
            }
            let live: Vec<&Client> = clients.iter().filter(|c| c.alive).collect();
            if live.is_empty() {
                continue;
            }
            let counts: Vec<usize> = live.iter().map(|c| pairs(&c.owned).count()).collect();
            assert_eq!(
                counts.iter().sum::<usize>(),
                partitions as usize,
                "round {round}: {counts:?}"
            );
            assert!(
                counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
                "round {round}: {counts:?}"
            );
            assert_eq!(group.state_name(), "Stable", "round {round}");
        }
    }
}
