//! Replication on real `logd` processes: acks=all records survive the
//! leader's kill -9 and three minutes of random kills and pauses; a paused
//! follower leaves the ISR and rejoins; with two of three replicas down
//! acks=all is refused and acks=1 goes on; the KIP-101 scenarios (a restarted
//! follower that leads at once, replicas with divergent tails); unclean
//! leader election only where a topic allows it. Replicas are compared byte
//! for byte up to the high watermark.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_tests::{
    create_configured_topic, create_replicated_topic, fetch_all, fetch_batches,
    one_cluster_at_a_time, produce, replica_batches, wait_for, Cluster, Connection, PartitionView,
    View, REPLICA_LAG_MS,
};

/// Error codes that mean the record was not appended, so sending it again
/// cannot write it twice: unknown partition, too few in-sync replicas, a
/// stale leader epoch. Not NOT_LEADER_OR_FOLLOWER: a leader also answers it
/// when its leadership ended while it waited for records it had appended,
/// which its successor may have (a reassignment moving the leader does
/// this), so the record's fate is unknown, as after a lost connection.
const NOT_APPENDED: [i16; 3] = [3, 19, 74];

/// Per partition: (sequence, offset) of every acknowledged record.
type History = Vec<Vec<(u64, i64)>>;

/// Produces sequence numbers with acks=all, one record per request, to every
/// partition of a topic in turn, each to its leader as the brokers report
/// it. A record refused before it was appended is sent again; one whose fate
/// is unknown (a timeout, a lost connection, a leadership that ended) is
/// not, so no record can be stored twice.
struct HistoryProducer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<History>>,
    thread: std::thread::JoinHandle<()>,
}

impl HistoryProducer {
    fn start(cluster: &Cluster, topic: &'static str, partitions: i32) -> HistoryProducer {
        let addresses: Vec<_> = cluster.nodes.iter().map(|node| node.address).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(vec![Vec::new(); partitions as usize]));
        let thread = {
            let (stop, acknowledged) = (Arc::clone(&stop), Arc::clone(&acknowledged));
            std::thread::spawn(move || {
                let mut sequence = 0u64;
                let mut connections: Vec<Option<Connection>> =
                    (0..partitions).map(|_| None).collect();
                let mut partition = 0;
                while !stop.load(Ordering::Relaxed) {
                    partition = (partition + 1) % partitions;
                    let slot = &mut connections[partition as usize];
                    if slot.is_none() {
                        *slot = leader_connection(&addresses, topic, partition);
                    }
                    let Some(connection) = slot.as_mut() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    match produce(
                        connection,
                        topic,
                        partition,
                        -1,
                        &[sequence.to_string().into_bytes()],
                    ) {
                        Ok(Ok(offset)) => {
                            acknowledged.lock().unwrap()[partition as usize]
                                .push((sequence, offset));
                            sequence += 1;
                        }
                        Ok(Err(code)) if NOT_APPENDED.contains(&code) => {
                            *slot = None;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Ok(Err(_)) | Err(_) => {
                            *slot = None;
                            sequence += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            })
        };
        HistoryProducer {
            stop,
            acknowledged,
            thread,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().iter().map(Vec::len).sum()
    }

    fn finish(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("producer");
        Arc::try_unwrap(self.acknowledged)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// A connection to the leader of `topic`/`partition`, with a short timeout so
/// a paused leader does not hold the producer long.
fn leader_connection(
    addresses: &[std::net::SocketAddr],
    topic: &str,
    partition: i32,
) -> Option<Connection> {
    leader_connection_waiting(addresses, topic, partition, Duration::from_secs(5))
}

/// A connection to the leader of `topic`/`partition` that waits up to
/// `read_timeout` for each response.
fn leader_connection_waiting(
    addresses: &[std::net::SocketAddr],
    topic: &str,
    partition: i32,
    read_timeout: Duration,
) -> Option<Connection> {
    let leader = addresses.iter().find_map(|address| {
        let view = View::of(*address)?;
        let leader = view.partitions.get(&(topic.to_string(), partition))?.leader;
        (leader > 0).then_some(leader)
    })?;
    let mut connection = Connection::open(addresses[leader as usize - 1]).ok()?;
    connection
        .stream()
        .set_read_timeout(Some(read_timeout))
        .ok()?;
    Some(connection)
}

/// Requests a [`PipelinedWriter`] keeps in flight, as librdkafka does.
const WRITER_IN_FLIGHT: usize = 16;

/// Writes records `PREFIX-N` with acks=all to partition 0 of a topic, one
/// per request, up to `WRITER_IN_FLIGHT` requests in flight on one
/// connection to the leader, and waits as long as a request's timeout for
/// each answer, so answers a frozen leader gives after it thaws are seen.
/// After an error it reads the answers still due, then reconnects to the
/// leader the brokers now report and goes on with new values: nothing is
/// sent twice.
struct PipelinedWriter {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(String, i64)>>>,
    thread: std::thread::JoinHandle<()>,
}

impl PipelinedWriter {
    fn start(cluster: &Cluster, topic: &'static str, prefix: &'static str) -> PipelinedWriter {
        use std::collections::VecDeque;
        use strata_tests::{produce_outcome, produce_request, PRODUCE_VERSION};
        let addresses: Vec<_> = cluster.nodes.iter().map(|node| node.address).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, acknowledged) = (Arc::clone(&stop), Arc::clone(&acknowledged));
            std::thread::spawn(move || {
                let produce_kind = kafka_protocol::messages::ApiKey::Produce;
                let mut next = 0u64;
                let mut connection: Option<Connection> = None;
                let mut in_flight: VecDeque<(i32, String)> = VecDeque::new();
                let mut draining = false;
                loop {
                    let stopping = stop.load(Ordering::Relaxed);
                    if stopping && in_flight.is_empty() {
                        return;
                    }
                    let Some(open) = connection.as_mut() else {
                        if stopping {
                            return;
                        }
                        in_flight.clear();
                        draining = false;
                        connection = leader_connection_waiting(
                            &addresses,
                            topic,
                            0,
                            Duration::from_secs(60),
                        );
                        if connection.is_none() {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        continue;
                    };
                    if !stopping && !draining && in_flight.len() < WRITER_IN_FLIGHT {
                        let value = format!("{prefix}-{next}");
                        next += 1;
                        let request =
                            produce_request(topic, 0, -1, None, &[value.clone().into_bytes()]);
                        match open.write_request(produce_kind, PRODUCE_VERSION, &request) {
                            Ok(correlation_id) => in_flight.push_back((correlation_id, value)),
                            Err(_) => connection = None,
                        }
                        continue;
                    }
                    if in_flight.is_empty() {
                        // Drained after an error: find the leader again.
                        connection = None;
                        continue;
                    }
                    let (correlation_id, value) = in_flight.pop_front().expect("one in flight");
                    let outcome = open
                        .read_response(produce_kind, PRODUCE_VERSION, correlation_id)
                        .and_then(produce_outcome);
                    match outcome {
                        Ok(Ok(offset)) => acknowledged.lock().unwrap().push((value, offset)),
                        Ok(Err(_)) => draining = true,
                        Err(_) => connection = None,
                    }
                }
            })
        };
        PipelinedWriter {
            stop,
            acknowledged,
            thread,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    fn finish(self) -> Vec<(String, i64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("writer");
        Arc::try_unwrap(self.acknowledged)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// Reads every partition back from its leader and checks the history:
/// offsets dense, no record stored twice, every acknowledged record at its
/// offset. Returns how many records are stored.
fn check_history(cluster: &mut Cluster, topic: &str, acknowledged: &[Vec<(u64, i64)>]) -> usize {
    let mut stored_total = 0;
    for (partition, acknowledged) in acknowledged.iter().enumerate() {
        let leader = cluster.leader_of(topic, partition as i32, Duration::from_secs(10));
        let stored = fetch_all(&mut cluster.node(leader).connect(), topic, partition as i32);
        let offsets: Vec<i64> = stored.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(
            offsets,
            (0..stored.len() as i64).collect::<Vec<_>>(),
            "offsets are dense"
        );
        let mut values: Vec<&[u8]> = stored.iter().map(|(_, value)| value.as_slice()).collect();
        values.sort_unstable();
        let before = values.len();
        values.dedup();
        assert_eq!(
            values.len(),
            before,
            "partition {partition}: no record is stored twice"
        );
        for (sequence, offset) in acknowledged {
            let value = stored
                .get(*offset as usize)
                .map(|(_, value)| String::from_utf8_lossy(value).into_owned());
            assert_eq!(
                value.as_deref(),
                Some(sequence.to_string().as_str()),
                "partition {partition}: acknowledged record {sequence} is at offset {offset}"
            );
        }
        stored_total += stored.len();
    }
    stored_total
}

#[test]
fn killing_the_leader_under_acks_all_load_loses_no_acknowledged_record() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    create_replicated_topic(cluster.node(1), "history", 1, 3);
    let producer = HistoryProducer::start(&cluster, "history", 1);
    let under_load = |at_least: usize| (producer.acknowledged() >= at_least).then_some(());
    wait_for(
        Duration::from_secs(10),
        "records acknowledged before the kill",
        || under_load(500),
    );
    let leader = cluster.leader_of("history", 0, Duration::from_secs(5));
    cluster.node(leader).kill9();
    let killed_at = producer.acknowledged();
    wait_for(
        Duration::from_secs(15),
        "records acknowledged by the new leader",
        || under_load(killed_at + 500),
    );
    cluster.node(leader).restart();
    wait_for(
        Duration::from_secs(15),
        "the old leader back in the ISR",
        || {
            let view = cluster.node(leader).view()?;
            (view.partitions[&("history".to_string(), 0)].isr.len() == 3).then_some(())
        },
    );
    let acknowledged = producer.finish();
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    assert!(
        total > killed_at && killed_at > 0,
        "records acknowledged before ({killed_at}) and after ({total}) the kill"
    );
    check_history(&mut cluster, "history", &acknowledged);
    println!(
        "{total} records acknowledged, leader {leader} killed after {killed_at}; all read back"
    );
}

/// Followers frozen, so the leader holds records nobody copied and waits
/// to acknowledge them; then the leader frozen and the followers thawed, so
/// one of them leads and a second writer writes to it; then the old leader
/// thawed: it learns it lost leadership, truncates its uncopied tail and
/// copies the new leader's records into the same offsets. The answers it
/// still owed must be errors, not acknowledgements of records it dropped.
#[test]
fn a_thawed_leader_never_acknowledges_records_its_successor_overwrote() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    let topic = "frozen";
    create_configured_topic(
        cluster.node(1),
        topic,
        1,
        3,
        &[("min.insync.replicas", "2")],
    );
    let old_leader = cluster.leader_of(topic, 0, Duration::from_secs(5));
    let followers: Vec<i32> = (1..=3).filter(|&id| id != old_leader).collect();
    let first = PipelinedWriter::start(&cluster, topic, "a");
    wait_for(
        Duration::from_secs(10),
        "records acknowledged by the first leader",
        || (first.acknowledged() >= 200).then_some(()),
    );

    for &follower in &followers {
        cluster.node(follower).pause();
    }
    // Long enough for the leader to append what the writer has in flight,
    // short of the session timeout and the replica lag limit.
    std::thread::sleep(Duration::from_millis(1_500));
    let before_freeze = first.acknowledged();
    cluster.node(old_leader).pause();
    for &follower in &followers {
        cluster.node(follower).resume();
    }
    let new_leader = wait_for_state(
        &mut cluster,
        followers[0],
        topic,
        0,
        "a new leader",
        |state| state.leader > 0 && state.leader != old_leader,
    )
    .leader;

    // A second writer, on the new leader's side of the fault.
    let second = send(&mut cluster, new_leader, topic, 0, -1, "b", 200);

    cluster.node(old_leader).resume();
    wait_for_state(
        &mut cluster,
        followers[0],
        topic,
        0,
        "the old leader back in the ISR",
        |state| state.isr.len() == 3,
    );
    // The first writer goes on, now to the new leader.
    let after_thaw = first.acknowledged();
    wait_for(
        Duration::from_secs(20),
        "the first writer acknowledged by the new leader",
        || (first.acknowledged() >= after_thaw + 100).then_some(()),
    );
    let first = first.finish();

    let stored: std::collections::HashMap<i64, String> =
        fetch_all(&mut cluster.node(new_leader).connect(), topic, 0)
            .into_iter()
            .map(|(offset, value)| (offset, String::from_utf8_lossy(&value).into_owned()))
            .collect();
    let mut lost = Vec::new();
    for (value, offset) in first.iter().chain(&second) {
        if stored.get(offset) != Some(value) {
            lost.push(format!("{value}@{offset} (holds {:?})", stored.get(offset)));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records are not at their offsets: {:?}",
        lost.len(),
        first.len() + second.len(),
        &lost[..lost.len().min(20)]
    );
    println!(
        "{} records acknowledged ({before_freeze} by the old leader before the fault, {} by the new leader to the second writer), all at their offsets",
        first.len() + second.len(),
        second.len()
    );
}

#[test]
fn chaos_of_kills_and_pauses_under_acks_all_loses_and_duplicates_nothing() {
    let _serial = one_cluster_at_a_time();
    let seconds: u64 = std::env::var("STRATA_CHAOS_SECONDS")
        .ok()
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or(180);
    let seed = std::env::var("STRATA_CHAOS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| strata_tests::now_ms() as u64 | 1);
    println!("chaos for {seconds} s, seed {seed} (STRATA_CHAOS_SECONDS, STRATA_CHAOS_SEED)");
    let mut rng = seed;
    let mut below = |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    let mut cluster = Cluster::start(3);
    create_configured_topic(
        cluster.node(1),
        "chaos",
        3,
        3,
        &[("min.insync.replicas", "2")],
    );
    let producer = HistoryProducer::start(&cluster, "chaos", 3);
    let started = Instant::now();
    let mut faults = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(5_000 + below(10_000)));
        let victim = 1 + below(3) as i32;
        let down_for = Duration::from_millis(1_000 + below(3_000));
        if below(2) == 0 {
            cluster.node(victim).kill9();
            std::thread::sleep(down_for);
            cluster.node(victim).restart();
        } else {
            cluster.node(victim).pause();
            std::thread::sleep(down_for);
            cluster.node(victim).resume();
        }
        faults += 1;
    }
    let last_fault = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "every partition back to a full ISR",
        || {
            let view = cluster.node(1).view()?;
            let full = (0..3)
                .all(|partition| view.partitions[&("chaos".to_string(), partition)].isr.len() == 3);
            full.then_some(())
        },
    );
    let recovered = last_fault.elapsed();
    let acknowledged = producer.finish();
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    let stored = check_history(&mut cluster, "chaos", &acknowledged);
    println!(
        "{faults} faults in {:?}; {total} records acknowledged, {stored} stored, all acknowledged ones at their offsets; full ISR {recovered:?} after the last fault",
        started.elapsed()
    );
    assert!(total > 0);
}

#[test]
fn a_paused_follower_leaves_the_isr_and_rejoins_once_caught_up() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    create_replicated_topic(cluster.node(1), "lagging", 1, 3);
    let leader = cluster.leader_of("lagging", 0, Duration::from_secs(5));
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let witness = leader;
    let mut connection = cluster.node(leader).connect();
    let send = |connection: &mut Connection, value: &str| {
        produce(connection, "lagging", 0, -1, &[value.as_bytes().to_vec()]).expect("leader answers")
    };
    assert!(send(&mut connection, "before").is_ok());

    cluster.node(follower).pause();
    let paused = Instant::now();
    wait_for(
        Duration::from_millis(REPLICA_LAG_MS + 3_000),
        "the follower to leave the ISR",
        || {
            let view = cluster.node(witness).view()?;
            let isr = &view.partitions[&("lagging".to_string(), 0)].isr;
            (!isr.contains(&follower)).then_some(())
        },
    );
    println!(
        "follower {follower} left the ISR {:?} after it was paused",
        paused.elapsed()
    );
    for index in 0..100 {
        assert!(
            send(&mut connection, &format!("while-paused-{index}")).is_ok(),
            "acks=all continues with two"
        );
    }

    cluster.node(follower).resume();
    let resumed = Instant::now();
    wait_for(
        Duration::from_secs(15),
        "the follower to rejoin the ISR",
        || {
            let view = cluster.node(witness).view()?;
            let isr = &view.partitions[&("lagging".to_string(), 0)].isr;
            (isr.len() == 3).then_some(())
        },
    );
    println!(
        "follower {follower} rejoined the ISR {:?} after it resumed",
        resumed.elapsed()
    );
    assert!(send(&mut connection, "after").is_ok());
    let stored = fetch_all(&mut connection, "lagging", 0);
    assert_eq!(stored.len(), 102);
}

/// Broker `witness`'s view of `topic`/`partition`, once it satisfies `done`.
fn wait_for_state(
    cluster: &mut Cluster,
    witness: i32,
    topic: &str,
    partition: i32,
    what: &str,
    done: impl Fn(&PartitionView) -> bool,
) -> PartitionView {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last_seen = None;
    loop {
        let state = cluster.node(witness).view().and_then(|view| {
            view.partitions
                .get(&(topic.to_string(), partition))
                .cloned()
        });
        match state {
            Some(state) if done(&state) => return state,
            Some(state) => last_seen = Some(state),
            None => {}
        }
        // The brokers' logs say why, when the cluster does not get there.
        assert!(
            Instant::now() < deadline,
            "timed out after 20 s waiting for {what}; broker {witness} last saw {last_seen:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `count` records `{prefix}-{i}`, one per request, to broker `to`
/// with `acks`; returns each value with its offset. NOT_LEADER_OR_FOLLOWER
/// is retried for a while, as clients do: a broker takes up a role shortly
/// after its metadata (and so its view) names it.
fn send(
    cluster: &mut Cluster,
    to: i32,
    topic: &str,
    partition: i32,
    acks: i16,
    prefix: &str,
    count: usize,
) -> Vec<(String, i64)> {
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    let mut connection = cluster.node(to).connect();
    (0..count)
        .map(|index| {
            let value = format!("{prefix}-{index}");
            let what = format!("broker {to} to lead {topic}-{partition}");
            let offset = wait_for(Duration::from_secs(10), &what, || {
                match produce(
                    &mut connection,
                    topic,
                    partition,
                    acks,
                    &[value.clone().into_bytes()],
                )
                .expect("broker answers")
                {
                    Ok(offset) => Some(offset),
                    Err(NOT_LEADER_OR_FOLLOWER) => None,
                    Err(code) => panic!("{value} with acks={acks} refused with {code}"),
                }
            });
            (value, offset)
        })
        .collect()
}

/// Every value of `topic`/`partition` as its leader serves it, in order.
fn stored_values(cluster: &mut Cluster, topic: &str, partition: i32) -> Vec<String> {
    let leader = cluster.leader_of(topic, partition, Duration::from_secs(10));
    fetch_all(&mut cluster.node(leader).connect(), topic, partition)
        .into_iter()
        .map(|(_, value)| String::from_utf8(value).expect("utf-8"))
        .collect()
}

/// Checks that every replica of `topic`/`partition` holds the leader's
/// batches byte for byte up to its high watermark; returns that.
fn assert_replicas_identical(cluster: &mut Cluster, topic: &str, partition: i32) -> i64 {
    let leader = cluster.leader_of(topic, partition, Duration::from_secs(10));
    let committed = fetch_batches(&mut cluster.node(leader).connect(), topic, partition);
    let high_watermark = committed.last().map_or(0, |batch| {
        let header = strata_storage::batch::BatchHeader::parse(batch).expect("batch");
        header.last_offset() + 1
    });
    let replicas = cluster
        .node(leader)
        .view()
        .expect("leader answers")
        .partitions[&(topic.to_string(), partition)]
        .replicas
        .clone();
    for replica in replicas {
        let copy = replica_batches(
            &mut cluster.node(replica).connect(),
            topic,
            partition,
            high_watermark,
        );
        assert!(
            copy == committed,
            "{topic}-{partition}: broker {replica} holds {} batches that differ from leader {leader}'s {} up to the high watermark {high_watermark}",
            copy.len(),
            committed.len()
        );
    }
    high_watermark
}

/// A partition of `topic` whose replicas include broker `member`: its index
/// and replicas.
fn partition_with(cluster: &mut Cluster, topic: &str, member: i32) -> (i32, Vec<i32>) {
    let view = cluster.node(1).view().expect("broker 1 answers");
    view.partitions
        .iter()
        .find(|((name, _), state)| name == topic && state.replicas.contains(&member))
        .map(|((_, index), state)| (*index, state.replicas.clone()))
        .expect("a partition on the broker")
}

#[test]
fn with_two_of_three_replicas_down_acks_all_is_refused_and_acks_1_goes_on() {
    let _serial = one_cluster_at_a_time();
    // Broker 4 is no voter, so the metadata quorum outlives two replicas.
    let mut cluster = Cluster::start_with_voters(4, 3);
    create_configured_topic(
        cluster.node(1),
        "majority",
        4,
        3,
        &[("min.insync.replicas", "2")],
    );
    let (partition, replicas) = partition_with(&mut cluster, "majority", 4);
    let leader = cluster.leader_of("majority", partition, Duration::from_secs(5));
    // The leader dies with broker 4 (or, if that leads, a voter with it).
    let victims = [
        4,
        *replicas
            .iter()
            .find(|&&id| id != 4 && (leader == 4 || id == leader))
            .unwrap(),
    ];
    let survivor = *replicas.iter().find(|id| !victims.contains(id)).unwrap();
    let mut acknowledged = send(
        &mut cluster,
        leader,
        "majority",
        partition,
        -1,
        "all-three",
        50,
    );

    for victim in victims {
        cluster.node(victim).kill9();
    }
    let killed = Instant::now();
    wait_for_state(
        &mut cluster,
        survivor,
        "majority",
        partition,
        "the survivor to lead alone",
        |state| state.leader == survivor && state.isr == [survivor],
    );
    println!(
        "brokers {victims:?} killed; {survivor} leads alone {:?} later",
        killed.elapsed()
    );
    let refused = produce(
        &mut cluster.node(survivor).connect(),
        "majority",
        partition,
        -1,
        &[b"refused".to_vec()],
    )
    .expect("the survivor answers");
    assert_eq!(refused, Err(19), "acks=all: NOT_ENOUGH_REPLICAS");
    acknowledged.extend(send(
        &mut cluster,
        survivor,
        "majority",
        partition,
        1,
        "alone",
        50,
    ));

    for victim in victims {
        cluster.node(victim).restart();
    }
    let restarted = Instant::now();
    wait_for_state(
        &mut cluster,
        survivor,
        "majority",
        partition,
        "every replica back in the ISR",
        |state| state.isr.len() == 3,
    );
    println!("full ISR {:?} after the restarts", restarted.elapsed());
    let leader = cluster.leader_of("majority", partition, Duration::from_secs(5));
    acknowledged.extend(send(
        &mut cluster,
        leader,
        "majority",
        partition,
        -1,
        "again",
        50,
    ));

    let stored = stored_values(&mut cluster, "majority", partition);
    assert_eq!(stored.len(), acknowledged.len(), "nothing else was written");
    for (value, offset) in &acknowledged {
        assert_eq!(&stored[*offset as usize], value, "offset {offset}");
    }
    let high_watermark = assert_replicas_identical(&mut cluster, "majority", partition);
    assert_eq!(high_watermark, 150);
}

#[test]
fn a_restarted_follower_that_leads_at_once_keeps_every_acknowledged_record() {
    // KIP-101's first scenario: a follower restarts and, before it has
    // caught up for long, the leader dies and it takes over.
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    create_replicated_topic(cluster.node(1), "restarted", 1, 2);
    let state = cluster.node(1).view().unwrap().partitions[&("restarted".to_string(), 0)].clone();
    let leader = state.leader;
    let follower = *state.replicas.iter().find(|&&id| id != leader).unwrap();
    let witness = (1..=3).find(|id| !state.replicas.contains(id)).unwrap();
    let producer = HistoryProducer::start(&cluster, "restarted", 1);
    let under_load = |at_least: usize| (producer.acknowledged() >= at_least).then_some(());
    wait_for(
        Duration::from_secs(10),
        "records before the restart",
        || under_load(300),
    );
    cluster.node(follower).restart();
    wait_for_state(
        &mut cluster,
        witness,
        "restarted",
        0,
        "the restarted follower back in the ISR",
        |state| state.isr.contains(&follower),
    );
    // Its log is whole, though its own high watermark is still unknown:
    // the leader dies now.
    cluster.node(leader).kill9();
    let killed_at = producer.acknowledged();
    wait_for_state(
        &mut cluster,
        witness,
        "restarted",
        0,
        "the restarted follower to lead",
        |state| state.leader == follower,
    );
    wait_for(
        Duration::from_secs(15),
        "records from the new leader",
        || under_load(killed_at + 300),
    );
    cluster.node(leader).restart();
    wait_for_state(
        &mut cluster,
        witness,
        "restarted",
        0,
        "the old leader back in the ISR",
        |state| state.isr.len() == 2,
    );
    let acknowledged = producer.finish();
    check_history(&mut cluster, "restarted", &acknowledged);
    assert_replicas_identical(&mut cluster, "restarted", 0);
    println!(
        "{} records acknowledged, {killed_at} before leader {leader} died; all kept",
        acknowledged[0].len()
    );
}

#[test]
fn replicas_with_divergent_tails_converge_on_the_new_leaders_log() {
    // KIP-101's second scenario: both replicas die; the one that returns
    // first lost its unflushed tail and leads, taking new writes at the
    // offsets the other still holds old records at.
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start_with_voters(4, 3);
    create_replicated_topic(cluster.node(1), "divergent", 4, 2);
    let (partition, replicas) = partition_with(&mut cluster, "divergent", 4);
    let old = cluster.leader_of("divergent", partition, Duration::from_secs(5));
    let new = *replicas.iter().find(|&&id| id != old).unwrap();
    let witness = (1..=3).find(|id| !replicas.contains(id)).unwrap();
    let committed = send(
        &mut cluster,
        old,
        "divergent",
        partition,
        -1,
        "committed",
        20,
    );
    send(&mut cluster, old, "divergent", partition, 1, "tail", 20);
    wait_for(
        Duration::from_secs(10),
        "the follower to copy the tail",
        || {
            let copy =
                replica_batches(&mut cluster.node(new).connect(), "divergent", partition, 40);
            (copy.len() == 40).then_some(())
        },
    );

    cluster.node(old).kill9();
    wait_for_state(
        &mut cluster,
        witness,
        "divergent",
        partition,
        "the follower to lead",
        |state| state.leader == new,
    );
    cluster.node(new).kill9();
    wait_for_state(
        &mut cluster,
        witness,
        "divergent",
        partition,
        "no leader",
        |state| state.leader == -1,
    );
    let end = cluster
        .node(new)
        .lose_log_tail("divergent", partition, committed.len() as i64);
    assert_eq!(end, 20);

    cluster.node(new).restart();
    wait_for_state(
        &mut cluster,
        witness,
        "divergent",
        partition,
        "the shortened replica to lead",
        |state| state.leader == new,
    );
    let written = send(&mut cluster, new, "divergent", partition, -1, "new", 10);
    assert_eq!(written[0].1, 20, "new records go where the lost tail was");
    cluster.node(old).restart();
    wait_for_state(
        &mut cluster,
        witness,
        "divergent",
        partition,
        "the old leader back in the ISR",
        |state| state.isr.len() == 2,
    );
    let stored = stored_values(&mut cluster, "divergent", partition);
    let expected: Vec<String> = committed
        .iter()
        .chain(&written)
        .map(|(value, _)| value.clone())
        .collect();
    assert_eq!(stored, expected, "the new leader's log, no old tail");
    assert_eq!(
        assert_replicas_identical(&mut cluster, "divergent", partition),
        30
    );
    assert!(
        cluster.node(old).log().contains("truncated a suffix"),
        "the old leader reports its truncation"
    );
}

#[test]
fn unclean_election_only_where_enabled_and_the_loss_is_reported() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start_with_voters(4, 3);
    create_configured_topic(
        cluster.node(1),
        "risky",
        4,
        2,
        &[("unclean.leader.election.enable", "true")],
    );
    create_replicated_topic(cluster.node(1), "safe", 4, 2);
    // Two partitions on the same pair of brokers, one of them broker 4.
    let (risky, replicas) = partition_with(&mut cluster, "risky", 4);
    let view = cluster.node(1).view().unwrap();
    let safe = view
        .partitions
        .iter()
        .find(|((name, _), state)| {
            let mut pair = state.replicas.clone();
            pair.sort_unstable();
            let mut wanted = replicas.clone();
            wanted.sort_unstable();
            name == "safe" && pair == wanted
        })
        .map(|((_, index), _)| *index)
        .expect("a safe partition on the same brokers");
    let stale = 4;
    let fresh = *replicas.iter().find(|&&id| id != stale).unwrap();
    let witness = (1..=3).find(|id| !replicas.contains(id)).unwrap();
    let both = [("risky", risky), ("safe", safe)];
    let mut before = Vec::new();
    for (topic, partition) in both {
        let leader = cluster.leader_of(topic, partition, Duration::from_secs(5));
        before.push(send(
            &mut cluster,
            leader,
            topic,
            partition,
            -1,
            "before",
            10,
        ));
    }

    // Broker 4 falls out of sync: records go to the other replica only.
    cluster.node(stale).kill9();
    for (topic, partition) in both {
        wait_for_state(
            &mut cluster,
            witness,
            topic,
            partition,
            "an ISR of one",
            |state| state.isr == [fresh] && state.leader == fresh,
        );
        send(
            &mut cluster,
            fresh,
            topic,
            partition,
            -1,
            "only-on-fresh",
            10,
        );
    }
    // The in-sync replica dies; the stale one returns alone.
    cluster.node(fresh).kill9();
    for (topic, partition) in both {
        wait_for_state(
            &mut cluster,
            witness,
            topic,
            partition,
            "no leader",
            |state| state.leader == -1,
        );
    }
    cluster.node(stale).restart();
    let elected = wait_for_state(
        &mut cluster,
        witness,
        "risky",
        risky,
        "an unclean leader",
        |state| state.leader == stale,
    );
    assert_eq!(elected.isr, [stale]);
    // A clean election of the other partition would have come with the
    // stale broker's registration, before the unclean one just seen.
    let waiting =
        cluster.node(witness).view().unwrap().partitions[&("safe".to_string(), safe)].clone();
    assert_eq!(
        (waiting.leader, waiting.isr.clone()),
        (-1, vec![fresh]),
        "without the config the partition waits for its in-sync replica"
    );
    let elections: f64 = [1, 2, 3, 4]
        .into_iter()
        .filter_map(|id| {
            cluster
                .node(id)
                .metric("strata_unclean_leader_elections_total")
        })
        .sum();
    assert_eq!(elections, 1.0, "one unclean election, counted once");
    assert!(
        cluster.logs().contains("unclean leader election"),
        "the controller reports the loss"
    );
    let after = send(&mut cluster, stale, "risky", risky, -1, "after", 10);
    assert_eq!(
        after[0].1, 10,
        "the stale replica's log ended after 'before'"
    );

    cluster.node(fresh).restart();
    for (topic, partition) in both {
        wait_for_state(
            &mut cluster,
            witness,
            topic,
            partition,
            "a full ISR",
            |state| state.isr.len() == 2,
        );
    }
    let values = |records: &[(String, i64)]| -> Vec<String> {
        records.iter().map(|(value, _)| value.clone()).collect()
    };
    let only_on_fresh: Vec<String> = (0..10)
        .map(|index| format!("only-on-fresh-{index}"))
        .collect();
    assert_eq!(
        stored_values(&mut cluster, "safe", safe),
        [values(&before[1]), only_on_fresh].concat(),
        "the safe partition kept everything"
    );
    assert_eq!(
        stored_values(&mut cluster, "risky", risky),
        [values(&before[0]), values(&after)].concat(),
        "the risky partition lost what only the fresh replica had"
    );
    assert_replicas_identical(&mut cluster, "safe", safe);
    assert_replicas_identical(&mut cluster, "risky", risky);
}

#[test]
fn a_reassignment_under_acks_all_load_keeps_every_record_and_removes_the_old_copies() {
    let _serial = one_cluster_at_a_time();
    // Four brokers, three voters: each partition can move to two brokers
    // that never held it.
    let mut cluster = Cluster::start_with_voters(4, 3);
    create_replicated_topic(&cluster.nodes[0], "moving", 2, 2);
    let producer = HistoryProducer::start(&cluster, "moving", 2);
    wait_for(Duration::from_secs(30), "writes before the move", || {
        (producer.acknowledged() >= 2_000).then_some(())
    });

    let view = cluster.node(1).view().expect("broker 1 answers");
    let moves: Vec<(i32, Vec<i32>, Vec<i32>)> = (0..2)
        .map(|partition| {
            let original = view.partitions[&("moving".to_string(), partition)]
                .replicas
                .clone();
            let target: Vec<i32> = (1..=4).filter(|id| !original.contains(id)).collect();
            (partition, original, target)
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin = runtime
        .block_on(strata_client::Admin::connect(&cluster.bootstrap()))
        .unwrap();
    let requested: Vec<(i32, Option<Vec<i32>>)> = moves
        .iter()
        .map(|(partition, _, target)| (*partition, Some(target.clone())))
        .collect();
    let started = Instant::now();
    runtime
        .block_on(admin.reassign_partitions("moving", &requested))
        .unwrap();
    wait_for(Duration::from_secs(60), "the move to complete", || {
        let moving = runtime.block_on(admin.list_reassignments()).ok()?;
        let view = cluster.nodes[0].view()?;
        let done = moving.is_empty()
            && moves.iter().all(|(partition, _, target)| {
                view.partitions[&("moving".to_string(), *partition)].replicas == *target
            });
        done.then_some(())
    });
    println!(
        "2 partitions moved to new replicas in {} ms under acks=all load",
        started.elapsed().as_millis()
    );

    // Writers on both sides of the move: the new leaders take writes too.
    let moved_at = producer.acknowledged();
    wait_for(Duration::from_secs(30), "writes after the move", || {
        (producer.acknowledged() >= moved_at + 2_000).then_some(())
    });
    let history = producer.finish();
    let stored = check_history(&mut cluster, "moving", &history);
    assert!(stored >= history.iter().map(Vec::len).sum::<usize>());
    for (partition, original, target) in &moves {
        assert_replicas_identical(&mut cluster, "moving", *partition);
        for broker in original.iter().filter(|broker| !target.contains(broker)) {
            let dir = cluster
                .node(*broker)
                .data_dir
                .join(format!("moving-{partition}"));
            wait_for(
                Duration::from_secs(10),
                "the old copy to be removed",
                || (!dir.exists()).then_some(()),
            );
        }
    }
}
