//! The Raft log and vote of the metadata controller, in files under
//! `DATA/__raft/`.
//!
//! ```text
//! log    frames: payload_bytes u32 | crc32 u32 | payload (postcard LogRecord)
//! vote   checksummed file (see strata_storage::checkpoint): vote and committed log id
//! ```
//!
//! The log file is append-only. Truncation and purging are records too, so
//! replaying the file from the start rebuilds the in-memory index exactly.
//! Each `append` writes all its entries with one `fdatasync` (group fsync)
//! before reporting them flushed. A torn frame at the end (a crash in the
//! middle of an append that was never acknowledged) is cut off on open; the
//! file is rewritten without purged entries once they take up most of it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use strata_storage::checkpoint::{self, Durability, Loaded};
use tracing::warn;

use super::raft_types::TypeConfig;
use crate::limits;

const LOG_FILE: &str = "log";
const VOTE_FILE: &str = "vote";
const VOTE_MAGIC: [u8; 4] = *b"SRVT";
const FRAME_HEADER_BYTES: usize = 8;
/// Rewrite the log file once it is this much larger than its live entries.
const COMPACTION_SLACK_BYTES: u64 = 4 << 20;

type NodeId = u64;

#[derive(Debug, Serialize, Deserialize)]
enum LogRecord {
    Entry(Entry<TypeConfig>),
    /// Entries at and after this index are gone.
    Truncate {
        since_index: u64,
    },
    /// Entries up to and including this log id are gone.
    Purge {
        upto: LogId<NodeId>,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct VoteState {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Each entry with the size of its frame in the file.
    by_index: BTreeMap<u64, (Entry<TypeConfig>, u64)>,
    last_purged: Option<LogId<NodeId>>,
}

impl Entries {
    /// Bytes of the live entries' frames, to decide when to compact.
    fn live_bytes(&self) -> u64 {
        self.by_index
            .values()
            .map(|(_, frame_bytes)| frame_bytes)
            .sum()
    }
}

/// The log store handed to openraft. Cloning shares the same log.
#[derive(Debug, Clone)]
pub struct LogStore {
    dir: PathBuf,
    entries: Arc<RwLock<Entries>>,
    file: Arc<Mutex<File>>,
    vote: Arc<Mutex<VoteState>>,
}

fn io_error<E: std::error::Error + 'static>(error: E) -> StorageError<NodeId> {
    StorageIOError::write_logs(&error).into()
}

/// Appends the frame of `record` to `out`; returns the frame's size.
fn encode_frame(record: &LogRecord, out: &mut Vec<u8>) -> io::Result<u64> {
    let payload = postcard::to_stdvec(record).map_err(io::Error::other)?;
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok((FRAME_HEADER_BYTES + payload.len()) as u64)
}

impl LogStore {
    /// Opens (creating) the log in `dir`, replaying it.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        let mut entries = Entries::default();
        let mut position = 0usize;
        while position < bytes.len() {
            match replay_frame(&bytes[position..], &mut entries) {
                Some(frame_bytes) => position += frame_bytes,
                None => {
                    warn!(
                        path = %path.display(),
                        position,
                        bytes_dropped = bytes.len() - position,
                        "cut off a torn Raft log frame"
                    );
                    break;
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if (position as u64) < file.metadata()?.len() {
            file.set_len(position as u64)?;
            file.sync_all()?;
        }
        let vote = match checkpoint::read(&dir.join(VOTE_FILE), VOTE_MAGIC)
            .map_err(io::Error::other)?
        {
            Loaded::Missing => VoteState::default(),
            Loaded::Intact(payload) => postcard::from_bytes(&payload).map_err(io::Error::other)?,
            Loaded::Damaged(reason) => {
                // A vote that cannot be read could let this voter vote twice in
                // one term: refuse to start rather than guess.
                return Err(io::Error::other(format!(
                    "Raft vote file is damaged ({reason})"
                )));
            }
        };
        Ok(LogStore {
            dir: dir.to_path_buf(),
            entries: Arc::new(RwLock::new(entries)),
            file: Arc::new(Mutex::new(file)),
            vote: Arc::new(Mutex::new(vote)),
        })
    }

    /// Appends records to the file and fsyncs once; returns each frame's size.
    async fn write_records(&self, records: &[LogRecord]) -> Result<Vec<u64>, StorageError<NodeId>> {
        let mut buffer = Vec::new();
        let mut frame_sizes = Vec::with_capacity(records.len());
        for record in records {
            frame_sizes.push(encode_frame(record, &mut buffer).map_err(io_error)?);
        }
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || {
            let mut file = file.lock().expect("log file lock");
            file.write_all(&buffer)?;
            file.sync_data()
        })
        .await
        .map_err(io_error)?
        .map_err(io_error)?;
        Ok(frame_sizes)
    }

    async fn save_vote_state(
        &self,
        update: impl FnOnce(&mut VoteState),
    ) -> Result<(), StorageError<NodeId>> {
        let payload = {
            let mut state = self.vote.lock().expect("vote lock");
            update(&mut state);
            postcard::to_stdvec(&*state).map_err(io_error)?
        };
        let path = self.dir.join(VOTE_FILE);
        tokio::task::spawn_blocking(move || {
            checkpoint::write(&path, VOTE_MAGIC, &payload, Durability::Synced)
        })
        .await
        .map_err(io_error)?
        .map_err(|error| StorageIOError::write_vote(&error).into())
    }

    /// Rewrites the log file with only the live entries when purged ones take
    /// up most of it.
    fn maybe_compact(&self) -> io::Result<()> {
        let path = self.dir.join(LOG_FILE);
        let mut file = self.file.lock().expect("log file lock");
        let entries = self.entries.read().expect("entries lock");
        if file.metadata()?.len() < entries.live_bytes() * 2 + COMPACTION_SLACK_BYTES {
            return Ok(());
        }
        let mut buffer = Vec::new();
        if let Some(upto) = entries.last_purged {
            encode_frame(&LogRecord::Purge { upto }, &mut buffer)?;
        }
        for (entry, _) in entries.by_index.values() {
            encode_frame(&LogRecord::Entry(entry.clone()), &mut buffer)?;
        }
        let tmp = self.dir.join("log.tmp");
        let mut new_file = File::create(&tmp)?;
        new_file.write_all(&buffer)?;
        new_file.sync_all()?;
        fs::rename(&tmp, &path)?;
        checkpoint::sync_dir(&self.dir).map_err(io::Error::other)?;
        *file = OpenOptions::new().append(true).open(&path)?;
        Ok(())
    }
}

/// Applies one frame to `entries`; returns its size, or `None` if it is torn.
fn replay_frame(bytes: &[u8], entries: &mut Entries) -> Option<usize> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return None;
    }
    let payload_bytes = u32::from_be_bytes(bytes[0..4].try_into().expect("four bytes")) as usize;
    let crc = u32::from_be_bytes(bytes[4..8].try_into().expect("four bytes"));
    if payload_bytes > limits::RAFT_LOG_FRAME_BYTES_MAX
        || bytes.len() < FRAME_HEADER_BYTES + payload_bytes
    {
        return None;
    }
    let payload = &bytes[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + payload_bytes];
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let frame_bytes = FRAME_HEADER_BYTES + payload_bytes;
    match postcard::from_bytes::<LogRecord>(payload).ok()? {
        LogRecord::Entry(entry) => {
            entries
                .by_index
                .insert(entry.log_id.index, (entry, frame_bytes as u64));
        }
        LogRecord::Truncate { since_index } => {
            entries.by_index.split_off(&since_index);
        }
        LogRecord::Purge { upto } => {
            entries.by_index = entries.by_index.split_off(&(upto.index + 1));
            entries.last_purged = Some(upto);
        }
    }
    Some(frame_bytes)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let entries = self.entries.read().expect("entries lock");
        Ok(entries
            .by_index
            .range(range)
            .map(|(_, (entry, _))| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let entries = self.entries.read().expect("entries lock");
        let last_log_id = entries
            .by_index
            .values()
            .next_back()
            .map(|(entry, _)| entry.log_id)
            .or(entries.last_purged);
        Ok(LogState {
            last_purged_log_id: entries.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.save_vote_state(move |state| state.vote = Some(vote))
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.vote.lock().expect("vote lock").vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.save_vote_state(move |state| state.committed = committed)
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.vote.lock().expect("vote lock").committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let records: Vec<LogRecord> = entries.into_iter().map(LogRecord::Entry).collect();
        match self.write_records(&records).await {
            Ok(frame_sizes) => {
                let mut state = self.entries.write().expect("entries lock");
                for (record, frame_bytes) in records.into_iter().zip(frame_sizes) {
                    if let LogRecord::Entry(entry) = record {
                        state
                            .by_index
                            .insert(entry.log_id.index, (entry, frame_bytes));
                    }
                }
                drop(state);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(io::Error::other(error.to_string())));
                Err(error)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_records(&[LogRecord::Truncate {
            since_index: log_id.index,
        }])
        .await?;
        self.entries
            .write()
            .expect("entries lock")
            .by_index
            .split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_records(&[LogRecord::Purge { upto: log_id }])
            .await?;
        {
            let mut state = self.entries.write().expect("entries lock");
            state.by_index = state.by_index.split_off(&(log_id.index + 1));
            state.last_purged = Some(log_id);
        }
        self.maybe_compact().map_err(io_error)
    }
}
