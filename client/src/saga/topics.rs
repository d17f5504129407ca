//! Creating a saga's topics: its event topic, its dead-letter topic and
//! each service's compacted state topic, all with the same partition count
//! (a saga's state lives in the partition of its events).

use super::definition::SagaDefinition;
use crate::{Admin, Error, NewTopic, ResponseError, Result};

/// Creates the topics of `definition` for `services`; topics that exist
/// already are left as they are.
pub async fn create_topics(
    admin: &Admin,
    definition: &SagaDefinition,
    services: &[&str],
    partition_count: i32,
    replication_factor: i16,
) -> Result<()> {
    let mut topics = vec![
        NewTopic::new(
            &definition.events_topic(),
            partition_count,
            replication_factor,
        ),
        NewTopic::new(
            &definition.dead_letter_topic(),
            partition_count,
            replication_factor,
        ),
    ];
    for service in services {
        topics.push(
            NewTopic::new(
                &definition.state_topic(service),
                partition_count,
                replication_factor,
            )
            .config("cleanup.policy", "compact"),
        );
    }
    for topic in &topics {
        match admin.create_topic(topic).await {
            Ok(()) => {}
            Err(Error::Broker {
                error: ResponseError::TopicAlreadyExists,
                ..
            }) => {}
            Err(error) => return Err(error),
        }
    }
    for topic in &topics {
        admin
            .wait_for_leaders(&topic.name, std::time::Duration::from_secs(30))
            .await?;
    }
    Ok(())
}
