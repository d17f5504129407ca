//! What a partition's leader knows of its followers: how far each has
//! durably copied the log, when each was last caught up, the ISR as the
//! controller committed it and an ISR change in flight. From these come the
//! high watermark and the ISR changes to propose. A pure decision core: the
//! clock is a parameter.
//!
//! The high watermark is the minimum, over the ISR, of each member's
//! durable log end offset (the leader's own from its flushes, a follower's
//! as its fetches report it: a follower fetches again while its flush of
//! what it copied still runs, so its log end runs ahead of what is durable
//! there). While an expansion is in flight its new member
//! counts too (Kafka's "maximal ISR"): a replica must never join the ISR
//! behind the high watermark, or electing it could lose acknowledged records.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::controller::metadata::{BrokerId, PartitionEpoch};

/// Where a follower stands when it fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerPosition {
    /// Its log end: the offset it fetches at.
    pub log_end: i64,
    /// How much of its log is durable (at most `log_end`).
    pub durable_end: i64,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The durable log end offset the follower last reported; `None` until
    /// it fetches from this leader.
    durable_end: Option<i64>,
    /// When it last had everything the leader had at its previous fetch.
    caught_up_at: Instant,
    last_fetch_at: Instant,
    leader_end_at_last_fetch: i64,
}

#[derive(Debug)]
pub struct InSync {
    me: BrokerId,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    partition_epoch: PartitionEpoch,
    /// The ISR proposed to the controller and not yet committed.
    pending: Option<Vec<BrokerId>>,
    followers: HashMap<BrokerId, Progress>,
}

/// An ISR change for the leader to propose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub isr: Vec<BrokerId>,
    pub partition_epoch: PartitionEpoch,
}

impl InSync {
    pub fn new(me: BrokerId) -> Self {
        InSync {
            me,
            replicas: vec![me],
            isr: vec![me],
            partition_epoch: PartitionEpoch::default(),
            pending: None,
            followers: HashMap::new(),
        }
    }

    /// Takes the committed assignment. A new leadership (`fresh`) forgets
    /// what earlier terms knew: every follower's offset is unknown again,
    /// and in-sync followers get a whole lag interval to show up.
    pub fn assign(
        &mut self,
        replicas: &[BrokerId],
        isr: &[BrokerId],
        partition_epoch: PartitionEpoch,
        fresh: bool,
        now: Instant,
    ) {
        if fresh {
            self.followers.clear();
            self.pending = None;
        }
        if partition_epoch != self.partition_epoch {
            // Whatever was in flight has been decided (or overtaken).
            self.pending = None;
        }
        self.replicas = replicas.to_vec();
        self.isr = isr.to_vec();
        self.partition_epoch = partition_epoch;
        for &replica in replicas.iter().filter(|&&replica| replica != self.me) {
            self.followers.entry(replica).or_insert(Progress {
                durable_end: None,
                caught_up_at: now,
                last_fetch_at: now,
                leader_end_at_last_fetch: i64::MAX,
            });
        }
        self.followers
            .retain(|follower, _| replicas.contains(follower));
    }

    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    /// A follower fetched from `position` while the leader's log ended at
    /// `leader_end`. Kafka's rule: it was caught up at its previous fetch if
    /// its log now ends at least where the leader's did then.
    pub fn record_fetch(
        &mut self,
        follower: BrokerId,
        position: FollowerPosition,
        leader_end: i64,
        now: Instant,
    ) {
        let Some(progress) = self.followers.get_mut(&follower) else {
            return;
        };
        if position.log_end >= leader_end {
            progress.caught_up_at = now;
        } else if position.log_end >= progress.leader_end_at_last_fetch {
            progress.caught_up_at = progress.caught_up_at.max(progress.last_fetch_at);
        }
        progress.durable_end = Some(position.durable_end);
        progress.last_fetch_at = now;
        progress.leader_end_at_last_fetch = leader_end;
    }

    /// The high watermark the leader's `durable_end` and the followers'
    /// offsets allow; `None` while an ISR member's offset is unknown.
    pub fn high_watermark(&self, durable_end: i64) -> Option<i64> {
        let mut members = self.isr.clone();
        members.extend(self.pending.iter().flatten().copied());
        members
            .into_iter()
            .filter(|&member| member != self.me)
            .try_fold(durable_end, |low, member| {
                Some(low.min(self.followers.get(&member)?.durable_end?))
            })
    }

    /// The ISR change due now, if none is in flight: members that have not
    /// been caught up for `lag_max` leave; replicas that have been, and
    /// whose durable log reached `high_watermark`, join. Marks it in flight.
    pub fn change_due(
        &mut self,
        high_watermark: i64,
        now: Instant,
        lag_max: Duration,
    ) -> Option<IsrChange> {
        if self.pending.is_some() {
            return None;
        }
        let recently_caught_up = |replica: &BrokerId| {
            *replica == self.me
                || self
                    .followers
                    .get(replica)
                    .is_some_and(|progress| now.duration_since(progress.caught_up_at) <= lag_max)
        };
        let mut isr: Vec<BrokerId> = self
            .isr
            .iter()
            .copied()
            .filter(recently_caught_up)
            .collect();
        for replica in &self.replicas {
            let reached = self
                .followers
                .get(replica)
                .and_then(|progress| progress.durable_end)
                .is_some_and(|durable_end| durable_end >= high_watermark);
            if !isr.contains(replica) && reached && recently_caught_up(replica) {
                isr.push(*replica);
            }
        }
        if isr == self.isr {
            return None;
        }
        // Keep replica order, so every broker lists an ISR the same way.
        isr.sort_by_key(|member| self.replicas.iter().position(|replica| replica == member));
        self.pending = Some(isr.clone());
        Some(IsrChange {
            isr,
            partition_epoch: self.partition_epoch,
        })
    }

    /// How far the durable log of the furthest-behind follower that has
    /// fetched trails `leader_end`, in offsets; `None` with no follower
    /// heard from.
    pub fn max_lag(&self, leader_end: i64) -> Option<i64> {
        self.followers
            .values()
            .filter_map(|progress| progress.durable_end)
            .map(|durable_end| (leader_end - durable_end).max(0))
            .max()
    }

    /// The change in flight was decided (committed, refused or lost): the
    /// next one may be proposed; a committed one arrives with the metadata.
    pub fn change_settled(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::BrokerId as B;

    const LAG: Duration = Duration::from_secs(10);

    /// A follower that holds its whole log durably.
    fn flushed(log_end: i64) -> FollowerPosition {
        FollowerPosition {
            log_end,
            durable_end: log_end,
        }
    }

    fn leader_of_three(now: Instant) -> InSync {
        let mut in_sync = InSync::new(B(1));
        in_sync.assign(
            &[B(1), B(2), B(3)],
            &[B(1), B(2), B(3)],
            PartitionEpoch(0),
            true,
            now,
        );
        in_sync
    }

    #[test]
    fn the_high_watermark_waits_for_every_member_of_the_isr() {
        let now = Instant::now();
        let mut in_sync = leader_of_three(now);
        assert_eq!(
            in_sync.high_watermark(100),
            None,
            "followers not heard from yet"
        );
        in_sync.record_fetch(B(2), flushed(80), 100, now);
        assert_eq!(in_sync.high_watermark(100), None);
        in_sync.record_fetch(B(3), flushed(90), 100, now);
        assert_eq!(in_sync.high_watermark(100), Some(80));
        assert_eq!(
            in_sync.high_watermark(70),
            Some(70),
            "the leader's own durable end counts"
        );
    }

    #[test]
    fn a_lagging_follower_leaves_and_a_caught_up_one_returns() {
        let start = Instant::now();
        let mut in_sync = leader_of_three(start);
        in_sync.record_fetch(B(2), flushed(100), 100, start);
        in_sync.record_fetch(B(3), flushed(100), 100, start);
        let later = start + LAG + Duration::from_secs(1);
        in_sync.record_fetch(B(2), flushed(150), 150, later);
        let change = in_sync.change_due(100, later, LAG).expect("3 is lagging");
        assert_eq!(change.isr, vec![B(1), B(2)]);
        assert_eq!(
            in_sync.change_due(100, later, LAG),
            None,
            "one change in flight"
        );
        in_sync.assign(
            &[B(1), B(2), B(3)],
            &[B(1), B(2)],
            PartitionEpoch(1),
            false,
            later,
        );
        assert_eq!(
            in_sync.high_watermark(150),
            Some(150),
            "3 no longer holds it back"
        );

        in_sync.record_fetch(B(3), flushed(140), 150, later);
        let rejoin = in_sync.change_due(150, later, LAG);
        assert_eq!(rejoin, None, "behind the high watermark: not yet");
        let unflushed = FollowerPosition {
            log_end: 150,
            durable_end: 140,
        };
        in_sync.record_fetch(B(3), unflushed, 150, later);
        let rejoin = in_sync.change_due(150, later, LAG);
        assert_eq!(
            rejoin, None,
            "its log reached the high watermark, not yet durably"
        );
        in_sync.record_fetch(B(3), flushed(150), 150, later);
        let rejoin = in_sync.change_due(150, later, LAG).expect("caught up");
        assert_eq!(rejoin.isr, vec![B(1), B(2), B(3)]);
        assert_eq!(rejoin.partition_epoch, PartitionEpoch(1));
        assert_eq!(
            in_sync.high_watermark(160),
            Some(150),
            "a joining replica holds the high watermark while the change is in flight"
        );
    }

    #[test]
    fn a_follower_that_keeps_up_with_a_busy_leader_stays_in_sync() {
        let start = Instant::now();
        let mut in_sync = leader_of_three(start);
        let mut leader_end = 0;
        for second in 0..30 {
            let now = start + Duration::from_secs(second);
            // Each fetch asks for what the leader had at the previous one.
            in_sync.record_fetch(B(2), flushed(leader_end), leader_end + 50, now);
            in_sync.record_fetch(B(3), flushed(leader_end), leader_end + 50, now);
            leader_end += 50;
            assert_eq!(in_sync.change_due(0, now, LAG), None, "second {second}");
        }
    }

    #[test]
    fn a_follower_still_flushing_counts_as_caught_up_but_holds_the_high_watermark() {
        let start = Instant::now();
        let mut in_sync = leader_of_three(start);
        let mut leader_end = 0;
        for second in 0..30 {
            let now = start + Duration::from_secs(second);
            // Each fetch asks for what the leader had at the previous one,
            // with only the round before that flushed.
            let position = FollowerPosition {
                log_end: leader_end,
                durable_end: (leader_end - 50).max(0),
            };
            in_sync.record_fetch(B(2), position, leader_end + 50, now);
            in_sync.record_fetch(B(3), position, leader_end + 50, now);
            assert_eq!(
                in_sync.high_watermark(leader_end + 50),
                Some(position.durable_end),
                "second {second}"
            );
            leader_end += 50;
            assert_eq!(in_sync.change_due(0, now, LAG), None, "second {second}");
        }
    }
}
