//! Topic-level settings: the Kafka config keys Strata implements, their
//! defaults, and validation. A key Strata does not implement is refused with
//! a clear error rather than silently ignored.

use std::collections::BTreeMap;

use strata_storage::{LogConfig, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};
use thiserror::Error;

pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_MS: &str = "segment.ms";
pub const FLUSH_MS: &str = "flush.ms";
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const CLEANUP_POLICY: &str = "cleanup.policy";
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";
/// Strata's own key (Kafka sets throttles per broker): see
/// `replica/throttle.rs`.
pub const REPLICATION_THROTTLED_RATE: &str = "replication.throttled.rate";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid value '{value}' for {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// The effective settings of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// `retention.ms`; -1 keeps data forever.
    pub retention_ms: i64,
    /// `retention.bytes`; -1 means no size limit.
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// `flush.ms`: data appended with acks=0|1 reaches disk within this.
    pub flush_ms: u64,
    pub min_insync_replicas: u16,
    pub max_message_bytes: usize,
    /// `unclean.leader.election.enable`: a partition whose in-sync replicas
    /// are all fenced may be led by another replica, losing what only they had.
    pub unclean_leader_election_enable: bool,
    /// `cleanup.policy`: `delete` (retention), `compact` (the latest record
    /// of each key stays), or both.
    pub cleanup_delete: bool,
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long a compacted topic keeps tombstones.
    pub delete_retention_ms: i64,
    /// `replication.throttled.rate`: bytes per second each leader may send
    /// the replicas a reassignment adds, while they catch up; 0: no limit.
    pub replication_throttled_rate: u64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            flush_ms: 1000,
            min_insync_replicas: 1,
            max_message_bytes: 1_048_588,
            unclean_leader_election_enable: false,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            replication_throttled_rate: 0,
        }
    }
}

fn parse<T: std::str::FromStr>(
    key: &str,
    value: &str,
    valid: impl Fn(&T) -> bool,
    rule: &str,
) -> Result<T, ConfigError> {
    let error = || ConfigError {
        key: key.into(),
        value: value.into(),
        reason: rule.into(),
    };
    let parsed = value.trim().parse::<T>().map_err(|_not_a_number| error())?;
    if valid(&parsed) {
        Ok(parsed)
    } else {
        Err(error())
    }
}

impl TopicConfig {
    /// Applies `overrides` on top of the defaults, refusing unknown keys and
    /// bad values.
    pub fn from_overrides(overrides: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut config = TopicConfig::default();
        for (key, value) in overrides {
            match key.as_str() {
                RETENTION_MS => {
                    config.retention_ms = parse(
                        key,
                        value,
                        |v: &i64| *v >= -1,
                        "must be -1 or a non-negative number of milliseconds",
                    )?
                }
                RETENTION_BYTES => {
                    config.retention_bytes = parse(
                        key,
                        value,
                        |v: &i64| *v >= -1,
                        "must be -1 or a non-negative number of bytes",
                    )?
                }
                SEGMENT_BYTES => {
                    config.segment_bytes = parse(
                        key,
                        value,
                        |v: &u64| (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(v),
                        &format!("must be between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}"),
                    )?
                }
                SEGMENT_MS => {
                    config.segment_ms = parse(
                        key,
                        value,
                        |v: &i64| *v > 0,
                        "must be a positive number of milliseconds",
                    )?
                }
                FLUSH_MS => {
                    config.flush_ms = parse(
                        key,
                        value,
                        |v: &u64| *v > 0,
                        "must be a positive number of milliseconds",
                    )?
                }
                MIN_INSYNC_REPLICAS => {
                    config.min_insync_replicas =
                        parse(key, value, |v: &u16| *v >= 1, "must be at least 1")?
                }
                MAX_MESSAGE_BYTES => {
                    config.max_message_bytes = parse(
                        key,
                        value,
                        |v: &usize| *v >= 64,
                        "must be at least 64 bytes",
                    )?
                }
                UNCLEAN_LEADER_ELECTION_ENABLE => {
                    config.unclean_leader_election_enable =
                        parse(key, value, |_: &bool| true, "must be true or false")?
                }
                CLEANUP_POLICY => {
                    let policies: Vec<&str> = value.split(',').map(str::trim).collect();
                    if !policies
                        .iter()
                        .all(|policy| matches!(*policy, "delete" | "compact"))
                    {
                        return Err(ConfigError {
                            key: key.clone(),
                            value: value.clone(),
                            reason: "must be delete, compact, or compact,delete".into(),
                        });
                    }
                    config.cleanup_delete = policies.contains(&"delete");
                    config.cleanup_compact = policies.contains(&"compact");
                }
                DELETE_RETENTION_MS => {
                    config.delete_retention_ms = parse(
                        key,
                        value,
                        |v: &i64| *v >= 0,
                        "must be a non-negative number of milliseconds",
                    )?
                }
                REPLICATION_THROTTLED_RATE => {
                    config.replication_throttled_rate = parse(
                        key,
                        value,
                        |_: &u64| true,
                        "must be a non-negative number of bytes per second (0: no limit)",
                    )?
                }
                _ => {
                    let reason = "unknown or unsupported topic config".into();
                    return Err(ConfigError {
                        key: key.clone(),
                        value: value.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(config)
    }

    /// The storage settings these map to. Retention applies only under the
    /// `delete` policy.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_bytes: u64::try_from(self.retention_bytes)
                .ok()
                .filter(|_| self.cleanup_delete),
            retention_ms: (self.retention_ms >= 0 && self.cleanup_delete)
                .then_some(self.retention_ms),
            compact: self.cleanup_compact,
            delete_retention_ms: self.delete_retention_ms,
            ..LogConfig::default()
        }
    }

    /// `cleanup.policy` as Kafka spells it.
    fn cleanup_policy(&self) -> &'static str {
        match (self.cleanup_compact, self.cleanup_delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
    }

    /// Every key with its effective value, for DescribeConfigs.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            (CLEANUP_POLICY, self.cleanup_policy().into()),
            (DELETE_RETENTION_MS, self.delete_retention_ms.to_string()),
            (FLUSH_MS, self.flush_ms.to_string()),
            (MAX_MESSAGE_BYTES, self.max_message_bytes.to_string()),
            (MIN_INSYNC_REPLICAS, self.min_insync_replicas.to_string()),
            (RETENTION_BYTES, self.retention_bytes.to_string()),
            (
                REPLICATION_THROTTLED_RATE,
                self.replication_throttled_rate.to_string(),
            ),
            (RETENTION_MS, self.retention_ms.to_string()),
            (SEGMENT_BYTES, self.segment_bytes.to_string()),
            (SEGMENT_MS, self.segment_ms.to_string()),
            (
                UNCLEAN_LEADER_ELECTION_ENABLE,
                self.unclean_leader_election_enable.to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn known_keys_apply_and_unknown_ones_are_refused() {
        let config = TopicConfig::from_overrides(&overrides(&[
            ("retention.ms", "-1"),
            ("segment.bytes", "1048576"),
        ]))
        .unwrap();
        assert_eq!(config.log_config().retention_ms, None);
        assert_eq!(config.segment_bytes, 1 << 20);
        let error =
            TopicConfig::from_overrides(&overrides(&[("compression.type", "zstd")])).unwrap_err();
        assert_eq!(error.key, "compression.type");
        let error =
            TopicConfig::from_overrides(&overrides(&[("cleanup.policy", "shred")])).unwrap_err();
        assert!(error.reason.contains("delete, compact"));
        let compacted = TopicConfig::from_overrides(&overrides(&[("cleanup.policy", "compact")]))
            .unwrap()
            .log_config();
        assert!(compacted.compact);
        assert_eq!(
            compacted.retention_ms, None,
            "compact alone deletes nothing by age"
        );
        let both = overrides(&[("cleanup.policy", "compact,delete")]);
        let both = TopicConfig::from_overrides(&both).unwrap().log_config();
        assert!(both.compact && both.retention_ms.is_some());
        assert!(TopicConfig::from_overrides(&overrides(&[("flush.ms", "soon")])).is_err());
        let unclean = overrides(&[("unclean.leader.election.enable", "true")]);
        assert!(
            TopicConfig::from_overrides(&unclean)
                .unwrap()
                .unclean_leader_election_enable
        );
        let unclean = overrides(&[("unclean.leader.election.enable", "yes")]);
        assert!(TopicConfig::from_overrides(&unclean).is_err());
    }
}
