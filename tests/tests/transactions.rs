//! Transactions on real `logd` processes: Kafka clients nobody here wrote
//! (kafka-python, librdkafka) run transactions; Strata's client commits,
//! aborts and is fenced; an exactly-once copier killed with kill -9 again
//! and again, with a broker killed too, copies every record exactly once;
//! a frozen copier replaced by a new instance writes nothing after it
//! thaws; a write of one transaction delayed in the network never lands in
//! the next (KAFKA-17754); and a transaction left open is aborted after its
//! timeout, so the last stable offset moves on.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ApiKey, EndTxnRequest, FindCoordinatorRequest,
    InitProducerIdRequest, ProduceRequest, ProducerId, RequestKind, ResponseKind, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use strata_client::{
    Admin, Consumer, Error, Isolation, Offset, Producer, ProducerRecord, ResponseError,
};
use strata_storage::record::{BatchBuilder, Record};
use strata_tests::{
    create_replicated_topic, create_topic, now_ms, one_cluster_at_a_time,
    open_kafka_python_transaction, produce_outcome, python, wait_for, Cluster, Connection, Logd,
};

const INVALID_PRODUCER_EPOCH: i16 = 47;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const INVALID_TXN_STATE: i16 = 48;
const PRODUCER_FENCED: i16 = 90;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Every record of `topic` from the start, per partition in offset order,
/// as values, read with `isolation` until `count` are read or nothing new
/// came for `quiet`.
async fn read_values(
    bootstrap: &str,
    topic: &str,
    isolation: Isolation,
    count: usize,
    quiet: Duration,
) -> BTreeMap<i32, Vec<String>> {
    let mut consumer = Consumer::builder(bootstrap)
        .isolation(isolation)
        .build()
        .await
        .expect("consumer");
    consumer.assign_topic(topic).await.expect("assign");
    for (topic, partition) in consumer.assignment() {
        consumer.seek(&topic, partition, Offset::Beginning).unwrap();
    }
    let mut values: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut read = 0;
    let mut last_new = Instant::now();
    while read < count && last_new.elapsed() < quiet {
        let records = consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap_or_default();
        if !records.is_empty() {
            last_new = Instant::now();
        }
        for record in records {
            read += 1;
            let value = record
                .value
                .map(|value| String::from_utf8_lossy(&value).to_string());
            values
                .entry(record.partition)
                .or_default()
                .push(value.unwrap_or_default());
        }
    }
    values
}

#[test]
fn kafka_python_and_librdkafka_run_transactions_against_strata() {
    let logd = Logd::start();
    create_topic(&logd, "tx", 3);
    let script = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer
b = sys.argv[1]
p = KafkaProducer(bootstrap_servers=b, transactional_id="python-tx")
p.init_transactions()
p.begin_transaction()
for i in range(10): p.send("tx", key=b"k%d" % i, value=b"committed-%d" % i)
p.commit_transaction()
p.begin_transaction()
for i in range(5): p.send("tx", key=b"k%d" % i, value=b"aborted-%d" % i)
p.flush()
p.abort_transaction()
p.begin_transaction()
for i in range(3): p.send("tx", key=b"x%d" % i, value=b"second-%d" % i)
p.commit_transaction()
committed = KafkaConsumer("tx", bootstrap_servers=b, isolation_level="read_committed",
                          auto_offset_reset="earliest", consumer_timeout_ms=4000)
values = sorted(m.value.decode() for m in committed)
uncommitted = KafkaConsumer("tx", bootstrap_servers=b, isolation_level="read_uncommitted",
                            auto_offset_reset="earliest", consumer_timeout_ms=4000)
print(len(values), sum(1 for v in values if v.startswith("aborted")), len(list(uncommitted)))
"#;
    let out = python(script, &[&logd.bootstrap()]);
    assert_eq!(
        out.trim(),
        "13 0 18",
        "read_committed sees the 13 committed records and no aborted one; read_uncommitted all 18"
    );

    // librdkafka: a consume-transform-produce loop that commits its input
    // offsets in each transaction.
    create_topic(&logd, "src", 2);
    create_topic(&logd, "dst", 2);
    let script = r#"
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition
b = sys.argv[1]
p = Producer({"bootstrap.servers": b})
for i in range(300): p.produce("src", key=str(i), value="v%d" % i)
p.flush()
tp = Producer({"bootstrap.servers": b, "transactional.id": "rdkafka-copier"})
tp.init_transactions(20)
c = Consumer({"bootstrap.servers": b, "group.id": "copy", "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "isolation.level": "read_committed"})
c.subscribe(["src"])
copied, deadline = 0, time.time() + 40
while copied < 300 and time.time() < deadline:
    msgs = [m for m in c.consume(100, 1.0) if not m.error()]
    if not msgs: continue
    tp.begin_transaction()
    for m in msgs: tp.produce("dst", key=m.key(), value=m.value())
    tp.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata())
    tp.commit_transaction()
    copied += len(msgs)
c.close()
check = Consumer({"bootstrap.servers": b, "group.id": "copy"})
committed = check.committed([TopicPartition("src", 0), TopicPartition("src", 1)], timeout=10)
r = Consumer({"bootstrap.servers": b, "group.id": "reader", "auto.offset.reset": "earliest",
              "isolation.level": "read_committed"})
r.subscribe(["dst"])
got, deadline = set(), time.time() + 20
while len(got) < 300 and time.time() < deadline:
    m = r.poll(0.5)
    if m and not m.error(): got.add(m.value())
print(copied, sum(tp.offset for tp in committed), len(got))
"#;
    let out = python(script, &[&logd.bootstrap()]);
    assert_eq!(
        out.trim(),
        "300 300 300",
        "every record copied once, input offsets committed with it\n{}",
        logd.log()
    );
}

#[test]
fn strata_client_commits_aborts_and_a_new_instance_fences_the_old_one() {
    let logd = Logd::start();
    create_topic(&logd, "orders", 2);
    let bootstrap = logd.bootstrap();
    runtime().block_on(async {
        let producer = |id: &'static str| {
            let bootstrap = bootstrap.clone();
            async move {
                Producer::builder(&bootstrap)
                    .transactional_id(id)
                    .build()
                    .await
                    .expect("producer")
            }
        };
        let first = producer("orders-writer").await;
        assert!(
            matches!(first.begin_transaction().await, Err(Error::Transaction(_))),
            "begin before init_transactions is refused"
        );
        first.init_transactions().await.unwrap();
        let mut deliveries = Vec::new();
        first.begin_transaction().await.unwrap();
        for index in 0..10 {
            let value = format!("committed-{index}");
            let record = ProducerRecord::new("orders")
                .key(value.as_bytes())
                .value(value.as_bytes());
            deliveries.push(first.send(record).await.unwrap());
        }
        first.commit_transaction().await.unwrap();
        first.begin_transaction().await.unwrap();
        for index in 0..5 {
            let value = format!("aborted-{index}");
            let record = ProducerRecord::new("orders")
                .key(value.as_bytes())
                .value(value.as_bytes());
            deliveries.push(first.send(record).await.unwrap());
        }
        first.abort_transaction().await.unwrap();
        for delivery in deliveries {
            delivery.await.expect("written (then committed or aborted)");
        }

        // An open transaction of the first instance, then a new instance.
        first.begin_transaction().await.unwrap();
        let zombie = first
            .send(ProducerRecord::new("orders").partition(0).value(b"zombie"))
            .await
            .unwrap();
        first.flush().await;
        zombie.await.expect("written before the new instance came");
        let second = producer("orders-writer").await;
        second.init_transactions().await.unwrap();
        let commit = first.commit_transaction().await;
        assert!(
            matches!(
                &commit,
                Err(Error::Broker {
                    error: ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch,
                    ..
                })
            ),
            "the old instance is fenced: {commit:?}"
        );
        assert!(
            first.begin_transaction().await.is_err(),
            "a fenced producer stays fenced"
        );
        second.begin_transaction().await.unwrap();
        let successor = second
            .send(
                ProducerRecord::new("orders")
                    .partition(1)
                    .value(b"successor"),
            )
            .await
            .unwrap();
        second.commit_transaction().await.unwrap();
        successor.await.unwrap();

        let committed = read_values(
            &bootstrap,
            "orders",
            Isolation::ReadCommitted,
            11,
            Duration::from_secs(5),
        )
        .await;
        let mut values: Vec<&String> = committed.values().flatten().collect();
        values.sort();
        assert_eq!(values.len(), 11, "{values:?}");
        assert!(values
            .iter()
            .all(|value| value.starts_with("committed-") || *value == "successor"));
        let everything = read_values(
            &bootstrap,
            "orders",
            Isolation::ReadUncommitted,
            17,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            everything.values().flatten().count(),
            17,
            "aborted records are in the log"
        );
    });
}

#[test]
fn a_transaction_left_open_is_aborted_after_its_timeout_and_the_stable_offset_moves_on() {
    let logd = Logd::start();
    create_topic(&logd, "ledger", 1);
    let mut hanging =
        open_kafka_python_transaction(&logd.bootstrap(), "forgotten", 3000, "ledger", 4);
    // The producer dies with its transaction open.
    hanging.kill().unwrap();
    hanging.wait().unwrap();
    let bootstrap = logd.bootstrap();
    runtime().block_on(async {
        let admin = Admin::connect(&bootstrap).await.unwrap();
        let description = admin.describe_transaction("forgotten").await.unwrap();
        assert_eq!(description.state, "Ongoing");
        assert_eq!(description.partitions.len(), 1);
        let partition = &description.partitions[0];
        assert_eq!(partition.first_offset, Some(0), "{description:?}");
        assert_eq!(
            partition.last_stable_offset,
            Some(0),
            "the open transaction pins it"
        );
        assert_eq!(partition.high_watermark, Some(4));
        let listed = admin.list_transactions(&["Ongoing"]).await.unwrap();
        assert_eq!(listed.len(), 1);

        // Plain records after it are readable by read_committed consumers
        // only once the transaction ends.
        let plain = Producer::builder(&bootstrap).build().await.unwrap();
        plain
            .send(ProducerRecord::new("ledger").value(b"after"))
            .await
            .unwrap()
            .await
            .unwrap();
        let started = Instant::now();
        let stable = wait_for(
            Duration::from_secs(15),
            "the timed-out transaction's abort",
            || {
                let rt = tokio::runtime::Handle::current();
                let description = tokio::task::block_in_place(|| {
                    rt.block_on(admin.describe_transaction("forgotten"))
                })
                .ok()?;
                (description.state == "CompleteAbort").then_some(description)
            },
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(stable.producer_epoch, 1, "the timed-out producer is fenced");
        let offsets = admin.describe_topic("ledger").await.unwrap();
        let offsets = offsets.offsets[0].as_ref().unwrap();
        assert_eq!(offsets.last_stable_offset, offsets.high_watermark);
        let committed = read_values(
            &bootstrap,
            "ledger",
            Isolation::ReadCommitted,
            1,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(committed[&0], vec!["after".to_string()]);
    });
    assert!(
        logd.log()
            .contains("open longer than its transaction.timeout.ms"),
        "the coordinator says why it aborted"
    );
}

/// Requests of a hand-driven transactional producer, to place each write
/// exactly (`versions`: EndTxn v5, the epoch-bumping one).
struct RawTransaction {
    connection: Connection,
    id: &'static str,
    producer_id: i64,
    producer_epoch: i16,
}

impl RawTransaction {
    fn init(mut connection: Connection, id: &'static str) -> RawTransaction {
        let find = RequestKind::FindCoordinator(
            FindCoordinatorRequest::default()
                .with_key_type(1)
                .with_coordinator_keys(vec![StrBytes::from_static_str(id)]),
        );
        wait_for(
            Duration::from_secs(10),
            "the transaction coordinator",
            || match connection.send(ApiKey::FindCoordinator, 4, &find).ok()? {
                ResponseKind::FindCoordinator(found) => {
                    (found.coordinators[0].error_code == 0).then_some(())
                }
                _ => None,
            },
        );
        let init = RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(id))))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
        let (producer_id, producer_epoch) = wait_for(
            Duration::from_secs(10),
            "a transactional producer id",
            || match connection.send(ApiKey::InitProducerId, 4, &init).ok()? {
                ResponseKind::InitProducerId(r) if r.error_code == 0 => {
                    Some((r.producer_id.0, r.producer_epoch))
                }
                _ => None,
            },
        );
        RawTransaction {
            connection,
            id,
            producer_id,
            producer_epoch,
        }
    }

    fn add_partition(&mut self, topic: &str, partition: i32) {
        let request = RequestKind::AddPartitionsToTxn(
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_static_str(
                    self.id,
                )))
                .with_v3_and_below_producer_id(ProducerId(self.producer_id))
                .with_v3_and_below_producer_epoch(self.producer_epoch)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![partition])]),
        );
        // The previous transaction may still be writing its markers.
        wait_for(Duration::from_secs(10), "the partition added", || {
            let ResponseKind::AddPartitionsToTxn(response) = self
                .connection
                .send(ApiKey::AddPartitionsToTxn, 3, &request)
                .unwrap()
            else {
                panic!("not an AddPartitionsToTxn response")
            };
            let code = response.results_by_topic_v3_and_below[0].results_by_partition[0]
                .partition_error_code;
            assert!(
                code == 0 || code == CONCURRENT_TRANSACTIONS,
                "add {topic}-{partition}: {code}"
            );
            (code == 0).then_some(())
        });
    }

    /// A Produce request of one transactional record at `sequence`.
    fn produce_request(
        &self,
        topic: &str,
        partition: i32,
        sequence: i32,
        value: &str,
    ) -> RequestKind {
        let mut builder = BatchBuilder::new(now_ms())
            .producer(
                strata_storage::batch::ProducerId(self.producer_id),
                self.producer_epoch,
                sequence,
            )
            .transactional();
        builder.push(Record::value(value.as_bytes()));
        let data = PartitionProduceData::default()
            .with_index(partition)
            .with_records(Some(Bytes::from(builder.build())));
        RequestKind::Produce(
            ProduceRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(self.id))))
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partition_data(vec![data])]),
        )
    }

    /// EndTxn v5: commits, and moves to the epoch the coordinator names.
    fn commit(&mut self) {
        let request = RequestKind::EndTxn(
            EndTxnRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str(self.id)))
                .with_producer_id(ProducerId(self.producer_id))
                .with_producer_epoch(self.producer_epoch)
                .with_committed(true),
        );
        let ResponseKind::EndTxn(response) =
            self.connection.send(ApiKey::EndTxn, 5, &request).unwrap()
        else {
            panic!("not an EndTxn response")
        };
        assert_eq!(response.error_code, 0, "EndTxn");
        assert_eq!(
            response.producer_epoch,
            self.producer_epoch + 1,
            "v5 bumps the epoch"
        );
        self.producer_epoch = response.producer_epoch;
    }
}

#[test]
fn a_write_of_one_transaction_delayed_in_the_network_never_lands_in_the_next() {
    let _serial = one_cluster_at_a_time();
    let (mut cluster, proxies) = Cluster::start_behind_proxies(1);
    create_topic(cluster.node(1), "payments", 1);
    let direct = cluster.node(1).connect();
    let mut txn = RawTransaction::init(direct, "payments-writer");

    // Transaction N: its write goes through the proxy, which holds it.
    txn.add_partition("payments", 0);
    let delayed = txn.produce_request("payments", 0, 0, "late-write-of-N");
    let mut through_proxy = Connection::open(proxies[0].address).unwrap();
    proxies[0].hold_next_produce();
    let correlation_id = through_proxy
        .write_request(ApiKey::Produce, 9, &delayed)
        .unwrap();
    assert!(proxies[0].wait_held(Duration::from_secs(5)));
    // The client gives up on the write, commits N and begins N+1 on the
    // same partition.
    txn.commit();
    txn.add_partition("payments", 0);
    let next = txn.produce_request("payments", 0, 0, "write-of-N+1");
    let written = produce_outcome(txn.connection.send(ApiKey::Produce, 9, &next).unwrap()).unwrap();
    assert_eq!(written, Ok(1), "N's marker is at offset 0");
    // The delayed write arrives now.
    proxies[0].release();
    let late = produce_outcome(
        through_proxy
            .read_response(ApiKey::Produce, 9, correlation_id)
            .unwrap(),
    )
    .unwrap();
    assert!(
        matches!(
            late,
            Err(INVALID_PRODUCER_EPOCH | PRODUCER_FENCED | INVALID_TXN_STATE)
        ),
        "the delayed write of N is refused, not added to N+1: {late:?}"
    );
    txn.commit();
    let bootstrap = cluster.node(1).bootstrap();
    let values = runtime().block_on(read_values(
        &bootstrap,
        "payments",
        Isolation::ReadUncommitted,
        usize::MAX,
        Duration::from_secs(2),
    ));
    assert_eq!(
        values[&0],
        vec!["write-of-N+1".to_string()],
        "the log never held the delayed write"
    );
}

/// A copier process (`copier` binary) and the lines it printed.
struct Copier {
    child: Child,
    committed: Arc<Mutex<Vec<String>>>,
}

impl Copier {
    fn start(bootstrap: &str, id: &str) -> Copier {
        let mut child = Command::new(env!("CARGO_BIN_EXE_copier"))
            .args([bootstrap, "input", "output", "copiers", id, "100"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("copier");
        let committed = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&committed);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Copier { child, committed }
    }

    fn commits(&self) -> usize {
        self.committed.lock().unwrap().len()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let result = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(result, 0);
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `count` records `a-{index}` to `input` (keyed, so across its
/// partitions) and returns each partition's values in order.
fn fill_input(bootstrap: &str, count: usize) -> BTreeMap<i32, Vec<String>> {
    runtime().block_on(async {
        let producer = Producer::builder(bootstrap).build().await.unwrap();
        let mut deliveries = Vec::with_capacity(count);
        for index in 0..count {
            let value = format!("a-{index}");
            deliveries.push(
                producer
                    .send(
                        ProducerRecord::new("input")
                            .key(value.as_bytes())
                            .value(value.as_bytes()),
                    )
                    .await
                    .unwrap(),
            );
        }
        for delivery in deliveries {
            delivery.await.unwrap();
        }
        read_values(
            bootstrap,
            "input",
            Isolation::ReadUncommitted,
            count,
            Duration::from_secs(10),
        )
        .await
    })
}

/// Checks that `seen` holds, per partition, a prefix of `input`'s values
/// (all of them when `complete`): each record once, in order, and nothing
/// an aborted transaction wrote (which would repeat a value).
fn assert_copied(
    input: &BTreeMap<i32, Vec<String>>,
    seen: &BTreeMap<i32, Vec<String>>,
    complete: bool,
) {
    for (partition, values) in input {
        let got = seen.get(partition).cloned().unwrap_or_default();
        assert!(
            got.len() <= values.len() && got[..] == values[..got.len()],
            "partition {partition}: not a prefix of the input (first difference at {:?})",
            got.iter().zip(values).position(|(a, b)| a != b)
        );
        if complete {
            assert_eq!(
                got.len(),
                values.len(),
                "partition {partition}: records missing"
            );
        }
    }
}

#[test]
fn an_exactly_once_copier_killed_again_and_again_copies_every_record_once() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    create_replicated_topic(cluster.node(1), "input", 6, 3);
    create_replicated_topic(cluster.node(1), "output", 6, 3);
    let bootstrap = cluster.bootstrap();
    const RECORDS: usize = 100_000;
    let input = fill_input(&bootstrap, RECORDS);
    assert_eq!(input.values().map(Vec::len).sum::<usize>(), RECORDS);

    // A read_committed reader follows the output all along: it must never
    // see a record twice or out of order (an aborted copy would be one).
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (bootstrap, done) = (bootstrap.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let mut consumer = Consumer::builder(&bootstrap)
                    .isolation(Isolation::ReadCommitted)
                    .build()
                    .await
                    .unwrap();
                consumer.assign_topic("output").await.unwrap();
                for (topic, partition) in consumer.assignment() {
                    consumer.seek(&topic, partition, Offset::Beginning).unwrap();
                }
                let mut seen: BTreeMap<i32, Vec<String>> = BTreeMap::new();
                while !done.load(Ordering::Relaxed) {
                    for record in consumer
                        .poll(Duration::from_millis(200))
                        .await
                        .unwrap_or_default()
                    {
                        let value =
                            String::from_utf8_lossy(&record.value.unwrap_or_default()).to_string();
                        seen.entry(record.partition).or_default().push(value);
                    }
                }
                seen
            })
        })
    };

    let started = Instant::now();
    let mut copier = Copier::start(&bootstrap, "copier-1");
    let mut kills = 0;
    let mut broker_killed = false;
    while started.elapsed() < Duration::from_secs(150) {
        std::thread::sleep(Duration::from_millis(300 + (kills % 3) * 250));
        let copied = runtime().block_on(async {
            Admin::connect(&bootstrap)
                .await
                .ok()?
                .group_offsets("copiers")
                .await
                .ok()
        });
        let committed: i64 = copied.iter().flatten().map(|(_, offset)| offset).sum();
        if committed as usize >= RECORDS {
            break;
        }
        copier.kill9();
        kills += 1;
        if kills == 2 && !broker_killed {
            // One broker dies too, and comes back.
            cluster.node(2).kill9();
            broker_killed = true;
        }
        if kills == 6 {
            cluster.node(2).restart();
        }
        copier = Copier::start(&bootstrap, "copier-1");
    }
    let finished = started.elapsed();
    let output = wait_for(Duration::from_secs(60), "every record copied", || {
        let output = runtime().block_on(read_values(
            &bootstrap,
            "output",
            Isolation::ReadCommitted,
            RECORDS,
            Duration::from_secs(3),
        ));
        (output.values().map(Vec::len).sum::<usize>() >= RECORDS).then_some(output)
    });
    copier.kill9();
    done.store(true, Ordering::Relaxed);
    let seen = reader.join().expect("reader");
    assert!(
        kills >= 3,
        "the copier was killed {kills} times in {finished:?}"
    );
    assert!(broker_killed);
    assert_copied(&input, &output, true);
    assert_copied(&input, &seen, false);
    if !cluster.node(2).is_running() {
        cluster.node(2).restart();
    }
}

#[test]
fn a_frozen_copier_replaced_by_a_new_instance_writes_nothing_after_it_thaws() {
    let logd = Logd::start();
    create_topic(&logd, "input", 3);
    create_topic(&logd, "output", 3);
    let bootstrap = logd.bootstrap();
    const RECORDS: usize = 20_000;
    let input = fill_input(&bootstrap, RECORDS);
    let zombie = Copier::start(&bootstrap, "copier-z");
    wait_for(
        Duration::from_secs(20),
        "the first copier's commits",
        || (zombie.commits() > 0).then_some(()),
    );
    zombie.signal(libc::SIGSTOP);
    let commits_when_frozen = zombie.commits();
    let successor = Copier::start(&bootstrap, "copier-z");
    let output = wait_for(
        Duration::from_secs(60),
        "the successor copying everything",
        || {
            let output = runtime().block_on(read_values(
                &bootstrap,
                "output",
                Isolation::ReadCommitted,
                RECORDS,
                Duration::from_secs(2),
            ));
            (output.values().map(Vec::len).sum::<usize>() >= RECORDS).then_some(output)
        },
    );
    zombie.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        zombie.commits(),
        commits_when_frozen,
        "the thawed instance committed nothing"
    );
    successor.kill9();
    zombie.kill9();
    let after = runtime().block_on(read_values(
        &bootstrap,
        "output",
        Isolation::ReadCommitted,
        usize::MAX,
        Duration::from_secs(2),
    ));
    assert_copied(&input, &output, true);
    assert_copied(&input, &after, true);
}
