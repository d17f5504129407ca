//! Replication on three real `logd` processes: acks=all records survive the
//! leader's kill -9, and a paused follower leaves the ISR and rejoins.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_tests::{
    create_replicated_topic, fetch_all, produce, Cluster, Connection, REPLICA_LAG_MS,
};

/// One cluster at a time (see `cluster.rs`).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killing_the_leader_under_acks_all_load_loses_no_acknowledged_record() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(3);
    create_replicated_topic(cluster.node(1), "history", 1, 3);
    let addresses: Vec<_> = cluster.nodes.iter().map(|node| node.address).collect();

    // A producer that finds the leader, sends one record per request with
    // acks=all, and on any failure looks for the leader again and resends.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<Vec<(u64, i64)>>> = Arc::default();
    let producer = {
        let (stop, acknowledged, addresses) = (
            Arc::clone(&stop),
            Arc::clone(&acknowledged),
            addresses.clone(),
        );
        std::thread::spawn(move || {
            let mut sequence = 0u64;
            let mut connection: Option<Connection> = None;
            while !stop.load(Ordering::Relaxed) {
                if connection.is_none() {
                    let leader = addresses.iter().find_map(|address| {
                        let view = strata_tests::View::of(*address)?;
                        let leader = view.partitions.get(&("history".to_string(), 0))?.leader;
                        (leader > 0).then_some(leader)
                    });
                    connection = leader
                        .and_then(|leader| Connection::open(addresses[leader as usize - 1]).ok());
                }
                let Some(open) = connection.as_mut() else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                match produce(open, "history", 0, -1, &[sequence.to_string().into_bytes()]) {
                    Ok(Ok(offset)) => {
                        acknowledged.lock().unwrap().push((sequence, offset));
                        sequence += 1;
                    }
                    Ok(Err(_)) | Err(_) => {
                        connection = None;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
    };

    std::thread::sleep(Duration::from_secs(2));
    let leader = cluster.leader_of("history", 0, Duration::from_secs(5));
    cluster.node(leader).kill9();
    let killed_at = acknowledged.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(4));
    cluster.node(leader).restart();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    producer.join().expect("producer");

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > killed_at && killed_at > 0,
        "records acknowledged before ({killed_at}) and after ({}) the kill",
        acknowledged.len()
    );
    let final_leader = cluster.leader_of("history", 0, Duration::from_secs(10));
    let stored = fetch_all(&mut cluster.node(final_leader).connect(), "history", 0);
    let offsets: Vec<i64> = stored.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(
        offsets,
        (0..stored.len() as i64).collect::<Vec<_>>(),
        "offsets are dense"
    );
    for (sequence, offset) in &acknowledged {
        let value = stored
            .get(*offset as usize)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned());
        assert_eq!(
            value.as_deref(),
            Some(sequence.to_string().as_str()),
            "acknowledged record {sequence} is at offset {offset}"
        );
    }
    println!(
        "{} records acknowledged, leader {leader} killed after {killed_at}; all read back from broker {final_leader}",
        acknowledged.len()
    );
}

#[test]
fn a_paused_follower_leaves_the_isr_and_rejoins_once_caught_up() {
    let _serial = one_at_a_time();
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
