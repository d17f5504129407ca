//! The fault suite: three brokers on a network the test controls, writers
//! and readers of several kinds recording everything they were told, and
//! random faults (partitions that cut a leader off from the controller but
//! not from its clients, an isolated controller leader, followers split
//! from their leader, one-way cuts, kill -9, SIGSTOP, wall-clock jumps).
//! The history checker then reads the whole history against the final
//! logs: nothing acknowledged lost, nothing an idempotent producer sent
//! stored twice, no offset with two values, no group offset going back.
//!
//! `cargo test` runs 25 fault cycles; `STRATA_SOAK_SECONDS=N` runs cycles
//! for N seconds instead. Either way the history (JSON lines) and a summary
//! are written to `STRATA_HISTORY_DIR` (default: a directory under the
//! system's temporary directory, printed). `STRATA_FAULT_SEED` replays a
//! schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use strata_client::{Acks, Consumer, Isolation, Offset, Producer, ProducerBuilder, ProducerRecord};
use strata_tests::history::{self, Event, Outcome, Recorder, TransactionOutcome};
use strata_tests::network::{Endpoint, Network, Port, BOTH_PORTS};
use strata_tests::{
    create_configured_topic, fetch_all, now_ms, one_cluster_at_a_time, produce_outcome,
    produce_request, wait_for, Cluster, Connection, Logd, Rng, View, PRODUCE_VERSION,
};

const BROKERS: i32 = 3;
const TOPIC: &str = "faults";
const PARTITIONS: i32 = 6;
/// Where the fencing of an isolated leader is watched: acks=1 writes, which
/// an isolated leader would accept, kept out of the checked topic.
const PROBE_TOPIC: &str = "fault-probe";
const GROUP: &str = "fault-readers";
const CYCLES: usize = 25;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// Brokers' controller sessions: Kafka's 9 s default is nearer than the 2 s
/// of quicker tests, which a loaded disk under leadership churn can
/// outlast (see ARCHITECTURE.md, "Known limits").
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// A fault the schedule injects, on the brokers it names.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Cut a partition leader off from every other broker, controller
    /// included; clients still reach it.
    IsolateLeader(i32),
    /// The same for the controller leader.
    IsolateController(i32),
    /// Cut a leader's replication links (Kafka port) to and from its
    /// followers; the controller still hears it.
    SplitFromFollowers(i32),
    /// Drop everything the first broker sends the second.
    OneWayCut(i32, i32),
    Kill(i32),
    Freeze(i32),
    /// Move one broker's wall clock by this many seconds.
    ClockJump(i32, i64),
}

impl Fault {
    /// The brokers the fault acts on: partitions they lead are touched.
    fn brokers(self) -> Vec<i32> {
        match self {
            Fault::IsolateLeader(node)
            | Fault::IsolateController(node)
            | Fault::SplitFromFollowers(node)
            | Fault::Kill(node)
            | Fault::Freeze(node)
            | Fault::ClockJump(node, _) => vec![node],
            Fault::OneWayCut(from, to) => vec![from, to],
        }
    }
}

/// One fault as it happened.
#[derive(Debug)]
struct Injected {
    fault: Fault,
    from_ms: i64,
    to_ms: i64,
    /// Partitions of the checked topic whose leader the fault acted on.
    touched: BTreeSet<i32>,
    /// How long an isolated leader went on accepting writes.
    fenced_after_ms: Option<i64>,
}

#[test]
fn random_partitions_kills_freezes_and_clock_jumps_lose_and_duplicate_nothing() {
    let _serial = one_cluster_at_a_time();
    let (mut rng, seed) = Rng::seeded_from("STRATA_FAULT_SEED");
    let output = std::env::var("STRATA_HISTORY_DIR").map_or_else(
        |_| std::env::temp_dir().join(format!("strata-faults-{seed}")),
        PathBuf::from,
    );
    std::fs::create_dir_all(&output).expect("history directory");
    println!(
        "fault seed {seed} (STRATA_FAULT_SEED replays it); history, summary and logs in {}",
        output.display()
    );
    // The clients' own account, for when a wait does not end.
    let client_log = std::fs::File::create(output.join("clients.log")).expect("client log");
    let _ = tracing_subscriber::fmt()
        .with_env_filter("strata_client=debug")
        .with_writer(Mutex::new(client_log))
        .with_ansi(false)
        .try_init();

    let session_timeout = SESSION_TIMEOUT.as_millis().to_string();
    let args = ["--broker-session-timeout-ms", &session_timeout];
    let (mut cluster, network) = Cluster::start_on_network(BROKERS, &args);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_faults(&mut cluster, &network, &mut rng, seed, &output)
    }));
    for node in &cluster.nodes {
        let _ = std::fs::write(
            output.join(format!("logd-{}.log", node.node_id)),
            node.log(),
        );
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn run_faults(cluster: &mut Cluster, network: &Network, rng: &mut Rng, seed: u64, output: &Path) {
    let bootstrap = (1..=BROKERS)
        .map(|node| network.address(node, Port::Kafka).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let min_isr = [("min.insync.replicas", "2")];
    create_configured_topic(cluster.node(1), TOPIC, PARTITIONS, 3, &min_isr);
    create_configured_topic(cluster.node(1), PROBE_TOPIC, BROKERS, 3, &[]);
    wait_for_full_isr(cluster, Duration::from_secs(30));
    let setting = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
    };
    let soak = setting("STRATA_SOAK_SECONDS").map(Duration::from_secs);
    let cycles = setting("STRATA_FAULT_CYCLES").unwrap_or(CYCLES as u64) as usize;

    let recorder = Recorder::default();
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut tasks = Vec::new();
    for name in ["idempotent-1", "idempotent-2"] {
        let producer = Producer::builder(&bootstrap).idempotence(true);
        tasks.push(runtime.spawn(write(producer, name, recorder.clone(), Arc::clone(&stop))));
    }
    let plain = Producer::builder(&bootstrap).idempotence(false);
    tasks.push(runtime.spawn(write(plain, "plain", recorder.clone(), Arc::clone(&stop))));
    tasks.push(runtime.spawn(write_transactions(
        bootstrap.clone(),
        recorder.clone(),
        Arc::clone(&stop),
    )));
    for name in ["reader-1", "reader-2"] {
        tasks.push(runtime.spawn(read(
            bootstrap.clone(),
            name,
            recorder.clone(),
            Arc::clone(&stop),
        )));
    }
    let stop_file = output.join("stop-python-producers");
    let _ = std::fs::remove_file(&stop_file);
    let python: Vec<_> = ["python-idempotent", "python-plain"]
        .into_iter()
        .map(|name| (name, start_python_producer(&bootstrap, name, &stop_file)))
        .collect();

    // The schedule: every kind of fault once per round, in random order,
    // on brokers chosen at random among those the fault makes sense for.
    let started = Instant::now();
    let mut injected = Vec::new();
    let mut kinds = Vec::new();
    loop {
        let done = match soak {
            Some(duration) => started.elapsed() >= duration,
            None => injected.len() >= cycles,
        };
        if done {
            break;
        }
        if kinds.is_empty() {
            kinds = (0..7).collect();
        }
        let kind = kinds.swap_remove(rng.below(kinds.len() as u64) as usize);
        let fault = choose(kind, cluster, rng);
        let hold = match fault {
            // Long enough to see the isolated leader fenced.
            Fault::IsolateLeader(_) | Fault::IsolateController(_) => {
                SESSION_TIMEOUT + Duration::from_secs(1)
            }
            _ => Duration::from_millis(2_500 + rng.below(1_500)),
        };
        let cycle = inject(fault, hold, cluster, network);
        // Writers go on through the recovery; the next fault waits for a
        // whole cluster, as an operator's next mistake would not.
        let recovered = wait_for_full_isr(cluster, Duration::from_secs(30));
        println!(
            "{:6.1} s cycle {}: {:?} for {hold:?}, touching partitions {:?}{}; whole again after {recovered:?}",
            started.elapsed().as_secs_f64(),
            injected.len() + 1,
            cycle.fault,
            cycle.touched,
            cycle
                .fenced_after_ms
                .map(|ms| format!(", leader fenced after {ms} ms"))
                .unwrap_or_default()
        );
        injected.push(cycle);
    }

    // Everything heals: every ISR must be whole again within 30 s, and
    // every partition make progress.
    network.heal();
    let healed_ms = now_ms();
    recorder.record(Event::Healed { at_ms: healed_ms });
    let isr_full_after = wait_for_full_isr(cluster, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    std::fs::write(&stop_file, "").unwrap();
    for (index, task) in tasks.into_iter().enumerate() {
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), task).await })
            .unwrap_or_else(|_| panic!("workload task {index} did not stop within 60 s"))
            .expect("a workload task");
    }
    println!(
        "{:6.1} s: the workloads stopped",
        started.elapsed().as_secs_f64()
    );
    for (name, child) in python {
        record_python_results(name, child, &recorder);
    }
    runtime
        .block_on(final_read(&bootstrap, &recorder))
        .expect("read every partition to its end");

    let events = recorder.events();
    let report = history::check(&events, history::Options { stall_ms: 15_000 });
    let availability = availability(&events, &injected);
    let outages = kill_outages(&events, &injected);
    let fenced: Vec<i64> = injected
        .iter()
        .filter_map(|cycle| cycle.fenced_after_ms)
        .collect();
    let summary = serde_json::json!({
        "seed": seed,
        "cycles": injected.len(),
        "faults": injected
            .iter()
            .map(|cycle| format!("{:?} from {} to {} ms", cycle.fault, cycle.from_ms, cycle.to_ms))
            .collect::<Vec<_>>(),
        "report": report,
        "availability_untouched": availability,
        "kill_outages_ms": outages,
        "isolated_leader_fenced_after_ms": fenced,
        "isr_full_after_heal_ms": isr_full_after.as_millis() as u64,
    });
    recorder
        .write_to(&output.join("history.jsonl"))
        .expect("write the history");
    std::fs::write(
        output.join("summary.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .expect("write the summary");
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());

    report.assert_valid();
    assert!(
        report.acknowledged > 10_000,
        "too little was acknowledged to judge: {report:?}"
    );
    assert!(report.transactions_committed > 50, "{report:?}");
    assert!(report.commits > 100, "{report:?}");
    assert!(
        availability >= 0.9,
        "{availability:.3} of the writes to partitions whose leader no fault touched succeeded"
    );
    assert!(!fenced.is_empty(), "no isolated leader was watched");
    let fence_bound = SESSION_TIMEOUT.as_millis() as i64 + 500;
    assert!(
        fenced.iter().all(|&ms| ms <= fence_bound),
        "an isolated leader accepted writes for longer than a session timeout: {fenced:?} ms"
    );
    assert!(
        outages.iter().all(|&ms| ms < 10_000),
        "a leader kill left its partitions without a leader for 10 s or more: {outages:?} ms"
    );
}

/// Picks the brokers fault number `kind` acts on.
fn choose(kind: usize, cluster: &mut Cluster, rng: &mut Rng) -> Fault {
    let random_node = |rng: &mut Rng| rng.below(BROKERS as u64) as i32 + 1;
    // A broker leading some partition of the checked topic.
    let leader = |cluster: &mut Cluster, rng: &mut Rng| {
        let partition = rng.below(PARTITIONS as u64) as i32;
        cluster.leader_of(TOPIC, partition, Duration::from_secs(10))
    };
    match kind {
        0 => Fault::IsolateLeader(leader(cluster, rng)),
        1 => Fault::IsolateController(cluster.controller_leader(Duration::from_secs(10)).0),
        2 => Fault::SplitFromFollowers(leader(cluster, rng)),
        3 => {
            let from = random_node(rng);
            let to = (from + rng.below(BROKERS as u64 - 1) as i32) % BROKERS + 1;
            Fault::OneWayCut(from, to)
        }
        4 => Fault::Kill(leader(cluster, rng)),
        5 => Fault::Freeze(leader(cluster, rng)),
        _ => {
            let seconds = [-7_200, -600, 600, 7_200, 86_400][rng.below(5) as usize];
            Fault::ClockJump(random_node(rng), seconds)
        }
    }
}

/// Injects `fault` for `hold`, then undoes it.
fn inject(fault: Fault, hold: Duration, cluster: &mut Cluster, network: &Network) -> Injected {
    let view = any_view(cluster);
    let touched = view
        .partitions
        .iter()
        .filter(|((topic, _), state)| topic == TOPIC && fault.brokers().contains(&state.leader))
        .map(|((_, partition), _)| *partition)
        .collect();
    let from_ms = now_ms();
    let deadline = Instant::now() + hold;
    let mut fenced_after_ms = None;
    match fault {
        Fault::IsolateLeader(node) | Fault::IsolateController(node) => {
            // A probe partition the broker leads, if it takes writes now.
            let address = cluster.node(node).address;
            let probe = view
                .partitions
                .iter()
                .find(|((topic, _), state)| topic == PROBE_TOPIC && state.leader == node)
                .map(|((_, partition), _)| *partition)
                .filter(|&partition| matches!(probe_write(address, partition), Ok(Ok(_))));
            network.isolate(node, BROKERS, &BOTH_PORTS);
            if let Some(partition) = probe {
                fenced_after_ms = watch_fencing(address, partition, deadline);
            }
        }
        Fault::SplitFromFollowers(node) => network.isolate(node, BROKERS, &[Port::Kafka]),
        Fault::OneWayCut(from, to) => {
            network.cut(Endpoint::Broker(from), Endpoint::Broker(to), &BOTH_PORTS)
        }
        Fault::Kill(node) => cluster.node(node).kill9(),
        Fault::Freeze(node) => cluster.node(node).pause(),
        Fault::ClockJump(node, seconds) => {
            assert!(
                cluster.node(node).set_clock_offset(seconds),
                "clock jumps need libfaketime (tests/setup installs it)"
            );
        }
    }
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    match fault {
        Fault::Kill(node) => cluster.node(node).restart(),
        Fault::Freeze(node) => cluster.node(node).resume(),
        Fault::ClockJump(node, _) => {
            cluster.node(node).set_clock_offset(0);
        }
        _ => network.heal(),
    }
    Injected {
        fault,
        from_ms,
        to_ms: now_ms(),
        touched,
        fenced_after_ms,
    }
}

/// Writes acks=1 to `partition` of the probe topic on the isolated broker
/// at `address` until it refuses as no longer the leader: how long after
/// the cut that took (ms), or `None` if it still accepted at `deadline`.
fn watch_fencing(address: std::net::SocketAddr, partition: i32, deadline: Instant) -> Option<i64> {
    let cut = Instant::now();
    while Instant::now() < deadline {
        if matches!(
            probe_write(address, partition),
            Ok(Err(NOT_LEADER_OR_FOLLOWER))
        ) {
            return Some(cut.elapsed().as_millis() as i64);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// One acks=1 write to `partition` of the probe topic at `address`: its
/// offset or error code.
fn probe_write(address: std::net::SocketAddr, partition: i32) -> std::io::Result<Result<i64, i16>> {
    let request = produce_request(PROBE_TOPIC, partition, 1, None, &[b"probe".to_vec()]);
    let mut connection = Connection::open(address)?;
    produce_outcome(connection.send(ApiKey::Produce, PRODUCE_VERSION, &request)?)
}

/// The view of the first broker that answers.
fn any_view(cluster: &mut Cluster) -> View {
    wait_for(Duration::from_secs(10), "a broker's view", || {
        cluster
            .nodes
            .iter()
            .filter(|node| !node.paused)
            .find_map(|node| node.view())
    })
}

/// Waits until every broker answers and every partition has a leader and
/// all its replicas in its ISR; how long that took.
fn try_wait_for_full_isr(cluster: &mut Cluster, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < timeout {
        let views: Vec<Option<View>> = cluster.nodes.iter().map(|node| node.view()).collect();
        let whole = views.iter().all(|view| {
            view.as_ref().is_some_and(|view| {
                view.brokers.len() == BROKERS as usize
                    && view
                        .partitions
                        .values()
                        .all(|state| state.leader > 0 && state.isr.len() == state.replicas.len())
            })
        });
        if whole {
            return Ok(started.elapsed());
        }
        last = format!("{views:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

fn wait_for_full_isr(cluster: &mut Cluster, timeout: Duration) -> Duration {
    try_wait_for_full_isr(cluster, timeout).unwrap_or_else(|views| {
        panic!(
            "the ISRs were not whole within {timeout:?}: {views}\n{}",
            cluster.logs()
        )
    })
}

/// Sends records `NAME-SEQUENCE` round the partitions at about 200 a
/// second until `stop`, recording each outcome.
async fn write(
    builder: ProducerBuilder,
    name: &'static str,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let builder = builder
        .client_id(name)
        .acks(Acks::All)
        .request_timeout(Duration::from_secs(5))
        .delivery_timeout(Duration::from_secs(10));
    let idempotent = builder.config().idempotent();
    // A cluster just formed may not hand out producer ids yet.
    let mut tries = 0;
    let producer = loop {
        match builder.clone().build().await {
            Ok(producer) => break producer,
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("{name} cannot start: {error}"),
        }
    };
    let mut deliveries = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        sequence += 1;
        let partition = (sequence % PARTITIONS as u64) as i32;
        let value = format!("{name}-{sequence}");
        let invoked_ms = now_ms();
        let record = ProducerRecord::new(TOPIC)
            .partition(partition)
            .value(value.as_bytes());
        let delivery = producer.send(record).await;
        let recorder = recorder.clone();
        deliveries.spawn(async move {
            let outcome = settle(delivery).await;
            recorder.record(Event::Send {
                producer: name.to_string(),
                idempotent,
                transaction: None,
                sequence,
                partition,
                value,
                invoked_ms,
                completed_ms: now_ms(),
                outcome,
            });
        });
        while deliveries.try_join_next().is_some() {}
    }
    // Each delivery ends within its delivery timeout.
    let outstanding = deliveries.len();
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while deliveries.join_next().await.is_some() {}
    });
    assert!(
        drained.await.is_ok(),
        "{name}: {} of {outstanding} deliveries still unresolved 30 s after the last send",
        deliveries.len()
    );
    tokio::time::timeout(Duration::from_secs(30), producer.close())
        .await
        .unwrap_or_else(|_| panic!("{name}: close did not return within 30 s"))
        .ok();
}

/// What a send came to: the offset it was acknowledged at, or why it
/// failed (refused at once, or its delivery failed).
async fn settle(sent: strata_client::Result<strata_client::Delivery>) -> Outcome {
    let answer = match sent {
        Ok(delivery) => delivery.await.map(|metadata| metadata.offset),
        Err(error) => Err(error),
    };
    match answer {
        Ok(Some(offset)) => Outcome::Acked { offset },
        Ok(None) => Outcome::Failed {
            error: "acknowledged without an offset".into(),
        },
        Err(error) => Outcome::Failed {
            error: error.to_string(),
        },
    }
}

/// Transactions of four records each on random partitions, one in four
/// aborted, until `stop`. A transaction whose end failed is unknown, and
/// a new producer with the same transactional id fences the old one.
async fn write_transactions(bootstrap: String, recorder: Recorder, stop: Arc<AtomicBool>) {
    const NAME: &str = "transactional";
    let mut rng = Rng(now_ms() as u64 | 1);
    let (mut transaction, mut sequence) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let producer = Producer::builder(&bootstrap)
            .client_id(NAME)
            .transactional_id("fault-transactions")
            .transaction_timeout(Duration::from_secs(10))
            .request_timeout(Duration::from_secs(5))
            .delivery_timeout(Duration::from_secs(10))
            .build()
            .await;
        let producer = match producer {
            Ok(producer) if producer.init_transactions().await.is_ok() => producer,
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            if producer.begin_transaction().await.is_err() {
                break;
            }
            transaction += 1;
            let mut sends = Vec::new();
            for index in 0..4 {
                sequence += 1;
                let partition = rng.below(PARTITIONS as u64) as i32;
                let value = format!("{NAME}-{transaction}-{index}");
                let record = ProducerRecord::new(TOPIC)
                    .partition(partition)
                    .value(value.as_bytes());
                let invoked_ms = now_ms();
                let delivery = producer.send(record).await;
                sends.push((sequence, partition, value, invoked_ms, delivery));
            }
            let mut all_acked = true;
            for (sequence, partition, value, invoked_ms, delivery) in sends {
                let outcome = settle(delivery).await;
                all_acked &= matches!(outcome, Outcome::Acked { .. });
                recorder.record(Event::Send {
                    producer: NAME.into(),
                    idempotent: true,
                    transaction: Some(transaction),
                    sequence,
                    partition,
                    value,
                    invoked_ms,
                    completed_ms: now_ms(),
                    outcome,
                });
            }
            let commit = all_acked && transaction % 4 != 0;
            let invoked_ms = now_ms();
            let ended = if commit {
                producer.commit_transaction().await
            } else {
                producer.abort_transaction().await
            };
            let outcome = match (&ended, commit) {
                (Ok(()), true) => TransactionOutcome::Committed,
                (Ok(()), false) => TransactionOutcome::Aborted,
                (Err(_), _) => TransactionOutcome::Unknown,
            };
            recorder.record(Event::Transaction {
                producer: NAME.into(),
                transaction,
                invoked_ms,
                outcome,
            });
            if ended.is_err() {
                break;
            }
        }
    }
}

/// A group member reading committed records and committing its position
/// after every poll, until `stop`.
async fn read(bootstrap: String, name: &'static str, recorder: Recorder, stop: Arc<AtomicBool>) {
    let mut consumer = Consumer::builder(&bootstrap)
        .client_id(name)
        .group_id(GROUP)
        .isolation(Isolation::ReadCommitted)
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
        .auto_commit(None)
        .build()
        .await
        .expect("a consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    while !stop.load(Ordering::Relaxed) {
        let records = match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => records,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let at_ms = now_ms();
        let mut by_partition: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
        for record in records {
            let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
            by_partition
                .entry(record.partition)
                .or_default()
                .push((record.offset, value.into_owned()));
        }
        if by_partition.is_empty() {
            continue;
        }
        for (partition, records) in by_partition {
            recorder.record(Event::Read {
                consumer: name.into(),
                read_committed: true,
                partition,
                at_ms,
                records,
            });
        }
        let positions = consumer.assigned_positions();
        let offsets: Vec<(&str, i32, i64)> = positions
            .iter()
            .map(|(topic, partition, offset)| (topic.as_str(), *partition, *offset))
            .collect();
        let invoked_ms = now_ms();
        if consumer.commit_offsets(&offsets).await.is_ok() {
            let completed_ms = now_ms();
            for (_, partition, offset) in offsets {
                recorder.record(Event::Commit {
                    group: GROUP.into(),
                    partition,
                    offset,
                    invoked_ms,
                    completed_ms,
                });
            }
        }
    }
    let _ = consumer.close().await;
}

/// Every partition from its start to its end, read_committed.
async fn final_read(bootstrap: &str, recorder: &Recorder) -> strata_client::Result<()> {
    let mut reader = Consumer::builder(bootstrap)
        .isolation(Isolation::ReadCommitted)
        .build()
        .await?;
    let partitions: Vec<(&str, i32)> = (0..PARTITIONS).map(|p| (TOPIC, p)).collect();
    reader.assign(&partitions).await?;
    for partition in 0..PARTITIONS {
        reader.seek(TOPIC, partition, Offset::Beginning)?;
    }
    let mut logs: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let started = Instant::now();
    loop {
        for record in reader.poll(Duration::from_millis(200)).await? {
            let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
            logs.entry(record.partition)
                .or_default()
                .push((record.offset, value.into_owned()));
        }
        let at_end = (0..PARTITIONS).all(|partition| {
            match (
                reader.position(TOPIC, partition),
                reader.high_watermark(TOPIC, partition),
            ) {
                (Some(position), Some(end)) => position >= end,
                _ => false,
            }
        });
        if at_end {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the final read did not end"
        );
    }
    for partition in 0..PARTITIONS {
        recorder.record(Event::FinalRead {
            partition,
            records: logs.remove(&partition).unwrap_or_default(),
        });
    }
    Ok(())
}

/// kafka-python on its defaults (idempotent), or with idempotence off,
/// sending `NAME-SEQUENCE` round the partitions about 50 a second until
/// `stop_file` exists, then printing every send's outcome as JSON.
const PYTHON_PRODUCER: &str = r#"
import json, os, sys, time
from kafka import KafkaProducer
bootstrap, topic, name, partitions, stop_file = sys.argv[1:6]
partitions = int(partitions)
settings = {} if name.endswith("idempotent") else {"enable_idempotence": False, "acks": "all"}
producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), **settings)
idempotent = producer.config["enable_idempotence"]
sends = []
def now():
    return int(time.time() * 1000)
def record(entry):
    def acked(metadata):
        entry.update(t1=now(), offset=metadata.offset)
    def failed(error):
        entry.update(t1=now(), error=repr(error))
    return acked, failed
sequence = 0
while not os.path.exists(stop_file):
    sequence += 1
    entry = {"sequence": sequence, "partition": sequence % partitions,
             "value": "%s-%d" % (name, sequence), "t0": now(), "idempotent": idempotent}
    sends.append(entry)
    acked, failed = record(entry)
    future = producer.send(topic, entry["value"].encode(), partition=entry["partition"])
    future.add_callback(acked).add_errback(failed)
    time.sleep(0.02)
producer.flush(timeout=60)
producer.close(timeout=10)
for entry in sends:
    print(json.dumps(entry))
"#;

/// A kafka-python producer process, killed if the test ends early.
struct PythonProducer(Option<std::process::Child>);

impl Drop for PythonProducer {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_python_producer(
    bootstrap: &str,
    name: &str,
    stop_file: &std::path::Path,
) -> PythonProducer {
    let child = Command::new("python3")
        .args(["-c", PYTHON_PRODUCER, bootstrap, TOPIC, name])
        .arg(PARTITIONS.to_string())
        .arg(stop_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    PythonProducer(Some(child))
}

fn record_python_results(name: &str, mut producer: PythonProducer, recorder: &Recorder) {
    let child = producer.0.take().expect("a running producer");
    let output = child.wait_with_output().expect("python producer");
    assert!(
        output.status.success(),
        "{name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    for line in text.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        let outcome = match entry["offset"].as_i64() {
            Some(offset) => Outcome::Acked { offset },
            None => Outcome::Failed {
                error: entry["error"].as_str().unwrap_or("no answer").to_string(),
            },
        };
        let invoked_ms = entry["t0"].as_i64().unwrap();
        recorder.record(Event::Send {
            producer: name.to_string(),
            idempotent: entry["idempotent"].as_bool().unwrap(),
            transaction: None,
            sequence: entry["sequence"].as_u64().unwrap(),
            partition: entry["partition"].as_i64().unwrap() as i32,
            value: entry["value"].as_str().unwrap().to_string(),
            invoked_ms,
            completed_ms: entry["t1"].as_i64().unwrap_or(invoked_ms),
            outcome,
        });
    }
}

/// Of the sends made during a fault to a partition whose leader it did not
/// act on, the share acknowledged.
fn availability(events: &[Event], injected: &[Injected]) -> f64 {
    let (mut acked, mut sent) = (0u64, 0u64);
    for event in events {
        let Event::Send {
            partition,
            invoked_ms,
            outcome,
            transaction: None,
            ..
        } = event
        else {
            continue;
        };
        let during = injected
            .iter()
            .find(|cycle| (cycle.from_ms..cycle.to_ms).contains(invoked_ms));
        if during.is_some_and(|cycle| !cycle.touched.contains(partition)) {
            sent += 1;
            acked += u64::from(matches!(outcome, Outcome::Acked { .. }));
        }
    }
    acked as f64 / sent.max(1) as f64
}

/// For each leader kill, the longest time one of its partitions took to
/// acknowledge a write sent after the kill (ms).
fn kill_outages(events: &[Event], injected: &[Injected]) -> Vec<i64> {
    injected
        .iter()
        .filter(|cycle| matches!(cycle.fault, Fault::Kill(_)))
        .map(|cycle| {
            cycle
                .touched
                .iter()
                .map(|&touched| {
                    let first_ack = events
                        .iter()
                        .filter_map(|event| match event {
                            Event::Send {
                                partition,
                                invoked_ms,
                                completed_ms,
                                outcome: Outcome::Acked { .. },
                                ..
                            } if *partition == touched && *invoked_ms >= cycle.from_ms => {
                                Some(*completed_ms)
                            }
                            _ => None,
                        })
                        .min()
                        .unwrap_or(i64::MAX);
                    first_ack.saturating_sub(cycle.from_ms)
                })
                .max()
                .unwrap_or(0)
        })
        .collect()
}

#[test]
fn a_full_disk_refuses_writes_retriably_and_recovers_once_space_is_freed() {
    const KAFKA_STORAGE_ERROR: i16 = 56;
    let Some(mut logd) = Logd::start_on_small_disk(64 << 20, &[]) else {
        eprintln!("not checked: mounting a tmpfs needs root");
        return;
    };
    create_configured_topic(&logd, "full", 1, 1, &[("segment.bytes", "4194304")]);
    let mut connection = logd.connect();
    let write = |connection: &mut Connection, index: usize| {
        let value = format!("{index:08}-{}", "x".repeat(8 << 10)).into_bytes();
        let request = produce_request("full", 0, -1, None, std::slice::from_ref(&value));
        let answer = connection
            .send(ApiKey::Produce, PRODUCE_VERSION, &request)
            .and_then(produce_outcome)
            .expect("the broker answers");
        (answer, value)
    };
    let mut acknowledged = Vec::new();
    for index in 0..100 {
        let (answer, value) = write(&mut connection, index);
        acknowledged.push((answer.expect("room to write"), value));
    }

    // Fill what is left of the disk, then give back a little.
    let ballast = logd.data_dir.join("ballast");
    let chunk = vec![0u8; 1 << 20];
    let mut file = std::fs::File::create(&ballast).unwrap();
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    let _ = file.sync_all();
    let size = file.metadata().unwrap().len();
    file.set_len(size.saturating_sub(2 << 20)).unwrap();
    drop(file);

    // Writes go on until the disk is full, then fail with a retriable
    // error, again and again, without the broker going down.
    let mut refusals = 0;
    let mut index = acknowledged.len();
    while refusals < 20 {
        index += 1;
        match write(&mut connection, index) {
            (Ok(offset), value) => acknowledged.push((offset, value)),
            (Err(KAFKA_STORAGE_ERROR), _) => refusals += 1,
            (Err(code), _) => panic!("a full disk answered error {code}:\n{}", logd.log()),
        }
        assert!(index < 10_000, "2 MiB of room took 80 MB of writes");
    }
    assert!(
        logd.is_running(),
        "logd died of a full disk:\n{}",
        logd.log()
    );
    let full_at = acknowledged.len();

    // Space comes back: the same partition takes writes again on its own.
    std::fs::remove_file(&ballast).unwrap();
    let resumed = wait_for(Duration::from_secs(10), "writes to resume", || {
        index += 1;
        match write(&mut connection, index) {
            (Ok(offset), value) => Some((offset, value)),
            (Err(KAFKA_STORAGE_ERROR), _) => None,
            (Err(code), _) => panic!("error {code} after space was freed:\n{}", logd.log()),
        }
    });
    acknowledged.push(resumed);
    for _ in 0..100 {
        index += 1;
        let (answer, value) = write(&mut connection, index);
        acknowledged.push((answer.expect("room again"), value));
    }

    // Nothing acknowledged was lost, before or after, also across a restart.
    let check = |logd: &Logd| {
        let stored: BTreeMap<i64, Vec<u8>> = fetch_all(&mut logd.connect(), "full", 0)
            .into_iter()
            .collect();
        for (offset, value) in &acknowledged {
            assert_eq!(
                stored.get(offset),
                Some(value),
                "acknowledged offset {offset}"
            );
        }
        assert_eq!(
            stored.len(),
            acknowledged.len(),
            "refused writes stored nothing"
        );
    };
    check(&logd);
    logd.restart();
    check(&logd);
    println!(
        "{full_at} writes of 8 KiB fitted, {refusals} were refused with KAFKA_STORAGE_ERROR, {} more taken once space was freed",
        acknowledged.len() - full_at
    );
}
