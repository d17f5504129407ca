//! A consumer waiting at the high watermark sees an acks=1 record after one
//! flush, long before `flush.ms`.

use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use strata_tests::{create_topic, produce, Logd};

#[test]
fn a_long_poll_at_the_high_watermark_returns_soon_after_an_acks_1_produce() {
    let logd = Logd::start();
    create_topic(&logd, "latency", 1);
    let mut consumer = logd.connect();
    for round in 0..5 {
        let mut producer = logd.connect();
        let waiting = std::thread::spawn(move || {
            let fetch = FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(round)
                .with_partition_max_bytes(1 << 20);
            let topic = FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("latency")))
                .with_partitions(vec![fetch]);
            let request = FetchRequest::default()
                .with_max_wait_ms(10_000)
                .with_min_bytes(1)
                .with_topics(vec![topic]);
            let ResponseKind::Fetch(response) = consumer
                .send(ApiKey::Fetch, 11, &RequestKind::Fetch(request))
                .unwrap()
            else {
                panic!("not a Fetch response");
            };
            let returned_at = Instant::now();
            let records = response.responses[0].partitions[0]
                .records
                .clone()
                .unwrap_or_default();
            (consumer, returned_at, records.len())
        });
        // A head start, not synchronisation: a fetch that arrives after the
        // produce asks for the flush itself, so the bound holds either way;
        // the head start makes the usual case the one where it already waits.
        std::thread::sleep(Duration::from_millis(300));
        let produced_at = Instant::now();
        assert_eq!(
            produce(&mut producer, "latency", 0, 1, &[b"now".to_vec()]).unwrap(),
            Ok(round)
        );
        let (returned_consumer, returned_at, bytes) = waiting.join().unwrap();
        consumer = returned_consumer;
        assert!(bytes > 0, "the fetch returned the record");
        let latency = returned_at.duration_since(produced_at);
        assert!(
            latency < Duration::from_millis(400),
            "round {round}: {latency:?}, flush.ms is 1000"
        );
    }
}
