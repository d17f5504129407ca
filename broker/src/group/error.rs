//! Why the group coordinator could not serve a request, and what a group
//! request gets back.

use super::classic::GroupError;
use crate::coordinator_log::LogError;

/// Why the coordinator could not serve a request at all. The group's own
/// refusals are [`GroupError`]s; the handlers turn both into Kafka codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorError {
    /// This broker does not lead the group's offsets partition (any more):
    /// the client finds the coordinator again.
    NotCoordinator,
    /// The partition's groups cannot be loaded or written now.
    Unavailable,
    /// A record did not become durable in time.
    TimedOut,
    /// The group has no record here.
    GroupIdNotFound,
    /// DeleteGroups of a group with members.
    NonEmptyGroup,
    /// OffsetDelete while members may be reading those partitions.
    GroupSubscribedToTopic,
    /// A transactional offset commit or marker of a producer epoch older
    /// than the partition knows.
    ProducerFenced,
    /// The group refused the request.
    Group(GroupError),
}

impl From<GroupError> for CoordinatorError {
    fn from(error: GroupError) -> Self {
        CoordinatorError::Group(error)
    }
}

impl From<LogError> for CoordinatorError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::NotCoordinator => CoordinatorError::NotCoordinator,
            LogError::Unavailable => CoordinatorError::Unavailable,
            LogError::TimedOut => CoordinatorError::TimedOut,
            LogError::ProducerFenced => CoordinatorError::ProducerFenced,
        }
    }
}

/// What a group request gets: the group's answer, or why a coordinator
/// could not give one (not the coordinator, write failed).
pub type Answer<T> = Result<Result<T, GroupError>, CoordinatorError>;
