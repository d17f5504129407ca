//! Sparse per-segment indexes, kept in memory and written beside a segment
//! when it is sealed.
//!
//! - The offset index maps a batch's base offset (relative to the segment's
//!   base offset) to its byte position. An entry is added when at least
//!   `index.interval.bytes` were appended since the last one, so a lookup
//!   scans at most that many bytes of batch headers.
//! - The time index holds `(timestamp, relative_offset)`: every batch before
//!   `relative_offset` has a max timestamp `<= timestamp`. Entries are added
//!   with offset index entries, only when the timestamp grew.
//!
//! Files (payloads of [`crate::checkpoint`] files):
//!
//! ```text
//! BASE.index      size_bytes u64, last_offset i64, max_timestamp i64,
//!                 entry_count u32, entries (relative_offset u32, position u32)
//! BASE.timeindex  entry_count u32, entries (timestamp i64, relative_offset u32)
//! ```
//!
//! The active segment's indexes live only in memory: recovery rebuilds them
//! from the log, walking batch headers.

use crate::checkpoint::PayloadReader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub(crate) fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some(last) = self.entries.last() {
            assert!(
                relative_offset > last.relative_offset && position > last.position,
                "offset index entries increase"
            );
        }
        self.entries.push(OffsetEntry {
            relative_offset,
            position,
        });
    }

    /// Position of the last indexed batch whose base offset is at most
    /// `relative_offset`, or 0: the batch holding the offset starts there or later.
    pub(crate) fn lookup(&self, relative_offset: u32) -> u32 {
        let after = self
            .entries
            .partition_point(|entry| entry.relative_offset <= relative_offset);
        after
            .checked_sub(1)
            .map_or(0, |index| self.entries[index].position)
    }

    pub(crate) fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn encode_into(&self, payload: &mut Vec<u8>) {
        payload.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for entry in &self.entries {
            payload.extend_from_slice(&entry.relative_offset.to_be_bytes());
            payload.extend_from_slice(&entry.position.to_be_bytes());
        }
    }

    /// Decodes entries, refusing any that do not strictly increase.
    pub(crate) fn decode(reader: &mut PayloadReader<'_>) -> Option<Self> {
        let count = reader.u32()? as usize;
        if count > reader.remaining_bytes() / 8 {
            return None;
        }
        let mut index = OffsetIndex {
            entries: Vec::with_capacity(count),
        };
        for _ in 0..count {
            let entry = OffsetEntry {
                relative_offset: reader.u32()?,
                position: reader.u32()?,
            };
            if let Some(last) = index.entries.last() {
                if entry.relative_offset <= last.relative_offset || entry.position <= last.position
                {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Records that every batch before `relative_offset` has a max timestamp of
    /// at most `timestamp`; ignored unless the timestamp grew.
    pub(crate) fn maybe_push(&mut self, timestamp: i64, relative_offset: u32) {
        if self
            .entries
            .last()
            .is_some_and(|last| timestamp <= last.timestamp)
        {
            return;
        }
        if let Some(last) = self.entries.last() {
            assert!(
                relative_offset > last.relative_offset,
                "time index offsets increase"
            );
        }
        self.entries.push(TimeEntry {
            timestamp,
            relative_offset,
        });
    }

    /// A relative offset before which no batch reaches `timestamp`: the first
    /// batch with a max timestamp `>= timestamp` starts there or later.
    pub(crate) fn lookup(&self, timestamp: i64) -> u32 {
        let after = self
            .entries
            .partition_point(|entry| entry.timestamp < timestamp);
        after
            .checked_sub(1)
            .map_or(0, |index| self.entries[index].relative_offset)
    }

    pub(crate) fn encode_into(&self, payload: &mut Vec<u8>) {
        payload.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for entry in &self.entries {
            payload.extend_from_slice(&entry.timestamp.to_be_bytes());
            payload.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
    }

    pub(crate) fn decode(reader: &mut PayloadReader<'_>) -> Option<Self> {
        let count = reader.u32()? as usize;
        if count > reader.remaining_bytes() / 12 {
            return None;
        }
        let mut index = TimeIndex {
            entries: Vec::with_capacity(count),
        };
        for _ in 0..count {
            let entry = TimeEntry {
                timestamp: reader.i64()?,
                relative_offset: reader.u32()?,
            };
            if let Some(last) = index.entries.last() {
                if entry.timestamp <= last.timestamp
                    || entry.relative_offset <= last.relative_offset
                {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset_index(entries: &[(u32, u32)]) -> OffsetIndex {
        let mut index = OffsetIndex::default();
        for &(relative_offset, position) in entries {
            index.push(relative_offset, position);
        }
        index
    }

    #[test]
    fn offset_lookup_finds_the_last_entry_at_or_before() {
        let index = offset_index(&[(10, 4096), (20, 8192), (35, 12288)]);
        let check = |relative_offset, expected| {
            assert_eq!(index.lookup(relative_offset), expected, "{relative_offset}")
        };
        check(0, 0);
        check(9, 0);
        check(10, 4096);
        check(19, 4096);
        check(20, 8192);
        check(1000, 12288);
    }

    #[test]
    fn time_lookup_is_strictly_before_the_target() {
        let mut index = TimeIndex::default();
        index.maybe_push(100, 10);
        index.maybe_push(100, 15); // not grown: ignored
        index.maybe_push(200, 20);
        assert_eq!(index.lookup(50), 0);
        assert_eq!(index.lookup(100), 0);
        assert_eq!(index.lookup(101), 10);
        assert_eq!(index.lookup(200), 10);
        assert_eq!(index.lookup(201), 20);
    }

    #[test]
    fn decoding_refuses_unordered_entries() {
        let mut payload = Vec::new();
        offset_index(&[(1, 10), (2, 20)]).encode_into(&mut payload);
        assert!(OffsetIndex::decode(&mut PayloadReader::new(&payload)).is_some());
        // Make the first entry (9, 10): its offset is above the second's (2, 20).
        payload[4..8].copy_from_slice(&9u32.to_be_bytes());
        assert!(OffsetIndex::decode(&mut PayloadReader::new(&payload)).is_none());
        assert!(OffsetIndex::decode(&mut PayloadReader::new(&payload[..6])).is_none());
    }
}
