//! The records of `__consumer_offsets`, in Kafka's own layout so Kafka's
//! tools can read them: a key that says which group (and, for an offset,
//! which partition) it is about, and a value, or none (a tombstone: the
//! offset or the group is gone). Every key and value starts with an `i16`
//! schema version; strings are an `i16` length and UTF-8 bytes (-1: null),
//! byte arrays an `i32` length.
//!
//! - offset commit: key v1 `(group, topic, partition)`, value v3
//!   `(offset, leader epoch, metadata, commit timestamp)`; v0-v2 values are
//!   read too;
//! - group metadata: key v2 `(group)`, value v3 `(protocol type,
//!   generation, protocol, leader, state timestamp, members)`; v0-v2 read too;
//! - consumer-protocol (KIP-848) group: key v100 `(group)`, a Strata record
//!   holding the whole group (see `consumer.rs`; Kafka's own records for
//!   these groups use key versions 3-8, which Strata neither writes nor
//!   reads, and Kafka's tools skip a key version they do not know).

use bytes::{Buf, BufMut};
use thiserror::Error;

use crate::coordinator_log::InternalTopic;

/// A key and its value (`None`: a tombstone) for `__consumer_offsets`.
pub use crate::coordinator_log::KeyedRecord;

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const CONSUMER_GROUP_KEY_VERSION: i16 = 100;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed __consumer_offsets record: {0}")]
pub struct RecordError(String);

fn malformed<T>(what: impl Into<String>) -> Result<T, RecordError> {
    Err(RecordError(what.into()))
}

/// What a record is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
    ConsumerGroup {
        group: String,
    },
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// Leader epoch of the record at `offset - 1` as the consumer saw it;
    /// -1 if unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A group's membership as of its last completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}

impl Key {
    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group { group } | Key::ConsumerGroup { group } => {
                group
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                out.put_i16(OFFSET_KEY_VERSION);
                put_string(&mut out, group);
                put_string(&mut out, topic);
                out.put_i32(*partition);
            }
            Key::Group { group } => {
                out.put_i16(GROUP_KEY_VERSION);
                put_string(&mut out, group);
            }
            Key::ConsumerGroup { group } => {
                out.put_i16(CONSUMER_GROUP_KEY_VERSION);
                put_string(&mut out, group);
            }
        }
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Key, RecordError> {
        let buf = &mut bytes;
        match get_i16(buf)? {
            0 | 1 => Ok(Key::Offset {
                group: get_string(buf)?,
                topic: get_string(buf)?,
                partition: get_i32(buf)?,
            }),
            2 => Ok(Key::Group {
                group: get_string(buf)?,
            }),
            CONSUMER_GROUP_KEY_VERSION => Ok(Key::ConsumerGroup {
                group: get_string(buf)?,
            }),
            version => malformed(format!("unknown key version {version}")),
        }
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_i16(OFFSET_VALUE_VERSION);
        out.put_i64(self.offset);
        out.put_i32(self.leader_epoch);
        put_string(&mut out, &self.metadata);
        out.put_i64(self.commit_timestamp_ms);
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Result<OffsetValue, RecordError> {
        let buf = &mut bytes;
        let version = get_i16(buf)?;
        if !(0..=3).contains(&version) {
            return malformed(format!("unknown offset value version {version}"));
        }
        let offset = get_i64(buf)?;
        let leader_epoch = if version >= 3 { get_i32(buf)? } else { -1 };
        let metadata = get_string(buf)?;
        let commit_timestamp_ms = get_i64(buf)?;
        Ok(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_i16(GROUP_VALUE_VERSION);
        put_string(&mut out, &self.protocol_type);
        out.put_i32(self.generation);
        put_nullable_string(&mut out, self.protocol.as_deref());
        put_nullable_string(&mut out, self.leader.as_deref());
        out.put_i64(self.state_timestamp_ms);
        out.put_i32(self.members.len() as i32);
        for member in &self.members {
            put_string(&mut out, &member.member_id);
            put_nullable_string(&mut out, member.group_instance_id.as_deref());
            put_string(&mut out, &member.client_id);
            put_string(&mut out, &member.client_host);
            out.put_i32(member.rebalance_timeout_ms);
            out.put_i32(member.session_timeout_ms);
            put_bytes(&mut out, &member.subscription);
            put_bytes(&mut out, &member.assignment);
        }
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Result<GroupValue, RecordError> {
        let buf = &mut bytes;
        let version = get_i16(buf)?;
        if !(0..=3).contains(&version) {
            return malformed(format!("unknown group value version {version}"));
        }
        let protocol_type = get_string(buf)?;
        let generation = get_i32(buf)?;
        let protocol = get_nullable_string(buf)?;
        let leader = get_nullable_string(buf)?;
        let state_timestamp_ms = if version >= 2 { get_i64(buf)? } else { -1 };
        let count = get_i32(buf)?;
        let mut members = Vec::with_capacity(count.clamp(0, 1024) as usize);
        for _ in 0..count.max(0) {
            let member_id = get_string(buf)?;
            let group_instance_id = if version >= 3 {
                get_nullable_string(buf)?
            } else {
                None
            };
            let client_id = get_string(buf)?;
            let client_host = get_string(buf)?;
            let session_timeout_ms_v0 = if version == 0 {
                Some(get_i32(buf)?)
            } else {
                None
            };
            let (rebalance_timeout_ms, session_timeout_ms) = match session_timeout_ms_v0 {
                Some(session) => (session, session),
                None => (get_i32(buf)?, get_i32(buf)?),
            };
            members.push(MemberValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription: get_bytes(buf)?,
                assignment: get_bytes(buf)?,
            });
        }
        Ok(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp_ms,
            members,
        })
    }
}

fn put_string(out: &mut Vec<u8>, value: &str) {
    out.put_i16(value.len() as i16);
    out.put_slice(value.as_bytes());
}

fn put_nullable_string(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => put_string(out, value),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    out.put_i32(value.len() as i32);
    out.put_slice(value);
}

fn need(buf: &&[u8], bytes: usize) -> Result<(), RecordError> {
    if buf.remaining() < bytes {
        return malformed(format!("needs {bytes} more bytes, has {}", buf.remaining()));
    }
    Ok(())
}

fn get_i16(buf: &mut &[u8]) -> Result<i16, RecordError> {
    need(buf, 2)?;
    Ok(buf.get_i16())
}

fn get_i32(buf: &mut &[u8]) -> Result<i32, RecordError> {
    need(buf, 4)?;
    Ok(buf.get_i32())
}

fn get_i64(buf: &mut &[u8]) -> Result<i64, RecordError> {
    need(buf, 8)?;
    Ok(buf.get_i64())
}

fn get_nullable_string(buf: &mut &[u8]) -> Result<Option<String>, RecordError> {
    let len = get_i16(buf)?;
    if len < 0 {
        return Ok(None);
    }
    need(buf, len as usize)?;
    let (text, rest) = buf.split_at(len as usize);
    *buf = rest;
    match std::str::from_utf8(text) {
        Ok(text) => Ok(Some(text.to_string())),
        Err(_) => malformed("a string is not UTF-8"),
    }
}

fn get_string(buf: &mut &[u8]) -> Result<String, RecordError> {
    get_nullable_string(buf)?.map_or_else(|| malformed("a required string is null"), Ok)
}

fn get_bytes(buf: &mut &[u8]) -> Result<Vec<u8>, RecordError> {
    let len = get_i32(buf)?;
    if len < 0 {
        return Ok(Vec::new());
    }
    need(buf, len as usize)?;
    let (bytes, rest) = buf.split_at(len as usize);
    *buf = rest;
    Ok(bytes.to_vec())
}

/// The internal topic holding committed offsets and group records.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Its partition count (`offsets.topic.num.partitions`).
pub const OFFSETS_TOPIC_PARTITIONS: u32 = 50;
/// Its replication factor when the cluster has that many brokers.
pub const OFFSETS_TOPIC_REPLICATION_FACTOR: u16 = 3;

/// The offsets topic as the coordinators' machinery knows it.
pub const OFFSETS: InternalTopic = InternalTopic {
    name: OFFSETS_TOPIC,
    partitions: OFFSETS_TOPIC_PARTITIONS,
    replication_factor: OFFSETS_TOPIC_REPLICATION_FACTOR,
};

/// The records of a commit of `offset` for `group`'s `topic`/`partition`.
pub fn offset_record(
    group: &str,
    topic: &str,
    partition: i32,
    value: &OffsetValue,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = Key::Offset {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    };
    (key.encode(), Some(value.encode()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let keys = [
            Key::Offset {
                group: "billing".into(),
                topic: "orders".into(),
                partition: 7,
            },
            Key::Group {
                group: "billing".into(),
            },
            Key::ConsumerGroup {
                group: "billing".into(),
            },
        ];
        for key in keys {
            assert_eq!(Key::decode(&key.encode()).unwrap(), key);
        }
        let offset = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "checkpoint".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(OffsetValue::decode(&offset.encode()).unwrap(), offset);
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("cooperative-sticky".into()),
            leader: Some("member-1".into()),
            state_timestamp_ms: 1_700_000_000_000,
            members: vec![MemberValue {
                member_id: "member-1".into(),
                group_instance_id: Some("instance-a".into()),
                client_id: "app".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 60_000,
                session_timeout_ms: 10_000,
                subscription: vec![0, 1, 2],
                assignment: vec![3, 4],
            }],
        };
        assert_eq!(GroupValue::decode(&group.encode()).unwrap(), group);
    }

    #[test]
    fn kafkas_layout_byte_for_byte() {
        let key = Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
        };
        assert_eq!(key.encode(), [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1]);
        // An offset value v1 (with an expire timestamp Kafka no longer
        // writes) reads as the same commit.
        let mut v1 = vec![0, 1];
        v1.extend_from_slice(&9i64.to_be_bytes());
        v1.extend_from_slice(&[0, 0]);
        v1.extend_from_slice(&5i64.to_be_bytes());
        v1.extend_from_slice(&(-1i64).to_be_bytes());
        let value = OffsetValue::decode(&v1).unwrap();
        assert_eq!(
            (value.offset, value.leader_epoch, value.commit_timestamp_ms),
            (9, -1, 5)
        );
    }

    #[test]
    fn truncated_or_garbage_records_are_errors_not_panics() {
        let group = GroupValue {
            protocol_type: "consumer".into(),
            members: vec![MemberValue::default()],
            ..GroupValue::default()
        }
        .encode();
        for len in 0..group.len() {
            assert!(GroupValue::decode(&group[..len]).is_err(), "cut at {len}");
        }
        assert!(Key::decode(&[0, 9, 0, 0]).is_err());
        assert!(OffsetValue::decode(&[0, 7]).is_err());
        assert!(Key::decode(&[0, 2, 0, 2, 0xff, 0xfe]).is_err(), "not UTF-8");
    }
}
