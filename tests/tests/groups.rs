//! Committed offsets of consumer groups on real `logd` processes: kept in
//! `__consumer_offsets`, found through FindCoordinator, surviving the
//! consumer's restart (kafka-python) and the coordinator's kill -9.

use std::time::Duration;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, RequestKind, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strata_tests::{
    create_replicated_topic, create_topic, one_cluster_at_a_time, produce, python, wait_for,
    Cluster, Connection, Logd,
};

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// The coordinator of `group` as `connection`'s broker names it, or the
/// error code.
fn find_coordinator(connection: &mut Connection, group: &str) -> Result<i32, i16> {
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into()));
    let ResponseKind::FindCoordinator(response) = connection
        .send(
            ApiKey::FindCoordinator,
            3,
            &RequestKind::FindCoordinator(request),
        )
        .expect("FindCoordinator")
    else {
        panic!("not a FindCoordinator response");
    };
    if response.error_code != 0 {
        return Err(response.error_code);
    }
    Ok(response.node_id.0)
}

/// Commits `offsets` (partition, offset) of `topic` for `group`; the error
/// code of each partition.
fn commit(
    connection: &mut Connection,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let partitions = offsets
        .iter()
        .map(|&(partition, offset)| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(StrBytes::from_static_str("checkpoint")))
        })
        .collect();
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(partitions)]);
    let ResponseKind::OffsetCommit(response) = connection
        .send(ApiKey::OffsetCommit, 8, &RequestKind::OffsetCommit(request))
        .expect("OffsetCommit")
    else {
        panic!("not an OffsetCommit response");
    };
    response.topics[0]
        .partitions
        .iter()
        .map(|partition| partition.error_code)
        .collect()
}

/// The committed offsets of `partitions` of `topic` for `group` (-1: none),
/// or the group-level error code.
fn committed(
    connection: &mut Connection,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<i64>, i16> {
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(partitions.to_vec())]));
    let ResponseKind::OffsetFetch(response) = connection
        .send(ApiKey::OffsetFetch, 7, &RequestKind::OffsetFetch(request))
        .expect("OffsetFetch")
    else {
        panic!("not an OffsetFetch response");
    };
    if response.error_code != 0 {
        return Err(response.error_code);
    }
    Ok(response.topics[0]
        .partitions
        .iter()
        .map(|partition| partition.committed_offset)
        .collect())
}

/// `(state, protocol type)` of `group` as DescribeGroups reports it.
fn describe(connection: &mut Connection, group: &str) -> (String, String) {
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let ResponseKind::DescribeGroups(response) = connection
        .send(
            ApiKey::DescribeGroups,
            5,
            &RequestKind::DescribeGroups(request),
        )
        .expect("DescribeGroups")
    else {
        panic!("not a DescribeGroups response");
    };
    let described = &response.groups[0];
    assert_eq!(described.error_code, 0, "DescribeGroups {group}");
    (
        described.group_state.to_string(),
        described.protocol_type.to_string(),
    )
}

fn list_groups(connection: &mut Connection) -> Vec<String> {
    let request = ListGroupsRequest::default();
    let ResponseKind::ListGroups(response) = connection
        .send(ApiKey::ListGroups, 4, &RequestKind::ListGroups(request))
        .expect("ListGroups")
    else {
        panic!("not a ListGroups response");
    };
    response
        .groups
        .iter()
        .map(|group| group.group_id.0.to_string())
        .collect()
}

fn delete_group(connection: &mut Connection, group: &str) -> i16 {
    let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
    let ResponseKind::DeleteGroups(response) = connection
        .send(ApiKey::DeleteGroups, 2, &RequestKind::DeleteGroups(request))
        .expect("DeleteGroups")
    else {
        panic!("not a DeleteGroups response");
    };
    response.results[0].error_code
}

/// kafka-python: consume with `group`, seek to `commit_at` and commit, close;
/// then a new consumer of the group reads the committed offset and resumes
/// there. Prints the committed offset and the first offset read after.
const KAFKA_PYTHON_COMMIT_AND_RESUME: &str = r#"
import sys
from kafka import KafkaConsumer, TopicPartition
bootstrap, topic, group, commit_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tp = TopicPartition(topic, 0)

first = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                      consumer_timeout_ms=5000)
first.assign([tp])
first.seek(tp, 0)
seen = [record.offset for _, records in first.poll(timeout_ms=5000, max_records=10).items() for record in records]
assert seen and seen[0] == 0, seen
first.seek(tp, commit_at)
first.commit()
first.close()

second = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                       consumer_timeout_ms=5000)
second.assign([tp])
committed = second.committed(tp)
resumed = next(iter(second)).offset
print(committed, resumed)
second.close()
"#;

#[test]
fn kafka_python_commits_and_a_new_consumer_resumes_from_the_committed_offset() {
    let logd = Logd::start();
    create_topic(&logd, "events", 1);
    let mut connection = logd.connect();
    let values: Vec<Vec<u8>> = (0..100)
        .map(|index| format!("event-{index}").into_bytes())
        .collect();
    produce(&mut connection, "events", 0, -1, &values)
        .expect("broker answers")
        .expect("produced");
    let output = python(
        KAFKA_PYTHON_COMMIT_AND_RESUME,
        &[&logd.bootstrap(), "events", "billing", "60"],
    );
    assert_eq!(
        output.trim(),
        "60 60",
        "committed offset, first offset read after"
    );
    assert_eq!(
        committed(&mut connection, "billing", "events", &[0]),
        Ok(vec![60])
    );
    assert_eq!(
        describe(&mut connection, "billing").0,
        "Empty",
        "a group with offsets and no members"
    );
    assert!(list_groups(&mut connection).contains(&"billing".to_string()));
}

#[test]
fn committed_offsets_survive_the_coordinators_kill() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    create_replicated_topic(cluster.node(1), "orders", 3, 3);
    let group = "auditors";
    let mut connection = cluster.node(1).connect();
    // The first request creates __consumer_offsets; its leaders follow.
    let coordinator = wait_for(Duration::from_secs(15), "a coordinator", || {
        find_coordinator(&mut connection, group).ok()
    });
    let mut at_coordinator = cluster.node(coordinator).connect();
    let codes = wait_for(Duration::from_secs(15), "the coordinator to serve", || {
        let codes = commit(
            &mut at_coordinator,
            group,
            "orders",
            &[(0, 10), (1, 20), (2, 30)],
        );
        codes.iter().all(|&code| code == 0).then_some(codes)
    });
    assert_eq!(codes, [0, 0, 0]);
    assert_eq!(
        commit(&mut at_coordinator, group, "no-such-topic", &[(0, 1)]),
        [3],
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    let elsewhere = (1..=3).find(|&id| id != coordinator).unwrap();
    assert_eq!(
        committed(
            &mut cluster.node(elsewhere).connect(),
            group,
            "orders",
            &[0]
        ),
        Err(16),
        "NOT_COORDINATOR elsewhere"
    );
    assert_eq!(
        produce(
            &mut cluster.node(coordinator).connect(),
            "__consumer_offsets",
            0,
            1,
            &[b"forged".to_vec()]
        )
        .expect("answers"),
        Err(17),
        "clients cannot write the offsets topic"
    );

    cluster.node(coordinator).kill9();
    let mut survivor = cluster.node(elsewhere).connect();
    let successor = wait_for(Duration::from_secs(15), "a new coordinator", || {
        find_coordinator(&mut survivor, group)
            .ok()
            .filter(|&id| id != coordinator)
    });
    let mut at_successor = cluster.node(successor).connect();
    let offsets = wait_for(
        Duration::from_secs(15),
        "the offsets from the successor",
        || committed(&mut at_successor, group, "orders", &[0, 1, 2, 3]).ok(),
    );
    assert_eq!(
        offsets,
        [10, 20, 30, -1],
        "every commit survived; none for partition 3"
    );
    assert!(list_groups(&mut at_successor).contains(&group.to_string()));

    cluster.node(coordinator).restart();
    assert_eq!(delete_group(&mut at_successor, group), 0);
    assert_eq!(
        delete_group(&mut at_successor, group),
        69,
        "GROUP_ID_NOT_FOUND"
    );
    assert_eq!(describe(&mut at_successor, group).0, "Dead");
    assert_eq!(
        committed(&mut at_successor, group, "orders", &[0, 1, 2]),
        Ok(vec![-1, -1, -1])
    );
}
