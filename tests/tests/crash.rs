//! kill -9 in the middle of a stream of acks=all produces: after a restart
//! every acknowledged record is at its acknowledged offset, offsets are
//! dense, and nothing appears twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_tests::{create_topic, fetch_all, produce, Logd};

#[test]
fn kill_9_during_acks_all_produces_loses_nothing_acknowledged() {
    let mut logd = Logd::start();
    create_topic(&logd, "durable", 1);
    let mut acknowledged: HashMap<Vec<u8>, i64> = HashMap::new();
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..4)
            .map(|producer| {
                let mut connection = logd.connect();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for sequence in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let values: Vec<Vec<u8>> = (0..5)
                            .map(|index| {
                                format!("r{round}-p{producer}-s{sequence}-i{index}").into_bytes()
                            })
                            .collect();
                        match produce(&mut connection, "durable", 0, -1, &values) {
                            Ok(Ok(base_offset)) => {
                                acked.extend(values.into_iter().zip(base_offset..))
                            }
                            Ok(Err(code)) => panic!("produce refused with error {code}"),
                            Err(_connection_lost) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700 + round * 300));
        logd.kill9();
        stop.store(true, Ordering::Relaxed);
        for producer in producers {
            acknowledged.extend(producer.join().unwrap());
        }
        logd.restart();

        let records = fetch_all(&mut logd.connect(), "durable", 0);
        for (index, (offset, _)) in records.iter().enumerate() {
            assert_eq!(*offset, index as i64, "offsets are dense from 0");
        }
        let mut seen = HashMap::new();
        for (offset, value) in &records {
            assert!(
                seen.insert(value.clone(), *offset).is_none(),
                "{} appears twice",
                String::from_utf8_lossy(value)
            );
        }
        for (value, offset) in &acknowledged {
            assert_eq!(
                seen.get(value),
                Some(offset),
                "acknowledged {} lost or moved",
                String::from_utf8_lossy(value)
            );
        }
        assert!(
            acknowledged.len() > 100 * (round as usize + 1),
            "the stream made progress: {}",
            acknowledged.len()
        );
    }
}
