//! Consumer groups on real `logd` processes: committed offsets kept in
//! `__consumer_offsets`, found through FindCoordinator, surviving the
//! consumer's restart (kafka-python) and the coordinator's kill -9; group
//! members (kafka-python and Strata's consumer) sharing partitions, taking
//! over a killed member's partitions, following the group to a new
//! coordinator, rebalancing cooperatively (only moved partitions stop), and
//! giving up the partitions of a member that stopped polling; and groups
//! under the consumer protocol (KIP-848) keeping their members, epochs and
//! assignments across the coordinator's kill -9.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Buf;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest,
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest,
    GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, RequestKind, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use uuid::Uuid;

use strata_client::{Acks, Consumer, OffsetReset, Producer, ProducerRecord, Rebalance};
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
    commit_as(connection, group, ("", -1), topic, offsets)
}

/// As [`commit`], by the member with this id in this generation (or, under
/// the consumer protocol, member epoch).
fn commit_as(
    connection: &mut Connection,
    group: &str,
    (member_id, generation): (&str, i32),
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
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_generation_id_or_member_epoch(generation)
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

/// A group as DescribeGroups reports it.
#[derive(Debug)]
struct Described {
    state: String,
    protocol_type: String,
    /// (member id, client id, partitions assigned) while Stable.
    members: Vec<(String, String, Vec<i32>)>,
}

fn describe(connection: &mut Connection, group: &str) -> Described {
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
    let members = described
        .members
        .iter()
        .map(|member| {
            let mut assignment = member.member_assignment.clone();
            let partitions = if assignment.len() < 2 {
                Vec::new()
            } else {
                let version = i16::from_be_bytes([assignment[0], assignment[1]]);
                assignment.advance(2);
                ConsumerProtocolAssignment::decode(&mut assignment, version)
                    .expect("a consumer protocol assignment")
                    .assigned_partitions
                    .iter()
                    .flat_map(|topic| topic.partitions.iter().copied())
                    .collect()
            };
            (
                member.member_id.to_string(),
                member.client_id.to_string(),
                partitions,
            )
        })
        .collect();
    Described {
        state: described.group_state.to_string(),
        protocol_type: described.protocol_type.to_string(),
        members,
    }
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
        describe(&mut connection, "billing").state,
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
    assert_eq!(describe(&mut at_successor, group).state, "Dead");
    assert_eq!(
        committed(&mut at_successor, group, "orders", &[0, 1, 2]),
        Ok(vec![-1, -1, -1])
    );
}

/// A kafka-python member of `group`: prints `partition offset value` for
/// each record it processes, commits after each poll, and leaves the group
/// when `stop_file` exists or after `limit` records (0: no limit).
const KAFKA_PYTHON_GROUP_MEMBER: &str = r#"
import os, sys
from kafka import KafkaConsumer
from kafka.errors import KafkaError
bootstrap, topic, group, stop_file = sys.argv[1:5]
session_ms, client_id, limit = int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap.split(","), group_id=group,
                         client_id=client_id, enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=session_ms,
                         heartbeat_interval_ms=max(100, session_ms // 6), max_poll_records=20)
processed = 0
while not os.path.exists(stop_file) and (limit == 0 or processed < limit):
    try:
        batch = consumer.poll(timeout_ms=200)
    except KafkaError:
        continue  # a broker died under it: the next poll finds the new one
    for tp, records in batch.items():
        for record in records:
            print(tp.partition, record.offset, record.value.decode(), flush=True)
            processed += 1
    if batch:
        try:
            consumer.commit()
        except KafkaError:
            pass  # a rebalance took the partitions: their next owner reads them again
consumer.close()
"#;

/// Session timeout of the kafka-python members.
const MEMBER_SESSION_MS: u64 = 3_000;

/// One kafka-python group member process and what it printed.
struct PythonMember {
    child: std::process::Child,
    lines: std::thread::JoinHandle<Vec<String>>,
}

impl PythonMember {
    fn start(
        bootstrap: &str,
        topic: &str,
        group: &str,
        stop_file: &Path,
        name: &str,
        limit: usize,
    ) -> PythonMember {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(KAFKA_PYTHON_GROUP_MEMBER)
            .args([bootstrap, topic, group])
            .arg(stop_file)
            .args([&MEMBER_SESSION_MS.to_string(), name, &limit.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3");
        let stdout = child.stdout.take().expect("piped stdout");
        // Read as it comes: a member can print more than a pipe holds.
        let lines = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect()
        });
        PythonMember { child, lines }
    }

    /// Waits for the member to leave on its own; the records it processed.
    fn finish(mut self) -> Vec<(i32, i64)> {
        let status = wait_for(Duration::from_secs(30), "a member to leave", || {
            self.child.try_wait().expect("wait")
        });
        assert!(status.success(), "kafka-python member failed: {status}");
        parse_processed(self.lines.join().expect("reader"))
    }

    /// kill -9; the records it processed until then.
    fn kill9(mut self) -> Vec<(i32, i64)> {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
        parse_processed(self.lines.join().expect("reader"))
    }
}

fn parse_processed(lines: Vec<String>) -> Vec<(i32, i64)> {
    lines
        .iter()
        .map(|line| {
            let mut fields = line.split(' ');
            let mut next = || fields.next().and_then(|field| field.parse().ok());
            let partition = next().unwrap_or_else(|| panic!("bad line {line:?}"));
            let offset = next().unwrap_or_else(|| panic!("bad line {line:?}"));
            (partition as i32, offset)
        })
        .collect()
}

/// Produces `count` records to each of `partitions` partitions of `topic`
/// with acks=all through the Strata client; the (partition, offset) of each.
fn produce_each(bootstrap: &str, topic: &str, partitions: i32, count: usize) -> Vec<(i32, i64)> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(produce_each_async(bootstrap, topic, partitions, count))
}

async fn produce_each_async(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: usize,
) -> Vec<(i32, i64)> {
    let producer = Producer::builder(bootstrap)
        .acks(Acks::All)
        .build()
        .await
        .expect("producer");
    let mut deliveries = Vec::new();
    for partition in 0..partitions {
        for index in 0..count {
            let value = format!("{topic}-{partition}-{index}");
            let record = ProducerRecord::new(topic)
                .partition(partition)
                .value(value.as_bytes());
            deliveries.push(producer.send(record).await.expect("send"));
        }
    }
    let mut acknowledged = Vec::new();
    for delivery in deliveries {
        let metadata = delivery.await.expect("acknowledged");
        acknowledged.push((metadata.partition, metadata.offset.expect("acks=all")));
    }
    producer.close().await.expect("close");
    acknowledged
}

/// The coordinator of `group` as any running broker names it.
fn coordinator_of(cluster: &mut Cluster, group: &str) -> i32 {
    wait_for(Duration::from_secs(20), "a coordinator", || {
        (1..=3).find_map(|id| {
            let node = cluster.node(id);
            if !node.is_running() {
                return None;
            }
            let mut connection = Connection::open(node.address).ok()?;
            find_coordinator(&mut connection, group).ok()
        })
    })
}

/// Waits until `group` is Stable with `member_count` members whose
/// assignments are disjoint, each non-empty, and together cover
/// `0..partitions`; returns the group as described then.
fn wait_for_shared(
    cluster: &mut Cluster,
    group: &str,
    member_count: usize,
    partitions: i32,
    timeout: Duration,
) -> Described {
    wait_for(timeout, "the group to share the partitions", || {
        let coordinator = coordinator_of(cluster, group);
        let mut connection = Connection::open(cluster.node(coordinator).address).ok()?;
        let described = describe(&mut connection, group);
        let mut assigned: Vec<i32> = described
            .members
            .iter()
            .flat_map(|(_, _, partitions)| partitions.iter().copied())
            .collect();
        assigned.sort_unstable();
        let shared = described.state == "Stable"
            && described.members.len() == member_count
            && described
                .members
                .iter()
                .all(|(_, _, partitions)| !partitions.is_empty())
            && assigned == (0..partitions).collect::<Vec<_>>();
        shared.then_some(described)
    })
}

/// Waits until `group`'s committed offsets of `topic` are `ends`.
fn wait_for_committed(cluster: &mut Cluster, group: &str, topic: &str, ends: &[i64]) {
    let partitions: Vec<i32> = (0..ends.len() as i32).collect();
    wait_for(
        Duration::from_secs(30),
        "the group to commit every record",
        || {
            let coordinator = coordinator_of(cluster, group);
            let mut connection = Connection::open(cluster.node(coordinator).address).ok()?;
            let committed = committed(&mut connection, group, topic, &partitions).ok()?;
            (committed == ends).then_some(())
        },
    );
}

/// Every acknowledged record is among the processed ones.
fn assert_processed_all(acknowledged: &[(i32, i64)], processed: &BTreeSet<(i32, i64)>) {
    let missed: Vec<_> = acknowledged
        .iter()
        .filter(|record| !processed.contains(record))
        .collect();
    assert!(
        missed.is_empty(),
        "{} acknowledged records were never processed, e.g. {:?}",
        missed.len(),
        &missed[..missed.len().min(10)]
    );
}

#[test]
fn kafka_python_members_share_partitions_survive_the_coordinator_and_resume() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    let (topic, group, partitions) = ("clicks", "click-counters", 6);
    create_replicated_topic(cluster.node(1), topic, partitions, 3);
    let bootstrap = cluster.bootstrap();
    let mut acknowledged = produce_each(&bootstrap, topic, partitions, 50);
    let dir = tempfile::tempdir().expect("temp dir");
    let stop_file = dir.path().join("stop");
    let members: Vec<PythonMember> = ["member-a", "member-b"]
        .iter()
        .map(|name| PythonMember::start(&bootstrap, topic, group, &stop_file, name, 0))
        .collect();

    let described = wait_for_shared(&mut cluster, group, 2, partitions, Duration::from_secs(30));
    assert_eq!(described.protocol_type, "consumer");
    wait_for_committed(&mut cluster, group, topic, &[50; 6]);

    // The coordinator dies: the group moves with its partition's leadership
    // and goes on committing where it was.
    let coordinator = coordinator_of(&mut cluster, group);
    cluster.node(coordinator).kill9();
    let started = Instant::now();
    acknowledged.extend(produce_each(&bootstrap, topic, partitions, 20));
    wait_for_committed(&mut cluster, group, topic, &[70; 6]);
    let successor = coordinator_of(&mut cluster, group);
    assert_ne!(successor, coordinator);
    wait_for_shared(&mut cluster, group, 2, partitions, Duration::from_secs(30));
    eprintln!(
        "coordinator {coordinator} killed; broker {successor} took the group over, every record committed {:.2} s later",
        started.elapsed().as_secs_f64()
    );

    std::fs::write(&stop_file, b"").expect("stop file");
    let processed: BTreeSet<(i32, i64)> =
        members.into_iter().flat_map(PythonMember::finish).collect();
    assert_processed_all(&acknowledged, &processed);
    cluster.node(coordinator).restart();

    // A restarted member resumes from the committed offsets: it sees only
    // what was produced after.
    let later = produce_each(&bootstrap, topic, partitions, 10);
    std::fs::remove_file(&stop_file).expect("remove stop file");
    let resumed = PythonMember::start(
        &bootstrap,
        topic,
        group,
        &stop_file,
        "member-c",
        later.len(),
    )
    .finish();
    let mut resumed_sorted = resumed.clone();
    resumed_sorted.sort_unstable();
    let mut later_sorted = later.clone();
    later_sorted.sort_unstable();
    assert_eq!(
        resumed_sorted, later_sorted,
        "exactly the records after the committed offsets"
    );
    assert!(later.iter().all(|&(_, offset)| offset >= 70));
}

#[test]
fn a_member_killed_mid_batch_has_its_partitions_taken_over_and_nothing_is_skipped() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    let (topic, group, partitions) = ("payments", "payment-checkers", 6);
    create_replicated_topic(cluster.node(1), topic, partitions, 3);
    let bootstrap = cluster.bootstrap();
    let dir = tempfile::tempdir().expect("temp dir");
    let stop_file = dir.path().join("stop");
    let mut members: Vec<PythonMember> = ["member-a", "member-b", "member-c"]
        .iter()
        .map(|name| PythonMember::start(&bootstrap, topic, group, &stop_file, name, 0))
        .collect();
    wait_for_shared(&mut cluster, group, 3, partitions, Duration::from_secs(30));

    // Records arrive while a member dies mid-stream.
    let mut acknowledged = produce_each(&bootstrap, topic, partitions, 200);
    let victim = members.remove(0);
    let killed = Instant::now();
    let victim_processed = victim.kill9();
    acknowledged.extend(produce_each(&bootstrap, topic, partitions, 100));
    wait_for_shared(&mut cluster, group, 2, partitions, Duration::from_secs(20));
    let moved_s = killed.elapsed().as_secs_f64();
    eprintln!(
        "member killed after processing {} records; its partitions moved {moved_s:.2} s later (session timeout {:.1} s)",
        victim_processed.len(),
        MEMBER_SESSION_MS as f64 / 1000.0
    );
    assert!(
        moved_s < 2.0 * MEMBER_SESSION_MS as f64 / 1000.0,
        "partitions moved within twice the session timeout"
    );
    wait_for_committed(&mut cluster, group, topic, &[300; 6]);

    std::fs::write(&stop_file, b"").expect("stop file");
    let processed: BTreeSet<(i32, i64)> = members
        .into_iter()
        .flat_map(PythonMember::finish)
        .chain(victim_processed)
        .collect();
    assert_processed_all(&acknowledged, &processed);
}

/// Who owns which partition, as the members' rebalance callbacks say; a
/// partition assigned while another member still owns it is a violation.
#[derive(Debug, Default)]
struct Ownership {
    owner: BTreeMap<i32, String>,
    violations: Vec<String>,
    /// Partitions each member handed back, in order.
    revoked: BTreeMap<String, Vec<i32>>,
}

impl Ownership {
    fn apply(&mut self, member: &str, event: &Rebalance) {
        match event {
            Rebalance::Assigned(partitions) => {
                for (_, partition) in partitions {
                    if let Some(other) = self.owner.insert(*partition, member.to_string()) {
                        self.violations
                            .push(format!("{member} got {partition} while {other} owned it"));
                    }
                }
            }
            Rebalance::Revoked(partitions) | Rebalance::Lost(partitions) => {
                for (_, partition) in partitions {
                    if self.owner.remove(partition).as_deref() != Some(member) {
                        self.violations.push(format!(
                            "{member} gave up {partition}, which it did not own"
                        ));
                    }
                    if matches!(event, Rebalance::Revoked(_)) {
                        self.revoked
                            .entry(member.to_string())
                            .or_default()
                            .push(*partition);
                    }
                }
            }
        }
    }

    /// Every one of `partitions` partitions owned, by `members` members
    /// holding as many as balance allows each.
    fn is_shared(&self, partitions: i32, members: usize) -> bool {
        let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
        for owner in self.owner.values() {
            *counts.entry(owner).or_default() += 1;
        }
        let low = partitions as usize / members;
        let high = (partitions as usize).div_ceil(members);
        self.owner.len() == partitions as usize
            && counts.len() == members
            && counts.values().all(|&count| count == low || count == high)
    }
}

/// A Strata group consumer run as a task until `stop`: records what it
/// processed and reports its rebalances to `ownership`.
async fn strata_member(
    bootstrap: String,
    topic: &'static str,
    group: &'static str,
    name: String,
    ownership: Arc<Mutex<Ownership>>,
    processed: Arc<Mutex<BTreeSet<(i32, i64)>>>,
    stop: Arc<AtomicBool>,
) {
    let mut consumer = Consumer::builder(&bootstrap)
        .client_id(&name)
        .group_id(group)
        .session_timeout(Duration::from_millis(STRATA_SESSION_MS))
        .heartbeat_interval(Duration::from_millis(STRATA_SESSION_MS / 10))
        .offset_reset(OffsetReset::Earliest)
        .auto_commit(Some(Duration::from_millis(200)))
        .build()
        .await
        .expect("consumer");
    let member = name.clone();
    consumer.on_rebalance(move |event| ownership.lock().unwrap().apply(&member, event));
    consumer.subscribe(&[topic]).expect("subscribe");
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)).await {
            Ok(records) => {
                let mut processed = processed.lock().unwrap();
                processed.extend(
                    records
                        .iter()
                        .map(|record| (record.partition, record.offset)),
                );
            }
            Err(error) => eprintln!("{name}: poll failed: {error}"),
        }
    }
    consumer.close().await.expect("leave the group");
}

const STRATA_SESSION_MS: u64 = 3_000;

struct StrataMembers {
    bootstrap: String,
    ownership: Arc<Mutex<Ownership>>,
    processed: Arc<Mutex<BTreeSet<(i32, i64)>>>,
    members: Vec<(String, Arc<AtomicBool>, tokio::task::JoinHandle<()>)>,
}

impl StrataMembers {
    fn new(bootstrap: String) -> StrataMembers {
        StrataMembers {
            bootstrap,
            ownership: Arc::default(),
            processed: Arc::default(),
            members: Vec::new(),
        }
    }

    fn start(&mut self, topic: &'static str, group: &'static str, name: &str) {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(strata_member(
            self.bootstrap.clone(),
            topic,
            group,
            name.to_string(),
            Arc::clone(&self.ownership),
            Arc::clone(&self.processed),
            Arc::clone(&stop),
        ));
        self.members.push((name.to_string(), stop, task));
    }

    /// The member leaves the group (LeaveGroup) and its task ends.
    async fn stop(&mut self, name: &str) {
        let index = self
            .members
            .iter()
            .position(|(member, _, _)| member == name)
            .expect("a member");
        let (_, stop, task) = self.members.remove(index);
        stop.store(true, Ordering::Release);
        task.await.expect("member task");
    }

    /// Waits until `partitions` are shared by `members`; the time it took.
    async fn wait_shared(&self, partitions: i32, members: usize, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            {
                let ownership = self.ownership.lock().unwrap();
                assert!(
                    ownership.violations.is_empty(),
                    "{:?}",
                    ownership.violations
                );
                if ownership.is_shared(partitions, members) {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < timeout,
                    "{partitions} partitions not shared by {members} members after {timeout:?}: {:?}",
                    ownership.owner
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[test]
fn strata_consumers_share_partitions_and_rebalance_cooperatively() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    let (topic, group, partitions) = ("shipments", "shipment-trackers", 12);
    create_replicated_topic(cluster.node(1), topic, partitions, 3);
    let bootstrap = cluster.bootstrap();
    let mut acknowledged = produce_each(&bootstrap, topic, partitions, 100);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut members = StrataMembers::new(bootstrap.clone());
        for name in ["tracker-1", "tracker-2", "tracker-3"] {
            members.start(topic, group, name);
        }
        let first = members
            .wait_shared(partitions, 3, Duration::from_secs(30))
            .await;
        eprintln!(
            "3 members share 12 partitions {:.2} s after starting",
            first.as_secs_f64()
        );

        // A fourth joins: each of the three hands over one partition and
        // keeps consuming the other three.
        members.start(topic, group, "tracker-4");
        let joined = members
            .wait_shared(partitions, 4, Duration::from_secs(30))
            .await;
        {
            let ownership = members.ownership.lock().unwrap();
            let revoked: usize = ownership.revoked.values().map(Vec::len).sum();
            assert_eq!(
                revoked, 3,
                "only the newcomer's share moved: {:?}",
                ownership.revoked
            );
        }
        eprintln!(
            "a 4th member got its share {:.2} s after starting",
            joined.as_secs_f64()
        );

        // One leaves: only its partitions move.
        let before: BTreeMap<i32, String> = members.ownership.lock().unwrap().owner.clone();
        let left_at = Instant::now();
        members.stop("tracker-2").await;
        members
            .wait_shared(partitions, 3, Duration::from_secs(30))
            .await;
        eprintln!(
            "tracker-2 left; its partitions moved {:.2} s later",
            left_at.elapsed().as_secs_f64()
        );
        let after = members.ownership.lock().unwrap().owner.clone();
        for (partition, owner) in &before {
            if owner != "tracker-2" {
                assert_eq!(
                    after.get(partition),
                    Some(owner),
                    "partition {partition} stayed with {owner}"
                );
            }
        }

        acknowledged.extend(produce_each_async(&bootstrap, topic, partitions, 50).await);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !acknowledged
            .iter()
            .all(|record| members.processed.lock().unwrap().contains(record))
        {
            assert!(Instant::now() < deadline, "records not processed in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for name in ["tracker-1", "tracker-3", "tracker-4"] {
            members.stop(name).await;
        }
        assert_processed_all(&acknowledged, &members.processed.lock().unwrap());
    });
}

#[test]
fn a_member_leaving_a_group_of_ten_moves_only_its_partitions() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    let (topic, group, partitions) = ("sensors", "sensor-readers", 100);
    create_replicated_topic(cluster.node(1), topic, partitions, 1);
    let bootstrap = cluster.bootstrap();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut members = StrataMembers::new(bootstrap.clone());
        for index in 0..10 {
            members.start(topic, group, &format!("reader-{index}"));
        }
        let formed = members.wait_shared(partitions, 10, Duration::from_secs(60)).await;
        let before: BTreeMap<i32, String> = members.ownership.lock().unwrap().owner.clone();
        let left_at = Instant::now();
        members.stop("reader-4").await;
        members.wait_shared(partitions, 9, Duration::from_secs(30)).await;
        let stable = left_at.elapsed();
        let after = members.ownership.lock().unwrap().owner.clone();
        let moved = before
            .iter()
            .filter(|(partition, owner)| after.get(partition) != Some(owner))
            .count();
        eprintln!(
            "10 members on 100 partitions formed in {:.2} s; after one left, {moved} partitions moved and the group was stable {:.2} s later (session {:.1} s)",
            formed.as_secs_f64(),
            stable.as_secs_f64(),
            STRATA_SESSION_MS as f64 / 1000.0
        );
        assert_eq!(moved, 10, "only the leaver's partitions moved");
        assert!(
            stable < Duration::from_millis(2 * STRATA_SESSION_MS),
            "stable again within twice the session timeout"
        );
        for index in (0..10).filter(|&index| index != 4) {
            members.stop(&format!("reader-{index}")).await;
        }
    });
}

/// Each member's partitions, as its rebalance listener reports them.
type Owned = Arc<Mutex<BTreeMap<String, BTreeSet<i32>>>>;

fn track(owned: &Owned, member: &str, event: &Rebalance) {
    let mut owned = owned.lock().unwrap();
    let mine = owned.entry(member.to_string()).or_default();
    match event {
        Rebalance::Assigned(partitions) => mine.extend(partitions.iter().map(|(_, p)| *p)),
        Rebalance::Revoked(partitions) | Rebalance::Lost(partitions) => {
            for (_, partition) in partitions {
                mine.remove(partition);
            }
        }
    }
}

fn owned_by(owned: &Owned, member: &str) -> BTreeSet<i32> {
    owned
        .lock()
        .unwrap()
        .get(member)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_member_that_stops_polling_leaves_and_rejoins_when_it_polls_again() {
    // KIP-62: heartbeats come from a task of their own, so only a consumer
    // that stops polling for max.poll.interval (rebalance_timeout) is taken
    // to be stuck; it leaves, and its partitions move to one that consumes.
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    let (topic, group, partitions) = ("stuck-orders", "stuck-processors", 4);
    create_replicated_topic(cluster.node(1), topic, partitions, 3);
    let bootstrap = cluster.bootstrap();
    let poll_interval_max = Duration::from_secs(2);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let owned: Owned = Arc::default();
        let processed: Arc<Mutex<BTreeSet<(i32, i64)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let steady = {
            let mut consumer = Consumer::builder(&bootstrap)
                .client_id("steady")
                .group_id(group)
                .session_timeout(Duration::from_millis(STRATA_SESSION_MS))
                .heartbeat_interval(Duration::from_millis(STRATA_SESSION_MS / 10))
                .offset_reset(OffsetReset::Earliest)
                .build()
                .await
                .expect("consumer");
            let owned = Arc::clone(&owned);
            consumer.on_rebalance(move |event| track(&owned, "steady", event));
            consumer.subscribe(&[topic]).expect("subscribe");
            let (processed, stop) = (Arc::clone(&processed), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    let records = consumer.poll(Duration::from_millis(100)).await;
                    let records = records.expect("steady member polls");
                    processed
                        .lock()
                        .unwrap()
                        .extend(records.iter().map(|r| (r.partition, r.offset)));
                }
                consumer.close().await.expect("leave the group");
            })
        };
        let mut stuck = Consumer::builder(&bootstrap)
            .client_id("stuck")
            .group_id(group)
            .session_timeout(Duration::from_millis(STRATA_SESSION_MS))
            .heartbeat_interval(Duration::from_millis(STRATA_SESSION_MS / 10))
            .rebalance_timeout(poll_interval_max)
            .offset_reset(OffsetReset::Earliest)
            .build()
            .await
            .expect("consumer");
        let lost: Arc<Mutex<Vec<i32>>> = Arc::default();
        {
            let (owned, lost) = (Arc::clone(&owned), Arc::clone(&lost));
            stuck.on_rebalance(move |event| {
                if let Rebalance::Lost(partitions) = event {
                    lost.lock().unwrap().extend(partitions.iter().map(|(_, p)| *p));
                }
                track(&owned, "stuck", event)
            });
        }
        stuck.subscribe(&[topic]).expect("subscribe");

        let shared = || {
            let (mine, theirs) = (owned_by(&owned, "stuck"), owned_by(&owned, "steady"));
            mine.len() == 2 && theirs.len() == 2 && mine.is_disjoint(&theirs)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !shared() {
            assert!(Instant::now() < deadline, "not shared: {:?}", owned.lock().unwrap());
            stuck.poll(Duration::from_millis(100)).await.expect("poll");
        }
        let stuck_partitions = owned_by(&owned, "stuck");

        // Stuck in processing: no poll from here on.
        let stuck_at = Instant::now();
        while owned_by(&owned, "steady").len() < partitions as usize {
            assert!(
                stuck_at.elapsed() < Duration::from_secs(20),
                "the stuck member's partitions did not move: {:?}",
                owned.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let moved_after = stuck_at.elapsed();
        eprintln!(
            "a member that stopped polling lost its partitions to the other {:.2} s later (max poll interval {poll_interval_max:?})",
            moved_after.as_secs_f64()
        );
        assert!(
            moved_after >= poll_interval_max,
            "its partitions moved before the maximum poll interval was up: {moved_after:?}"
        );
        // What is produced now reaches the steady member, on every partition.
        let acknowledged = produce_each_async(&bootstrap, topic, partitions, 20).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !acknowledged
            .iter()
            .all(|record| processed.lock().unwrap().contains(record))
        {
            assert!(Instant::now() < deadline, "records not processed in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Back to polling: its partitions are reported lost, and it rejoins.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !shared() {
            assert!(Instant::now() < deadline, "not shared again: {:?}", owned.lock().unwrap());
            stuck.poll(Duration::from_millis(100)).await.expect("poll");
        }
        assert_eq!(
            lost.lock().unwrap().iter().copied().collect::<BTreeSet<_>>(),
            stuck_partitions,
            "the next poll reports the partitions it had as lost"
        );
        stuck.close().await.expect("leave the group");
        stop.store(true, Ordering::Release);
        steady.await.expect("steady member");
    });
}

/// A member of a consumer-protocol group as the test drives it.
struct Kip848Member {
    id: String,
    epoch: i32,
    owned: Vec<(Uuid, Vec<i32>)>,
}

impl Kip848Member {
    fn partitions(&self) -> BTreeSet<i32> {
        self.owned
            .iter()
            .flat_map(|(_, partitions)| partitions.iter().copied())
            .collect()
    }
}

/// One ConsumerGroupHeartbeat v1 of `member` (epoch 0: it joins, with a
/// subscription to `topic`); applies the answer to it and returns the error
/// code.
fn consumer_heartbeat(
    connection: &mut Connection,
    group: &str,
    topic: &str,
    member: &mut Kip848Member,
) -> i16 {
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    let joining = member.epoch == 0;
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group_id(group))
        .with_member_id(StrBytes::from_string(member.id.clone()))
        .with_member_epoch(member.epoch)
        .with_rebalance_timeout_ms(if joining { 30_000 } else { -1 })
        .with_subscribed_topic_names(joining.then(|| vec![topic_name(topic)]))
        .with_topic_partitions(Some(
            member
                .owned
                .iter()
                .map(|(topic_id, partitions)| {
                    TopicPartitions::default()
                        .with_topic_id(*topic_id)
                        .with_partitions(partitions.clone())
                })
                .collect(),
        ));
    let Ok(ResponseKind::ConsumerGroupHeartbeat(response)) = connection.send(
        ApiKey::ConsumerGroupHeartbeat,
        1,
        &RequestKind::ConsumerGroupHeartbeat(request),
    ) else {
        return -1;
    };
    if response.error_code == 0 {
        member.epoch = response.member_epoch;
        if let Some(assignment) = response.assignment {
            member.owned = assignment
                .topic_partitions
                .into_iter()
                .map(|topic| (topic.topic_id, topic.partitions))
                .collect();
        }
    }
    response.error_code
}

fn consumer_group_describe(
    connection: &mut Connection,
    group: &str,
) -> Option<(String, i32, usize)> {
    let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]);
    let Ok(ResponseKind::ConsumerGroupDescribe(response)) = connection.send(
        ApiKey::ConsumerGroupDescribe,
        0,
        &RequestKind::ConsumerGroupDescribe(request),
    ) else {
        return None;
    };
    let group = &response.groups[0];
    (group.error_code == 0).then(|| {
        (
            group.group_state.to_string(),
            group.group_epoch,
            group.members.len(),
        )
    })
}

#[test]
fn a_consumer_protocol_group_keeps_its_members_and_epochs_across_the_coordinators_kill() {
    let _serial = one_cluster_at_a_time();
    // Coordinators move only when the test kills one.
    let mut cluster = Cluster::start_with_args(3, &["--auto-leader-rebalance", "false"]);
    create_replicated_topic(cluster.node(1), "orders", 4, 3);
    let group = "kip848";
    let mut coordinator = coordinator_of(&mut cluster, group);
    let mut connection = cluster.node(coordinator).connect();
    let mut members: Vec<Kip848Member> = ["m1", "m2"]
        .iter()
        .map(|id| Kip848Member {
            id: id.to_string(),
            epoch: 0,
            owned: Vec::new(),
        })
        .collect();
    // Heartbeat both until they share the partitions, each in the group's
    // epoch: the second gets partitions only as the first lets go.
    let settled = |members: &[Kip848Member]| {
        let (a, b) = (members[0].partitions(), members[1].partitions());
        members[0].epoch == members[1].epoch && a.len() == 2 && b.len() == 2 && a.is_disjoint(&b)
    };
    wait_for(
        Duration::from_secs(20),
        "two members sharing four partitions",
        || {
            for member in members.iter_mut() {
                let code = consumer_heartbeat(&mut connection, group, "orders", member);
                assert!(
                    code == 0 || code == 14 || code == 15 || code == 16 || code == -1,
                    "heartbeat: {code}"
                );
                if code != 0 {
                    // The offsets topic's leaders are still settling.
                    coordinator = coordinator_of(&mut cluster, group);
                    connection = cluster.node(coordinator).connect();
                }
            }
            settled(&members).then_some(())
        },
    );
    let epoch = members[0].epoch;
    assert_eq!(
        consumer_group_describe(&mut connection, group),
        Some(("Stable".to_string(), epoch, 2))
    );
    // Commits in the member's epoch only.
    let partition = *members[0].partitions().first().unwrap();
    assert_eq!(
        commit_as(
            &mut connection,
            group,
            ("m1", epoch),
            "orders",
            &[(partition, 5)]
        ),
        [0]
    );
    assert_eq!(
        commit_as(
            &mut connection,
            group,
            ("m1", epoch - 1),
            "orders",
            &[(partition, 6)]
        ),
        [113],
        "STALE_MEMBER_EPOCH"
    );
    assert_eq!(
        commit_as(
            &mut connection,
            group,
            ("", -1),
            "orders",
            &[(partition, 6)]
        ),
        [25],
        "UNKNOWN_MEMBER_ID"
    );

    cluster.node(coordinator).kill9();
    let successor = wait_for(Duration::from_secs(20), "a new coordinator", || {
        Some(coordinator_of(&mut cluster, group)).filter(|&id| id != coordinator)
    });
    let mut at_successor = cluster.node(successor).connect();
    // The successor knows both members in their epochs: no one rejoins,
    // nothing moves.
    let before: Vec<BTreeSet<i32>> = members.iter().map(Kip848Member::partitions).collect();
    wait_for(
        Duration::from_secs(20),
        "the successor to take heartbeats",
        || {
            let code = consumer_heartbeat(&mut at_successor, group, "orders", &mut members[0]);
            assert!(
                code == 0 || code == 14 || code == 15 || code == 16 || code == -1,
                "heartbeat after failover: {code}"
            );
            if code != 0 {
                let successor = coordinator_of(&mut cluster, group);
                at_successor = cluster.node(successor).connect();
            }
            (code == 0).then_some(())
        },
    );
    assert_eq!(
        consumer_heartbeat(&mut at_successor, group, "orders", &mut members[1]),
        0
    );
    assert_eq!(members[0].epoch, epoch);
    assert_eq!(members[1].epoch, epoch);
    let after: Vec<BTreeSet<i32>> = members.iter().map(Kip848Member::partitions).collect();
    assert_eq!(before, after);
    assert_eq!(
        consumer_group_describe(&mut at_successor, group),
        Some(("Stable".to_string(), epoch, 2))
    );
    assert_eq!(
        committed(&mut at_successor, group, "orders", &[partition]),
        Ok(vec![5])
    );
    // A zombie in an old epoch is fenced.
    let mut zombie = Kip848Member {
        id: "m1".into(),
        epoch: epoch + 7,
        owned: Vec::new(),
    };
    assert_eq!(
        consumer_heartbeat(&mut at_successor, group, "orders", &mut zombie),
        110,
        "FENCED_MEMBER_EPOCH"
    );
}
