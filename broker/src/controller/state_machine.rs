//! The controller's Raft state machine: applies committed commands to the
//! [`ClusterMetadata`] and publishes every new version on a watch channel.
//!
//! Only snapshots are persisted (`DATA/__raft/snapshot`, a checksummed file);
//! after a restart openraft re-applies the committed log entries that follow
//! the snapshot.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use strata_storage::checkpoint::{self, Durability, Loaded};
use tokio::sync::{watch, Mutex};

use super::metadata::{ClusterMetadata, CommandOutcome};
use super::raft_types::TypeConfig;

const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_MAGIC: [u8; 4] = *b"SRSN";

type NodeId = u64;

/// What the state machine holds: the metadata and how far it got.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    metadata: ClusterMetadata,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct StateMachine {
    dir: PathBuf,
    applied: Arc<Mutex<Applied>>,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    published: watch::Sender<Arc<ClusterMetadata>>,
}

fn snapshot_error<E: std::error::Error + 'static>(error: E) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, &error).into()
}

impl StateMachine {
    /// Opens the state machine in `dir`, starting from its snapshot if any.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let (applied, snapshot) = match checkpoint::read(&dir.join(SNAPSHOT_FILE), SNAPSHOT_MAGIC)
            .map_err(std::io::Error::other)?
        {
            Loaded::Missing => (Applied::default(), None),
            Loaded::Damaged(reason) => {
                return Err(std::io::Error::other(format!(
                    "controller snapshot is damaged ({reason})"
                )));
            }
            Loaded::Intact(bytes) => {
                let stored: StoredSnapshot =
                    postcard::from_bytes(&bytes).map_err(std::io::Error::other)?;
                let metadata = postcard::from_bytes(&stored.data).map_err(std::io::Error::other)?;
                let applied = Applied {
                    metadata,
                    last_applied: stored.meta.last_log_id,
                    membership: stored.meta.last_membership.clone(),
                };
                (applied, Some(stored))
            }
        };
        let (published, _) = watch::channel(Arc::new(applied.metadata.clone()));
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            applied: Arc::new(Mutex::new(applied)),
            snapshot: Arc::new(Mutex::new(snapshot)),
            published,
        })
    }

    /// Every metadata version, as it is applied.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.published.subscribe()
    }

    async fn persist_snapshot(&self, stored: StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let bytes = postcard::to_stdvec(&stored).map_err(snapshot_error)?;
        let path = self.dir.join(SNAPSHOT_FILE);
        tokio::task::spawn_blocking(move || {
            checkpoint::write(&path, SNAPSHOT_MAGIC, &bytes, Durability::Synced)
        })
        .await
        .map_err(snapshot_error)?
        .map_err(snapshot_error)?;
        *self.snapshot.lock().await = Some(stored);
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (data, meta) = {
            let applied = self.applied.lock().await;
            let data = postcard::to_stdvec(&applied.metadata).map_err(snapshot_error)?;
            let snapshot_id = applied.last_applied.map_or_else(
                || "empty".to_string(),
                |log_id| format!("{}-{}", log_id.leader_id, log_id.index),
            );
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id,
            };
            (data, meta)
        };
        self.persist_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let applied = self.applied.lock().await;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut applied = self.applied.lock().await;
        let mut outcomes = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Ok(()),
                EntryPayload::Normal(command) => applied.metadata.apply(command),
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(())
                }
            };
            outcomes.push(outcome);
        }
        self.published
            .send_replace(Arc::new(applied.metadata.clone()));
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let metadata: ClusterMetadata = postcard::from_bytes(&data).map_err(snapshot_error)?;
        self.persist_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        let mut applied = self.applied.lock().await;
        *applied = Applied {
            metadata: metadata.clone(),
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.published.send_replace(Arc::new(metadata));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.snapshot.lock().await.clone().map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
