//! A partition's replication as follower and as the leader its followers
//! fetch from: serving a follower's fetch (records, and the follower's
//! position for the ISR), appending what the leader sent, and truncating to
//! the leader's log (KIP-101/279; the decision is the fetcher's `follow`).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use strata_storage::validate::{Source, ValidatedBatches};
use strata_storage::StorageError;
use tracing::warn;

use super::{FollowerRead, Partition};
use crate::controller::metadata::BrokerId;
use crate::replica::in_sync::FollowerPosition;

impl Partition {
    /// Serves follower `follower` fetching from `position` (at its log end)
    /// whose last batch was of `last_fetched_epoch`: records up to the log
    /// end, or where its log diverges from this one.
    pub fn serve_follower(
        &self,
        follower: BrokerId,
        position: FollowerPosition,
        last_fetched_epoch: i32,
        max_bytes: usize,
    ) -> Result<FollowerRead, StorageError> {
        let offset = position.log_end;
        let read = {
            let log = self.log();
            if last_fetched_epoch >= 0 {
                let (leader_epoch, end_offset) = log.end_offset_for_epoch(last_fetched_epoch);
                if leader_epoch != last_fetched_epoch || end_offset < offset {
                    // No epoch at or below its last: nothing is shared
                    // beyond the start of this log.
                    let end_offset = if leader_epoch < 0 {
                        log.log_start_offset()
                    } else {
                        end_offset
                    };
                    return Ok(FollowerRead::Diverging {
                        leader_epoch,
                        end_offset,
                    });
                }
            }
            let log_end_offset = log.log_end_offset();
            self.in_sync().record_fetch(
                follower,
                position,
                log_end_offset,
                tokio::time::Instant::now(),
            );
            log.read(offset, max_bytes, log_end_offset)?
        };
        self.refresh_high_watermark();
        Ok(FollowerRead::Records(read))
    }

    /// Appends batches fetched from the leader, with the high watermark and
    /// log start the leader reported, and asks for a flush at once: the
    /// leader's high watermark waits for this replica's durable end.
    pub fn append_from_leader(
        &self,
        records: &Bytes,
        leader_high_watermark: i64,
        leader_log_start: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.leader_high_watermark
            .store(leader_high_watermark, Ordering::Release);
        if !records.is_empty() {
            let batches = ValidatedBatches::validate(records, Source::Replica, usize::MAX)?;
            self.log().append_as_follower(&batches, now_ms)?;
            self.flush_wanted.notify_one();
        }
        self.refresh_high_watermark();
        self.follow_log_start(leader_log_start)
    }

    /// As a follower: drops everything from `offset` on (a divergent
    /// suffix). The high watermark comes down with the log end.
    pub fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        let log_end_offset = {
            let mut log = self.log();
            self.leadership.send_modify(|leadership| *leadership += 1);
            log.truncate_to(offset)?;
            log.log_end_offset()
        };
        warn!(partition = ?self, offset, log_end_offset, "truncated a suffix that differs from the leader's log");
        self.lower_to(log_end_offset);
        Ok(())
    }

    /// As a follower whose leader's log starts at `offset`, past everything
    /// here: empties the log and restarts it there.
    pub fn restart_at(&self, offset: i64) -> Result<(), StorageError> {
        {
            let mut log = self.log();
            self.leadership.send_modify(|leadership| *leadership += 1);
            log.truncate_fully_and_start_at(offset)?;
        }
        warn!(partition = ?self, offset, "the leader's log starts past this one: restarted empty");
        self.durable.send_replace(offset);
        self.high_watermark.send_replace(offset);
        Ok(())
    }

    pub(super) fn lower_to(&self, log_end_offset: i64) {
        self.durable.send_if_modified(|durable| {
            let above = *durable > log_end_offset;
            *durable = (*durable).min(log_end_offset);
            above
        });
        self.high_watermark.send_if_modified(|high_watermark| {
            let above = *high_watermark > log_end_offset;
            *high_watermark = (*high_watermark).min(log_end_offset);
            above
        });
    }

    /// As a follower: moves the log start up to the leader's, as far as
    /// this replica's high watermark (records deleted there, by
    /// DeleteRecords or retention, go here too).
    pub(super) fn follow_log_start(&self, leader_log_start: i64) -> Result<(), StorageError> {
        let bound = leader_log_start.min(self.high_watermark());
        if bound <= self.followed_log_start.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut log = self.log();
        if bound > log.log_start_offset() {
            log.delete_records_before(bound)?;
        }
        self.followed_log_start.store(bound, Ordering::Release);
        Ok(())
    }
}
