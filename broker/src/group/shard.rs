//! What one `__consumer_offsets` partition says about its groups: the
//! latest committed offset per (group, topic, partition) and the latest
//! group record, rebuilt by replaying the partition's records in order. A
//! pure core: the coordinator feeds it records read from the log or just
//! written to it.
//!
//! Offsets committed in a transaction (TxnOffsetCommit) are staged per
//! producer and take effect when its transaction's commit marker reaches
//! this partition; an abort marker drops them.

use std::collections::BTreeMap;

use strata_storage::batch::ProducerId;

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
    /// A consumer-protocol group's record, decoded by `ConsumerGroup`.
    pub consumer: Option<(Vec<u8>, i64)>,
}

impl GroupRecords {
    fn is_empty(&self) -> bool {
        self.offsets.is_empty() && self.metadata.is_none() && self.consumer.is_none()
    }

    /// The keys of its group records (either protocol).
    pub fn group_keys(&self, group: &str) -> Vec<Key> {
        let group = group.to_string();
        let mut keys = Vec::new();
        if self.metadata.is_some() {
            keys.push(Key::Group {
                group: group.clone(),
            });
        }
        if self.consumer.is_some() {
            keys.push(Key::ConsumerGroup { group });
        }
        keys
    }

    /// Which protocol's record is the later, if any: true for the
    /// consumer protocol's.
    pub fn consumer_is_latest(&self) -> Option<bool> {
        match (&self.metadata, &self.consumer) {
            (None, None) => None,
            (Some(_), None) => Some(false),
            (None, Some(_)) => Some(true),
            (Some((_, classic)), Some((_, consumer))) => Some(consumer > classic),
        }
    }
}

/// The groups of one `__consumer_offsets` partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shard {
    groups: BTreeMap<String, GroupRecords>,
    /// Offset records of ongoing transactions, by producer, in log order.
    staged: BTreeMap<ProducerId, Vec<StagedRecord>>,
}

/// An offset record written in a transaction: key, value, record offset.
type StagedRecord = (Vec<u8>, Option<Vec<u8>>, i64);

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
            Key::ConsumerGroup { .. } => {
                if group
                    .consumer
                    .as_ref()
                    .is_some_and(|(_, at)| *at >= record_offset)
                {
                    return Ok(());
                }
                group.consumer = value.map(|value| (value.to_vec(), record_offset));
            }
        }
        if group.is_empty() {
            self.groups.remove(&name);
        }
        Ok(())
    }

    /// Stages the record at `record_offset`, written in `producer_id`'s
    /// transaction, until the transaction ends.
    pub fn stage(
        &mut self,
        producer_id: ProducerId,
        key: &[u8],
        value: Option<&[u8]>,
        record_offset: i64,
    ) -> Result<(), RecordError> {
        Key::decode(key)?;
        self.staged.entry(producer_id).or_default().push((
            key.to_vec(),
            value.map(<[u8]>::to_vec),
            record_offset,
        ));
        Ok(())
    }

    /// Ends `producer_id`'s transaction: its staged records take effect
    /// (at their own offsets, so a later plain commit still wins) when it
    /// committed, and go when it aborted.
    pub fn end_transaction(&mut self, producer_id: ProducerId, committed: bool) {
        let staged = self.staged.remove(&producer_id).unwrap_or_default();
        if committed {
            for (key, value, record_offset) in staged {
                self.apply(&key, value.as_deref(), record_offset)
                    .expect("staged records decoded");
            }
        }
    }

    /// Whether an ongoing transaction has staged an offset for `group`'s
    /// `topic`/`partition` (OffsetFetch's UNSTABLE_OFFSET_COMMIT, KIP-447).
    pub fn has_staged(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.staged.values().flatten().any(|(key, _, _)| {
            matches!(Key::decode(key), Ok(Key::Offset { group: g, topic: t, partition: p })
                if g == group && t == topic && p == partition)
        })
    }

    pub fn group(&self, group: &str) -> Option<&GroupRecords> {
        self.groups.get(group)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&String, &GroupRecords)> {
        self.groups.iter()
    }

    /// What expires of `group` at `now_ms` (Kafka's KIP-211 rule): nothing
    /// while it has members (`empty_since` is `None`); otherwise each
    /// committed offset older than `retention_ms`, counted from its commit
    /// or from when the group became empty, whichever is later. Once every
    /// offset goes, the group's record goes too.
    pub fn expired(
        &self,
        group: &str,
        empty_since: Option<i64>,
        now_ms: i64,
        retention_ms: i64,
    ) -> Vec<Key> {
        let (Some(empty_since), Some(records)) = (empty_since, self.groups.get(group)) else {
            return Vec::new();
        };
        let mut expired: Vec<Key> = records
            .offsets
            .iter()
            .filter(|(_, committed)| {
                let since = committed.value.commit_timestamp_ms.max(empty_since);
                now_ms.saturating_sub(since) >= retention_ms
            })
            .map(|((topic, partition), _)| Key::Offset {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *partition,
            })
            .collect();
        let all_offsets_go = expired.len() == records.offsets.len();
        let idle_for = now_ms.saturating_sub(empty_since);
        if all_offsets_go && idle_for >= retention_ms {
            expired.extend(records.group_keys(group));
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_expire_only_once_the_group_is_empty_and_the_retention_passed() {
        let mut shard = Shard::default();
        let commit = |at: i64| OffsetValue {
            offset: 10,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: at,
        };
        shard
            .apply(&offset_key("g", 0), Some(&commit(1_000).encode()), 0)
            .unwrap();
        shard
            .apply(&offset_key("g", 1), Some(&commit(5_000).encode()), 1)
            .unwrap();
        let group_key = Key::Group { group: "g".into() }.encode();
        shard
            .apply(&group_key, Some(&GroupValue::default().encode()), 2)
            .unwrap();
        // With members: nothing expires, however old.
        assert!(shard.expired("g", None, 1_000_000, 100).is_empty());
        // Empty since 2 000: partition 0 (committed at 1 000) expires at
        // 2 000 + 3 000; partition 1 at 5 000 + 3 000; then the group goes.
        assert!(shard.expired("g", Some(2_000), 4_999, 3_000).is_empty());
        assert_eq!(
            shard.expired("g", Some(2_000), 5_000, 3_000),
            vec![Key::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 0
            }]
        );
        let all = shard.expired("g", Some(2_000), 8_000, 3_000);
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[2], Key::Group { group: "g".into() });
        assert!(shard.expired("unknown", Some(0), 8_000, 3_000).is_empty());
    }

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

    #[test]
    fn transactional_offsets_count_once_committed_and_never_when_aborted() {
        let mut shard = Shard::default();
        let (committing, aborting) = (ProducerId(1), ProducerId(2));
        shard
            .stage(committing, &offset_key("a", 0), Some(&offset_value(5)), 10)
            .unwrap();
        shard
            .stage(aborting, &offset_key("a", 1), Some(&offset_value(7)), 11)
            .unwrap();
        assert_eq!(committed(&shard, "a", 0), None, "not before the marker");
        assert!(shard.has_staged("a", "orders", 0));
        assert!(!shard.has_staged("a", "orders", 2));
        shard.end_transaction(aborting, false);
        shard.end_transaction(committing, true);
        assert_eq!(committed(&shard, "a", 0), Some(5));
        assert_eq!(committed(&shard, "a", 1), None);
        assert!(!shard.has_staged("a", "orders", 0));
        // A plain commit written after a staged one wins over it.
        shard
            .stage(committing, &offset_key("a", 0), Some(&offset_value(8)), 12)
            .unwrap();
        shard
            .apply(&offset_key("a", 0), Some(&offset_value(9)), 13)
            .unwrap();
        shard.end_transaction(committing, true);
        assert_eq!(committed(&shard, "a", 0), Some(9));
    }
}
