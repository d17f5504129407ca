//! The records of `__transaction_state`: one per transactional id, keyed by
//! it, holding its latest metadata (a tombstone once it expired). The
//! topic is compacted, so the latest record of each id is what a loading
//! coordinator replays.
//!
//! ```text
//! key:   version i16 (0), transactional_id (i16 length, UTF-8)
//! value: version i16 (0), TxnMetadata (postcard)
//! ```

use crate::coordinator_log::{InternalTopic, KeyedRecord};

use super::state::TxnMetadata;

pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// The transaction log as the coordinators' machinery knows it (Kafka's
/// `transaction.state.log.num.partitions` and replication factor).
pub const TRANSACTION_STATE: InternalTopic = InternalTopic {
    name: TRANSACTION_STATE_TOPIC,
    partitions: 50,
    replication_factor: 3,
};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// The record of `id` holding `metadata` (`None`: its tombstone).
pub fn encode(id: &str, metadata: Option<&TxnMetadata>) -> KeyedRecord {
    let mut key = Vec::with_capacity(4 + id.len());
    key.extend_from_slice(&KEY_VERSION.to_be_bytes());
    key.extend_from_slice(&(id.len() as i16).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    let value = metadata.map(|metadata| {
        let mut value = VALUE_VERSION.to_be_bytes().to_vec();
        value.extend(postcard::to_stdvec(metadata).expect("metadata serializes"));
        value
    });
    (key, value)
}

/// The id and metadata of a record, or why it cannot be read.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<(String, Option<TxnMetadata>), String> {
    let version = key
        .get(..2)
        .map(|bytes| i16::from_be_bytes([bytes[0], bytes[1]]));
    if version != Some(KEY_VERSION) {
        return Err(format!("unknown key version {version:?}"));
    }
    let length = key
        .get(2..4)
        .map(|bytes| i16::from_be_bytes([bytes[0], bytes[1]]))
        .filter(|length| *length >= 0)
        .ok_or("truncated key")? as usize;
    let id = key
        .get(4..4 + length)
        .filter(|_| key.len() == 4 + length)
        .ok_or("key length does not match")?;
    let id = String::from_utf8(id.to_vec()).map_err(|_| "transactional id is not UTF-8")?;
    let metadata = match value {
        None => None,
        Some(value) => {
            let version = value
                .get(..2)
                .map(|bytes| i16::from_be_bytes([bytes[0], bytes[1]]));
            if version != Some(VALUE_VERSION) {
                return Err(format!("unknown value version {version:?}"));
            }
            Some(postcard::from_bytes(&value[2..]).map_err(|error| error.to_string())?)
        }
    };
    Ok((id, metadata))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::txn::state::TxnState;

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let metadata = TxnMetadata {
            producer_id: 42,
            producer_epoch: 3,
            last_producer_epoch: 2,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: BTreeSet::from([("orders".to_string(), 4)]),
            start_ms: 1_000,
            last_update_ms: 1_001,
        };
        let (key, value) = encode("copier-1", Some(&metadata));
        assert_eq!(
            decode(&key, value.as_deref()),
            Ok(("copier-1".to_string(), Some(metadata)))
        );
        let (key, value) = encode("copier-1", None);
        assert_eq!(
            decode(&key, value.as_deref()),
            Ok(("copier-1".to_string(), None))
        );
        assert!(decode(&[0, 0, 0, 9, b'x'], None).is_err());
        assert!(decode(&[0, 1], None).is_err());
        assert!(decode(&key, Some(&[0, 0, 0xff])).is_err());
    }
}
