//! Replication on three real `logd` processes: acks=all records survive the
//! leader's kill -9 and three minutes of random kills and pauses, and a
//! paused follower leaves the ISR and rejoins.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_tests::{
    create_configured_topic, create_replicated_topic, fetch_all, one_cluster_at_a_time, produce,
    wait_for, Cluster, Connection, View, REPLICA_LAG_MS,
};

/// Error codes that mean the record was not appended, so sending it again
/// cannot write it twice: not the leader, unknown partition, too few
/// in-sync replicas, a stale leader epoch.
const NOT_APPENDED: [i16; 4] = [6, 3, 19, 74];

/// Per partition: (sequence, offset) of every acknowledged record.
type History = Vec<Vec<(u64, i64)>>;

/// Produces sequence numbers with acks=all, one record per request, to every
/// partition of a topic in turn, each to its leader as the brokers report
/// it. A record refused before it was appended is sent again; one whose fate
/// is unknown (a timeout, a lost connection) is not, so no record can be
/// stored twice.
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
    let leader = addresses.iter().find_map(|address| {
        let view = View::of(*address)?;
        let leader = view.partitions.get(&(topic.to_string(), partition))?.leader;
        (leader > 0).then_some(leader)
    })?;
    let mut connection = Connection::open(addresses[leader as usize - 1]).ok()?;
    connection
        .stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    Some(connection)
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
