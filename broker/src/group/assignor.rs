//! The server-side assignors of KIP-848 consumer groups: given the members'
//! subscriptions and the subscribed topics' partitions, which member should
//! own which partition. Pure functions; the group decides when to run them
//! and hands partitions over only once their previous owner let go.
//!
//! - `uniform` (the default): as even as the subscriptions allow, and
//!   sticky: a partition stays with its previous owner unless balance needs
//!   it elsewhere.
//! - `range`: per topic, the subscribers in member-id order take contiguous
//!   ranges, the first ones one partition more (Kafka's range rule), so
//!   co-partitioned topics line up.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions per topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// Subscribed topics as the metadata has them: name → (id, partitions).
pub type Topics = BTreeMap<String, (Uuid, u32)>;

pub const UNIFORM: &str = "uniform";
pub const RANGE: &str = "range";
/// The assignors a member may name, the default first.
pub const ASSIGNORS: [&str; 2] = [UNIFORM, RANGE];

/// Runs `assignor` (one of [`ASSIGNORS`]) over `subscriptions` (member id
/// → topic names). `previous` is the last target, which `uniform` sticks
/// to. Every member gets an entry, possibly empty.
pub fn assign(
    assignor: &str,
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &Topics,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let owners = if assignor == RANGE {
        range(subscriptions, topics)
    } else {
        uniform(subscriptions, topics, previous)
    };
    let mut target: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|member| (member.clone(), Assignment::new()))
        .collect();
    for ((topic_id, partition), member) in owners {
        target
            .get_mut(&member)
            .expect("owners are subscribers")
            .entry(topic_id)
            .or_default()
            .insert(partition);
    }
    target
}

/// The members subscribed to each topic, in member-id order.
fn subscribers<'a>(
    subscriptions: &'a BTreeMap<String, BTreeSet<String>>,
    topic: &str,
) -> Vec<&'a String> {
    subscriptions
        .iter()
        .filter(|(_, topics)| topics.contains(topic))
        .map(|(member, _)| member)
        .collect()
}

fn range(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &Topics,
) -> BTreeMap<(Uuid, i32), String> {
    let mut owners = BTreeMap::new();
    for (name, (topic_id, partitions)) in topics {
        let members = subscribers(subscriptions, name);
        if members.is_empty() {
            continue;
        }
        let per_member = *partitions as usize / members.len();
        let extra = *partitions as usize % members.len();
        let mut next = 0;
        for (index, member) in members.into_iter().enumerate() {
            let count = per_member + usize::from(index < extra);
            for partition in next..next + count {
                owners.insert((*topic_id, partition as i32), member.clone());
            }
            next += count;
        }
    }
    owners
}

fn uniform(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &Topics,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<(Uuid, i32), String> {
    // Every assignable partition with the members that may own it.
    let mut eligible: BTreeMap<(Uuid, i32), Vec<&String>> = BTreeMap::new();
    for (name, (topic_id, partitions)) in topics {
        let members = subscribers(subscriptions, name);
        if members.is_empty() {
            continue;
        }
        for partition in 0..*partitions as i32 {
            eligible.insert((*topic_id, partition), members.clone());
        }
    }
    let mut owners: BTreeMap<(Uuid, i32), String> = BTreeMap::new();
    let mut counts: BTreeMap<&String, usize> = subscriptions.keys().map(|m| (m, 0)).collect();
    // Sticky: partitions stay where they were, if still allowed there.
    for (member, assignment) in previous {
        for (topic_id, partitions) in assignment {
            for &partition in partitions {
                let slot = (*topic_id, partition);
                let Some(members) = eligible.get(&slot) else {
                    continue;
                };
                if let Some(member) = members.iter().find(|eligible| **eligible == member) {
                    owners.insert(slot, (*member).clone());
                    *counts.get_mut(member).expect("subscriber") += 1;
                }
            }
        }
    }
    // New partitions go to the least loaded member that may take them.
    for (slot, members) in &eligible {
        if owners.contains_key(slot) {
            continue;
        }
        let member = *members
            .iter()
            .min_by_key(|member| (counts[**member], **member))
            .expect("eligible partitions have subscribers");
        owners.insert(*slot, member.clone());
        *counts.get_mut(member).expect("subscriber") += 1;
    }
    // Balance: move a partition from a member to an eligible one holding at
    // least two fewer, until no such move is left. Each move lowers the sum
    // of squared counts, so this ends.
    loop {
        let moved = eligible.iter().find_map(|(slot, members)| {
            let owner = owners.get(slot)?;
            let owned = counts[owner];
            let lightest = members
                .iter()
                .min_by_key(|member| (counts[**member], **member))?;
            (counts[*lightest] + 1 < owned).then(|| (*slot, owner.clone(), (*lightest).clone()))
        });
        let Some((slot, from, to)) = moved else {
            break;
        };
        *counts.get_mut(&from).expect("subscriber") -= 1;
        *counts.get_mut(&to).expect("subscriber") += 1;
        owners.insert(slot, to);
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(spec: &[(&str, u32)]) -> Topics {
        spec.iter()
            .enumerate()
            .map(|(index, (name, partitions))| {
                (
                    name.to_string(),
                    (Uuid::from_u128(index as u128 + 1), *partitions),
                )
            })
            .collect()
    }

    fn subscriptions(spec: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        spec.iter()
            .map(|(member, topics)| {
                (
                    member.to_string(),
                    topics.iter().map(ToString::to_string).collect(),
                )
            })
            .collect()
    }

    fn count(assignment: &Assignment) -> usize {
        assignment.values().map(BTreeSet::len).sum()
    }

    /// Every partition of the subscribed topics owned exactly once.
    fn assert_complete(target: &BTreeMap<String, Assignment>, topics: &Topics) {
        let mut seen = BTreeSet::new();
        for assignment in target.values() {
            for (topic_id, partitions) in assignment {
                for partition in partitions {
                    assert!(seen.insert((*topic_id, *partition)), "owned twice");
                }
            }
        }
        let total: u32 = topics.values().map(|(_, partitions)| partitions).sum();
        assert_eq!(seen.len(), total as usize);
    }

    #[test]
    fn uniform_balances_and_sticks() {
        let topics = topics(&[("a", 7), ("b", 5)]);
        let two = subscriptions(&[("m1", &["a", "b"]), ("m2", &["a", "b"])]);
        let first = assign(UNIFORM, &two, &topics, &BTreeMap::new());
        assert_complete(&first, &topics);
        assert_eq!(
            (count(&first["m1"]), count(&first["m2"])),
            (6, 6),
            "{first:?}"
        );
        // A third member takes four, two from each, and nothing else moves.
        let three = subscriptions(&[
            ("m1", &["a", "b"]),
            ("m2", &["a", "b"]),
            ("m3", &["a", "b"]),
        ]);
        let second = assign(UNIFORM, &three, &topics, &first);
        assert_complete(&second, &topics);
        for member in ["m1", "m2", "m3"] {
            assert_eq!(count(&second[member]), 4, "{second:?}");
        }
        for member in ["m1", "m2"] {
            for (topic_id, partitions) in &second[member] {
                assert!(
                    partitions.is_subset(&first[member][topic_id]),
                    "moved needlessly"
                );
            }
        }
        // The same input gives the same output.
        assert_eq!(assign(UNIFORM, &three, &topics, &first), second);
    }

    #[test]
    fn uniform_respects_uneven_subscriptions() {
        let topics = topics(&[("a", 4), ("b", 4)]);
        let subs = subscriptions(&[("m1", &["a"]), ("m2", &["a", "b"]), ("m3", &["b"])]);
        let target = assign(UNIFORM, &subs, &topics, &BTreeMap::new());
        assert_complete(&target, &topics);
        let (a, b) = (topics["a"].0, topics["b"].0);
        assert!(!target["m1"].contains_key(&b) && !target["m3"].contains_key(&a));
        let counts: Vec<usize> = target.values().map(count).collect();
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
            "{target:?}"
        );
    }

    #[test]
    fn range_gives_contiguous_ranges_first_members_one_more() {
        let topics = topics(&[("a", 5)]);
        let subs = subscriptions(&[("m2", &["a"]), ("m1", &["a"])]);
        let target = assign(RANGE, &subs, &topics, &BTreeMap::new());
        let a = topics["a"].0;
        assert_eq!(target["m1"][&a], BTreeSet::from([0, 1, 2]));
        assert_eq!(target["m2"][&a], BTreeSet::from([3, 4]));
    }

    #[test]
    fn members_without_topics_get_nothing_and_unsubscribed_topics_no_one() {
        let topics = topics(&[("a", 2), ("b", 3)]);
        let subs = subscriptions(&[("m1", &["a"]), ("m2", &["missing"])]);
        for assignor in ASSIGNORS {
            let target = assign(assignor, &subs, &topics, &BTreeMap::new());
            assert_eq!(count(&target["m1"]), 2);
            assert!(target["m2"].is_empty());
        }
    }
}
