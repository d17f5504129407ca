//! Idempotent producers on real `logd` processes: Kafka clients nobody here
//! wrote produce with idempotence on, and a retried batch is written once
//! and answered with its original offsets, also after the leader that wrote
//! it was killed with kill -9 and after the restarted broker rebuilt its
//! producer state from its log.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use strata_tests::proxy::FaultProxy;
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
/// The fault proxy drops one Produce response in this many.
const DROP_ONE_IN: u64 = 10;

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

/// Keys records are spread over.
const KEYS: usize = 30;

/// Sends `count` records `{prefix}-{i}` keyed over `KEYS` keys with Strata's
/// producer through `bootstrap`; returns each acknowledged value with its
/// partition and offset.
async fn send_with_strata(
    bootstrap: &str,
    topic: &str,
    prefix: &str,
    count: usize,
    idempotence: bool,
) -> Vec<(String, i32, i64)> {
    use strata_client::{Producer, ProducerRecord};
    let producer = Producer::builder(bootstrap)
        .linger(Duration::from_millis(1))
        .batch_bytes(4 << 10)
        .retries(u32::MAX, Duration::from_millis(20))
        .idempotence(idempotence)
        .build()
        .await
        .expect("producer");
    let mut deliveries = Vec::with_capacity(count);
    for index in 0..count {
        let value = format!("{prefix}-{index}");
        let key = format!("key-{}", index % KEYS);
        let record = ProducerRecord::new(topic)
            .key(key.as_bytes())
            .value(value.as_bytes());
        let delivery = producer.send(record).await.expect("buffered");
        deliveries.push((value, delivery));
    }
    let mut acknowledged = Vec::with_capacity(count);
    for (value, delivery) in deliveries {
        let metadata = delivery.await.expect("every record is delivered");
        acknowledged.push((
            value,
            metadata.partition,
            metadata.offset.expect("acks=all"),
        ));
    }
    acknowledged
}

/// What one producer's records look like in the log, beyond "every
/// acknowledged record is at its offset" (asserted here).
#[derive(Debug, Default, PartialEq, Eq)]
struct Anomalies {
    /// Values stored more than once.
    duplicates: usize,
    /// Values stored after a value sent later to the same partition.
    out_of_order: usize,
}

/// Checks what the partitions hold (`stored[partition]`: offset and value)
/// against what one producer sent: the values of `prefix` (`{prefix}-{i}`,
/// `i` rising in send order) should each be stored once, in send order,
/// every acknowledged one at its offset.
fn anomalies(
    stored: &[Vec<(i64, Vec<u8>)>],
    prefix: &str,
    acknowledged: &[(String, i32, i64)],
) -> Anomalies {
    let mut anomalies = Anomalies::default();
    for (partition, stored) in stored.iter().enumerate() {
        let partition = partition as i32;
        let mut seen = BTreeSet::new();
        let mut last_index = None;
        for (_, value) in stored {
            let value = String::from_utf8_lossy(value).into_owned();
            let Some(index) = value.strip_prefix(&format!("{prefix}-")) else {
                continue;
            };
            let index: u64 = index.parse().expect("a sequence number");
            if !seen.insert(index) {
                anomalies.duplicates += 1;
            } else if last_index.is_some_and(|last| last > index) {
                anomalies.out_of_order += 1;
            }
            last_index = last_index.max(Some(index));
        }
        for (value, acknowledged_partition, offset) in acknowledged {
            if *acknowledged_partition != partition {
                continue;
            }
            let at = stored
                .binary_search_by_key(offset, |(stored_offset, _)| *stored_offset)
                .ok()
                .map(|index| &stored[index]);
            assert_eq!(
                at.map(|(_, value)| String::from_utf8_lossy(value).into_owned()),
                Some(value.clone()),
                "acknowledged {value} is at offset {offset} of partition {partition}"
            );
        }
    }
    anomalies
}

/// A proxy between the clients and the broker drops one Produce response in
/// ten after the broker handled the request, so producers retry batches that
/// were written: with idempotence each is stored once and in order; without
/// it the same run stores duplicates (and reorders), which shows the check
/// can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_responses_make_retries_that_store_nothing_twice() {
    let proxy = FaultProxy::bind();
    let advertised = proxy.address.to_string();
    let logd = Logd::start_with(&["--advertise", &advertised]);
    proxy.forward_to(logd.address);
    create_topic(&logd, "retried", 3);
    proxy.drop_one_produce_response_in(DROP_ONE_IN);
    let stored = |logd: &Logd| -> Vec<Vec<(i64, Vec<u8>)>> {
        (0..3)
            .map(|partition| fetch_all(&mut logd.connect(), "retried", partition))
            .collect()
    };

    let acknowledged = send_with_strata(&advertised, "retried", "strata", 20_000, true).await;
    assert_eq!(acknowledged.len(), 20_000);
    let dropped_strata = proxy.dropped();
    assert!(dropped_strata > 0, "the proxy dropped responses");
    assert_eq!(
        anomalies(&stored(&logd), "strata", &acknowledged),
        Anomalies::default()
    );

    // kafka-python's default producer is idempotent too.
    let bootstrap = advertised.clone();
    let python_acknowledged =
        tokio::task::spawn_blocking(move || produce_with_kafka_python(&bootstrap, "retried", 5000))
            .await
            .unwrap();
    assert_eq!(python_acknowledged.len(), 5000);
    assert!(
        proxy.dropped() > dropped_strata,
        "kafka-python's responses were dropped too"
    );
    assert_eq!(
        anomalies(&stored(&logd), "python", &python_acknowledged),
        Anomalies::default()
    );

    let plain = send_with_strata(&advertised, "retried", "plain", 20_000, false).await;
    let plain = anomalies(&stored(&logd), "plain", &plain);
    println!(
        "{} responses dropped; idempotent: none stored twice or out of order; not idempotent: {plain:?}",
        proxy.dropped()
    );
    assert!(
        plain.duplicates > 0,
        "without idempotence the retries store duplicates: {plain:?}"
    );
}

/// Sends `count` records `python-{i}` keyed over `KEYS` keys with
/// kafka-python's default (idempotent) producer, 50 at a time; returns each
/// acknowledged value with its partition and offset.
fn produce_with_kafka_python(
    bootstrap: &str,
    topic: &str,
    count: usize,
) -> Vec<(String, i32, i64)> {
    let script = r#"
import sys, time
from kafka import KafkaProducer
bootstrap, topic, count, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), linger_ms=1, batch_size=4096,
                         retry_backoff_ms=50, request_timeout_ms=5000)
futures = []
for index in range(count):
    futures.append(producer.send(topic, key=b"key-%d" % (index % keys), value=b"python-%d" % index))
    if index % 50 == 49:
        time.sleep(0.005)
producer.flush()
for future in futures:
    metadata = future.get()
    print(metadata.partition, metadata.offset)
"#;
    let output = python(
        script,
        &[bootstrap, topic, &count.to_string(), &KEYS.to_string()],
    );
    output
        .lines()
        .enumerate()
        .map(|(index, line)| {
            let (partition, offset) = line.split_once(' ').expect("partition offset");
            (
                format!("python-{index}"),
                partition.parse().unwrap(),
                offset.parse().unwrap(),
            )
        })
        .collect()
}

/// Three brokers, each behind a proxy that drops one Produce response in
/// ten; Strata's producer and kafka-python, both idempotent, write keyed
/// records the whole time, on both sides of every fault: a partition
/// leader killed with kill -9 and restarted, another frozen past its
/// session so a successor takes over and then thawed. Afterwards every
/// acknowledged record is at its offset, none is stored twice, and each
/// producer's records of a partition are in send order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producers_lose_and_duplicate_nothing_through_kills_freezes_and_lost_answers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use strata_client::{Producer, ProducerRecord};
    let _serial = one_cluster_at_a_time();
    let (mut cluster, proxies) = Cluster::start_behind_proxies(3);
    create_configured_topic(
        cluster.node(1),
        "history",
        3,
        3,
        &[("min.insync.replicas", "2")],
    );
    for proxy in &proxies {
        proxy.drop_one_produce_response_in(DROP_ONE_IN);
    }
    let bootstrap: String = proxies
        .iter()
        .map(|proxy| proxy.address.to_string())
        .collect::<Vec<_>>()
        .join(",");

    let stop = Arc::new(AtomicBool::new(false));
    let strata = {
        let (bootstrap, stop) = (bootstrap.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let producer = Producer::builder(&bootstrap)
                .linger(Duration::from_millis(1))
                .batch_bytes(4 << 10)
                .retries(u32::MAX, Duration::from_millis(50))
                .build()
                .await
                .expect("producer");
            let mut deliveries = Vec::new();
            let mut index = 0;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("strata-{index}");
                let key = format!("key-{}", index % KEYS);
                let record = ProducerRecord::new("history")
                    .key(key.as_bytes())
                    .value(value.as_bytes());
                let delivery = producer.send(record).await.expect("buffered");
                deliveries.push((value, delivery));
                index += 1;
                if index % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let mut acknowledged = Vec::with_capacity(deliveries.len());
            for (value, delivery) in deliveries {
                let metadata = delivery
                    .await
                    .unwrap_or_else(|error| panic!("{value} was not delivered: {error}"));
                acknowledged.push((value, metadata.partition, metadata.offset.unwrap()));
            }
            acknowledged
        })
    };
    let python_bootstrap = bootstrap.clone();
    let python = tokio::task::spawn_blocking(move || {
        produce_with_kafka_python(&python_bootstrap, "history", 20_000)
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = cluster.leader_of("history", 0, Duration::from_secs(10));
    cluster.node(killed).kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.node(killed).restart();
    let full_isr = |cluster: &mut Cluster| {
        wait_for(
            Duration::from_secs(30),
            "every partition back to a full ISR",
            || {
                let view = cluster.nodes.iter().find_map(|node| node.view())?;
                (0..3)
                    .all(|partition| {
                        view.partitions[&("history".to_string(), partition)]
                            .isr
                            .len()
                            == 3
                    })
                    .then_some(())
            },
        )
    };
    full_isr(&mut cluster);
    let frozen = cluster.leader_of("history", 1, Duration::from_secs(10));
    cluster.node(frozen).pause();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    cluster.node(frozen).resume();
    full_isr(&mut cluster);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);

    let strata = strata.await.expect("the Strata producer");
    let python = python.await.expect("kafka-python");
    let mut stored = Vec::new();
    for partition in 0..3 {
        let leader = cluster.leader_of("history", partition, Duration::from_secs(10));
        stored.push(fetch_all(
            &mut cluster.node(leader).connect(),
            "history",
            partition,
        ));
    }
    let dropped: u64 = proxies.iter().map(FaultProxy::dropped).sum();
    assert!(dropped > 0, "the proxies dropped answers");
    assert_eq!(anomalies(&stored, "strata", &strata), Anomalies::default());
    assert_eq!(anomalies(&stored, "python", &python), Anomalies::default());
    println!(
        "{} Strata and {} kafka-python records acknowledged through a kill -9 of broker {killed}, a freeze of broker {frozen} and {dropped} dropped answers: each stored once, in order, at its offset",
        strata.len(),
        python.len()
    );
}

/// Waits until `topic`'s partitions remember no producer.
async fn all_forgotten(admin: &strata_client::Admin, topic: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !admin.describe_producers(topic).await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the producers of {topic} are never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A producer idle past `--producer-id-expiration-ms` is forgotten at the
/// next retention check: DescribeProducers no longer shows it, and its next
/// batch, which does not start a sequence, is UNKNOWN_PRODUCER_ID; Strata's
/// producer then starts over under a new producer id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_producer_is_forgotten_after_the_expiration() {
    const UNKNOWN_PRODUCER_ID: i16 = 59;
    let logd = Logd::start_with(&[
        "--producer-id-expiration-ms",
        "1000",
        "--log-retention-check-interval-ms",
        "100",
    ]);
    create_configured_topic(&logd, "dedup", 1, 1, &[]);
    let mut connection = logd.connect();
    let (producer_id, producer_epoch) = init_producer_id(&mut connection).unwrap();
    let producer = Batches {
        producer_id,
        producer_epoch,
    };
    assert_eq!(producer.send(&mut connection, 0).unwrap(), Ok(0));
    let admin = strata_client::Admin::connect(&logd.bootstrap())
        .await
        .unwrap();
    let known = admin.describe_producers("dedup").await.unwrap();
    assert_eq!(known.len(), 1);
    assert_eq!(
        (known[0].producer_id, known[0].last_sequence),
        (producer_id, RECORDS_PER_BATCH - 1)
    );
    all_forgotten(&admin, "dedup").await;
    assert_eq!(
        producer.send(&mut connection, 1).unwrap(),
        Err(UNKNOWN_PRODUCER_ID)
    );

    // Strata's producer, told so, takes a new producer id and goes on.
    let strata = strata_client::Producer::builder(&logd.bootstrap())
        .build()
        .await
        .unwrap();
    let send = |value: &'static str| {
        let strata = strata.clone();
        async move {
            let record = strata_client::ProducerRecord::new("dedup").value(value.as_bytes());
            strata.send(record).await.unwrap().await
        }
    };
    send("before").await.expect("delivered");
    all_forgotten(&admin, "dedup").await;
    send("after")
        .await
        .expect("delivered under a new producer id");
    let producers = admin.describe_producers("dedup").await.unwrap();
    assert_eq!(producers.len(), 1);
    assert_eq!(
        producers[0].last_sequence, 0,
        "a new sequence: {producers:?}"
    );
}
