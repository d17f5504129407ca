//! One partition this broker hosts: its log, its role (leader in an epoch,
//! follower, or neither), its high watermark, and the flusher that makes
//! appends durable in groups.
//!
//! Invariant: `log_start_offset <= high_watermark <= log_end_offset`, and on
//! a leader the high watermark never goes back. It is the minimum over the
//! ISR of each member's durable log end offset (see `in_sync.rs`); with this
//! broker the only replica, its own recovery point. Consumers never see a
//! record a power loss of every replica could take back. A follower's high
//! watermark is the leader's, capped by its own durable log end; it only
//! matters once the follower leads.
//!
//! Durability is group commit: one flusher task per partition runs an fsync
//! whenever someone waits for one (an acks=all producer, a consumer waiting
//! at the high watermark) or `flush.ms` has passed, covering every append
//! made before it began.
//!
//! The partition owns the acks policy. A leader's append reads the role and
//! leader epoch under the log's lock, and a wait for its records ends in one
//! of three ways: committed (the high watermark passed them while this
//! broker still led in that epoch), leadership lost, or timed out.
//! Invariant: an append made in one leadership is never reported committed
//! after that leadership ended. Every change of role and every truncation
//! starts a new leadership (`leadership`), under the log's lock, before the
//! log or the high watermark can change for the new role: records a
//! successor overwrote at the same offsets are therefore never acknowledged.

mod flusher;
mod follower;
mod retention;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use strata_storage::batch::ProducerId;
use strata_storage::producer_state::ProducerEntry;
use strata_storage::transaction::{AbortedTxn, Marker};
use strata_storage::validate::{Source, ValidatedBatches};
use strata_storage::{AppendInfo, PartitionLog, ReadResult, StorageError, TimestampOffset};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::controller::metadata::{BrokerId, LeaderEpoch, PartitionEpoch};
use crate::limits;
use crate::replica::in_sync::{InSync, IsrChange};
use crate::topic_config::TopicConfig;

/// What a marker adds to the log, for the flush policy: a control batch of
/// one small record.
const MARKER_BYTES: u64 = 80;

/// What this broker is for a partition, as its metadata says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<'a> {
    Leader {
        leader_epoch: LeaderEpoch,
        replicas: &'a [BrokerId],
        isr: &'a [BrokerId],
        partition_epoch: PartitionEpoch,
    },
    /// Copies the leader's log (the fetcher does).
    Follower,
    /// No leader, or this broker's controller session lapsed.
    Idle,
}

/// When a leader's append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Never: the producer asked for no answer.
    None,
    /// Once on the leader's log.
    Leader,
    /// Once durable on every ISR member; refused while the ISR is smaller
    /// than `min.insync.replicas`.
    All,
}

/// Records a leader appended, and the leadership it appended them in.
#[derive(Debug, Clone, Copy)]
pub struct LeaderAppend {
    pub info: AppendInfo,
    pub leader_epoch: LeaderEpoch,
    leadership: u64,
}

/// Why a leader's append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("this broker does not lead the partition in the leader epoch asked for")]
    NotLeader,
    #[error("a transactional batch of a producer with no transaction open here: the coordinator must confirm the transaction holds this partition")]
    NotVerified {
        producer_id: ProducerId,
        producer_epoch: i16,
    },
    #[error("the ISR {isr:?} has fewer than min.insync.replicas={min_insync_replicas} members")]
    NotEnoughReplicas {
        isr: Vec<BrokerId>,
        min_insync_replicas: u16,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// How a wait for a leader's append ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Durable on every ISR member, and the ISR is at least
    /// `min.insync.replicas`.
    Committed,
    /// Durable on every ISR member, but the ISR shrank below
    /// `min.insync.replicas` meanwhile.
    CommittedBelowMinIsr {
        isr: Vec<BrokerId>,
        min_insync_replicas: u16,
    },
    /// This broker stopped leading (or truncated) before the records were
    /// committed: they may be gone.
    LeadershipLost,
    TimedOut,
}

/// Which records a consumer may see (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything below the high watermark.
    ReadUncommitted,
    /// Everything below the last stable offset; the reader drops the
    /// records of the aborted transactions it is told of.
    ReadCommitted,
}

/// What a consumer's read gets.
pub struct ConsumerRead {
    /// `None` when the caller asked for offsets only.
    pub records: Option<ReadResult>,
    /// The high watermark when the read was made.
    pub high_watermark: i64,
    /// The last stable offset then (a `read_committed` read stops there).
    pub last_stable_offset: i64,
    /// For a `read_committed` read: the aborted transactions with records
    /// in what was read.
    pub aborted: Vec<AbortedTxn>,
    pub log_start_offset: i64,
}

/// What a follower's fetch gets.
pub enum FollowerRead {
    Records(ReadResult),
    /// The follower's log differs from here after `end_offset` of
    /// `leader_epoch` (the largest epoch at or below its last one): it
    /// truncates there and fetches again.
    Diverging {
        leader_epoch: i32,
        end_offset: i64,
    },
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: Uuid,
    /// The leader epoch in which this broker leads the partition, or
    /// `NOT_LEADING` (it follows, or its controller session lapsed). Changed
    /// under the log's lock, so an append sees one role throughout.
    leading_epoch: AtomicI32,
    /// Bumped, under the log's lock, by every change of role or leader
    /// epoch and by every truncation: a wait for an append ends when it
    /// moves (see the module's invariant).
    leadership: watch::Sender<u64>,
    /// Followers' progress and the ISR, while this broker leads.
    in_sync: Mutex<InSync>,
    /// The log's recovery point, as the flusher last published it.
    durable: watch::Sender<i64>,
    /// As a follower: the high watermark the leader last reported.
    leader_high_watermark: AtomicI64,
    /// As a follower: the log start this replica last moved up to; a fetch
    /// answer with no newer one costs no lock.
    followed_log_start: AtomicI64,
    /// Notified whenever the high watermark moves (wakes consumer fetches).
    visible: Arc<Notify>,
    /// Notified whenever this leader appends (wakes followers' fetches).
    appended: Arc<Notify>,
    /// Replaced whole when the topic's configs are altered.
    config: std::sync::RwLock<Arc<TopicConfig>>,
    log: Mutex<PartitionLog>,
    high_watermark: watch::Sender<i64>,
    flush_wanted: Notify,
    /// A fetch waits at the high watermark: the next append asks for a flush
    /// at once, so the reader sees it after one fsync rather than `flush.ms`.
    reader_waiting: AtomicBool,
    /// Bytes appended since the flusher last started a flush.
    unflushed_bytes: AtomicU64,
    /// Per producer: the verification under way of its first transactional
    /// batch here (KIP-890), which a marker for it cancels. Changed under
    /// the log's lock.
    verifications: Mutex<HashMap<ProducerId, u64>>,
    /// Batches waiting on a verification take turns, in arrival order.
    verification_turns: tokio::sync::Mutex<()>,
    verification_tokens: AtomicU64,
    stop: CancellationToken,
}

/// A check with the transaction coordinator, begun before it is asked: a
/// batch appended with it is refused if a marker for its producer came in
/// between (the transaction it was checked against has ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    producer_id: ProducerId,
    token: u64,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.index)
    }
}

const NOT_LEADING: i32 = -1;

/// Name of the file holding the topic id in a partition directory, so a
/// topic deleted and created again under the same name never inherits data.
const TOPIC_ID_FILE: &str = "topic-id";

impl Partition {
    /// Opens (recovering) the partition's log in `dir` and starts its
    /// flusher. `visible` is notified whenever the high watermark moves,
    /// `appended` whenever it appends as leader. Broker `me` hosts it; it is
    /// idle until [`Partition::set_role`].
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dir: PathBuf,
        topic: String,
        index: i32,
        topic_id: Uuid,
        me: BrokerId,
        config: TopicConfig,
        visible: Arc<Notify>,
        appended: Arc<Notify>,
    ) -> Result<Arc<Self>, StorageError> {
        claim_directory(&dir, topic_id)?;
        let log = PartitionLog::open(&dir, config.log_config())?;
        // What was committed before is unknown until the role is known: a
        // sole replica's high watermark is its recovery point, a replicated
        // one's waits for the followers (or the leader) to report.
        let (high_watermark, _) = watch::channel(log.log_start_offset());
        let (durable, _) = watch::channel(log.recovery_point());
        let partition = Arc::new(Partition {
            topic,
            index,
            topic_id,
            leading_epoch: AtomicI32::new(NOT_LEADING),
            leadership: watch::channel(0).0,
            in_sync: Mutex::new(InSync::new(me)),
            durable,
            leader_high_watermark: AtomicI64::new(0),
            followed_log_start: AtomicI64::new(i64::MIN),
            visible,
            appended,
            config: std::sync::RwLock::new(Arc::new(config)),
            log: Mutex::new(log),
            high_watermark,
            flush_wanted: Notify::new(),
            reader_waiting: AtomicBool::new(false),
            unflushed_bytes: AtomicU64::new(0),
            verifications: Mutex::new(HashMap::new()),
            verification_turns: tokio::sync::Mutex::new(()),
            verification_tokens: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        tokio::spawn(Arc::clone(&partition).run_flusher());
        Ok(partition)
    }

    pub fn config(&self) -> Arc<TopicConfig> {
        Arc::clone(&self.config.read().expect("partition config lock"))
    }

    /// Applies altered topic configs: the log's (segments, retention) at
    /// once, the flusher's interval from its next round.
    pub fn update_config(&self, config: &TopicConfig) -> Result<(), StorageError> {
        if *self.config() == *config {
            return Ok(());
        }
        self.log().set_config(config.log_config())?;
        *self.config.write().expect("partition config lock") = Arc::new(config.clone());
        Ok(())
    }

    /// The leader epoch this broker leads in, if it leads.
    pub fn leader_epoch(&self) -> Option<LeaderEpoch> {
        let epoch = self.leading_epoch.load(Ordering::Acquire);
        (epoch != NOT_LEADING).then_some(LeaderEpoch(epoch))
    }

    /// Takes the role the metadata gives this broker. Leading in a new
    /// epoch starts the followers' progress afresh; any change of role ends
    /// every wait for an earlier leadership's appends.
    pub fn set_role(&self, role: Role<'_>) {
        let epoch = match role {
            Role::Leader { leader_epoch, .. } => leader_epoch.0,
            Role::Follower | Role::Idle => NOT_LEADING,
        };
        let previous = {
            let _log = self.log();
            let previous = self.leading_epoch.swap(epoch, Ordering::AcqRel);
            if previous != epoch {
                self.leadership.send_modify(|leadership| *leadership += 1);
            }
            previous
        };
        if previous != epoch {
            info!(partition = ?self, leader_epoch = epoch, previous, "partition leadership changed (-1: not leading)");
            // Fetches long-polling here assumed the old role: they answer
            // now (NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH).
            self.visible.notify_waiters();
            self.appended.notify_waiters();
        }
        if let Role::Leader {
            replicas,
            isr,
            partition_epoch,
            ..
        } = role
        {
            let fresh = previous != epoch;
            self.in_sync().assign(
                replicas,
                isr,
                partition_epoch,
                fresh,
                tokio::time::Instant::now(),
            );
        }
        self.refresh_high_watermark();
    }

    fn in_sync(&self) -> std::sync::MutexGuard<'_, InSync> {
        self.in_sync.lock().expect("in-sync lock")
    }

    /// The ISR as last committed (meaningful while this broker leads).
    pub fn isr(&self) -> Vec<BrokerId> {
        self.in_sync().isr().to_vec()
    }

    /// How many replicas the committed ISR holds.
    pub fn isr_len(&self) -> usize {
        self.in_sync().isr().len()
    }

    /// The ISR, if it has fewer than `min.insync.replicas` members.
    fn isr_below_min(&self) -> Option<(Vec<BrokerId>, u16)> {
        let min_insync_replicas = self.config().min_insync_replicas;
        let in_sync = self.in_sync();
        (in_sync.isr().len() < min_insync_replicas as usize)
            .then(|| (in_sync.isr().to_vec(), min_insync_replicas))
    }

    /// Moves the high watermark as far as the role allows: as leader, to
    /// what every ISR member has durably; as follower, to the leader's,
    /// capped by what is durable here.
    fn refresh_high_watermark(&self) {
        let durable = self.durable_end();
        let target = if self.leader_epoch().is_some() {
            self.in_sync().high_watermark(durable)
        } else {
            Some(durable.min(self.leader_high_watermark.load(Ordering::Acquire)))
        };
        let Some(target) = target else { return };
        let advanced = self.high_watermark.send_if_modified(|high_watermark| {
            let moved = target > *high_watermark;
            *high_watermark = (*high_watermark).max(target);
            moved
        });
        if advanced {
            self.visible.notify_waiters();
        }
    }

    /// The ISR change due as leader, if any (and none is in flight): a
    /// follower not caught up for `lag_max` leaves, a caught-up one joins.
    pub fn isr_change_due(&self, lag_max: Duration) -> Option<IsrChange> {
        self.leader_epoch()?;
        let high_watermark = self.high_watermark();
        self.in_sync()
            .change_due(high_watermark, tokio::time::Instant::now(), lag_max)
    }

    /// As leader: how many offsets the furthest-behind follower trails.
    pub fn follower_lag(&self) -> Option<i64> {
        self.leader_epoch()?;
        let log_end_offset = self.log_end_offset();
        self.in_sync().max_lag(log_end_offset)
    }

    /// A proposed ISR change was decided; the next may be proposed.
    pub fn isr_change_settled(&self) {
        self.in_sync().change_settled();
    }

    /// The idempotent producers this replica knows, by producer id.
    pub fn producers(&self) -> Vec<(ProducerId, ProducerEntry)> {
        self.log()
            .producers()
            .iter()
            .map(|(producer_id, entry)| (producer_id, entry.clone()))
            .collect()
    }

    /// The latest leader epoch in this log, if any batch carried one.
    pub fn latest_leader_epoch(&self) -> Option<i32> {
        self.log().latest_leader_epoch()
    }

    /// End offset of `leader_epoch` here: the largest epoch at or below it
    /// and where it ended, `(-1, -1)` if none.
    pub fn end_offset_for_epoch(&self, leader_epoch: i32) -> (i32, i64) {
        self.log().end_offset_for_epoch(leader_epoch)
    }

    fn log(&self) -> std::sync::MutexGuard<'_, PartitionLog> {
        self.log.lock().expect("partition log lock")
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log().log_start_offset()
    }

    /// Below it no transaction is open (and all is below the high
    /// watermark): what `read_committed` consumers may read up to.
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark();
        self.log().last_stable_offset(high_watermark)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log().log_end_offset()
    }

    /// Bytes of records the log holds on disk.
    pub fn size_bytes(&self) -> u64 {
        self.log().size_bytes()
    }

    /// Validates and appends a producer's (or a coordinator's) record
    /// batches as leader, stamped with the leader epoch this broker leads
    /// in, which must be `leader_epoch` if that is given. With `Acks::All`
    /// the ISR must have `min.insync.replicas` members. Wait for the
    /// records with [`Partition::wait_committed`].
    ///
    /// A transactional batch of a producer with no transaction open here is
    /// `NotVerified` unless `verified` (begun with
    /// [`Partition::begin_verification`] before the coordinator confirmed
    /// the transaction holds this partition) is still current.
    pub fn append_as_leader(
        &self,
        records: &Bytes,
        acks: Acks,
        leader_epoch: Option<LeaderEpoch>,
        verified: Option<Verification>,
        now_ms: i64,
    ) -> Result<LeaderAppend, AppendError> {
        self.append_led(records, acks, leader_epoch, |log, batches, leading| {
            let opens_transaction = batches.iter().find(|(header, _)| {
                header.is_transactional()
                    && !log
                        .producers()
                        .in_transaction(header.producer_id, header.producer_epoch)
            });
            if let Some((header, _)) = opens_transaction {
                let current = verified.is_some_and(|verified| {
                    verified.producer_id == header.producer_id
                        && self
                            .verifications
                            .lock()
                            .expect("verifications lock")
                            .get(&verified.producer_id)
                            == Some(&verified.token)
                });
                if !current {
                    return Err(AppendError::NotVerified {
                        producer_id: header.producer_id,
                        producer_epoch: header.producer_epoch,
                    });
                }
            }
            Ok(log.append_as_leader(batches, leading, now_ms)?)
        })
    }

    /// The turn of a batch that needs its transaction verified, or that
    /// came while one did: batches get it in the order they ask (see the
    /// produce handler).
    pub async fn verification_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.verification_turns.lock().await
    }

    /// [`Partition::append_as_leader`] without a verification, unless a
    /// batch here is waiting on one (`None`: take a turn).
    pub fn append_unless_verifying(
        &self,
        records: &Bytes,
        acks: Acks,
        now_ms: i64,
    ) -> Option<Result<LeaderAppend, AppendError>> {
        let _free = self.verification_turns.try_lock().ok()?;
        Some(self.append_as_leader(records, acks, None, None, now_ms))
    }

    /// Starts a verification of `producer_id`'s transaction (see
    /// [`Partition::append_as_leader`]), or joins the one already under
    /// way: a producer pipelines several batches to a partition, and a
    /// second verification must not invalidate the first (only a marker
    /// does, since the transaction both checked has then ended).
    pub fn begin_verification(&self, producer_id: ProducerId) -> Verification {
        let _log = self.log();
        let token = *self
            .verifications
            .lock()
            .expect("verifications lock")
            .entry(producer_id)
            .or_insert_with(|| self.verification_tokens.fetch_add(1, Ordering::Relaxed));
        Verification { producer_id, token }
    }

    /// Appends a coordinator's transactional batch (a transactional offset
    /// commit) as leader: its producer epoch is checked, its sequence is
    /// not. Acknowledged as `Acks::All`.
    pub fn append_for_coordinator(
        &self,
        records: &Bytes,
        leader_epoch: Option<LeaderEpoch>,
        now_ms: i64,
    ) -> Result<LeaderAppend, AppendError> {
        self.append_led(records, Acks::All, leader_epoch, |log, batches, leading| {
            Ok(log.append_for_coordinator(batches, leading, now_ms)?)
        })
    }

    fn append_led(
        &self,
        records: &Bytes,
        acks: Acks,
        leader_epoch: Option<LeaderEpoch>,
        append: impl FnOnce(
            &mut PartitionLog,
            &ValidatedBatches<'_>,
            i32,
        ) -> Result<AppendInfo, AppendError>,
    ) -> Result<LeaderAppend, AppendError> {
        let batches =
            ValidatedBatches::validate(records, Source::Producer, self.config().max_message_bytes)
                .map_err(StorageError::from)?;
        let appended = {
            let mut log = self.log();
            let leading = self.leader_epoch().ok_or(AppendError::NotLeader)?;
            if leader_epoch.is_some_and(|leader_epoch| leader_epoch != leading) {
                return Err(AppendError::NotLeader);
            }
            if acks == Acks::All {
                if let Some((isr, min_insync_replicas)) = self.isr_below_min() {
                    return Err(AppendError::NotEnoughReplicas {
                        isr,
                        min_insync_replicas,
                    });
                }
            }
            LeaderAppend {
                info: append(&mut log, &batches, leading.0)?,
                leader_epoch: leading,
                leadership: *self.leadership.borrow(),
            }
        };
        if !appended.info.duplicate {
            self.wake_after_append(records.len() as u64);
        }
        Ok(appended)
    }

    /// Appends the marker that ends `producer_id`'s transaction here, as
    /// leader in `leader_epoch` (WriteTxnMarkers). Wait for it with
    /// [`Partition::wait_committed`].
    pub fn append_marker(
        &self,
        marker: Marker,
        producer_id: ProducerId,
        producer_epoch: i16,
        coordinator_epoch: i32,
        leader_epoch: Option<LeaderEpoch>,
        now_ms: i64,
    ) -> Result<LeaderAppend, AppendError> {
        let appended = {
            let mut log = self.log();
            let leading = self.leader_epoch().ok_or(AppendError::NotLeader)?;
            if leader_epoch.is_some_and(|leader_epoch| leader_epoch != leading) {
                return Err(AppendError::NotLeader);
            }
            let info = log.append_marker(
                marker,
                producer_id,
                producer_epoch,
                coordinator_epoch,
                leading.0,
                now_ms,
            )?;
            // A verification begun before this marker checked a transaction
            // that has now ended here.
            self.verifications
                .lock()
                .expect("verifications lock")
                .remove(&producer_id);
            LeaderAppend {
                info,
                leader_epoch: leading,
                leadership: *self.leadership.borrow(),
            }
        };
        self.wake_after_append(MARKER_BYTES);
        Ok(appended)
    }

    /// Whether `producer_id` has a transaction ongoing here in
    /// `producer_epoch`.
    pub fn in_transaction(&self, producer_id: ProducerId, producer_epoch: i16) -> bool {
        self.log()
            .producers()
            .in_transaction(producer_id, producer_epoch)
    }

    /// After an append of `bytes`: asks for a flush when a reader waits or
    /// enough is unflushed, and wakes the followers' fetches.
    fn wake_after_append(&self, bytes: u64) {
        let unflushed_bytes = self.unflushed_bytes.fetch_add(bytes, Ordering::AcqRel);
        if self.reader_waiting.swap(false, Ordering::AcqRel)
            || unflushed_bytes + bytes >= limits::UNFLUSHED_BYTES_MAX
        {
            self.flush_wanted.notify_one();
        }
        self.appended.notify_waiters();
    }

    /// Waits until `appended` is committed (every ISR member has it
    /// durably), asking for a flush here. Ends early when the leadership it
    /// was appended in ends.
    pub async fn wait_committed(&self, appended: &LeaderAppend, timeout: Duration) -> Commit {
        let mut leadership = self.leadership.subscribe();
        let mut high_watermark = self.high_watermark.subscribe();
        self.flush_wanted.notify_one();
        let wait = async {
            loop {
                let reached = *high_watermark.borrow_and_update() >= appended.info.log_end_offset;
                // Read after the high watermark: a role change that came
                // before the value just read is seen here.
                if *leadership.borrow_and_update() != appended.leadership {
                    return Commit::LeadershipLost;
                }
                if reached {
                    return match self.isr_below_min() {
                        None => Commit::Committed,
                        Some((isr, min_insync_replicas)) => Commit::CommittedBelowMinIsr {
                            isr,
                            min_insync_replicas,
                        },
                    };
                }
                tokio::select! {
                    _ = leadership.changed() => {}
                    _ = high_watermark.changed() => {}
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Commit::TimedOut)
    }

    /// Reads for a consumer whole batches from `offset`, never past the
    /// high watermark (the last stable offset under `read_committed`); only
    /// the offsets if `max_bytes` is `None`. A reader at the high watermark
    /// makes the next append (or an append it missed) ask for a flush at
    /// once, so it sees new records after one fsync rather than `flush.ms`.
    pub fn read_for_consumer(
        &self,
        offset: i64,
        max_bytes: Option<usize>,
        isolation: Isolation,
    ) -> Result<ConsumerRead, StorageError> {
        let high_watermark = self.high_watermark();
        // Marked before the read, so an append is either seen by the read
        // or sees the mark.
        let at_high_watermark = offset >= high_watermark;
        if at_high_watermark {
            self.reader_waiting.store(true, Ordering::Release);
        }
        let log = self.log();
        let log_start_offset = log.log_start_offset();
        let log_end_offset = log.log_end_offset();
        let last_stable_offset = log.last_stable_offset(high_watermark);
        let upper_bound_offset = match isolation {
            Isolation::ReadUncommitted => high_watermark,
            Isolation::ReadCommitted => last_stable_offset,
        };
        let records = match max_bytes {
            Some(max_bytes) => Some(log.read(offset, max_bytes, upper_bound_offset)?),
            None => None,
        };
        let aborted = match (&records, isolation) {
            (Some(read), Isolation::ReadCommitted) if !read.records.is_empty() => {
                log.aborted_transactions(offset, read.next_offset)
            }
            _ => Vec::new(),
        };
        drop(log);
        if at_high_watermark && log_end_offset > offset {
            self.flush_wanted.notify_one();
        }
        Ok(ConsumerRead {
            records,
            high_watermark,
            last_stable_offset,
            aborted,
            log_start_offset,
        })
    }

    /// Reads whole batches from `offset` up to the log end, above the high
    /// watermark too: for comparing replicas, never for consumers.
    pub fn read_to_log_end(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult, StorageError> {
        let log = self.log();
        log.read(offset, max_bytes, log.log_end_offset())
    }

    /// ListOffsets by timestamp, among visible records.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        let high_watermark = self.high_watermark();
        let found = self.log().offset_for_timestamp(timestamp_ms)?;
        Ok(found.filter(|found| found.offset < high_watermark))
    }

    /// Stops the flusher, flushes and checkpoints the log, so the next start
    /// recovers nothing.
    pub fn close(&self) {
        // Waits for appends and fetches at this replica end with it.
        self.set_role(Role::Idle);
        self.stop.cancel();
        if let Err(error) = self.log().checkpoint() {
            error!(partition = ?self, %error, "flush on close failed");
        }
    }
}

/// Makes sure `dir` belongs to the topic with `topic_id`: a directory left by
/// an older topic of the same name is wiped first.
fn claim_directory(dir: &Path, topic_id: Uuid) -> Result<(), StorageError> {
    let io = |operation| {
        move |source| StorageError::Io {
            operation,
            path: dir.to_path_buf(),
            source,
        }
    };
    let id_path = dir.join(TOPIC_ID_FILE);
    match std::fs::read_to_string(&id_path) {
        Ok(found) if found.trim() == topic_id.to_string() => return Ok(()),
        Ok(found) => {
            warn!(dir = %dir.display(), found = found.trim(), expected = %topic_id, "partition directory belongs to a deleted topic; wiping it");
            std::fs::remove_dir_all(dir).map_err(io("remove stale partition directory"))?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io("read topic id")(error)),
    }
    std::fs::create_dir_all(dir).map_err(io("create partition directory"))?;
    let mut id_file = std::fs::File::create(&id_path).map_err(io("create topic id file"))?;
    std::io::Write::write_all(&mut id_file, topic_id.to_string().as_bytes())
        .map_err(io("write topic id"))?;
    id_file.sync_all().map_err(io("fsync topic id"))?;
    strata_storage::checkpoint::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use strata_storage::record::{BatchBuilder, Record};

    use super::*;

    const ME: BrokerId = BrokerId(1);
    const FOLLOWER: BrokerId = BrokerId(2);

    fn open(dir: &Path) -> Arc<Partition> {
        Partition::open(
            dir.join("topic-0"),
            "topic".into(),
            0,
            Uuid::new_v4(),
            ME,
            TopicConfig::default(),
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
        )
        .expect("open partition")
    }

    fn lead(partition: &Partition, leader_epoch: i32, isr: &[BrokerId]) {
        let leader_epoch = LeaderEpoch(leader_epoch);
        partition.set_role(Role::Leader {
            leader_epoch,
            replicas: &[ME, FOLLOWER],
            isr,
            partition_epoch: PartitionEpoch(leader_epoch.0),
        });
    }

    fn batch(value: &[u8]) -> Bytes {
        let mut builder = BatchBuilder::new(0);
        builder.push(Record::value(value));
        Bytes::from(builder.build())
    }

    const WAIT: Duration = Duration::from_secs(10);

    fn transactional_batch(producer_id: ProducerId, base_sequence: i32) -> Bytes {
        let mut builder = BatchBuilder::new(0)
            .producer(producer_id, 0, base_sequence)
            .transactional();
        builder.push(Record::value(b"t"));
        Bytes::from(builder.build())
    }

    #[tokio::test]
    async fn pipelined_batches_of_one_transaction_share_its_verification_until_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path());
        lead(&partition, 1, &[ME]);
        let producer_id = ProducerId(7);
        let first = transactional_batch(producer_id, 0);
        assert!(matches!(
            partition.append_as_leader(&first, Acks::Leader, None, None, 0),
            Err(AppendError::NotVerified { .. })
        ));
        // Two requests in flight both start verifying before either
        // appends: the second does not invalidate the first.
        let one = partition.begin_verification(producer_id);
        let two = partition.begin_verification(producer_id);
        partition
            .append_as_leader(&first, Acks::Leader, None, Some(one), 0)
            .expect("the first verification still holds");
        // A marker ends the transaction and with it every verification.
        partition
            .append_marker(Marker::Commit, producer_id, 0, 0, None, 0)
            .expect("marker");
        let next = transactional_batch(producer_id, 1);
        assert!(matches!(
            partition.append_as_leader(&next, Acks::Leader, None, Some(two), 0),
            Err(AppendError::NotVerified { .. })
        ));
    }

    #[tokio::test]
    async fn a_sole_in_sync_replica_commits_once_its_flush_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path());
        lead(&partition, 3, &[ME]);
        let appended = partition
            .append_as_leader(&batch(b"a"), Acks::All, None, None, 0)
            .unwrap();
        assert_eq!(appended.leader_epoch, LeaderEpoch(3));
        assert_eq!(
            partition.wait_committed(&appended, WAIT).await,
            Commit::Committed
        );
        assert_eq!(partition.high_watermark(), 1);
    }

    #[tokio::test]
    async fn losing_leadership_ends_the_wait_before_any_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path());
        lead(&partition, 3, &[ME, FOLLOWER]);
        let appended = partition
            .append_as_leader(&batch(b"a"), Acks::All, None, None, 0)
            .unwrap();
        let waiting = {
            let partition = Arc::clone(&partition);
            tokio::spawn(async move { partition.wait_committed(&appended, WAIT).await })
        };
        tokio::task::yield_now().await;
        partition.set_role(Role::Follower);
        let ended = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert_eq!(
            ended.expect("ends at once").unwrap(),
            Commit::LeadershipLost
        );
    }

    #[tokio::test]
    async fn closing_the_partition_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path());
        lead(&partition, 3, &[ME, FOLLOWER]);
        let appended = partition
            .append_as_leader(&batch(b"a"), Acks::All, None, None, 0)
            .unwrap();
        let waiting = {
            let partition = Arc::clone(&partition);
            tokio::spawn(async move { partition.wait_committed(&appended, WAIT).await })
        };
        tokio::task::yield_now().await;
        partition.close();
        let ended = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert_eq!(
            ended.expect("ends at once").unwrap(),
            Commit::LeadershipLost
        );
    }

    #[tokio::test]
    async fn an_append_of_an_earlier_leadership_is_never_committed_by_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path());
        lead(&partition, 3, &[ME]);
        let earlier = partition
            .append_as_leader(&batch(b"a"), Acks::Leader, None, None, 0)
            .unwrap();
        // Follows, truncates, and leads again in a later epoch: the same
        // offset now holds another record.
        partition.set_role(Role::Follower);
        partition.truncate_to(0).unwrap();
        lead(&partition, 5, &[ME]);
        let later = partition
            .append_as_leader(&batch(b"b"), Acks::All, None, None, 0)
            .unwrap();
        assert_eq!(later.info.first_offset, earlier.info.first_offset);
        assert_eq!(
            partition.wait_committed(&later, WAIT).await,
            Commit::Committed
        );
        assert_eq!(
            partition.wait_committed(&earlier, WAIT).await,
            Commit::LeadershipLost
        );
    }

    #[tokio::test]
    async fn acks_all_is_refused_below_min_insync_replicas_and_other_epochs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path());
        let config = TopicConfig {
            min_insync_replicas: 2,
            ..TopicConfig::default()
        };
        partition.update_config(&config).unwrap();
        lead(&partition, 3, &[ME]);
        assert!(matches!(
            partition.append_as_leader(&batch(b"a"), Acks::All, None, None, 0),
            Err(AppendError::NotEnoughReplicas {
                min_insync_replicas: 2,
                ..
            })
        ));
        assert!(partition
            .append_as_leader(&batch(b"a"), Acks::Leader, None, None, 0)
            .is_ok());
        assert!(matches!(
            partition.append_as_leader(&batch(b"a"), Acks::Leader, Some(LeaderEpoch(2)), None, 0),
            Err(AppendError::NotLeader)
        ));
        partition.set_role(Role::Idle);
        assert!(matches!(
            partition.append_as_leader(&batch(b"a"), Acks::None, None, None, 0),
            Err(AppendError::NotLeader)
        ));
    }

    #[tokio::test]
    async fn a_consumer_read_stops_at_the_high_watermark_it_reports() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path());
        lead(&partition, 1, &[ME, FOLLOWER]);
        partition
            .append_as_leader(&batch(b"a"), Acks::Leader, None, None, 0)
            .unwrap();
        let read = partition
            .read_for_consumer(0, Some(1 << 20), Isolation::ReadUncommitted)
            .unwrap();
        assert_eq!(read.high_watermark, 0);
        assert!(read.records.unwrap().records.is_empty());
        let offsets_only = partition
            .read_for_consumer(0, None, Isolation::ReadUncommitted)
            .unwrap();
        assert!(offsets_only.records.is_none());
        assert_eq!(offsets_only.log_start_offset, 0);
    }
}
