//! The identities of cluster metadata: brokers, and the two versions of a
//! partition (its leader epoch and its partition epoch). Newtypes, so one
//! cannot stand in for another; serialized as the bare integers, as Kafka's
//! wire and Strata's stored metadata carry them.

use serde::{Deserialize, Serialize};

/// A broker's id (Kafka's `node.id`; an `i32` on the wire, where
/// `BrokerId(-1)` means none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BrokerId(pub i32);

impl std::fmt::Display for BrokerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A partition's leader epoch: bumped by every change of its leader and
/// every new life of the leader's process. Batches a leader appends carry
/// it (as an `i32`, the partition leader epoch of the batch format), and
/// followers truncate by it (KIP-101/279).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct LeaderEpoch(pub i32);

impl LeaderEpoch {
    /// The next epoch.
    pub fn bump(&mut self) {
        self.0 += 1;
    }
}

/// Epochs later or earlier by a count (tests and logs compare them so).
impl std::ops::Add<i32> for LeaderEpoch {
    type Output = LeaderEpoch;

    fn add(self, count: i32) -> LeaderEpoch {
        LeaderEpoch(self.0 + count)
    }
}

impl std::ops::Sub<i32> for LeaderEpoch {
    type Output = LeaderEpoch;

    fn sub(self, count: i32) -> LeaderEpoch {
        LeaderEpoch(self.0 - count)
    }
}

impl std::fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A partition's version: bumped by every change of its leader or ISR, so
/// a leader's request to change its ISR names the version it saw and a
/// stale one is refused (Kafka's partition epoch, KIP-497). Not the leader
/// epoch, which changes only with the leader.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct PartitionEpoch(pub i32);

impl PartitionEpoch {
    /// The next version.
    pub fn bump(&mut self) {
        self.0 += 1;
    }
}

impl std::fmt::Display for PartitionEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Leader of a partition that has none (Kafka's -1).
pub const NO_LEADER: BrokerId = BrokerId(-1);
