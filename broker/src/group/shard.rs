//! What one `__consumer_offsets` partition says about its groups: the
//! latest committed offset per (group, topic, partition) and the latest
//! group record, rebuilt by replaying the partition's records in order. A
//! pure core: the coordinator feeds it records read from the log or just
//! written to it.

use std::collections::BTreeMap;

use super::records::{GroupValue, Key, OffsetValue, RecordError};

/// A committed offset and where its record is in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub value: OffsetValue,
    /// Offset of the record that committed it: a record applied late (its
    /// write was acknowledged after a later one's) does not win.
    pub record_offset: i64,
}

/// One group as its records leave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupRecords {
    pub offsets: BTreeMap<(String, i32), Committed>,
    pub metadata: Option<(GroupValue, i64)>,
}

impl GroupRecords {
    fn is_empty(&self) -> bool {
        self.offsets.is_empty() && self.metadata.is_none()
    }
}

/// The groups of one `__consumer_offsets` partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shard {
    groups: BTreeMap<String, GroupRecords>,
}

impl Shard {
    /// Replays the record at `record_offset`: a value sets, no value (a
    /// tombstone) removes. Records older than what they would replace are
    /// ignored.
    pub fn apply(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        record_offset: i64,
    ) -> Result<(), RecordError> {
        let key = Key::decode(key)?;
        let name = key.group().to_string();
        let group = self.groups.entry(name.clone()).or_default();
        match key {
            Key::Offset {
                topic, partition, ..
            } => {
                let slot = (topic, partition);
                if group
                    .offsets
                    .get(&slot)
                    .is_some_and(|current| current.record_offset >= record_offset)
                {
                    return Ok(());
                }
                match value {
                    Some(value) => {
                        let value = OffsetValue::decode(value)?;
                        group.offsets.insert(
                            slot,
                            Committed {
                                value,
                                record_offset,
                            },
                        );
                    }
                    None => {
                        group.offsets.remove(&slot);
                    }
                }
            }
            Key::Group { .. } => {
                if group
                    .metadata
                    .as_ref()
                    .is_some_and(|(_, at)| *at >= record_offset)
                {
                    return Ok(());
                }
                group.metadata = match value {
                    Some(value) => Some((GroupValue::decode(value)?, record_offset)),
                    None => None,
                };
            }
        }
        if group.is_empty() {
            self.groups.remove(&name);
        }
        Ok(())
    }

    pub fn group(&self, group: &str) -> Option<&GroupRecords> {
        self.groups.get(group)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&String, &GroupRecords)> {
        self.groups.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset_key(group: &str, partition: i32) -> Vec<u8> {
        Key::Offset {
            group: group.into(),
            topic: "orders".into(),
            partition,
        }
        .encode()
    }

    fn offset_value(offset: i64) -> Vec<u8> {
        OffsetValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        }
        .encode()
    }

    fn committed(shard: &Shard, group: &str, partition: i32) -> Option<i64> {
        let slot = ("orders".to_string(), partition);
        Some(shard.group(group)?.offsets.get(&slot)?.value.offset)
    }

    #[test]
    fn the_latest_record_wins_and_tombstones_remove() {
        let mut shard = Shard::default();
        shard
            .apply(&offset_key("a", 0), Some(&offset_value(5)), 10)
            .unwrap();
        shard
            .apply(&offset_key("a", 0), Some(&offset_value(9)), 12)
            .unwrap();
        // Acknowledged late, written earlier: ignored.
        shard
            .apply(&offset_key("a", 0), Some(&offset_value(7)), 11)
            .unwrap();
        shard
            .apply(&offset_key("a", 1), Some(&offset_value(3)), 13)
            .unwrap();
        assert_eq!(committed(&shard, "a", 0), Some(9));
        assert_eq!(committed(&shard, "a", 1), Some(3));
        shard.apply(&offset_key("a", 0), None, 14).unwrap();
        assert_eq!(committed(&shard, "a", 0), None);
        shard.apply(&offset_key("a", 1), None, 15).unwrap();
        assert!(
            shard.group("a").is_none(),
            "a group with nothing left is gone"
        );
        assert!(shard.apply(b"\0\x09", None, 16).is_err());
    }
}
