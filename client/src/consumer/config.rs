//! What a consumer is configured with, and the builder that sets it.

use std::time::Duration;

use crate::assignor::Assignor;
use crate::cluster::ClientConfig;

use crate::group::GroupConfig;

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// The log start offset.
    Beginning,
    /// The high watermark: only records produced from now on.
    End,
    At(i64),
    /// The first offset whose timestamp is at or after this (ms since the
    /// epoch); the end when there is none.
    Timestamp(i64),
    /// This many records before the high watermark (the last N), or the
    /// log start when the log holds fewer.
    FromEnd(u64),
}

/// What to do when the position is not in the log (never set, or deleted by
/// retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Report [`Error::OffsetOutOfRange`] from `poll`.
    None,
}

/// Which records a consumer reads (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Every record below the high watermark, of open and aborted
    /// transactions too.
    #[default]
    ReadUncommitted,
    /// Records of committed transactions and outside transactions, up to
    /// the last stable offset (where the oldest open transaction starts).
    ReadCommitted,
}

/// Parses Kafka's names for the levels, `read_uncommitted` and
/// `read_committed` (as command lines take them).
impl std::str::FromStr for Isolation {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Isolation, String> {
        match text {
            "read_uncommitted" => Ok(Isolation::ReadUncommitted),
            "read_committed" => Ok(Isolation::ReadCommitted),
            _ => Err(format!(
                "'{text}' is not read_uncommitted or read_committed"
            )),
        }
    }
}

impl Isolation {
    pub(crate) fn wire(self) -> i8 {
        match self {
            Isolation::ReadUncommitted => 0,
            Isolation::ReadCommitted => 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub client: ClientConfig,
    /// How long the broker may hold a fetch waiting for `fetch_min_bytes`.
    pub fetch_wait_max: Duration,
    pub fetch_min_bytes: i32,
    /// Bytes per fetch response.
    pub fetch_max_bytes: i32,
    /// Bytes per partition per fetch response.
    pub partition_fetch_bytes: i32,
    pub offset_reset: OffsetReset,
    /// Check each batch's CRC-32C before returning its records.
    pub check_crcs: bool,
    pub isolation: Isolation,
    /// The consumer group; an empty group id is none (no `subscribe`, no
    /// commits).
    pub group: GroupConfig,
    /// In a group: commit the positions of what `poll` returned this often
    /// (at the next `poll`), and before partitions are handed back. `None`:
    /// only `commit` commits.
    pub auto_commit_interval: Option<Duration>,
}

impl ConsumerConfig {
    pub fn new(bootstrap: &str) -> ConsumerConfig {
        ConsumerConfig {
            client: ClientConfig::new(bootstrap),
            fetch_wait_max: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 << 20,
            partition_fetch_bytes: 1 << 20,
            offset_reset: OffsetReset::Latest,
            check_crcs: true,
            isolation: Isolation::ReadUncommitted,
            group: GroupConfig::new(""),
            auto_commit_interval: Some(Duration::from_secs(5)),
        }
    }
}

/// Builds a [`Consumer`].
///
/// ```no_run
/// # async fn run() -> Result<(), strata_client::Error> {
/// use std::time::Duration;
/// use strata_client::{Consumer, Offset};
///
/// let mut consumer = Consumer::builder("127.0.0.1:9092").build().await?;
/// consumer.assign(&[("orders", 0)]).await?;
/// consumer.seek("orders", 0, Offset::Beginning)?;
/// for record in consumer.poll(Duration::from_secs(1)).await? {
///     println!("{} {:?}", record.offset, record.value);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConsumerBuilder {
    pub(super) config: ConsumerConfig,
}

impl ConsumerBuilder {
    pub fn client_id(mut self, client_id: &str) -> Self {
        self.config.client.client_id = client_id.to_string();
        self
    }
    /// TLS and SASL settings of every connection.
    pub fn security(mut self, security: crate::Security) -> Self {
        self.config.client.security = security;
        self
    }
    pub fn fetch_wait_max(mut self, wait: Duration) -> Self {
        self.config.fetch_wait_max = wait;
        self
    }
    pub fn fetch_min_bytes(mut self, bytes: i32) -> Self {
        self.config.fetch_min_bytes = bytes;
        self
    }
    pub fn fetch_max_bytes(mut self, bytes: i32) -> Self {
        self.config.fetch_max_bytes = bytes;
        self
    }
    pub fn partition_fetch_bytes(mut self, bytes: i32) -> Self {
        self.config.partition_fetch_bytes = bytes;
        self
    }
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.config.offset_reset = reset;
        self
    }
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.config.isolation = isolation;
        self
    }
    pub fn check_crcs(mut self, check: bool) -> Self {
        self.config.check_crcs = check;
        self
    }
    /// Joins consumer group `group_id` (on `subscribe`) and commits there.
    pub fn group_id(mut self, group_id: &str) -> Self {
        self.config.group.group_id = group_id.to_string();
        self
    }
    /// Static membership: a restart within the session keeps the
    /// partitions, with no rebalance.
    pub fn group_instance_id(mut self, instance_id: &str) -> Self {
        self.config.group.group_instance_id = Some(instance_id.to_string());
        self
    }
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.group.session_timeout = timeout;
        self
    }
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.group.heartbeat_interval = interval;
        self
    }
    /// The longest processing between two polls (`max.poll.interval.ms`,
    /// default 5 minutes): a member that does not poll for this long leaves
    /// the group, and its next poll finds its partitions lost and rejoins.
    pub fn rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.config.group.rebalance_timeout = timeout;
        self
    }
    /// In order of preference. The member rebalances cooperatively only if
    /// every one is cooperative (the default: cooperative-sticky alone).
    pub fn assignors(mut self, assignors: &[Assignor]) -> Self {
        self.config.group.assignors = assignors.to_vec();
        self
    }
    /// `None`: commit only with `commit`.
    pub fn auto_commit(mut self, interval: Option<Duration>) -> Self {
        self.config.auto_commit_interval = interval;
        self
    }
}
