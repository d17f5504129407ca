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
    offset_record, OFFSETS, OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS,
    OFFSETS_TOPIC_REPLICATION_FACTOR,
};
