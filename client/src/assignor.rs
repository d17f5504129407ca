//! Partition assignors: what the group leader runs to share the subscribed
//! topics' partitions among the members, and the consumer protocol's
//! subscription and assignment encodings the coordinator passes along
//! untouched. Pure functions of the members' subscriptions.
//!
//! - `range`: per topic, members in id order each take a contiguous run;
//! - `roundrobin`: every partition in (topic, partition) order dealt to the
//!   subscribed members in turn;
//! - `cooperative-sticky` (the default, KIP-429): members keep what they
//!   own as far as balance allows; partitions are then dealt to the least
//!   loaded; a partition that must move from a live owner is held back this
//!   round, so its owner revokes it first and the next round hands it over.
//!   No partition ever has two owners, and members keep consuming what they
//!   keep.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::error::{Error, Result};

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// Version of the subscription this client writes: v2 carries the owned
/// partitions and the generation they were owned in.
const SUBSCRIPTION_VERSION: i16 = 2;
const ASSIGNMENT_VERSION: i16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Range,
    RoundRobin,
    CooperativeSticky,
}

/// What one member asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    /// The partitions it owned when it joined, and in which generation.
    pub owned: Vec<TopicPartition>,
    pub generation: i32,
}

impl Assignor {
    /// The protocol name members announce (Kafka's).
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    pub fn from_name(name: &str) -> Option<Assignor> {
        [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ]
        .into_iter()
        .find(|assignor| assignor.name() == name)
    }

    /// Cooperative: members keep consuming what they keep during a
    /// rebalance. Otherwise (eager) they give up everything before joining.
    pub fn is_cooperative(self) -> bool {
        self == Assignor::CooperativeSticky
    }

    /// The assignment of every member. `partition_counts` holds each
    /// subscribed topic that exists; a topic missing from it is skipped.
    pub fn assign(
        self,
        members: &BTreeMap<String, Subscription>,
        partition_counts: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut assignment: BTreeMap<String, Vec<TopicPartition>> = members
            .keys()
            .map(|member| (member.clone(), Vec::new()))
            .collect();
        let subscribers = |topic: &str| -> Vec<&String> {
            members
                .iter()
                .filter(|(_, subscription)| subscription.topics.iter().any(|t| t == topic))
                .map(|(member, _)| member)
                .collect()
        };
        match self {
            Assignor::Range => {
                for (topic, &count) in partition_counts {
                    let subscribers = subscribers(topic);
                    if subscribers.is_empty() {
                        continue;
                    }
                    let per_member = count as usize / subscribers.len();
                    let extra = count as usize % subscribers.len();
                    let mut next = 0;
                    for (index, member) in subscribers.into_iter().enumerate() {
                        let take = per_member + usize::from(index < extra);
                        let share = assignment.get_mut(member).expect("every member");
                        share.extend(
                            (next..next + take).map(|partition| (topic.clone(), partition as i32)),
                        );
                        next += take;
                    }
                }
            }
            Assignor::RoundRobin => {
                let mut turn = 0;
                let ordered: Vec<&String> = members.keys().collect();
                for (topic, &count) in partition_counts {
                    for partition in 0..count {
                        // The next member in turn that subscribes to the topic.
                        let Some(offset) = (0..ordered.len()).find(|offset| {
                            members[ordered[(turn + offset) % ordered.len()]]
                                .topics
                                .iter()
                                .any(|t| t == topic)
                        }) else {
                            break;
                        };
                        let member = ordered[(turn + offset) % ordered.len()];
                        assignment
                            .get_mut(member)
                            .expect("every member")
                            .push((topic.clone(), partition));
                        turn = (turn + offset + 1) % ordered.len();
                    }
                }
            }
            Assignor::CooperativeSticky => {
                assignment = sticky(members, partition_counts);
            }
        }
        for share in assignment.values_mut() {
            share.sort();
        }
        assignment
    }
}

/// Sticky, balanced, and cooperative: see the module comment.
fn sticky(
    members: &BTreeMap<String, Subscription>,
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let subscribes = |member: &str, topic: &str| {
        members[member].topics.iter().any(|t| t == topic) && partition_counts.contains_key(topic)
    };
    let exists = |(topic, partition): &TopicPartition| {
        partition_counts
            .get(topic)
            .is_some_and(|&count| (0..count).contains(partition))
    };
    // Who owns what now: a partition claimed by two members (one missed a
    // rebalance) belongs to the claim of the later generation.
    let mut owner: BTreeMap<TopicPartition, (i32, &String)> = BTreeMap::new();
    for (member, subscription) in members {
        for owned in &subscription.owned {
            if !exists(owned) || !subscribes(member, &owned.0) {
                continue;
            }
            let claim = (subscription.generation, member);
            owner
                .entry(owned.clone())
                .and_modify(|current| {
                    if claim.0 > current.0 {
                        *current = claim;
                    }
                })
                .or_insert(claim);
        }
    }
    let mut shares: BTreeMap<&String, BTreeSet<TopicPartition>> = members
        .keys()
        .map(|member| (member, BTreeSet::new()))
        .collect();
    for (partition, (_, member)) in &owner {
        shares
            .get_mut(member)
            .expect("a member")
            .insert(partition.clone());
    }
    // Every other partition to the least loaded member subscribed to it.
    for (topic, &count) in partition_counts {
        for partition in 0..count {
            let key = (topic.clone(), partition);
            if owner.contains_key(&key) {
                continue;
            }
            let least = shares
                .iter()
                .filter(|(member, _)| subscribes(member, topic))
                .min_by_key(|(member, share)| (share.len(), **member))
                .map(|(member, _)| *member);
            if let Some(member) = least {
                shares.get_mut(member).expect("a member").insert(key);
            }
        }
    }
    // Balance: move from the most loaded to a member with at least two
    // fewer that may take the partition, until none can. Each move lowers
    // the sum of squared loads, so this ends.
    loop {
        let mut moved = false;
        let by_load: Vec<&String> = {
            let mut order: Vec<&String> = shares.keys().copied().collect();
            order.sort_by_key(|member| std::cmp::Reverse(shares[member].len()));
            order
        };
        'search: for from in &by_load {
            for partition in shares[from].iter().rev() {
                let to = shares
                    .iter()
                    .filter(|(to, share)| {
                        share.len() + 1 < shares[from].len() && subscribes(to, &partition.0)
                    })
                    .min_by_key(|(member, share)| (share.len(), **member))
                    .map(|(member, _)| *member);
                if let Some(to) = to {
                    let partition = partition.clone();
                    shares.get_mut(from).expect("a member").remove(&partition);
                    shares.get_mut(to).expect("a member").insert(partition);
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            break;
        }
    }
    // Cooperative: a partition whose live owner loses it is assigned to no
    // one this round; the owner revokes it and rejoins, and the round after
    // hands it to its new member.
    shares
        .into_iter()
        .map(|(member, share)| {
            let share = share
                .into_iter()
                .filter(|partition| {
                    owner
                        .get(partition)
                        .is_none_or(|(_, current)| *current == member)
                })
                .collect();
            (member.clone(), share)
        })
        .collect()
}

/// `partitions` grouped by topic, as the wire lists them.
pub(crate) fn by_topic(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<i32>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    by_topic
}

/// The JoinGroup metadata of a member.
pub fn encode_subscription(subscription: &Subscription) -> Bytes {
    let owned = by_topic(&subscription.owned);
    let message = ConsumerProtocolSubscription::default()
        .with_topics(
            subscription
                .topics
                .iter()
                .map(|topic| StrBytes::from_string(topic.clone()))
                .collect(),
        )
        .with_owned_partitions(
            owned
                .into_iter()
                .map(|(topic, partitions)| {
                    OwnedTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(partitions)
                })
                .collect(),
        )
        .with_generation_id(subscription.generation);
    encode_versioned(&message, SUBSCRIPTION_VERSION)
}

pub fn decode_subscription(bytes: &Bytes) -> Result<Subscription> {
    let (version, mut body) = split_version(bytes, "subscription")?;
    let message = ConsumerProtocolSubscription::decode(&mut body, version)
        .map_err(|error| malformed("subscription", error))?;
    Ok(Subscription {
        topics: message.topics.iter().map(ToString::to_string).collect(),
        owned: message
            .owned_partitions
            .iter()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|&partition| (topic.topic.0.to_string(), partition))
            })
            .collect(),
        generation: message.generation_id,
    })
}

/// The SyncGroup assignment of a member.
pub fn encode_assignment(partitions: &[TopicPartition]) -> Bytes {
    let message = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic(partitions)
            .into_iter()
            .map(|(topic, partitions)| {
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    encode_versioned(&message, ASSIGNMENT_VERSION)
}

/// A member's assignment; empty bytes (no assignment) is none.
pub fn decode_assignment(bytes: &Bytes) -> Result<Vec<TopicPartition>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let (version, mut body) = split_version(bytes, "assignment")?;
    let message = ConsumerProtocolAssignment::decode(&mut body, version)
        .map_err(|error| malformed("assignment", error))?;
    let mut partitions: Vec<TopicPartition> = message
        .assigned_partitions
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|&partition| (topic.topic.0.to_string(), partition))
        })
        .collect();
    partitions.sort();
    Ok(partitions)
}

fn encode_versioned<M: Encodable>(message: &M, version: i16) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(version);
    message
        .encode(&mut out, version)
        .expect("a consumer protocol message encodes");
    out.freeze()
}

/// The schema version a consumer protocol message starts with, and the
/// rest; versions newer than this client reads are read as its newest.
fn split_version(bytes: &Bytes, what: &str) -> Result<(i16, Bytes)> {
    let mut body = bytes.clone();
    if body.remaining() < 2 {
        return Err(malformed(what, "shorter than its version"));
    }
    let version = body.get_i16();
    if version < 0 {
        return Err(malformed(what, format!("version {version}")));
    }
    Ok((version.min(3), body))
}

fn malformed(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Protocol {
        address: "group".to_string(),
        reason: format!("malformed consumer {what}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (member, topics, owned partitions).
    type MemberSpec<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, i32)]);

    fn members(specs: &[MemberSpec<'_>]) -> BTreeMap<String, Subscription> {
        specs
            .iter()
            .map(|(member, topics, owned)| {
                (
                    member.to_string(),
                    Subscription {
                        topics: topics.iter().map(ToString::to_string).collect(),
                        owned: owned.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
                        generation: 1,
                    },
                )
            })
            .collect()
    }

    fn counts(specs: &[(&str, i32)]) -> BTreeMap<String, i32> {
        specs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn partitions(share: &[TopicPartition]) -> Vec<i32> {
        share.iter().map(|(_, p)| *p).collect()
    }

    /// No partition twice; returns how many are assigned.
    fn check_disjoint(assignment: &BTreeMap<String, Vec<TopicPartition>>) -> usize {
        let all: Vec<&TopicPartition> = assignment.values().flatten().collect();
        let unique: BTreeSet<&TopicPartition> = all.iter().copied().collect();
        assert_eq!(
            all.len(),
            unique.len(),
            "a partition assigned twice: {assignment:?}"
        );
        all.len()
    }

    #[test]
    fn range_gives_contiguous_runs_and_round_robin_deals() {
        let group = members(&[("a", &["t"], &[]), ("b", &["t"], &[]), ("c", &["t"], &[])]);
        let range = Assignor::Range.assign(&group, &counts(&[("t", 7)]));
        assert_eq!(partitions(&range["a"]), [0, 1, 2]);
        assert_eq!(partitions(&range["b"]), [3, 4]);
        assert_eq!(partitions(&range["c"]), [5, 6]);
        let dealt = Assignor::RoundRobin.assign(&group, &counts(&[("t", 7)]));
        assert_eq!(partitions(&dealt["a"]), [0, 3, 6]);
        assert_eq!(partitions(&dealt["b"]), [1, 4]);
        assert_eq!(partitions(&dealt["c"]), [2, 5]);
    }

    #[test]
    fn members_get_only_topics_they_subscribe_to() {
        let group = members(&[("a", &["t", "u"], &[]), ("b", &["u"], &[])]);
        let topics = counts(&[("t", 2), ("u", 2), ("absent", 0)]);
        for assignor in [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ] {
            let assignment = assignor.assign(&group, &topics);
            assert_eq!(check_disjoint(&assignment), 4, "{assignor:?}");
            assert!(
                assignment["b"].iter().all(|(topic, _)| topic == "u"),
                "{assignor:?}"
            );
        }
    }

    #[test]
    fn a_member_leaving_moves_only_its_partitions() {
        // 10 members on 100 partitions, balanced; member 3 leaves.
        let mut owned: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
        for partition in 0..100 {
            owned
                .entry(format!("m{}", partition % 10))
                .or_default()
                .push(("t".to_string(), partition));
        }
        let group: BTreeMap<String, Subscription> = owned
            .iter()
            .filter(|(member, _)| member.as_str() != "m3")
            .map(|(member, owned)| {
                let subscription = Subscription {
                    topics: vec!["t".to_string()],
                    owned: owned.clone(),
                    generation: 4,
                };
                (member.clone(), subscription)
            })
            .collect();
        let assignment = Assignor::CooperativeSticky.assign(&group, &counts(&[("t", 100)]));
        assert_eq!(
            check_disjoint(&assignment),
            100,
            "the leaver's partitions are free: one round"
        );
        for (member, share) in &assignment {
            assert!(
                owned[member].iter().all(|kept| share.contains(kept)),
                "{member} kept everything it had"
            );
            assert!(
                (11..=12).contains(&share.len()),
                "balanced: {member} has {}",
                share.len()
            );
        }
    }

    #[test]
    fn a_newcomer_gets_partitions_only_after_their_owners_revoke_them() {
        let owned_a: Vec<(&str, i32)> = (0..6).map(|p| ("t", p)).collect();
        let owned_b: Vec<(&str, i32)> = (6..12).map(|p| ("t", p)).collect();
        let group = members(&[
            ("a", &["t"], &owned_a),
            ("b", &["t"], &owned_b),
            ("c", &["t"], &[]),
        ]);
        let first = Assignor::CooperativeSticky.assign(&group, &counts(&[("t", 12)]));
        assert!(
            first["c"].is_empty(),
            "nothing is handed over while its owner has it"
        );
        assert_eq!(
            first["a"].len() + first["b"].len(),
            8,
            "a and b give up 4 between them"
        );
        // They revoke and rejoin: the freed partitions go to c.
        let group = BTreeMap::from([
            (
                "a".to_string(),
                Subscription {
                    topics: vec!["t".into()],
                    owned: first["a"].clone(),
                    generation: 2,
                },
            ),
            (
                "b".to_string(),
                Subscription {
                    topics: vec!["t".into()],
                    owned: first["b"].clone(),
                    generation: 2,
                },
            ),
            (
                "c".to_string(),
                Subscription {
                    topics: vec!["t".into()],
                    owned: Vec::new(),
                    generation: 2,
                },
            ),
        ]);
        let second = Assignor::CooperativeSticky.assign(&group, &counts(&[("t", 12)]));
        assert_eq!(check_disjoint(&second), 12);
        assert_eq!(second["a"], first["a"]);
        assert_eq!(second["b"], first["b"]);
        assert_eq!(second["c"].len(), 4);
    }

    #[test]
    fn a_stale_claim_loses_to_the_later_generation() {
        let mut group = members(&[("a", &["t"], &[("t", 0)]), ("b", &["t"], &[("t", 0)])]);
        group.get_mut("b").unwrap().generation = 5;
        let assignment = Assignor::CooperativeSticky.assign(&group, &counts(&[("t", 2)]));
        assert_eq!(partitions(&assignment["b"]), [0]);
        assert_eq!(partitions(&assignment["a"]), [1]);
    }

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let subscription = Subscription {
            topics: vec!["orders".into(), "payments".into()],
            owned: vec![
                ("orders".into(), 1),
                ("orders".into(), 3),
                ("payments".into(), 0),
            ],
            generation: 7,
        };
        assert_eq!(
            decode_subscription(&encode_subscription(&subscription)).unwrap(),
            subscription
        );
        let assignment = vec![("orders".to_string(), 1), ("payments".to_string(), 2)];
        assert_eq!(
            decode_assignment(&encode_assignment(&assignment)).unwrap(),
            assignment
        );
        assert_eq!(decode_assignment(&Bytes::new()).unwrap(), Vec::new());
        assert!(decode_assignment(&Bytes::from_static(b"\x00")).is_err());
        assert!(decode_subscription(&Bytes::from_static(b"\x00\x00\xff")).is_err());
    }
}
