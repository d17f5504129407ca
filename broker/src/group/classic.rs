//! One consumer group under Kafka's classic protocol: who its members are,
//! which generation they are in, and what each was assigned. A pure state
//! machine: every call takes `now_ms` and returns decisions; answers to
//! requests it parked, and "write the group record", come back as
//! [`Effect`]s for the coordinator to carry out.
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all rejoined, or the rebalance
//!     ▲                 ▲        │          timeout passed──▶ CompletingRebalance
//!     │ last member     │        │                               │ the leader's
//!     │ gone            │ join / leave / session expired         │ SyncGroup
//!     └─────────────────┴────────┴──────────── Stable ◀──────────┘
//! ```
//!
//! Invariants: the generation never goes back; in CompletingRebalance and
//! Stable the leader is a member and the protocol is one every member
//! supports; a member id is never reused within a group (ids carry a fresh
//! suffix from the coordinator); a static member (`group.instance.id`) is
//! one member at a time — its rejoin under a new id fences the old id.

use bytes::Bytes;

use super::records::{GroupValue, MemberValue};

/// Group states as Kafka names them (DescribeGroups, ListGroups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// Why a group request is refused; each is one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    FencedInstanceId,
    InconsistentGroupProtocol,
    InvalidSessionTimeout,
    GroupMaxSizeReached,
    /// JoinGroup v4+: rejoin with this member id (KIP-394), so a client
    /// that retries a lost answer does not leave a phantom member behind.
    MemberIdRequired(String),
    /// Consumer protocol (KIP-848): the member's epoch is not its current
    /// one; it must give up its partitions and join again.
    FencedMemberEpoch,
    /// An offset commit in an epoch the member has since left.
    StaleMemberEpoch,
    /// Another member still holds this static instance id.
    UnreleasedInstanceId,
    UnsupportedAssignor(String),
    InvalidRegularExpression(String),
    InvalidRequest(String),
    /// The group exists under the other protocol.
    WrongGroupType {
        group: String,
        protocol: &'static str,
    },
}

impl GroupError {
    /// Words for the error's message field, where the code alone does not
    /// say enough.
    pub fn message(&self) -> Option<String> {
        match self {
            GroupError::UnsupportedAssignor(name) => Some(format!(
                "server assignor '{name}' is not supported; use one of: {}",
                super::assignor::ASSIGNORS.join(", ")
            )),
            GroupError::InvalidRegularExpression(why) | GroupError::InvalidRequest(why) => {
                Some(why.clone())
            }
            GroupError::WrongGroupType { group, protocol } => {
                Some(format!("group '{group}' is not a {protocol} group"))
            }
            _ => None,
        }
    }
}

/// The coordinator's bounds for groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`
    pub session_timeout_ms_min: i32,
    /// `group.max.session.timeout.ms`
    pub session_timeout_ms_max: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of
    /// an empty group waits for more members (each newcomer extends it, up
    /// to the rebalance timeout), so a fleet starting together costs one
    /// rebalance, not one per member.
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size`: members and pending member ids together.
    pub members_max: usize,
    /// `offsets.retention.minutes`, in ms: how long an empty group's
    /// committed offsets are kept.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: i64,
    /// `group.consumer.session.timeout.ms`: a consumer-protocol member not
    /// heard from for this long is removed.
    pub consumer_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`: how often consumer-protocol
    /// members heartbeat, so how soon one learns of partitions released.
    pub consumer_heartbeat_interval_ms: i32,
}

impl Default for GroupConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        GroupConfig {
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            members_max: crate::limits::GROUP_MEMBERS_MAX,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
        }
    }
}

/// A JoinGroup as the state machine needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty for a consumer joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a first join gets `MemberIdRequired`.
    pub require_known_member_id: bool,
}

/// A JoinGroup answer: the generation the member is now in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: every member with its metadata for the chosen
    /// protocol, from which it computes the assignment.
    pub members: Vec<JoinedMember>,
    /// The leader's assignment stands (a static leader that rejoined
    /// unchanged): it must not compute a new one.
    pub skip_assignment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Subscription and assignment, shown while the group is Stable.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// An answer to a request or a write that the coordinator carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Answers the JoinGroup parked for `member_id`.
    Join {
        member_id: String,
        result: Result<Joined, GroupError>,
    },
    /// Answers the SyncGroup parked for `member_id`.
    Sync {
        member_id: String,
        result: Result<Bytes, GroupError>,
    },
    /// Write [`ClassicGroup::record`] to the log before delivering the
    /// answers that follow.
    Persist,
    /// A member left the group, and why (for the log).
    Removed {
        member_id: String,
        cause: &'static str,
    },
}

/// What a request gets: its answer now, or later as an [`Effect`] for the
/// member named here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<T> {
    Now(Result<T, GroupError>),
    Parked { member_id: String },
}

#[derive(Debug, Clone)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// Its JoinGroup is parked until the rebalance completes.
    awaiting_join: bool,
    /// Its SyncGroup is parked until the leader's arrives.
    awaiting_sync: bool,
    /// It is removed if not heard from by then (unless awaiting join).
    session_deadline_ms: i64,
}

impl Member {
    fn new(member_id: String, request: &JoinRequest, now_ms: i64) -> Member {
        let mut member = Member {
            member_id,
            group_instance_id: request.group_instance_id.clone(),
            client_id: String::new(),
            client_host: String::new(),
            session_timeout_ms: 0,
            rebalance_timeout_ms: 0,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            awaiting_join: false,
            awaiting_sync: false,
            session_deadline_ms: 0,
        };
        member.update(request, now_ms);
        member
    }

    fn update(&mut self, request: &JoinRequest, now_ms: i64) {
        self.client_id = request.client_id.clone();
        self.client_host = request.client_host.clone();
        self.session_timeout_ms = request.session_timeout_ms;
        self.rebalance_timeout_ms = request.rebalance_timeout_ms;
        self.protocols = request.protocols.clone();
        self.heard_from(now_ms);
    }

    fn heard_from(&mut self, now_ms: i64) {
        self.session_deadline_ms = now_ms + i64::from(self.session_timeout_ms);
    }

    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }
}

/// One group's membership.
#[derive(Debug, Clone)]
pub struct ClassicGroup {
    config: GroupConfig,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    /// The protocol chosen for the current generation.
    protocol: Option<String>,
    leader: Option<String>,
    /// In the order they joined; the first to rejoin leads if the leader
    /// is gone.
    members: Vec<Member>,
    /// Member ids handed out with `MemberIdRequired`, and until when they
    /// may be used.
    pending: Vec<(String, i64)>,
    /// PreparingRebalance ends by then even if members are missing.
    rebalance_deadline_ms: i64,
    /// The first rebalance of an empty group waits for newcomers until
    /// `rebalance_deadline_ms`, but never past this.
    initial_delay_limit_ms: Option<i64>,
    state_timestamp_ms: i64,
}

impl ClassicGroup {
    pub fn new(config: GroupConfig, now_ms: i64) -> ClassicGroup {
        ClassicGroup {
            config,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending: Vec::new(),
            rebalance_deadline_ms: 0,
            initial_delay_limit_ms: None,
            state_timestamp_ms: now_ms,
        }
    }

    /// The group as its last record left it: Stable with those members
    /// (each given a whole session from `now_ms` to find this coordinator),
    /// or Empty.
    pub fn from_record(config: GroupConfig, record: &GroupValue, now_ms: i64) -> ClassicGroup {
        let mut group = ClassicGroup::new(config, now_ms);
        group.generation = record.generation;
        group.protocol_type =
            Some(record.protocol_type.clone()).filter(|protocol_type| !protocol_type.is_empty());
        if record.members.is_empty() {
            return group;
        }
        let protocol = record.protocol.clone().unwrap_or_default();
        group.members = record
            .members
            .iter()
            .map(|member| Member {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                session_timeout_ms: member.session_timeout_ms,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                protocols: vec![(protocol.clone(), Bytes::from(member.subscription.clone()))],
                assignment: Bytes::from(member.assignment.clone()),
                awaiting_join: false,
                awaiting_sync: false,
                session_deadline_ms: now_ms + i64::from(member.session_timeout_ms),
            })
            .collect();
        group.leader = record
            .leader
            .clone()
            .filter(|leader| group.member_index(leader).is_some())
            .or_else(|| Some(group.members[0].member_id.clone()));
        group.protocol = Some(protocol);
        group.state = GroupState::Stable;
        group
    }

    /// The record that lets another coordinator take the group over.
    pub fn record(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .iter()
                .map(|member| MemberValue {
                    member_id: member.member_id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    session_timeout_ms: member.session_timeout_ms,
                    subscription: member.metadata(&protocol).to_vec(),
                    assignment: member.assignment.to_vec(),
                })
                .collect(),
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    /// When the group entered its current state (ms).
    pub fn state_since_ms(&self) -> i64 {
        self.state_timestamp_ms
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> &str {
        self.protocol_type.as_deref().unwrap_or_default()
    }

    pub fn protocol(&self) -> &str {
        self.protocol.as_deref().unwrap_or_default()
    }

    /// No members and no member ids handed out: nothing to keep in memory
    /// beyond what the group's records say.
    pub fn is_idle(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// The members as DescribeGroups shows them.
    pub fn describe(&self) -> Vec<DescribedMember> {
        let stable = self.state == GroupState::Stable;
        self.members
            .iter()
            .map(|member| DescribedMember {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                metadata: if stable {
                    member.metadata(self.protocol())
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    member.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect()
    }

    /// JoinGroup. `fresh` makes a new member's id unique (the coordinator
    /// passes a random suffix).
    pub fn join(
        &mut self,
        now_ms: i64,
        request: JoinRequest,
        fresh: &str,
        effects: &mut Vec<Effect>,
    ) -> Reply<Joined> {
        if !(self.config.session_timeout_ms_min..=self.config.session_timeout_ms_max)
            .contains(&request.session_timeout_ms)
        {
            return Reply::Now(Err(GroupError::InvalidSessionTimeout));
        }
        if !self.accepts_protocols(&request) {
            return Reply::Now(Err(GroupError::InconsistentGroupProtocol));
        }
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if request.member_id.is_empty() {
            self.join_new(now_ms, request, fresh, effects)
        } else {
            self.join_known(now_ms, request, effects)
        }
    }

    /// The request's protocol type is the group's, and it shares a
    /// protocol with every member.
    fn accepts_protocols(&self, request: &JoinRequest) -> bool {
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(request.protocol_type.as_str())
            && request.protocols.iter().any(|(name, _)| {
                self.members
                    .iter()
                    .filter(|member| member.member_id != request.member_id)
                    .all(|member| member.supports(name))
            })
    }

    fn join_new(
        &mut self,
        now_ms: i64,
        request: JoinRequest,
        fresh: &str,
        effects: &mut Vec<Effect>,
    ) -> Reply<Joined> {
        let member_id = format!("{}-{fresh}", request.client_id);
        if let Some(instance_id) = request.group_instance_id.clone() {
            if let Some(index) = self.static_member_index(&instance_id) {
                return self.replace_static_member(now_ms, index, member_id, request, effects);
            }
        }
        if self.members.len() + self.pending.len() >= self.config.members_max {
            return Reply::Now(Err(GroupError::GroupMaxSizeReached));
        }
        if request.require_known_member_id && request.group_instance_id.is_none() {
            self.pending.push((
                member_id.clone(),
                now_ms + i64::from(request.session_timeout_ms),
            ));
            return Reply::Now(Err(GroupError::MemberIdRequired(member_id)));
        }
        self.add_member(now_ms, Member::new(member_id, &request, now_ms), effects)
    }

    /// A static member rejoins without its member id (it restarted): it
    /// gets a new id and the old one is fenced. If nothing about it changed
    /// and the group is Stable, no rebalance: it keeps its assignment.
    fn replace_static_member(
        &mut self,
        now_ms: i64,
        index: usize,
        member_id: String,
        request: JoinRequest,
        effects: &mut Vec<Effect>,
    ) -> Reply<Joined> {
        let member = &mut self.members[index];
        let old_id = std::mem::replace(&mut member.member_id, member_id.clone());
        if std::mem::take(&mut member.awaiting_join) {
            effects.push(Effect::Join {
                member_id: old_id.clone(),
                result: Err(GroupError::FencedInstanceId),
            });
        }
        if std::mem::take(&mut member.awaiting_sync) {
            effects.push(Effect::Sync {
                member_id: old_id.clone(),
                result: Err(GroupError::FencedInstanceId),
            });
        }
        let unchanged = member.protocols == request.protocols;
        member.update(&request, now_ms);
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(member_id.clone());
        }
        effects.push(Effect::Removed {
            member_id: old_id,
            cause: "its static instance rejoined under a new member id",
        });
        if self.state == GroupState::Stable && unchanged {
            effects.push(Effect::Persist);
            let mut joined = self.joined(&member_id);
            joined.skip_assignment = !joined.members.is_empty();
            return Reply::Now(Ok(joined));
        }
        self.rejoin(now_ms, index, effects)
    }

    fn join_known(
        &mut self,
        now_ms: i64,
        request: JoinRequest,
        effects: &mut Vec<Effect>,
    ) -> Reply<Joined> {
        if let Some(at) = self
            .pending
            .iter()
            .position(|(id, _)| *id == request.member_id)
        {
            let (member_id, _) = self.pending.remove(at);
            return self.add_member(now_ms, Member::new(member_id, &request, now_ms), effects);
        }
        let index =
            match self.known_member(&request.member_id, request.group_instance_id.as_deref()) {
                Ok(index) => index,
                Err(error) => return Reply::Now(Err(error)),
            };
        let member = &mut self.members[index];
        let unchanged = member.protocols == request.protocols;
        member.update(&request, now_ms);
        let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
        match self.state {
            // A member that missed its answer gets it again.
            GroupState::CompletingRebalance if unchanged => {
                Reply::Now(Ok(self.joined(&request.member_id)))
            }
            GroupState::Stable if unchanged && !is_leader => {
                Reply::Now(Ok(self.joined(&request.member_id)))
            }
            _ => self.rejoin(now_ms, index, effects),
        }
    }

    fn add_member(
        &mut self,
        now_ms: i64,
        member: Member,
        effects: &mut Vec<Effect>,
    ) -> Reply<Joined> {
        self.members.push(member);
        let index = self.members.len() - 1;
        if let Some(limit) = self.initial_delay_limit_ms {
            self.rebalance_deadline_ms =
                (now_ms + self.config.initial_rebalance_delay_ms).min(limit);
        }
        self.rejoin(now_ms, index, effects)
    }

    /// Parks the join of member `index`, starting a rebalance if none is
    /// under way.
    fn rejoin(&mut self, now_ms: i64, index: usize, effects: &mut Vec<Effect>) -> Reply<Joined> {
        let member = &mut self.members[index];
        member.awaiting_join = true;
        let member_id = member.member_id.clone();
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now_ms, effects);
        }
        self.try_complete_join(now_ms, effects);
        Reply::Parked { member_id }
    }

    /// SyncGroup: the leader's brings the assignment; every member's
    /// answer is its own share.
    pub fn sync(
        &mut self,
        now_ms: i64,
        request: SyncRequest,
        effects: &mut Vec<Effect>,
    ) -> Reply<Bytes> {
        let index = match self.current_member(
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation,
        ) {
            Ok(index) => index,
            Err(error) => return Reply::Now(Err(error)),
        };
        if request
            .protocol_type
            .as_ref()
            .is_some_and(|protocol_type| Some(protocol_type) != self.protocol_type.as_ref())
            || request
                .protocol
                .as_ref()
                .is_some_and(|protocol| Some(protocol) != self.protocol.as_ref())
        {
            return Reply::Now(Err(GroupError::InconsistentGroupProtocol));
        }
        let member = &mut self.members[index];
        member.heard_from(now_ms);
        match self.state {
            GroupState::Empty => Reply::Now(Err(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => Reply::Now(Err(GroupError::RebalanceInProgress)),
            GroupState::Stable => Reply::Now(Ok(member.assignment.clone())),
            GroupState::CompletingRebalance => {
                member.awaiting_sync = true;
                let member_id = member.member_id.clone();
                if self.leader.as_deref() == Some(member_id.as_str()) {
                    self.complete_sync(now_ms, request.assignments, effects);
                }
                Reply::Parked { member_id }
            }
        }
    }

    /// The leader's assignment arrived: the group is Stable, its record is
    /// written, then every parked SyncGroup is answered.
    fn complete_sync(
        &mut self,
        now_ms: i64,
        mut assignments: Vec<(String, Bytes)>,
        effects: &mut Vec<Effect>,
    ) {
        for member in &mut self.members {
            member.assignment = assignments
                .iter()
                .position(|(id, _)| *id == member.member_id)
                .map(|at| assignments.swap_remove(at).1)
                .unwrap_or_default();
        }
        self.set_state(GroupState::Stable, now_ms);
        effects.push(Effect::Persist);
        for member in &mut self.members {
            if std::mem::take(&mut member.awaiting_sync) {
                effects.push(Effect::Sync {
                    member_id: member.member_id.clone(),
                    result: Ok(member.assignment.clone()),
                });
            }
        }
    }

    /// Heartbeat: keeps the member's session, and tells it when to rejoin.
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        let index = self.current_member(member_id, group_instance_id, generation)?;
        self.members[index].heard_from(now_ms);
        match self.state {
            GroupState::Empty => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// May this member commit offsets in this generation? A commit from
    /// outside any generation (generation < 0) is taken only while the group
    /// has no members: those consumers assign partitions themselves.
    pub fn check_commit(
        &mut self,
        now_ms: i64,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if generation < 0 && self.members.is_empty() {
            return Ok(());
        }
        let index = self.current_member(member_id, group_instance_id, generation)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        self.members[index].heard_from(now_ms);
        Ok(())
    }

    /// LeaveGroup, for each (member id, instance id) given; a static member
    /// is found by its instance id.
    pub fn leave(
        &mut self,
        now_ms: i64,
        leaving: &[(String, Option<String>)],
        effects: &mut Vec<Effect>,
    ) -> Vec<Result<(), GroupError>> {
        let mut removed = false;
        let results = leaving
            .iter()
            .map(|(member_id, group_instance_id)| {
                if group_instance_id.is_none() {
                    if let Some(at) = self.pending.iter().position(|(id, _)| id == member_id) {
                        self.pending.remove(at);
                        return Ok(());
                    }
                }
                let index = match group_instance_id {
                    Some(instance_id) => {
                        let index = self
                            .static_member_index(instance_id)
                            .ok_or(GroupError::UnknownMemberId)?;
                        if !member_id.is_empty() && self.members[index].member_id != *member_id {
                            return Err(GroupError::FencedInstanceId);
                        }
                        index
                    }
                    None => self
                        .member_index(member_id)
                        .ok_or(GroupError::UnknownMemberId)?,
                };
                self.remove_member(index, "it left the group", effects);
                removed = true;
                Ok(())
            })
            .collect();
        if removed {
            self.on_members_removed(now_ms, effects);
        }
        results
    }

    /// Expires members and pending ids whose sessions lapsed, and ends a
    /// rebalance whose time is up.
    pub fn tick(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        self.pending
            .retain(|(_, deadline_ms)| *deadline_ms > now_ms);
        let mut removed = false;
        while let Some(index) = self
            .members
            .iter()
            .position(|member| !member.awaiting_join && member.session_deadline_ms <= now_ms)
        {
            self.remove_member(index, "its session timed out", effects);
            removed = true;
        }
        if removed {
            self.on_members_removed(now_ms, effects);
        }
        self.try_complete_join(now_ms, effects);
    }

    fn remove_member(&mut self, index: usize, cause: &'static str, effects: &mut Vec<Effect>) {
        let member = self.members.remove(index);
        if member.awaiting_join {
            effects.push(Effect::Join {
                member_id: member.member_id.clone(),
                result: Err(GroupError::UnknownMemberId),
            });
        }
        if member.awaiting_sync {
            effects.push(Effect::Sync {
                member_id: member.member_id.clone(),
                result: Err(GroupError::UnknownMemberId),
            });
        }
        if self.leader.as_deref() == Some(member.member_id.as_str()) {
            self.leader = None;
        }
        effects.push(Effect::Removed {
            member_id: member.member_id,
            cause,
        });
    }

    fn on_members_removed(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, effects);
                self.try_complete_join(now_ms, effects);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, effects),
            GroupState::Empty => {}
        }
    }

    /// Starts a rebalance: every member must rejoin within the rebalance
    /// timeout; a half-finished one is abandoned (parked SyncGroups are
    /// told to rejoin).
    fn prepare_rebalance(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        if self.state == GroupState::CompletingRebalance {
            for member in &mut self.members {
                member.assignment = Bytes::new();
                if std::mem::take(&mut member.awaiting_sync) {
                    effects.push(Effect::Sync {
                        member_id: member.member_id.clone(),
                        result: Err(GroupError::RebalanceInProgress),
                    });
                }
            }
        }
        let rebalance_timeout_ms = self
            .members
            .iter()
            .map(|member| i64::from(member.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        if self.state == GroupState::Empty {
            let limit_ms = now_ms + rebalance_timeout_ms;
            self.initial_delay_limit_ms = Some(limit_ms);
            self.rebalance_deadline_ms =
                (now_ms + self.config.initial_rebalance_delay_ms).min(limit_ms);
        } else {
            self.initial_delay_limit_ms = None;
            self.rebalance_deadline_ms = now_ms + rebalance_timeout_ms;
        }
        self.set_state(GroupState::PreparingRebalance, now_ms);
    }

    /// Ends PreparingRebalance once every member (and every pending id) has
    /// joined — outside an initial delay — or the deadline passed.
    fn try_complete_join(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.pending.is_empty()
            && self.members.iter().all(|member| member.awaiting_join)
            && self.initial_delay_limit_ms.is_none();
        if all_joined || now_ms >= self.rebalance_deadline_ms {
            self.complete_join(now_ms, effects);
        }
    }

    fn complete_join(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        self.initial_delay_limit_ms = None;
        // Dynamic members that did not rejoin in time are gone; static ones
        // keep their place (they are expected back) until their session ends.
        while let Some(index) = self
            .members
            .iter()
            .position(|member| !member.awaiting_join && member.group_instance_id.is_none())
        {
            self.remove_member(
                index,
                "it did not rejoin within the rebalance timeout",
                effects,
            );
        }
        self.generation += 1;
        if !self.members.iter().any(|member| member.awaiting_join) {
            // No one to answer: the group is empty (static members that
            // never came back are dropped with it).
            while !self.members.is_empty() {
                self.remove_member(0, "it did not rejoin within the rebalance timeout", effects);
            }
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now_ms);
            effects.push(Effect::Persist);
            return;
        }
        self.protocol = Some(self.select_protocol());
        if self
            .leader
            .as_ref()
            .and_then(|leader| self.member_index(leader))
            .is_none_or(|index| !self.members[index].awaiting_join)
        {
            self.leader = self
                .members
                .iter()
                .find(|member| member.awaiting_join)
                .map(|member| member.member_id.clone());
        }
        self.set_state(GroupState::CompletingRebalance, now_ms);
        for index in 0..self.members.len() {
            let member = &mut self.members[index];
            if !std::mem::take(&mut member.awaiting_join) {
                continue;
            }
            member.heard_from(now_ms);
            let member_id = member.member_id.clone();
            let joined = self.joined(&member_id);
            effects.push(Effect::Join {
                member_id,
                result: Ok(joined),
            });
        }
    }

    /// The protocol every member supports that most members prefer (each
    /// votes for the first of its own list that all support); ties go to the
    /// name first in order.
    fn select_protocol(&self) -> String {
        let supported_by_all = |name: &str| self.members.iter().all(|member| member.supports(name));
        let mut votes: Vec<(String, usize)> = Vec::new();
        for member in &self.members {
            let Some((choice, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| supported_by_all(name))
            else {
                continue;
            };
            match votes.iter_mut().find(|(name, _)| name == choice) {
                Some((_, count)) => *count += 1,
                None => votes.push((choice.clone(), 1)),
            }
        }
        votes.sort_by(|(a, a_votes), (b, b_votes)| b_votes.cmp(a_votes).then_with(|| a.cmp(b)));
        let (protocol, _) = votes
            .into_iter()
            .next()
            .expect("joins are refused unless every member shares a protocol");
        protocol
    }

    /// The JoinGroup answer for `member_id` in the current generation.
    fn joined(&self, member_id: &str) -> Joined {
        let protocol = self.protocol().to_string();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|member| JoinedMember {
                    member_id: member.member_id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    metadata: member.metadata(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type().to_string(),
            protocol,
            leader,
            member_id: member_id.to_string(),
            members,
            skip_assignment: false,
        }
    }

    fn set_state(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    fn member_index(&self, member_id: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|member| member.member_id == member_id)
    }

    fn static_member_index(&self, group_instance_id: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|member| member.group_instance_id.as_deref() == Some(group_instance_id))
    }

    /// The member `member_id`, if it is one and its instance id (if any)
    /// is still its own.
    fn known_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<usize, GroupError> {
        if let Some(instance_id) = group_instance_id {
            if let Some(index) = self.static_member_index(instance_id) {
                if self.members[index].member_id != member_id {
                    return Err(GroupError::FencedInstanceId);
                }
            }
        }
        self.member_index(member_id)
            .ok_or(GroupError::UnknownMemberId)
    }

    /// As [`Self::known_member`], and in the current generation.
    fn current_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
    ) -> Result<usize, GroupError> {
        let index = self.known_member(member_id, group_instance_id)?;
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(index)
    }
}

/// A SyncGroup as the state machine needs it.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation: i32,
    /// SyncGroup v5+: must match the group's.
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    /// From the leader: (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const CONFIG: GroupConfig = GroupConfig {
        session_timeout_ms_min: 100,
        session_timeout_ms_max: 60_000,
        initial_rebalance_delay_ms: 100,
        members_max: 4,
        offsets_retention_ms: 60_000,
        offsets_retention_check_interval_ms: 1_000,
        consumer_session_timeout_ms: 45_000,
        consumer_heartbeat_interval_ms: 5_000,
    };

    fn request(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: instance.map(str::to_string),
            client_id: "client".to_string(),
            client_host: "/127.0.0.1".to_string(),
            session_timeout_ms: 1_000,
            rebalance_timeout_ms: 5_000,
            protocol_type: "consumer".to_string(),
            protocols: vec![
                ("cooperative-sticky".to_string(), Bytes::from_static(b"sub")),
                ("range".to_string(), Bytes::from_static(b"sub")),
            ],
            require_known_member_id: false,
        }
    }

    fn sync_request(member_id: &str, generation: i32, assignments: &[(&str, &str)]) -> SyncRequest {
        SyncRequest {
            member_id: member_id.to_string(),
            generation,
            assignments: assignments
                .iter()
                .map(|(id, assignment)| (id.to_string(), Bytes::from(assignment.to_string())))
                .collect(),
            ..SyncRequest::default()
        }
    }

    fn parked<T: std::fmt::Debug>(reply: Reply<T>) -> String {
        match reply {
            Reply::Parked { member_id } => member_id,
            other => panic!("expected a parked request, got {other:?}"),
        }
    }

    /// The join answers among `effects`, by member id.
    fn joins(effects: &[Effect]) -> Vec<(String, Result<Joined, GroupError>)> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Join { member_id, result } => Some((member_id.clone(), result.clone())),
                _ => None,
            })
            .collect()
    }

    /// A group whose members `ids` (client ids) joined at 0 and synced at
    /// 200 with assignment "<member id>'s"; returns the member ids.
    fn stable_group(ids: &[Option<&str>]) -> (ClassicGroup, Vec<String>) {
        let mut group = ClassicGroup::new(CONFIG, 0);
        let mut effects = Vec::new();
        let members: Vec<String> = ids
            .iter()
            .enumerate()
            .map(|(index, instance)| {
                parked(group.join(0, request("", *instance), &index.to_string(), &mut effects))
            })
            .collect();
        group.tick(200, &mut effects);
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        let assignments: Vec<(String, Bytes)> = members
            .iter()
            .map(|id| (id.clone(), Bytes::from(format!("{id}'s"))))
            .collect();
        let leader = group.leader.clone().unwrap();
        let sync = SyncRequest {
            member_id: leader,
            generation: group.generation(),
            assignments,
            ..SyncRequest::default()
        };
        parked(group.sync(200, sync, &mut effects));
        assert_eq!(group.state(), GroupState::Stable);
        (group, members)
    }

    #[test]
    fn first_rebalance_waits_for_newcomers_then_answers_every_member() {
        let mut group = ClassicGroup::new(CONFIG, 0);
        let mut effects = Vec::new();
        let a = parked(group.join(0, request("", None), "a", &mut effects));
        let b = parked(group.join(50, request("", None), "b", &mut effects));
        assert_eq!((a.as_str(), b.as_str()), ("client-a", "client-b"));
        group.tick(149, &mut effects);
        assert!(
            effects.is_empty(),
            "the initial delay runs to 150: {effects:?}"
        );
        group.tick(150, &mut effects);
        let answers = joins(&effects);
        assert_eq!(answers.len(), 2);
        let leader = answers[0].1.clone().unwrap();
        let follower = answers[1].1.clone().unwrap();
        assert_eq!((leader.generation, leader.leader.as_str()), (1, "client-a"));
        assert_eq!(leader.protocol, "cooperative-sticky");
        assert_eq!(leader.members.len(), 2, "the leader sees every member");
        assert!(follower.members.is_empty());
        assert_eq!(group.state(), GroupState::CompletingRebalance);

        // The follower's SyncGroup waits for the leader's.
        effects.clear();
        parked(group.sync(160, sync_request(&b, 1, &[]), &mut effects));
        assert!(effects.is_empty());
        parked(group.sync(
            170,
            sync_request(&a, 1, &[(&a, "p0"), (&b, "p1")]),
            &mut effects,
        ));
        assert_eq!(
            effects[0],
            Effect::Persist,
            "the record is written before any answer"
        );
        assert!(effects.contains(&Effect::Sync {
            member_id: b.clone(),
            result: Ok(Bytes::from_static(b"p1")),
        }));
        assert_eq!(group.state(), GroupState::Stable);
        assert_eq!(group.heartbeat(180, &a, None, 1), Ok(()));
        assert_eq!(
            group.sync(190, sync_request(&b, 1, &[]), &mut effects),
            Reply::Now(Ok(Bytes::from_static(b"p1")))
        );
    }

    #[test]
    fn a_first_join_from_a_new_client_gets_a_member_id_to_rejoin_with() {
        let mut group = ClassicGroup::new(CONFIG, 0);
        let mut effects = Vec::new();
        let mut first = request("", None);
        first.require_known_member_id = true;
        let Reply::Now(Err(GroupError::MemberIdRequired(id))) =
            group.join(0, first.clone(), "x", &mut effects)
        else {
            panic!("expected MemberIdRequired");
        };
        assert_eq!(group.state(), GroupState::Empty);
        first.member_id = id.clone();
        assert_eq!(parked(group.join(10, first, "y", &mut effects)), id);
        // An id never used expires with its session.
        let mut other = request("", None);
        other.require_known_member_id = true;
        group.join(20, other, "z", &mut effects);
        assert_eq!(group.pending.len(), 1);
        group.tick(1_020, &mut effects);
        assert!(group.pending.is_empty());
    }

    #[test]
    fn a_silent_member_is_removed_and_the_rest_rebalance_without_it() {
        let (mut group, members) = stable_group(&[None, None]);
        let (a, b) = (&members[0], &members[1]);
        let mut effects = Vec::new();
        assert_eq!(group.heartbeat(1_000, a, None, 1), Ok(()));
        group.tick(1_199, &mut effects);
        assert_eq!(
            group.state(),
            GroupState::Stable,
            "b's session runs to 1 200"
        );
        group.tick(1_200, &mut effects);
        assert!(effects.contains(&Effect::Removed {
            member_id: b.clone(),
            cause: "its session timed out",
        }));
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(
            group.heartbeat(1_300, a, None, 1),
            Err(GroupError::RebalanceInProgress)
        );
        effects.clear();
        parked(group.join(1_400, request(a, None), "", &mut effects));
        let answers = joins(&effects);
        assert_eq!(answers.len(), 1, "a was the last member to rejoin");
        let joined = answers[0].1.clone().unwrap();
        assert_eq!((joined.generation, joined.leader.as_str()), (2, a.as_str()));
        assert_eq!(joined.members.len(), 1);
        assert_eq!(
            group.heartbeat(1_500, b, None, 1),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn a_member_that_does_not_rejoin_in_time_is_dropped() {
        let (mut group, members) = stable_group(&[None, None]);
        let mut effects = Vec::new();
        parked(group.join(300, request(&members[0], None), "", &mut effects));
        assert_eq!(
            group.state(),
            GroupState::PreparingRebalance,
            "the leader rejoined"
        );
        // b keeps heartbeating but never rejoins: the rebalance timeout (5 s)
        // ends the round without it.
        for now_ms in (400..5_300).step_by(400) {
            let _ = group.heartbeat(now_ms, &members[1], None, 1);
            group.tick(now_ms, &mut effects);
        }
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        group.tick(5_300, &mut effects);
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        assert!(!group
            .describe()
            .iter()
            .any(|member| member.member_id == members[1]));
    }

    #[test]
    fn stale_generations_unknown_members_and_strangers_are_refused() {
        let (mut group, members) = stable_group(&[None, None]);
        let a = &members[0];
        assert_eq!(
            group.heartbeat(300, a, None, 0),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            group.heartbeat(300, "ghost", None, 1),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(group.check_commit(300, a, None, 1), Ok(()));
        assert_eq!(
            group.check_commit(300, a, None, 0),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            group.check_commit(300, "", None, -1),
            Err(GroupError::UnknownMemberId),
            "a group with members takes no commits from outside it"
        );
        let mut other = request("", None);
        other.protocol_type = "connect".to_string();
        let mut effects = Vec::new();
        assert_eq!(
            group.join(300, other, "c", &mut effects),
            Reply::Now(Err(GroupError::InconsistentGroupProtocol))
        );
        let mut other = request("", None);
        other.protocols = vec![("roundrobin-only".to_string(), Bytes::new())];
        assert_eq!(
            group.join(300, other, "c", &mut effects),
            Reply::Now(Err(GroupError::InconsistentGroupProtocol))
        );
        let mut other = request("", None);
        other.session_timeout_ms = 10;
        assert_eq!(
            group.join(300, other, "c", &mut effects),
            Reply::Now(Err(GroupError::InvalidSessionTimeout))
        );
        for fresh in ["c", "d"] {
            let _ = group.join(300, request("", None), fresh, &mut effects);
        }
        assert_eq!(
            group.join(300, request("", None), "e", &mut effects),
            Reply::Now(Err(GroupError::GroupMaxSizeReached))
        );
        assert!(effects
            .iter()
            .all(|effect| !matches!(effect, Effect::Persist)));

        let mut empty = ClassicGroup::new(CONFIG, 0);
        assert_eq!(empty.check_commit(0, "", None, -1), Ok(()));
        assert_eq!(
            empty.check_commit(0, "x", None, 3),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn commits_wait_while_the_assignment_is_being_decided() {
        let mut group = ClassicGroup::new(CONFIG, 0);
        let mut effects = Vec::new();
        let a = parked(group.join(0, request("", None), "a", &mut effects));
        group.tick(100, &mut effects);
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        assert_eq!(
            group.check_commit(110, &a, None, 1),
            Err(GroupError::RebalanceInProgress)
        );
    }

    #[test]
    fn a_static_member_that_restarts_unchanged_keeps_its_assignment() {
        let (mut group, members) = stable_group(&[Some("s1"), None]);
        let old = &members[0];
        let mut effects = Vec::new();
        let Reply::Now(Ok(joined)) = group.join(300, request("", Some("s1")), "new", &mut effects)
        else {
            panic!("a static member rejoining a stable group is answered at once");
        };
        assert_eq!(joined.member_id, "client-new");
        assert_eq!(joined.generation, 1, "no rebalance");
        assert!(effects.contains(&Effect::Persist));
        assert_eq!(group.state(), GroupState::Stable);
        assert_eq!(
            group.heartbeat(310, old, Some("s1"), 1),
            Err(GroupError::FencedInstanceId),
            "the old incarnation is fenced"
        );
        assert_eq!(
            group.sync(320, sync_request("client-new", 1, &[]), &mut effects),
            Reply::Now(Ok(Bytes::from(format!("{old}'s"))))
        );
        // Leaving by instance id with a stale member id is refused.
        assert_eq!(
            group.leave(330, &[(old.clone(), Some("s1".to_string()))], &mut effects),
            vec![Err(GroupError::FencedInstanceId)]
        );
    }

    #[test]
    fn the_last_member_leaving_empties_the_group_in_a_new_generation() {
        let (mut group, members) = stable_group(&[None, None]);
        let mut effects = Vec::new();
        let results = group.leave(
            300,
            &[
                (members[0].clone(), None),
                (members[1].clone(), None),
                ("ghost".to_string(), None),
            ],
            &mut effects,
        );
        assert_eq!(
            results,
            vec![Ok(()), Ok(()), Err(GroupError::UnknownMemberId)]
        );
        assert_eq!(group.state(), GroupState::Empty);
        assert_eq!(group.generation(), 2);
        assert!(effects.contains(&Effect::Persist));
        assert!(group.describe().is_empty());
        assert_eq!(group.record().members, Vec::new());
    }

    #[test]
    fn a_stable_group_survives_its_record() {
        let (group, members) = stable_group(&[Some("s1"), None]);
        let loaded = ClassicGroup::from_record(CONFIG, &group.record(), 10_000);
        assert_eq!(loaded.state(), GroupState::Stable);
        assert_eq!(loaded.generation(), 1);
        assert_eq!(loaded.protocol(), "cooperative-sticky");
        assert_eq!(loaded.describe(), group.describe());
        let mut loaded = loaded;
        // Sessions restart when the group is loaded.
        assert_eq!(loaded.heartbeat(10_900, &members[1], None, 1), Ok(()));
        let mut effects = Vec::new();
        loaded.tick(10_999, &mut effects);
        assert_eq!(loaded.state(), GroupState::Stable);
    }
}
