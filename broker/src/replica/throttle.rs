//! Throttled catch-up of replicas a reassignment adds: a new replica copies
//! the whole log from its leader, and unthrottled that copy competes with
//! producers and consumers for the leader's disk and network. A topic's
//! `replication.throttled.rate` caps it: each leader serves the topic's
//! adding replicas (those not yet in the ISR) at most that many bytes per
//! second, shared by all of them. Replicas in the ISR are never throttled,
//! so the throttle cannot slow acks=all or shrink the ISR.
//!
//! A token bucket per topic holding at most one second of rate: a read may
//! overdraw it by one batch (a follower always gets whole batches), and the
//! debt is paid back by waiting before the next read.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

use crate::controller::metadata::{BrokerId, TopicRecord};
use crate::topic_config::REPLICATION_THROTTLED_RATE;

#[derive(Default)]
pub struct CatchUpThrottle {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    rate: u64,
    /// Bytes that may be read now; negative after an overdraft.
    tokens: f64,
    refilled: Instant,
}

impl CatchUpThrottle {
    /// How many bytes of partition `index` of `topic` the leader may send
    /// `follower` now: `None` if this copy is not throttled, `Some(0)` if it
    /// must wait for the bucket to refill.
    pub fn allowance(
        &self,
        topic: &TopicRecord,
        index: usize,
        follower: BrokerId,
        now: Instant,
    ) -> Option<usize> {
        let rate = throttled_rate(topic)?;
        let partition = topic.partitions.get(index)?;
        let reassignment = partition.reassignment.as_ref()?;
        if partition.isr.contains(&follower) || !reassignment.adding().contains(&follower) {
            return None;
        }
        let mut buckets = self.buckets.lock().expect("throttle lock");
        let bucket = buckets.entry(topic.name.clone()).or_insert(Bucket {
            rate,
            tokens: rate as f64,
            refilled: now,
        });
        bucket.rate = rate;
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate as f64).min(rate as f64);
        bucket.refilled = now;
        Some(bucket.tokens.max(0.0) as usize)
    }

    /// Counts `bytes` sent on a throttled copy of `topic`.
    pub fn spend(&self, topic: &str, bytes: usize) {
        if let Some(bucket) = self.buckets.lock().expect("throttle lock").get_mut(topic) {
            bucket.tokens -= bytes as f64;
        }
    }
}

/// The topic's `replication.throttled.rate`, if it sets a positive one.
fn throttled_rate(topic: &TopicRecord) -> Option<u64> {
    topic
        .configs
        .get(REPLICATION_THROTTLED_RATE)?
        .parse()
        .ok()
        .filter(|rate| *rate > 0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::controller::metadata::BrokerId as B;
    use crate::controller::metadata::{LeaderEpoch, PartitionEpoch, PartitionRecord, Reassignment};

    fn topic(rate: Option<&str>) -> TopicRecord {
        let partition = PartitionRecord {
            replicas: vec![B(1), B(2), B(3)],
            leader: B(1),
            leader_epoch: LeaderEpoch(0),
            isr: vec![B(1), B(2)],
            partition_epoch: PartitionEpoch(0),
            reassignment: Some(Reassignment {
                target: vec![B(1), B(3)],
                original: vec![B(1), B(2)],
            }),
        };
        TopicRecord {
            name: "orders".into(),
            topic_id: Uuid::nil(),
            partitions: vec![partition],
            configs: rate
                .map(|rate| {
                    BTreeMap::from([(REPLICATION_THROTTLED_RATE.to_string(), rate.to_string())])
                })
                .unwrap_or_default(),
        }
    }

    #[test]
    fn only_adding_replicas_out_of_the_isr_are_throttled_at_the_rate() {
        let throttle = CatchUpThrottle::default();
        let start = Instant::now();
        let throttled = topic(Some("1000"));
        assert_eq!(
            throttle.allowance(&throttled, 0, B(2), start),
            None,
            "in the ISR"
        );
        assert_eq!(
            throttle.allowance(&topic(None), 0, B(3), start),
            None,
            "no rate"
        );
        assert_eq!(
            throttle.allowance(&topic(Some("0")), 0, B(3), start),
            None,
            "rate 0"
        );
        assert_eq!(throttle.allowance(&throttled, 0, B(3), start), Some(1000));
        // A batch larger than the allowance overdraws; the debt is waited out.
        throttle.spend("orders", 1500);
        assert_eq!(throttle.allowance(&throttled, 0, B(3), start), Some(0));
        let later = start + Duration::from_millis(400);
        assert_eq!(throttle.allowance(&throttled, 0, B(3), later), Some(0));
        let later = start + Duration::from_millis(800);
        assert_eq!(throttle.allowance(&throttled, 0, B(3), later), Some(300));
        // Idle time refills at most one second's worth.
        let much_later = start + Duration::from_secs(60);
        assert_eq!(
            throttle.allowance(&throttled, 0, B(3), much_later),
            Some(1000)
        );
    }
}
