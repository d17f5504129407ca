//! Three real `logd` processes, each a broker and a controller voter:
//! controller failover, broker fencing and return, a paused controller
//! leader, leader balance, kcat and kafka-python finding and following
//! partition leaders, and a soak of kill -9 / restart cycles checked for two
//! brokers ever leading one partition in the same leader epoch.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_tests::{
    create_replicated_topic, kcat_listing, kcat_produce_keyed_lines, one_cluster_at_a_time, python,
    wait_for, Cluster, Rng, View, SESSION_TIMEOUT_MS,
};

/// The controller leader and term that every running, unpaused broker but
/// `except` reports, if they agree on one other than `except`.
fn new_controller_leader(cluster: &mut Cluster, except: i32) -> Option<(i32, i32)> {
    let views: Vec<_> = cluster
        .nodes
        .iter_mut()
        .filter_map(|node| {
            let asked = node.node_id != except && !node.paused && node.is_running();
            asked.then(|| node.quorum())
        })
        .collect();
    let first = (*views.first()?)?;
    let agreed = first.0 != except && views.iter().all(|view| *view == Some(first));
    agreed.then_some(first)
}

#[test]
fn killing_the_controller_leader_elects_another_within_5_s_and_loses_no_metadata() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    for index in 0..5 {
        create_replicated_topic(cluster.node(1), &format!("before-{index}"), 3, 3);
    }
    let (leader, term) = cluster.controller_leader(Duration::from_secs(10));

    cluster.node(leader).kill9();
    let killed = Instant::now();
    let (new_leader, new_term) =
        wait_for(Duration::from_secs(5), "a new controller leader", || {
            new_controller_leader(&mut cluster, leader)
        });
    let elapsed = killed.elapsed();
    assert_ne!(new_leader, leader);
    assert!(new_term > term, "term {new_term} after {term}");
    println!("controller {leader} killed: broker {new_leader} leads in term {new_term} after {elapsed:?}");

    let survivor = cluster.node(new_leader);
    create_replicated_topic(survivor, "after", 3, 2);
    let view = survivor.view().expect("survivor answers");
    for index in 0..5 {
        let name = format!("before-{index}");
        assert!(
            (0..3).all(|partition| view.partitions.contains_key(&(name.clone(), partition))),
            "{name} survived the failover"
        );
    }

    // The old leader comes back as a follower and learns what it missed.
    cluster.node(leader).restart();
    let returned = cluster.node(leader);
    wait_for(
        Duration::from_secs(10),
        "the returned voter to see 'after'",
        || {
            let view = returned.view()?;
            view.partitions
                .contains_key(&("after".to_string(), 0))
                .then_some(())
        },
    );
    let agreed = cluster.controller_leader(Duration::from_secs(10));
    assert_eq!(agreed.0, new_leader, "a returning voter does not take over");
}

#[test]
fn a_killed_broker_is_fenced_its_partitions_move_and_it_returns_as_a_follower() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    create_replicated_topic(cluster.node(1), "replicated", 6, 3);
    create_replicated_topic(cluster.node(1), "single", 6, 1);
    let (controller, _) = cluster.controller_leader(Duration::from_secs(10));
    // A broker that is not the controller leader: this test is about
    // brokers; the one above is about the controller.
    let victim = (1..=3).find(|id| *id != controller).expect("three brokers");
    let witness = (1..=3).find(|id| *id != victim).expect("three brokers");
    let before = wait_for(
        Duration::from_secs(5),
        "every broker in the metadata",
        || {
            let view = cluster.node(witness).view()?;
            (view.brokers.len() == 3).then_some(view)
        },
    );

    cluster.node(victim).kill9();
    let killed = Instant::now();
    let fenced = wait_for(Duration::from_secs(10), "the victim to be fenced", || {
        let view = cluster.node(witness).view()?;
        (!view.brokers.contains(&victim)).then_some(view)
    });
    let fenced_after = killed.elapsed();
    println!("broker {victim} fenced {fenced_after:?} after kill -9 (session timeout {SESSION_TIMEOUT_MS} ms)");
    assert!(
        fenced_after < Duration::from_millis(SESSION_TIMEOUT_MS + 1_500),
        "fenced within the session timeout and a check interval: {fenced_after:?}"
    );
    for (key, old) in &before.partitions {
        let new = &fenced.partitions[key];
        if old.leader != victim {
            assert_eq!(
                (new.leader, new.leader_epoch),
                (old.leader, old.leader_epoch),
                "{key:?} untouched"
            );
            continue;
        }
        assert!(
            new.leader_epoch > old.leader_epoch,
            "{key:?}: epoch bumped: {old:?} -> {new:?}"
        );
        if old.isr.len() > 1 {
            assert!(
                new.leader != victim && old.isr.contains(&new.leader),
                "{key:?}: the new leader comes from the ISR: {old:?} -> {new:?}"
            );
            assert!(
                !new.isr.contains(&victim),
                "{key:?}: the fenced broker left the ISR"
            );
        } else {
            assert_eq!(
                new.leader, -1,
                "{key:?}: its only replica is fenced: no leader"
            );
        }
    }

    cluster.node(victim).restart();
    let returned = wait_for(Duration::from_secs(10), "the victim to be unfenced", || {
        let view = cluster.node(witness).view()?;
        let single_led = view
            .partitions
            .iter()
            .filter(|((topic, _), partition)| topic == "single" && partition.replicas == [victim])
            .all(|(_, partition)| partition.leader == victim);
        (view.brokers.contains(&victim) && single_led).then_some(view)
    });
    for (key, fenced_state) in &fenced.partitions {
        let now = &returned.partitions[key];
        if now.replicas == [victim] {
            assert!(
                now.leader_epoch > fenced_state.leader_epoch,
                "{key:?}: new epoch for the new life"
            );
        }
    }
    // It copies what it missed, rejoins every ISR, and gets back the
    // leadership of the partitions it is the preferred replica of.
    let restored = wait_for(
        Duration::from_secs(20),
        "the victim back in sync and leading",
        || {
            let view = cluster.node(witness).view()?;
            let all_in_sync = view
                .partitions
                .values()
                .filter(|partition| partition.replicas.contains(&victim))
                .all(|partition| partition.isr.contains(&victim));
            let preferred_led = view
                .partitions
                .values()
                .filter(|partition| partition.replicas[0] == victim)
                .all(|partition| partition.leader == victim);
            (all_in_sync && preferred_led).then_some(view)
        },
    );
    let leads = restored.leader_counts().get(&victim).copied().unwrap_or(0);
    let leading = wait_for(
        Duration::from_secs(5),
        "the victim to lead its share",
        || {
            let metric = cluster.node(victim).metric("strata_partitions_leading")?;
            (metric as usize == leads).then_some(metric)
        },
    );
    assert!(leading > 0.0);
}

#[test]
fn a_paused_controller_leader_comes_back_as_a_follower_without_acting_on_stale_state() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    create_replicated_topic(cluster.node(1), "early", 6, 1);
    let (leader, term) = cluster.controller_leader(Duration::from_secs(10));

    cluster.node(leader).pause();
    let paused = Instant::now();
    let (new_leader, new_term) = wait_for(Duration::from_secs(5), "a leader while paused", || {
        new_controller_leader(&mut cluster, leader)
    });
    assert!(new_term > term);
    create_replicated_topic(cluster.node(new_leader), "during-pause", 3, 1);
    // The paused broker is fenced meanwhile; wait for that to settle.
    std::thread::sleep(Duration::from_secs(20).saturating_sub(paused.elapsed()));
    let before_resume = cluster.node(new_leader).view().expect("leader answers");
    assert!(
        !before_resume.brokers.contains(&leader),
        "the paused broker was fenced"
    );

    cluster.node(leader).resume();
    let resumed = cluster.node(leader);
    wait_for(
        Duration::from_secs(10),
        "the resumed voter to follow",
        || {
            let view = resumed.view()?;
            let follows = resumed.quorum()?.0 == new_leader;
            (follows
                && view
                    .partitions
                    .contains_key(&("during-pause".to_string(), 0)))
            .then_some(())
        },
    );
    // Give a stale leader every chance to fence or re-elect on its old view.
    std::thread::sleep(Duration::from_millis(2 * SESSION_TIMEOUT_MS));
    let after = cluster.node(new_leader).view().expect("leader answers");
    assert!(
        after.brokers.contains(&leader),
        "the resumed broker is unfenced"
    );
    for (key, old) in &before_resume.partitions {
        let now = &after.partitions[key];
        if old.leader != -1 {
            assert_eq!(
                (now.leader, now.leader_epoch),
                (old.leader, old.leader_epoch),
                "{key:?}: nothing the resumed broker did moved leadership"
            );
        }
    }
    let (leader_now, term_now) = cluster.controller_leader(Duration::from_secs(10));
    assert_eq!(leader_now, new_leader);
    assert!(term_now >= new_term);
}

#[test]
fn leaders_of_100_topics_of_10_partitions_are_balanced_across_3_brokers() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    let started = Instant::now();
    for index in 0..100 {
        let name = format!("balance-{index}");
        create_replicated_topic(cluster.node(1 + index % 3), &name, 10, 3);
    }
    let elapsed = started.elapsed();
    println!("100 topics created one CreateTopics at a time in {elapsed:?}");
    let view = cluster.node(2).view().expect("broker answers");
    assert_eq!(view.partitions.len(), 1_000);
    let counts = view.leader_counts();
    println!("leaders per broker: {counts:?}");
    assert_eq!(counts.len(), 3, "every broker leads some: {counts:?}");
    for (broker, count) in counts {
        assert!(
            (300..=367).contains(&count),
            "broker {broker} leads {count} of 1000 (±10% of 333)"
        );
    }
}

/// (topic, partition, leader epoch) → the leader first reported for it.
type EpochLeaders = BTreeMap<(String, i32, i32), i32>;

#[test]
fn fifty_kill_restart_cycles_never_give_one_leader_epoch_to_two_brokers() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    create_replicated_topic(cluster.node(1), "soak", 12, 3);
    create_replicated_topic(cluster.node(1), "solo", 6, 1);
    let (mut rng, seed) = Rng::seeded_from("STRATA_SOAK_SEED");
    println!("soak seed {seed} (STRATA_SOAK_SEED replays it)");

    // The checker: every view any broker gives must agree on who leads each
    // (partition, leader epoch).
    let addresses: Vec<_> = cluster.nodes.iter().map(|node| node.address).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let leaders: Arc<Mutex<EpochLeaders>> = Arc::default();
    let checker = {
        let (stop, leaders) = (Arc::clone(&stop), Arc::clone(&leaders));
        std::thread::spawn(move || {
            let mut violations = Vec::new();
            let mut views = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (index, address) in addresses.iter().enumerate() {
                    let Some(view) = View::of(*address) else {
                        continue;
                    };
                    views += 1;
                    let mut leaders = leaders.lock().unwrap();
                    for ((topic, partition), state) in view.partitions {
                        if state.leader < 0 {
                            continue;
                        }
                        let key = (topic, partition, state.leader_epoch);
                        let first = *leaders.entry(key.clone()).or_insert(state.leader);
                        if first != state.leader {
                            violations.push(format!(
                                "{key:?}: broker {} reports leader {}, earlier {first}",
                                index + 1,
                                state.leader
                            ));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (violations, views)
        })
    };

    let started = Instant::now();
    for cycle in 0..50 {
        let victim = 1 + rng.below(3) as i32;
        let down_for = Duration::from_millis(rng.below(2_500));
        cluster.node(victim).kill9();
        std::thread::sleep(down_for);
        cluster.node(victim).restart();
        if cycle % 10 == 9 {
            println!("{} cycles in {:?}", cycle + 1, started.elapsed());
        }
    }
    // Settle: all brokers back, every single-replica partition led again.
    let settled = wait_for(Duration::from_secs(20), "the cluster to settle", || {
        let view = cluster.node(1).view()?;
        let all_led = view
            .partitions
            .values()
            .all(|partition| partition.leader > 0);
        (view.brokers.len() == 3 && all_led).then_some(view)
    });
    stop.store(true, Ordering::Relaxed);
    let (violations, views) = checker.join().expect("checker");
    let epochs = leaders.lock().unwrap().len();
    println!(
        "50 cycles in {:?}; {views} views checked, {epochs} (partition, epoch) leaders seen",
        started.elapsed()
    );
    assert!(
        violations.is_empty(),
        "two leaders for one epoch:\n{}",
        violations.join("\n")
    );
    assert!(
        epochs > settled.partitions.len(),
        "leadership moved during the soak"
    );
    cluster.controller_leader(Duration::from_secs(10));
}

const KAFKA_PYTHON_FOLLOWS_LEADERS: &str = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer, TopicPartition

bootstrap, topic, count = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])
producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False,
                         retries=20, retry_backoff_ms=200, request_timeout_ms=5000)
futures = [producer.send(topic, key=b"k%d" % index, value=b"v%d" % index) for index in range(count)]
producer.flush()
acked = [future.get(timeout=30) for future in futures]
consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=5000)
partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
consumer.assign(partitions)
consumer.seek_to_beginning()
read = sorted(int(message.value[1:]) for message in consumer)
assert read == list(range(count)), (len(read), read[:10])
print(len({(m.partition) for m in acked}))
"#;

#[test]
fn kcat_and_kafka_python_find_each_partitions_leader_and_follow_it_when_it_moves() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    let bootstrap = cluster.bootstrap();
    create_replicated_topic(cluster.node(1), "spread", 6, 1);
    let listing = kcat_listing(&bootstrap);
    assert!(
        listing.contains("3 brokers:") && listing.contains("topic \"spread\" with 6 partitions"),
        "{listing}"
    );

    // librdkafka sends each partition's batches to its own leader.
    assert!(
        kcat_produce_keyed_lines(&bootstrap, "spread", 3_000),
        "kcat -P failed:\n{}",
        cluster.logs()
    );
    let consumed = Command::new("kcat")
        .args([
            "-b", &bootstrap, "-C", "-t", "spread", "-e", "-f", "%p %k\n",
        ])
        .output()
        .expect("kcat -C");
    let mut keys: Vec<u32> = String::from_utf8_lossy(&consumed.stdout)
        .lines()
        .map(|line| line.split_once(' ').unwrap().1.parse().unwrap())
        .collect();
    let partitions: std::collections::BTreeSet<&str> = std::str::from_utf8(&consumed.stdout)
        .unwrap()
        .lines()
        .map(|line| line.split_once(' ').unwrap().0)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, (0..3_000).collect::<Vec<_>>(), "every line, once");
    assert_eq!(
        partitions.len(),
        6,
        "lines on every partition, so on every broker"
    );

    // Kill a broker: once it is fenced, kafka-python follows the moved
    // leaders of a replicated topic and every acknowledged record reads back.
    create_replicated_topic(cluster.node(1), "moving", 6, 3);
    let (controller, _) = cluster.controller_leader(Duration::from_secs(10));
    let victim = (1..=3).find(|id| *id != controller).unwrap();
    let witness = controller;
    cluster.node(victim).kill9();
    wait_for(Duration::from_secs(10), "the victim to be fenced", || {
        let view = cluster.node(witness).view()?;
        let moved = view
            .partitions
            .iter()
            .filter(|((topic, _), _)| topic == "moving")
            .all(|(_, partition)| partition.leader > 0 && partition.leader != victim);
        (!view.brokers.contains(&victim) && moved).then_some(())
    });
    let survivors = cluster
        .nodes
        .iter()
        .filter(|node| node.node_id != victim)
        .map(|node| node.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    let partitions_written = python(KAFKA_PYTHON_FOLLOWS_LEADERS, &[&survivors, "moving", "600"]);
    assert_eq!(
        partitions_written.trim(),
        "6",
        "records went to every partition"
    );
}

#[test]
fn a_broker_cut_off_from_the_controller_quorum_stops_leading_after_its_session() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start(3);
    create_replicated_topic(cluster.node(1), "cut-off", 6, 1);
    let led = |cluster: &mut Cluster| {
        cluster
            .node(3)
            .metric("strata_partitions_leading")
            .expect("metric")
    };
    let leading = wait_for(Duration::from_secs(5), "broker 3 to lead", || {
        Some(led(&mut cluster)).filter(|&count| count > 0.0)
    });
    let mut connection = cluster.node(3).connect();
    let partition = cluster
        .node(3)
        .view()
        .expect("broker 3 answers")
        .partitions
        .iter()
        .find(|(_, state)| state.leader == 3)
        .map(|((_, index), _)| *index)
        .expect("broker 3 leads a partition");

    // Without two voters, broker 3 can reach no quorum: its heartbeats fail.
    cluster.node(1).pause();
    cluster.node(2).pause();
    let cut_off = Instant::now();
    wait_for(
        Duration::from_millis(SESSION_TIMEOUT_MS + 2_000),
        "broker 3 to stop leading",
        || (led(&mut cluster) == 0.0).then_some(()),
    );
    let stopped_after = cut_off.elapsed();
    println!("broker 3 stopped leading {stopped_after:?} after losing the quorum");
    assert!(stopped_after >= Duration::from_millis(SESSION_TIMEOUT_MS - 2 * 200));
    let refused = strata_tests::produce(
        &mut connection,
        "cut-off",
        partition,
        1,
        &[b"late".to_vec()],
    )
    .expect("broker 3 answers");
    assert_eq!(
        refused,
        Err(6),
        "NOT_LEADER_OR_FOLLOWER while its session is lapsed"
    );

    cluster.node(1).resume();
    cluster.node(2).resume();
    wait_for(Duration::from_secs(15), "broker 3 to lead again", || {
        (led(&mut cluster) > 0.0).then_some(())
    });
    let accepted = strata_tests::produce(
        &mut connection,
        "cut-off",
        partition,
        1,
        &[b"back".to_vec()],
    );
    let leads_now = cluster.node(3).view().expect("answers").partitions
        [&("cut-off".to_string(), partition)]
        .leader;
    if leads_now == 3 {
        assert!(matches!(accepted, Ok(Ok(_))), "{accepted:?}");
    }
    assert!(leading > 0.0);
}

#[test]
fn a_broker_that_is_not_a_voter_registers_leads_and_is_fenced_like_any_other() {
    let _serial = one_cluster_at_a_time();
    let mut cluster = Cluster::start_with_voters(4, 3);
    create_replicated_topic(cluster.node(4), "four", 8, 1);
    let view = cluster.node(1).view().expect("broker 1 answers");
    assert_eq!(view.brokers, vec![1, 2, 3, 4]);
    let counts = view.leader_counts();
    assert_eq!(
        counts.get(&4),
        Some(&2),
        "broker 4 leads its share: {counts:?}"
    );
    let (controller, _) = cluster.controller_leader(Duration::from_secs(10));
    assert!((1..=3).contains(&controller), "only voters lead the quorum");

    cluster.node(4).kill9();
    wait_for(Duration::from_secs(10), "broker 4 to be fenced", || {
        let view = cluster.node(1).view()?;
        (!view.brokers.contains(&4)).then_some(())
    });
    cluster.node(4).restart();
    wait_for(Duration::from_secs(10), "broker 4 to lead again", || {
        let view = cluster.node(1).view()?;
        (view.leader_counts().get(&4) == Some(&2)).then_some(())
    });
}
