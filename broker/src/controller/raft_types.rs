//! openraft's type configuration for the metadata controller: what the
//! Raft log carries (`MetadataCommand`) and what applying an entry answers
//! (`CommandOutcome`).

use std::io::Cursor;

use openraft::BasicNode;

use super::metadata::{CommandOutcome, MetadataCommand};

openraft::declare_raft_types!(
    /// openraft's types for the metadata controller.
    pub TypeConfig:
        D = MetadataCommand,
        R = CommandOutcome,
        NodeId = u64,
        Node = BasicNode,
);
