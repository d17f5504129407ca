//! OffsetFetch: a group's committed offsets, from its coordinator's view of
//! `__consumer_offsets` (-1 for a partition with no commit). A consumer
//! that asks for stable offsets (`require_stable`, KIP-447) gets
//! UNSTABLE_OFFSET_COMMIT for a partition an open transaction has
//! committed an offset of, and retries once it ends.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use std::collections::BTreeSet;

use super::{error_code, str_bytes, Context};
use crate::group::shard::Committed;

pub async fn handle(
    context: &Context,
    request: OffsetFetchRequest,
    api_version: i16,
) -> OffsetFetchResponse {
    let group = request.group_id.0.to_string();
    let asked: Vec<(String, i32)> = request
        .topics
        .iter()
        .flatten()
        .flat_map(|topic| {
            let name = topic.name.0.to_string();
            topic
                .partition_indexes
                .iter()
                .map(move |index| (name.clone(), *index))
        })
        .collect();
    let found = match context.groups.led_for(&group) {
        Ok(led) => {
            led.read(|groups| {
                let offsets = groups
                    .shard()
                    .group(&group)
                    .map(|records| records.offsets.clone());
                let unstable: BTreeSet<(String, i32)> = asked
                    .iter()
                    .filter(|(topic, index)| {
                        request.require_stable && groups.shard().has_staged(&group, topic, *index)
                    })
                    .cloned()
                    .collect();
                (offsets.unwrap_or_default(), unstable)
            })
            .await
        }
        Err(error) => Err(error),
    }
    .map_err(|error| error_code::for_coordinator(&error));
    let partition = |index: i32, committed: Option<&Committed>, code: i16| {
        let response = OffsetFetchResponsePartition::default()
            .with_partition_index(index)
            .with_error_code(code);
        let response = match committed {
            Some(committed) => response
                .with_committed_offset(committed.value.offset)
                .with_metadata(Some(str_bytes(committed.value.metadata.clone()))),
            None => response
                .with_committed_offset(-1)
                .with_metadata(Some(str_bytes(String::new()))),
        };
        if api_version >= 5 {
            let epoch = committed.map_or(-1, |committed| committed.value.leader_epoch);
            response.with_committed_leader_epoch(epoch)
        } else {
            response
        }
    };
    let (offsets, unstable) = match found {
        Ok(found) => found,
        Err(code) => {
            if api_version >= 2 {
                return OffsetFetchResponse::default().with_error_code(code);
            }
            // v1 has no group-level error: every partition asked for gets it.
            let topics = request
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|topic| {
                    let partitions = topic
                        .partition_indexes
                        .iter()
                        .map(|&index| partition(index, None, code))
                        .collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(topic.name)
                        .with_partitions(partitions)
                })
                .collect();
            return OffsetFetchResponse::default().with_topics(topics);
        }
    };
    let topics = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partition_indexes
                    .iter()
                    .map(|&index| {
                        let slot = (topic.name.0.to_string(), index);
                        if unstable.contains(&slot) {
                            return partition(index, None, error_code::UNSTABLE_OFFSET_COMMIT);
                        }
                        partition(index, offsets.get(&slot), 0)
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(topic.name)
                    .with_partitions(partitions)
            })
            .collect(),
        // Every committed offset of the group.
        None => {
            let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
            for ((name, index), committed) in &offsets {
                if topics
                    .last()
                    .is_none_or(|topic| topic.name.0.as_str() != name)
                {
                    topics.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(str_bytes(name.clone()))),
                    );
                }
                let topic = topics.last_mut().expect("pushed above");
                topic.partitions.push(partition(*index, Some(committed), 0));
            }
            topics
        }
    };
    OffsetFetchResponse::default().with_topics(topics)
}
