//! Log compaction on a real `logd`: a topic with `cleanup.policy=compact`
//! keeps each key's latest record at the offset it was acknowledged at,
//! loses the keys a tombstone deleted, and reads the same after kill -9.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strata_client::{Acks, Consumer, Offset, Producer, ProducerRecord};
use strata_tests::{create_configured_topic, Logd};

const TOPIC: &str = "prices";
const KEYS: usize = 50;
const ROUNDS: usize = 40;
/// Keys deleted with a tombstone after the last round.
const DELETED: usize = 10;

/// What was acknowledged: offset → (key, value; `None` for a tombstone).
type Produced = BTreeMap<i64, (String, Option<String>)>;

async fn produce(bootstrap: &str) -> Produced {
    // Batches well under a segment (Kafka's default batch.size).
    let producer = Producer::builder(bootstrap)
        .acks(Acks::All)
        .batch_bytes(16 << 10)
        .build()
        .await
        .expect("producer");
    let padding = "x".repeat(200);
    let mut records: Vec<(String, Option<String>)> = Vec::new();
    for round in 0..ROUNDS {
        records.extend(
            (0..KEYS).map(|key| (format!("sku-{key}"), Some(format!("{round}-{padding}")))),
        );
    }
    // Tombstones, then unique keys so the segments holding them seal.
    records.extend((0..DELETED).map(|key| (format!("sku-{key}"), None)));
    records.extend((0..400).map(|filler| (format!("filler-{filler}"), Some(padding.clone()))));
    let mut sent = Vec::new();
    for (key, value) in records {
        let mut record = ProducerRecord::new(TOPIC).partition(0).key(key.as_bytes());
        if let Some(value) = &value {
            record = record.value(value.as_bytes());
        }
        let delivery = producer.send(record).await.expect("send");
        sent.push((key, value, delivery));
    }
    let mut produced = Produced::new();
    for (key, value, delivery) in sent {
        let offset = delivery
            .await
            .expect("acknowledged")
            .offset
            .expect("acks=all");
        produced.insert(offset, (key, value));
    }
    producer.close().await.expect("close");
    produced
}

/// Every record of the partition, in offset order.
async fn read_all(bootstrap: &str, last_offset: i64) -> Produced {
    let mut consumer = Consumer::builder(bootstrap)
        .build()
        .await
        .expect("consumer");
    consumer.assign(&[(TOPIC, 0)]).await.expect("assign");
    consumer
        .seek(TOPIC, 0, Offset::Beginning)
        .expect("seek to the start");
    let mut read = Produced::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read.contains_key(&last_offset) {
        assert!(
            Instant::now() < deadline,
            "read only up to {:?}",
            read.keys().last()
        );
        for record in consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll")
        {
            let text = |bytes: Option<bytes::Bytes>| {
                bytes.map(|bytes| String::from_utf8(bytes.to_vec()).expect("utf-8"))
            };
            let key = text(record.key).expect("every record has a key");
            read.insert(record.offset, (key, text(record.value)));
        }
    }
    read
}

/// Every record read is the one acknowledged at its offset, and each key's
/// last record is its latest (for a deleted key: its tombstone or nothing).
fn check(read: &Produced, produced: &Produced) {
    let mut latest: BTreeMap<&str, (i64, &Option<String>)> = BTreeMap::new();
    for (offset, (key, value)) in produced {
        latest.insert(key, (*offset, value));
    }
    let mut last_read: BTreeMap<&str, i64> = BTreeMap::new();
    for (offset, record) in read {
        assert_eq!(
            Some(record),
            produced.get(offset),
            "offset {offset} holds what was acknowledged there"
        );
        last_read.insert(&record.0, *offset);
    }
    for (key, (offset, value)) in &latest {
        match (value, last_read.get(key)) {
            (Some(_), found) => assert_eq!(found, Some(offset), "{key}: its latest record"),
            (None, None) => {}
            (None, found) => assert_eq!(found, Some(offset), "{key}: its tombstone or nothing"),
        }
    }
}

#[test]
fn a_compacted_topic_keeps_each_keys_latest_record_at_its_offset() {
    let mut logd = Logd::start_with(&["--log-retention-check-interval-ms", "200"]);
    create_configured_topic(
        &logd,
        TOPIC,
        1,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "65536"),
            ("delete.retention.ms", "0"),
        ],
    );
    let bootstrap = logd.bootstrap();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let produced = runtime.block_on(produce(&bootstrap));
    let last_offset = *produced.keys().last().expect("records");

    // The cleaner runs with the retention check once segments have sealed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let compacted = loop {
        let read = runtime.block_on(read_all(&bootstrap, last_offset));
        check(&read, &produced);
        let stale = read
            .values()
            .filter(|(key, value)| key.starts_with("sku-") && value.is_some())
            .count();
        // Each key's latest record, plus what the active segment and the
        // last batch of each sealed one keep.
        if stale <= 2 * KEYS {
            break read;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted after 30 s: {stale} sku records of {}",
            KEYS * ROUNDS
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let deleted_gone = (0..DELETED)
        .filter(|key| {
            let key = format!("sku-{key}");
            !compacted.values().any(|(read, _)| *read == key)
        })
        .count();
    eprintln!(
        "{} of {} records left after compaction; {deleted_gone} of {DELETED} deleted keys gone entirely",
        compacted.len(),
        produced.len()
    );
    assert!(
        compacted.len() < produced.len() / 2,
        "compaction removed most superseded records"
    );
    // librdkafka reads the same records across the gaps and the empty
    // batches compaction leaves.
    let listing = std::process::Command::new("kcat")
        .args([
            "-b",
            &bootstrap,
            "-C",
            "-t",
            TOPIC,
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
        ])
        .args(["-q", "-Z", "-f", "%o %k\n"])
        .output()
        .expect("kcat -C");
    assert!(listing.status.success(), "kcat: {listing:?}");
    let expected: String = compacted
        .iter()
        .map(|(offset, (key, _))| format!("{offset} {key}\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&listing.stdout), expected);

    logd.kill9();
    logd.restart();
    let after = runtime.block_on(read_all(&logd.bootstrap(), last_offset));
    check(&after, &produced);
    assert!(
        after.len() <= compacted.len(),
        "a restart brings back nothing compacted away"
    );
}
