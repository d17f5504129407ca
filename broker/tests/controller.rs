//! The metadata controller: openraft's storage suite against the file-backed
//! log store and state machine, and a single voter that keeps its metadata
//! across restarts and torn log writes.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use strata_broker::controller::log_store::LogStore;
use strata_broker::controller::metadata::{BrokerId, MetadataCommand, MetadataError};
use strata_broker::controller::state_machine::StateMachine;
use strata_broker::controller::{Controller, ControllerSettings, TypeConfig};
use uuid::Uuid;

struct FileStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FileStores {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_store = LogStore::open(dir.path()).expect("log store");
        let state_machine = StateMachine::open(dir.path()).expect("state machine");
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(FileStores).unwrap();
}

fn create_topic(name: &str, partition_count: u32) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.into(),
        topic_id: Uuid::new_v4(),
        partition_count,
        replication_factor: 1,
        configs: BTreeMap::new(),
    }
}

async fn register_broker(controller: &Controller) {
    let register = MetadataCommand::RegisterBroker {
        broker_id: BrokerId(1),
        host: "127.0.0.1".into(),
        port: 9092,
        listeners: Vec::new(),
        incarnation: Uuid::new_v4(),
    };
    controller.propose(register).await.unwrap().unwrap();
}

/// A single voter, once it leads.
async fn start(dir: &std::path::Path) -> Controller {
    let voters = BTreeMap::from([(1, "127.0.0.1:9093".to_string())]);
    let settings = ControllerSettings {
        broker_session_timeout: Duration::from_secs(9),
        auto_leader_rebalance: true,
    };
    let controller = Controller::start(1, voters, dir, settings, None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while controller.raft_metrics().current_leader != Some(1) {
        assert!(Instant::now() < deadline, "the single voter did not lead");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    controller
}

#[tokio::test]
async fn a_single_voter_keeps_committed_metadata_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let controller = start(dir.path()).await;
    register_broker(&controller).await;
    for index in 0..20 {
        controller
            .propose(create_topic(&format!("topic-{index}"), 3))
            .await
            .unwrap()
            .unwrap();
    }
    let refused = controller
        .propose(create_topic("topic-0", 1))
        .await
        .unwrap();
    assert_eq!(refused, Err(MetadataError::TopicExists("topic-0".into())));
    let before = controller.metadata();
    assert_eq!(before.topics.len(), 20);
    assert!(controller.raft_term() >= 1);
    controller.shutdown().await.unwrap();
    drop(controller);

    let controller = start(dir.path()).await;
    assert_eq!(
        *controller.metadata(),
        *before,
        "every committed command is applied again"
    );
    controller
        .propose(MetadataCommand::DeleteTopic {
            name: "topic-3".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(controller.metadata().topics.len(), 19);
    controller.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_torn_frame_at_the_end_of_the_raft_log_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let controller = start(dir.path()).await;
    register_broker(&controller).await;
    controller
        .propose(create_topic("kept", 1))
        .await
        .unwrap()
        .unwrap();
    controller.shutdown().await.unwrap();
    drop(controller);

    // A crash in the middle of an append leaves half a frame behind.
    let mut log = OpenOptions::new()
        .append(true)
        .open(dir.path().join("log"))
        .unwrap();
    log.write_all(&[0, 0, 0, 50, 1, 2, 3, 4, 5, 6]).unwrap();
    drop(log);

    let controller = start(dir.path()).await;
    assert!(controller.metadata().topics.contains_key("kept"));
    controller
        .propose(create_topic("after", 1))
        .await
        .unwrap()
        .unwrap();
    controller.shutdown().await.unwrap();
    drop(controller);
    let controller = start(dir.path()).await;
    assert!(controller.metadata().topics.contains_key("after"));
    controller.shutdown().await.unwrap();
}
