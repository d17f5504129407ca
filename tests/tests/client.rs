//! The pure-Rust client against the embedded broker and a real `logd`:
//! admin operations, produce and consume round trips, seeks, the memory
//! bound, and partitioner agreement with kafka-python.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_broker::{Broker, BrokerConfig};
use strata_client::partitioner::partition_for_key;
use strata_client::{
    Acks, Admin, Compression, Consumer, Error, Header, NewTopic, Offset, Producer, ProducerRecord,
    ResponseError,
};
use strata_tests::{python, Logd};

async fn embedded_broker(dir: &std::path::Path) -> Broker {
    let mut config = BrokerConfig::single_node(dir.join("data"));
    config.listeners = vec![strata_broker::config::ListenerConfig::plaintext(
        "127.0.0.1:0".parse().unwrap(),
    )];
    config.controller_listen = "127.0.0.1:0".parse().unwrap();
    Broker::start(config).await.unwrap()
}

/// Polls until `count` records arrived or 20 s passed.
async fn consume(consumer: &mut Consumer, count: usize) -> Vec<strata_client::ConsumerRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut records = Vec::new();
    while records.len() < count && tokio::time::Instant::now() < deadline {
        records.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_round_trip_against_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = embedded_broker(dir.path()).await;
    let bootstrap = broker.local_addr().to_string();

    let admin = Admin::connect(&bootstrap).await.unwrap();
    admin
        .create_topic(&NewTopic::new("orders", 3, 1).config("retention.ms", "3600000"))
        .await
        .unwrap();
    admin
        .wait_for_leaders("orders", Duration::from_secs(10))
        .await
        .unwrap();

    let producer = Producer::builder(&bootstrap)
        .acks(Acks::All)
        .linger(Duration::from_millis(2))
        .batch_bytes(16 << 10)
        .build()
        .await
        .unwrap();
    let started_ms = strata_tests::now_ms();
    let headers = [Header {
        key: "source",
        value: Some(b"test"),
    }];
    let mut deliveries = Vec::new();
    for index in 0..3_000 {
        let key = format!("customer-{}", index % 97);
        let value = format!("order-{index}");
        let record = ProducerRecord::new("orders")
            .key(key.as_bytes())
            .value(value.as_bytes())
            .headers(&headers);
        let delivery = producer.send(record).await.unwrap();
        deliveries.push((key, value, delivery));
    }
    let mut sent: BTreeMap<i32, Vec<(i64, String, String)>> = BTreeMap::new();
    for (key, value, delivery) in deliveries {
        let metadata = delivery.await.unwrap();
        assert_eq!(
            metadata.partition,
            partition_for_key(key.as_bytes(), 3),
            "keys route by murmur2"
        );
        assert!(metadata.timestamp_ms >= started_ms);
        sent.entry(metadata.partition)
            .or_default()
            .push((metadata.offset.unwrap(), key, value));
    }
    for records in sent.values() {
        let offsets: Vec<i64> = records.iter().map(|(offset, _, _)| *offset).collect();
        assert_eq!(
            offsets,
            (0..records.len() as i64).collect::<Vec<_>>(),
            "dense offsets in send order"
        );
    }
    producer.close().await.unwrap();

    let mut consumer = Consumer::builder(&bootstrap).build().await.unwrap();
    consumer.assign_topic("orders").await.unwrap();
    for partition in 0..3 {
        consumer
            .seek("orders", partition, Offset::Beginning)
            .unwrap();
    }
    let records = consume(&mut consumer, 3_000).await;
    assert_eq!(records.len(), 3_000);
    let mut received: BTreeMap<i32, Vec<(i64, String, String)>> = BTreeMap::new();
    for record in &records {
        assert_eq!(
            record.headers,
            vec![(
                "source".to_string(),
                Some(bytes::Bytes::from_static(b"test"))
            )]
        );
        received.entry(record.partition).or_default().push((
            record.offset,
            String::from_utf8(record.key.clone().unwrap().to_vec()).unwrap(),
            String::from_utf8(record.value.clone().unwrap().to_vec()).unwrap(),
        ));
    }
    assert_eq!(
        received, sent,
        "every record read back, in order, on its partition"
    );

    // Seeks: an offset, the end, a timestamp.
    consumer.assign(&[("orders", 0)]).await.unwrap();
    consumer.seek("orders", 0, Offset::At(5)).unwrap();
    let records = consumer.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(records[0].offset, 5);
    consumer
        .seek("orders", 0, Offset::Timestamp(started_ms))
        .unwrap();
    let records = consumer.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(records[0].offset, 0);
    consumer.seek("orders", 0, Offset::End).unwrap();
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(consumer.position("orders", 0), Some(sent[&0].len() as i64));

    // Admin: describe, configs, grow, delete, unknown topics.
    let description = admin.describe_topic("orders").await.unwrap();
    assert_eq!(description.topic.partitions.len(), 3);
    for (partition, offsets) in description.offsets.iter().enumerate() {
        let offsets = offsets.as_ref().unwrap();
        assert_eq!(offsets.log_start_offset, 0);
        assert_eq!(
            offsets.high_watermark,
            sent[&(partition as i32)].len() as i64
        );
    }
    let configs = admin.describe_configs("orders").await.unwrap();
    let retention = configs
        .iter()
        .find(|entry| entry.name == "retention.ms")
        .unwrap();
    assert_eq!(
        (retention.value.as_deref(), retention.is_default),
        (Some("3600000"), false)
    );
    admin
        .alter_configs(
            "orders",
            &[
                ("retention.ms".to_string(), None),
                ("segment.bytes".to_string(), Some("1048576".to_string())),
            ],
        )
        .await
        .unwrap();
    let configs = admin.describe_configs("orders").await.unwrap();
    let value = |name: &str| {
        configs
            .iter()
            .find(|entry| entry.name == name)
            .cloned()
            .unwrap()
    };
    assert!(value("retention.ms").is_default);
    assert_eq!(value("segment.bytes").value.as_deref(), Some("1048576"));
    let refused = admin
        .alter_configs(
            "orders",
            &[("segment.bytes".to_string(), Some("tiny".to_string()))],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Broker {
                error: ResponseError::InvalidConfig,
                ..
            }
        ),
        "{refused}"
    );

    admin.create_partitions("orders", 5).await.unwrap();
    assert_eq!(
        admin
            .describe_topic("orders")
            .await
            .unwrap()
            .topic
            .partitions
            .len(),
        5
    );
    let topics = admin.list_topics().await.unwrap();
    assert_eq!(
        topics
            .iter()
            .map(|topic| topic.name.as_str())
            .collect::<Vec<_>>(),
        ["orders"]
    );
    let cluster = admin.describe_cluster().await.unwrap();
    assert_eq!(cluster.brokers.len(), 1);
    assert_eq!(cluster.brokers[0].port as u16, broker.local_addr().port());

    let exists = admin
        .create_topic(&NewTopic::new("orders", 1, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            exists,
            Error::Broker {
                error: ResponseError::TopicAlreadyExists,
                ..
            }
        ),
        "{exists}"
    );
    admin.delete_topic("orders").await.unwrap();
    assert!(matches!(
        admin.delete_topic("orders").await,
        Err(Error::UnknownTopic(_))
    ));
    assert!(matches!(
        admin.describe_topic("orders").await,
        Err(Error::UnknownTopic(_))
    ));
    let producer = Producer::builder(&bootstrap).build().await.unwrap();
    let unknown = producer
        .send(ProducerRecord::new("orders").value(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(unknown, Error::UnknownTopic(_)), "{unknown}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_at_its_memory_bound_waits_instead_of_failing() {
    let mut logd = Logd::start();
    let bootstrap = logd.bootstrap();
    let admin = Admin::connect(&bootstrap).await.unwrap();
    admin
        .create_topic(&NewTopic::new("bounded", 1, 1))
        .await
        .unwrap();
    admin
        .wait_for_leaders("bounded", Duration::from_secs(10))
        .await
        .unwrap();
    let buffer_bytes = 256 << 10;
    let producer = Producer::builder(&bootstrap)
        .acks(Acks::Leader)
        .linger(Duration::from_millis(1))
        .batch_bytes(32 << 10)
        .buffer_bytes(buffer_bytes)
        .build()
        .await
        .unwrap();
    // Metadata is cached; now the broker stops answering.
    producer
        .send(ProducerRecord::new("bounded").value(b"warm-up"))
        .await
        .unwrap()
        .await
        .unwrap();
    logd.pause();

    let value = vec![b'v'; 1000];
    let mut deliveries = Vec::new();
    let mut blocked = None;
    for _ in 0..10 * buffer_bytes / value.len() {
        let send = producer.send(ProducerRecord::new("bounded").value(&value));
        match tokio::time::timeout(Duration::from_millis(500), send).await {
            Ok(sent) => deliveries.push(sent.expect("a send within the budget is accepted")),
            Err(_elapsed) => {
                blocked = Some(deliveries.len());
                break;
            }
        }
    }
    let accepted = blocked.expect("send waits once the buffer is full");

    assert!(
        accepted * value.len() <= buffer_bytes && accepted * value.len() > buffer_bytes / 2,
        "{accepted} records accepted with a {buffer_bytes}-byte buffer"
    );

    // Once the broker answers again, the waiting send goes through and every
    // accepted record is acknowledged.
    let pending = tokio::spawn({
        let producer = producer.clone();
        let value = value.clone();
        async move {
            producer
                .send(ProducerRecord::new("bounded").value(&value))
                .await
                .unwrap()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "still waiting for buffer space");
    logd.resume();
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(delivery.await.unwrap().offset.unwrap());
    }
    offsets.push(pending.await.unwrap().unwrap().offset.unwrap());
    assert_eq!(offsets, (1..=accepted as i64 + 1).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_cross_between_strata_kafka_python_and_librdkafka() {
    let logd = Logd::start();
    let bootstrap = logd.bootstrap();
    let admin = Admin::connect(&bootstrap).await.unwrap();
    let codecs = [
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ];
    for (name, codec) in codecs {
        let topic = format!("compressed-{name}");
        admin
            .create_topic(&NewTopic::new(&topic, 1, 1))
            .await
            .unwrap();
        admin
            .wait_for_leaders(&topic, Duration::from_secs(10))
            .await
            .unwrap();

        // kafka-python compresses the first half...
        let script = r#"
import sys
from kafka import KafkaProducer
bootstrap, topic, codec = sys.argv[1:4]
producer = KafkaProducer(
    bootstrap_servers=bootstrap, compression_type=codec, acks="all", linger_ms=20,
    enable_idempotence=False,
)
sent = [
    producer.send(topic, partition=0, value=f"python {codec} {index} {'p' * (index % 50)}".encode())
    for index in range(2000)
]
producer.flush()
for future in sent:
    future.get(timeout=10)
producer.close()
"#;
        python(script, &[&bootstrap, &topic, name]);
        let lines: Vec<String> = (0..2_000)
            .map(|index| format!("python {name} {index} {}", "p".repeat(index % 50)))
            .collect();

        // ...Strata's producer the second.
        let producer = Producer::builder(&bootstrap)
            .compression(codec)
            .linger(Duration::from_millis(20))
            .build()
            .await
            .unwrap();
        let values: Vec<String> = (0..2_000)
            .map(|index| format!("strata {name} {index} {}", "s".repeat(index % 50)))
            .collect();
        let mut deliveries = Vec::new();
        for value in &values {
            deliveries.push(
                producer
                    .send(ProducerRecord::new(&topic).value(value.as_bytes()))
                    .await
                    .unwrap(),
            );
        }
        for delivery in deliveries {
            delivery.await.unwrap();
        }
        let expected: Vec<String> = lines.iter().chain(&values).cloned().collect();

        let batches = strata_tests::fetch_batches(&mut logd.connect(), &topic, 0);
        assert!(
            batches
                .iter()
                .all(|batch| batch[22] & 0x07 == codec_bits(codec)),
            "every batch is compressed with {name}: {:?}",
            batches
                .iter()
                .map(|batch| (batch[22] & 0x07, batch.len()))
                .collect::<Vec<_>>()
        );

        let mut consumer = Consumer::builder(&bootstrap).build().await.unwrap();
        consumer.assign(&[(topic.as_str(), 0)]).await.unwrap();
        consumer.seek(&topic, 0, Offset::Beginning).unwrap();
        let read: Vec<String> = consume(&mut consumer, expected.len())
            .await
            .iter()
            .map(|record| String::from_utf8(record.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        assert_same(
            &read,
            &expected,
            &format!("Strata's consumer reading {name}"),
        );

        let output = std::process::Command::new("kcat")
            .args([
                "-b", &bootstrap, "-C", "-t", &topic, "-p", "0", "-e", "-f", "%s\n",
            ])
            .output()
            .expect("kcat -C");
        assert!(output.status.success());
        let read: Vec<String> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_same(&read, &expected, &format!("librdkafka reading {name}"));
    }
}

/// Fails naming the first difference, not printing thousands of values.
fn assert_same(read: &[String], expected: &[String], what: &str) {
    let first_difference = read.iter().zip(expected).position(|(a, b)| a != b);
    assert!(
        read.len() == expected.len() && first_difference.is_none(),
        "{what}: read {} of {} values; first difference at {first_difference:?}: {:?}",
        read.len(),
        expected.len(),
        first_difference.map(|index| (&read[index], &expected[index]))
    );
}

/// The attribute bits of `codec` in a batch header.
fn codec_bits(codec: Compression) -> u8 {
    match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    }
}

#[test]
fn keys_land_on_the_partition_kafka_python_picks() {
    let keys: Vec<String> = (0..500)
        .map(|index| format!("key-{index}-{}", "x".repeat(index % 7)))
        .collect();
    let script = r#"
import json, sys
from kafka.partitioner.default import DefaultPartitioner
keys = json.loads(sys.argv[1])
partitioner = DefaultPartitioner()

class Cluster:
    """The metadata the partitioner asks for: one topic of `count` partitions."""
    def __init__(self, count):
        self.count = count
    def topics(self):
        return {"t"}
    def partitions_for_topic(self, topic):
        return set(range(self.count))
    def available_partitions_for_topic(self, topic):
        return set(range(self.count))

def pick(key, count):
    if hasattr(partitioner, "partition"):  # kafka-python 3
        return partitioner.partition("t", key, key.encode(), None, None, Cluster(count))
    partitions = list(range(count))  # kafka-python 2
    return partitioner(key.encode(), partitions, partitions)

out = {}
for count in (1, 3, 7, 12, 50):
    out[count] = [pick(key, count) for key in keys]
print(json.dumps(out))
"#;
    let keys_json = format!(
        "[{}]",
        keys.iter()
            .map(|key| format!("\"{key}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let output = python(script, &[&keys_json]);
    for count in [1, 3, 7, 12, 50] {
        let marker = format!("\"{count}\": [");
        let start = output.find(&marker).unwrap() + marker.len();
        let end = start + output[start..].find(']').unwrap();
        let expected: Vec<i32> = output[start..end]
            .split(',')
            .map(|partition| partition.trim().parse().unwrap())
            .collect();
        let ours: Vec<i32> = keys
            .iter()
            .map(|key| partition_for_key(key.as_bytes(), count))
            .collect();
        assert_eq!(ours, expected, "{count} partitions");
    }
}
