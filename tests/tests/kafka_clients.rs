//! Clients nobody here wrote, against a real logd: kcat (librdkafka) and
//! kafka-python.

use std::process::Command;

use strata_tests::{create_topic, kcat_listing, kcat_produce_keyed_lines, python, Logd};

#[test]
fn kcat_lists_produces_and_consumes_100k_lines_per_partition_in_order() {
    let logd = Logd::start();
    create_topic(&logd, "lines", 3);
    let listing = kcat_listing(&logd.bootstrap());
    assert!(
        listing.contains("1 brokers:") && listing.contains("topic \"lines\" with 3 partitions"),
        "{listing}"
    );

    // Keys route lines to partitions (murmur2); every line is its own key.
    assert!(
        kcat_produce_keyed_lines(&logd.bootstrap(), "lines", 100_000),
        "kcat -P failed:\n{}",
        logd.log()
    );

    let mut seen = Vec::new();
    for partition in 0..3 {
        let output = Command::new("kcat")
            .args([
                "-b",
                &logd.bootstrap(),
                "-C",
                "-t",
                "lines",
                "-p",
                &partition.to_string(),
                "-e",
                "-f",
                "%k %s\n",
            ])
            .output()
            .expect("kcat -C");
        assert!(output.status.success());
        let lines: Vec<u64> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let (key, value) = line.split_once(' ').unwrap();
                assert_eq!(value, format!("value-{key}"));
                key.parse().unwrap()
            })
            .collect();
        assert!(
            lines.windows(2).all(|pair| pair[0] < pair[1]),
            "partition {partition} is in produce order"
        );
        assert!(!lines.is_empty(), "partition {partition} got lines");
        seen.extend(lines);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..100_000).collect::<Vec<u64>>(),
        "exactly the lines produced"
    );
}

const KAFKA_PYTHON: &str = r#"
import sys, time
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic("python", num_partitions=2, replication_factor=1)])
assert "python" in admin.list_topics()

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
start_ms = int(time.time() * 1000)
sent = []
for index in range(500):
    timestamp_ms = start_ms + index
    metadata = producer.send("python", value=b"record-%d" % index, partition=0, timestamp_ms=timestamp_ms).get(timeout=10)
    sent.append((metadata.offset, timestamp_ms))
producer.flush()
assert [offset for offset, _ in sent] == list(range(500)), "dense offsets from 0"

consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
partition = TopicPartition("python", 0)
consumer.assign([partition])

consumer.seek(partition, 123)
first = next(consumer)
assert (first.offset, first.value) == (123, b"record-123"), first

wanted = sent[250][1]
found = consumer.offsets_for_times({partition: wanted})[partition]
assert found.offset == 250 and found.timestamp == wanted, found

consumer.seek_to_beginning(partition)
values = [message.value for message in consumer]
assert values == [b"record-%d" % index for index in range(500)], len(values)
print("ok")
"#;

#[test]
fn kafka_python_produces_with_acks_all_and_reads_back_by_offset_and_timestamp() {
    let logd = Logd::start();
    let output = python(KAFKA_PYTHON, &[&logd.bootstrap()]);
    assert_eq!(output.trim(), "ok");
}

const KAFKA_PYTHON_ADMIN: &str = r#"
import sys
from kafka.admin import KafkaAdminClient, NewTopic, NewPartitions, ConfigResource, ConfigResourceType
from kafka.errors import TopicAlreadyExistsError, InvalidConfigurationError, InvalidPartitionsError

bootstrap = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic("configured", num_partitions=1, replication_factor=1, topic_configs={"retention.ms": "60000"})])

def refused(call, error):
    try:
        call()
    except error:
        return True
    except Exception as other:
        raise AssertionError("expected %s, got %r" % (error.__name__, other))
    raise AssertionError("expected %s, got success" % error.__name__)

assert refused(lambda: admin.create_topics([NewTopic("configured", 1, 1)]), TopicAlreadyExistsError)
assert refused(lambda: admin.create_topics([NewTopic("bad", 1, 1, topic_configs={"compression.type": "zstd"})]), InvalidConfigurationError)

described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "configured")])
configs = described["topic"]["configured"]
assert configs["retention.ms"]["value"] == "60000", configs

admin.create_partitions({"configured": NewPartitions(4)})
assert refused(lambda: admin.create_partitions({"configured": NewPartitions(2)}), InvalidPartitionsError)
partitions = admin.describe_topics(["configured"])[0]["partitions"]
assert len(partitions) == 4, partitions

cluster = admin.describe_cluster()
assert len(cluster["brokers"]) == 1 and cluster["controller_id"] == 1, cluster

admin.delete_topics(["configured"])
assert "configured" not in admin.list_topics()
print("ok")
"#;

#[test]
fn kafka_python_admin_configures_grows_describes_and_deletes_topics() {
    let logd = Logd::start();
    let output = python(KAFKA_PYTHON_ADMIN, &[&logd.bootstrap()]);
    assert_eq!(output.trim(), "ok");
}
