//! A Kafka user's first day: the mainstream clients, each on its default
//! settings, against a 3-node cluster, every admin verb Strata serves. Any
//! error a client reports fails the test.
//!
//! The cluster creates topics a client asks for (`auto.create.topics.enable`)
//! with 3 partitions and 2 replicas, so that path is covered too.

use std::process::Command;

use strata_tests::{kcat_listing, python, Cluster};

const KAFKA_PYTHON: &str = r#"
import sys, time
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic, NewPartitions, ConfigResource, ConfigResourceType
from kafka.structs import OffsetAndMetadata

bootstrap = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic("py-orders", num_partitions=3, replication_factor=3)])

# The default producer: idempotent with acks=all since kafka-python 3.
producer = KafkaProducer(bootstrap_servers=bootstrap)
sent = [producer.send("py-orders", key=b"key-%d" % i, value=b"value-%d" % i) for i in range(300)]
producer.flush()
assert all(future.get(timeout=10).offset >= 0 for future in sent)
# A topic nobody created: the broker creates it with its defaults.
producer.send("py-auto", value=b"first").get(timeout=30)
producer.close()

described = {t["name"]: t for t in admin.describe_topics(["py-orders", "py-auto"])}
auto = described["py-auto"]["partitions"]
assert len(auto) == 3 and all(len(p["replica_nodes"]) == 2 for p in auto), auto
assert set(admin.list_topics()) >= {"py-orders", "py-auto"}

consumer = KafkaConsumer("py-orders", bootstrap_servers=bootstrap, group_id="py-group",
                         auto_offset_reset="earliest", consumer_timeout_ms=10000)
values = set()
for message in consumer:
    values.add(message.value)
    if len(values) == 300:
        break
consumer.commit()
consumer.close()
assert len(values) == 300, len(values)

cluster = admin.describe_cluster()
assert len(cluster["brokers"]) == 3, cluster

resource = ConfigResource(ConfigResourceType.TOPIC, "py-orders", configs={"retention.ms": "600000"})
admin.alter_configs([resource])
configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py-orders")])
assert configs["topic"]["py-orders"]["retention.ms"]["value"] == "600000", configs

admin.create_partitions({"py-orders": NewPartitions(4)})
assert len(admin.describe_topics(["py-orders"])[0]["partitions"]) == 4

groups = admin.list_groups()
assert any(group["group_id"] == "py-group" for group in groups), groups
assert admin.describe_groups(["py-group"])["py-group"]["group_state"] == "Empty"
offsets = admin.list_group_offsets("py-group")["py-group"]
assert sum(meta.offset for meta in offsets.values()) == 300, offsets
admin.alter_group_offsets("py-group", {TopicPartition("py-orders", 0): OffsetAndMetadata(0, "", -1)})
assert admin.list_group_offsets("py-group")["py-group"][TopicPartition("py-orders", 0)].offset == 0

ends = admin.list_partition_offsets({TopicPartition("py-orders", p): -1 for p in range(3)})
assert sum(end.offset for end in ends.values()) == 300, ends

log_dirs = admin.describe_log_dirs()
sizes = [partition["partition_size"]
         for broker in log_dirs for log_dir in broker["log_dirs"]
         for topic in log_dir["topics"] if topic["name"] == "py-orders"
         for partition in topic["partitions"]]
assert len(sizes) == 12 and sum(sizes) > 0, log_dirs  # 4 partitions x 3 replicas

admin.elect_leaders(0, {"py-orders": [0, 1, 2]})

start = ends[TopicPartition("py-orders", 0)].offset // 2
admin.delete_records({TopicPartition("py-orders", 0): start})
earliest = admin.list_partition_offsets({TopicPartition("py-orders", 0): -2})
assert earliest[TopicPartition("py-orders", 0)].offset == start, earliest

producers = admin.describe_producers([TopicPartition("py-orders", p) for p in range(3)])
assert any(state.active_producers for state in producers.values()), producers

# Shrink partition 2 to two replicas: in sync already, so done at once.
shrunk = admin.alter_partition_reassignments({TopicPartition("py-orders", 2): [2, 3]})
assert shrunk[TopicPartition("py-orders", 2)] is None, shrunk
assert not admin.list_partition_reassignments(), admin.list_partition_reassignments()
replicas = admin.describe_topics(["py-orders"])[0]["partitions"]
assert sorted(p["replica_nodes"] for p in replicas if p["partition_index"] == 2) == [[2, 3]], replicas

quorum = admin.describe_metadata_quorum()
assert quorum["topics"][0]["partitions"][0]["leader_id"] in (1, 2, 3), quorum
assert len(quorum["nodes"]) == 3, quorum

admin.delete_group_offsets("py-group", [TopicPartition("py-orders", 1)])
assert TopicPartition("py-orders", 1) not in admin.list_group_offsets("py-group")["py-group"]

admin.delete_groups(["py-group"])
admin.delete_topics(["py-orders", "py-auto"])
print("ok")
"#;

const CONFLUENT_KAFKA: &str = r#"
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition, ElectionType, KafkaException
from confluent_kafka.admin import (AdminClient, NewTopic, NewPartitions, ConfigResource, ResourceType,
                                   ConfigEntry, AlterConfigOpType, OffsetSpec)

bootstrap = sys.argv[1]
errors = []
def on_error(error):
    errors.append(error)
config = {"bootstrap.servers": bootstrap, "error_cb": on_error}
admin = AdminClient(config)

def done(futures):
    return {key: future.result() for key, future in futures.items()}

done(admin.create_topics([NewTopic("rd-orders", 3, 3), NewTopic("rd-audit", 1, 2)]))
# Every topic (librdkafka's all-topics Metadata request).
topics = admin.list_topics(timeout=10).topics
assert {"rd-orders", "rd-audit", "__consumer_offsets"} <= set(topics), topics

producer = Producer(dict(config, **{"enable.idempotence": True}))
delivered = []
for i in range(300):
    producer.produce("rd-orders", key=b"key-%d" % i, value=b"value-%d" % i,
                     on_delivery=lambda error, message: delivered.append(error))
    producer.produce("rd-audit", value=b"audit-%d" % i,
                     on_delivery=lambda error, message: delivered.append(error))
assert producer.flush(30) == 0
assert len(delivered) == 600 and not any(delivered), delivered[:3]

# A regex subscription finds both topics.
consumer = Consumer(dict(config, **{"group.id": "rd-group", "auto.offset.reset": "earliest"}))
consumer.subscribe(["^rd-.*"])
seen = 0
deadline = time.time() + 30
while seen < 600 and time.time() < deadline:
    message = consumer.poll(0.5)
    if message is not None:
        assert not message.error(), message.error()
        seen += 1
consumer.commit(asynchronous=False)
consumer.close()
assert seen == 600, seen

# KIP-848: two group.protocol=consumer members share a topic, then one
# leaves and the other takes its partitions back; every record is read.
done(admin.create_topics([NewTopic("rd-shared", 6, 3)]))
for i in range(600):
    producer.produce("rd-shared", key=b"k%d" % i, value=b"v%d" % i)
assert producer.flush(30) == 0
read = set()
def member():
    consumer = Consumer(dict(config, **{"group.id": "rd-848", "group.protocol": "consumer",
                                       "auto.offset.reset": "earliest"}))
    consumer.subscribe(["rd-shared"])
    return consumer
def poll(consumers, until):
    deadline = time.time() + 40
    while not until():
        assert time.time() < deadline, [c.assignment() for c in consumers]
        for consumer in consumers:
            message = consumer.poll(0.1)
            if message is not None:
                assert not message.error(), message.error()
                read.add((message.partition(), message.offset()))
owned = lambda consumer: {tp.partition for tp in consumer.assignment()}
first = member()
poll([first], lambda: owned(first) == set(range(6)))
second = member()
poll([first, second], lambda: owned(first) and owned(second)
     and not owned(first) & owned(second) and owned(first) | owned(second) == set(range(6)))
poll([first, second], lambda: len(read) == 600)
described = admin.describe_consumer_groups(["rd-848"])["rd-848"].result()
assert len(described.members) == 2 and described.partition_assignor == "uniform", described
second.close()
poll([first], lambda: owned(first) == set(range(6)))
first.close()

resource = ConfigResource(ResourceType.TOPIC, "rd-orders", set_config={"retention.ms": "600000"})
done(admin.alter_configs([resource]))
incremental = ConfigResource(ResourceType.TOPIC, "rd-orders", incremental_configs=[
    ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)])
done(admin.incremental_alter_configs([incremental]))
described = list(done(admin.describe_configs([ConfigResource(ResourceType.TOPIC, "rd-orders")])).values())[0]
assert described["retention.ms"].value == "600000", described
assert described["segment.bytes"].value == "1048576", described

done(admin.create_partitions([NewPartitions("rd-orders", 4)]))
cluster = admin.describe_cluster().result()
assert len(cluster.nodes) == 3, cluster.nodes
topic = admin.describe_topics(__import__("confluent_kafka").TopicCollection(["rd-orders"]))["rd-orders"].result()
assert len(topic.partitions) == 4 and all(len(p.replicas) == 3 for p in topic.partitions[:3])

listed = admin.list_consumer_groups().result()
assert any(group.group_id == "rd-group" for group in listed.valid), listed.valid
group = admin.describe_consumer_groups(["rd-group"])["rd-group"].result()
assert group.group_id == "rd-group"
from confluent_kafka import ConsumerGroupTopicPartitions
committed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("rd-group")])["rd-group"].result()
assert sum(tp.offset for tp in committed.topic_partitions) == 600, committed.topic_partitions

ends = admin.list_offsets({TopicPartition("rd-orders", p): OffsetSpec.latest() for p in range(3)})
assert sum(future.result().offset for future in ends.values()) == 300

elected = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("rd-orders", 0)]).result()
for partition, error in elected.items():
    assert error is None or error.code() == 84, error  # ELECTION_NOT_NEEDED

deleted = admin.delete_records([TopicPartition("rd-audit", 0, 100)])
assert deleted[TopicPartition("rd-audit", 0, 100)].result().low_watermark == 100
earliest = admin.list_offsets({TopicPartition("rd-audit", 0): OffsetSpec.earliest()})
assert list(earliest.values())[0].result().offset == 100

done(admin.delete_consumer_groups(["rd-group", "rd-848"]))
done(admin.delete_topics(["rd-orders", "rd-audit", "rd-shared"]))
assert not errors, errors
print("ok")
"#;

#[test]
fn mainstream_clients_on_their_defaults_against_a_three_node_cluster() {
    let cluster = Cluster::start_with_args(
        3,
        &[
            "--auto-create-topics-enable",
            "true",
            "--num-partitions",
            "3",
            "--default-replication-factor",
            "2",
            // KIP-848 members learn of released partitions at their next
            // heartbeat; a second rather than five keeps the test short.
            "--group-consumer-heartbeat-interval-ms",
            "1000",
        ],
    );
    let bootstrap = cluster.bootstrap();

    let output = python(KAFKA_PYTHON, &[&bootstrap]);
    assert_eq!(output.trim(), "ok", "kafka-python");

    let output = python(CONFLUENT_KAFKA, &[&bootstrap]);
    assert_eq!(output.trim(), "ok", "confluent-kafka (librdkafka)");

    // kcat: metadata, produce, a balanced group consumer, offsets for times.
    let listing = kcat_listing(&bootstrap);
    assert!(listing.contains(" 3 brokers:"), "{listing}");
    let kcat = |args: &[&str], input: Option<&str>| {
        use std::io::Write;
        let mut child = Command::new("kcat")
            .args(["-b", &bootstrap])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kcat");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input.as_bytes()).unwrap();
        }
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "kcat {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let lines: String = (0..100).map(|i| format!("k{i}:v{i}\n")).collect();
    kcat(&["-P", "-t", "kc", "-K:", "-X", "acks=all"], Some(&lines));
    let consumed = kcat(
        &[
            "-G",
            "kc-group",
            "-o",
            "beginning",
            "-c",
            "100",
            "-f",
            "%k=%s\n",
            "kc",
        ],
        None,
    );
    assert_eq!(consumed.lines().count(), 100, "{consumed}");
    // Offsets for a time far in the past: each partition's first offset.
    let offsets = kcat(
        &["-Q", "-t", "kc:0:1", "-t", "kc:1:1", "-t", "kc:2:1"],
        None,
    );
    assert_eq!(offsets.lines().count(), 3, "{offsets}");
    assert!(
        offsets.lines().all(|line| line.ends_with("offset 0")),
        "{offsets}"
    );
}
