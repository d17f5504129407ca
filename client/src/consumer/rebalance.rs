//! Keeping a group member's partitions current from `poll`: acting on a
//! fence or a rebalance the heartbeat task saw, rejoining, handing back
//! revoked partitions (committing first with auto-commit) and telling the
//! rebalance listener.

use std::sync::Arc;
use std::time::Instant;

use tracing::warn;

use super::config::Offset;
use super::Consumer;
use super::{PartitionState, Rebalance};
use crate::error::Result;
use crate::group::Membership;

impl Consumer {
    /// Commits positions for auto-commit: a failure is logged, the records
    /// come again (at least once).
    pub(super) async fn commit_positions(&mut self, of: Option<&[(String, i32)]>) {
        let offsets = self.positions(of);
        if let Some(membership) = &self.membership {
            if let Err(error) = membership.commit(&offsets).await {
                warn!(group = membership.group_id(), %error, "auto-commit failed; the records since the last commit will be read again");
            }
        }
        self.last_commit = Instant::now();
    }

    pub(super) fn notify(&mut self, event: Rebalance) {
        if let Some(listener) = &mut self.listener {
            (listener.get_mut().expect("rebalance listener"))(&event);
        }
    }

    /// Keeps the group membership current: acts on a fence or a rebalance
    /// the heartbeat task saw, joins when needed, auto-commits when due.
    pub(super) async fn maintain_group(&mut self) -> Result<()> {
        let Some(membership) = self.membership.clone() else {
            return Ok(());
        };
        if self.subscription.is_empty() {
            return Ok(());
        }
        if membership.take_fenced() {
            let lost = self.assignment();
            self.partitions.clear();
            self.buffered.clear();
            membership.reset();
            self.notify(Rebalance::Lost(lost));
            self.join_needed = true;
        }
        while self.join_needed || membership.rejoin_requested() {
            self.rebalance(&membership).await?;
        }
        if let Some(interval) = self.config.auto_commit_interval {
            if self.last_commit.elapsed() >= interval {
                self.commit_positions(None).await;
            }
        }
        Ok(())
    }

    /// One join: gives back what the assignment no longer holds, starts
    /// what it adds (at the committed offsets).
    pub(super) async fn rebalance(&mut self, membership: &Membership) -> Result<()> {
        let cooperative = self
            .config
            .group
            .assignors
            .iter()
            .all(|assignor| assignor.is_cooperative());
        let auto_commit = self.config.auto_commit_interval.is_some();
        if !cooperative && !self.partitions.is_empty() {
            if auto_commit {
                self.commit_positions(None).await;
            }
            let revoked = self.assignment();
            self.partitions.clear();
            self.buffered.clear();
            self.notify(Rebalance::Revoked(revoked));
        }
        let owned = self.assignment();
        let assigned = membership.join(&self.subscription, &owned).await?;
        let revoked: Vec<(String, i32)> = owned
            .iter()
            .filter(|partition| !assigned.contains(partition))
            .cloned()
            .collect();
        let added: Vec<(String, i32)> = assigned
            .iter()
            .filter(|partition| !owned.contains(partition))
            .cloned()
            .collect();
        if !revoked.is_empty() {
            if auto_commit {
                self.commit_positions(Some(&revoked)).await;
            }
            self.partitions.retain(|(topic, partition), _| {
                !revoked
                    .iter()
                    .any(|(t, p)| **topic == **t && partition == p)
            });
            let partitions = &self.partitions;
            self.buffered
                .retain(|buffered| partitions.contains_key(&buffered.partition));
            self.notify(Rebalance::Revoked(revoked.clone()));
        }
        if !added.is_empty() {
            let committed = membership
                .committed(Some(&added), self.require_stable())
                .await?;
            for key in &added {
                let start = committed
                    .get(key)
                    .map_or_else(|| self.reset_offset(), |&offset| Offset::At(offset));
                self.partitions.insert(
                    (Arc::from(key.0.as_str()), key.1),
                    PartitionState::starting_at(start),
                );
            }
            self.notify(Rebalance::Assigned(added));
        }
        // Cooperative: what this member gave up goes to its new owner in
        // the next round, which this member's rejoin starts.
        self.join_needed = cooperative && !revoked.is_empty();
        Ok(())
    }
}
