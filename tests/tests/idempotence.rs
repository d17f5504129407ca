//! Idempotent producers on real `logd` processes: Kafka clients nobody here
//! wrote produce with idempotence on, and a retried batch is written once
//! and answered with its original offsets, also after the leader that wrote
//! it was killed with kill -9 and after the restarted broker rebuilt its
//! producer state from its log.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use strata_tests::{
    create_configured_topic, create_topic, fetch_all, init_producer_id, one_cluster_at_a_time,
    produce_outcome, produce_request, python, wait_for, Cluster, Connection, Logd, ProducerFields,
    PRODUCE_VERSION,
};

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const RECORDS_PER_BATCH: i32 = 5;

/// Every value of `topic` as kcat reads it, one line each.
fn kcat_values(bootstrap: &str, topic: &str) -> Vec<String> {
    let output = Command::new("kcat")
        .args(["-b", bootstrap, "-C", "-t", topic, "-e", "-q"])
        .output()
        .expect("kcat -C");
    assert!(output.status.success(), "kcat -C failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn kcat_and_kafka_python_produce_with_idempotence_on() {
    let logd = Logd::start();
    create_topic(&logd, "idempotent", 3);
    let lines: String = (0..20_000).map(|index| format!("kcat-{index}\n")).collect();
    let mut kcat = Command::new("kcat")
        .args(["-b", &logd.bootstrap(), "-P", "-t", "idempotent"])
        .args(["-X", "enable.idempotence=true"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat -P");
    std::io::Write::write_all(&mut kcat.stdin.take().unwrap(), lines.as_bytes()).unwrap();
    let kcat = kcat.wait_with_output().expect("kcat -P runs");
    let kcat_errors = String::from_utf8_lossy(&kcat.stderr);
    assert!(
        kcat.status.success() && !kcat_errors.contains("failed"),
        "kcat -P with idempotence:\n{kcat_errors}\n{}",
        logd.log()
    );

    // kafka-python 3 turns idempotence on by default.
    let script = r#"
import sys
from kafka import KafkaProducer
producer = KafkaProducer(bootstrap_servers=sys.argv[1])
assert producer.config["enable_idempotence"], "kafka-python defaults to idempotence"
futures = [producer.send("idempotent", b"python-%d" % index) for index in range(5000)]
producer.flush()
print(sum(1 for future in futures if future.succeeded()))
"#;
    let acknowledged = python(script, &[&logd.bootstrap()]);
    assert_eq!(acknowledged.trim(), "5000");

    let values = kcat_values(&logd.bootstrap(), "idempotent");
    let distinct: BTreeSet<&String> = values.iter().collect();
    assert_eq!(values.len(), 25_000, "every record once");
    assert_eq!(distinct.len(), 25_000, "no record twice");
}

/// One producer's batches, each `RECORDS_PER_BATCH` records `b{batch}-{i}`.
struct Batches {
    producer_id: i64,
    producer_epoch: i16,
}

impl Batches {
    fn send(&self, connection: &mut Connection, batch: i32) -> std::io::Result<Result<i64, i16>> {
        let producer = ProducerFields {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: batch * RECORDS_PER_BATCH,
        };
        let values: Vec<Vec<u8>> = (0..RECORDS_PER_BATCH)
            .map(|index| format!("b{batch}-{index}").into_bytes())
            .collect();
        let request = produce_request("dedup", 0, -1, Some(producer), &values);
        produce_outcome(connection.send(ApiKey::Produce, PRODUCE_VERSION, &request)?)
    }

    /// Sends `batch` to the partition's leader, following leadership as it
    /// moves and waiting out a short ISR, as clients retry; the answer the
    /// leader gave.
    fn send_to_leader(&self, cluster: &mut Cluster, batch: i32) -> Result<i64, i16> {
        wait_for(Duration::from_secs(20), "a leader to answer", || {
            let leader = cluster.leader_of("dedup", 0, Duration::from_secs(10));
            let mut connection = Connection::open(cluster.node(leader).address).ok()?;
            match self.send(&mut connection, batch).ok()? {
                // Not yet the leader, or its followers not yet back.
                Err(NOT_LEADER_OR_FOLLOWER | NOT_ENOUGH_REPLICAS) => None,
                answer => Some(answer),
            }
        })
    }
}

#[test]
fn a_retried_batch_is_written_once_across_leader_kills_and_restarts() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    create_configured_topic(
        cluster.node(1),
        "dedup",
        1,
        3,
        &[("min.insync.replicas", "2")],
    );
    let first_leader = cluster.leader_of("dedup", 0, Duration::from_secs(5));
    let (producer_id, producer_epoch) =
        init_producer_id(&mut cluster.node(first_leader).connect()).expect("a producer id");
    let producer = Batches {
        producer_id,
        producer_epoch,
    };
    let mut offsets = Vec::new();
    for batch in 0..50 {
        let offset = producer.send_to_leader(&mut cluster, batch);
        assert_eq!(offset, Ok(batch as i64 * RECORDS_PER_BATCH as i64));
        offsets.push(offset.unwrap());
    }

    // The leader dies; its successor answers retries of the last five
    // batches with their offsets and writes nothing.
    cluster.node(first_leader).kill9();
    for batch in 45..50 {
        assert_eq!(
            producer.send_to_leader(&mut cluster, batch),
            Ok(offsets[batch as usize]),
            "batch {batch} retried on the new leader"
        );
    }
    assert_eq!(producer.send_to_leader(&mut cluster, 50), Ok(250));

    // The killed broker comes back, rebuilds its producer state from its
    // log and what it copies, and leads once the other two are killed.
    cluster.node(first_leader).restart();
    wait_for(
        Duration::from_secs(20),
        "the restarted broker in the ISR",
        || {
            let view = cluster.node(first_leader).view()?;
            (view.partitions[&("dedup".to_string(), 0)].isr.len() == 3).then_some(())
        },
    );
    for other in (1..=3).filter(|&id| id != first_leader) {
        cluster.node(other).kill9();
    }
    for other in (1..=3).filter(|&id| id != first_leader) {
        cluster.node(other).restart();
    }
    for batch in 46..51 {
        assert_eq!(
            producer.send_to_leader(&mut cluster, batch),
            Ok(batch as i64 * RECORDS_PER_BATCH as i64),
            "batch {batch} retried after every broker restarted"
        );
    }
    assert_eq!(
        producer.send_to_leader(&mut cluster, 60),
        Err(OUT_OF_ORDER_SEQUENCE_NUMBER),
        "a gap in the sequence is refused"
    );
    let stale = Batches {
        producer_id,
        producer_epoch: producer_epoch - 1,
    };
    assert_eq!(
        stale.send_to_leader(&mut cluster, 51),
        Err(INVALID_PRODUCER_EPOCH),
        "an older epoch is fenced"
    );
    assert_eq!(producer.send_to_leader(&mut cluster, 51), Ok(255));

    let leader = cluster.leader_of("dedup", 0, Duration::from_secs(10));
    let stored = fetch_all(&mut cluster.node(leader).connect(), "dedup", 0);
    let expected: Vec<(i64, Vec<u8>)> = (0..52)
        .flat_map(|batch| {
            (0..RECORDS_PER_BATCH).map(move |index| {
                (
                    (batch * RECORDS_PER_BATCH + index) as i64,
                    format!("b{batch}-{index}").into_bytes(),
                )
            })
        })
        .collect();
    assert!(
        stored == expected,
        "each batch once, in order, at its offsets"
    );
}
