//! The group coordinator: consumer groups under Kafka's classic protocol,
//! their committed offsets and their records, kept in the internal topic
//! `__consumer_offsets`.
//!
//! A group belongs to partition `abs(java_hash(group)) mod 50` of that topic
//! (Kafka's rule), and its coordinator is that partition's leader. The
//! topic is created on the first FindCoordinator, replicated like any other
//! (RF = min(3, brokers)). A coordinator rebuilds a partition's groups from
//! its log the first time it is asked about them in a leader epoch
//! (`shard.rs` replays the records); a commit is a record batch appended as
//! leader and acknowledged once the high watermark passes it, so a commit
//! that was answered survives the coordinator's death like any acks=all
//! record. Membership (`classic.rs`, a pure state machine) lives in memory;
//! each completed rebalance writes the group's record, from which the next
//! coordinator resumes the group without a rebalance.

pub mod assignor;
pub mod classic;
pub mod consumer;
pub mod coordinator;
pub mod error;
pub mod groups;
pub mod led;
pub mod records;
pub mod shard;

pub use self::coordinator::{CommittedOffset, GroupCoordinator};
pub use self::error::CoordinatorError;
pub use self::groups::Groups;
pub use self::led::Led;
pub use self::records::{
    offset_record, partition_for, OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS,
    OFFSETS_TOPIC_REPLICATION_FACTOR,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_partitions_as_in_kafka() {
        // Java: "a".hashCode() == 97, "ab".hashCode() == 3105, and
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE, which
        // Kafka's Utils.abs maps to 0.
        assert_eq!(partition_for("a"), 97 % 50);
        assert_eq!(partition_for("ab"), 3105 % 50);
        assert_eq!(partition_for("polygenelubricants"), 0);
        assert_eq!(partition_for(""), 0);
        for group in [
            "console-consumer-12345",
            "a-very-long-group-name-indeed",
            "é",
        ] {
            assert!((0..50).contains(&partition_for(group)));
        }
    }
}
