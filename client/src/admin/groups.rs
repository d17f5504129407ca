//! Consumer groups as an operator sees them: list, describe, read and set
//! committed offsets, delete.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;

use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::descriptions::{GroupDescription, GroupListing, GroupMember};
use super::Admin;
use crate::assignor::{self, TopicPartition};
use crate::cluster::Target;
use crate::error::{check, Error, Result};
use crate::group::{find_coordinator, GroupConfig, Membership};

impl Admin {
    /// Every consumer group, from every broker's ListGroups (each lists
    /// the groups it coordinates).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        self.cluster.refresh(&[]).await?;
        let mut groups = Vec::new();
        for broker in self.cluster.broker_ids() {
            let answer = self
                .cluster
                .call(Target::Broker(broker), &ListGroupsRequest::default())
                .await?;
            let response = &answer.response;
            check(
                || format!("list groups on broker {broker}"),
                response.error_code,
                None,
            )?;
            groups.extend(response.groups.iter().map(|group| GroupListing {
                group_id: group.group_id.0.to_string(),
                state: group.group_state.to_string(),
                protocol_type: group.protocol_type.to_string(),
            }));
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(groups)
    }

    /// A group's state, members and their assignments.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        self.on_coordinator(group, |coordinator| {
            self.describe_group_on(group, coordinator)
        })
        .await
    }

    async fn describe_group_on(&self, group: &str, coordinator: i32) -> Result<GroupDescription> {
        let request = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let answer = self
            .cluster
            .call(Target::Broker(coordinator), &request)
            .await?;
        let response = &answer.response;
        let described = answer.first(&response.groups)?;
        check(
            || format!("describe group {group}"),
            described.error_code,
            described.error_message.as_ref(),
        )?;
        let mut members = Vec::with_capacity(described.members.len());
        for member in &described.members {
            members.push(GroupMember {
                member_id: member.member_id.to_string(),
                group_instance_id: member.group_instance_id.as_ref().map(ToString::to_string),
                client_id: member.client_id.to_string(),
                client_host: member.client_host.to_string(),
                assignment: if described.protocol_type.as_str() == "consumer" {
                    assignor::decode_assignment(&member.member_assignment)?
                } else {
                    Vec::new()
                },
            });
        }
        Ok(GroupDescription {
            group_id: group.to_string(),
            state: described.group_state.to_string(),
            protocol_type: described.protocol_type.to_string(),
            protocol: described.protocol_data.to_string(),
            coordinator,
            members,
        })
    }

    /// Every committed offset of a group: (topic, partition) → the next
    /// offset its consumers read.
    pub async fn group_offsets(&self, group: &str) -> Result<Vec<(TopicPartition, i64)>> {
        let membership = Membership::new(Arc::clone(&self.cluster), GroupConfig::new(group))?;
        Ok(membership
            .committed(None, false)
            .await?
            .into_iter()
            .collect())
    }

    /// Sets a group's committed offsets; the coordinator takes them only
    /// while the group has no members.
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<()> {
        let membership = Membership::new(Arc::clone(&self.cluster), GroupConfig::new(group))?;
        membership.commit(offsets).await
    }

    /// Deletes a group without members, with its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        self.on_coordinator(group, |coordinator| {
            self.delete_group_on(group, coordinator)
        })
        .await
    }

    async fn delete_group_on(&self, group: &str, coordinator: i32) -> Result<()> {
        let request = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let answer = self
            .cluster
            .call(Target::Broker(coordinator), &request)
            .await?;
        let response = &answer.response;
        let result = answer.first(&response.results)?;
        check(|| format!("delete group {group}"), result.error_code, None)
    }

    /// Runs `call` on `group`'s coordinator, finding it again while the
    /// answer is that it is not (or not yet) the coordinator, as Kafka's
    /// admin client does: the group's partition may have just been created,
    /// or its leadership moved. Gives up at the request timeout.
    async fn on_coordinator<T, Call>(&self, group: &str, call: impl Fn(i32) -> Call) -> Result<T>
    where
        Call: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.cluster.config().request_timeout;
        loop {
            let attempt = match find_coordinator(&self.cluster, group).await {
                Ok(coordinator) => call(coordinator).await,
                Err(error) => Err(error),
            };
            match attempt {
                Err(error) if coordinator_moved(&error) && Instant::now() < deadline => {
                    tokio::time::sleep(COORDINATOR_RETRY_BACKOFF).await;
                }
                attempt => return attempt,
            }
        }
    }
}

/// Pause before finding a group's coordinator again.
const COORDINATOR_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Whether a group call should find the coordinator again.
fn coordinator_moved(error: &Error) -> bool {
    matches!(
        error,
        Error::Broker {
            error: ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress,
            ..
        }
    )
}
